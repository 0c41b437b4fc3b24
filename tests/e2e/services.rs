//! Services: a provider's customer hostnames, published as signed ServiceRecords, served as
//! `Host: HOST` by the provider's nodes; other providers' nodes refuse them without an
//! arrangement.

use http::Request;
use reef_testnet::origin::expected_body;

use crate::support::{JOIN_TIMEOUT, get_via, launch_configured, request_via, wait_stored};

pub const VIDEO: &str = r#"
[services."video.example"]
origin = "{origin}"
"#;

/// Waits until node 0 has put its services' records into the DHT, so others can find them.
pub async fn wait_published(net: &crate::support::Net) {
    net.testnet.nodes[0]
        .wait_status("services.published", JOIN_TIMEOUT, |s| {
            s["services"]["published"].as_u64().unwrap_or(0) >= 1
        })
        .await
        .expect("service record published");
}

/// GET `path` of service `host` from the node at `node`, origin-form with `Host`.
pub async fn get_service(
    node: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> crate::support::Fetched {
    request_via(node, Request::get(path).header("host", host)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_served_by_its_provider_and_refused_by_others() {
    // Node 0 is p0, whose config declares the service; nodes 1 and 2 are p1 and p2.
    let net = launch_configured(3, 3, &[VIDEO]).await;
    let path = "/bytes/5000";
    let own = get_service(net.http(0), "video.example", path).await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(own.source(), "origin");
    assert_eq!(own.body, expected_body(path, 5000));
    assert_eq!(net.testnet.origin.hits(path), 1);
    wait_stored(&net, 0, 1).await;

    // The proxy form of the same URL is the same object.
    let proxied = get_via(net.http(0), &format!("http://video.example{path}")).await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    assert_eq!(proxied.source(), "local");
    // Host names are case-insensitive and may carry a port.
    let upper = get_service(net.http(0), "VIDEO.example:80", path).await;
    assert_eq!((upper.status.as_u16(), upper.source()), (200, "local"));

    // Another provider's node finds the record in the DHT and refuses: no arrangement.
    wait_published(&net).await;
    let other = get_service(net.http(1), "video.example", path).await;
    assert_eq!(other.status, 403, "{}", other.text());
    assert!(other.text().contains("arrangement"), "{}", other.text());
    // It now knows the service, so the proxy form is refused as well.
    let other = get_via(net.http(1), &format!("http://video.example{path}")).await;
    assert_eq!(other.status, 403, "{}", other.text());
    assert_eq!(
        net.testnet.origin.hits(path),
        1,
        "nothing reached the origin"
    );

    // Nobody publishes this one.
    let unknown = get_service(net.http(2), "nobody.example", path).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(
        unknown.text().contains("nobody.example"),
        "{}",
        unknown.text()
    );
    // A node's own address is not a service.
    let ip = net.http(2).ip().to_string();
    let bare = get_service(net.http(2), &ip, path).await;
    assert_eq!(bare.status, 400, "{}", bare.text());
}
