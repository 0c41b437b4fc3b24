//! A token bucket over an injected clock: `rate` tokens a second up to `burst`, and a level
//! that may go below zero when more was spent than it held (bytes already sent cannot be
//! taken back; the debt is what makes the next request wait).

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second; positive.
    rate: f64,
    /// Most tokens held at once.
    burst: f64,
    level: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` and `burst` must be positive (the config refuses 0).
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            level: burst,
            at: now,
        }
    }

    /// Tokens added per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        // A clock that went backwards (never with Instant, but cheap to be sure) adds nothing.
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
    }

    /// Takes `n` tokens if the bucket holds them; otherwise how long until it will.
    pub fn try_take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.level >= n {
            self.level -= n;
            Ok(())
        } else {
            Err(self.time_to(n))
        }
    }

    /// Spends `n` tokens whether or not the bucket holds them (the level may go negative).
    pub fn charge(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.level -= n;
    }

    /// None while the bucket holds a positive level; otherwise how long until it does.
    pub fn in_deficit(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        (self.level <= 0.0).then(|| self.time_to(f64::MIN_POSITIVE))
    }

    /// Time until the level reaches `n` (from where `refill` left it at `now`).
    fn time_to(&self, n: f64) -> Duration {
        let missing = (n - self.level).max(0.0);
        Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX)
    }

    /// Whether the bucket is full again: it then carries no state worth keeping.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.level >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        for _ in 0..3 {
            assert!(b.try_take(1.0, t0).is_ok());
        }
        let wait = b.try_take(1.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // 100 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.try_take(1.0, t1).is_ok());
        assert!(b.try_take(1.0, t1).is_err());
        // Long idle refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(b.is_full(t2));
        for _ in 0..3 {
            assert!(b.try_take(1.0, t2).is_ok());
        }
        assert!(b.try_take(1.0, t2).is_err());
    }

    #[test]
    fn a_charge_beyond_the_level_is_a_debt_paid_back_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 1000.0, t0);
        assert_eq!(b.in_deficit(t0), None);
        b.charge(5000.0, t0);
        // 4000 in debt at 1000/s: four seconds until positive again.
        assert_eq!(b.in_deficit(t0), Some(Duration::from_secs(4)));
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(b.in_deficit(t1), Some(Duration::from_secs(1)));
        let t2 = t0 + Duration::from_millis(4001);
        assert_eq!(b.in_deficit(t2), None);
        assert!(!b.is_full(t2));
        assert!(b.is_full(t0 + Duration::from_secs(6)));
    }

    #[test]
    fn an_earlier_instant_does_not_refill_or_panic() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1.0, 1.0, t0);
        assert!(b.try_take(1.0, t0).is_ok());
        assert!(b.try_take(1.0, t0 - Duration::from_secs(5)).is_err());
    }
}
