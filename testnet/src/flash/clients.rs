//! The crowd: clients arriving at the schedule's rate (an open loop), spread over the
//! primary's nodes as its DNS would spread them, each asking for one object of a
//! Zipf-popular catalogue and following redirects. What they see is kept per second.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::schedule::Schedule;
use crate::crowd::client_request;

/// Clients waiting at once; beyond it newcomers give up at once (an error).
const MAX_WAITING: usize = 4096;
/// Arrivals are released this often.
const TICK: Duration = Duration::from_millis(10);

/// Objects 1..=n with weight 1/k^s: rank 1 is the most popular.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n.max(1) {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// A rank, 1-based.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1) + 1
    }
}

/// One second of what the clients saw.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub ok: u64,
    pub errors: u64,
    /// Of `errors`, those a node refused at once (503: over its ceiling, no peer to take it).
    pub refused: u64,
    /// Of `ok`, served by another provider's node.
    pub via_peer: u64,
    /// How long each answer took, milliseconds, unsorted. Failures are not in it: a quick
    /// refusal would flatter the figure, and a timeout only says the client gave up.
    pub latencies_ms: Vec<u32>,
    /// Clients that arrived.
    pub offered: u64,
}

/// The crowd's record, one [`Second`] per second of the schedule: what became of the clients
/// that arrived in it.
#[derive(Default)]
pub struct Record {
    pub seconds: Vec<Second>,
    pub first_via_peer: Option<Duration>,
    /// Distinct objects asked for.
    pub asked: std::collections::BTreeSet<usize>,
    /// A few error messages, for the log.
    pub sample_errors: Vec<String>,
}

impl Record {
    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::default);
        }
        &mut self.seconds[i]
    }
}

/// What the crowd asks for and where.
pub struct Target {
    /// The primary's nodes, as clients reach them.
    pub nodes: Vec<SocketAddr>,
    pub host: String,
    pub object_size: u64,
    pub catalogue: usize,
    pub zipf: f64,
    pub seed: u64,
}

/// `/headers/<size>/o<rank>`: an object of `size` pattern bytes, cacheable for an hour, its
/// own path (so its own content and cache key) per rank.
pub fn object_path(size: u64, rank: usize) -> String {
    format!("/headers/{size}/o{rank}")
}

/// Runs the crowd for the schedule, from `started`, keeping what it sees in `record`.
pub async fn run(target: Target, schedule: Schedule, started: Instant, record: Arc<Mutex<Record>>) {
    let zipf = Zipf::new(target.catalogue, target.zipf);
    let mut rng = StdRng::seed_from_u64(target.seed);
    let target = Arc::new(target);
    let mut clients = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    let mut due = 0.0;
    let mut next = 0usize;
    let total = schedule.total();
    loop {
        tick.tick().await;
        let now = started.elapsed();
        if now >= total {
            break;
        }
        while clients.try_join_next().is_some() {}
        due += schedule.rate(now) * TICK.as_secs_f64();
        while due >= 1.0 {
            due -= 1.0;
            let rank = zipf.sample(&mut rng);
            let node = target.nodes[next % target.nodes.len()];
            next += 1;
            {
                let mut r = record.lock().unwrap_or_else(PoisonError::into_inner);
                r.second(now).offered += 1;
                r.asked.insert(rank);
                if clients.len() >= MAX_WAITING {
                    r.second(now).errors += 1;
                    continue;
                }
            }
            let (record, target) = (record.clone(), target.clone());
            let arrived = now;
            clients.spawn(async move {
                let asked = Instant::now();
                let path = object_path(target.object_size, rank);
                let outcome = client_request(node, &target.host, &path, None).await;
                let done = started.elapsed();
                let ms = u32::try_from(asked.elapsed().as_millis()).unwrap_or(u32::MAX);
                let mut r = record.lock().unwrap_or_else(PoisonError::into_inner);
                let second = r.second(arrived);
                match outcome {
                    Ok(via_peer) => {
                        second.latencies_ms.push(ms);
                        second.ok += 1;
                        if via_peer {
                            second.via_peer += 1;
                            r.first_via_peer.get_or_insert(done);
                        }
                    }
                    Err(why) => {
                        second.errors += 1;
                        if why.starts_with("503 ") {
                            second.refused += 1;
                        }
                        if r.sample_errors.len() < 20 {
                            r.sample_errors.push(why);
                        }
                    }
                }
            });
        }
    }
    // Those still waiting get the client's timeout to finish.
    while clients.join_next().await.is_some() {}
}

/// The `p`-quantile (0..=1) of `values`, nearest rank; 0 for none.
pub fn quantile(values: &mut [u32], p: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_first_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..10_000).map(|_| zipf.sample(&mut rng)).collect();
        let top = draws.iter().filter(|r| **r == 1).count();
        let far = draws.iter().filter(|r| **r == 1000).count();
        assert!(top > 1000, "rank 1 about 13%: {top}");
        assert!(far < 20, "{far}");
        assert!(draws.iter().all(|r| (1..=1000).contains(r)));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&mut v, 0.5), 50);
        assert_eq!(quantile(&mut v, 0.99), 99);
        assert_eq!(quantile(&mut [], 0.5), 0);
        assert_eq!(quantile(&mut [7], 0.95), 7);
    }
}
