//! Per-service storage quotas through a real node: what fits is stored, what would exceed the
//! quota is served in full but not stored, and `/api/status` says so.

use std::process::Command;

use reef_testnet::origin::expected_body;

use crate::support::{JOIN_TIMEOUT, get_via, launch, reef_bin, wait_stored};

/// 60 KiB: one fits in the 100 KiB quota below, two do not.
const SIZE: u64 = 60 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_quota_is_served_but_not_stored() {
    // The test origin listens on 127.0.0.1, so that host is the service.
    let net = launch(1, &["--quota", "127.0.0.1=100KiB"]).await;
    let node = net.http(0);
    let origin = &net.testnet.origin;

    let first = format!("/bytes/{SIZE}");
    let got = get_via(node, &origin.url(&first)).await;
    assert_eq!((got.status.as_u16(), got.header("x-cache")), (200, "MISS"));
    assert_eq!(got.body, expected_body(&first, SIZE));
    wait_stored(&net, 0, 1).await;
    let got = get_via(node, &origin.url(&first)).await;
    assert_eq!(got.header("x-cache"), "HIT");

    // Another 60 KiB of the same service would make 120 KiB.
    let second = format!("/maxage/3600/{SIZE}");
    let got = get_via(node, &origin.url(&second)).await;
    assert_eq!((got.status.as_u16(), got.header("x-cache")), (200, "MISS"));
    assert_eq!(got.body, expected_body(&second, SIZE));
    let admin = &net.testnet.nodes[0];
    admin
        .wait_status("quota refusal", JOIN_TIMEOUT, |s| {
            s["quotas"]["127.0.0.1"]["rejected"] == 1
        })
        .await
        .expect("the refusal is counted");
    let s = admin.status().await.expect("status");
    let q = &s["quotas"]["127.0.0.1"];
    assert_eq!(q["quota"], 100 * 1024, "{s}");
    assert_eq!(q["bytes"], SIZE, "{s}");
    assert_eq!(q["objects"], 1, "{s}");
    assert_eq!(s["cache"]["objects"], 1, "{s}");

    // Not stored: the next request goes to the origin again, and is refused again.
    let got = get_via(node, &origin.url(&second)).await;
    assert_eq!(got.header("x-cache"), "MISS");
    assert_eq!(got.body, expected_body(&second, SIZE));
    assert_eq!(origin.hits(&second), 2);
    let s = admin.status().await.expect("status");
    assert_eq!(s["quotas"]["127.0.0.1"]["rejected"], 2, "{s}");
    // What was stored stays.
    assert_eq!(
        get_via(node, &origin.url(&first)).await.header("x-cache"),
        "HIT"
    );
    assert_eq!(origin.hits(&first), 1);
}

#[test]
fn bad_quotas_exit_with_code_2_and_say_why() {
    for (flag, says) in [
        ("127.0.0.1=lots", "lots"),
        ("127.0.0.1", "HOST=SIZE"),
        ("img.example.com:8080=1GiB", "port"),
    ] {
        let out = Command::new(reef_bin())
            .args(["run", "--quota", flag])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{flag}: {stderr}");
    }
    let config = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(
        config.path(),
        "[services.\"img.example.com\"]\nquota = \"2 parsecs\"\n",
    )
    .expect("write");
    let out = Command::new(reef_bin())
        .arg("run")
        .arg("--config")
        .arg(config.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("img.example.com") && stderr.contains("parsecs"),
        "{stderr}"
    );
}
