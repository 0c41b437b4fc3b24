//! Providers as keys: `reef provider init`, nodes certified with `--provider-key`, what the
//! admin API says about them (and about a node that only calls itself a member), `/metrics`,
//! and exit code 2 for bad key files.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use reef_testnet::{NodeProcess, NodeSpec, node_ip, provider_key_path};
use serde_json::{Value, json};

use crate::support::{JOIN_TIMEOUT, REQUEST_TIMEOUT, get_via, launch_providers, reef_bin};

/// `reef provider init --out FILE --name NAME`: (exit code, stdout, stderr).
fn provider_init(out: &Path, name: &str) -> (Option<i32>, String, String) {
    let run = Command::new(reef_bin())
        .args(["provider", "init", "--name", name, "--out"])
        .arg(out)
        .output()
        .expect("run reef provider init");
    (
        run.status.code(),
        String::from_utf8_lossy(&run.stdout).trim().to_string(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// The provider id a key file states (`id = "…"`).
fn id_in(key_file: &Path) -> String {
    let text = std::fs::read_to_string(key_file).expect("key file");
    text.lines()
        .find_map(|l| l.strip_prefix("id = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("id line")
        .to_string()
}

#[test]
fn provider_init_makes_a_private_key_and_never_overwrites_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("alpha.key");
    let b = dir.path().join("beta.key");
    let (code, id_a, stderr) = provider_init(&a, "alpha");
    assert_eq!(code, Some(0), "{stderr}");
    let (code, id_b, _) = provider_init(&b, "beta");
    assert_eq!(code, Some(0));
    for id in [&id_a, &id_b] {
        assert!(
            id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
    }
    assert_ne!(id_a, id_b);
    assert_eq!(id_in(&a), id_a);
    let text = std::fs::read_to_string(&a).expect("key file");
    assert!(text.contains("name = \"alpha\""), "{text}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // Never overwritten.
    let (code, _, stderr) = provider_init(&a, "gamma");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&a).expect("key file"), text);

    // Names are labels, but bounded and printable.
    for bad in ["", "two\nlines", &"n".repeat(65)] {
        let (code, _, stderr) = provider_init(&dir.path().join("bad.key"), bad);
        assert_eq!(code, Some(2), "{bad:?}");
        assert!(stderr.contains("name"), "{stderr}");
    }
    let (code, _, _) = provider_init(&dir.path().join("no/such/dir/x.key"), "x");
    assert_eq!(code, Some(2));
}

#[test]
fn bad_provider_settings_exit_with_code_2_and_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "this is not a key\n").expect("write");
    let good = dir.path().join("acme.key");
    assert_eq!(provider_init(&good, "acme").0, Some(0));
    let data = dir.path().join("data");
    let missing = dir.path().join("missing.key");
    let long_region = "r".repeat(40);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--provider-key", missing.to_str().expect("utf8")],
            "provider key",
        ),
        (
            vec!["--provider-key", garbage.to_str().expect("utf8")],
            "provider key",
        ),
        (
            vec![
                "--provider-key",
                good.to_str().expect("utf8"),
                "--provider",
                "globex",
            ],
            "does not match",
        ),
        (vec!["--provider", "bad\nname"], "name"),
        (vec!["--capacity-rps", "0"], "capacity_rps"),
        (vec!["--region", &long_region], "region"),
    ];
    for (args, says) in cases {
        let out = Command::new(reef_bin())
            .arg("run")
            .arg("--data-dir")
            .arg(&data)
            .args(["--http", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(&args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// GET an admin path; the status and the body parsed as JSON (or as a string).
async fn admin_get(admin: SocketAddr, path: &str) -> (u16, Value, String) {
    let url = format!("http://{admin}{path}");
    let got = reef_testnet::client::fetch(None, http::Method::GET, &url, REQUEST_TIMEOUT)
        .await
        .expect("admin request");
    let content_type = got
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let json = serde_json::from_slice(&got.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&got.body).into_owned()));
    (got.status.as_u16(), json, content_type)
}

/// What `/api/node?peer=` on `admin` says about `peer`, once the DHT has its record.
async fn node_seen_by(admin: SocketAddr, peer: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, body, _) = admin_get(admin, &format!("/api/node?peer={peer}")).await;
        if status == 200 {
            return body;
        }
        assert!(
            started.elapsed() < JOIN_TIMEOUT,
            "no record of {peer}: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_carry_their_providers_certificates_and_impostors_stay_independent() {
    // Two providers: the testnet makes their keys with `reef provider init` and starts their
    // nodes with `--provider-key`.
    let net = launch_providers(3, 2, &[]).await;
    let dir = net.dir.path();
    let p0 = id_in(&provider_key_path(dir, 0));
    let p1 = id_in(&provider_key_path(dir, 1));
    assert_ne!(p0, p1);
    let nodes = &net.testnet.nodes;
    for (i, provider) in [(0, &p0), (1, &p1), (2, &p0)] {
        let status = nodes[i].status().await.expect("status");
        let name = format!("p{}", i % 2);
        assert_eq!(
            status["provider"],
            json!({"id": provider, "name": name, "certified": true}),
            "node {i}"
        );
        assert_eq!(status["records_rejected"], json!({}), "node {i}");
        assert_eq!(&nodes[i].runtime().provider_id, provider);
    }
    let manifest = net.testnet.manifest();
    assert_eq!(manifest.nodes[1].provider_id, p1);

    // A node that calls itself p0 but has no key: its own provider, to itself and to all.
    let impostor = NodeProcess::spawn(NodeSpec {
        bin: reef_bin(),
        dir: dir.join("impostor"),
        ip: node_ip(3).expect("loopback address"),
        provider: "p0".into(),
        provider_key: None,
        region: "r0".into(),
        bootstrap: net.testnet.bootstrap_addrs(usize::MAX),
        extra_args: Vec::new(),
        env: Vec::new(),
    })
    .await
    .expect("impostor starts");
    impostor.wait_joined(JOIN_TIMEOUT).await.expect("joins");
    let status = impostor.status().await.expect("status");
    let own_id = status["provider"]["id"].as_str().expect("id").to_string();
    assert_ne!(own_id, p0);
    assert_eq!(
        status["provider"],
        json!({"id": own_id, "name": "p0", "certified": false})
    );

    // Lookup by peer id: HTTP edge, provider and region, as verified by another node.
    let observer = nodes[1].runtime().admin;
    let seen = node_seen_by(observer, &nodes[0].runtime().peer_id).await;
    assert_eq!(seen["http"], nodes[0].runtime().http.to_string(), "{seen}");
    assert_eq!(seen["region"], "r0");
    assert_eq!(
        seen["provider"],
        json!({"id": p0, "name": "p0", "certified": true})
    );
    assert_eq!(
        seen["capacity"],
        json!({"req_per_s": 1000, "mbit_per_s": 1000})
    );
    let seen = node_seen_by(observer, &impostor.runtime().peer_id).await;
    assert_eq!(
        seen["provider"],
        json!({"id": own_id, "name": null, "certified": false}),
        "{seen}"
    );
    let (status, _, _) = admin_get(observer, "/api/node?peer=not-a-peer-id").await;
    assert_eq!(status, 400);

    // As a holder, too: node 2 (p0) sees the impostor as nobody's member.
    let url = net.testnet.origin.url("/bytes/2000");
    assert_eq!(
        get_via(impostor.runtime().http, &url).await.source(),
        "origin"
    );
    impostor
        .wait_status("announced", JOIN_TIMEOUT, |s| {
            s["announcements"]["done"].as_u64().unwrap_or(0) >= 1
        })
        .await
        .expect("announced");
    let (status, holders, _) =
        admin_get(nodes[2].runtime().admin, &format!("/api/holders?url={url}")).await;
    assert_eq!(status, 200, "{holders}");
    let holders = holders["holders"].as_array().expect("holders").clone();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(holders[0]["peer_id"], impostor.runtime().peer_id.as_str());
    assert_eq!(holders[0]["provider"]["certified"], false);
    assert_eq!(holders[0]["provider"]["id"], own_id.as_str());

    // Metrics, in the Prometheus text format.
    let (status, body, content_type) = admin_get(nodes[0].runtime().admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = body.as_str().expect("text");
    assert!(
        text.contains("# TYPE reef_records_rejected counter"),
        "{text}"
    );
    assert!(
        text.contains(
            "reef_records_rejected_total{kind=\"node_record\",reason=\"bad_signature\"} 0"
        ),
        "{text}"
    );
}
