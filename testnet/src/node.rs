//! One real `reef` process: start, readiness, status, stop, crash, restart, cleanup.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::Error;
use crate::client;

/// How long a node may take from exec to writing `runtime.json`: binding a few loopback
/// sockets takes milliseconds, but a debug build on a loaded 2-core CI box can be slow to
/// load its key and open its cache.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often readiness and exit are polled: fast enough that tests don't wait noticeably,
/// slow enough to cost nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How often `wait_joined` asks the admin API: each poll is a full HTTP exchange and the
/// node logs it, so poll less often than the cheap file checks.
const STATUS_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One admin API call on loopback answers in milliseconds; a node that takes longer is stuck.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Grace period between SIGTERM and SIGKILL in [`NodeProcess::stop`]: a node flushes its
/// cache index and says goodbye to peers, which takes well under a second.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of `node.log` goes into error messages: enough for a panic and its context.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// Spawn requests waiting for the spawner thread; spawning takes a millisecond, so a short
/// queue never fills in practice and bounds memory if it did.
const SPAWN_QUEUE: usize = 64;

/// What a node is started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The `reef` binary.
    pub bin: PathBuf,
    /// Data directory; `node.log` and `runtime.json` live here too.
    pub dir: PathBuf,
    /// Loopback address every listener binds to (port 0).
    pub ip: Ipv4Addr,
    /// `--provider`: the name in the provider key, or (without a key) the node's own label.
    pub provider: String,
    /// `--provider-key`: a key file from `reef provider init`, which makes the node a
    /// certified member of that provider; `None`: the node is its own provider.
    pub provider_key: Option<PathBuf>,
    pub region: String,
    /// `--bootstrap` multiaddrs (with `/p2p/` suffix).
    pub bootstrap: Vec<String>,
    /// Appended after the standard arguments.
    pub extra_args: Vec<String>,
    /// Extra environment for the process (e.g. `SSL_CERT_FILE` for a test CA).
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    /// The command line after the binary: `run --data-dir … --http IP:0 …`.
    pub fn args(&self) -> Vec<OsString> {
        let ip = self.ip;
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--data-dir".into(),
            self.dir.clone().into_os_string(),
            "--http".into(),
            format!("{ip}:0").into(),
            "--admin".into(),
            format!("{ip}:0").into(),
            "--listen".into(),
            format!("/ip4/{ip}/udp/0/quic-v1").into(),
            "--listen".into(),
            format!("/ip4/{ip}/tcp/0").into(),
            "--provider".into(),
            self.provider.clone().into(),
            "--region".into(),
            self.region.clone().into(),
        ];
        if let Some(key) = &self.provider_key {
            args.push("--provider-key".into());
            args.push(key.clone().into_os_string());
        }
        for addr in &self.bootstrap {
            args.push("--bootstrap".into());
            args.push(addr.into());
        }
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// `DIR/node.log`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// `DIR/runtime.json`.
    pub fn runtime_path(&self) -> PathBuf {
        self.dir.join(reef_proto::RUNTIME_FILE)
    }
}

pub use reef_proto::Runtime;

/// Reads a `runtime.json`; `Ok(None)` if it does not exist yet.
pub fn read_runtime(path: &Path) -> Result<Option<Runtime>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| Error::Json {
            context: format!("parsing {}", path.display()),
            source,
        })
}

/// The `announcements` counters of `GET /api/status`: how many stored objects the node
/// has announced in the DHT (`done`), failed to announce, or skipped under load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcements {
    pub done: u64,
    pub failed: u64,
    pub skipped: u64,
    pub in_flight: u64,
}

impl Announcements {
    /// The counters in a status document, if it has them.
    pub fn from_status(status: &serde_json::Value) -> Option<Announcements> {
        Announcements::deserialize(status.get("announcements")?).ok()
    }

    /// Announcements that finished, one way or another (done, failed or skipped).
    pub fn settled(&self) -> u64 {
        self.done + self.failed + self.skipped
    }
}

/// A child process that is SIGKILLed and reaped when dropped, unless it was reaped before.
struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the child has exited (reaping it), `None` while it runs.
    fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.exited = status,
                Err(e) => warn!(pid = self.pid(), error = %e, "waitpid failed"),
            }
        }
        self.exited
    }

    /// Sends `signal` if the child is still running. Safe against pid reuse: an unreaped
    /// child's pid cannot be recycled, and we only signal before reaping.
    fn signal(&mut self, signal: libc::c_int) {
        if self.try_exited().is_some() {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid()) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            warn!(pid, signal, error = %io::Error::last_os_error(), "kill failed");
        }
    }

    /// SIGKILL and reap. Blocks only until the kernel tears the process down
    /// (SIGKILL cannot be caught), which takes milliseconds.
    fn kill_and_reap(&mut self) -> Option<ExitStatus> {
        if self.try_exited().is_none() {
            if let Err(e) = self.child.kill() {
                warn!(pid = self.pid(), error = %e, "SIGKILL failed");
            }
            match self.child.wait() {
                Ok(status) => self.exited = Some(status),
                Err(e) => warn!(pid = self.pid(), error = %e, "reaping failed"),
            }
        }
        self.exited
    }

    /// Waits until the child exits or `timeout` passes; returns its status if it exited.
    async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_reap();
    }
}

struct SpawnRequest {
    cmd: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The sender to the spawner thread, started on first use.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Forking from a tokio worker or blocking-pool thread (which exits when idle) would kill
/// nodes at random; so every child is forked by this one thread, which never exits while
/// the process lives. When the process dies, however it dies, the children get SIGKILL.
fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>, Error> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, mut rx) = mpsc::channel::<SpawnRequest>(SPAWN_QUEUE);
        std::thread::Builder::new()
            .name("reef-testnet-spawner".into())
            .spawn(move || {
                while let Some(SpawnRequest { mut cmd, reply }) = rx.blocking_recv() {
                    let result = cmd.spawn();
                    // The caller gave up waiting: don't leave the child running.
                    if let Err(Ok(mut child)) = reply.send(result) {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                }
            })
            .map(|_| tx)
            .map_err(|e| e.to_string())
    });
    spawner.as_ref().map_err(|e| Error::Io {
        context: "starting the spawner thread".into(),
        source: io::Error::other(e.clone()),
    })
}

/// Spawns `cmd` from the spawner thread, with PDEATHSIG set in the child.
async fn spawn_child(mut cmd: Command) -> Result<Proc, Error> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    set_parent_death_signal(&mut cmd);
    let (reply, rx) = oneshot::channel();
    let spawner_gone = || Error::io("spawning", io::Error::other("spawner thread is gone"));
    spawner()?
        .send(SpawnRequest { cmd, reply })
        .await
        .map_err(|_| spawner_gone())?;
    let child = rx
        .await
        .map_err(|_| spawner_gone())?
        .map_err(|e| Error::io(format!("spawning {program}"), e))?;
    Ok(Proc {
        child,
        exited: None,
    })
}

#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs between fork and exec and only calls the async-signal-safe
    // prctl(2) and getppid(2); it allocates nothing (`last_os_error` and
    // `from_raw_os_error` do not allocate).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect; then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

/// Another program a benchmark runs beside the nodes (a load generator, a peer server),
/// started like a node: forked by the spawner thread with `PR_SET_PDEATHSIG`, SIGKILLed and
/// reaped when dropped.
pub struct ChildProcess {
    proc: Proc,
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildProcess")
            .field("pid", &self.proc.pid())
            .finish()
    }
}

impl ChildProcess {
    /// Starts `cmd` (its stdio as the caller set it).
    pub async fn spawn(cmd: Command) -> Result<ChildProcess, Error> {
        Ok(ChildProcess {
            proc: spawn_child(cmd).await?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.proc.try_exited()
    }

    /// Waits until it exits or `timeout` passes; its status if it exited.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout).await
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) if it still runs.
    pub fn signal(&mut self, signal: libc::c_int) {
        self.proc.signal(signal);
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; reaped either way.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.proc.signal(libc::SIGTERM);
        match self.proc.wait_exit(grace).await {
            Some(status) => Some(status),
            None => self.proc.kill_and_reap(),
        }
    }
}

/// A running (or stopped) `reef` node. Dropping it SIGKILLs and reaps the process.
pub struct NodeProcess {
    spec: NodeSpec,
    runtime: Runtime,
    proc: Mutex<Proc>,
}

impl std::fmt::Debug for NodeProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProcess")
            .field("dir", &self.spec.dir)
            .field("peer_id", &self.runtime.peer_id)
            .field("pid", &self.runtime.pid)
            .finish()
    }
}

impl NodeProcess {
    /// Starts the node and waits (up to [`READY_TIMEOUT`]) until it wrote a `runtime.json`
    /// with its own pid. Fails with the tail of `node.log` if it exits first.
    pub async fn spawn(spec: NodeSpec) -> Result<NodeProcess, Error> {
        Self::spawn_polling(spec, POLL_INTERVAL).await
    }

    /// Like [`NodeProcess::spawn`], checking for `runtime.json` every `poll` instead of
    /// the default 20 ms (benchmarks that time startup poll faster).
    pub async fn spawn_polling(spec: NodeSpec, poll: Duration) -> Result<NodeProcess, Error> {
        let (proc, runtime) = start(&spec, poll).await?;
        Ok(NodeProcess {
            spec,
            runtime,
            proc: Mutex::new(proc),
        })
    }

    /// What the node reported at its last start.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// What the node was started with.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// `DIR/node.log` (stdout and stderr of every run, appended).
    pub fn log_path(&self) -> PathBuf {
        self.spec.log_path()
    }

    /// The pid of the current (or last) process.
    pub fn pid(&self) -> u32 {
        self.runtime.pid
    }

    /// The exit status if the process has exited, `None` while it runs.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().try_exited()
    }

    /// The last few KiB of the log, starting at a line, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `GET /api/status` on the admin address.
    pub async fn status(&self) -> Result<serde_json::Value, Error> {
        let url = format!("http://{}/api/status", self.runtime.admin);
        let resp = client::fetch(None, Method::GET, &url, STATUS_TIMEOUT).await?;
        if resp.status != StatusCode::OK {
            return Err(Error::http(&url, format!("status {}", resp.status)));
        }
        serde_json::from_slice(&resp.body).map_err(|source| Error::Json {
            context: format!("parsing the reply of {url}"),
            source,
        })
    }

    /// `GET /healthz` answers 200.
    pub async fn healthy(&self) -> bool {
        let url = format!("http://{}/healthz", self.runtime.admin);
        client::fetch(None, Method::GET, &url, STATUS_TIMEOUT)
            .await
            .is_ok_and(|r| r.status == StatusCode::OK)
    }

    /// Polls the status until `joined` is true and `connected_peers` is non-empty.
    pub async fn wait_joined(&self, timeout: Duration) -> Result<(), Error> {
        self.wait_status("joined", timeout, |status| {
            status.get("joined").and_then(|j| j.as_bool()) == Some(true)
                && status
                    .get("connected_peers")
                    .and_then(|p| p.as_array())
                    .is_some_and(|p| !p.is_empty())
        })
        .await
    }

    /// The `announcements` counters from `/api/status`.
    pub async fn announcements(&self) -> Result<Announcements, Error> {
        let status = self.status().await?;
        Announcements::from_status(&status).ok_or_else(|| {
            Error::http(
                format!("http://{}/api/status", self.runtime.admin),
                "the status has no valid `announcements` object",
            )
        })
    }

    /// Polls the status until at least `settled` announcements have finished (done, failed
    /// or skipped; see [`Announcements::settled`]) and returns the counters then. Take the
    /// baseline with [`NodeProcess::announcements`] before storing new objects.
    pub async fn wait_announced(
        &self,
        settled: u64,
        timeout: Duration,
    ) -> Result<Announcements, Error> {
        let mut last = None;
        self.wait_status(
            &format!("done announcing ({settled} settled)"),
            timeout,
            |status| {
                last = Announcements::from_status(status);
                last.is_some_and(|a| a.settled() >= settled)
            },
        )
        .await?;
        Ok(last.unwrap_or_default())
    }

    /// Polls the status until `done(status)` holds; `what` names the state for errors.
    /// Fails early if the process exits.
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.exited_error(status));
            }
            let last = match self.status().await {
                Ok(status) if done(&status) => return Ok(()),
                Ok(status) => format!("last status: {status}"),
                Err(e) => format!("last error: {e}"),
            };
            if start.elapsed() >= timeout {
                return Err(Error::NotReady {
                    dir: self.spec.dir.clone(),
                    what: format!("{what} ({last})"),
                    waited: timeout,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(STATUS_POLL_INTERVAL).await;
        }
    }

    fn exited_error(&self, status: ExitStatus) -> Error {
        Error::NodeExited {
            dir: self.spec.dir.clone(),
            status: status.to_string(),
            log_tail: self.log_tail(),
        }
    }

    /// Crash it: SIGKILL and reap. No-op if it already exited.
    pub fn kill(&mut self) {
        let pid = self.runtime.pid;
        if let Some(status) = self.lock().kill_and_reap() {
            debug!(pid, %status, "node killed");
        }
    }

    /// Freezes it (SIGSTOP): it keeps its sockets and connections but answers nothing, as a
    /// hung machine would. [`NodeProcess::thaw`] lets it go on; dropping it kills it anyway.
    pub fn freeze(&self) {
        self.lock().signal(libc::SIGSTOP);
    }

    /// Lets a frozen node go on (SIGCONT).
    pub fn thaw(&self) {
        self.lock().signal(libc::SIGCONT);
    }

    /// Graceful stop: SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL.
    pub async fn stop(&mut self) -> Result<(), Error> {
        let dir = self.spec.dir.display().to_string();
        let proc = self.proc.get_mut().unwrap_or_else(PoisonError::into_inner);
        proc.signal(libc::SIGTERM);
        match proc.wait_exit(STOP_TIMEOUT).await {
            Some(status) => debug!(%dir, %status, "node stopped"),
            None => {
                warn!(%dir, timeout = ?STOP_TIMEOUT, "node ignored SIGTERM; sending SIGKILL");
                proc.kill_and_reap();
            }
        }
        Ok(())
    }

    /// Stops the node if it runs, then starts a new process on the same data dir and IP
    /// (so the same peer id) with `bootstrap` replacing the old bootstrap list. Ports are
    /// new: read them from [`NodeProcess::runtime`] afterwards.
    pub async fn restart(&mut self, bootstrap: Vec<String>) -> Result<(), Error> {
        self.stop().await?;
        self.spec.bootstrap = bootstrap;
        let (proc, runtime) = start(&self.spec, POLL_INTERVAL).await?;
        *self.proc.get_mut().unwrap_or_else(PoisonError::into_inner) = proc;
        self.runtime = runtime;
        Ok(())
    }
}

/// Starts the process for `spec` and waits for its `runtime.json`.
async fn start(spec: &NodeSpec, poll: Duration) -> Result<(Proc, Runtime), Error> {
    std::fs::create_dir_all(&spec.dir)
        .map_err(|e| Error::io(format!("creating {}", spec.dir.display()), e))?;
    let runtime_path = spec.runtime_path();
    match std::fs::remove_file(&runtime_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format!("removing stale {}", runtime_path.display()),
                e,
            ));
        }
    }
    let log_path = spec.log_path();
    let log_err = |e| Error::io(format!("opening {}", log_path.display()), e);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(log_err)?;
    let args = spec.args();
    writeln!(
        log,
        "--- reef-testnet {}: {} {}",
        httpdate::fmt_http_date(SystemTime::now()),
        spec.bin.display(),
        shell_words(&args)
    )
    .map_err(|e| Error::io(format!("writing {}", log_path.display()), e))?;
    let stderr = log.try_clone().map_err(log_err)?;

    let mut cmd = Command::new(&spec.bin);
    cmd.args(&args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr);
    {
        use std::os::unix::process::CommandExt;
        // Own process group: a Ctrl-C in the terminal reaches only the testnet, which then
        // stops the nodes in order, instead of every node at once.
        cmd.process_group(0);
    }
    let mut proc = spawn_child(cmd).await?;
    let pid = proc.pid();
    debug!(dir = %spec.dir.display(), pid, "node spawned");

    let start = Instant::now();
    loop {
        // A half-written or foreign file is not an error: the node writes atomically, so
        // the next poll sees the real one.
        if let Ok(Some(runtime)) = read_runtime(&runtime_path)
            && runtime.pid == pid
        {
            info!(dir = %spec.dir.display(), pid, peer = %runtime.peer_id, http = %runtime.http, "node ready");
            return Ok((proc, runtime));
        }
        if let Some(status) = proc.try_exited() {
            return Err(Error::NodeExited {
                dir: spec.dir.clone(),
                status: status.to_string(),
                log_tail: log_tail(&log_path),
            });
        }
        if start.elapsed() >= READY_TIMEOUT {
            proc.kill_and_reap();
            return Err(Error::NotReady {
                dir: spec.dir.clone(),
                what: format!("ready (no {} with pid {pid})", runtime_path.display()),
                waited: READY_TIMEOUT,
                log_tail: log_tail(&log_path),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Arguments joined for a log line, quoted where needed.
fn shell_words(args: &[OsString]) -> String {
    args.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/:._-=@".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last [`LOG_TAIL_BYTES`] of `path`, starting at a line boundary.
pub(crate) fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if start > 0
            && let Some(nl) = text.find('\n')
        {
            text.drain(..=nl);
        }
        Ok(text)
    };
    match read() {
        Ok(text) if text.trim().is_empty() => "(log is empty)".into(),
        Ok(text) => text,
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Finds the `reef` binary: `explicit`, else `$REEF_BIN`, else `reef` next to the current
/// executable or in its parent directory (for `target/debug/deps/*` test binaries).
pub fn locate_reef_binary(explicit: Option<PathBuf>) -> Result<PathBuf, Error> {
    locate(
        explicit,
        std::env::var_os("REEF_BIN"),
        std::env::current_exe().ok(),
    )
}

fn locate(
    explicit: Option<PathBuf>,
    env: Option<OsString>,
    current_exe: Option<PathBuf>,
) -> Result<PathBuf, Error> {
    let named = explicit.map(|p| (p, "--bin")).or_else(|| {
        env.filter(|v| !v.is_empty())
            .map(|v| (PathBuf::from(v), "REEF_BIN"))
    });
    if let Some((path, source)) = named {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::BinaryNotFound {
                tried: format!("{} from {source}: no such file", path.display()),
            })
        };
    }
    let mut tried = Vec::new();
    if let Some(exe) = current_exe {
        let name = OsStr::new(if cfg!(windows) { "reef.exe" } else { "reef" });
        for dir in exe
            .parent()
            .into_iter()
            .flat_map(|d| [Some(d), d.parent()])
            .flatten()
        {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate.display().to_string());
        }
    } else {
        tried.push("(current executable unknown)".into());
    }
    Err(Error::BinaryNotFound {
        tried: format!("--bin, REEF_BIN unset, {}", tried.join(", ")),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> NodeSpec {
        NodeSpec {
            bin: PathBuf::from("/bin/false"),
            dir: dir.to_path_buf(),
            ip: Ipv4Addr::new(127, 0, 0, 12),
            provider: "p1".into(),
            provider_key: Some(PathBuf::from("/tmp/p1.key")),
            region: "r1".into(),
            bootstrap: vec![
                "/ip4/127.0.0.10/tcp/4000/p2p/12D3KooWA".into(),
                "/ip4/127.0.0.10/udp/4001/quic-v1/p2p/12D3KooWA".into(),
            ],
            extra_args: vec!["--foo".into(), "bar".into()],
            env: vec![],
        }
    }

    #[test]
    fn args_follow_the_contract() {
        let args: Vec<String> = spec(Path::new("/tmp/n"))
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "run",
                "--data-dir",
                "/tmp/n",
                "--http",
                "127.0.0.12:0",
                "--admin",
                "127.0.0.12:0",
                "--listen",
                "/ip4/127.0.0.12/udp/0/quic-v1",
                "--listen",
                "/ip4/127.0.0.12/tcp/0",
                "--provider",
                "p1",
                "--region",
                "r1",
                "--provider-key",
                "/tmp/p1.key",
                "--bootstrap",
                "/ip4/127.0.0.10/tcp/4000/p2p/12D3KooWA",
                "--bootstrap",
                "/ip4/127.0.0.10/udp/4001/quic-v1/p2p/12D3KooWA",
                "--foo",
                "bar"
            ]
        );
        assert!(!args.iter().any(|a| a == "--mdns"));
    }

    #[test]
    fn runtime_json_parses() {
        let text = r#"{"peer_id":"12D3KooWxyz","pid":1234,"provider":"p0","region":"r0",
            "http":"127.0.0.2:40123","admin":"127.0.0.2:40124",
            "listen_addrs":["/ip4/127.0.0.2/udp/40125/quic-v1/p2p/12D3KooWxyz",
                            "/ip4/127.0.0.2/tcp/40126/p2p/12D3KooWxyz"],
            "future_field": {"ignored": true}}"#;
        let rt: Runtime = serde_json::from_str(text).unwrap();
        assert_eq!(rt.pid, 1234);
        assert_eq!(rt.http, "127.0.0.2:40123".parse().unwrap());
        assert_eq!(rt.admin.port(), 40124);
        assert_eq!(rt.listen_addrs.len(), 2);
        assert!(serde_json::from_str::<Runtime>(r#"{"peer_id":"x"}"#).is_err());
    }

    #[test]
    fn runtime_read_missing_and_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runtime.json");
        assert!(read_runtime(&path).unwrap().is_none());
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(read_runtime(&path), Err(Error::Json { .. })));
    }

    #[test]
    fn locate_prefers_explicit_then_env_then_siblings() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("reef");
        std::fs::write(&bin, b"").unwrap();
        let deps = dir.path().join("deps");
        std::fs::create_dir(&deps).unwrap();
        let exe = deps.join("tests-abc");

        assert_eq!(locate(Some(bin.clone()), None, None).unwrap(), bin);
        assert_eq!(locate(None, Some(bin.clone().into()), None).unwrap(), bin);
        // target/debug/deps/x → target/debug/reef
        assert_eq!(locate(None, None, Some(exe.clone())).unwrap(), bin);
        // sibling
        assert_eq!(
            locate(None, None, Some(dir.path().join("reef-testnet"))).unwrap(),
            bin
        );
    }

    #[test]
    fn locate_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = locate(Some(missing.clone()), None, None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--bin") && msg.contains("nope"), "{msg}");
        assert!(msg.contains("cargo build --release"), "{msg}");

        let err = locate(None, Some(missing.into()), None).unwrap_err();
        assert!(err.to_string().contains("REEF_BIN"), "{err}");

        let exe = dir.path().join("a").join("b");
        let err = locate(None, None, Some(exe)).unwrap_err().to_string();
        assert!(err.contains("cargo build --release"), "{err}");
        assert!(
            err.contains(&dir.path().join("a").join("reef").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn log_tail_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.log");
        assert!(log_tail(&path).contains("cannot read"));
        std::fs::write(&path, "").unwrap();
        assert_eq!(log_tail(&path), "(log is empty)");
        let mut text = String::new();
        for i in 0..2000 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        let tail = log_tail(&path);
        assert!(tail.starts_with("line "), "{tail:.40}");
        assert!(tail.ends_with("line 1999\n"));
        assert!(tail.len() <= LOG_TAIL_BYTES as usize);
    }

    #[test]
    fn shell_words_quotes() {
        let args: Vec<OsString> = vec!["run".into(), "a b".into(), "it's".into()];
        assert_eq!(shell_words(&args), r"run 'a b' 'it'\''s'");
    }
}
