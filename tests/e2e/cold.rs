//! A cold crowd: many nodes miss the same new objects at the same instant. Each key's home
//! node fetches it from the origin once and streams it to the others while it arrives; a dead
//! or lying home costs a fallback, never a wrong or failed answer.

use reef_testnet::origin::expected_body;

use crate::support::{
    JOIN_TIMEOUT, Net, REQUEST_TIMEOUT, get_via, launch_home, wait_stored, wait_tables_full,
};
use crate::verify::{blobs, corrupt};

/// `GET /api/holders?url=` on `node`: the key's home as that node sees it.
async fn home_of(net: &Net, node: usize, url: &str) -> String {
    let admin = net.testnet.nodes[node].runtime().admin;
    let query = format!("http://{admin}/api/holders?url={url}");
    let resp = reef_testnet::client::fetch(None, http::Method::GET, &query, REQUEST_TIMEOUT)
        .await
        .expect("holders query");
    assert_eq!(resp.status, 200);
    let reply: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
    assert!(reply["dht"]["requests"].is_u64(), "{reply}");
    reply["home"]
        .as_str()
        .expect("home routing is on")
        .to_string()
}

/// The first `/bytes/<n>` path (n from `from`) whose home is node `home`, as node 0 sees it.
async fn path_homed_at(net: &Net, home: usize, from: u64) -> (String, u64) {
    let want = net.testnet.nodes[home].runtime().peer_id.clone();
    for n in from..from + 200 {
        let path = format!("/bytes/{n}");
        if home_of(net, 0, &net.testnet.origin.url(&path)).await == want {
            return (path, n);
        }
    }
    panic!("no key homed at node {home} among 200");
}

fn status_u64(status: &serde_json::Value, a: &str, b: &str) -> u64 {
    status[a][b].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_crowd_over_five_nodes_reaches_the_origin_once_per_object() {
    let net = launch_home(5).await;
    wait_tables_full(&net).await;
    // Every node computes the same home for every key.
    let url = net.testnet.origin.url("/bytes/1");
    let home = home_of(&net, 0, &url).await;
    for node in 1..5 {
        assert_eq!(home_of(&net, node, &url).await, home, "node {node}");
    }

    // 8 new objects, 6 clients per object on each of the 5 nodes, all at once. The origin
    // waits 300 ms before answering, so every node misses before anyone has a copy.
    let objects: Vec<(String, u64)> = (0..8u64)
        .map(|i| (format!("/slow/300/{}", 60_000 + i), 60_000 + i))
        .collect();
    let mut clients = Vec::new();
    for (path, size) in &objects {
        for node in 0..5 {
            for _ in 0..6 {
                let (url, addr) = (net.testnet.origin.url(path), net.http(node));
                let (path, size) = (path.clone(), *size);
                clients.push(tokio::spawn(async move {
                    let got = get_via(addr, &url).await;
                    (path, size, got)
                }));
            }
        }
    }
    let mut sources = std::collections::BTreeMap::<String, usize>::new();
    for client in clients {
        let (path, size, got) = client.await.expect("client task");
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        assert_eq!(got.body, expected_body(&path, size), "{path}");
        *sources.entry(got.source().to_string()).or_default() += 1;
    }
    for (path, _) in &objects {
        assert_eq!(
            net.testnet.origin.hits(path),
            1,
            "{path} was fetched from the origin more than once (sources {sources:?})"
        );
    }
    // Every node stored every object (peers' copies checked out against the home's record).
    for node in 0..5 {
        wait_stored(&net, node, objects.len() as u64).await;
    }
    let mut forwarded = 0;
    let mut received = 0;
    for node in &net.testnet.nodes {
        let status = node.status().await.expect("status");
        assert_eq!(status["peer_bodies_rejected"], 0, "{status}");
        forwarded += status_u64(&status, "home", "served");
        received += status_u64(&status, "home", "received");
    }
    // Each object's 4 other nodes got it from its home (one coalesced fill each).
    assert_eq!(forwarded, 4 * objects.len() as u64, "sources {sources:?}");
    assert!(received >= forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_home_node_costs_a_fallback_not_an_error() {
    let mut net = launch_home(4).await;
    wait_tables_full(&net).await;
    let (path, size) = path_homed_at(&net, 3, 20_000).await;
    let url = net.testnet.origin.url(&path);
    // Killed: the others still list it for a few seconds and send it their misses.
    net.testnet.nodes[3].kill();
    let clients: Vec<_> = (0..3)
        .flat_map(|node| {
            let (url, addr) = (url.clone(), net.http(node));
            (0..4).map(move |_| {
                let url = url.clone();
                tokio::spawn(async move { get_via(addr, &url).await })
            })
        })
        .collect();
    for client in clients {
        let got = client.await.expect("client task");
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.body, expected_body(&path, size));
    }
    // Each node fell back on its own at worst.
    let hits = net.testnet.origin.hits(&path);
    assert!((1..=3).contains(&hits), "origin hits {hits}");
    let mut failed = 0;
    for node in 0..3 {
        let status = net.testnet.nodes[node].status().await.expect("status");
        failed += status_u64(&status, "home", "failed");
    }
    assert!(failed >= 1, "nobody noticed the dead home");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_serving_a_corrupted_copy_is_caught_and_the_client_gets_the_right_bytes() {
    let net = launch_home(3).await;
    wait_tables_full(&net).await;
    let (path, size) = path_homed_at(&net, 2, 40_000).await;
    let url = net.testnet.origin.url(&path);
    // The home fetches it from the origin and vouches for it; then its stored copy rots.
    let first = get_via(net.http(2), &url).await;
    assert_eq!(first.source(), "origin");
    wait_stored(&net, 2, 1).await;
    net.testnet.nodes[2]
        .wait_status("record published", JOIN_TIMEOUT, |s| {
            status_u64(s, "announcements", "done") >= 1
        })
        .await
        .expect("announced");
    let data_dir = &net.testnet.nodes[2].spec().dir;
    let stored = blobs(data_dir);
    assert_eq!(stored.len(), 1);
    corrupt(&stored[0]);

    // Node 0 sends its miss to the home, finds the copy does not match the home's own
    // record, and fetches from the origin instead.
    let got = get_via(net.http(0), &url).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, expected_body(&path, size));
    assert_eq!(got.source(), "origin");
    let status = net.testnet.nodes[0].status().await.expect("status");
    assert_eq!(status["peer_bodies_rejected"], 1, "{status}");
    assert_eq!(net.testnet.origin.hits(&path), 2);
    // The next miss on node 0 does not ask the liar again: it has its own good copy now
    // (committed just after the response; a request before that would follow the fill).
    wait_stored(&net, 0, 1).await;
    let again = get_via(net.http(0), &url).await;
    assert_eq!(again.source(), "local");
    assert_eq!(again.body, expected_body(&path, size));
}
