//! The DHT at several testnet sizes: how long a provider lookup takes and how many peers it
//! asks (Kademlia's `QueryStats`, which `/api/holders` reports), and what an idle node costs
//! in memory and CPU.
//!
//! For each size N: launch N nodes of one provider; wait `settle` (the testnet is idle: no
//! clients, only load reports, pings and kad's own upkeep); read every node's RSS and its CPU
//! time over `window`; node 0 fetches M objects from the origin and announces them; then a
//! sample of the other nodes (spread over the testnet) each looks every object up once, one
//! lookup at a time, through `GET /api/holders?url=`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use tracing::info;

use crate::bench::{Machine, Summary, proc_memory};
use crate::bench_load::cpu_times;
use crate::{Error, Options, Testnet, client};

/// One lookup: the admin API runs it while we wait.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// node-0's origin fetches of the objects to look up.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// node-0 announcing what it fetched.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct DhtBenchOptions {
    pub bin: PathBuf,
    pub sizes: Vec<usize>,
    /// Objects node 0 announces, each looked up by every asker.
    pub objects: usize,
    /// Nodes that run lookups (spread over the testnet).
    pub askers: usize,
    /// Idle time after launch before memory and CPU are read.
    pub settle: Duration,
    /// Window over which idle CPU is measured.
    pub window: Duration,
    pub dir: PathBuf,
    pub command: String,
}

impl DhtBenchOptions {
    pub fn validate(&self) -> Result<(), Error> {
        if self.sizes.is_empty() || self.sizes.iter().any(|&n| n < 2) {
            return Err(Error::InvalidOptions(
                "every size must be at least 2 nodes".into(),
            ));
        }
        if self.objects == 0 || self.askers == 0 {
            return Err(Error::InvalidOptions(
                "objects and askers must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One lookup as `/api/holders` answered it.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    pub ms: f64,
    /// Peers the Kademlia query asked, and of those, that answered.
    pub requests: u64,
    pub successes: u64,
    /// Whether node 0 was among the holders found.
    pub found: bool,
}

#[derive(Debug, Clone)]
pub struct SizeResult {
    pub nodes: usize,
    /// Spawn of the first node until every node reported `joined`.
    pub launch: Duration,
    /// Idle VmRSS per node, KiB.
    pub rss_kib: Vec<u64>,
    /// Of which private (anonymous: heap, stacks), KiB; the rest is mostly the `reef`
    /// binary's code pages, which every node on the machine shares.
    pub anon_kib: Vec<u64>,
    /// Proportional set size (shared pages divided among the processes sharing them), KiB.
    pub pss_kib: Vec<u64>,
    /// Of the RSS, the `reef` binary's code mapped in, KiB (shared, and laid out by
    /// `node/link-order.txt`).
    pub code_kib: Vec<u64>,
    /// Idle CPU per node, ms per second.
    pub cpu_ms_per_s: Vec<f64>,
    /// `connected_peers` per node when memory was read.
    pub connected: Vec<usize>,
    pub lookups: Vec<Lookup>,
    pub failed: usize,
    pub first_error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub opts: DhtBenchOptions,
    pub date: String,
    pub machine: Machine,
    pub sizes: Vec<SizeResult>,
}

pub async fn run(opts: &DhtBenchOptions) -> Result<Report, Error> {
    opts.validate()?;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let machine = Machine::describe(&opts.bin);
    let mut sizes = Vec::new();
    for &n in &opts.sizes {
        info!(nodes = n, "launching");
        sizes.push(one_size(opts, n).await?);
    }
    Ok(Report {
        opts: opts.clone(),
        date,
        machine,
        sizes,
    })
}

async fn one_size(opts: &DhtBenchOptions, n: usize) -> Result<SizeResult, Error> {
    let started = Instant::now();
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: n,
        providers: 1,
        dir: opts.dir.join(format!("net-{n}")),
        // Node 0 must fetch the objects from the origin itself and announce them.
        extra_args: vec!["--home-routing".into(), "false".into()],
        env: Vec::new(),
        provider_configs: Vec::new(),
        dns: false,
        links: Default::default(),
    })
    .await?;
    let launch = started.elapsed();
    info!(nodes = n, ?launch, "testnet up");
    let measured = measure(opts, &testnet, launch).await;
    testnet.shutdown().await;
    measured
}

async fn measure(
    opts: &DhtBenchOptions,
    testnet: &Testnet,
    launch: Duration,
) -> Result<SizeResult, Error> {
    let n = testnet.nodes.len();
    tokio::time::sleep(opts.settle).await;
    let rss_kib = testnet
        .nodes
        .iter()
        .map(|node| proc_memory(node.pid()).map(|(rss, _)| rss))
        .collect::<Result<Vec<_>, _>>()?;
    let field = |pid: u32, file: &str, name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix(name)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
            })
            .unwrap_or(0)
    };
    let anon_kib = testnet
        .nodes
        .iter()
        .map(|node| field(node.pid(), "status", "RssAnon:"))
        .collect();
    let pss_kib = testnet
        .nodes
        .iter()
        .map(|node| field(node.pid(), "smaps_rollup", "Pss:"))
        .collect();
    let code_kib = testnet
        .nodes
        .iter()
        .map(|node| code_rss_kib(node.pid()))
        .collect();
    let statuses =
        futures::future::try_join_all(testnet.nodes.iter().map(|node| node.status())).await?;
    let connected = statuses
        .iter()
        .map(|s| s["connected_peers"].as_array().map_or(0, Vec::len))
        .collect();
    let cpu_before = cpu_times(testnet)?;
    let window_start = Instant::now();
    tokio::time::sleep(opts.window).await;
    let cpu_after = cpu_times(testnet)?;
    let secs = window_start.elapsed().as_secs_f64();
    let cpu_ms_per_s = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / secs)
        .collect();

    // node 0 fetches the objects from the origin and announces them.
    let seed = &testnet.nodes[0];
    let before = seed.announcements().await?;
    let urls: Vec<String> = (0..opts.objects)
        .map(|i| testnet.origin.url(&format!("/bytes/{}", 5000 + i)))
        .collect();
    for url in &urls {
        client::fetch(Some(seed.runtime().http), Method::GET, url, FETCH_TIMEOUT).await?;
    }
    seed.wait_announced(before.settled() + opts.objects as u64, ANNOUNCE_TIMEOUT)
        .await?;

    let seed_peer = seed.runtime().peer_id.clone();
    let askers = opts.askers.min(n - 1);
    let mut result = SizeResult {
        nodes: n,
        launch,
        rss_kib,
        anon_kib,
        pss_kib,
        code_kib,
        cpu_ms_per_s,
        connected,
        lookups: Vec::new(),
        failed: 0,
        first_error: None,
    };
    for a in 0..askers {
        // Spread over nodes 1..n.
        let node = &testnet.nodes[1 + a * (n - 1) / askers];
        for url in &urls {
            match lookup(node, url, &seed_peer).await {
                Ok(l) => result.lookups.push(l),
                Err(e) => {
                    result.failed += 1;
                    result.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    Ok(result)
}

async fn lookup(node: &crate::NodeProcess, url: &str, seed: &str) -> Result<Lookup, Error> {
    let api = format!(
        "http://{}/api/holders?url={}",
        node.runtime().admin,
        escape(url)
    );
    let resp = client::fetch(None, Method::GET, &api, LOOKUP_TIMEOUT).await?;
    if resp.status != StatusCode::OK {
        return Err(Error::http(&api, format!("status {}", resp.status)));
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|source| Error::Json {
            context: format!("parsing the reply of {api}"),
            source,
        })?;
    let found = reply["holders"]
        .as_array()
        .is_some_and(|hs| hs.iter().any(|h| h["peer_id"].as_str() == Some(seed)));
    Ok(Lookup {
        ms: reply["lookup_ms"].as_f64().unwrap_or(f64::NAN),
        requests: reply["dht"]["requests"].as_u64().unwrap_or(0),
        successes: reply["dht"]["successes"].as_u64().unwrap_or(0),
        found,
    })
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// KiB of the process's own executable's code in its RSS (`/proc/PID/smaps`: the `r-xp`
/// mappings of `/proc/PID/exe`); 0 when it cannot be read.
fn code_rss_kib(pid: u32) -> u64 {
    let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link(format!("/proc/{pid}/exe")),
        std::fs::read_to_string(format!("/proc/{pid}/smaps")),
    ) else {
        return 0;
    };
    let exe = exe.to_string_lossy();
    let mut in_code = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: range, permissions, offset, device, inode, path.
            in_code = words.next() == Some("r-xp") && line.ends_with(exe.as_ref());
        } else if in_code && first == "Rss:" {
            kib += words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kib
}

fn median_u64(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let (o, m) = (&self.opts, &self.machine);
        let _ = writeln!(out, "## Reef DHT at scale\n");
        let _ = writeln!(out, "```sh\n{}\n```\n", o.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        out.push_str(&m.markdown_lines());
        let _ = writeln!(
            out,
            "- `reef` binary: `{}` ({} build)",
            m.bin.display(),
            m.build
        );
        let _ = writeln!(
            out,
            "- Setup: one provider, loopback; idle figures read {} s after launch (CPU over the \
             next {} s); node 0 announces {} objects, then {} other nodes each look every one \
             up (`/api/holders`, one at a time). \"Peers asked\" is Kademlia's count of \
             requests the iterative lookup sent (`QueryStats::num_requests`).\n",
            o.settle.as_secs(),
            o.window.as_secs(),
            o.objects,
            o.askers
        );
        let _ = writeln!(
            out,
            "| nodes | launch s | lookups (failed) | found | lookup median / p99 ms | peers asked median / max | answered median | idle RSS median / max MiB | of which private, median MiB | of which code, median MiB | PSS median MiB | idle CPU median ms/s | connections median |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for s in &self.sizes {
            let ms: Vec<f64> = s.lookups.iter().map(|l| l.ms).collect();
            let lat = Summary::of(&ms);
            let mut requests: Vec<u64> = s.lookups.iter().map(|l| l.requests).collect();
            let max_requests = requests.iter().max().copied().unwrap_or(0);
            let mut answered: Vec<u64> = s.lookups.iter().map(|l| l.successes).collect();
            let found = s.lookups.iter().filter(|l| l.found).count();
            let mut rss = s.rss_kib.clone();
            let rss_max = rss.iter().max().copied().unwrap_or(0);
            let mut anon = s.anon_kib.clone();
            let mut pss = s.pss_kib.clone();
            let mut code = s.code_kib.clone();
            let cpu = Summary::of(&s.cpu_ms_per_s).map_or(f64::NAN, |c| c.median);
            let mut conns: Vec<u64> = s.connected.iter().map(|&c| c as u64).collect();
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} ({}) | {}/{} | {} | {} / {} | {} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {} |",
                s.nodes,
                s.launch.as_secs_f64(),
                s.lookups.len(),
                s.failed,
                found,
                s.lookups.len(),
                lat.map_or("-".into(), |l| format!("{:.2} / {:.2}", l.median, l.p99)),
                median_u64(&mut requests),
                max_requests,
                median_u64(&mut answered),
                median_u64(&mut rss) as f64 / 1024.0,
                rss_max as f64 / 1024.0,
                median_u64(&mut anon) as f64 / 1024.0,
                median_u64(&mut code) as f64 / 1024.0,
                median_u64(&mut pss) as f64 / 1024.0,
                cpu,
                median_u64(&mut conns),
            );
        }
        for s in &self.sizes {
            if let Some(e) = &s.first_error {
                let _ = writeln!(out, "\n- {} nodes, first lookup error: {e}", s.nodes);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_of_a_running_process_is_found_in_its_rss() {
        let code = code_rss_kib(std::process::id());
        let (rss, _) = proc_memory(std::process::id()).unwrap_or_default();
        assert!(code > 0 && code <= rss, "code {code} KiB, rss {rss} KiB");
        assert_eq!(code_rss_kib(u32::MAX), 0);
    }
}
