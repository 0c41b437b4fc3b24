//! Short-term arrangements: negotiated when a surge puts the primary over its watermark,
//! watched while they run, disbanded and settled when the surge is over or the peer fails.

use std::time::{Duration, Instant};

use super::{admin_json, arrangements, short_term, surge, wait_arrangement, wait_settled};
use crate::services::{VIDEO, get_service, wait_published};
use crate::support::{Net, launch_configured};

/// p0 is the primary, made for 10 req/s and buying (watermarks 0.5 / 0.2, so its relief
/// target is 0.35); p1 and p2 offer capacity in p0's region, p1 cheaper. `p1_extra` is added
/// to p1's config; p2 lends `p2_lends` req/s.
fn negotiating(p1_extra: &str, p2_lends: u32) -> [String; 3] {
    let offer = |price: &str, lends: u32| {
        format!(
            "[offer]\nreq_per_s = {lends}\nmbit_per_s = 1000\nregions = [\"r0\", \"r1\"]\nprice_per_gb = {price}\nmin_duration_s = 60\nmax_duration_s = 3600\n"
        )
    };
    let primary = format!(
        "capacity_rps = 10\n{VIDEO}\n[peering]\nhigh_watermark = 0.5\nlow_watermark = 0.2\ntrigger_window_s = 1\ncooldown_s = 4\nmax_price_per_gb = 0.05\nshare = 1.0\nduration_s = 600\n"
    );
    [
        primary,
        format!("{}{p1_extra}", offer("0.02", 1000)),
        offer("0.03", p2_lends),
    ]
}

/// Clients a second in a surge: ten times what p0 is made for.
const RATE: u32 = 100;

/// Generous bound for anything the mediator does in a few seconds on a quiet machine.
const WITHIN: Duration = Duration::from_secs(40);

async fn launch() -> Net {
    launch_with("", 1000).await
}

async fn launch_with(p1_extra: &str, p2_lends: u32) -> Net {
    let configs = negotiating(p1_extra, p2_lends);
    let net = launch_configured(3, 3, &[&configs[0], &configs[1], &configs[2]]).await;
    wait_published(&net).await;
    wait_peers_known(&net).await;
    net
}

/// Until the primary's discovery finds both offers in its region and its load table lists
/// every node: a surge that starts before that arranges with whichever peer the primary
/// knows to be alive, not necessarily the cheapest.
async fn wait_peers_known(net: &Net) {
    let started = Instant::now();
    loop {
        let found = admin_json(&net.testnet.nodes[0], "/api/offers?region=r0").await["offers"]
            .as_array()
            .map_or(0, Vec::len);
        let listed = admin_json(&net.testnet.nodes[0], "/api/status").await["load"]["nodes"]
            .as_u64()
            .unwrap_or(0);
        if found >= 2 && listed >= 3 {
            return;
        }
        assert!(
            started.elapsed() < WITHIN,
            "offers found: {found}, nodes listed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn provider_id(net: &Net, node: usize) -> serde_json::Value {
    net.testnet.nodes[node].status().await.expect("status")["provider"]["id"].clone()
}

/// Waits until node `peer` has served node 0's service under an active short-term
/// arrangement; that arrangement as `peer` lists it, and the time since `since`. The primary
/// is waited on first, so that a surge that never arranges shows the primary's log.
async fn until_peer_serves(
    net: &Net,
    peer: usize,
    since: Instant,
) -> (serde_json::Value, Duration) {
    wait_arrangement(&net.testnet.nodes[0], WITHIN, short_term("active")).await;
    let started = Instant::now();
    let serving = loop {
        let all = arrangements(&net.testnet.nodes[peer]).await;
        if let Some(a) = all["arrangements"].as_array().and_then(|l| {
            l.iter()
                .find(|a| short_term("active")(a) && a["served"]["requests"].as_u64() >= Some(1))
        }) {
            break a.clone();
        }
        assert!(
            started.elapsed() < WITHIN,
            "node {peer} serves nothing: {all}\nthe primary's: {}\n{}",
            arrangements(&net.testnet.nodes[0]).await,
            net.testnet.nodes[0].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (serving, since.elapsed())
}

/// `status.load.own` of node `i`.
async fn own_load(net: &Net, i: usize) -> serde_json::Value {
    net.testnet.nodes[i].status().await.expect("status")["load"]["own"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_arranges_with_the_cheapest_peer_relieves_the_primary_and_the_calm_disbands_it() {
    let net = launch().await;
    let crowd = surge(net.http(0), RATE);
    let (at_peer, took) = until_peer_serves(&net, 1, Instant::now()).await;
    println!("surge → first request served by the peer provider: {took:?}");
    if let Ok(log) = std::fs::read_to_string(net.testnet.nodes[0].log_path())
        && let Some(line) = log.lines().find(|l| l.contains("negotiation_ms"))
    {
        println!("{line}");
    }
    let id = at_peer["id"].clone();
    let at_primary = wait_arrangement(&net.testnet.nodes[0], WITHIN, |a| a["id"] == id).await;
    assert_eq!(at_primary["role"], "primary");
    assert_eq!(
        at_primary["peer"],
        provider_id(&net, 1).await,
        "the cheaper offer wins: {at_primary}"
    );
    // Propose and commit: two requests from the primary's agent.
    let sent = net.testnet.nodes[0].status().await.expect("status")["peering"]["requests_sent"]
        .as_u64()
        .unwrap_or(0);
    assert!(sent >= 2, "requests_sent {sent}");
    // p2 is no party.
    let p2 = arrangements(&net.testnet.nodes[2]).await;
    assert_eq!(p2["arrangements"], serde_json::json!([]), "{p2}");

    // While the surge goes on, the primary serves under its high watermark: demand stays
    // high, what it serves itself falls.
    let started = Instant::now();
    let relieved = loop {
        let own = own_load(&net, 0).await;
        let (served, demand) = (
            own["utilisation_permille"].as_u64().unwrap_or(u64::MAX),
            own["demand_permille"].as_u64().unwrap_or(0),
        );
        if served < 500 && demand >= 500 {
            break own;
        }
        assert!(started.elapsed() < WITHIN, "never relieved: {own}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("relieved: {relieved}");
    // The probes of the primary see the peer keep the SLA.
    let sla = wait_arrangement(&net.testnet.nodes[0], WITHIN, |a| {
        a["id"] == id && a["sla"]["samples"].as_u64().unwrap_or(0) >= 3
    })
    .await["sla"]
        .clone();
    assert_eq!(sla["breach"], serde_json::Value::Null, "{sla}");
    crowd.seen(|s| {
        assert!(s.via_peer >= 1);
        assert!(
            s.failures.is_empty(),
            "clients saw errors: {:?}",
            s.failures
        );
    });

    // The surge is over: after the cool-down the primary disbands, and the peer learns it.
    drop(crowd);
    let ended = wait_arrangement(&net.testnet.nodes[0], WITHIN, short_term("ended")).await;
    assert_eq!(
        (&ended["id"], &ended["end_reason"]),
        (&id, &"low_load".into())
    );
    let ended_at_peer = wait_arrangement(&net.testnet.nodes[1], WITHIN, short_term("ended")).await;
    assert_eq!(ended_at_peer["id"], id);
    // Without an arrangement the peer's node refuses the primary's service.
    let refused = get_service(net.http(1), "video.example", "/bytes/10").await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    // Both ledgers agree on one settlement: what the peer's node served.
    let primary_ledger = wait_settled(&net.testnet.nodes[0], &id).await;
    let peer_ledger = wait_settled(&net.testnet.nodes[1], &id).await;
    assert_eq!(primary_ledger, peer_ledger);
    let served =
        wait_arrangement(&net.testnet.nodes[1], WITHIN, short_term("ended")).await["served"]
            .clone();
    assert_eq!(
        peer_ledger["bytes"], served["bytes"],
        "{peer_ledger} vs {served}"
    );
    assert_eq!(peer_ledger["requests"], served["requests"]);
    assert!(served["bytes"].as_u64().unwrap_or(0) >= 2000);
    // bytes × 0.02 per GB, in millionths, rounded down.
    let bytes = served["bytes"].as_u64().unwrap_or(0);
    assert_eq!(peer_ledger["amount_micros"], bytes * 20_000 / 1_000_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_policy_refuses_the_primary_is_passed_over() {
    // p2 lends less than p0 asks for: it counters, and p0 takes the counter.
    let net = launch_with("[peering]\nrefuse = [\"{provider:0}\"]\n", 40).await;
    let _crowd = surge(net.http(0), RATE);
    let (at_peer, _) = until_peer_serves(&net, 2, Instant::now()).await;
    assert_eq!(
        at_peer["primary"],
        provider_id(&net, 0).await,
        "p1 refuses p0, so p2: {at_peer}"
    );
    // At most what p2 lends (less if an earlier arrangement still took part of it).
    let lent = at_peer["req_per_s"].as_u64().unwrap_or(0);
    assert!((1..=40).contains(&lent), "the counter-proposal: {at_peer}");
    assert_eq!(
        arrangements(&net.testnet.nodes[1]).await["arrangements"],
        serde_json::json!([])
    );

    // The operator lists it and ends it with the CLI; the peer's node learns it.
    let admin = net.testnet.nodes[0].runtime().admin.to_string();
    let id = at_peer["id"].as_str().expect("id").to_string();
    let reef = |args: &[&str]| {
        std::process::Command::new(crate::support::reef_bin())
            .args(args)
            .output()
            .expect("reef runs")
    };
    let listed = reef(&["peering", "list", "--admin", &admin]);
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.contains(&id) && listed.contains("short_term"),
        "{listed}"
    );
    let bad = reef(&["peering", "end", "not-an-id", "--admin", &admin]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not-an-id"));
    let ended = reef(&["peering", "end", &id, "--admin", &admin]);
    assert!(
        ended.status.success(),
        "{}",
        String::from_utf8_lossy(&ended.stderr)
    );
    let again = reef(&["peering", "end", &id, "--admin", &admin]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
    let at_peer = wait_arrangement(&net.testnet.nodes[2], WITHIN, |a| {
        a["id"] == id.as_str() && a["status"] == "ended"
    })
    .await;
    assert_eq!(at_peer["end_reason"], "operator");
}

/// Clients may fail for this long after the peer's node dies: until the primary's next probe
/// (every second) finds it dead and stops sending them there.
const REDIRECT_WINDOW: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mediator_resumes_and_a_dead_peer_is_replaced() {
    let mut net = launch().await;
    let crowd = surge(net.http(0), RATE);
    let (first, _) = until_peer_serves(&net, 1, Instant::now()).await;
    let id = first["id"].clone();
    // The primary holds the peer's receipts (every 5 s) in its ledger's open account.
    let open_account = |ledger: &serde_json::Value| {
        ledger["open"]
            .as_array()
            .and_then(|l| l.iter().find(|a| a["id"] == id).cloned())
    };
    let started = Instant::now();
    let before = loop {
        if let Some(account) = open_account(&admin_json(&net.testnet.nodes[0], "/api/ledger").await)
        {
            break account;
        }
        assert!(started.elapsed() < WITHIN, "no receipt reached the primary");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(crowd);

    // The mediator node restarts: the arrangement is still active and its ledger kept.
    let bootstrap = net.testnet.bootstrap_addrs(0);
    net.testnet.nodes[0]
        .restart(bootstrap)
        .await
        .expect("restart");
    let kept = wait_arrangement(&net.testnet.nodes[0], WITHIN, |a| a["id"] == id).await;
    assert_eq!(kept["status"], "active", "{kept}");
    let after = open_account(&admin_json(&net.testnet.nodes[0], "/api/ledger").await)
        .expect("the open account survived the restart");
    assert!(
        after["bytes"].as_u64() >= before["bytes"].as_u64(),
        "{after} vs {before}"
    );

    // The surge goes on, the peer dies mid-arrangement: the mediator re-arranges with p2, and
    // clients see errors only while redirects still point at the dead node. Under the renewed
    // surge the mediator may grow the arrangement, replacing it with a larger one with p1:
    // p1 is killed while it serves whichever is active then.
    let p1 = provider_id(&net, 1).await;
    let crowd = surge(net.http(0), RATE);
    let served = |a: &serde_json::Value| a["served"]["requests"].as_u64().unwrap_or(0);
    let serving = wait_arrangement(&net.testnet.nodes[1], WITHIN, short_term("active")).await;
    let served_before = served(&serving);
    wait_arrangement(&net.testnet.nodes[1], WITHIN, |a| {
        short_term("active")(a) && served(a) > served_before
    })
    .await;
    let killed = Instant::now();
    net.testnet.nodes[1].kill();
    let (second, took) = until_peer_serves(&net, 2, killed).await;
    println!("re-arranged with p2 {took:?} after the kill");
    // The primary ends what it had with p1 (a replacement is made before the old one ends).
    let started = Instant::now();
    let with_p1 = loop {
        let all = arrangements(&net.testnet.nodes[0]).await;
        let with_p1: Vec<serde_json::Value> = all["arrangements"]
            .as_array()
            .map(|l| l.iter().filter(|a| a["peer"] == p1).cloned().collect())
            .unwrap_or_default();
        if with_p1.iter().all(|a| a["status"] == "ended") {
            break with_p1;
        }
        assert!(started.elapsed() < WITHIN, "{with_p1:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(with_p1.iter().all(|a| a["id"] != second["id"]));
    // The one p1 was serving ended for its death (a breach of the SLA's availability, or its
    // reports gone from the load table), or was replaced by the larger one the still-swamped
    // primary arranged with p2 first; any before it were replaced by growth.
    assert!(
        with_p1
            .iter()
            .all(|a| ["sla_breach", "peer_gone", "replaced"]
                .contains(&a["end_reason"].as_str().unwrap_or(""))),
        "{with_p1:?}"
    );
    crowd.seen(|s| {
        let late: Vec<_> = s
            .failures
            .iter()
            .filter(|(at, _)| at.saturating_duration_since(killed) > REDIRECT_WINDOW)
            .collect();
        println!(
            "{} client errors after the kill, the last {:?} after it",
            s.failures.len(),
            s.failures
                .last()
                .map(|(at, _)| at.saturating_duration_since(killed))
        );
        assert!(
            late.is_empty(),
            "errors after the redirect window: {late:?}"
        );
        let before_kill = s.failures.iter().filter(|(at, _)| *at < killed).count();
        assert_eq!(before_kill, 0, "{:?}", s.failures);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_breaches_the_sla_is_replaced_and_settles_when_it_is_back() {
    let net = launch().await;
    let p1 = provider_id(&net, 1).await;
    let crowd = surge(net.http(0), RATE);
    until_peer_serves(&net, 1, Instant::now()).await;
    // The primary's probes have seen p1 answer: it is warm, and judged from now on. Growth
    // may have replaced the first arrangement with a larger one with p1 by now: the one
    // active at the freeze is the one to follow (a peer failing probes is never grown).
    let id = wait_arrangement(&net.testnet.nodes[0], WITHIN, |a| {
        short_term("active")(a) && a["peer"] == p1 && a["sla"]["samples"].as_u64().unwrap_or(0) >= 1
    })
    .await["id"]
        .clone();

    // p1's node hangs (SIGSTOP): alive to the kernel, silent to everyone. The primary's
    // probes time out, the SLA's availability breaks, and p2 takes over.
    net.testnet.nodes[1].freeze();
    let frozen = Instant::now();
    let ended = wait_arrangement(&net.testnet.nodes[0], WITHIN, |a| {
        a["id"] == id && a["status"] == "ended"
    })
    .await;
    println!("SLA breach noticed {:?} after the freeze", frozen.elapsed());
    assert_eq!(ended["end_reason"], "sla_breach", "{ended}");
    let (second, took) = until_peer_serves(&net, 2, frozen).await;
    println!("re-arranged with p2 {took:?} after the freeze");
    assert_ne!(second["id"], id);
    drop(crowd);

    // p1 comes back: it learns the end, and both ledgers settle on what it served.
    net.testnet.nodes[1].thaw();
    let primary_ledger = wait_settled(&net.testnet.nodes[0], &id).await;
    let peer_ledger = wait_settled(&net.testnet.nodes[1], &id).await;
    assert_eq!(primary_ledger, peer_ledger);
    let served = wait_arrangement(&net.testnet.nodes[1], WITHIN, |a| {
        a["id"] == id && a["status"] == "ended"
    })
    .await["served"]
        .clone();
    assert_eq!(
        peer_ledger["bytes"], served["bytes"],
        "{peer_ledger} vs {served}"
    );
    // The breach counts against p1 when p0 next looks for a peer.
    let all = arrangements(&net.testnet.nodes[0]).await;
    let with_p1 = all["arrangements"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|a| a["peer"] == p1).count());
    let record = all["peer_records"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["provider"] == p1).cloned())
        .unwrap_or_default();
    assert_eq!(
        (&record["arrangements"], &record["breaches"]),
        (&with_p1.into(), &1.into()),
        "{all}"
    );
}
