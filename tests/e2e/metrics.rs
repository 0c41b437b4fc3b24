//! Operating a node: `/metrics` after real traffic, `reef status`, and the admin token that
//! guards the mutating endpoints (`reef purge`, `reef peering end`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use http::StatusCode;

use crate::peering::long_term::LONG_TERM;
use crate::services::VIDEO;
use crate::support::{
    REQUEST_TIMEOUT, get_via, launch, launch_configured, launch_dns, reef_bin, try_request,
    wait_stored,
};

async fn scrape(admin: SocketAddr) -> (String, String) {
    let url = format!("http://{admin}/metrics");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT)
        .await
        .expect("scrape");
    assert_eq!(got.status, 200);
    let content_type = got
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        String::from_utf8(got.body.to_vec()).expect("utf8"),
        content_type,
    )
}

fn has_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "{line:?} not in /metrics:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_fetch_from_the_origin_then_from_the_cache() {
    let net = launch(1, &[]).await;
    let path = "/bytes/1000";
    let url = net.testnet.origin.url(path);
    let first = get_via(net.http(0), &url).await;
    assert_eq!((first.status.as_u16(), first.source()), (200, "origin"));
    wait_stored(&net, 0, 1).await;
    let second = get_via(net.http(0), &url).await;
    assert_eq!((second.status.as_u16(), second.source()), (200, "local"));

    let (text, content_type) = scrape(net.testnet.nodes[0].runtime().admin).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    for line in [
        "reef_requests_total{source=\"origin\",status=\"200\"} 1",
        "reef_requests_total{source=\"local\",status=\"200\"} 1",
        "reef_origin_fetches_total 1",
        "reef_received_bytes_total{from=\"origin\"} 1000",
        "reef_received_bytes_total{from=\"peer\"} 0",
        "reef_sent_bytes_total 2000",
        "reef_cache_lookups_total{result=\"hit\"} 1",
        "reef_cache_lookups_total{result=\"miss\"} 1",
        "reef_cache_objects 1",
        "reef_cache_stored_bytes 1000",
        "reef_connected_peers 0",
        "reef_connections_pruned_total 0",
        "reef_arrangements{state=\"active\",role=\"primary\"} 0",
        "# TYPE reef_dht_lookup_duration_seconds histogram",
        "# TYPE reef_cache_hit_ratio gauge",
        "reef_records_rejected_total{kind=\"node_record\",reason=\"bad_signature\"} 0",
    ] {
        has_line(&text, line);
    }
    // The miss asked the DHT who holds the object: one lookup, timed.
    has_line(
        &text,
        "reef_dht_lookup_duration_seconds_count{lookup=\"providers\"} 1",
    );
    // Without --dns there are no DNS series.
    assert!(!text.contains("reef_dns_"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_peers_gossip_dns_answers_and_arrangements() {
    // p0 with its zone and service, p1 with its zone; a long-term arrangement between them.
    let zone = format!("{VIDEO}[dns]\nzone = \"cdn.example\"\n{LONG_TERM}");
    let peer = format!("[dns]\nzone = \"p1.cdn.example\"\n{LONG_TERM}");
    let net = launch_dns(2, 2, &[&zone, &peer]).await;
    let node = &net.testnet.nodes[0];
    // Load reports arrive every second from the other node and are accepted.
    node.wait_status("load.accepted", Duration::from_secs(30), |s| {
        s["load"]["accepted"].as_u64().unwrap_or(0) >= 1
    })
    .await
    .expect("a load report accepted");
    let server = node.runtime().dns.expect("DNS address");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let query = reef_testnet::dns_client::a_query(7, "nope.cdn.example").expect("query");
    socket.send_to(&query, server).await.expect("send");
    let mut buf = [0u8; 1500];
    let (len, _) = tokio::time::timeout(REQUEST_TIMEOUT, socket.recv_from(&mut buf))
        .await
        .expect("a DNS answer in time")
        .expect("recv");
    let answer = reef_testnet::dns_client::parse(&buf[..len]).expect("an answer");
    assert_eq!(answer.rcode, 3, "NXDOMAIN");

    let (text, _) = scrape(node.runtime().admin).await;
    for line in [
        "reef_connected_peers 1",
        "reef_dns_queries_total{answer=\"nxdomain\"} 1",
        "reef_dns_queries_total{answer=\"answered\"} 0",
        "reef_arrangements{state=\"active\",role=\"primary\"} 1",
        "reef_arrangements{state=\"active\",role=\"peer\"} 0",
    ] {
        has_line(&text, line);
    }
    let accepted = text
        .lines()
        .find(|l| {
            l.starts_with("reef_gossip_messages_total{topic=\"reef/load/1\",verdict=\"accept\"}")
        })
        .unwrap_or_else(|| panic!("no accepted load reports in\n{text}"));
    assert!(!accepted.ends_with(" 0"), "{accepted}");
    assert!(
        text.lines().any(|l| l
            .starts_with("reef_arrangement_served_requests_total{arrangement=\"")
            && l.ends_with(" 0")),
        "{text}"
    );
}

fn reef(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(reef_bin());
    cmd.args(args).env_remove("REEF_ADMIN_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run reef");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reef_status_prints_a_summary_and_says_when_the_node_is_unreachable() {
    let net = launch(2, &[]).await;
    let node = net.testnet.nodes[0].runtime().clone();
    let admin = node.admin.to_string();
    let (code, out, err) = reef(&["status", "--admin", &admin], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    for want in [
        format!("node          {}", node.peer_id),
        "provider      p0 (certified".to_string(),
        format!("addresses     http {} · admin {admin}", node.http),
        "overlay       joined · 1 peer connected".to_string(),
        "cache         0 objects".to_string(),
        "load          ".to_string(),
        "arrangements  0 active · 0 ended".to_string(),
        "dns           off".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in\n{out}");
    }

    // Nobody listens: a clear message and exit 1; not an address at all: exit 2.
    let closed = {
        // A port just released: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let (code, out, err) = reef(&["status", "--admin", &closed.to_string()], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("cannot reach the node's admin API"), "{err}");
    let (code, _, err) = reef(&["status", "--admin", "not an address"], &[]);
    assert_eq!(code, Some(2), "{err}");
}

const TOKEN: &str = "e2e-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_endpoints_want_the_admin_token() {
    let config = format!("admin_token = \"{TOKEN}\"\n");
    let net = launch_configured(1, 1, &[&config]).await;
    let admin = net.testnet.nodes[0].runtime().admin;
    let post = |auth: Option<&str>| {
        let mut req = http::Request::post("/api/purge").header("host", admin.to_string());
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        try_request(admin, req, REQUEST_TIMEOUT)
    };
    for auth in [None, Some("Bearer not-the-token".to_string())] {
        let got = post(auth.as_deref()).await.expect("answer");
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{}", got.text());
        assert_eq!(got.text().lines().count(), 1, "{}", got.text());
        assert_eq!(got.header("www-authenticate"), "Bearer");
    }
    // With the token the request gets through to the endpoint (which wants a body).
    let got = post(Some(&format!("Bearer {TOKEN}")))
        .await
        .expect("answer");
    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{}", got.text());
    // Reading needs no token.
    let status = try_request(
        admin,
        http::Request::get("/api/status").header("host", admin.to_string()),
        REQUEST_TIMEOUT,
    )
    .await
    .expect("status");
    assert_eq!(status.status, StatusCode::OK);

    // The CLI sends it from --token or REEF_ADMIN_TOKEN.
    let url = net.testnet.origin.url("/bytes/10");
    let admin = admin.to_string();
    let (code, out, err) = reef(&["purge", &url, "--admin", &admin], &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");
    let (code, out, err) = reef(
        &["purge", &url, "--admin", &admin],
        &[("REEF_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("removed 0 objects"), "{out}");
    let (code, out, err) = reef(
        &[
            "purge", "--prefix", &url, "--admin", &admin, "--token", TOKEN,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    // Past the guard, `peering end` reaches the endpoint, which knows no such arrangement.
    let id = "00112233445566778899aabbccddeeff";
    let (code, _, err) = reef(&["peering", "end", id, "--admin", &admin], &[]);
    assert!(code == Some(1) && err.contains("401"), "{err}");
    let (code, _, err) = reef(
        &["peering", "end", id, "--admin", &admin, "--token", TOKEN],
        &[],
    );
    assert!(code == Some(1) && err.contains("404"), "{err}");
}
