//! Issue 7: one node's hit path beside nginx as a caching reverse proxy, on the same machine,
//! in front of the same origin, for the same objects, driven by the same load generator.
//!
//! One run starts the demo origin (in this process), one `reef` node with a service whose
//! origin is the demo origin, and nginx with `proxy_cache` in front of the same origin (in a
//! PID namespace of its own when we are root, so that its workers die with it whatever
//! happens to us). It warms both caches (checking every body against the origin's pattern and
//! that both answer from their cache), then runs `wrk` against each with the same settings,
//! object by object, in ABBA order (Reef, nginx, nginx, Reef, …) so that a drift of the
//! machine weighs on both alike. Both are asked in origin form with `Host:` the service's
//! name, so the same plain GET (no Lua) goes to each. Neither may go to the origin while it is
//! measured: the origin's hit counters are compared before and after.
//!
//! wrk, the server under test and everything else on the machine share its cores; each run
//! records the server's CPU time (the node, or nginx's master and workers) and how busy the
//! whole machine was, so a reader can see what the load generator and any neighbour took.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::bench::Machine;
use crate::bench_dns::cpu_time;
use crate::{ChildProcess, Error, Options, Testnet, client, origin};

/// The service both servers are asked for (`Host:`); the node's provider owns it.
pub const SERVICE_HOST: &str = "bench.example";
/// Objects measured by default: 1 KiB, 100 KiB, 10 MiB.
pub const DEFAULT_SIZES: [u64; 3] = [1024, 100 * 1024, 10 * 1024 * 1024];
/// nginx must accept connections within this after its start.
const NGINX_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// A warm-up fetch of the largest object on a loaded machine takes well under this.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Until both caches answer a hit for an object: a fill of 10 MiB on loopback takes
/// milliseconds; the rest is headroom for a busy machine.
const WARM_TIMEOUT: Duration = Duration::from_secs(30);
/// A short unrecorded wrk run per server and object first: connections, page cache and
/// allocator settle before anything is measured.
const WARM_UP_RUN: Duration = Duration::from_secs(2);
/// wrk's per-request timeout. Its default (2 s) could count a 10 MiB answer queued behind
/// 63 others on a busy 2-core machine as an error; this one only catches a stuck server.
const WRK_TIMEOUT: &str = "10s";
/// wrk must have exited this long after its duration, or it is deemed hung and killed.
const WRK_MARGIN: Duration = Duration::from_secs(30);
/// nginx gets this long to stop after SIGTERM before it is killed.
const NGINX_STOP_GRACE: Duration = Duration::from_secs(5);
/// nginx's answer header saying whether it served from its cache.
const NGINX_CACHE_HEADER: &str = "x-cache-status";

/// What to run.
#[derive(Debug, Clone)]
pub struct NginxBenchOptions {
    /// The `reef` binary.
    pub bin: PathBuf,
    pub tools: Tools,
    /// Object sizes in bytes (`/bytes/<n>`).
    pub sizes: Vec<u64>,
    /// wrk's `-c`: keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// wrk's `-t`.
    pub threads: usize,
    /// Seconds per measured run.
    pub duration: Duration,
    /// ABBA rounds per object: each round runs Reef twice and nginx twice.
    pub rounds: usize,
    /// nginx `worker_processes`.
    pub nginx_workers: usize,
    /// Niceness of the node, nginx and wrk (0: unchanged). Below 0 (as root) they get the
    /// CPU ahead of whatever else runs on a shared machine, alike.
    pub nice: i32,
    /// Work directory (node data, nginx prefix, cache and logs, wrk output).
    pub dir: PathBuf,
    /// The command line that reproduces this run, for the report.
    pub command: String,
}

/// The external programs the benchmark drives.
#[derive(Debug, Clone)]
pub struct Tools {
    pub nginx: PathBuf,
    pub wrk: PathBuf,
}

/// Which server a run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Reef,
    Nginx,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Reef => "Reef",
            Server::Nginx => "nginx",
        }
    }
}

/// What wrk printed, as numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub req_per_s: f64,
    /// Bytes read per second (headers and bodies), wrk's `Transfer/sec`.
    pub bytes_per_s: f64,
    /// wrk's mean latency (request written to answer read).
    pub mean: Duration,
    pub p50: Duration,
    pub p75: Duration,
    pub p90: Duration,
    pub p99: Duration,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers.
    pub errors: u64,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    pub server: Server,
    pub size: u64,
    pub wrk: WrkResult,
    /// CPU time of the server's processes over the run, in cores (CPU-seconds per second).
    pub server_cores: f64,
    /// CPU time of wrk over the run, in cores.
    pub wrk_cores: f64,
    /// How busy all of the machine's cores were over the run, in cores.
    pub machine_cores: f64,
    /// One-minute load average when the run started.
    pub load_before: f64,
}

impl Run {
    /// Seconds of server CPU time per request answered.
    pub fn cpu_per_request(&self) -> f64 {
        if self.wrk.req_per_s > 0.0 {
            self.server_cores / self.wrk.req_per_s
        } else {
            0.0
        }
    }
}

pub struct NginxBenchReport {
    pub machine: Machine,
    pub opts: NginxBenchOptions,
    pub nginx_version: String,
    pub wrk_version: String,
    pub nginx_conf: String,
    pub runs: Vec<Run>,
    /// Origin requests while measuring (must be 0: every answer came from a cache).
    pub origin_requests: u64,
    pub started: SystemTime,
    pub elapsed: Duration,
}

/// Finds nginx and wrk on `PATH` (and in the sbin directories, where Debian puts nginx).
pub fn find_tools() -> Option<Tools> {
    Some(Tools {
        nginx: find_program("nginx")?,
        wrk: find_program("wrk")?,
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// nginx and wrk, installed from Debian's packages first if either is missing and `install`
/// allows it (as root, with apt-get; quietly).
pub async fn ensure_tools(install: bool) -> Result<Tools, Error> {
    if let Some(tools) = find_tools() {
        return Ok(tools);
    }
    let missing = || {
        Error::InvalidOptions(
            "nginx and wrk are needed: apt-get install nginx wrk (or pass --nginx and --wrk)"
                .into(),
        )
    };
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !install || !root || find_program("apt-get").is_none() {
        return Err(missing());
    }
    eprintln!("reef-testnet: installing nginx and wrk from Debian (once)…");
    for args in [
        &["update", "-qq"][..],
        &[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "nginx",
            "wrk",
        ][..],
    ] {
        let status = tokio::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| Error::io("running apt-get", e))?;
        if !status.success() {
            return Err(Error::InvalidOptions(format!(
                "apt-get {} failed ({status})",
                args.join(" ")
            )));
        }
    }
    find_tools().ok_or_else(missing)
}

pub async fn run(opts: &NginxBenchOptions) -> Result<NginxBenchReport, Error> {
    if opts.connections == 0 || opts.threads == 0 || opts.rounds == 0 || opts.duration.is_zero() {
        return Err(Error::InvalidOptions(
            "connections, threads, rounds and seconds must be at least 1".into(),
        ));
    }
    if opts.threads > opts.connections {
        return Err(Error::InvalidOptions(
            "wrk needs at least one connection per thread".into(),
        ));
    }
    if opts.sizes.is_empty() {
        return Err(Error::InvalidOptions("no object sizes given".into()));
    }
    let started = SystemTime::now();
    let clock = Instant::now();
    let machine = Machine::describe(&opts.bin);
    let nginx_version = version_of(&opts.tools.nginx, "-v");
    let wrk_version = version_of(&opts.tools.wrk, "-v");

    let testnet = Testnet::launch(Options {
        bin: opts.bin.clone(),
        nodes: 1,
        providers: 1,
        dir: opts.dir.join("testnet"),
        extra_args: Vec::new(),
        env: Vec::new(),
        provider_configs: vec![format!(
            "[services.\"{SERVICE_HOST}\"]\norigin = \"{{origin}}\"\n"
        )],
        dns: false,
        links: Default::default(),
    })
    .await?;
    let reef = testnet.nodes[0].runtime().http;
    let reef_pid = testnet.nodes[0].pid();
    if opts.nice != 0 {
        renice_threads(reef_pid, opts.nice)?;
    }

    let nginx_dir = opts.dir.join("nginx");
    let nginx_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let nginx_conf = nginx_config(&nginx_dir, nginx_addr, testnet.origin.addr(), opts);
    let mut nginx = start_nginx(
        &opts.tools.nginx,
        &nginx_dir,
        &nginx_conf,
        nginx_addr,
        opts.nice,
    )
    .await?;

    let mut runs = Vec::new();
    let mut origin_requests = 0;
    for &size in &opts.sizes {
        let path = format!("/bytes/{size}");
        warm(reef, Server::Reef, &path, size).await?;
        warm(nginx_addr, Server::Nginx, &path, size).await?;
        let origin_before = testnet.origin.hits(&path);
        for (addr, _) in [(reef, Server::Reef), (nginx_addr, Server::Nginx)] {
            wrk(opts, addr, &path, WARM_UP_RUN).await?;
        }
        for i in 0..opts.rounds * 4 {
            // Reef, nginx, nginx, Reef, …
            let server = if matches!(i % 4, 0 | 3) {
                Server::Reef
            } else {
                Server::Nginx
            };
            let (addr, cpu): (SocketAddr, Box<dyn Fn() -> Duration>) = match server {
                Server::Reef => (
                    reef,
                    Box::new(move || cpu_time(reef_pid).unwrap_or_default()),
                ),
                Server::Nginx => {
                    let root = nginx.pid();
                    (nginx_addr, Box::new(move || tree_cpu_time(root)))
                }
            };
            if let Some(status) = nginx.try_exited() {
                return Err(Error::InvalidOptions(format!(
                    "nginx exited ({status}); see {}",
                    nginx_dir.join("error.log").display()
                )));
            }
            let load_before = load_average();
            let (cpu0, busy0, children0, t0) =
                (cpu(), machine_busy(), children_cpu_time(), Instant::now());
            let result = wrk(opts, addr, &path, opts.duration).await?;
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            let server_cores = cpu().saturating_sub(cpu0).as_secs_f64() / secs;
            // wrk is the only child that ends (and is reaped) during the run.
            let wrk_cores = children_cpu_time().saturating_sub(children0).as_secs_f64() / secs;
            let machine_cores = machine_busy().map_or(0.0, |b| {
                busy0.map_or(0.0, |b0| b.saturating_sub(b0).as_secs_f64() / secs)
            });
            eprintln!(
                "reef-testnet: {size} B, {}: {:.0} req/s, p50 {:?}, p99 {:?}",
                server.name(),
                result.req_per_s,
                result.p50,
                result.p99
            );
            runs.push(Run {
                server,
                size,
                wrk: result,
                server_cores,
                wrk_cores,
                machine_cores,
                load_before,
            });
        }
        origin_requests += testnet.origin.hits(&path).saturating_sub(origin_before);
    }
    stop_nginx(&mut nginx).await;
    testnet.shutdown().await;
    Ok(NginxBenchReport {
        machine,
        opts: opts.clone(),
        nginx_version,
        wrk_version,
        nginx_conf,
        runs,
        origin_requests,
        started,
        elapsed: clock.elapsed(),
    })
}

/// Asks `server` for `path` until it answers from its cache, checking the body each time.
async fn warm(addr: SocketAddr, server: Server, path: &str, size: u64) -> Result<(), Error> {
    let expected = origin::expected_digest(path, size);
    let what = format!("{} at {addr}: {path}", server.name());
    let started = Instant::now();
    loop {
        let got = client::fetch_service(addr, SERVICE_HOST, path, FETCH_TIMEOUT).await?;
        if got.status != http::StatusCode::OK
            || got.body.len() as u64 != size
            || blake3::hash(&got.body) != expected
        {
            return Err(Error::http(
                &what,
                format!(
                    "status {}, {} bytes: not the origin's body",
                    got.status,
                    got.body.len()
                ),
            ));
        }
        let header = |name: &str| got.headers.get(name).and_then(|v| v.to_str().ok());
        let hit = match server {
            Server::Reef => header("x-reef-source") == Some("local"),
            Server::Nginx => header(NGINX_CACHE_HEADER) == Some("HIT"),
        };
        if hit {
            return Ok(());
        }
        if started.elapsed() > WARM_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("a cache hit from {what}"),
                after: WARM_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The wrk command line for one run.
fn wrk_args(opts: &NginxBenchOptions, addr: SocketAddr, path: &str, secs: u64) -> Vec<String> {
    vec![
        format!("-t{}", opts.threads),
        format!("-c{}", opts.connections),
        format!("-d{secs}s"),
        "--latency".into(),
        "--timeout".into(),
        WRK_TIMEOUT.into(),
        "-H".into(),
        format!("Host: {SERVICE_HOST}"),
        format!("http://{addr}{path}"),
    ]
}

async fn wrk(
    opts: &NginxBenchOptions,
    addr: SocketAddr,
    path: &str,
    duration: Duration,
) -> Result<WrkResult, Error> {
    let secs = duration.as_secs().max(1);
    let out_path = opts.dir.join("wrk.out");
    let out = std::fs::File::create(&out_path)
        .map_err(|e| Error::io(format!("creating {}", out_path.display()), e))?;
    let mut cmd = Command::new(&opts.tools.wrk);
    cmd.args(wrk_args(opts, addr, path, secs))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null());
    set_nice(&mut cmd, opts.nice);
    let mut child = ChildProcess::spawn(cmd).await?;
    let status = child
        .wait_exit(Duration::from_secs(secs) + WRK_MARGIN)
        .await
        .ok_or_else(|| Error::Timeout {
            what: format!("wrk against {addr}{path}"),
            after: Duration::from_secs(secs) + WRK_MARGIN,
        })?;
    let text = std::fs::read_to_string(&out_path)
        .map_err(|e| Error::io(format!("reading {}", out_path.display()), e))?;
    if !status.success() {
        return Err(Error::http(
            format!("http://{addr}{path}"),
            format!("wrk exited ({status}): {text}"),
        ));
    }
    parse_wrk(&text).map_err(|why| {
        Error::http(
            format!("http://{addr}{path}"),
            format!("cannot read wrk's output ({why}):\n{text}"),
        )
    })
}

/// Reads wrk 4's `--latency` report.
pub fn parse_wrk(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    let (mut rps, mut transfer) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            transfer = parse_bytes(v.trim());
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            r.errors += v
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Latency ") {
            if let Some(d) = v.split_whitespace().next().and_then(parse_duration) {
                r.mean = d;
            }
        } else if let Some((n, rest)) = line.split_once(" requests in ") {
            r.requests = n.trim().parse().unwrap_or(0);
            let _ = rest;
        } else if let Some((pct, v)) = line.split_once('%') {
            let Some(d) = parse_duration(v.trim()) else {
                continue;
            };
            match pct.trim() {
                "50" => r.p50 = d,
                "75" => r.p75 = d,
                "90" => r.p90 = d,
                "99" => r.p99 = d,
                _ => {}
            }
        }
    }
    r.req_per_s = rps.ok_or("no Requests/sec line")?;
    r.bytes_per_s = transfer.ok_or("no Transfer/sec line")?;
    if r.p99.is_zero() {
        return Err("no latency distribution (was --latency given?)".into());
    }
    Ok(r)
}

/// wrk's binary units: `512.00B`, `1.50KB`, `2.00MB`, `1.10GB` (powers of 1024).
fn parse_bytes(v: &str) -> Option<f64> {
    let v = v.strip_suffix('B')?;
    let (num, scale) = match v.chars().last()? {
        'K' => (&v[..v.len() - 1], 1024f64),
        'M' => (&v[..v.len() - 1], 1024f64.powi(2)),
        'G' => (&v[..v.len() - 1], 1024f64.powi(3)),
        'T' => (&v[..v.len() - 1], 1024f64.powi(4)),
        _ => (v, 1.0),
    };
    Some(num.trim().parse::<f64>().ok()? * scale)
}

/// wrk's times: `830.00us`, `1.23ms`, `2.00s`, `1.50m`.
fn parse_duration(v: &str) -> Option<Duration> {
    let (num, unit) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let secs = num.trim().parse::<f64>().ok()? * unit;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// A port the kernel considers free on loopback right now (nginx binds it a moment later).
fn free_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port", e))
}

/// nginx as a caching reverse proxy, configured the way a careful operator would for this
/// job: Debian's defaults (sendfile, keepalive) except `tcp_nopush`, which stalls on loopback,
/// no access log (Reef writes none at its default level), keep-alive connections to the
/// origin, and keep-alive for clients without nginx's default cap of 1000 requests per
/// connection (hyper has none).
pub fn nginx_config(
    dir: &Path,
    listen: SocketAddr,
    origin: SocketAddr,
    opts: &NginxBenchOptions,
) -> String {
    let d = dir.display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        // As root, nginx would run its workers as `nobody`, who cannot write our directories.
        "user root root;\n"
    } else {
        ""
    };
    format!(
        "# Written by reef-testnet bench-nginx.\n\
         {user}worker_processes {workers};\n\
         daemon off;\n\
         master_process on;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile on;\n\
         \x20   # Debian's default is on; here every response past ~64 KiB then waits out a 40 ms\n\
         \x20   # delayed ACK on loopback (100 KiB: 1.8k req/s, p50 44 ms; off: 22k req/s).\n\
         \x20   tcp_nopush off;\n\
         \x20   tcp_nodelay on;\n\
         \x20   keepalive_timeout 65s;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n\
         \x20   proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   proxy_cache_path {d}/cache levels=1:2 keys_zone=reef:16m max_size=2g inactive=1h use_temp_path=off;\n\
         \x20   upstream origin {{\n\
         \x20       server {origin};\n\
         \x20       keepalive 32;\n\
         \x20   }}\n\
         \x20   server {{\n\
         \x20       listen {listen} backlog=4096;\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://origin;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_cache reef;\n\
         \x20           proxy_cache_valid 200 1h;\n\
         \x20           proxy_cache_lock on;\n\
         \x20           add_header X-Cache-Status $upstream_cache_status always;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        workers = opts.nginx_workers,
    )
}

/// Starts nginx with `conf` under `dir` and waits until it accepts connections on `listen`.
/// As root it runs as PID 1 of a PID namespace of its own (`unshare --kill-child`): when we
/// go, however we go, the namespace's init dies and the kernel kills its workers with it.
async fn start_nginx(
    nginx: &Path,
    dir: &Path,
    conf: &str,
    listen: SocketAddr,
    nice: i32,
) -> Result<ChildProcess, Error> {
    for sub in ["cache", "tmp", "logs"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p)
            .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
    }
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)
        .map_err(|e| Error::io(format!("writing {}", conf_path.display()), e))?;
    let error_log = dir.join("error.log");
    let log = std::fs::File::create(dir.join("stderr.log"))
        .map_err(|e| Error::io("creating nginx's stderr.log", e))?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = find_program("unshare").filter(|_| root);
    let mut cmd = match &unshare {
        Some(unshare) => {
            let mut cmd = Command::new(unshare);
            cmd.args(["--pid", "--fork", "--kill-child", "--"])
                .arg(nginx);
            cmd
        }
        None => Command::new(nginx),
    };
    cmd.arg("-e")
        .arg(&error_log)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // A Ctrl-C in the terminal reaches only us; we stop nginx ourselves.
        cmd.process_group(0);
    }
    set_nice(&mut cmd, nice);
    let mut child = ChildProcess::spawn(cmd).await?;
    let started = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Ok(child);
        }
        if let Some(status) = child.try_exited() {
            let stderr = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            return Err(Error::InvalidOptions(format!(
                "nginx exited ({status}) at start: {stderr}"
            )));
        }
        if started.elapsed() > NGINX_READY_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("nginx listening on {listen}"),
                after: NGINX_READY_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops nginx gracefully: SIGTERM to its master (the `unshare` we started passes no signal
/// on, so the master is signalled directly), then SIGKILL to what we started if it lingers.
async fn stop_nginx(nginx: &mut ChildProcess) {
    for pid in children_of(nginx.pid()) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "nginx"
            && let Ok(pid) = libc::pid_t::try_from(pid)
        {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is nginx's master,
            // the child of our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let _ = nginx.stop(NGINX_STOP_GRACE).await;
}

/// Pids of the running processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    parent_map()
        .into_iter()
        .filter(|(_, p)| *p == pid)
        .map(|(c, _)| c)
        .collect()
}

/// (pid, parent pid) of every process in `/proc`.
fn parent_map() -> Vec<(u32, u32)> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(ppid) = ppid {
                parents.push((pid, ppid));
            }
        }
    }
    parents
}

/// CPU time of `root` and every process below it (nginx's master and workers).
fn tree_cpu_time(root: u32) -> Duration {
    let parents = parent_map();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree.iter()
        .filter_map(|pid| cpu_time(*pid).ok())
        .sum::<Duration>()
}

/// Makes the child run at niceness `nice` (and everything it starts: nginx's workers, wrk's
/// threads), when not 0.
fn set_nice(cmd: &mut Command, nice: i32) {
    if nice == 0 {
        return;
    }
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls setpriority(2), which is
    // async-signal-safe, and builds an io::Error from an errno, which allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets the niceness of every thread of the running process `pid` (niceness is per thread on
/// Linux; threads it starts later inherit it from the thread that starts them).
fn renice_threads(pid: u32, nice: i32) -> Result<(), Error> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("reading {dir}"), e))?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        // SAFETY: setpriority(2) has no memory-safety preconditions.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
            return Err(Error::io(
                format!("setting niceness {nice} of thread {tid} of {pid} (needs root below 0)"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// CPU time (user and system) of our children that have ended and been reaped.
fn children_cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time all cores spent busy since boot (`/proc/stat`: user, nice, system, irq, softirq,
/// steal).
fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| f.get(i))
        .sum::<u64>();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100);
    Some(Duration::from_micros(busy * 1_000_000 / ticks))
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The first line a program prints about its version (nginx and wrk both take `-v`).
fn version_of(program: &Path, flag: &str) -> String {
    match Command::new(program)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let text = if out.stderr.is_empty() {
                out.stdout
            } else {
                out.stderr
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("unknown")
                .trim()
                .to_owned()
        }
        Err(_) => "unknown".into(),
    }
}

fn size_name(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

/// Seconds as µs (or ms past 10 ms).
fn micros(secs: f64) -> String {
    if secs >= 0.01 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

fn ms(d: f64) -> String {
    if d < 1.0 {
        format!("{:.0} µs", d * 1e3)
    } else {
        format!("{d:.2} ms")
    }
}

impl NginxBenchReport {
    fn median_of(&self, server: Server, size: u64, figure: fn(&WrkResult) -> f64) -> f64 {
        crate::bench::median_of(
            self.runs
                .iter()
                .filter(|r| r.server == server && r.size == size)
                .map(|r| figure(&r.wrk))
                .collect(),
        )
    }

    /// Lowest and highest of `figure` over the runs of one server and size.
    fn range_of(&self, server: Server, size: u64, figure: fn(&WrkResult) -> f64) -> (f64, f64) {
        self.runs
            .iter()
            .filter(|r| r.server == server && r.size == size)
            .map(|r| figure(&r.wrk))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }

    pub fn markdown(&self) -> String {
        let o = &self.opts;
        let m = &self.machine;
        let mem = m.mem_total_kib.map_or("unknown RAM".into(), |k| {
            format!("{:.1} GiB RAM", k as f64 / (1024.0 * 1024.0))
        });
        let mut out = String::new();
        let _ = writeln!(out, "### Hit path: Reef vs nginx (as printed)\n");
        let _ = writeln!(out, "```sh\n{}\n```\n", o.command);
        let _ = writeln!(
            out,
            "- Date: {}; whole run {:.0} s",
            httpdate::fmt_http_date(self.started),
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "- Machine: {} CPUs (nproc), {}, {mem}; everything on loopback",
            m.nproc, m.cpu_model
        );
        let _ = writeln!(out, "- Kernel: `{}`", m.kernel);
        let _ = writeln!(
            out,
            "- `reef` binary: `{}` ({}); {}; {}",
            m.bin.display(),
            m.build,
            self.nginx_version,
            self.wrk_version
        );
        let _ = writeln!(
            out,
            "- Load: `wrk -t{} -c{} -d{}s --latency --timeout {WRK_TIMEOUT} -H 'Host: {SERVICE_HOST}' http://SERVER/bytes/N`, \
             {} round(s) of Reef, nginx, nginx, Reef per object after a {} s unrecorded warm-up \
             run each; both caches warmed and every body checked against the origin first; \
             origin requests while measuring: {}",
            o.threads,
            o.connections,
            o.duration.as_secs(),
            o.rounds,
            WARM_UP_RUN.as_secs(),
            self.origin_requests
        );
        let _ = writeln!(
            out,
            "- Reef: one node, service `{SERVICE_HOST}` → the demo origin, asked in origin form \
             with `Host: {SERVICE_HOST}`; nginx: `worker_processes {}`, `proxy_cache` (config \
             below); wrk, the server and anything else running share the {} cores (nothing \
             pinned; node, nginx and wrk at niceness {})\n",
            o.nginx_workers, m.nproc, o.nice
        );
        let _ = writeln!(
            out,
            "Medians over the runs; ratio = Reef / nginx. Reef is at or above nginx when the \
             req/s and MB/s ratios are ≥ 1 and the latency ratios ≤ 1. The mean latency is \
             wrk's own (its `Latency Avg`).\n"
        );
        let _ = writeln!(
            out,
            "| object | req/s Reef | req/s nginx | ratio | p50 Reef | p50 nginx | ratio | p99 Reef | p99 nginx | ratio | mean Reef | mean nginx | ratio | MB/s Reef | MB/s nginx | ratio |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let rps = |w: &WrkResult| w.req_per_s;
        let p50 = |w: &WrkResult| w.p50.as_secs_f64() * 1e3;
        let p99 = |w: &WrkResult| w.p99.as_secs_f64() * 1e3;
        let mean = |w: &WrkResult| w.mean.as_secs_f64() * 1e3;
        let mbs = |w: &WrkResult| w.bytes_per_s / 1e6;
        for &size in &o.sizes {
            let mut row = format!("| {} ", size_name(size));
            for (figure, fmt) in [
                (
                    rps as fn(&WrkResult) -> f64,
                    (|v| format!("{v:.0}")) as fn(f64) -> String,
                ),
                (p50, ms),
                (p99, ms),
                (mean, ms),
                (mbs, |v| format!("{v:.1}")),
            ] {
                let r = self.median_of(Server::Reef, size, figure);
                let n = self.median_of(Server::Nginx, size, figure);
                let ratio = if n > 0.0 { r / n } else { f64::NAN };
                let _ = write!(row, "| {} | {} | **{ratio:.2}** ", fmt(r), fmt(n));
            }
            let _ = writeln!(out, "{row}|");
        }
        let _ = writeln!(
            out,
            "\nServer CPU time per request (median; the steadier figure on a shared machine):\n"
        );
        let _ = writeln!(out, "| object | Reef | nginx | ratio |");
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for &size in &o.sizes {
            let per = |server| {
                crate::bench::median_of(
                    self.runs
                        .iter()
                        .filter(|r| r.server == server && r.size == size)
                        .map(Run::cpu_per_request)
                        .collect(),
                )
            };
            let (r, n) = (per(Server::Reef), per(Server::Nginx));
            let ratio = if n > 0.0 { r / n } else { f64::NAN };
            let _ = writeln!(
                out,
                "| {} | {} | {} | **{ratio:.2}** |",
                size_name(size),
                micros(r),
                micros(n)
            );
        }
        let _ = writeln!(out, "\nSpread (lowest–highest run):\n");
        let _ = writeln!(out, "| object | server | req/s | p50 | p99 |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        for &size in &o.sizes {
            for server in [Server::Reef, Server::Nginx] {
                let (a, b) = self.range_of(server, size, rps);
                let (c, d) = self.range_of(server, size, p50);
                let (e, f) = self.range_of(server, size, p99);
                let _ = writeln!(
                    out,
                    "| {} | {} | {a:.0}–{b:.0} | {}–{} | {}–{} |",
                    size_name(size),
                    server.name(),
                    ms(c),
                    ms(d),
                    ms(e),
                    ms(f)
                );
            }
        }
        let _ = writeln!(out, "\nEvery run, in the order run:\n");
        let _ = writeln!(
            out,
            "| # | object | server | req/s | p50 | p75 | p90 | p99 | MB/s | errors | server cores | server CPU per request | wrk cores | machine cores busy | load avg before |"
        );
        let _ = writeln!(
            out,
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (i, r) in self.runs.iter().enumerate() {
            let d = |d: Duration| ms(d.as_secs_f64() * 1e3);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {:.2} | {:.2} | {:.2} |",
                i + 1,
                size_name(r.size),
                r.server.name(),
                r.wrk.req_per_s,
                d(r.wrk.p50),
                d(r.wrk.p75),
                d(r.wrk.p90),
                d(r.wrk.p99),
                r.wrk.bytes_per_s / 1e6,
                r.wrk.errors,
                r.server_cores,
                micros(r.cpu_per_request()),
                r.wrk_cores,
                r.machine_cores,
                r.load_before
            );
        }
        let _ = writeln!(
            out,
            "\n\"server cores\" is the server's CPU time over the run (the node's process; \
             nginx's master and workers) per second, and per request served; \"wrk cores\" \
             the load generator's; \"machine cores busy\" all CPU time spent on the machine, \
             so what is left over went to other processes. MB/s is wrk's `Transfer/sec` \
             (headers and bodies, 10^6 bytes).\n"
        );
        let _ = writeln!(
            out,
            "nginx configuration:\n\n```nginx\n{}```",
            self.nginx_conf
        );
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:8080/bytes/1024
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   80.00%
    Req/Sec    20.00k     1.00k   25.00k    70.00%
  Latency Distribution
     50%  830.00us
     75%    1.50ms
     90%    2.00ms
     99%    3.10s
  400000 requests in 10.00s, 500.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  40000.50
Transfer/sec:     50.00MB
";

    #[test]
    fn reads_wrk_latency_report() {
        let r = parse_wrk(SAMPLE).unwrap();
        assert_eq!(r.requests, 400_000);
        assert!((r.req_per_s - 40000.5).abs() < 1e-9);
        assert!((r.bytes_per_s - 50.0 * 1024.0 * 1024.0).abs() < 1.0);
        assert_eq!(r.mean, Duration::from_micros(1230));
        assert_eq!(r.p50, Duration::from_micros(830));
        assert_eq!(r.p75, Duration::from_micros(1500));
        assert_eq!(r.p99, Duration::from_millis(3100));
        assert_eq!(r.errors, 8);
    }

    #[test]
    fn wrk_output_without_latency_is_refused() {
        let text: String = SAMPLE
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                    || l.contains("requests in")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_wrk(&text).is_err());
    }

    #[test]
    fn wrk_units() {
        assert_eq!(parse_bytes("512.00B"), Some(512.0));
        assert_eq!(parse_bytes("1.50KB"), Some(1536.0));
        assert_eq!(parse_bytes("1.00GB"), Some(1024f64.powi(3)));
        assert_eq!(parse_duration("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.50m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("fast"), None);
    }
}
