//! What `/metrics` costs the hit path: one node serves one cached object to a few keep-alive
//! client connections for a fixed time, with and without a scrape of its `/metrics` every
//! second. Runs alternate in ABBA order (off, on, on, off, off, on, …) so that a drift of the
//! machine (another build, thermal) spreads over both kinds evenly; the report gives every run
//! and the medians.
//!
//! The load generator runs on the same machine as the node, so on a small machine req/s is a
//! floor that moves with whatever else runs there; requests per second of the node's own CPU
//! time (from `/proc/PID/stat`) is the steadier figure of what serving costs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::bench_dns::cpu_time;
use crate::{Error, Options, Testnet, client};

/// The object every request asks for; small, so the per-request work dominates.
const PATH_PREFIX: &str = "/bytes/";
/// Bound on one request, so a stuck node fails the run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the scraper asks, as a Prometheus would at a short interval.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
/// A metrics page is some tens of KiB; more would be a bug.
const MAX_SCRAPE: usize = 8 << 20;
/// Before measuring: connections open, the object in the page cache, the node warmed up.
const WARM_UP: Duration = Duration::from_secs(2);
/// Scrapes of an otherwise idle node, back to back, to time what one costs the node.
const IDLE_SCRAPES: u32 = 200;

pub struct MetricsBenchOptions {
    pub bin: PathBuf,
    /// Client connections, each with one request in flight.
    pub connections: usize,
    /// Seconds per run.
    pub duration: Duration,
    /// Runs of each kind (off and on), alternating.
    pub rounds: usize,
    /// Body bytes of the cached object.
    pub size: u64,
    pub dir: PathBuf,
}

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub scraping: bool,
    pub elapsed: Duration,
    pub ok: u64,
    pub errors: u64,
    /// Scrapes done and their total time (only with scraping on).
    pub scrapes: u64,
    pub scrape_time: Duration,
    pub scrape_bytes: u64,
    /// CPU time (user and system) the node used during the run.
    pub node_cpu: Duration,
}

impl Run {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Requests answered per second of the node's CPU time.
    pub fn per_cpu_second(&self) -> f64 {
        self.ok as f64 / self.node_cpu.as_secs_f64().max(1e-9)
    }
}

pub struct MetricsBenchReport {
    /// Node CPU time per scrape, measured on the idle node (less its background work).
    pub cpu_per_scrape: Duration,
    /// Bytes of one scrape.
    pub scrape_bytes: usize,
    pub connections: usize,
    pub size: u64,
    pub duration: Duration,
    pub runs: Vec<Run>,
}

impl MetricsBenchReport {
    fn median_of(&self, scraping: bool, figure: fn(&Run) -> f64) -> f64 {
        crate::bench::median_of(
            self.runs
                .iter()
                .filter(|r| r.scraping == scraping)
                .map(figure)
                .collect(),
        )
    }

    pub fn markdown(&self) -> String {
        let change = |off: f64, on: f64| {
            if off > 0.0 {
                (on - off) / off * 100.0
            } else {
                0.0
            }
        };
        let (off, on) = (
            self.median_of(false, Run::per_second),
            self.median_of(true, Run::per_second),
        );
        let (cpu_off, cpu_on) = (
            self.median_of(false, Run::per_cpu_second),
            self.median_of(true, Run::per_cpu_second),
        );
        let mut rows = String::new();
        for (i, r) in self.runs.iter().enumerate() {
            let scrape = if r.scrapes > 0 {
                format!(
                    "{} × {:.1} ms, {} B",
                    r.scrapes,
                    r.scrape_time.as_secs_f64() * 1e3 / r.scrapes as f64,
                    r.scrape_bytes / r.scrapes
                )
            } else {
                "–".into()
            };
            rows.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {} | {} |\n",
                i + 1,
                if r.scraping { "every 1 s" } else { "off" },
                r.per_second(),
                r.per_cpu_second(),
                r.errors,
                scrape
            ));
        }
        format!(
            "One node serving one cached {} B object (`X-Reef-Source: local`) to {} keep-alive \
             connections over loopback, {} s per run, runs in ABBA order.\n\n\
             | run | /metrics scrape | req/s | req per node CPU-second | errors | scrapes (mean time, size) |\n\
             |---:|---|---:|---:|---:|---|\n{rows}\n\
             Median req/s: {off:.0} without scraping, {on:.0} with a scrape every second \
             ({:+.1} %). Median requests per node CPU-second: {cpu_off:.0} without, {cpu_on:.0} \
             with ({:+.1} %).\n\n\
             One scrape ({} B of OpenMetrics text) costs the idle node {:.0} µs of CPU time \
             (mean of {IDLE_SCRAPES} back to back, less what the idle node spends as long anyway), \
             so a scrape every second takes {:.3} % of one core.\n",
            self.size,
            self.connections,
            self.duration.as_secs(),
            change(off, on),
            change(cpu_off, cpu_on),
            self.scrape_bytes,
            self.cpu_per_scrape.as_secs_f64() * 1e6,
            self.cpu_per_scrape.as_secs_f64() * 100.0,
        )
    }
}

pub async fn run(opts: &MetricsBenchOptions) -> Result<MetricsBenchReport, Error> {
    if opts.connections == 0 || opts.rounds == 0 || opts.duration.is_zero() {
        return Err(Error::InvalidOptions(
            "connections, rounds and seconds must be at least 1".into(),
        ));
    }
    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: 1,
        providers: 1,
        dir: opts.dir.clone(),
        extra_args: Vec::new(),
        env: Vec::new(),
        provider_configs: Vec::new(),
        dns: false,
        links: Default::default(),
    })
    .await?;
    let node = testnet.nodes[0].runtime().clone();
    let pid = testnet.nodes[0].pid();
    let url = testnet.origin.url(&format!("{PATH_PREFIX}{}", opts.size));
    // Fill the cache, then wait until the copy is committed and hits are local.
    let started = Instant::now();
    loop {
        let got = client::fetch(Some(node.http), http::Method::GET, &url, REQUEST_TIMEOUT).await?;
        if got.status == StatusCode::OK
            && got
                .headers
                .get("x-reef-source")
                .and_then(|v| v.to_str().ok())
                == Some("local")
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(Error::Timeout {
                what: format!("a local hit for {url}"),
                after: Duration::from_secs(30),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What one scrape costs the node, without load.
    let idle_started = Instant::now();
    let cpu = cpu_time(pid)?;
    let mut scrape_bytes = 0;
    for _ in 0..IDLE_SCRAPES {
        scrape_bytes = scrape(node.admin).await?.len();
    }
    let idle_cpu = cpu_time(pid)?.saturating_sub(cpu);
    // Subtract what the idle node spends anyway in that time (load reports, gossip ticks).
    tokio::time::sleep(idle_started.elapsed()).await;
    let background = cpu_time(pid)?.saturating_sub(cpu + idle_cpu);
    let cpu_per_scrape = idle_cpu.saturating_sub(background) / IDLE_SCRAPES;

    let mut runs = Vec::new();
    for round in 0..opts.rounds * 2 {
        let scraping = abba(round);
        runs.push(one_run(opts, pid, node.http, node.admin, &url, scraping).await?);
    }
    testnet.shutdown().await;
    Ok(MetricsBenchReport {
        cpu_per_scrape,
        scrape_bytes,
        connections: opts.connections,
        size: opts.size,
        duration: opts.duration,
        runs,
    })
}

/// Whether run `i` scrapes: off, on, on, off, off, on, on, off, …
fn abba(i: usize) -> bool {
    matches!(i % 4, 1 | 2)
}

async fn one_run(
    opts: &MetricsBenchOptions,
    pid: u32,
    http: SocketAddr,
    admin: SocketAddr,
    url: &str,
    scraping: bool,
) -> Result<Run, Error> {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..opts.connections {
        let (counting, stop, ok, errors) =
            (counting.clone(), stop.clone(), ok.clone(), errors.clone());
        let url = url.to_string();
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let worked = hammer(http, &url, &stop, &counting, &ok).await;
                if worked.is_err() && counting.load(Ordering::Relaxed) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    counting.store(true, Ordering::Relaxed);
    let cpu_before = cpu_time(pid)?;
    let started = Instant::now();
    let mut run = Run {
        scraping,
        ..Run::default()
    };
    if scraping {
        let mut tick = tokio::time::interval(SCRAPE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = started + opts.duration;
        loop {
            tick.tick().await;
            if Instant::now() >= deadline {
                break;
            }
            let asked = Instant::now();
            let body = scrape(admin).await?;
            run.scrape_time += asked.elapsed();
            run.scrapes += 1;
            run.scrape_bytes += body.len() as u64;
        }
    } else {
        tokio::time::sleep(opts.duration).await;
    }
    counting.store(false, Ordering::Relaxed);
    run.elapsed = started.elapsed();
    run.node_cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    run.ok = ok.load(Ordering::Relaxed);
    run.errors = errors.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    Ok(run)
}

/// Requests `url` through the node on one keep-alive connection until told to stop; counts
/// the 200s answered while `counting`.
async fn hammer(
    http: SocketAddr,
    url: &str,
    stop: &AtomicBool,
    counting: &AtomicBool,
    ok: &AtomicU64,
) -> Result<(), String> {
    let stream = TcpStream::connect(http).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let host = url
        .split('/')
        .nth(2)
        .ok_or_else(|| "URL without a host".to_string())?
        .to_string();
    let result = async {
        while !stop.load(Ordering::Relaxed) {
            let req = Request::get(url)
                .header(header::HOST, &host)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let exchange = async {
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                let status = resp.status();
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(status)
            };
            let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                .await
                .map_err(|_| "request timed out".to_string())??;
            if status != StatusCode::OK {
                return Err(format!("status {status}"));
            }
            if counting.load(Ordering::Relaxed) {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
    .await;
    conn.abort();
    result
}

async fn scrape(admin: SocketAddr) -> Result<Bytes, Error> {
    let url = format!("http://{admin}/metrics");
    let got = client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT).await?;
    if got.status != StatusCode::OK || got.body.len() > MAX_SCRAPE {
        return Err(Error::http(&url, format!("status {}", got.status)));
    }
    Ok(got.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_alternate_in_abba_order() {
        let order: Vec<bool> = (0..8).map(abba).collect();
        assert_eq!(order, [false, true, true, false, false, true, true, false]);
    }

    #[test]
    fn the_report_gives_medians_of_each_kind() {
        let run = |scraping: bool, ok: u64| Run {
            scraping,
            elapsed: Duration::from_secs(10),
            ok,
            scrapes: u64::from(scraping) * 10,
            scrape_time: Duration::from_millis(u64::from(scraping) * 20),
            scrape_bytes: u64::from(scraping) * 50_000,
            node_cpu: Duration::from_secs(5),
            ..Run::default()
        };
        let report = MetricsBenchReport {
            cpu_per_scrape: Duration::from_micros(500),
            scrape_bytes: 8000,
            connections: 8,
            size: 1024,
            duration: Duration::from_secs(10),
            runs: vec![
                run(false, 100_000),
                run(true, 99_000),
                run(false, 102_000),
                run(true, 97_000),
            ],
        };
        let text = report.markdown();
        assert!(text.contains("10100 without scraping, 9800 with"), "{text}");
        assert!(text.contains("(-3.0 %)"), "{text}");
        assert!(
            text.contains("20200 without, 19600 with (-3.0 %)"),
            "{text}"
        );
        assert!(text.contains("10 × 2.0 ms, 5000 B"), "{text}");
        assert!(text.contains("costs the idle node 500 µs"), "{text}");
        assert!(text.contains("0.050 % of one core"), "{text}");
    }
}
