//! Miss sweeps: one client asking for URL after URL that nobody asked for before, so that
//! nearly every request misses (cache busting, scraping a catalogue, probing for paths) and
//! goes upstream. Real audiences re-ask for what others asked: even a cold crowd turns to
//! hits within seconds, while a sweep stays near zero.
//!
//! Counted per client over fixed windows: when a window holds at least `misses` misses
//! (lookups not answered from this node's disk) and at most [`MAX_HIT_PERMILLE`] of its
//! lookups were hits, the client is
//! sweeping. That starts an *episode*: the client is throttled for `cooldown` (its requests
//! are served only from the cache), and the episode is reported once. A client still
//! sweeping after the cooldown starts a new one.

use std::time::{Duration, Instant};

/// Share of a window's lookups (per mille) that may be hits for it still to count as a
/// sweep: a near-zero hit ratio is what tells a sweep from a cold crowd, which soon hits.
pub const MAX_HIT_PERMILLE: u64 = 20;

/// When a client counts as sweeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Misses in one window that make a sweep; 0 turns detection off.
    pub misses: u32,
    pub window: Duration,
    /// How long a sweeping client is served only from the cache.
    pub cooldown: Duration,
}

/// One client's sweep state.
#[derive(Debug, Clone)]
pub struct Sweep {
    window_start: Instant,
    lookups: u32,
    misses: u32,
    throttled_until: Option<Instant>,
}

impl Sweep {
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            lookups: 0,
            misses: 0,
            throttled_until: None,
        }
    }

    /// Counts one cache lookup (`miss`: its body did not come from this node's disk). True
    /// when this lookup starts an episode.
    pub fn observe(&mut self, miss: bool, now: Instant, s: &Settings) -> bool {
        if s.misses == 0 {
            return false;
        }
        if now.saturating_duration_since(self.window_start) >= s.window {
            self.window_start = now;
            self.lookups = 0;
            self.misses = 0;
        }
        self.lookups = self.lookups.saturating_add(1);
        if miss {
            self.misses = self.misses.saturating_add(1);
        }
        let hits = u64::from(self.lookups - self.misses);
        let sweeping =
            self.misses >= s.misses && hits * 1000 <= u64::from(self.lookups) * MAX_HIT_PERMILLE;
        if !sweeping {
            return false;
        }
        let new_episode = self.throttled(now).is_none();
        self.throttled_until = Some(now + s.cooldown);
        self.window_start = now;
        self.lookups = 0;
        self.misses = 0;
        new_episode
    }

    /// How long the client stays throttled, if it is.
    pub fn throttled(&self, now: Instant) -> Option<Duration> {
        self.throttled_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Whether this state says nothing a fresh one would not (safe to forget).
    pub fn is_idle(&self, now: Instant, s: &Settings) -> bool {
        self.throttled(now).is_none()
            && (self.lookups == 0 || now.saturating_duration_since(self.window_start) >= s.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        misses: 10,
        window: Duration::from_secs(10),
        cooldown: Duration::from_secs(60),
    };

    #[test]
    fn all_misses_make_one_episode_and_a_cooldown() {
        let t0 = Instant::now();
        let mut sweep = Sweep::new(t0);
        for i in 0..9 {
            assert!(!sweep.observe(true, t0 + Duration::from_millis(i), &S));
        }
        assert!(sweep.throttled(t0).is_none());
        let t1 = t0 + Duration::from_millis(9);
        assert!(
            sweep.observe(true, t1, &S),
            "the 10th miss starts an episode"
        );
        assert_eq!(sweep.throttled(t1), Some(S.cooldown));
        // Sweeping on during the episode does not start another one.
        for i in 0..20 {
            assert!(!sweep.observe(true, t1 + Duration::from_millis(i), &S));
        }
        assert!(sweep.throttled(t1 + S.cooldown).is_some(), "extended");
        let later = t1 + Duration::from_secs(600);
        assert!(sweep.throttled(later).is_none());
        assert!(sweep.is_idle(later, &S));
        // After it, a new sweep is a new episode.
        for i in 0..9 {
            assert!(!sweep.observe(true, later + Duration::from_millis(i), &S));
        }
        assert!(sweep.observe(true, later + Duration::from_millis(9), &S));
    }

    #[test]
    fn a_cold_crowd_that_turns_to_hits_is_no_sweep() {
        let t0 = Instant::now();
        let mut sweep = Sweep::new(t0);
        // Eight misses, then a hit for every later miss: the hit ratio is far above 2%.
        for i in 0..8 {
            assert!(!sweep.observe(true, t0 + Duration::from_millis(i), &S));
        }
        for i in 0..100 {
            let at = t0 + Duration::from_millis(10 + i);
            assert!(!sweep.observe(i % 2 == 0, at, &S));
        }
        assert!(sweep.throttled(t0 + Duration::from_secs(1)).is_none());
    }

    #[test]
    fn misses_spread_over_windows_are_no_sweep() {
        let t0 = Instant::now();
        let mut sweep = Sweep::new(t0);
        // Nine misses a window, window after window.
        for w in 0..10u64 {
            for i in 0..9 {
                let at = t0 + Duration::from_secs(w * 10) + Duration::from_millis(i);
                assert!(!sweep.observe(true, at, &S));
            }
        }
    }

    #[test]
    fn zero_misses_turns_detection_off() {
        let off = Settings { misses: 0, ..S };
        let t0 = Instant::now();
        let mut sweep = Sweep::new(t0);
        for i in 0..1000 {
            assert!(!sweep.observe(true, t0 + Duration::from_millis(i), &off));
        }
    }
}
