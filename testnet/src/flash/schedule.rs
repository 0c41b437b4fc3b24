//! When the crowd comes: a baseline, a ramp up to the surge, the surge, a ramp down, and calm.

use std::time::Duration;

/// The phases, in order, with their lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Clients a second at the baseline and at the surge.
    pub baseline_rps: f64,
    pub surge_rps: f64,
    /// Baseline before the surge (caches warm up).
    pub warmup: Duration,
    pub ramp: Duration,
    pub hold: Duration,
    /// Baseline after the ramp down (arrangements disband).
    pub calm: Duration,
}

/// Which part of the schedule an instant is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warmup,
    RampUp,
    Surge,
    RampDown,
    Calm,
    Done,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Warmup => "warm-up",
            Phase::RampUp => "ramp up",
            Phase::Surge => "surge",
            Phase::RampDown => "ramp down",
            Phase::Calm => "calm",
            Phase::Done => "done",
        }
    }
}

impl Schedule {
    pub fn total(&self) -> Duration {
        self.warmup + self.ramp + self.hold + self.ramp + self.calm
    }

    /// The phase at `t` since the start, and how far into it (0..1).
    pub fn phase(&self, t: Duration) -> (Phase, f64) {
        let mut start = Duration::ZERO;
        for (phase, len) in [
            (Phase::Warmup, self.warmup),
            (Phase::RampUp, self.ramp),
            (Phase::Surge, self.hold),
            (Phase::RampDown, self.ramp),
            (Phase::Calm, self.calm),
        ] {
            if t < start + len {
                let into = (t - start).as_secs_f64() / len.as_secs_f64().max(f64::MIN_POSITIVE);
                return (phase, into);
            }
            start += len;
        }
        (Phase::Done, 1.0)
    }

    /// Clients a second at `t`.
    pub fn rate(&self, t: Duration) -> f64 {
        let (phase, into) = self.phase(t);
        let span = self.surge_rps - self.baseline_rps;
        match phase {
            Phase::Warmup | Phase::Calm => self.baseline_rps,
            Phase::RampUp => self.baseline_rps + span * into,
            Phase::Surge => self.surge_rps,
            Phase::RampDown => self.surge_rps - span * into,
            Phase::Done => 0.0,
        }
    }

    /// When the offered rate first exceeds `capacity_rps` (the surge's onset for the
    /// primary), if it ever does.
    pub fn onset(&self, capacity_rps: f64) -> Option<Duration> {
        if self.surge_rps <= capacity_rps {
            return None;
        }
        if self.baseline_rps > capacity_rps {
            return Some(Duration::ZERO);
        }
        let into = (capacity_rps - self.baseline_rps) / (self.surge_rps - self.baseline_rps);
        Some(self.warmup + self.ramp.mul_f64(into))
    }

    /// The surge's hold, as (start, end) since the start.
    pub fn hold_span(&self) -> (Duration, Duration) {
        let start = self.warmup + self.ramp;
        (start, start + self.hold)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            baseline_rps: 10.0,
            surge_rps: 110.0,
            warmup: Duration::from_secs(10),
            ramp: Duration::from_secs(10),
            hold: Duration::from_secs(30),
            calm: Duration::from_secs(20),
        }
    }

    #[test]
    fn the_rate_follows_the_phases() {
        let s = schedule();
        let at = |secs: f64| s.rate(Duration::from_secs_f64(secs));
        assert_eq!(at(0.0), 10.0);
        assert_eq!(at(15.0), 60.0);
        assert_eq!(at(35.0), 110.0);
        assert_eq!(at(55.0), 60.0);
        assert_eq!(at(65.0), 10.0);
        assert_eq!(s.total(), Duration::from_secs(80));
        assert_eq!(s.phase(Duration::from_secs(80)).0, Phase::Done);
        assert_eq!(at(80.0), 0.0);
    }

    #[test]
    fn the_onset_is_where_the_ramp_crosses_capacity() {
        let s = schedule();
        assert_eq!(s.onset(60.0), Some(Duration::from_secs(15)));
        assert_eq!(s.onset(500.0), None);
        assert_eq!(s.onset(5.0), Some(Duration::ZERO));
        assert_eq!(
            s.hold_span(),
            (Duration::from_secs(20), Duration::from_secs(50))
        );
    }
}
