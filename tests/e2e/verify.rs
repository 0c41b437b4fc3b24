//! Bodies from peers are verified against the ContentRecord the origin-fetching node signed:
//! a peer that serves wrong bytes is caught before anything reaches the client or the cache,
//! and is not asked for that content again.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use http::Request;
use reef_testnet::origin::expected_body;

use crate::support::{launch, request_via, wait_announced, wait_stored};

/// Every blob file under a node's cache.
pub(crate) fn blobs(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = data_dir.join("cache").join("blobs");
    for fanout in std::fs::read_dir(root).expect("blobs/") {
        let fanout = fanout.expect("entry").path();
        for blob in std::fs::read_dir(fanout).expect("fan-out dir") {
            out.push(blob.expect("entry").path());
        }
    }
    out
}

/// Flips one byte in the middle of `path`, keeping its length (so only a hash can tell).
pub(crate) fn corrupt(path: &Path) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open blob");
    let middle = file.metadata().expect("metadata").len() / 2;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(middle)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(middle)).expect("seek");
    file.write_all(&byte).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_a_corrupted_body_is_caught_and_avoided() {
    let net = launch(2, &[]).await;
    let path = "/bytes/200000";
    let url = net.testnet.origin.url(path);
    let good = expected_body(path, 200_000);

    // A sound copy first: node 1 gets node 0's bytes once they check out.
    let sound = "/bytes/1000";
    let sound_url = net.testnet.origin.url(sound);
    request_via(net.http(0), Request::get(&sound_url)).await;
    wait_announced(&net, 0, 1).await;
    let got = request_via(net.http(1), Request::get(&sound_url)).await;
    assert_eq!(got.source(), "peer");
    assert_eq!(got.body, expected_body(sound, 1000));

    let first = request_via(net.http(0), Request::get(&url)).await;
    assert_eq!(first.body, good);
    wait_stored(&net, 0, 2).await;
    wait_announced(&net, 0, 2).await;
    let data_dir = net.testnet.nodes[0].spec().dir.clone();
    let big: Vec<PathBuf> = blobs(&data_dir)
        .into_iter()
        .filter(|b| std::fs::metadata(b).expect("blob").len() == 200_000)
        .collect();
    assert_eq!(big.len(), 1);
    corrupt(&big[0]);

    // `no-store` keeps node 1 from keeping a copy, so it has to fetch again each time.
    let no_store = || Request::get(&url).header("cache-control", "no-store");
    let caught = request_via(net.http(1), no_store()).await;
    assert_eq!(caught.status, 200);
    assert_eq!(caught.source(), "origin");
    assert!(caught.body == good, "the client got the wrong bytes");
    let status = net.testnet.nodes[1].status().await.expect("status");
    assert_eq!(status["peer_bodies_rejected"], 1, "{status}");

    // Not asked again for that content: straight to the origin, nothing more rejected.
    let again = request_via(net.http(1), no_store()).await;
    assert_eq!(again.source(), "origin");
    assert!(again.body == good);
    let status = net.testnet.nodes[1].status().await.expect("status");
    assert_eq!(status["peer_bodies_rejected"], 1, "{status}");
    assert_eq!(net.testnet.origin.hits(path), 3);
}
