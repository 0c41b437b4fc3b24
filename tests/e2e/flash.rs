//! The flash-crowd experiment end to end, small: both runs happen and everything the report
//! promises is written.

use std::time::Duration;

use reef_testnet::flash::{Durations, FlashOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_flash_crowd_writes_its_series_plots_and_summary() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("out");
    let opts = FlashOptions {
        bin: crate::support::reef_bin(),
        dir: work.path().join("nodes"),
        out: out.clone(),
        providers: 2,
        nodes_per_provider: 1,
        primary_link: 250_000,
        peer_link: 2_500_000,
        origin_link: 5_000_000,
        object_size: 10_000,
        catalogue: 50,
        zipf: 0.9,
        baseline: 0.5,
        surge: 3.0,
        schedule: Durations {
            warmup: Duration::from_secs(2),
            ramp: Duration::from_secs(1),
            hold: Duration::from_secs(4),
            calm: Duration::from_secs(6),
        },
        high_watermark: 0.6,
        low_watermark: 0.3,
        trigger_window_s: 1.0,
        cooldown_s: 2.0,
        ceiling: Some(0.8),
        seed: 7,
        command: "reef-testnet flash (test)".into(),
    };
    let summary = run(&opts).await.expect("the experiment runs");
    for name in [
        "with-peering.csv",
        "without-peering.csv",
        "summary.md",
        "latency-p95.svg",
        "errors.svg",
        "throughput.svg",
        "origin.svg",
        "utilisation.svg",
    ] {
        let path = out.join(name);
        let len = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        assert!(len > 0, "{name} is empty");
    }
    let csv = std::fs::read_to_string(out.join("with-peering.csv")).expect("csv");
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.starts_with("t_s,phase,offered_rps,ok_rps"))
    );
    // A row per second of the schedule at least.
    assert!(lines.count() >= 12, "{csv}");
    assert!(summary.contains("| during the surge's hold | with peering | without peering |"));
    assert!(summary.contains("origin requests per object asked"));
    assert!(
        summary.contains("serve at most 0.8× their capacity"),
        "{summary}"
    );
    assert!(
        summary.contains("of which refused at once, 503"),
        "{summary}"
    );
}
