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
//! - **redirected** and **proxied**: requests this node handed to a peer provider's node under
//!   an arrangement, with a `302` or by relaying the peer's answer. Neither is served from our
//!   cache or origin, so neither counts toward *utilisation* (the load the node bears); both
//!   count toward *demand* (the load that arrives). A relayed body still leaves through our
//!   port, so proxied bytes count as egress; a redirected one never reaches us, so demand adds
//!   an estimate of it (the mean body size of the requests we served ourselves).
//! - **shed**: client requests refused with 503 because the node was at its ceiling
//!   (`limits`). Like redirected ones, they count toward demand, not utilisation.

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
    redirected: AtomicU64,
    proxied: AtomicU64,
    shed: AtomicU64,
}

/// The counters at one instant, since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub egress_bytes: u64,
    pub lookups: u64,
    pub hits: u64,
    pub redirected: u64,
    pub proxied: u64,
    pub shed: u64,
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

    /// A request was answered with a redirect to a peer provider's node.
    pub fn redirected(&self) {
        self.redirected.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was answered by relaying a peer provider's node's answer.
    pub fn proxied(&self) {
        self.proxied.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused for want of capacity.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            egress_bytes: self.egress_bytes.load(Ordering::Relaxed),
            lookups: self.lookups.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            redirected: self.redirected.load(Ordering::Relaxed),
            proxied: self.proxied.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
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
    /// Every request that arrived.
    pub req_per_s: u32,
    pub egress_bytes_per_s: u64,
    /// Hits per 1000 lookups; 0 while there were no lookups.
    pub hit_ratio_permille: u16,
    /// Of `req_per_s`, those redirected to a peer provider's node.
    pub redirected_per_s: u32,
    /// Of `req_per_s`, those relayed from a peer provider's node.
    pub proxied_per_s: u32,
    /// Of `req_per_s`, those refused for want of capacity.
    pub shed_per_s: u32,
    /// Mean body bytes of a request served here, over recent intervals: what a redirected
    /// request would have cost us.
    pub bytes_per_request: u64,
}

impl Rates {
    /// Requests served from our own cache or origin.
    pub fn served_per_s(&self) -> u32 {
        self.req_per_s
            .saturating_sub(self.redirected_per_s)
            .saturating_sub(self.proxied_per_s)
            .saturating_sub(self.shed_per_s)
    }
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
    /// Moving average of body bytes per request served here.
    bytes_per_request: f64,
}

/// Weight of the newest interval in the mean body size: a few seconds of history, so that a
/// second of only redirects keeps the last estimate.
const BYTES_PER_REQUEST_WEIGHT: f64 = 0.3;

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
        let sent_on = totals.redirected.saturating_sub(last.redirected)
            + totals.proxied.saturating_sub(last.proxied)
            + totals.shed.saturating_sub(last.shed);
        let served = totals
            .requests
            .saturating_sub(last.requests)
            .saturating_sub(sent_on);
        if served > 0 {
            // Relayed bodies are in egress too; a slight overestimate errs toward relief.
            let mean = totals.egress_bytes.saturating_sub(last.egress_bytes) as f64 / served as f64;
            self.bytes_per_request = if self.bytes_per_request == 0.0 {
                mean
            } else {
                BYTES_PER_REQUEST_WEIGHT * mean
                    + (1.0 - BYTES_PER_REQUEST_WEIGHT) * self.bytes_per_request
            };
        }
        // `as` saturates float-to-int conversions.
        self.rates = Rates {
            req_per_s: per_s(totals.requests, last.requests).round() as u32,
            egress_bytes_per_s: per_s(totals.egress_bytes, last.egress_bytes).round() as u64,
            hit_ratio_permille: hit_ratio.min(MAX_HIT_RATIO_PERMILLE),
            redirected_per_s: per_s(totals.redirected, last.redirected).round() as u32,
            proxied_per_s: per_s(totals.proxied, last.proxied).round() as u32,
            shed_per_s: per_s(totals.shed, last.shed).round() as u32,
            bytes_per_request: self.bytes_per_request.round() as u64,
        };
        self.last = Some((totals, now));
        self.rates
    }
}

/// How busy the node is against its capacity, in permille: the larger of the request rate over
/// `capacity_rps` and the egress in Mbit/s (10^6 bit) over `capacity_mbps` (a capacity of 0
/// counts as 1). Not capped: reports cap it (at
/// [`MAX_UTILISATION_PERMILLE`]), but the redirector needs the real figure to know how much to
/// send away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Busy {
    /// What the node serves itself: requests redirected or relayed to a peer do not count.
    pub utilisation_permille: u32,
    /// What arrives, as if it served every request itself; never below utilisation.
    pub demand_permille: u32,
}

impl Busy {
    pub fn of(rates: &Rates, capacity_rps: u32, capacity_mbps: u32) -> Busy {
        let by_requests =
            |req_per_s: u32| u128::from(req_per_s) * 1000 / u128::from(capacity_rps.max(1));
        // bytes/s × 8 bit / (Mbit/s × 10^6) × 1000 = bytes/s × 8 / (Mbit/s × 1000)
        let by_egress =
            |bytes_per_s: u128| bytes_per_s * 8 / (u128::from(capacity_mbps.max(1)) * 1000);
        let egress = u128::from(rates.egress_bytes_per_s);
        // Bodies that never left through us: what they would have cost.
        let unsent_bytes = (u128::from(rates.redirected_per_s) + u128::from(rates.shed_per_s))
            * u128::from(rates.bytes_per_request);
        let utilisation = by_requests(rates.served_per_s()).max(by_egress(egress));
        let demand = by_requests(rates.req_per_s).max(by_egress(egress + unsent_bytes));
        let fit = |v: u128| u32::try_from(v).unwrap_or(u32::MAX);
        Busy {
            utilisation_permille: fit(utilisation),
            demand_permille: fit(demand.max(utilisation)),
        }
    }

    /// As a load report carries them.
    pub fn capped(self) -> (u16, u16) {
        let cap = |v: u32| v.min(u32::from(MAX_UTILISATION_PERMILLE)) as u16;
        (cap(self.utilisation_permille), cap(self.demand_permille))
    }
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
            ..Totals::default()
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

    fn busy(req_per_s: u32, egress_bytes_per_s: u64, rps: u32, mbps: u32) -> u32 {
        let rates = Rates {
            req_per_s,
            egress_bytes_per_s,
            ..Rates::default()
        };
        let busy = Busy::of(&rates, rps, mbps);
        assert_eq!(busy.utilisation_permille, busy.demand_permille);
        busy.utilisation_permille
    }

    #[test]
    fn utilisation_is_the_tighter_of_requests_and_egress() {
        assert_eq!(busy(0, 0, 1000, 1000), 0);
        assert_eq!(busy(500, 0, 1000, 1000), 500);
        // 62.5 MB/s = 500 Mbit/s of 1000.
        assert_eq!(busy(10, 62_500_000, 1000, 1000), 500);
        assert_eq!(busy(900, 62_500_000, 1000, 1000), 900);
        assert_eq!(busy(100, 125_000_000, 1000, 100), 10_000);
        assert_eq!(busy(2000, 0, 1000, 1000), 2000);
        // Extremes do not overflow; a capacity of 0 counts as 1.
        assert_eq!(busy(u32::MAX, u64::MAX, 1, 1), u32::MAX);
        assert_eq!(busy(5, 0, 0, 0), 5000);
        // Reports cap overload at ten times capacity.
        let over = Busy::of(
            &Rates {
                req_per_s: 50,
                ..Rates::default()
            },
            1,
            1000,
        );
        assert_eq!(over.capped(), (10_000, 10_000));
    }

    #[test]
    fn requests_sent_to_a_peer_count_toward_demand_only() {
        // 100 req/s arrive at a node made for 50; 60 go to a peer by redirect.
        let rates = Rates {
            req_per_s: 100,
            redirected_per_s: 60,
            ..Rates::default()
        };
        let b = Busy::of(&rates, 50, 1000);
        assert_eq!((b.utilisation_permille, b.demand_permille), (800, 2000));
        // Relayed ones neither: the node does not serve them from its cache.
        let rates = Rates {
            proxied_per_s: 60,
            redirected_per_s: 0,
            ..rates
        };
        let b = Busy::of(&rates, 50, 1000);
        assert_eq!((b.utilisation_permille, b.demand_permille), (800, 2000));
        // Bandwidth-bound: 40 served requests of 1 MB each fill 320 of 1000 Mbit/s; the 60
        // redirected would have added 480.
        let rates = Rates {
            req_per_s: 100,
            redirected_per_s: 60,
            egress_bytes_per_s: 40_000_000,
            bytes_per_request: 1_000_000,
            ..Rates::default()
        };
        let b = Busy::of(&rates, 10_000, 1000);
        assert_eq!((b.utilisation_permille, b.demand_permille), (320, 800));
        // Refused ones likewise: demand as if served, utilisation only what was.
        let rates = Rates {
            shed_per_s: 60,
            redirected_per_s: 0,
            ..rates
        };
        let b = Busy::of(&rates, 10_000, 1000);
        assert_eq!((b.utilisation_permille, b.demand_permille), (320, 800));
        let b = Busy::of(&rates, 50, 100_000);
        assert_eq!((b.utilisation_permille, b.demand_permille), (800, 2000));
    }

    #[test]
    fn mean_body_size_follows_what_is_served_here() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = RateWindow::default();
        w.update(Totals::default(), t0);
        let r = w.update(totals(10, 10_000, 0, 0), t0 + s);
        assert_eq!(r.bytes_per_request, 1000);
        // A second of nothing but redirects keeps the estimate.
        let only_redirects = Totals {
            redirected: 10,
            ..totals(20, 10_000, 0, 0)
        };
        let r = w.update(only_redirects, t0 + 2 * s);
        assert_eq!((r.redirected_per_s, r.served_per_s()), (10, 0));
        assert_eq!(r.bytes_per_request, 1000);
        // Bigger bodies move it gradually.
        let bigger = Totals {
            redirected: 10,
            ..totals(30, 40_000, 0, 0)
        };
        let r = w.update(bigger, t0 + 3 * s);
        assert_eq!(r.bytes_per_request, 1600);
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
        meter.redirected();
        meter.proxied();
        let t = meter.totals();
        assert_eq!((t.redirected, t.proxied), (1, 1));
    }
}
