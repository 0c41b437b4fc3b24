//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, which
//! `tests/run.sh` installs) opens a node's admin address; the page must render the nodes
//! grouped by provider and the long-term arrangement, and a screenshot is saved under the
//! test's directory and copied to `target/e2e-screenshots/dashboard.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::peering::long_term::LONG_TERM;
use crate::services::{VIDEO, get_service, wait_published};
use crate::support::{launch_configured, reef_bin};

/// One browser run (start, load, a few seconds of the page's own time, exit).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// Until the page shows both nodes and the arrangement: load reports spread within seconds.
const RENDER_DEADLINE: Duration = Duration::from_secs(90);
/// The page's own time per run: its first poll answers in milliseconds, the rest is slack.
const VIRTUAL_TIME_MS: u32 = 3000;

fn chromium() -> PathBuf {
    let path = std::env::var_os("REEF_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium (tests/run.sh does: apt-get install chromium) \
         or point REEF_CHROMIUM at a Chromium",
        path.display()
    );
    path
}

/// Runs headless Chromium with the flags that work here (as root, offline, no GPU) and a
/// fresh profile; its stdout.
async fn browse(profile: &Path, args: &[String]) -> String {
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = tokio::time::timeout(BROWSER_TIMEOUT, cmd.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_nodes_by_provider_and_the_arrangement_in_a_browser() {
    let primary = format!("{VIDEO}{LONG_TERM}");
    let net = launch_configured(2, 2, &[&primary, LONG_TERM]).await;
    wait_published(&net).await;
    // A few seconds of traffic for the request mix: misses from the origin, then hits.
    for i in 0..30u64 {
        let path = format!("/bytes/{}", 2000 + i % 6);
        let got = get_service(net.http(0), "video.example", &path).await;
        assert_eq!(got.status, 200, "{}", got.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrangement = crate::peering::arrangements(&net.testnet.nodes[0]).await;
    let id = arrangement["arrangements"][0]["id"]
        .as_str()
        .expect("the long-term arrangement")
        .to_string();
    let peers: Vec<String> = net
        .testnet
        .nodes
        .iter()
        .map(|n| n.runtime().peer_id.clone())
        .collect();

    let url = format!("http://{}/", net.testnet.nodes[0].runtime().admin);
    let profile = net.dir.path().join("chromium-profile");
    let dump = [
        format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
        "--dump-dom".to_string(),
        url.clone(),
    ];
    let started = Instant::now();
    let dom = loop {
        let dom = browse(&profile, &dump).await;
        let rendered = dom.contains("data-ready=\"1\"")
            && dom.contains(&format!("data-arrangement=\"{id}\""))
            && peers
                .iter()
                .all(|p| dom.contains(&format!("data-peer=\"{p}\"")))
            && dom.contains("data-kind=\"arranged\"");
        if rendered {
            break dom;
        }
        assert!(
            started.elapsed() < RENDER_DEADLINE,
            "the dashboard never showed both nodes and the arrangement:\n{dom}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Both providers' groups, the arrangement's terms, the chart and the event.
    for want in [
        "data-provider=",
        ">p0 <",
        ">p1 <",
        "(this node)",
        "long-term",
        "primary (they serve us)",
        "video.example",
        "30%",
        "<svg",
        "class=\"area local\"",
        "long-term arrangement",
    ] {
        assert!(dom.contains(want), "{want:?} not in the page:\n{dom}");
    }

    let shot = net.dir.path().join("dashboard.png");
    browse(
        &profile,
        &[
            "--window-size=1280,1000".to_string(),
            format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
            format!("--screenshot={}", shot.display()),
            url,
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // Kept where a person (or CI) can look at it: target/e2e-screenshots/.
    let target = reef_bin()
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("e2e-screenshots"))
        .expect("target dir");
    std::fs::create_dir_all(&target).expect("screenshot dir");
    std::fs::copy(&shot, target.join("dashboard.png")).expect("copy screenshot");
}
