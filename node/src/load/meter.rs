//! Measuring a node's own load: a few relaxed atomic adds on the request path, turned into
//! per-second rates once a second by the reporter.
//!
//! What counts:
//! - **requests**: every HTTP request the edge answers, from clients and from peers fetching
//!   objects (`/_reef/object/…`) alike. Both take the capacity `capacity_rps` describes; a
//!   node whose peers pull hard from it is busy even if few clients talk to it.
//! - **egress**: response body bytes handed to the connection, to clients and peers, counted as
//!   they are sent (a client that hangs up mid-body counts only what it got). Headers are not.
//! - **hit ratio**: of the clients' GET and HEAD requests that went through the cache (those
//!   answered with an `X-Reef-Source`), the share served from this node's own disk (`local`,
//!   including stale and revalidated copies). Peers' object requests are not lookups: they are
//!   answered from the store or refused, never filled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reef_proto::records::{MAX_HIT_RATIO_PERMILLE, MAX_UTILISATION_PERMILLE};
use serde::Serialize;

use crate::body::Body;

/// Samples the hit ratio is computed over (one a second): long enough that a handful of
/// requests give a usable figure, short enough to follow a change of traffic.
pub const HIT_RATIO_SAMPLES: usize = 10;

/// Counters bumped on the request path. Shared by the edge (writes) and the reporter (reads).
#[derive(Debug, Default)]
pub struct Meter {
    requests: AtomicU64,
    egress_bytes: AtomicU64,
    lookups: AtomicU64,
    hits: AtomicU64,
}

/// The counters at one instant, since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub egress_bytes: u64,
    pub lookups: u64,
    pub hits: u64,
}

impl Meter {
    /// A request arrived at the edge.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A client's GET or HEAD was answered through the cache; `hit` if from our own disk.
    pub fn lookup(&self, hit: bool) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Body bytes sent.
    pub fn egress(&self, bytes: u64) {
        self.egress_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            egress_bytes: self.egress_bytes.load(Ordering::Relaxed),
            lookups: self.lookups.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
        }
    }

    /// `body`, counting its data bytes into egress as the connection pulls them.
    pub fn count_egress(self: &Arc<Self>, body: Body) -> Body {
        let meter = self.clone();
        crate::body::count_data(body, move |len| meter.egress(len))
    }
}

/// A node's load over the last sample interval (hit ratio: over the last few).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rates {
    pub req_per_s: u32,
    pub egress_bytes_per_s: u64,
    /// Hits per 1000 lookups; 0 while there were no lookups.
    pub hit_ratio_permille: u16,
}

/// Turns successive [`Totals`] into [`Rates`]: request and egress rates over the interval
/// since the previous sample (scaled by its real length, so a late tick does not inflate
/// them), the hit ratio over the last [`HIT_RATIO_SAMPLES`] intervals.
#[derive(Debug, Default)]
pub struct RateWindow {
    last: Option<(Totals, Instant)>,
    rates: Rates,
    /// (lookups, hits) of each recent interval, oldest first.
    lookups: VecDeque<(u64, u64)>,
}

/// Intervals shorter than this give no new rates (a division by almost nothing would).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

impl RateWindow {
    pub fn update(&mut self, totals: Totals, now: Instant) -> Rates {
        let Some((last, at)) = self.last else {
            self.last = Some((totals, now));
            return self.rates;
        };
        let elapsed = now.saturating_duration_since(at);
        if elapsed < MIN_INTERVAL {
            return self.rates;
        }
        let secs = elapsed.as_secs_f64();
        let per_s = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
        if self.lookups.len() == HIT_RATIO_SAMPLES {
            self.lookups.pop_front();
        }
        self.lookups.push_back((
            totals.lookups.saturating_sub(last.lookups),
            totals.hits.saturating_sub(last.hits),
        ));
        let (lookups, hits) = self
            .lookups
            .iter()
            .fold((0u64, 0u64), |(l, h), (dl, dh)| (l + dl, h + dh));
        let hit_ratio = match lookups {
            0 => 0,
            n => (u128::from(hits.min(n)) * 1000 / u128::from(n)) as u16,
        };
        // `as` saturates float-to-int conversions.
        self.rates = Rates {
            req_per_s: per_s(totals.requests, last.requests).round() as u32,
            egress_bytes_per_s: per_s(totals.egress_bytes, last.egress_bytes).round() as u64,
            hit_ratio_permille: hit_ratio.min(MAX_HIT_RATIO_PERMILLE),
        };
        self.last = Some((totals, now));
        self.rates
    }
}

/// How busy the node is against its configured capacity, in permille: the larger of the
/// request rate over `capacity_rps` and the egress in Mbit/s (10^6 bit) over `capacity_mbps`,
/// capped at [`MAX_UTILISATION_PERMILLE`] (ten times capacity). A capacity of 0 counts as 1.
pub fn utilisation_permille(rates: &Rates, capacity_rps: u32, capacity_mbps: u32) -> u16 {
    let by_requests = u128::from(rates.req_per_s) * 1000 / u128::from(capacity_rps.max(1));
    // bytes/s × 8 bit / (Mbit/s × 10^6) × 1000 = bytes/s × 8 / (Mbit/s × 1000)
    let by_egress =
        u128::from(rates.egress_bytes_per_s) * 8 / (u128::from(capacity_mbps.max(1)) * 1000);
    let permille = by_requests.max(by_egress);
    permille.min(u128::from(MAX_UTILISATION_PERMILLE)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64, egress_bytes: u64, lookups: u64, hits: u64) -> Totals {
        Totals {
            requests,
            egress_bytes,
            lookups,
            hits,
        }
    }

    #[test]
    fn rates_are_the_last_interval_scaled_to_a_second() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        assert_eq!(w.update(totals(5, 500, 0, 0), t0), Rates::default());
        let r = w.update(totals(105, 10_500, 0, 0), t0 + Duration::from_secs(1));
        assert_eq!((r.req_per_s, r.egress_bytes_per_s), (100, 10_000));
        // A late tick: 2 s worth of counts over 2 s is the same rate.
        let r = w.update(totals(305, 30_500, 0, 0), t0 + Duration::from_secs(3));
        assert_eq!((r.req_per_s, r.egress_bytes_per_s), (100, 10_000));
        // Idle: back to zero at once.
        let r = w.update(totals(305, 30_500, 0, 0), t0 + Duration::from_secs(4));
        assert_eq!((r.req_per_s, r.egress_bytes_per_s), (0, 0));
        // A tick right after the last one changes nothing.
        let before = r;
        let r = w.update(totals(999, 99_999, 0, 0), t0 + Duration::from_millis(4001));
        assert_eq!(r, before);
    }

    #[test]
    fn hit_ratio_covers_the_last_samples() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = RateWindow::default();
        w.update(Totals::default(), t0);
        // 10 lookups, 9 hits in the first interval.
        let r = w.update(totals(10, 0, 10, 9), t0 + s);
        assert_eq!(r.hit_ratio_permille, 900);
        // Then 10 misses: 9 of 20.
        let r = w.update(totals(20, 0, 20, 9), t0 + 2 * s);
        assert_eq!(r.hit_ratio_permille, 450);
        // Idle: the first interval stays in the window for HIT_RATIO_SAMPLES samples...
        let n = HIT_RATIO_SAMPLES as u32;
        let mut r = r;
        for i in 3..=n {
            r = w.update(totals(20, 0, 20, 9), t0 + i * s);
        }
        assert_eq!(r.hit_ratio_permille, 450);
        // ...then leaves it, and only the misses are left.
        let r = w.update(totals(20, 0, 20, 9), t0 + (n + 1) * s);
        assert_eq!(r.hit_ratio_permille, 0);
        // Counters never go backwards, but a bad reading must not panic or overflow.
        let r = w.update(totals(0, 0, 0, 50), t0 + 100 * s);
        assert_eq!(r.req_per_s, 0);
        assert!(r.hit_ratio_permille <= 1000);
    }

    #[test]
    fn utilisation_is_the_tighter_of_requests_and_egress() {
        let rates = |req_per_s, egress_bytes_per_s| Rates {
            req_per_s,
            egress_bytes_per_s,
            hit_ratio_permille: 0,
        };
        assert_eq!(utilisation_permille(&rates(0, 0), 1000, 1000), 0);
        assert_eq!(utilisation_permille(&rates(500, 0), 1000, 1000), 500);
        // 62.5 MB/s = 500 Mbit/s of 1000.
        assert_eq!(
            utilisation_permille(&rates(10, 62_500_000), 1000, 1000),
            500
        );
        assert_eq!(
            utilisation_permille(&rates(900, 62_500_000), 1000, 1000),
            900
        );
        assert_eq!(
            utilisation_permille(&rates(100, 125_000_000), 1000, 100),
            10_000
        );
        assert_eq!(utilisation_permille(&rates(2000, 0), 1000, 1000), 2000);
        // Overload is capped at ten times capacity, extremes do not overflow.
        assert_eq!(
            utilisation_permille(&rates(u32::MAX, u64::MAX), 1, 1),
            10_000
        );
        assert_eq!(utilisation_permille(&rates(5, 0), 0, 0), 5000);
    }

    #[tokio::test]
    async fn egress_counts_the_body_bytes_sent() {
        let meter = Arc::new(Meter::default());
        let body = meter.count_egress(crate::body::full(vec![7u8; 1234]));
        use http_body_util::BodyExt;
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 1234);
        assert_eq!(meter.totals().egress_bytes, 1234);
        meter.request();
        meter.lookup(true);
        meter.lookup(false);
        assert_eq!(meter.totals(), totals(1, 1234, 2, 1));
    }
}
