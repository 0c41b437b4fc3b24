//! The `reef` command line: `id`, `fetch`, and exit codes for bad input.

use std::process::Command;

use reef_testnet::origin::expected_body;

use crate::support::{launch, reef_bin};

#[test]
fn id_prints_a_stable_peer_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = || {
        let out = Command::new(reef_bin())
            .arg("id")
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    };
    let first = run();
    assert!(first.starts_with("12D3Koo"), "{first}");
    assert_eq!(run(), first);
}

#[test]
fn bad_input_exits_with_code_2_and_says_why() {
    let cases: &[&[&str]] = &[
        &["fetch", "ftp://x/y", "--via", "http://127.0.0.1:1"],
        &["fetch", "http://x/y", "--via", "https://127.0.0.1:1"],
        &["run", "--cache-size", "lots"],
        &["run", "--capacity-rps", "0"],
        &["run", "--capacity-mbps", "fast"],
        &[
            "run",
            "--bootstrap",
            "not-a-multiaddr",
            "--data-dir",
            "/tmp/reef-e2e-unused",
        ],
        &["run", "--no-such-flag"],
    ];
    for args in cases {
        let out = Command::new(reef_bin()).args(*args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?} says why");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let config = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(config.path(), "colour = 'blue'\n").expect("write");
    let out = Command::new(reef_bin())
        .arg("run")
        .arg("--config")
        .arg(config.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_prints_the_body_or_writes_a_file_and_tells_the_source() {
    let net = launch(2, &[]).await;
    let path = "/bytes/3000";
    let url = net.testnet.origin.url(path);
    let via = format!("http://{}", net.http(0));
    let out = tokio::process::Command::new(reef_bin())
        .args(["fetch", &url, "--via", &via, "-v"])
        .output()
        .await
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, expected_body(path, 3000));
    assert!(String::from_utf8_lossy(&out.stderr).contains("source=origin"));
    crate::support::wait_announced(&net, 0, 1).await;

    let file = net.dir.path().join("out.bin");
    let via1 = format!("http://{}", net.http(1));
    let out = tokio::process::Command::new(reef_bin())
        .args(["fetch", &url, "--via", &via1, "-v", "-o"])
        .arg(&file)
        .output()
        .await
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read(&file).expect("file"),
        expected_body(path, 3000)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("source=peer"));

    let out = tokio::process::Command::new(reef_bin())
        .args([
            "fetch",
            &net.testnet.origin.url("/status/404"),
            "--via",
            &via,
        ])
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "a 404 is a failed fetch");
}
