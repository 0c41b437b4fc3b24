//! Capacity offers: each provider's agent publishes a signed offer and announces itself under
//! its regions; a discovery from any node returns every provider's verified offer for a region.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{REQUEST_TIMEOUT, launch_providers, reef_bin};

const OFFER: &str = r#"
[offer]
req_per_s = 5000
mbit_per_s = 2000
regions = ["eu", "us"]
price_per_gb = 0.02
min_duration_s = 300
max_duration_s = 86400
"#;

async fn get_json(url: &str) -> (u16, Value) {
    let got = reef_testnet::client::fetch(None, http::Method::GET, url, REQUEST_TIMEOUT)
        .await
        .expect("admin request");
    let body = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
    (got.status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_returns_every_providers_offer_for_a_region() {
    let config = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(config.path(), OFFER).expect("write config");
    let config_path = config.path().to_str().expect("utf-8 path");
    let net = launch_providers(3, 3, &["--config", config_path]).await;

    let mut providers = BTreeSet::new();
    for node in &net.testnet.nodes {
        let status = node.status().await.expect("status");
        providers.insert(status["provider"]["id"].as_str().expect("id").to_string());
    }
    assert_eq!(providers.len(), 3);

    // Each agent publishes shortly after joining; poll a discovery from node 0 until all are in.
    let admin = net.testnet.nodes[0].runtime().admin;
    let started = std::time::Instant::now();
    let offers = loop {
        let (status, body) = get_json(&format!("http://{admin}/api/offers?region=eu")).await;
        assert_eq!(status, 200, "{body}");
        let found: BTreeSet<String> = body["offers"]
            .as_array()
            .expect("offers")
            .iter()
            .map(|o| o["provider"].as_str().expect("provider").to_string())
            .collect();
        if found == providers {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "offers found: {found:?}, providers: {providers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "all 3 offers discoverable {:?} after launch",
        started.elapsed()
    );
    let first = &offers["offers"][0];
    assert_eq!(first["req_per_s"], 5000);
    assert_eq!(first["price_per_gb"], 0.02);
    assert_eq!(first["regions"], serde_json::json!(["eu", "us"]));

    // Another node sees them too, and a region nobody serves has none.
    let other = net.testnet.nodes[2].runtime().admin;
    let (_, us) = get_json(&format!("http://{other}/api/offers?region=us")).await;
    assert_eq!(us["offers"].as_array().expect("offers").len(), 3, "{us}");
    let (_, asia) = get_json(&format!("http://{other}/api/offers?region=asia")).await;
    assert_eq!(asia["offers"], serde_json::json!([]));
    let (status, _) = get_json(&format!("http://{other}/api/offers?region=")).await;
    assert_eq!(status, 400);
}

#[test]
fn an_offer_without_a_provider_key_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("reef.toml");
    std::fs::write(&config, OFFER).expect("write config");
    let out = Command::new(reef_bin())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("provider-key"), "{stderr}");
}
