//! Hit ratio of the eviction policies on synthetic Zipf traces, simulated in memory (no disk).
//!
//! `cargo run --release -p reef-cache --example hit_ratio`
//!
//! Each trace is 1M requests over a catalogue of 100k objects drawn from a Zipf distribution
//! (alpha 0.8 and 1.0) with a fixed-seed xorshift PRNG, so every run prints the same numbers.
//! The cache holds 1%, 5% or 10% of the catalogue's bytes. The "scan" variant replaces 20% of
//! requests with keys that are never requested again (one-hit wonders). Hits are counted over
//! the whole trace, cold start included.
//!
//! The first table uses objects of one size, so the hit ratio is the object hit ratio. The
//! second gives each object a size of 1 to 100 units (fixed per object, uniform) and reports
//! the byte hit ratio.

use std::collections::HashMap;

use reef_cache::{Lru, Policy, S3Fifo};
use reef_proto::ContentKey;

const OBJECTS: u64 = 100_000;
const REQUESTS: usize = 1_000_000;
const SCAN_SHARE: f64 = 0.2;
const SEED: u64 = 0x5EED_CAFE_F00D_0001;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples ranks 0..n with P(rank i) ∝ 1 / (i + 1)^alpha, by inverting the CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, alpha: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for i in 0..n {
            sum += 1.0 / ((i + 1) as f64).powf(alpha);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u) as u64
    }
}

/// Object ids; ids at or above `OBJECTS` are one-hit wonders.
fn trace(alpha: f64, scan: bool) -> Vec<u64> {
    let zipf = Zipf::new(OBJECTS, alpha);
    let mut rng = Rng(SEED ^ alpha.to_bits());
    // Popularity rank and id are decorrelated so ids say nothing about heat.
    let mut next_wonder = OBJECTS;
    (0..REQUESTS)
        .map(|_| {
            if scan && rng.unit() < SCAN_SHARE {
                next_wonder += 1;
                next_wonder
            } else {
                scramble(zipf.sample(&mut rng)) % OBJECTS
            }
        })
        .collect()
}

fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn key(id: u64) -> ContentKey {
    let mut b = [0; 32];
    b[..8].copy_from_slice(&id.to_le_bytes());
    ContentKey::from_bytes(b)
}

/// Size of an object: 1 when `uniform`, else 1..=100 fixed per id.
fn size_of(id: u64, uniform: bool) -> u64 {
    if uniform {
        1
    } else {
        1 + scramble(id ^ SEED) % 100
    }
}

struct Result {
    hits: u64,
    requests: u64,
    hit_bytes: u64,
    bytes: u64,
}

/// Runs `trace` through a cache of `cap` bytes evicting by `policy`, as the store's catalog
/// does: store on miss, then ask for victims until the cache fits.
fn simulate(mut policy: Box<dyn Policy>, cap: u64, trace: &[u64], uniform: bool) -> Result {
    let mut resident: HashMap<ContentKey, u64> = HashMap::new();
    let mut used = 0;
    let mut r = Result {
        hits: 0,
        requests: 0,
        hit_bytes: 0,
        bytes: 0,
    };
    for &id in trace {
        let k = key(id);
        let size = size_of(id, uniform);
        r.requests += 1;
        r.bytes += size;
        if resident.contains_key(&k) {
            policy.touch(&k);
            r.hits += 1;
            r.hit_bytes += size;
            continue;
        }
        resident.insert(k, size);
        used += size;
        policy.insert(k, size);
        while used > cap {
            let Some(v) = policy.victim() else { break };
            used -= resident.remove(&v).unwrap_or(0);
        }
    }
    r
}

fn pct(a: u64, b: u64) -> f64 {
    100.0 * a as f64 / b as f64
}

fn table(uniform: bool) {
    let working_set: u64 = (0..OBJECTS).map(|id| size_of(id, uniform)).sum();
    let what = if uniform { "hit" } else { "byte hit" };
    println!("| alpha | cache % | scan? | LRU {what} % | S3-FIFO {what} % | S3-FIFO − LRU (pp) |");
    println!("|---|---|---|---|---|---|");
    for alpha in [0.8, 1.0] {
        for scan in [false, true] {
            let t = trace(alpha, scan);
            for share in [1, 5, 10] {
                let cap = working_set * share / 100;
                let lru = simulate(Box::new(Lru::new()), cap, &t, uniform);
                let s3 = simulate(Box::new(S3Fifo::new(cap)), cap, &t, uniform);
                let (l, s) = if uniform {
                    (pct(lru.hits, lru.requests), pct(s3.hits, s3.requests))
                } else {
                    (pct(lru.hit_bytes, lru.bytes), pct(s3.hit_bytes, s3.bytes))
                };
                println!(
                    "| {alpha:.1} | {share} | {} | {l:.2} | {s:.2} | {:+.2} |",
                    if scan { "yes (20%)" } else { "no" },
                    s - l
                );
            }
        }
    }
}

fn main() {
    println!(
        "{REQUESTS} requests per trace, {OBJECTS} objects, Zipf; scan = {:.0}% of requests to never-repeated keys.\n",
        SCAN_SHARE * 100.0
    );
    println!("Objects of equal size (object hit ratio):\n");
    table(true);
    println!("\nObjects of 1–100 units, fixed per object (byte hit ratio):\n");
    table(false);
}
