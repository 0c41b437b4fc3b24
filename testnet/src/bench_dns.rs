//! DNS answers per second and answer latency of one node's DNS server: a testnet of N nodes of
//! one provider, each with `--dns`, then UDP queries for a service name sent to node 0 from a
//! few sockets, each keeping a window of queries in flight, for a fixed time. Before that, an
//! unloaded run (one query at a time) gives the latency of a single answer.
//!
//! The load generator runs on the same machine as the node, so on a small machine the figure
//! is a floor: both compete for the same cores.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::dns_client::{self, Answer};
use crate::{Error, Options, Testnet};

/// The zone and service every node serves in the benchmark.
const CONFIG: &str = r#"
[services."video.example"]
origin = "{origin}"

[dns]
zone = "cdn.test"
answers = 2
"#;
const NAME: &str = "video.example.cdn.test";
/// Until node 0 answers with every node: load reports take a second to spread and the
/// records a lookup each.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A query unanswered this long is counted lost and its slot reused.
const LOST_AFTER: Duration = Duration::from_secs(1);
/// Queries timed one at a time for the unloaded latency.
const UNLOADED_QUERIES: usize = 2000;
/// Latencies kept, at most: a bound on memory whatever the rate.
const MAX_SAMPLES: usize = 5_000_000;

pub struct DnsBenchOptions {
    pub bin: PathBuf,
    pub nodes: usize,
    /// Client sockets.
    pub sockets: usize,
    /// Queries in flight per socket.
    pub window: usize,
    pub duration: Duration,
    pub dir: PathBuf,
}

/// Latencies of one run, with its counts.
#[derive(Debug, Default)]
pub struct Run {
    pub elapsed: Duration,
    /// NOERROR answers with at least one address.
    pub answered: u64,
    /// Any other answer.
    pub errors: u64,
    pub lost: u64,
    /// Sorted.
    pub latencies: Vec<Duration>,
    /// CPU time node 0 (the answering node) used during the run, user and system.
    pub node_cpu: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }

    pub fn per_second(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Cores the node kept busy.
    fn node_cores(&self) -> f64 {
        self.node_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Answers per second of the node's CPU time: what one core would answer.
    fn per_cpu_second(&self) -> f64 {
        self.answered as f64 / self.node_cpu.as_secs_f64().max(1e-9)
    }
}

pub struct DnsBenchReport {
    pub nodes: usize,
    pub sockets: usize,
    pub window: usize,
    pub unloaded: Run,
    pub loaded: Run,
    /// Distinct addresses seen in answers under load (all nodes, if spreading works).
    pub addresses: usize,
}

impl DnsBenchReport {
    pub fn markdown(&self) -> String {
        let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
        let row = |name: &str, r: &Run| {
            format!(
                "| {name} | {:.0} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
                r.per_second(),
                r.node_cores(),
                r.per_cpu_second(),
                r.answered,
                r.errors,
                r.lost,
                us(r.percentile(0.5)),
                us(r.percentile(0.99)),
                us(r.percentile(1.0)),
            )
        };
        format!(
            "{} nodes of one provider, queries for `{NAME}` (A) to node 0 over UDP on loopback; \
             loaded: {} sockets × {} queries in flight; {} distinct node addresses answered.\n\n\
             | run | answers/s | node cores busy | answers per node CPU-second | answered | errors | lost | p50 | p99 | max |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n{}{}",
            self.nodes,
            self.sockets,
            self.window,
            self.addresses,
            row("one query at a time", &self.unloaded),
            row("loaded", &self.loaded),
        )
    }
}

pub async fn run(opts: &DnsBenchOptions) -> Result<DnsBenchReport, Error> {
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: opts.nodes,
        providers: 1,
        dir: opts.dir.clone(),
        extra_args: Vec::new(),
        env: Vec::new(),
        provider_configs: vec![CONFIG.to_string()],
        dns: true,
        links: Default::default(),
    })
    .await?;
    let Some(server) = testnet.nodes[0].runtime().dns else {
        return Err(Error::InvalidOptions(
            "node 0 reports no DNS address".into(),
        ));
    };
    let want: BTreeSet<Ipv4Addr> = testnet
        .nodes
        .iter()
        .filter_map(|n| match n.runtime().http.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    wait_for_every_node(server, &want).await?;

    let pid = testnet.nodes[0].pid();
    let cpu = cpu_time(pid)?;
    let (mut unloaded, _) = load(server, 1, 1, Stop::Count(UNLOADED_QUERIES)).await?;
    let between = cpu_time(pid)?;
    unloaded.node_cpu = between.saturating_sub(cpu);
    let (mut loaded, seen) = load(
        server,
        opts.sockets,
        opts.window,
        Stop::After(opts.duration),
    )
    .await?;
    loaded.node_cpu = cpu_time(pid)?.saturating_sub(between);
    let report = DnsBenchReport {
        nodes: opts.nodes,
        sockets: opts.sockets,
        window: opts.window,
        unloaded,
        loaded,
        addresses: seen.len(),
    };
    testnet.shutdown().await;
    Ok(report)
}

/// Asks until the answers (two addresses each, rotating) have named every node.
async fn wait_for_every_node(server: SocketAddr, want: &BTreeSet<Ipv4Addr>) -> Result<(), Error> {
    let socket = client_socket(server).await?;
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    let mut id: u16 = 0;
    let mut buf = vec![0u8; 1500];
    while !want.is_subset(&seen) {
        if started.elapsed() > READY_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("DNS answers naming all {} nodes (saw {seen:?})", want.len()),
                after: READY_TIMEOUT,
            });
        }
        id = id.wrapping_add(1);
        send(&socket, id).await?;
        if let Ok(Ok(len)) = tokio::time::timeout(LOST_AFTER, socket.recv(&mut buf)).await
            && let Some(answer) = dns_client::parse(&buf[..len])
        {
            seen.extend(answer.addrs);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// When a load run ends.
#[derive(Debug, Clone, Copy)]
enum Stop {
    After(Duration),
    /// Once each socket has this many answered or lost.
    Count(usize),
}

/// `sockets` tasks, each keeping `window` queries in flight until `stop`; the run and every
/// address answered.
async fn load(
    server: SocketAddr,
    sockets: usize,
    window: usize,
    stop: Stop,
) -> Result<(Run, BTreeSet<Ipv4Addr>), Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..sockets {
        let socket = client_socket(server).await?;
        // Only varies the first id; ids of different sockets never meet anyway.
        let first_id = u16::try_from(s).unwrap_or(0).wrapping_mul(4099);
        tasks.push(tokio::spawn(one_socket(
            socket, window, stop, started, first_id,
        )));
    }
    let mut run = Run::default();
    let mut seen = BTreeSet::new();
    for task in tasks {
        let (part, part_seen) = task.await.map_err(|e| Error::Io {
            context: "a DNS load task".into(),
            source: std::io::Error::other(e.to_string()),
        })??;
        run.answered += part.answered;
        run.errors += part.errors;
        run.lost += part.lost;
        let room = MAX_SAMPLES.saturating_sub(run.latencies.len());
        run.latencies.extend(part.latencies.into_iter().take(room));
        seen.extend(part_seen);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    Ok((run, seen))
}

async fn one_socket(
    socket: UdpSocket,
    window: usize,
    stop: Stop,
    started: Instant,
    first_id: u16,
) -> Result<(Run, BTreeSet<Ipv4Addr>), Error> {
    let mut run = Run::default();
    let mut seen = BTreeSet::new();
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut next_id = first_id;
    let mut buf = vec![0u8; 1500];
    let mut done = 0usize;
    let more = |done: usize| match stop {
        Stop::After(d) => started.elapsed() < d,
        Stop::Count(c) => done < c,
    };
    while more(done) {
        while in_flight.len() < window && more(done + in_flight.len()) {
            next_id = next_id.wrapping_add(1);
            send(&socket, next_id).await?;
            in_flight.insert(next_id, Instant::now());
        }
        match tokio::time::timeout(LOST_AFTER, socket.recv(&mut buf)).await {
            Ok(Ok(len)) => {
                let Some(answer) = dns_client::parse(&buf[..len]) else {
                    continue;
                };
                let Some(sent) = in_flight.remove(&answer.id) else {
                    continue;
                };
                done += 1;
                if run.latencies.len() < MAX_SAMPLES {
                    run.latencies.push(sent.elapsed());
                }
                tally(&mut run, &mut seen, answer);
            }
            Ok(Err(e)) => {
                return Err(Error::Io {
                    context: "receiving a DNS answer".into(),
                    source: e,
                });
            }
            Err(_) => {
                // Nothing for a second: whatever is in flight is lost.
                run.lost += in_flight.len() as u64;
                done += in_flight.len();
                in_flight.clear();
            }
        }
    }
    // Answers still in flight at the end are neither answered nor lost.
    Ok((run, seen))
}

fn tally(run: &mut Run, seen: &mut BTreeSet<Ipv4Addr>, answer: Answer) {
    if answer.rcode == 0 && !answer.addrs.is_empty() {
        run.answered += 1;
        seen.extend(answer.addrs);
    } else {
        run.errors += 1;
    }
}

async fn client_socket(server: SocketAddr) -> Result<UdpSocket, Error> {
    let io = |context: &str, source| Error::Io {
        context: context.into(),
        source,
    };
    let socket = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| io("binding a DNS client socket", e))?;
    socket
        .connect(server)
        .await
        .map_err(|e| io("connecting a DNS client socket", e))?;
    Ok(socket)
}

async fn send(socket: &UdpSocket, id: u16) -> Result<(), Error> {
    let Some(query) = dns_client::a_query(id, NAME) else {
        return Err(Error::InvalidOptions(format!("{NAME} is not a DNS name")));
    };
    socket.send(&query).await.map_err(|source| Error::Io {
        context: "sending a DNS query".into(),
        source,
    })?;
    Ok(())
}

/// User and system CPU time of process `pid` so far (`/proc/PID/stat`, fields 14 and 15).
pub(crate) fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        context: format!("reading {path}"),
        source,
    })?;
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |n: usize| -> u64 {
        after
            .split_whitespace()
            .nth(n - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100);
    let total = field(14) + field(15);
    Ok(Duration::from_micros(total * 1_000_000 / ticks))
}
