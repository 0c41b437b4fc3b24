//! Private content: a token-protected service's objects go only to clients with a valid
//! token, at the owner's nodes and at a peer provider's node under an arrangement, and never
//! through the DHT.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use http::Request;
use reef_proto::token::{Claims, TokenSigner};
use reef_proto::{CanonicalUrl, ContentKey};
use reef_testnet::origin::expected_body;

use crate::peering::admin_json;
use crate::services::wait_published;
use crate::support::{
    Fetched, JOIN_TIMEOUT, Net, get_via, launch_configured, launch_home_configured, reef_bin,
    request_via, wait_announced, wait_stored, wait_tables_full,
};

const HOST: &str = "files.example";
/// Seeds of the two listed keys (k1, k2) and of one that is not listed.
const K1: u8 = 1;
const K2: u8 = 2;
const UNLISTED: u8 = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// p0's service, token-protected with k1 and k2 (a rotation in progress).
fn service() -> String {
    let public = |seed| hex(&TokenSigner::from_bytes(&[seed; 32]).public());
    format!(
        "[services.\"{HOST}\"]\norigin = \"{{origin}}\"\naccess = \"token\"\n\
         token_keys = {{ k1 = \"{}\", k2 = \"{}\" }}\n",
        public(K1),
        public(K2)
    )
}

/// p1 serves 30 % of p0's private service from start.
fn long_term() -> String {
    crate::peering::long_term::long_term("files.example", "0.3")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(seed: u8, key_id: &str, prefix: &str, expires: u64, client: Option<&str>) -> String {
    TokenSigner::from_bytes(&[seed; 32])
        .issue(&Claims {
            key_id: key_id.into(),
            prefix: prefix.into(),
            expires,
            client: client.map(|c| c.parse().expect("ip")),
        })
        .expect("token")
}

fn valid(prefix: &str) -> String {
    token(K1, "k1", prefix, now() + 3600, None)
}

async fn with_param(net: &Net, node: usize, path: &str, token: &str) -> Fetched {
    let target = format!("{path}?reef_token={token}");
    request_via(net.http(node), Request::get(target).header("host", HOST)).await
}

async fn with_bearer(net: &Net, node: usize, path: &str, token: &str) -> Fetched {
    let req = Request::get(path)
        .header("host", HOST)
        .header("authorization", format!("Bearer {token}"));
    request_via(net.http(node), req).await
}

async fn without(net: &Net, node: usize, path: &str) -> Fetched {
    request_via(net.http(node), Request::get(path).header("host", HOST)).await
}

/// A 403 whose one-line body names `why` and carries nothing of the object.
fn assert_refused(got: &Fetched, why: &str, object: &[u8]) {
    assert_eq!(got.status, 403, "{why}: {}", got.text());
    assert!(got.text().contains(why), "{why}: {}", got.text());
    assert_eq!(got.text().lines().count(), 1, "{}", got.text());
    assert!(got.body.len() < 400 && !got.body.windows(64).any(|w| object.starts_with(w)));
    assert_eq!(got.header("cache-control"), "no-store");
}

/// Every token case at node `node`: the first fetch fills its cache, then each refusal is
/// of a cached object (a HIT needs a token as much as a miss).
async fn token_cases(net: &Net, node: usize, path: &str) {
    let size: u64 = path
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("size");
    let object = expected_body(path, size);
    let first = with_param(net, node, path, &valid("/bytes")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.body, object);
    assert_eq!(first.source(), "origin");
    assert!(
        first.header("cache-control").starts_with("private"),
        "{:?}",
        first.headers
    );
    wait_stored(net, node, 1).await;

    // The token is not part of the cache key: another token, as a Bearer header, hits.
    let second = with_bearer(net, node, path, &token(K1, "k1", path, now() + 60, None)).await;
    assert_eq!((second.status.as_u16(), second.source()), (200, "local"));
    assert_eq!(second.body, object);
    // The other listed key works too (keys rotate by listing both for a while).
    let rotated = with_param(net, node, path, &token(K2, "k2", "/", now() + 60, None)).await;
    assert_eq!((rotated.status.as_u16(), rotated.source()), (200, "local"));
    // A token bound to the client's address (loopback connections come from 127.0.0.1).
    let bound = token(K1, "k1", "/bytes", now() + 60, Some("127.0.0.1"));
    assert_eq!(with_param(net, node, path, &bound).await.status, 200);

    assert_refused(&without(net, node, path).await, "token-protected", &object);
    let expired = token(K1, "k1", "/bytes", now() - 1, None);
    assert_refused(
        &with_param(net, node, path, &expired).await,
        "expired",
        &object,
    );
    let mut tampered = valid("/bytes").into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let got = with_bearer(net, node, path, &tampered).await;
    assert_eq!(got.status, 403, "{}", got.text());
    assert_refused(
        &with_param(net, node, path, "x!").await,
        "malformed",
        &object,
    );
    assert_refused(
        &with_param(net, node, path, &valid("/byte")).await,
        "not this path",
        &object,
    );
    // Dot segments are resolved before the prefix is checked.
    let escape = format!("/other/..{path}");
    assert_refused(
        &with_param(net, node, &escape, &valid("/other")).await,
        "not this path",
        &object,
    );
    let elsewhere = token(K1, "k1", "/bytes", now() + 60, Some("192.0.2.1"));
    assert_refused(
        &with_param(net, node, path, &elsewhere).await,
        "another client address",
        &object,
    );
    let unlisted = token(UNLISTED, "k3", "/bytes", now() + 60, None);
    assert_refused(
        &with_param(net, node, path, &unlisted).await,
        "not one of the service's keys",
        &object,
    );
    // Signed by an unlisted key while naming a listed one.
    let forged = token(UNLISTED, "k1", "/bytes", now() + 60, None);
    assert_refused(
        &with_param(net, node, path, &forged).await,
        "signature",
        &object,
    );
    // The forward-proxy form and the redirect path form are checked the same way.
    let proxied = get_via(net.http(node), &format!("http://{HOST}{path}")).await;
    assert_refused(&proxied, "token-protected", &object);
    let redirected = request_via(
        net.http(node),
        Request::get(format!("/_reef/s/{HOST}{path}")),
    )
    .await;
    assert_refused(&redirected, "token-protected", &object);
    let target = format!("/_reef/s/{HOST}{path}?reef_token={}", valid("/bytes"));
    let redirected = request_via(net.http(node), Request::get(target)).await;
    assert_eq!(
        (redirected.status.as_u16(), redirected.source()),
        (200, "local")
    );
    let proxied = get_via(
        net.http(node),
        &format!("http://{HOST}{path}?reef_token={}", valid("/")),
    )
    .await;
    assert_eq!((proxied.status.as_u16(), proxied.source()), (200, "local"));

    let metrics = metrics(net, node).await;
    for reason in [
        "missing",
        "expired",
        "bad_signature",
        "wrong_prefix",
        "wrong_client",
        "unknown_key",
        "malformed",
    ] {
        assert!(
            metrics.contains(&format!(
                "reef_token_rejections_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted:\n{metrics}"
        );
    }
}

async fn metrics(net: &Net, node: usize) -> String {
    let admin = net.testnet.nodes[node].runtime().admin;
    let url = format!("http://{admin}/metrics");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, JOIN_TIMEOUT)
        .await
        .expect("metrics");
    String::from_utf8_lossy(&got.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_private_content_at_the_owner_and_at_a_peer_under_arrangement() {
    let owner = format!("{}{}", service(), long_term());
    let mut net = launch_configured(2, 2, &[&owner, &long_term()]).await;
    token_cases(&net, 0, "/bytes/5000").await;
    // Node 1 is p1's: it learns the service (and its keys) from the signed record.
    wait_published(&net).await;
    token_cases(&net, 1, "/bytes/6000").await;
    // It fetched from the origin, not from p0's node, which never announced the object.
    assert_eq!(net.testnet.origin.hits("/bytes/6000"), 1);

    // Restarted, node 1 has not looked the service up yet, but its stored copy says it is
    // private: the forward-proxy form (checked against known services only) still gets 403.
    let bootstrap = net.testnet.bootstrap_addrs(1);
    net.testnet.nodes[1]
        .restart(bootstrap)
        .await
        .expect("restart");
    let proxied = get_via(net.http(1), &format!("http://{HOST}/bytes/6000")).await;
    assert_refused(
        &proxied,
        "token-protected",
        &expected_body("/bytes/6000", 6000),
    );
    let fine = with_param(&net, 1, "/bytes/6000", &valid("/bytes")).await;
    assert_eq!((fine.status.as_u16(), fine.source()), (200, "local"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_objects_are_never_announced_nor_handed_to_strangers() {
    let net = launch_configured(2, 2, &[&service()]).await;
    let path = "/bytes/3000";
    let got = with_param(&net, 0, path, &valid("/")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    // A public object fetched after it: once it is announced, the private one would have
    // been too.
    let public = net.testnet.origin.url("/bytes/100");
    assert_eq!(get_via(net.http(0), &public).await.status, 200);
    wait_announced(&net, 0, 1).await;
    let holders = |url: String| {
        let node = &net.testnet.nodes[1];
        async move {
            let q = format!("/api/holders?url={url}");
            admin_json(node, &q).await["holders"]
                .as_array()
                .expect("holders")
                .len()
        }
    };
    assert_eq!(
        holders(public.clone()).await,
        1,
        "the public object is announced"
    );
    let private_url = format!("http://{HOST}{path}");
    assert_eq!(
        holders(private_url.clone()).await,
        0,
        "the private one is not"
    );

    // Its object endpoint refuses a requester that is not a node of p0, with or without a
    // home request, and whatever it claims.
    let key = ContentKey::for_url(&CanonicalUrl::parse(&private_url).expect("url"));
    let object = expected_body(path, 3000);
    for req in [
        Request::get(format!("/_reef/object/{key}")),
        Request::get(format!("/_reef/object/{key}")).header("x-reef-object-auth", "1.00"),
        Request::get(format!("/_reef/object/{key}")).header("x-reef-home", &private_url),
    ] {
        let got = request_via(net.http(0), req).await;
        assert_eq!(got.status, 403, "{}", got.text());
        assert!(!got.body.windows(64).any(|w| object.starts_with(w)));
    }
    // An uncached private URL sent as a home request is refused too, not fetched.
    let cold = format!("http://{HOST}/bytes/3001");
    let cold_key = ContentKey::for_url(&CanonicalUrl::parse(&cold).expect("url"));
    let req = Request::get(format!("/_reef/object/{cold_key}")).header("x-reef-home", &cold);
    assert_eq!(request_via(net.http(0), req).await.status, 403);
    assert_eq!(net.testnet.origin.hits("/bytes/3001"), 0);
    let metrics = metrics(&net, 0).await;
    assert!(
        metrics.contains("reef_token_rejections_total{reason=\"unauthorised_node\"}"),
        "{metrics}"
    );
}

#[test]
fn reef_token_issues_tokens_and_refuses_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k1.key");
    let out = Command::new(reef_bin())
        .args(["token", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("keygen runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("token_keys = { k1 = \""), "{printed}");
    let issue = |extra: &[&str]| {
        Command::new(reef_bin())
            .args(["token", "issue", "--key"])
            .arg(&key)
            .args(extra)
            .output()
            .expect("issue runs")
    };
    let out = issue(&["--prefix", "/p", "--ttl", "1h", "--client-ip", "127.0.0.1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (claims, _, _) = reef_proto::token::decode(&text).expect("a token");
    assert_eq!(
        (claims.key_id.as_str(), claims.prefix.as_str()),
        ("k1", "/p")
    );
    for (bad, why) in [
        (&["--prefix", "p", "--ttl", "1h"][..], "--prefix"),
        (&["--prefix", "/p/../q", "--ttl", "1h"], "--prefix"),
        (&["--prefix", "/p", "--ttl", "soon"], "--ttl"),
        (
            &["--prefix", "/p", "--ttl", "1h", "--client-ip", "x"],
            "--client-ip",
        ),
        (
            &["--prefix", "/p", "--ttl", "1h", "--key-id", "a b"],
            "--key-id",
        ),
    ] {
        let out = issue(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_private_miss_goes_to_its_home_node_which_knows_its_own_provider() {
    let net = launch_home_configured(2, &service()).await;
    wait_tables_full(&net).await;
    // A path whose home is node 1, so that node 0 sends its miss there.
    let home = net.testnet.nodes[1].runtime().peer_id.clone();
    let mut path = None;
    for n in 7000..7200 {
        let candidate = format!("/bytes/{n}");
        let q = format!("/api/holders?url=http://{HOST}{candidate}");
        if admin_json(&net.testnet.nodes[0], &q).await["home"] == home.as_str() {
            path = Some((candidate, n));
            break;
        }
    }
    let (path, size) = path.expect("a key homed at node 1 among 200");
    let got = with_param(&net, 0, &path, &valid("/bytes")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, expected_body(&path, size));
    // The home proved who asked (a node of its own provider) and handed the object over.
    assert_eq!(got.source(), "peer", "{:?}", got.headers);
    assert_eq!(net.testnet.origin.hits(&path), 1);
    let status = net.testnet.nodes[1].status().await.expect("status");
    assert_eq!(status["home"]["received"], 1, "{status}");
    wait_stored(&net, 0, 1).await;
    let again = with_param(&net, 0, &path, &valid("/bytes")).await;
    assert_eq!((again.status.as_u16(), again.source()), (200, "local"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_the_peer_carries_a_bearer_token_along() {
    // p0 runs at capacity 1 req/s, so a few requests put it over its high watermark, and it
    // sends everything to p1 (the whole share).
    let whole = crate::peering::long_term::long_term("files.example", "1.0");
    let overloaded = format!(
        "capacity_rps = 1\n{}\n[peering]\nhigh_watermark = 0.5\n{whole}",
        service()
    );
    let net = launch_configured(2, 2, &[&overloaded, &whole]).await;
    wait_published(&net).await;
    let path = "/bytes/2500";
    let token = valid("/bytes");
    let started = std::time::Instant::now();
    let location = loop {
        let got = with_bearer(&net, 0, path, &token).await;
        if got.status == 302 {
            break got.header("location").to_string();
        }
        assert_eq!(got.status, 200, "{}", got.text());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "node 0 never redirected"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Clients drop `Authorization` when redirected to another host: the token is in the URL.
    assert!(
        location.contains(&format!("reef_token={token}")),
        "{location}"
    );
    let peer = format!("http://{}", net.http(1));
    let target = location.strip_prefix(&peer).expect("a redirect to node 1");
    let followed = request_via(net.http(1), Request::get(target)).await;
    assert_eq!(followed.status, 200, "{}", followed.text());
    assert_eq!(followed.body, expected_body(path, 2500));
    // Without the token the peer refuses, like the owner.
    let bare = target.split('?').next().expect("path");
    let refused = request_via(net.http(1), Request::get(bare)).await;
    assert_eq!(refused.status, 403, "{}", refused.text());
}
