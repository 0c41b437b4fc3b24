//! The launcher without a real node: spawn failures, cleanup, and — with a test-only shell
//! stand-in that follows the `runtime.json` contract and a fake admin API — readiness,
//! stop / kill / restart and a whole `Testnet::launch`.
//!
//! The stand-in is not a node and proves nothing about one; the end-to-end tests in the
//! workspace's `tests/` run the real `reef`.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reef_testnet::{Error, NodeProcess, NodeSpec, Options, Testnet};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A stand-in for `reef run`: records its arguments, writes `runtime.json` atomically with
/// its own pid (kept by `exec`), then idles until signalled; exits 3 at once if
/// `DIR/fail` exists. `provider init` writes a placeholder key file. `@ADMIN@` is replaced by the
/// fake admin API's address.
const FAKE_NODE: &str = r#"#!/bin/sh
if [ "$1" = provider ]; then
  prev=
  for a in "$@"; do
    if [ "$prev" = --out ]; then echo "fake provider key" > "$a"; fi
    prev=$a
  done
  echo 0000000000000000000000000000000000000000000000000000000000000000
  exit 0
fi
prev=
for a in "$@"; do
  case "$prev" in
    --data-dir) dir=$a ;;
    --http) ip=${a%:0} ;;
    --provider) provider=$a ;;
    --region) region=$a ;;
  esac
  prev=$a
done
printf '%s\n' "$@" > "$dir/args.txt"
if [ -e "$dir/fail" ]; then echo "fake node told to fail"; exit 3; fi
peer="12D3KooFake$(basename "$dir" | tr -d -)"
cat > "$dir/runtime.json.tmp" <<EOF
{"peer_id":"$peer","pid":$$,"provider":"$provider","region":"$region","http":"$ip:1","admin":"@ADMIN@","listen_addrs":["/ip4/$ip/tcp/1/p2p/$peer"]}
EOF
mv "$dir/runtime.json.tmp" "$dir/runtime.json"
echo "fake node up"
exec sleep 1000
"#;

/// Writes the stand-in to `dir/fake-reef`. The file is written by `install` in its own
/// process: a write descriptor held in this multi-threaded test process could leak into a
/// concurrently forked child and make exec fail with ETXTBSY.
fn fake_node(dir: &Path, admin: SocketAddr) -> PathBuf {
    let src = dir.join("fake-reef.src");
    std::fs::write(&src, FAKE_NODE.replace("@ADMIN@", &admin.to_string())).unwrap();
    let bin = dir.join("fake-reef");
    let status = std::process::Command::new("install")
        .args(["-m", "755"])
        .arg(&src)
        .arg(&bin)
        .status()
        .unwrap();
    assert!(status.success());
    bin
}

/// A fake admin API whose `/api/status` says joined or not.
struct FakeAdmin {
    addr: SocketAddr,
    joined: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_admin(joined: bool) -> FakeAdmin {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flag = Arc::new(AtomicBool::new(joined));
    let joined = Arc::clone(&flag);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let joined = Arc::clone(&joined);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let joined = joined.load(Ordering::SeqCst);
                    async move {
                        let body = match req.uri().path() {
                            "/api/status" => serde_json::json!({
                                "joined": joined,
                                "connected_peers": if joined { vec!["12D3KooWpeer"] } else { vec![] },
                            })
                            .to_string(),
                            _ => String::new(),
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    FakeAdmin {
        addr,
        joined: flag,
        task,
    }
}

fn spec(bin: PathBuf, dir: PathBuf) -> NodeSpec {
    NodeSpec {
        bin,
        dir,
        ip: Ipv4Addr::new(127, 0, 0, 77),
        provider: "p0".into(),
        provider_key: None,
        region: "r0".into(),
        bootstrap: vec![],
        extra_args: vec![],
        env: vec![],
    }
}

/// Whether a process with this pid exists (signal 0 only checks).
fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 sends nothing.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test]
async fn binary_that_exits_at_once_fails_with_log_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let err = NodeProcess::spawn(spec("/bin/false".into(), tmp.path().join("n")))
        .await
        .unwrap_err();
    match &err {
        Error::NodeExited {
            status, log_tail, ..
        } => {
            assert!(status.contains('1'), "{status}");
            assert!(log_tail.contains("reef-testnet"), "{log_tail}");
            assert!(log_tail.contains("--data-dir"), "{log_tail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("node.log") || err.to_string().contains("log"));
}

#[tokio::test]
async fn missing_binary_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = NodeProcess::spawn(spec(tmp.path().join("nope"), tmp.path().join("n")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test]
async fn spawn_waits_for_runtime_json_and_kill_reaps() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = fake_admin(true).await;
    let bin = fake_node(tmp.path(), admin.addr);
    let dir = tmp.path().join("n");
    std::fs::create_dir_all(&dir).unwrap();
    // A stale file from an earlier run must not count as ready.
    std::fs::write(dir.join("runtime.json"), r#"{"pid":1}"#).unwrap();

    let mut node = NodeProcess::spawn(spec(bin, dir.clone())).await.unwrap();
    let rt = node.runtime().clone();
    assert_eq!(rt.pid, node.pid());
    assert_eq!(rt.http, "127.0.0.77:1".parse().unwrap());
    assert_eq!(rt.admin, admin.addr);
    assert_eq!(rt.provider, "p0");
    assert!(alive(rt.pid));
    assert!(node.exit_status().is_none());
    assert_eq!(node.log_path(), dir.join("node.log"));
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert!(log.contains("fake node up"), "{log}");

    let status = node.status().await.unwrap();
    assert_eq!(status["joined"], true);
    node.wait_joined(Duration::from_secs(10)).await.unwrap();

    node.kill();
    assert!(!alive(rt.pid), "killed node still exists");
    assert_eq!(node.exit_status().unwrap().signal(), Some(libc::SIGKILL));
    // Waiting on a dead node fails at once, with its log.
    let err = node.wait_joined(Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, Error::NodeExited { .. }), "{err:?}");
    node.kill(); // idempotent
}

#[tokio::test]
async fn drop_kills_the_child() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = fake_admin(true).await;
    let bin = fake_node(tmp.path(), admin.addr);
    let node = NodeProcess::spawn(spec(bin, tmp.path().join("n")))
        .await
        .unwrap();
    let pid = node.pid();
    assert!(alive(pid));
    drop(node);
    assert!(!alive(pid), "dropped node still exists");
}

#[tokio::test]
async fn stop_is_graceful_and_restart_gets_a_new_process() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = fake_admin(true).await;
    let bin = fake_node(tmp.path(), admin.addr);
    let dir = tmp.path().join("n");
    let mut node = NodeProcess::spawn(spec(bin, dir.clone())).await.unwrap();
    let first = node.pid();

    node.stop().await.unwrap();
    assert!(!alive(first));
    assert_eq!(node.exit_status().unwrap().signal(), Some(libc::SIGTERM));
    node.stop().await.unwrap(); // already stopped: fine

    let boot = vec!["/ip4/127.0.0.10/tcp/1/p2p/12D3KooWboot".to_string()];
    node.restart(boot.clone()).await.unwrap();
    let second = node.pid();
    assert_ne!(first, second);
    assert!(alive(second));
    assert_eq!(node.spec().bootstrap, boot);
    let args = std::fs::read_to_string(dir.join("args.txt")).unwrap();
    assert!(
        args.contains("--bootstrap\n/ip4/127.0.0.10/tcp/1/p2p/12D3KooWboot\n"),
        "{args}"
    );
    let log = std::fs::read_to_string(node.log_path()).unwrap();
    assert_eq!(
        log.matches("fake node up").count(),
        2,
        "log is appended: {log}"
    );

    // Restart of a running node stops the old one first.
    node.restart(vec![]).await.unwrap();
    assert!(!alive(second));
    let third = node.pid();
    drop(node);
    assert!(!alive(third));
}

#[tokio::test]
async fn wait_joined_times_out_with_the_last_status() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = fake_admin(false).await;
    let bin = fake_node(tmp.path(), admin.addr);
    let node = NodeProcess::spawn(spec(bin, tmp.path().join("n")))
        .await
        .unwrap();
    let err = node
        .wait_joined(Duration::from_millis(300))
        .await
        .unwrap_err();
    match &err {
        Error::NotReady { what, .. } => assert!(what.contains("\"joined\":false"), "{what}"),
        other => panic!("unexpected {other:?}"),
    }
    admin.joined.store(true, Ordering::SeqCst);
    node.wait_joined(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn launch_assigns_ips_providers_and_bootstrap_and_shuts_down() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = fake_admin(true).await;
    let bin = fake_node(tmp.path(), admin.addr);
    let root = tmp.path().join("net");
    let testnet = Testnet::launch(Options {
        bin,
        nodes: 4,
        providers: 2,
        dir: root.clone(),
        extra_args: vec!["--extra".into()],
        env: vec![],
        provider_configs: vec![],
        dns: false,
        links: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!(testnet.nodes.len(), 4);
    assert_eq!(testnet.dir(), root);

    let args = |i: usize| std::fs::read_to_string(root.join(format!("node-{i}/args.txt"))).unwrap();
    let boot0 = "/ip4/127.0.0.10/tcp/1/p2p/12D3KooFakenode0";
    let boot1 = "/ip4/127.0.0.11/tcp/1/p2p/12D3KooFakenode1";
    assert!(!args(0).contains("--bootstrap"));
    assert!(args(1).contains(boot0) && !args(1).contains(boot1));
    for i in 2..4 {
        assert!(
            args(i).contains(boot0) && args(i).contains(boot1),
            "{}",
            args(i)
        );
        assert!(args(i).ends_with("--extra\n"));
        let key = root.join(format!("providers/p{}.key", i % 2));
        assert!(
            args(i).contains(&format!("--provider-key\n{}\n", key.display())),
            "{}",
            args(i)
        );
        assert!(key.exists());
        assert!(!args(i).contains("--mdns"));
    }

    let manifest = testnet.manifest();
    let on_disk: reef_testnet::Manifest =
        serde_json::from_slice(&std::fs::read(testnet.manifest_path()).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    assert_eq!(manifest.origin, testnet.origin.addr().to_string());
    let summary: Vec<_> = manifest
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.provider.as_str(),
                n.region.as_str(),
                n.http.ip().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("node-0", "p0", "r0", "127.0.0.10".to_string()),
            ("node-1", "p1", "r1", "127.0.0.11".to_string()),
            ("node-2", "p0", "r0", "127.0.0.12".to_string()),
            ("node-3", "p1", "r1", "127.0.0.13".to_string()),
        ]
    );
    assert_eq!(manifest.nodes[2].data_dir, root.join("node-2"));
    assert_eq!(manifest.nodes[2].log, root.join("node-2/node.log"));
    assert!(manifest.nodes.iter().all(|n| n.dns.is_none()));

    let mut testnet = testnet;
    assert_eq!(testnet.bootstrap_addrs(0).len(), 2);
    assert!(testnet.bootstrap_addrs(0)[0].contains("node1"));
    testnet.nodes[1].kill();
    let boot = testnet.bootstrap_addrs(0);
    assert!(
        boot[0].contains("node2") && boot[1].contains("node3"),
        "{boot:?}"
    );
    let boot = testnet.bootstrap_addrs(1);
    testnet.nodes[1].restart(boot).await.unwrap();
    let args1 = args(1);
    assert!(args1.contains(boot0) && !args1.contains(boot1), "{args1}");

    let pids: Vec<u32> = testnet.nodes.iter().map(|n| n.pid()).collect();
    assert!(pids.iter().all(|&p| alive(p)));
    testnet.shutdown().await;
    assert!(pids.iter().all(|&p| !alive(p)), "nodes left after shutdown");
}

#[tokio::test]
async fn launch_rejects_bad_options() {
    let tmp = tempfile::tempdir().unwrap();
    for (nodes, providers, extra) in [(0, 1, ""), (3, 4, ""), (3, 0, ""), (2, 1, "--mdns")] {
        let err = Testnet::launch(Options {
            bin: "/bin/true".into(),
            nodes,
            providers,
            dir: tmp.path().join("net"),
            extra_args: if extra.is_empty() {
                vec![]
            } else {
                vec![extra.into()]
            },
            env: vec![],
            provider_configs: vec![],
            dns: false,
            links: Default::default(),
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{err:?}");
    }
}

#[tokio::test]
async fn launch_failure_kills_what_started() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = fake_admin(true).await;
    let bin = fake_node(tmp.path(), admin.addr);
    let root = tmp.path().join("net");
    std::fs::create_dir_all(root.join("node-1")).unwrap();
    std::fs::write(root.join("node-1/fail"), "").unwrap();
    let err = Testnet::launch(Options {
        bin,
        nodes: 3,
        providers: 1,
        dir: root.clone(),
        extra_args: vec![],
        env: vec![],
        provider_configs: vec![],
        dns: false,
        links: Default::default(),
    })
    .await
    .unwrap_err();
    match &err {
        Error::NodeExited { log_tail, dir, .. } => {
            assert_eq!(dir, &root.join("node-1"));
            assert!(log_tail.contains("fake node told to fail"), "{log_tail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let rt = reef_testnet::read_runtime(&root.join("node-0/runtime.json"))
        .unwrap()
        .unwrap();
    assert!(!alive(rt.pid), "node-0 left running after a failed launch");
    assert!(!root.join("manifest.json").exists());
}
