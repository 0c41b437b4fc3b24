//! `reef-testnet bench`: the foundation figures, measured on loopback against real `reef`
//! processes.
//!
//! Everything measured here happens inside the spawned nodes; this module only starts them,
//! talks to their HTTP edge and admin API, reads their logs and `/proc/<pid>/status`, and
//! counts origin hits. Four measurements:
//!
//! 1. **Join time**: a fresh node bootstrapping to a lone seed, from spawn to
//!    `/api/status` saying `joined` (polled every [`JOIN_POLL`]), next to the overlay's own
//!    `elapsed_ms` from its `reef::join` log line.
//! 2. **DHT lookup and peer fetch**: node-0 fetches objects from the origin and announces
//!    them; every other node asks `/api/holders` for each (→ `lookup_ms`) and then fetches a
//!    sample of them from a peer (→ time to first byte, bodies checked).
//! 3. **Origin offload**: every node fetches the same new objects, all nodes at once, then
//!    (new objects again) one node after another; origin hits per object.
//! 4. **Idle memory**: VmRSS / VmHWM of every node once the testnet is idle.
//!
//! Every phase is bounded by [`PHASE_TIMEOUT`]; the testnet is always shut down, and
//! dropping anything mid-way kills the nodes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use http::{Method, StatusCode};
use tracing::{info, warn};

use crate::client::{self, ResponseHeaders};
use crate::{
    Announcements, Error, NodeProcess, NodeSpec, Options, Origin, Testnet, node_ip, origin,
    provider_region,
};

/// Upper bound for each phase (join runs, launch, lookups, each offload run, …): generous
/// for a debug build on 2 cores; a phase that takes longer is stuck, not slow.
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often a joining node's `/api/status` is polled.
pub const JOIN_POLL: Duration = Duration::from_millis(5);

/// How long one fresh node may take to join the seed.
const JOIN_RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// One fetch of a ~10 KiB object on loopback, cold or not.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// One `/api/holders` lookup (the node bounds its own DHT query well below this).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Until a node has finished announcing what it just stored.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(120);

/// Concurrent fetches node-0 makes when it loads objects from the origin in phase 2: few
/// enough that its announcements (at most 64 in flight) are never skipped.
const SEED_FETCH_CONCURRENCY: usize = 4;

/// Objects each other node fetches from a peer in phase 2.
const PEER_FETCH_SAMPLE: usize = 20;

/// Idle detection for the memory figures: `connected_peers` of every node unchanged for
/// [`IDLE_STABLE_POLLS`] polls [`IDLE_POLL`] apart, and at least [`IDLE_MIN`] since launch;
/// measured anyway after [`IDLE_MAX`].
const IDLE_POLL: Duration = Duration::from_millis(500);
const IDLE_STABLE_POLLS: usize = 4;
const IDLE_MIN: Duration = Duration::from_secs(3);
const IDLE_MAX: Duration = Duration::from_secs(30);

/// Size of the first object (bytes); object `i` of a set is `/bytes/<base + i>`, so every
/// path is distinct (the origin counts hits by path).
const OBJECT_BASE_SIZE: u64 = 10 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `reef` binary.
    pub bin: PathBuf,
    /// Testnet size for phases 2–4 (≥ 2).
    pub nodes: usize,
    /// Providers among them, round-robin (1 ≤ K ≤ nodes).
    pub providers: usize,
    /// Objects per set (≥ 1); phases 2, 3 (concurrent) and 3 (sequential) use new sets.
    pub objects: usize,
    /// Fresh nodes joining the seed in phase 1 (≥ 1).
    pub join_runs: usize,
    /// Concurrent fetches per node in phase 3 (≥ 1).
    pub concurrency: usize,
    /// Seed of the per-node fetch order in phase 3.
    pub seed: u64,
    /// Root for node data and logs (`DIR/join/…`, `DIR/net/…`).
    pub dir: PathBuf,
    /// The command line that reproduces the run, printed at the top of the report.
    pub command: String,
}

impl BenchOptions {
    /// Checks the sizes; [`run`] does too, before starting anything.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::InvalidOptions(what));
        if self.nodes < 2 {
            return bad(format!("--nodes must be at least 2, got {}", self.nodes));
        }
        if self.providers == 0 || self.providers > self.nodes {
            return bad(format!(
                "--providers must be between 1 and --nodes ({}), got {}",
                self.nodes, self.providers
            ));
        }
        if self.objects == 0 {
            return bad("--objects must be at least 1".into());
        }
        if self.join_runs == 0 {
            return bad("--join-runs must be at least 1".into());
        }
        if self.concurrency == 0 {
            return bad("--concurrency must be at least 1".into());
        }
        Ok(())
    }
}

/// min / median / mean / p99 / max of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub mean: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for an empty sample (or one with NaN).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            n: sorted.len(),
            min: *sorted.first()?,
            median: median(&sorted)?,
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Nearest-rank percentile of an ascending `sorted` sample: the smallest value with at
/// least `p` % of the sample at or below it (`p` in 0..=100; 0 gives the minimum).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of an ascending `sorted` sample (mean of the two middle values for an even size).
pub fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Median of `values` in any order; 0 for none.
pub fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    median(&values).unwrap_or(0.0)
}

/// The overlay's own join time: `elapsed_ms` of the first `reef::join` line in a node log
/// (text format, with or without ANSI colours, or JSON).
pub fn join_elapsed_ms(log: &str) -> Option<u64> {
    log.lines()
        .filter(|line| line.contains("reef::join"))
        .find_map(|line| {
            let clean = strip_ansi(line);
            let at = clean.find("elapsed_ms")? + "elapsed_ms".len();
            let rest = clean[at..].trim_start_matches(['=', '"', ':', ' ']);
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
}

/// `line` without ANSI CSI sequences (`ESC [ … final`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query value.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A deterministic permutation of `0..n` (Fisher–Yates driven by splitmix64).
pub(crate) fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The machine the figures were taken on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs this process may use (what `nproc` prints).
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_kib: Option<u64>,
    /// `/proc/version`.
    pub kernel: String,
    /// The `reef` binary, canonicalised when possible.
    pub bin: PathBuf,
    /// `release`, `debug` or `unknown`, from the binary's path (`target/<profile>/`).
    pub build: &'static str,
}

impl Machine {
    /// The "- Machine:" and "- Kernel:" lines every report starts with.
    pub fn markdown_lines(&self) -> String {
        let mem = self.mem_total_kib.map_or("unknown memory".into(), |k| {
            format!("{:.1} GiB RAM", k as f64 / 1024.0 / 1024.0)
        });
        format!(
            "- Machine: {} CPUs (nproc), {}, {mem}\n- Kernel: `{}`\n",
            self.nproc, self.cpu_model, self.kernel
        )
    }

    pub fn describe(bin: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                matches!(key.trim(), "model name" | "Model" | "cpu model")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kib = meminfo.lines().find_map(|l| kib_field(l, "MemTotal:"));
        let kernel = std::fs::read_to_string("/proc/version")
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let bin = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
        // `target/<profile>/reef`, or `$CARGO_TARGET_DIR/<profile>/reef`.
        let profile = bin
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|p| p.to_str());
        let build = match profile {
            Some("release") => "release",
            Some("debug") => "debug",
            _ => "unknown",
        };
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            mem_total_kib,
            kernel,
            bin,
            build,
        }
    }
}

/// `NAME:   1234 kB` → 1234.
fn kib_field(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// One fresh node joining the seed.
#[derive(Debug, Clone, Copy)]
pub struct JoinRun {
    /// Spawn → `runtime.json` written (listeners bound).
    pub ready: Duration,
    /// Spawn → `/api/status` first said `joined`.
    pub joined: Duration,
    /// The overlay's own `elapsed_ms` from its `reef::join` log line.
    pub overlay_ms: Option<u64>,
}

/// Phase 1.
#[derive(Debug, Clone)]
pub struct JoinResult {
    /// Each run with a new seed of its own (one live peer, nothing stale).
    pub fresh: Vec<JoinRun>,
    /// Each run against one long-lived seed that still lists every earlier (stopped)
    /// joiner in its routing table.
    pub churned: Vec<JoinRun>,
    /// The churned run that did not join within the per-run timeout (later runs skipped).
    pub churned_timed_out: Option<usize>,
}

/// One fetch through a node.
#[derive(Debug, Clone)]
struct Fetch {
    /// `origin` / `peer` / `local` (the `X-Reef-Source` header), or what went wrong:
    /// `error`, `HTTP <code>`, `wrong body`, `no source header`.
    outcome: String,
    first_byte: Duration,
    elapsed: Duration,
    error: Option<String>,
}

/// Phase 2, lookups.
#[derive(Debug, Clone)]
pub struct LookupResult {
    /// `/api/holders` replies: `lookup_ms` of each.
    pub lookup_ms: Vec<f64>,
    /// Holders found by each successful lookup.
    pub holders: Vec<usize>,
    /// Successful lookups that found at least one holder (node-0, or with home routing the
    /// key's home node, which fetched it for node-0).
    pub found: usize,
    /// Lookups that failed (non-200, bad JSON, timeout), with the first error.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Phase 2 as a whole: loading node-0, announcing, lookups, peer fetches.
#[derive(Debug, Clone)]
pub struct LookupPhase {
    /// Where node-0's fetches came from (should be all `origin`).
    pub load_sources: BTreeMap<String, usize>,
    /// node-0's announcement counters' change over the load.
    pub announced: Announcements,
    /// From the end of node-0's last fetch until all its announcements had settled.
    pub announce_lag: Duration,
    pub lookup: LookupResult,
    /// Outcome of each peer fetch (source or error kind).
    pub peer_sources: BTreeMap<String, usize>,
    /// Time to first byte / whole body (ms) of the fetches served by a peer.
    pub peer_first_byte_ms: Vec<f64>,
    pub peer_elapsed_ms: Vec<f64>,
    pub other_nodes: usize,
    pub sample_per_node: usize,
    pub first_error: Option<String>,
}

/// Phase 3, one run.
#[derive(Debug, Clone)]
pub struct OffloadResult {
    /// Origin hits of each object.
    pub hits: Vec<u64>,
    /// Where the responses came from, over all nodes and objects.
    pub sources: BTreeMap<String, usize>,
    /// Sum over all nodes of the announcement counters' change.
    pub announced: Announcements,
    /// The whole run, first fetch to last.
    pub wall: Duration,
    pub first_error: Option<String>,
}

/// Phase 4, one snapshot.
#[derive(Debug, Clone)]
pub struct MemoryResult {
    pub rss_kib: Vec<u64>,
    pub hwm_kib: Vec<u64>,
    /// `connected_peers` of each node at the time.
    pub connected: Vec<usize>,
    /// From launch until the snapshot (idle snapshot only).
    pub waited: Duration,
    /// Whether `connected_peers` had stopped changing.
    pub stable: bool,
}

/// Everything `reef-testnet bench` measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub command: String,
    /// HTTP date (UTC) of the start.
    pub date: String,
    pub machine: Machine,
    pub nodes: usize,
    pub providers: usize,
    pub objects: usize,
    pub concurrency: usize,
    pub seed: u64,
    pub join: JoinResult,
    pub idle: MemoryResult,
    pub lookup: LookupPhase,
    pub concurrent: OffloadResult,
    pub sequential: OffloadResult,
    pub after: MemoryResult,
    pub total: Duration,
}

/// Runs every phase and returns the figures. Node data and logs go under `opts.dir`.
pub async fn run(opts: &BenchOptions) -> Result<Report, Error> {
    opts.validate()?;
    let started = Instant::now();
    let date = httpdate::fmt_http_date(SystemTime::now());
    let machine = Machine::describe(&opts.bin);
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| Error::io(format!("creating {}", opts.dir.display()), e))?;

    info!(runs = opts.join_runs, "phase 1: join time");
    let join = phase("phase 1 (join time)", bench_join(opts)).await?;

    info!(
        nodes = opts.nodes,
        providers = opts.providers,
        "launching the testnet"
    );
    let testnet = phase(
        "launching the testnet",
        Testnet::launch(Options {
            bin: opts.bin.clone(),
            nodes: opts.nodes,
            providers: opts.providers,
            dir: opts.dir.join("net"),
            extra_args: Vec::new(),
            env: Vec::new(),
            provider_configs: Vec::new(),
            dns: false,
            links: Default::default(),
        }),
    )
    .await?;
    let launched = Instant::now();
    let measured = measure_testnet(opts, &testnet, launched).await;
    info!("stopping the testnet");
    testnet.shutdown().await;
    let (idle, lookup, concurrent, sequential, after) = measured?;
    Ok(Report {
        command: opts.command.clone(),
        date,
        machine,
        nodes: opts.nodes,
        providers: opts.providers,
        objects: opts.objects,
        concurrency: opts.concurrency,
        seed: opts.seed,
        join,
        idle,
        lookup,
        concurrent,
        sequential,
        after,
        total: started.elapsed(),
    })
}

type TestnetFigures = (
    MemoryResult,
    LookupPhase,
    OffloadResult,
    OffloadResult,
    MemoryResult,
);

async fn measure_testnet(
    opts: &BenchOptions,
    testnet: &Testnet,
    launched: Instant,
) -> Result<TestnetFigures, Error> {
    info!("phase 4: idle memory");
    let idle = phase("phase 4 (idle memory)", idle_memory(testnet, launched)).await?;

    let base = OBJECT_BASE_SIZE;
    let n = opts.objects as u64;
    info!(
        objects = opts.objects,
        "phase 2: DHT lookups and peer fetches"
    );
    let lookup = phase(
        "phase 2 (lookups and peer fetches)",
        bench_lookup(testnet, &object_set(base, opts.objects)),
    )
    .await?;

    info!("phase 3: origin hits, all nodes at once");
    let concurrent = phase(
        "phase 3 (all nodes at once)",
        offload_concurrent(opts, testnet, &object_set(base + n, opts.objects)),
    )
    .await?;

    info!("phase 3: origin hits, one node after another");
    let sequential = phase(
        "phase 3 (one node after another)",
        offload_sequential(opts, testnet, &object_set(base + 2 * n, opts.objects)),
    )
    .await?;
    phase("letting announcements settle", quiesce(testnet)).await?;

    let after = memory_snapshot(testnet, launched.elapsed(), true).await?;
    Ok((idle, lookup, concurrent, sequential, after))
}

/// Runs `work` bounded by [`PHASE_TIMEOUT`].
async fn phase<T>(what: &str, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(PHASE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: what.to_owned(),
                after: PHASE_TIMEOUT,
            })
        })
}

// ---------------------------------------------------------------- phase 1: join time

async fn bench_join(opts: &BenchOptions) -> Result<JoinResult, Error> {
    let dir = opts.dir.join("join");
    let runs = opts.join_runs;
    let (provider, region) = provider_region(0, 1);
    let spec = |name: String, ip, bootstrap| NodeSpec {
        bin: opts.bin.clone(),
        dir: dir.join(name),
        ip,
        provider: provider.clone(),
        // Join time does not depend on membership; independent nodes need no key files.
        provider_key: None,
        region: region.clone(),
        bootstrap,
        extra_args: Vec::new(),
        env: Vec::new(),
    };

    // A new seed for every run: the joiner finds exactly one live peer.
    let mut fresh = Vec::with_capacity(runs);
    for run in 0..runs {
        let mut seed =
            start_seed(spec(format!("fresh-{run}-seed"), node_ip(2 * run)?, vec![])).await?;
        let joiner = spec(
            format!("fresh-{run}"),
            node_ip(2 * run + 1)?,
            seed.runtime().listen_addrs.clone(),
        );
        let result = join_once(joiner).await?;
        info!(run, ?result, "join run, fresh seed");
        fresh.push(result);
        seed.stop().await?;
    }

    // One seed for all runs: it keeps the departed joiners in its routing table.
    let mut churned = Vec::with_capacity(runs);
    let mut churned_timed_out = None;
    let first_ip = 2 * runs;
    let mut seed = start_seed(spec("churn-seed".into(), node_ip(first_ip)?, vec![])).await?;
    let bootstrap = seed.runtime().listen_addrs.clone();
    for run in 0..runs {
        let joiner = spec(
            format!("churn-{run}"),
            node_ip(first_ip + 1 + run)?,
            bootstrap.clone(),
        );
        match join_once(joiner).await {
            Ok(result) => {
                info!(run, ?result, "join run, seed with departed peers");
                churned.push(result);
            }
            Err(Error::NotReady { .. }) => {
                warn!(
                    run,
                    timeout = ?JOIN_RUN_TIMEOUT,
                    "a node did not join the seed in time; skipping the remaining runs"
                );
                churned_timed_out = Some(run);
                break;
            }
            Err(e) => return Err(e),
        }
    }
    seed.stop().await?;
    Ok(JoinResult {
        fresh,
        churned,
        churned_timed_out,
    })
}

async fn start_seed(spec: NodeSpec) -> Result<NodeProcess, Error> {
    let seed = NodeProcess::spawn(spec).await?;
    seed.wait_status("answering", JOIN_RUN_TIMEOUT, |_| true)
        .await?;
    Ok(seed)
}

/// Spawns `spec`, times it until joined, stops it (SIGTERM).
async fn join_once(spec: NodeSpec) -> Result<JoinRun, Error> {
    let start = Instant::now();
    let mut node = NodeProcess::spawn_polling(spec, JOIN_POLL).await?;
    let ready = start.elapsed();
    let joined = poll_joined(&node, start).await?;
    let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
    node.stop().await?;
    Ok(JoinRun {
        ready,
        joined,
        overlay_ms: join_elapsed_ms(&log),
    })
}

/// Polls `/api/status` every [`JOIN_POLL`] until `joined == true`; the time since `start`.
async fn poll_joined(node: &NodeProcess, start: Instant) -> Result<Duration, Error> {
    loop {
        if let Some(status) = node.exit_status() {
            return Err(Error::NodeExited {
                dir: node.spec().dir.clone(),
                status: status.to_string(),
                log_tail: node.log_tail(),
            });
        }
        let last = match node.status().await {
            Ok(status) if status.get("joined").and_then(|j| j.as_bool()) == Some(true) => {
                return Ok(start.elapsed());
            }
            Ok(status) => format!("last status: {status}"),
            Err(e) => format!("last error: {e}"),
        };
        if start.elapsed() >= JOIN_RUN_TIMEOUT {
            return Err(Error::NotReady {
                dir: node.spec().dir.clone(),
                what: format!("joined ({last})"),
                waited: JOIN_RUN_TIMEOUT,
                log_tail: node.log_tail(),
            });
        }
        tokio::time::sleep(JOIN_POLL).await;
    }
}

// ------------------------------------------------------------------------- fetching

/// An origin object: `/bytes/<size>`.
#[derive(Debug, Clone)]
struct Object {
    path: String,
    size: u64,
}

fn object_set(base: u64, count: usize) -> Vec<Object> {
    (0..count as u64)
        .map(|i| Object {
            path: format!("/bytes/{}", base + i),
            size: base + i,
        })
        .collect()
}

/// Fetches `object` through `node`, checking status and body.
async fn fetch_object(node: &NodeProcess, origin: &Origin, object: &Object) -> Fetch {
    let url = origin.url(&object.path);
    match client::fetch_digest(Some(node.runtime().http), &url, FETCH_TIMEOUT).await {
        Ok(r) => {
            let outcome = if !r.status.is_success() {
                format!("HTTP {}", r.status.as_u16())
            } else if r.len != object.size
                || r.digest != origin::expected_digest(&object.path, object.size)
            {
                "wrong body".into()
            } else {
                r.source().unwrap_or("no source header").to_owned()
            };
            Fetch {
                outcome,
                first_byte: r.first_byte,
                elapsed: r.elapsed,
                error: None,
            }
        }
        Err(e) => Fetch {
            outcome: "error".into(),
            first_byte: Duration::ZERO,
            elapsed: Duration::ZERO,
            error: Some(e.to_string()),
        },
    }
}

/// Fetches `objects[k]` for every `k` in `order` through `node`, `concurrency` at a time.
async fn fetch_many(
    node: &NodeProcess,
    origin: &Origin,
    objects: &[Object],
    order: &[usize],
    concurrency: usize,
) -> Vec<Fetch> {
    futures::stream::iter(
        order
            .iter()
            .map(|&k| fetch_object(node, origin, &objects[k])),
    )
    .buffer_unordered(concurrency)
    .collect()
    .await
}

fn tally(fetches: &[Fetch], into: &mut BTreeMap<String, usize>, first_error: &mut Option<String>) {
    for f in fetches {
        *into.entry(f.outcome.clone()).or_default() += 1;
        if first_error.is_none() {
            *first_error = f.error.clone();
        }
    }
}

/// Whether a fetch of a new object with this outcome makes the node announce it: a copy from
/// the origin. (A copy from a peer is announced too unless it came from the key's home node,
/// which announced it itself; the phases that count announcements fetch new objects, so
/// their peer copies come from the home, and they wait for every node to settle after.)
fn stores(outcome: &str) -> bool {
    outcome == "origin"
}

/// The change of a node's announcement counters (in flight: the later value).
fn delta(before: Announcements, after: Announcements) -> Announcements {
    Announcements {
        done: after.done.saturating_sub(before.done),
        failed: after.failed.saturating_sub(before.failed),
        skipped: after.skipped.saturating_sub(before.skipped),
        in_flight: after.in_flight,
    }
}

fn add(a: Announcements, b: Announcements) -> Announcements {
    Announcements {
        done: a.done + b.done,
        failed: a.failed + b.failed,
        skipped: a.skipped + b.skipped,
        in_flight: a.in_flight + b.in_flight,
    }
}

/// Waits until no node has an announcement in flight, so one run's background work does
/// not load the next.
async fn quiesce(testnet: &Testnet) -> Result<(), Error> {
    let waits = testnet.nodes.iter().map(|node| {
        node.wait_status("done announcing", ANNOUNCE_TIMEOUT, |status| {
            Announcements::from_status(status).is_some_and(|a| a.in_flight == 0)
        })
    });
    futures::future::try_join_all(waits).await.map(drop)
}

// ------------------------------------------------------ phase 2: lookups, peer fetch

async fn bench_lookup(testnet: &Testnet, objects: &[Object]) -> Result<LookupPhase, Error> {
    let seed = &testnet.nodes[0];
    let mut first_error = None;

    // Load node-0 from the origin and wait until it announced everything.
    let before = seed.announcements().await?;
    let order: Vec<usize> = (0..objects.len()).collect();
    let loads = fetch_many(
        seed,
        &testnet.origin,
        objects,
        &order,
        SEED_FETCH_CONCURRENCY,
    )
    .await;
    let loaded = Instant::now();
    let mut load_sources = BTreeMap::new();
    tally(&loads, &mut load_sources, &mut first_error);
    let stored = loads.iter().filter(|f| stores(&f.outcome)).count() as u64;
    let after = seed
        .wait_announced(before.settled() + stored, ANNOUNCE_TIMEOUT)
        .await?;
    // With home routing, most objects came to node-0 from their home node, which announces them.
    quiesce(testnet).await?;
    let announce_lag = loaded.elapsed();
    let announced = delta(before, after);

    // Every other node asks the DHT for every object, one lookup at a time.
    let others = &testnet.nodes[1..];
    let mut lookup = LookupResult {
        lookup_ms: Vec::new(),
        holders: Vec::new(),
        found: 0,
        failed: 0,
        first_error: None,
    };
    for node in others {
        for object in objects {
            match holders(node, &testnet.origin.url(&object.path)).await {
                Ok((ms, peers)) => {
                    lookup.lookup_ms.push(ms);
                    lookup.holders.push(peers.len());
                    if !peers.is_empty() {
                        lookup.found += 1;
                    }
                }
                Err(e) => {
                    lookup.failed += 1;
                    lookup.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    // Then each fetches a sample it does not hold yet: a different slice per node.
    let sample = PEER_FETCH_SAMPLE.min(objects.len());
    let mut peer_sources = BTreeMap::new();
    let mut peer_first_byte_ms = Vec::new();
    let mut peer_elapsed_ms = Vec::new();
    for (j, node) in others.iter().enumerate() {
        for t in 0..sample {
            let object = &objects[(j * sample + t) % objects.len()];
            let f = fetch_object(node, &testnet.origin, object).await;
            if f.outcome == "peer" {
                peer_first_byte_ms.push(ms(f.first_byte));
                peer_elapsed_ms.push(ms(f.elapsed));
            }
            tally(
                std::slice::from_ref(&f),
                &mut peer_sources,
                &mut first_error,
            );
        }
    }
    Ok(LookupPhase {
        load_sources,
        announced,
        announce_lag,
        lookup,
        peer_sources,
        peer_first_byte_ms,
        peer_elapsed_ms,
        other_nodes: others.len(),
        sample_per_node: sample,
        first_error,
    })
}

/// `GET /api/holders?url=URL` on `node`: (`lookup_ms`, holder peer ids).
async fn holders(node: &NodeProcess, url: &str) -> Result<(f64, Vec<String>), Error> {
    let api = format!(
        "http://{}/api/holders?url={}",
        node.runtime().admin,
        query_escape(url)
    );
    let resp = client::fetch(None, Method::GET, &api, LOOKUP_TIMEOUT).await?;
    if resp.status != StatusCode::OK {
        let body = String::from_utf8_lossy(&resp.body);
        return Err(Error::http(
            &api,
            format!("status {}: {}", resp.status, body.trim()),
        ));
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|source| Error::Json {
            context: format!("parsing the reply of {api}"),
            source,
        })?;
    let lookup_ms = reply
        .get("lookup_ms")
        .and_then(|v| v.as_f64())
        .ok_or_else(|| Error::http(&api, "the reply has no numeric `lookup_ms`"))?;
    let peers = reply
        .get("holders")
        .and_then(|v| v.as_array())
        .ok_or_else(|| Error::http(&api, "the reply has no `holders` array"))?
        .iter()
        .filter_map(|h| h.get("peer_id")?.as_str().map(str::to_owned))
        .collect();
    Ok((lookup_ms, peers))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------- phase 3: origin offload

async fn announcements_of(testnet: &Testnet) -> Result<Vec<Announcements>, Error> {
    futures::future::try_join_all(testnet.nodes.iter().map(|n| n.announcements())).await
}

fn offload_result(
    testnet: &Testnet,
    objects: &[Object],
    fetches: &[Fetch],
    before: &[Announcements],
    after: &[Announcements],
    wall: Duration,
) -> OffloadResult {
    let mut sources = BTreeMap::new();
    let mut first_error = None;
    tally(fetches, &mut sources, &mut first_error);
    let announced = before
        .iter()
        .zip(after)
        .map(|(b, a)| delta(*b, *a))
        .fold(Announcements::default(), add);
    OffloadResult {
        hits: objects
            .iter()
            .map(|o| testnet.origin.hits(&o.path))
            .collect(),
        sources,
        announced,
        wall,
        first_error,
    }
}

/// Every node fetches every object, each in its own random order, all nodes at once.
async fn offload_concurrent(
    opts: &BenchOptions,
    testnet: &Testnet,
    objects: &[Object],
) -> Result<OffloadResult, Error> {
    // Earlier fetches may still be announcing; they must not count in this run.
    quiesce(testnet).await?;
    let before = announcements_of(testnet).await?;
    let orders: Vec<Vec<usize>> = (0..testnet.nodes.len())
        .map(|i| shuffled(objects.len(), opts.seed.wrapping_add(i as u64)))
        .collect();
    let start = Instant::now();
    let runs =
        testnet.nodes.iter().zip(&orders).map(|(node, order)| {
            fetch_many(node, &testnet.origin, objects, order, opts.concurrency)
        });
    let fetches: Vec<Fetch> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    let wall = start.elapsed();
    quiesce(testnet).await?;
    let after = announcements_of(testnet).await?;
    Ok(offload_result(
        testnet, objects, &fetches, &before, &after, wall,
    ))
}

/// node-0 fetches every object and announces them; then each other node in turn fetches
/// every object (in its own random order, `concurrency` at a time).
async fn offload_sequential(
    opts: &BenchOptions,
    testnet: &Testnet,
    objects: &[Object],
) -> Result<OffloadResult, Error> {
    // Earlier fetches may still be announcing; they must not count in this run.
    quiesce(testnet).await?;
    let before = announcements_of(testnet).await?;
    let start = Instant::now();
    let mut fetches = Vec::with_capacity(objects.len() * testnet.nodes.len());
    for (i, node) in testnet.nodes.iter().enumerate() {
        let order = shuffled(objects.len(), opts.seed.wrapping_add(i as u64));
        let before_node = before[i];
        let got = fetch_many(node, &testnet.origin, objects, &order, opts.concurrency).await;
        if i == 0 {
            let stored = got.iter().filter(|f| stores(&f.outcome)).count() as u64;
            node.wait_announced(before_node.settled() + stored, ANNOUNCE_TIMEOUT)
                .await?;
            quiesce(testnet).await?;
        }
        fetches.extend(got);
    }
    let wall = start.elapsed();
    quiesce(testnet).await?;
    let after = announcements_of(testnet).await?;
    Ok(offload_result(
        testnet, objects, &fetches, &before, &after, wall,
    ))
}

// ------------------------------------------------------------- phase 4: idle memory

/// Waits until every node's `connected_peers` count stopped changing, then reads memory.
async fn idle_memory(testnet: &Testnet, launched: Instant) -> Result<MemoryResult, Error> {
    let mut last: Option<Vec<usize>> = None;
    let mut unchanged = 0;
    let stable = loop {
        let now = connected_counts(testnet).await?;
        if last.as_ref() == Some(&now) {
            unchanged += 1;
        } else {
            unchanged = 0;
        }
        last = Some(now);
        if unchanged >= IDLE_STABLE_POLLS && launched.elapsed() >= IDLE_MIN {
            break true;
        }
        if launched.elapsed() >= IDLE_MAX {
            warn!("connected_peers still changing; measuring idle memory anyway");
            break false;
        }
        tokio::time::sleep(IDLE_POLL).await;
    };
    memory_snapshot(testnet, launched.elapsed(), stable).await
}

async fn connected_counts(testnet: &Testnet) -> Result<Vec<usize>, Error> {
    let statuses = futures::future::try_join_all(testnet.nodes.iter().map(|n| n.status())).await?;
    Ok(statuses
        .iter()
        .map(|s| {
            s.get("connected_peers")
                .and_then(|p| p.as_array())
                .map_or(0, Vec::len)
        })
        .collect())
}

async fn memory_snapshot(
    testnet: &Testnet,
    waited: Duration,
    stable: bool,
) -> Result<MemoryResult, Error> {
    let connected = connected_counts(testnet).await?;
    let mut rss_kib = Vec::new();
    let mut hwm_kib = Vec::new();
    for node in &testnet.nodes {
        let (rss, hwm) = proc_memory(node.pid())?;
        rss_kib.push(rss);
        hwm_kib.push(hwm);
    }
    Ok(MemoryResult {
        rss_kib,
        hwm_kib,
        connected,
        waited,
        stable,
    })
}

/// (VmRSS, VmHWM) in KiB from `/proc/<pid>/status`.
pub(crate) fn proc_memory(pid: u32) -> Result<(u64, u64), Error> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| kib_field(l, name))
            .ok_or_else(|| {
                Error::io(
                    format!("reading {path}"),
                    std::io::Error::other(format!("no {name} line")),
                )
            })
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

// ------------------------------------------------------------------------ the report

fn f(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn sources_line(sources: &BTreeMap<String, usize>) -> String {
    if sources.is_empty() {
        return "none".into();
    }
    sources
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary_row(label: &str, values: &[f64]) -> String {
    match Summary::of(values) {
        Some(s) => format!(
            "| {label} | {} | {} | {} | {} | {} | {} |\n",
            s.n,
            f(s.median),
            f(s.p99),
            f(s.mean),
            f(s.min),
            f(s.max)
        ),
        None => format!("| {label} | 0 | – | – | – | – | – |\n"),
    }
}

const SUMMARY_HEADER: &str =
    "| ms | n | median | p99 | mean | min | max |\n|---|---:|---:|---:|---:|---:|---:|\n";

impl Report {
    /// The report as a markdown section.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "## Reef foundation benchmark\n");
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        out.push_str(&m.markdown_lines());
        let build = match m.build {
            "release" => "release build",
            "debug" => "**debug build** (figures are not representative)",
            _ => "build profile unknown (not under target/release or target/debug)",
        };
        let _ = writeln!(out, "- `reef` binary: `{}` — {build}", m.bin.display());
        let _ = writeln!(
            out,
            "- Setup: everything on loopback (127.0.0.x), one machine; {} nodes of {} \
             providers; {} objects per set (`/bytes/<n>`, ~10 KiB each, distinct paths); \
             {} concurrent fetches per node in phase 3; fetch-order seed {}",
            self.nodes, self.providers, self.objects, self.concurrency, self.seed
        );
        let _ = writeln!(out, "- Whole run: {:.0} s\n", self.total.as_secs_f64());

        self.join_section(&mut out);
        self.lookup_section(&mut out);
        self.offload_section(&mut out);
        self.memory_section(&mut out);
        out
    }

    fn join_section(&self, out: &mut String) {
        let j = &self.join;
        let _ = writeln!(out, "### 1. Time from `reef run` to joined\n");
        let _ = writeln!(
            out,
            "Each run spawns a fresh node (new data dir, key and loopback address) with \
             `--bootstrap` pointing at a seed node, polls its `/api/status` every {} ms from \
             spawn until `joined == true`, then stops it (SIGTERM). **Fresh seed**: every run \
             has a new seed of its own, so the joiner meets one live peer and nothing stale. \
             **Seed with departed peers** (the same procedure against one long-lived seed): \
             the seed keeps every earlier, now stopped, joiner in its routing table and hands \
             them out, so the joiner of run *k* can be handed up to *k* dead peers.\n",
            JOIN_POLL.as_millis()
        );
        out.push_str(SUMMARY_HEADER);
        for (label, runs) in [
            ("fresh seed", &j.fresh),
            ("seed with departed peers", &j.churned),
        ] {
            let ready: Vec<f64> = runs.iter().map(|r| ms(r.ready)).collect();
            let joined: Vec<f64> = runs.iter().map(|r| ms(r.joined)).collect();
            let overlay: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.overlay_ms.map(|v| v as f64))
                .collect();
            out.push_str(&summary_row(
                &format!("{label}: spawn → `runtime.json` written (listeners bound)"),
                &ready,
            ));
            out.push_str(&summary_row(
                &format!("{label}: spawn → `/api/status` says `joined` (wall clock)"),
                &joined,
            ));
            out.push_str(&summary_row(
                &format!("{label}: overlay's own `elapsed_ms` (`reef::join` log line)"),
                &overlay,
            ));
        }
        out.push('\n');
        for (label, runs) in [
            ("fresh seed", &j.fresh),
            ("seed with departed peers", &j.churned),
        ] {
            let per_run: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{}{}",
                        f(ms(r.joined)),
                        r.overlay_ms.map_or(" (–)".into(), |o| format!(" ({o})"))
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "- {label}, per run, wall ms to joined (overlay ms): {}.",
                per_run.join(", ")
            );
        }
        if let Some(run) = j.churned_timed_out {
            let _ = writeln!(
                out,
                "- seed with departed peers: run {run} did not join within {} s; later runs \
                 were skipped.",
                JOIN_RUN_TIMEOUT.as_secs()
            );
        }
        let _ = writeln!(
            out,
            "\nWith fewer than 100 runs, p99 is the maximum. The overlay's `elapsed_ms` counts \
             from the overlay's start inside the process, so it leaves out exec, key and \
             cache setup; a missing value (–) means no `reef::join` line with `elapsed_ms` \
             was found in node.log.\n"
        );
    }

    fn lookup_section(&self, out: &mut String) {
        let l = &self.lookup;
        let lk = &l.lookup;
        let _ = writeln!(
            out,
            "### 2. DHT lookup and peer fetch ({} nodes)\n",
            self.nodes
        );
        let _ = writeln!(
            out,
            "node-0 fetched {} objects through its HTTP edge, {} at a time (sources: {}). \
             All its announcements had settled {} ms after the last fetch finished \
             (done {}, failed {}, skipped {}; polled every 100 ms).\n",
            self.objects,
            SEED_FETCH_CONCURRENCY,
            sources_line(&l.load_sources),
            f(ms(l.announce_lag)),
            l.announced.done,
            l.announced.failed,
            l.announced.skipped
        );
        let _ = writeln!(
            out,
            "#### `GET /api/holders?url=` from the {} other nodes, one lookup at a time\n",
            l.other_nodes
        );
        out.push_str(SUMMARY_HEADER);
        out.push_str(&summary_row("`lookup_ms`", &lk.lookup_ms));
        let holders: Vec<f64> = lk.holders.iter().map(|&h| h as f64).collect();
        let found = Summary::of(&holders);
        let _ = writeln!(
            out,
            "\nHolders found per lookup: mean {}, min {}, max {}; at least one in {} of \
             {} lookups; failed lookups: {}{}.\n",
            found.map_or("–".into(), |s| format!("{:.2}", s.mean)),
            found.map_or("–".into(), |s| format!("{:.0}", s.min)),
            found.map_or("–".into(), |s| format!("{:.0}", s.max)),
            lk.found,
            lk.holders.len(),
            lk.failed,
            lk.first_error
                .as_ref()
                .map_or(String::new(), |e| format!(" (first: {e})"))
        );
        let _ = writeln!(
            out,
            "#### Peer fetch through each of the {} other nodes ({} objects each, not yet \
             held by that node, one at a time)\n",
            l.other_nodes, l.sample_per_node
        );
        let _ = writeln!(
            out,
            "Outcomes (`X-Reef-Source`, or what went wrong): {}. Every body was checked \
             against `origin::expected_digest` (a mismatch shows as `wrong body`). Times \
             below are over the fetches served by a peer, measured by the client from \
             sending the request.\n",
            sources_line(&l.peer_sources)
        );
        out.push_str(SUMMARY_HEADER);
        out.push_str(&summary_row("time to first byte", &l.peer_first_byte_ms));
        out.push_str(&summary_row("whole body", &l.peer_elapsed_ms));
        if let Some(e) = &l.first_error {
            let _ = writeln!(out, "\nFirst fetch error: {e}");
        }
        out.push('\n');
    }

    fn offload_section(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### 3. Origin fetches per object ({} nodes × {} new objects per run)\n",
            self.nodes, self.objects
        );
        let _ = writeln!(
            out,
            "| run | wall s | origin hits: mean per object | max | total | objects fetched > 1× |\n\
             |---|---:|---:|---:|---:|---:|"
        );
        for (label, r) in [
            ("all nodes at once", &self.concurrent),
            ("one node after another", &self.sequential),
        ] {
            let total: u64 = r.hits.iter().sum();
            let max = r.hits.iter().max().copied().unwrap_or(0);
            let over = r.hits.iter().filter(|&&h| h > 1).count();
            let mean = if r.hits.is_empty() {
                0.0
            } else {
                total as f64 / r.hits.len() as f64
            };
            let _ = writeln!(
                out,
                "| {label} | {:.1} | {mean:.2} | {max} | {total} | {over} |",
                r.wall.as_secs_f64()
            );
        }
        out.push('\n');
        for (label, how, r) in [
            (
                "All nodes at once",
                format!(
                    "every node fetched every object in its own random order, {} at a time, \
                     all nodes starting together",
                    self.concurrency
                ),
                &self.concurrent,
            ),
            (
                "One node after another",
                format!(
                    "node-0 fetched every object and announced them all; then node-1, \
                     node-2, … in turn, each every object in its own random order, {} at a \
                     time",
                    self.concurrency
                ),
                &self.sequential,
            ),
        ] {
            let mut histogram: BTreeMap<u64, usize> = BTreeMap::new();
            for &h in &r.hits {
                *histogram.entry(h).or_default() += 1;
            }
            let histogram: Vec<String> = histogram
                .iter()
                .map(|(hits, objects)| format!("{hits}×: {objects}"))
                .collect();
            let _ = writeln!(
                out,
                "- **{label}**: {how}. Origin hits per object → number of objects: {}. \
                 Responses: {}. Announcements (all nodes): done {}, failed {}, skipped {}.{}",
                histogram.join(", "),
                sources_line(&r.sources),
                r.announced.done,
                r.announced.failed,
                r.announced.skipped,
                r.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" First error: {e}"))
            );
        }
        out.push('\n');
    }

    fn memory_section(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### 4. Memory (VmRSS / VmHWM from `/proc/<pid>/status`)\n"
        );
        let i = &self.idle;
        let a = &self.after;
        let (cmin, cmax) = (
            i.connected.iter().min().copied().unwrap_or(0),
            i.connected.iter().max().copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "Idle: measured {:.1} s after the testnet was up (all joined), {}; connected \
             peers per node {cmin}–{cmax}. \"After\" is at the end of the benchmark, once all \
             three object sets ({} objects) went through the testnet.\n",
            i.waited.as_secs_f64(),
            if i.stable {
                format!(
                    "once every node's `connected_peers` count had been unchanged for {} polls \
                     {} ms apart",
                    IDLE_STABLE_POLLS,
                    IDLE_POLL.as_millis()
                )
            } else {
                "although `connected_peers` was still changing".into()
            },
            3 * self.objects
        );
        let _ = writeln!(
            out,
            "| | idle VmRSS | idle VmHWM | after VmRSS | after VmHWM |\n|---|---:|---:|---:|---:|"
        );
        let stat = |v: &[u64], pick: fn(&Summary) -> f64| {
            let v: Vec<f64> = v.iter().map(|&k| k as f64).collect();
            Summary::of(&v).map_or("–".into(), |s| mib(pick(&s)))
        };
        for (label, pick) in [
            (
                "one node (median)",
                (|s: &Summary| s.median) as fn(&Summary) -> f64,
            ),
            ("smallest node", |s: &Summary| s.min),
            ("largest node", |s: &Summary| s.max),
        ] {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} |",
                stat(&i.rss_kib, pick),
                stat(&i.hwm_kib, pick),
                stat(&a.rss_kib, pick),
                stat(&a.hwm_kib, pick)
            );
        }
        let total = |v: &[u64]| mib(v.iter().sum::<u64>() as f64);
        let _ = writeln!(
            out,
            "| whole testnet ({} nodes) | {} | {} | {} | {} |\n",
            self.nodes,
            total(&i.rss_kib),
            total(&i.hwm_kib),
            total(&a.rss_kib),
            total(&a.hwm_kib)
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        // Fewer than 100 values: p99 is the maximum.
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&v, 101.0), None);
    }

    #[test]
    fn median_averages_the_middle_pair() {
        assert_eq!(median(&[1.0, 2.0, 3.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!(
            (s.n, s.min, s.median, s.mean, s.p99, s.max),
            (5, 1.0, 3.0, 3.0, 5.0, 5.0)
        );
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn join_line_is_parsed_in_every_format() {
        let text = "2025-01-01T00:00:00Z  INFO reef::join: joined the overlay peer=12D3 \
                    elapsed_ms=42 connected=1 routing_table=1\n";
        assert_eq!(join_elapsed_ms(text), Some(42));
        let ansi = "\u{1b}[2m2025\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mreef::join\u{1b}[0m\
                    \u{1b}[2m:\u{1b}[0m joined the overlay \u{1b}[3mpeer\u{1b}[0m\u{1b}[2m=\
                    \u{1b}[0m12D3 \u{1b}[3melapsed_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m137 \
                    \u{1b}[3mconnected\u{1b}[0m\u{1b}[2m=\u{1b}[0m1";
        assert_eq!(join_elapsed_ms(ansi), Some(137));
        let json = r#"{"level":"INFO","target":"reef::join","elapsed_ms":9,"message":"x"}"#;
        assert_eq!(join_elapsed_ms(json), Some(9));
        assert_eq!(
            join_elapsed_ms("INFO reef::ready: node ready elapsed_ms=5"),
            None
        );
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("http://127.0.0.1:80/bytes/1?a=b&c"),
            "http%3A%2F%2F127.0.0.1%3A80%2Fbytes%2F1%3Fa%3Db%26c"
        );
    }

    #[test]
    fn shuffles_are_deterministic_permutations() {
        let a = shuffled(100, 7);
        assert_eq!(a, shuffled(100, 7));
        assert_ne!(a, shuffled(100, 8));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert!(shuffled(0, 1).is_empty());
    }

    #[test]
    fn proc_status_fields_parse() {
        assert_eq!(kib_field("VmRSS:\t   12345 kB", "VmRSS:"), Some(12345));
        assert_eq!(kib_field("VmHWM: 1 kB", "VmRSS:"), None);
        let (rss, hwm) = proc_memory(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn options_are_checked() {
        let ok = BenchOptions {
            bin: "reef".into(),
            nodes: 10,
            providers: 2,
            objects: 100,
            join_runs: 10,
            concurrency: 8,
            seed: 1,
            dir: "/tmp/x".into(),
            command: "reef-testnet bench".into(),
        };
        assert!(ok.validate().is_ok());
        for bad in [
            BenchOptions {
                nodes: 1,
                ..ok.clone()
            },
            BenchOptions {
                providers: 11,
                ..ok.clone()
            },
            BenchOptions {
                objects: 0,
                ..ok.clone()
            },
            BenchOptions {
                join_runs: 0,
                ..ok.clone()
            },
            BenchOptions {
                concurrency: 0,
                ..ok.clone()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidOptions(_))));
        }
    }
}
