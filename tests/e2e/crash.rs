//! Crash safety: SIGKILL a node while it writes objects, restart it, and everything it serves
//! afterwards is byte-exact; nothing a crash left half-written survives the restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use reef_testnet::origin::expected_digest;
use tokio::sync::{Semaphore, mpsc};

use crate::support::{JOIN_TIMEOUT, REQUEST_TIMEOUT, launch};

/// Distinct objects fetched through the node.
const OBJECTS: usize = 100;
/// Fetches in flight at once.
const CONCURRENCY: usize = 16;
/// Client-side completions to wait for before the crash.
const KILL_AFTER: usize = 30;

/// Size of object `i`: every fifth is ≥ 4 MiB and every fifth ≥ 1 MiB, so that the fills in
/// flight at the crash are mostly large ones; the rest are small. All sizes differ, so every
/// body (and so every blob) is distinct.
fn size(i: usize) -> u64 {
    let i = i as u64;
    match i % 5 {
        0 => (4 << 20) + i,
        1 => (1 << 20) + i,
        _ => 1000 + 37 * i,
    }
}

fn path(i: usize) -> String {
    format!("/bytes/{}", size(i))
}

/// Regular files directly in `dir` (none if it does not exist).
fn files_in(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    }
}

/// Number of files in the fan-out directories under `blobs/`.
fn blob_count(cache: &Path) -> usize {
    let blobs = cache.join("blobs");
    std::fs::read_dir(&blobs)
        .expect("blobs/ exists")
        .map(|fan| files_in(&fan.expect("fan-out entry").path()).len())
        .sum()
}

async fn cache_objects(net: &crate::support::Net) -> u64 {
    let status = net.testnet.nodes[0].status().await.expect("status");
    status["cache"]["objects"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cache.objects in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_writing_then_restart_serves_only_exact_bodies() {
    let mut net = launch(1, &[]).await;
    let cache_dir = net.testnet.nodes[0].spec().dir.join("cache");
    let node = net.http(0);
    let urls: Vec<String> = (0..OBJECTS)
        .map(|i| net.testnet.origin.url(&path(i)))
        .collect();

    // Phase 1: 100 fetches, 16 at a time; each reports its completion.
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let (done_tx, mut done_rx) = mpsc::channel::<usize>(OBJECTS);
    let tasks: Vec<_> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let (url, permits, done_tx) = (url.clone(), permits.clone(), done_tx.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                let got =
                    reef_testnet::client::fetch_digest(Some(node), &url, REQUEST_TIMEOUT).await;
                if got.is_ok() {
                    let _ = done_tx.send(i).await;
                }
                got
            })
        })
        .collect();
    drop(done_tx);
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        for _ in 0..KILL_AFTER {
            done_rx.recv().await.expect("a fetch completed");
        }
    })
    .await
    .expect("the first fetches completed in time");
    // Objects committed by now are durable: they must all be there after the restart.
    let committed_before = cache_objects(&net).await;
    net.testnet.nodes[0].kill();

    let mut completed = 0;
    let mut interrupted = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        task.abort();
        match task.await {
            Ok(Ok(got)) => {
                completed += 1;
                // A response that completed before the crash was exact too.
                assert_eq!(got.status, 200, "object {i} before the crash");
                assert_eq!(got.len, size(i), "object {i} before the crash");
                assert_eq!(
                    got.digest,
                    expected_digest(&path(i), size(i)),
                    "object {i} before the crash"
                );
            }
            // Cut off by the crash, or aborted while waiting for its turn.
            Ok(Err(_)) | Err(_) => interrupted += 1,
        }
    }
    eprintln!(
        "crash: {completed} fetches completed and {interrupted} were cut off; \
         {committed_before} objects committed just before SIGKILL"
    );
    assert!(completed >= KILL_AFTER);
    assert!(
        interrupted > 0,
        "every fetch finished before the kill; the crash hit no write"
    );

    // Phase 2: restart on the same data dir. The store's open-time repair has run by the
    // time the node writes runtime.json; wait until the admin API answers.
    net.testnet.nodes[0]
        .restart(Vec::new())
        .await
        .expect("node restarts after SIGKILL");
    net.testnet.nodes[0]
        .wait_status("answering", JOIN_TIMEOUT, |_| true)
        .await
        .expect("restarted node answers");
    let recovered = cache_objects(&net).await;
    assert!(
        recovered <= OBJECTS as u64,
        "{recovered} objects after restart"
    );
    assert!(
        recovered >= committed_before,
        "{committed_before} objects were committed before the crash, {recovered} after"
    );
    let log = std::fs::read_to_string(net.testnet.nodes[0].log_path()).unwrap_or_default();
    eprintln!(
        "crash: {recovered} objects after restart; {}",
        log.lines()
            .rfind(|l| l.contains("cache opened"))
            .unwrap_or("no `cache opened` log line")
    );
    let leftover = files_in(&cache_dir.join("tmp"));
    assert!(
        leftover.is_empty(),
        "temp files survived the restart: {leftover:?}"
    );
    assert_eq!(
        blob_count(&cache_dir),
        recovered as usize,
        "every blob on disk belongs to exactly one object (bodies are all distinct)"
    );

    // Phase 3: every object again through the restarted node: all exact, and whatever came
    // from the local cache did not go to the origin.
    let hits_before: HashMap<usize, u64> = (0..OBJECTS)
        .map(|i| (i, net.testnet.origin.hits(&path(i))))
        .collect();
    let node = net.http(0);
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let tasks: Vec<_> = urls
        .iter()
        .map(|url| {
            let (url, permits) = (url.clone(), permits.clone());
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                reef_testnet::client::fetch_digest(Some(node), &url, REQUEST_TIMEOUT).await
            })
        })
        .collect();
    let mut local = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        let got = task
            .await
            .expect("fetch task")
            .unwrap_or_else(|e| panic!("object {i} after restart: {e}"));
        let source = got
            .headers
            .get("x-reef-source")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(got.status, 200, "object {i} after restart ({source})");
        assert_eq!(got.len, size(i), "object {i} after restart ({source})");
        assert_eq!(
            got.digest,
            expected_digest(&path(i), size(i)),
            "object {i} after restart ({source})"
        );
        let hits = net.testnet.origin.hits(&path(i));
        match source.as_str() {
            "local" => {
                local += 1;
                assert_eq!(hits, hits_before[&i], "object {i} was local");
            }
            "origin" => assert_eq!(hits, hits_before[&i] + 1, "object {i}"),
            other => panic!("object {i} served from {other:?}"),
        }
    }
    assert_eq!(
        local, recovered,
        "every recovered object is served from the local cache"
    );

    // Once every fill has committed, nothing is left in tmp/ and every blob is referenced.
    net.testnet.nodes[0]
        .wait_status("all objects stored", JOIN_TIMEOUT, |s| {
            s["cache"]["objects"].as_u64() == Some(OBJECTS as u64)
        })
        .await
        .expect("every object is stored after the refetch");
    let leftover = files_in(&cache_dir.join("tmp"));
    assert!(
        leftover.is_empty(),
        "temp files after the refetch: {leftover:?}"
    );
    assert_eq!(blob_count(&cache_dir), OBJECTS);
}
