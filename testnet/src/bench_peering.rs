//! Peering under a flash crowd: how fast a swamped primary gets a peer provider's nodes to
//! serve for it, what negotiating costs, and what the usage receipts cost while it lasts.
//!
//! Each run launches a fresh testnet of 3 providers with one node each: p0 owns a service,
//! is made for `capacity_rps` and buys capacity (its trigger window is the option's);
//! p1 and p2 offer capacity, p1 cheaper. A [`crowd`](crate::crowd) of `rate` clients a second
//! then asks p0's node for the service, following redirects. Measured per run:
//! - reaction: crowd start → the first answer a client got from p1's node;
//! - negotiation: propose → commit as p0's agent timed it, and the `/reef/peering/1`
//!   requests p0 sent to arrange;
//! - receipts: `/reef/peering/1` bytes both ways at p1's node over `window` seconds of the
//!   arrangement (receipts every 5 s and their acknowledgements; nothing else crosses it
//!   while the arrangement runs), per second;
//! - calm: crowd stop → the arrangement ended, and → both ledgers agree on its settlement.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::Method;

use crate::crowd::{Ask, Crowd};
use crate::origin::expected_body;
use crate::{Error, NodeProcess, Options, Testnet, client};

/// The path the crowd asks for.
const PATH: &str = "/bytes/2000";
const WAIT: Duration = Duration::from_secs(90);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PeeringBenchOptions {
    pub bin: PathBuf,
    pub runs: usize,
    /// Clients a second.
    pub rate: u32,
    /// What p0's node is made for, req/s.
    pub capacity_rps: u32,
    pub trigger_window_s: f64,
    /// Seconds over which receipts are counted.
    pub window: u64,
    pub dir: PathBuf,
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Run {
    pub reaction: Duration,
    pub negotiation_ms: f64,
    pub requests_to_arrange: u64,
    /// `/reef/peering/1` bytes a second at the serving node, both ways.
    pub receipt_bytes_per_s: f64,
    pub to_disband: Duration,
    pub to_settle: Duration,
}

pub struct PeeringBenchReport {
    pub opts_line: String,
    pub runs: Vec<Run>,
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let mid = v.get(v.len() / 2).copied().unwrap_or_default();
    (
        mid,
        v.first().copied().unwrap_or_default(),
        v.last().copied().unwrap_or_default(),
    )
}

impl PeeringBenchReport {
    pub fn markdown(&self) -> String {
        let row = |name: &str, unit: &str, values: Vec<f64>| {
            let (mid, lo, hi) = median(values);
            let digits = if unit.is_empty() { 0 } else { 2 };
            format!("| {name} | **{mid:.digits$}{unit}** | {lo:.digits$}–{hi:.digits$}{unit} |\n")
        };
        let secs = |f: fn(&Run) -> Duration| -> Vec<f64> {
            self.runs.iter().map(|r| f(r).as_secs_f64()).collect()
        };
        let mut out = format!(
            "{} runs: {}\n\n| figure | median | range |\n|---|---:|---:|\n",
            self.runs.len(),
            self.opts_line
        );
        out += &row(
            "reaction: crowd start → first answer from the peer provider",
            " s",
            secs(|r| r.reaction),
        );
        out += &row(
            "negotiation: propose → commit at the primary",
            " ms",
            self.runs.iter().map(|r| r.negotiation_ms).collect(),
        );
        out += &row(
            "`/reef/peering/1` requests the primary sent to arrange",
            "",
            self.runs
                .iter()
                .map(|r| r.requests_to_arrange as f64)
                .collect(),
        );
        out += &row(
            "receipts: peering bytes at the serving node",
            " B/s",
            self.runs.iter().map(|r| r.receipt_bytes_per_s).collect(),
        );
        out += &row(
            "calm: crowd stop → arrangement ended",
            " s",
            secs(|r| r.to_disband),
        );
        out += &row(
            "calm: crowd stop → both ledgers agree",
            " s",
            secs(|r| r.to_settle),
        );
        out
    }
}

fn configs(opts: &PeeringBenchOptions) -> Vec<String> {
    let offer = |price: &str| {
        format!(
            "[offer]\nreq_per_s = 100000\nmbit_per_s = 10000\nregions = [\"r0\", \"r1\"]\nprice_per_gb = {price}\nmin_duration_s = 60\nmax_duration_s = 3600\n"
        )
    };
    vec![
        format!(
            "capacity_rps = {}\n[services.\"video.example\"]\norigin = \"{{origin}}\"\n[peering]\nhigh_watermark = 0.8\nlow_watermark = 0.5\ntrigger_window_s = {}\ncooldown_s = 3\nmax_price_per_gb = 0.05\nshare = 1.0\n",
            opts.capacity_rps, opts.trigger_window_s
        ),
        offer("0.02"),
        offer("0.03"),
    ]
}

async fn admin(node: &NodeProcess, path: &str) -> Result<serde_json::Value, Error> {
    let url = format!("http://{}{path}", node.runtime().admin);
    let got = client::fetch(None, Method::GET, &url, REQUEST_TIMEOUT).await?;
    serde_json::from_slice(&got.body).map_err(|e| Error::http(&url, e))
}

/// Polls `look` every 20 ms until it gives a value (or fails after [`WAIT`]).
async fn until<T, F, Fut>(what: &str, mut look: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Error>>,
{
    let started = Instant::now();
    loop {
        if let Some(found) = look().await? {
            return Ok(found);
        }
        if started.elapsed() > WAIT {
            return Err(Error::Timeout {
                what: what.into(),
                after: WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first arrangement `node` lists that `wanted` accepts.
async fn arrangement(
    node: &NodeProcess,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Result<Option<serde_json::Value>, Error> {
    let all = admin(node, "/api/arrangements").await?;
    Ok(all["arrangements"]
        .as_array()
        .and_then(|l| l.iter().find(|a| wanted(a)).cloned()))
}

async fn peering_bytes(node: &NodeProcess) -> Result<u64, Error> {
    let status = node.status().await?;
    let p = &status["peering"];
    Ok(p["bytes_sent"].as_u64().unwrap_or(0) + p["bytes_received"].as_u64().unwrap_or(0))
}

async fn one_run(opts: &PeeringBenchOptions, i: usize) -> Result<Run, Error> {
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: 3,
        providers: 3,
        dir: opts.dir.join(format!("run-{i}")),
        extra_args: Vec::new(),
        env: Vec::new(),
        provider_configs: configs(opts),
        dns: false,
        links: Default::default(),
    })
    .await?;
    let (primary, peer) = (&testnet.nodes[0], &testnet.nodes[1]);
    until("the service record", || async {
        let status = primary.status().await?;
        Ok((status["services"]["published"].as_u64().unwrap_or(0) >= 1).then_some(()))
    })
    .await?;
    let sent_before = primary.status().await?["peering"]["requests_sent"]
        .as_u64()
        .unwrap_or(0);
    let crowd = Crowd::start(
        Ask {
            node: primary.runtime().http,
            host: "video.example".into(),
            path: PATH.into(),
            expect: Some(expected_body(PATH, 2000).into()),
        },
        opts.rate,
    );
    let reaction = until("an answer from the peer provider", || async {
        Ok(crowd.seen(|s| s.first_via_peer))
    })
    .await?
        - crowd.started;
    let active = until("the arrangement at the primary", || {
        arrangement(primary, |a| {
            a["basis"] == "short_term" && a["status"] == "active" && a["role"] == "primary"
        })
    })
    .await?;
    let id = active["id"].clone();
    let requests_to_arrange = primary.status().await?["peering"]["requests_sent"]
        .as_u64()
        .unwrap_or(0)
        - sent_before;
    let negotiation_ms = active["negotiation_ms"].as_f64().unwrap_or(f64::NAN);

    let (bytes_before, t0) = (peering_bytes(peer).await?, Instant::now());
    tokio::time::sleep(Duration::from_secs(opts.window)).await;
    let receipt_bytes_per_s =
        (peering_bytes(peer).await? - bytes_before) as f64 / t0.elapsed().as_secs_f64();

    drop(crowd);
    let calm = Instant::now();
    until("the end of the arrangement", || {
        arrangement(primary, |a| a["id"] == id && a["status"] == "ended")
    })
    .await?;
    let to_disband = calm.elapsed();
    until("both ledgers to agree", || async {
        let agreed = |ledger: serde_json::Value| {
            ledger["settlements"].as_array().and_then(|l| {
                l.iter()
                    .find(|s| s["id"] == id && s["agreed"] == true)
                    .cloned()
            })
        };
        let a = agreed(admin(primary, "/api/ledger").await?);
        let b = agreed(admin(peer, "/api/ledger").await?);
        Ok(a.zip(b)
            .filter(|(a, b)| a["bytes"] == b["bytes"])
            .map(|_| ()))
    })
    .await?;
    let to_settle = calm.elapsed();
    testnet.shutdown().await;
    Ok(Run {
        reaction,
        negotiation_ms,
        requests_to_arrange,
        receipt_bytes_per_s,
        to_disband,
        to_settle,
    })
}

pub async fn run(opts: &PeeringBenchOptions) -> Result<PeeringBenchReport, Error> {
    let mut runs = Vec::with_capacity(opts.runs);
    for i in 0..opts.runs {
        let run = one_run(opts, i).await?;
        eprintln!("run {}: {run:?}", i + 1);
        runs.push(run);
    }
    Ok(PeeringBenchReport {
        opts_line: format!(
            "{} clients/s at a primary node made for {} req/s (watermarks 0.8 / 0.5, trigger window {} s, cool-down 3 s), receipts counted over {} s",
            opts.rate, opts.capacity_rps, opts.trigger_window_s, opts.window
        ),
        runs,
    })
}
