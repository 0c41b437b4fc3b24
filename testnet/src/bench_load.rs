//! `reef-testnet bench-load`: what load gossip costs and how fast it converges, measured on
//! loopback testnets of several sizes against real `reef` processes.
//!
//! For each size N:
//! 1. **Launch** N nodes of K providers and wait until every node reports `joined`
//!    ([`Testnet::launch`]); that instant is "all nodes ready".
//! 2. **Convergence**: poll every node's `GET /api/load` every [`CONVERGENCE_POLL`] until its
//!    table lists all N nodes; per node, the time from ready to the first complete table, and
//!    the time until every table was complete.
//! 3. **Traffic**: after a settling pause (the overlay's own start-up work, Kademlia
//!    lookups and record puts, dies down), read every node's `/api/status` counters, wait
//!    the window, read them again; per node and second, the bytes of load-report message copies received and sent
//!    (`gossip.topics["reef/load/1"]`), of all gossip messages, and of all libp2p streams. See
//!    `reef_overlay::Traffic` for exactly what each counts. Nothing else runs meanwhile, so the
//!    stream bytes are gossip plus the overlay's background (ping, identify, kad refreshes).
//!    Over the same window, each node's CPU time (user + system, `/proc/<pid>/stat`).
//! 4. **Health**: rejected reports and the lowest gossip score any node gives a peer (honest
//!    nodes should never fall below zero), and each node's memory.
//! 5. **A late joiner**: one more node is started into the running testnet; from its spawn,
//!    the time until its own table lists every node and until every other table lists it.
//!    Then it is killed (SIGKILL), and the time until no table lists it any more.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use reef_proto::records::LOAD_TOPIC;
use serde_json::Value;
use tracing::info;

use crate::bench::{Machine, Summary, proc_memory};
use crate::client;
use crate::{Error, NodeProcess, NodeSpec, Options, Testnet, node_ip, provider_region};

/// How often every node's table is read while waiting for convergence: fine enough to time
/// against the one-second report period, coarse enough that 50 nodes' admin APIs keep up.
pub const CONVERGENCE_POLL: Duration = Duration::from_millis(100);
/// A testnet whose tables are not complete by then is reported as not converged.
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(60);
/// How often tables are read while timing the late joiner, which is a handful of nodes'
/// worth of polling at a time.
const JOINER_POLL: Duration = Duration::from_millis(50);
/// One admin API call (a 50-entry table is ~15 KiB of JSON).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadBenchOptions {
    pub bin: PathBuf,
    /// Testnet sizes, each at least 2, run one after another.
    pub sizes: Vec<usize>,
    /// Providers per testnet, round-robin (at most the smallest size).
    pub providers: usize,
    /// How long traffic is counted for.
    pub window: Duration,
    /// Pause between convergence and counting traffic.
    pub settle: Duration,
    /// Root for node data and logs (`DIR/n<N>/…`).
    pub dir: PathBuf,
    /// The command line that reproduces the run.
    pub command: String,
}

impl LoadBenchOptions {
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: String| Err(Error::InvalidOptions(what));
        let Some(&smallest) = self.sizes.iter().min() else {
            return bad("--nodes needs at least one size".into());
        };
        if smallest < 2 {
            return bad(format!("every size must be at least 2, got {smallest}"));
        }
        if self.providers == 0 || self.providers > smallest {
            return bad(format!(
                "--providers must be between 1 and the smallest size ({smallest}), got {}",
                self.providers
            ));
        }
        if self.window < Duration::from_secs(1) {
            return bad("--window must be at least 1 s".into());
        }
        Ok(())
    }
}

/// One node's counters at one instant.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    at: Option<Instant>,
    load_in: u64,
    load_out: u64,
    load_messages_in: u64,
    gossip_in: u64,
    gossip_out: u64,
    streams_in: u64,
    streams_out: u64,
}

/// Per second, one node.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub load_in: f64,
    pub load_out: f64,
    /// Copies of load report messages received per second.
    pub load_messages_in: f64,
    pub gossip_in: f64,
    pub gossip_out: f64,
    pub streams_in: f64,
    pub streams_out: f64,
}

/// The figures for one testnet size.
#[derive(Debug, Clone)]
pub struct SizeResult {
    pub nodes: usize,
    pub providers: usize,
    /// First spawn until every node joined.
    pub launch: Duration,
    /// Per node: from ready until its table first listed every node (`None`: not within the
    /// limit).
    pub converged: Vec<Option<Duration>>,
    pub rates: Vec<Rates>,
    /// Window actually measured (first read to last read).
    pub window: Duration,
    pub late: LateJoiner,
    /// Per node, CPU time (user + system) in ms per second of the traffic window.
    pub cpu_ms_per_s: Vec<f64>,
    pub rss_kib: Vec<u64>,
    /// Reports rejected, summed over nodes and reasons.
    pub rejected: u64,
    /// Lowest gossip score any node gave any connected peer.
    pub min_score: Option<f64>,
    /// Connected peers per node at the end.
    pub connected: Vec<usize>,
}

/// One node started into, then killed out of, a converged testnet.
#[derive(Debug, Clone, Copy, Default)]
pub struct LateJoiner {
    /// Spawn until `runtime.json` (listeners bound).
    pub started: Option<Duration>,
    /// Spawn until its own table listed every node.
    pub own_table: Option<Duration>,
    /// Spawn until every other node's table listed it.
    pub listed_everywhere: Option<Duration>,
    /// Kill until no table listed it.
    pub gone_everywhere: Option<Duration>,
}

impl SizeResult {
    /// Ready until every table was complete, if they all were.
    pub fn all_converged(&self) -> Option<Duration> {
        self.converged
            .iter()
            .try_fold(Duration::ZERO, |m, c| c.map(|c| m.max(c)))
    }
}

#[derive(Debug, Clone)]
pub struct LoadBenchReport {
    pub command: String,
    pub date: String,
    pub machine: Machine,
    pub window: Duration,
    pub settle: Duration,
    pub results: Vec<SizeResult>,
    pub total: Duration,
}

/// Runs every size in turn; each testnet is shut down before the next starts.
pub async fn run(opts: &LoadBenchOptions) -> Result<LoadBenchReport, Error> {
    opts.validate()?;
    let started = Instant::now();
    let date = httpdate::fmt_http_date(SystemTime::now());
    let machine = Machine::describe(&opts.bin);
    let mut results = Vec::new();
    for &n in &opts.sizes {
        info!(nodes = n, providers = opts.providers, "launching");
        let t0 = Instant::now();
        let testnet = Testnet::launch(Options {
            bin: opts.bin.clone(),
            nodes: n,
            providers: opts.providers,
            dir: opts.dir.join(format!("n{n}")),
            extra_args: Vec::new(),
            env: Vec::new(),
            provider_configs: Vec::new(),
            dns: false,
            links: Default::default(),
        })
        .await?;
        let launch = t0.elapsed();
        let measured = measure(opts, &testnet, launch).await;
        info!(nodes = n, "stopping the testnet");
        testnet.shutdown().await;
        let result = measured?;
        info!(
            nodes = n,
            converged = ?result.all_converged(),
            "measured"
        );
        results.push(result);
    }
    Ok(LoadBenchReport {
        command: opts.command.clone(),
        date,
        machine,
        window: opts.window,
        settle: opts.settle,
        results,
        total: started.elapsed(),
    })
}

async fn measure(
    opts: &LoadBenchOptions,
    testnet: &Testnet,
    launch: Duration,
) -> Result<SizeResult, Error> {
    let ready = Instant::now();
    let ids: Vec<String> = testnet
        .nodes
        .iter()
        .map(|n| n.runtime().peer_id.clone())
        .collect();
    let converged = convergence(testnet, &ids, ready).await;

    info!(settle = ?opts.settle, "letting the overlay settle");
    tokio::time::sleep(opts.settle).await;
    info!(window = ?opts.window, "counting gossip traffic");
    let before = counters_of(testnet).await?;
    let cpu_before = cpu_times(testnet)?;
    let cpu_start = Instant::now();
    tokio::time::sleep(opts.window).await;
    let cpu_after = cpu_times(testnet)?;
    let cpu_secs = cpu_start.elapsed().as_secs_f64();
    let cpu_ms_per_s: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| a.saturating_sub(*b) as f64 / cpu_secs)
        .collect();
    let statuses = statuses(testnet).await?;
    let after: Vec<Counters> = statuses.iter().map(|(at, s)| counters(*at, s)).collect();
    let rates = before
        .iter()
        .zip(&after)
        .map(|(b, a)| rates(b, a))
        .collect();
    let window = match (
        before.first().and_then(|c| c.at),
        after.last().and_then(|c| c.at),
    ) {
        (Some(b), Some(a)) => a.saturating_duration_since(b),
        _ => opts.window,
    };

    let mut rejected = 0;
    let mut min_score: Option<f64> = None;
    let mut connected = Vec::new();
    for (_, status) in &statuses {
        if let Some(reasons) = status["load"]["rejected"].as_object() {
            rejected += reasons.values().filter_map(Value::as_u64).sum::<u64>();
        }
        if let Some(scores) = status["gossip"]["scores"].as_object() {
            for s in scores.values().filter_map(Value::as_f64) {
                min_score = Some(min_score.map_or(s, |m| m.min(s)));
            }
        }
        connected.push(status["connected_peers"].as_array().map_or(0, Vec::len));
    }
    let mut rss_kib = Vec::new();
    for node in &testnet.nodes {
        rss_kib.push(proc_memory(node.pid())?.0);
    }
    info!("timing a late joiner");
    let late = late_joiner(opts, testnet, &ids).await?;
    Ok(SizeResult {
        nodes: testnet.nodes.len(),
        providers: opts.providers,
        launch,
        converged,
        rates,
        window,
        late,
        cpu_ms_per_s,
        rss_kib,
        rejected,
        min_score,
        connected,
    })
}

/// Per node, the time from `ready` until its table first listed every one of `ids`.
async fn convergence(testnet: &Testnet, ids: &[String], ready: Instant) -> Vec<Option<Duration>> {
    let mut done: Vec<Option<Duration>> = vec![None; testnet.nodes.len()];
    while done.iter().any(Option::is_none) && ready.elapsed() < CONVERGENCE_LIMIT {
        let polls = testnet.nodes.iter().zip(&done).map(|(node, d)| async move {
            match d {
                Some(_) => None,
                None => Some(table_complete(node, ids).await),
            }
        });
        let results = futures::future::join_all(polls).await;
        let at = ready.elapsed();
        for (d, complete) in done.iter_mut().zip(results) {
            if complete == Some(true) {
                *d = Some(at);
            }
        }
        tokio::time::sleep(CONVERGENCE_POLL).await;
    }
    done
}

/// Starts one more node into `testnet`, times its arrival in every table and, after a kill,
/// its departure from every table.
async fn late_joiner(
    opts: &LoadBenchOptions,
    testnet: &Testnet,
    ids: &[String],
) -> Result<LateJoiner, Error> {
    let i = testnet.nodes.len();
    let (provider, region) = provider_region(i, opts.providers);
    let spec = NodeSpec {
        bin: opts.bin.clone(),
        dir: testnet.dir().join("late-joiner"),
        ip: node_ip(i)?,
        provider,
        provider_key: Some(crate::testnet::provider_key_path(
            testnet.dir(),
            i % opts.providers,
        )),
        region,
        bootstrap: testnet.bootstrap_addrs(usize::MAX),
        extra_args: Vec::new(),
        env: Vec::new(),
    };
    let spawned = Instant::now();
    let mut late = NodeProcess::spawn(spec).await?;
    let mut result = LateJoiner {
        started: Some(spawned.elapsed()),
        ..LateJoiner::default()
    };
    let late_id = late.runtime().peer_id.clone();
    let mut all: Vec<String> = ids.to_vec();
    all.push(late_id.clone());
    let others: Vec<&NodeProcess> = testnet.nodes.iter().collect();
    let just_late = std::slice::from_ref(&late_id);
    while (result.own_table.is_none() || result.listed_everywhere.is_none())
        && spawned.elapsed() < CONVERGENCE_LIMIT
    {
        if result.own_table.is_none() && table_complete(&late, &all).await {
            result.own_table = Some(spawned.elapsed());
        }
        if result.listed_everywhere.is_none() {
            let lists = others.iter().map(|n| table_complete(n, just_late));
            if futures::future::join_all(lists)
                .await
                .into_iter()
                .all(|l| l)
            {
                result.listed_everywhere = Some(spawned.elapsed());
            }
        }
        tokio::time::sleep(JOINER_POLL).await;
    }

    let killed = Instant::now();
    late.kill();
    while result.gone_everywhere.is_none() && killed.elapsed() < CONVERGENCE_LIMIT {
        let lists = others.iter().map(|n| table_lists_any(n, just_late));
        if futures::future::join_all(lists)
            .await
            .into_iter()
            .all(|l| !l)
        {
            result.gone_everywhere = Some(killed.elapsed());
        }
        tokio::time::sleep(JOINER_POLL).await;
    }
    Ok(result)
}

/// Whether `node`'s `/api/load` lists any of `ids` (an unreachable node: yes, to be safe).
async fn table_lists_any(node: &NodeProcess, ids: &[String]) -> bool {
    match listed(node).await {
        Some(listed) => ids.iter().any(|id| listed.contains(id)),
        None => true,
    }
}

/// The peer ids `node`'s `/api/load` lists, `None` if it did not answer properly.
async fn listed(node: &NodeProcess) -> Option<Vec<String>> {
    let url = format!("http://{}/api/load", node.runtime().admin);
    let resp = client::fetch(None, Method::GET, &url, ADMIN_TIMEOUT)
        .await
        .ok()?;
    if resp.status != StatusCode::OK {
        return None;
    }
    let load = serde_json::from_slice::<Value>(&resp.body).ok()?;
    let nodes = load["nodes"].as_array()?;
    Some(
        nodes
            .iter()
            .filter_map(|n| n["peer_id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Whether `node`'s `/api/load` lists every one of `ids` (an unreachable node: not yet).
async fn table_complete(node: &NodeProcess, ids: &[String]) -> bool {
    listed(node)
        .await
        .is_some_and(|listed| ids.iter().all(|id| listed.contains(id)))
}

/// Every node's CPU time so far (user + system), in milliseconds.
pub(crate) fn cpu_times(testnet: &Testnet) -> Result<Vec<u64>, Error> {
    testnet.nodes.iter().map(|n| proc_cpu_ms(n.pid())).collect()
}

/// utime + stime of a process from `/proc/<pid>/stat`, in milliseconds.
fn proc_cpu_ms(pid: u32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/stat");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::io(format!("reading {path}"), e))?;
    cpu_ms_of_stat(&text).ok_or_else(|| {
        Error::io(
            format!("reading {path}"),
            std::io::Error::other("no utime/stime fields"),
        )
    })
}

/// Clock ticks are 100 Hz on every Linux this runs on (`USER_HZ`, fixed by the kernel ABI).
const USER_HZ: u64 = 100;

/// utime + stime (fields 14 and 15, counted after the parenthesised command name, which may
/// itself contain spaces) in milliseconds.
fn cpu_ms_of_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1000 / USER_HZ)
}

/// Every node's `/api/status`, with the instant each answer arrived.
async fn statuses(testnet: &Testnet) -> Result<Vec<(Instant, Value)>, Error> {
    futures::future::try_join_all(testnet.nodes.iter().map(|n| async move {
        let status = n.status().await?;
        Ok::<_, Error>((Instant::now(), status))
    }))
    .await
}

async fn counters_of(testnet: &Testnet) -> Result<Vec<Counters>, Error> {
    Ok(statuses(testnet)
        .await?
        .iter()
        .map(|(at, s)| counters(*at, s))
        .collect())
}

fn counters(at: Instant, status: &Value) -> Counters {
    let gossip = &status["gossip"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let topic = &gossip["topics"][LOAD_TOPIC];
    Counters {
        at: Some(at),
        load_in: n(&topic["bytes_in"]),
        load_out: n(&topic["bytes_out"]),
        load_messages_in: n(&topic["messages_in"]),
        gossip_in: n(&gossip["bytes_in"]),
        gossip_out: n(&gossip["bytes_out"]),
        streams_in: n(&gossip["streams_in"]),
        streams_out: n(&gossip["streams_out"]),
    }
}

fn rates(before: &Counters, after: &Counters) -> Rates {
    let secs = match (before.at, after.at) {
        (Some(b), Some(a)) => a.saturating_duration_since(b).as_secs_f64(),
        _ => 0.0,
    };
    if secs <= 0.0 {
        return Rates::default();
    }
    let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    Rates {
        load_in: per_s(after.load_in, before.load_in),
        load_out: per_s(after.load_out, before.load_out),
        load_messages_in: per_s(after.load_messages_in, before.load_messages_in),
        gossip_in: per_s(after.gossip_in, before.gossip_in),
        gossip_out: per_s(after.gossip_out, before.gossip_out),
        streams_in: per_s(after.streams_in, before.streams_in),
        streams_out: per_s(after.streams_out, before.streams_out),
    }
}

// ------------------------------------------------------------------------ the report

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// `median (min–max)` of a sample, with `fmt` for each value.
fn spread(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    match Summary::of(values) {
        Some(s) => format!("{} ({}–{})", fmt(s.median), fmt(s.min), fmt(s.max)),
        None => "–".into(),
    }
}

fn kib(bytes: f64) -> String {
    if bytes >= 10.0 * 1024.0 {
        format!("{:.0} KiB", bytes / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

impl LoadBenchReport {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "## Load gossip benchmark\n");
        let _ = writeln!(out, "```sh\n{}\n```\n", self.command);
        let _ = writeln!(out, "- Date: {}", self.date);
        let mem = m.mem_total_kib.map_or("unknown memory".into(), |k| {
            format!("{:.1} GiB RAM", k as f64 / 1024.0 / 1024.0)
        });
        let _ = writeln!(
            out,
            "- Machine: {} CPUs (nproc), {}, {mem}; everything on loopback",
            m.nproc, m.cpu_model
        );
        let _ = writeln!(out, "- `reef` binary: `{}` ({})", m.bin.display(), m.build);
        let _ = writeln!(
            out,
            "- Traffic counted over {} s per size, {} s after the tables converged; whole run \
             {:.0} s\n",
            self.window.as_secs(),
            self.settle.as_secs(),
            self.total.as_secs_f64()
        );

        out.push_str(
            "| nodes | launch → all joined (s) | ready → every table lists every node (s) \
             | per node: ready → own table complete, median (min–max) s \
             | load reports, bytes/s in per node | out per node \
             | copies received of each report | all libp2p streams in / out per node \
             | CPU per node, ms/s | RSS per node | rejected | lowest score |\n",
        );
        out.push_str("|---:|---:|---:|---|---|---|---:|---|---|---|---:|---:|\n");
        for r in &self.results {
            let converged: Vec<f64> = r
                .converged
                .iter()
                .flatten()
                .map(Duration::as_secs_f64)
                .collect();
            let all = r.all_converged().map_or_else(
                || {
                    let missing = r.converged.iter().filter(|c| c.is_none()).count();
                    format!(
                        "not within {} s ({missing} nodes)",
                        CONVERGENCE_LIMIT.as_secs()
                    )
                },
                secs,
            );
            let col = |f: fn(&Rates) -> f64| -> Vec<f64> { r.rates.iter().map(f).collect() };
            let copies: Vec<f64> = r
                .rates
                .iter()
                .map(|x| x.load_messages_in / (r.nodes - 1) as f64)
                .collect();
            let med = |v: &[f64]| Summary::of(v).map_or(0.0, |s| s.median);
            let rss: Vec<f64> = r.rss_kib.iter().map(|k| *k as f64).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {} / {} | {} | {} | {} | {} |",
                r.nodes,
                secs(r.launch),
                all,
                spread(&converged, |v| format!("{v:.2}")),
                spread(&col(|x| x.load_in), kib),
                spread(&col(|x| x.load_out), kib),
                med(&copies),
                kib(med(&col(|x| x.streams_in))),
                kib(med(&col(|x| x.streams_out))),
                spread(&r.cpu_ms_per_s, |v| format!("{v:.0}")),
                spread(&rss, |k| format!("{:.1} MiB", k / 1024.0)),
                r.rejected,
                r.min_score.map_or("–".into(), |s| format!("{s:.2}")),
            );
        }
        out.push('\n');
        for r in &self.results {
            let connected: Vec<f64> = r.connected.iter().map(|c| *c as f64).collect();
            let col = |f: fn(&Rates) -> f64| -> Vec<f64> { r.rates.iter().map(f).collect() };
            let _ = writeln!(
                out,
                "- {} nodes of {} providers: window {:.1} s; connected peers per node {}; \
                 all gossip messages (every topic) in {} / out {} per node.",
                r.nodes,
                r.providers,
                r.window.as_secs_f64(),
                spread(&connected, |v| format!("{v:.0}")),
                spread(&col(|x| x.gossip_in), kib),
                spread(&col(|x| x.gossip_out), kib),
            );
        }
        out.push_str(
            "\nA late joiner: one more node started into the converged testnet (bootstrapping \
             from two of its nodes), then killed.\n\n\
             | nodes before | spawn → listening (s) | spawn → its own table lists every node (s) \
             | spawn → every table lists it (s) | kill → no table lists it (s) |\n\
             |---:|---:|---:|---:|---:|\n",
        );
        for r in &self.results {
            let t = |d: Option<Duration>| d.map_or("not within 60 s".into(), secs);
            let l = &r.late;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                r.nodes,
                t(l.started),
                t(l.own_table),
                t(l.listed_everywhere),
                t(l.gone_everywhere),
            );
        }
        out.push_str(
            "\nLoad report bytes count every copy of a `reef/load/1` message a node received \
             (duplicates included) or sent (its own, forwarded, or answering IWANT), each as its \
             protobuf encoding; gossip control messages (IHAVE, IWANT, GRAFT, PRUNE) are not in \
             them but are in the stream bytes, which count every byte of every libp2p stream \
             (all protocols) above encryption and multiplexing. \"Copies received of each \
             report\" is load messages received per second over the N − 1 reports the other \
             nodes send per second.\n",
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts(sizes: Vec<usize>, providers: usize) -> LoadBenchOptions {
        LoadBenchOptions {
            bin: "reef".into(),
            sizes,
            providers,
            window: Duration::from_secs(10),
            settle: Duration::from_secs(10),
            dir: "/tmp/x".into(),
            command: "reef-testnet bench-load".into(),
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(opts(vec![10, 20], 3).validate().is_ok());
        assert!(opts(vec![], 3).validate().is_err());
        assert!(opts(vec![1, 20], 1).validate().is_err());
        assert!(opts(vec![2, 20], 3).validate().is_err());
        assert!(opts(vec![10], 0).validate().is_err());
        let mut o = opts(vec![10], 3);
        o.window = Duration::from_millis(10);
        assert!(o.validate().is_err());
    }

    #[test]
    fn counters_come_from_the_status_document() {
        let status = serde_json::json!({
            "gossip": {
                "bytes_in": 500, "bytes_out": 400, "streams_in": 900, "streams_out": 800,
                "topics": {"reef/load/1": {"bytes_in": 300, "bytes_out": 200, "messages_in": 3}}
            }
        });
        let t0 = Instant::now();
        let before = counters(t0, &serde_json::json!({}));
        let after = counters(t0 + Duration::from_secs(2), &status);
        let r = rates(&before, &after);
        assert_eq!(
            (r.load_in, r.load_out, r.load_messages_in),
            (150.0, 100.0, 1.5)
        );
        assert_eq!((r.gossip_in, r.gossip_out), (250.0, 200.0));
        assert_eq!((r.streams_in, r.streams_out), (450.0, 400.0));
        assert_eq!(rates(&after, &after).load_in, 0.0);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "42 (reef (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100";
        assert_eq!(cpu_ms_of_stat(stat), Some(3000));
        assert_eq!(cpu_ms_of_stat("42 (reef) S 1"), None);
    }

    #[test]
    fn the_report_has_a_row_per_size() {
        let result = SizeResult {
            nodes: 3,
            providers: 3,
            launch: Duration::from_millis(500),
            converged: vec![Some(Duration::from_millis(900)), None, None],
            rates: vec![Rates::default(); 3],
            window: Duration::from_secs(10),
            late: LateJoiner {
                started: Some(Duration::from_millis(20)),
                own_table: Some(Duration::from_millis(1200)),
                listed_everywhere: None,
                gone_everywhere: Some(Duration::from_millis(4500)),
            },
            cpu_ms_per_s: vec![10.0; 3],
            rss_kib: vec![20_000; 3],
            rejected: 0,
            min_score: Some(0.5),
            connected: vec![2, 2, 2],
        };
        assert_eq!(result.all_converged(), None);
        let report = LoadBenchReport {
            command: "c".into(),
            date: "d".into(),
            machine: Machine::describe(std::path::Path::new("reef")),
            window: Duration::from_secs(10),
            settle: Duration::from_secs(10),
            results: vec![result],
            total: Duration::from_secs(30),
        };
        let text = report.markdown();
        assert!(
            text.contains("| 3 | 0.50 | not within 60 s (2 nodes) |"),
            "{text}"
        );
        assert!(
            text.contains("| 3 | 0.02 | 1.20 | not within 60 s | 4.50 |"),
            "{text}"
        );
    }
}
