//! In-process overlays over real loopback sockets (127.0.0.1, port 0, mDNS off).
//!
//! Tests wait on conditions with deadlines; they never sleep to synchronise.

mod support;

use std::time::{Duration, Instant};

use support::{addr_of, config, eventually, init_tracing};

use anyhow::{Context, Result, bail, ensure};
use reef_overlay::{
    Acceptance, Client, Error, GossipMessage, Keypair, Multiaddr, PeerId, Published,
};
use reef_proto::ContentKey;
use reef_proto::records::Membership;

/// Joining over loopback takes well under a second; generous for a loaded 2-core machine.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for conditions that depend on DHT propagation.
const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

async fn start(name: &str, bootstrap: Vec<Multiaddr>) -> Result<Client> {
    Ok(reef_overlay::spawn(config(Keypair::generate_ed25519(), name, bootstrap, None)).await?)
}

fn key(n: u8) -> ContentKey {
    ContentKey::from_bytes(*blake3::hash(&[n]).as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_join_provide_and_find() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    let a_quic = addr_of(&a, "quic-v1").await?;
    let a_tcp = addr_of(&a, "tcp").await?;
    let b = start("b", vec![a_quic.clone()]).await?;
    let c = start("c", vec![a_quic]).await?;
    let d = start("d", vec![a_tcp]).await?;
    let nodes = [&a, &b, &c, &d];

    for node in nodes {
        node.wait_joined(JOIN_TIMEOUT).await.context("joining")?;
    }
    for node in nodes {
        let status = node.status().await?;
        ensure!(status.joined);
        ensure!(status.peer_id == node.local_peer_id().to_string());
        ensure!(
            !status.connected_peers.is_empty(),
            "{} has no peers",
            status.peer_id
        );
        ensure!(status.routing_table_size > 0);
        ensure!(status.listen_addrs.len() == 2, "{:?}", status.listen_addrs);
        for addr in &status.listen_addrs {
            ensure!(
                addr.ends_with(&format!("/p2p/{}", status.peer_id)),
                "{addr}"
            );
            ensure!(
                !addr.contains("/tcp/0/") && !addr.contains("/udp/0/"),
                "unbound port in {addr}"
            );
        }
    }
    eventually("a to see all three peers", CONDITION_TIMEOUT, || async {
        Ok((a.status().await?.connected_peers.len() >= 3).then_some(()))
    })
    .await?;

    // B holds a key; D finds B with B's own record.
    let k = key(1);
    b.provide(k).await?;
    let holders = eventually("d to find b as a holder", CONDITION_TIMEOUT, || async {
        let holders = d.find_holders(k, 5).await?;
        Ok((!holders.is_empty()).then_some(holders))
    })
    .await?;
    ensure!(holders.len() == 1, "{holders:?}");
    let holder = &holders[0];
    ensure!(holder.peer == b.local_peer_id());
    ensure!(holder.record.http == "b.test:8080");
    ensure!(holder.record.region == "region-of-b");
    ensure!(holder.record.capacity.mbit_per_s == 200);
    // No certificate: B is a provider of its own.
    ensure!(
        matches!(holder.membership, Membership::Independent { .. }),
        "{:?}",
        holder.membership
    );
    ensure!(holder.record.peer_id == b.local_peer_id().to_bytes());
    ensure!(!holder.record.listen_addrs.is_empty());

    // The holder never lists itself.
    ensure!(b.find_holders(k, 5).await?.is_empty());

    // Two holders.
    c.provide(k).await?;
    eventually("a to find b and c", CONDITION_TIMEOUT, || async {
        let holders = a.find_holders(k, 5).await?;
        Ok((holders.len() == 2).then_some(()))
    })
    .await?;

    // A key nobody provides: an empty answer, quickly.
    let started = Instant::now();
    ensure!(d.find_holders(key(2), 5).await?.is_empty());
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // Records of other nodes resolve and verify; unknown peers have none.
    let record = eventually("d to resolve c's record", CONDITION_TIMEOUT, || async {
        Ok(d.node_record(c.local_peer_id()).await?)
    })
    .await?;
    ensure!(record.record.region == "region-of-c");
    ensure!(record.peer == c.local_peer_id());
    ensure!(record.expires_at > record.issued_at);
    ensure!(d.node_record(PeerId::random()).await?.is_none());
    let own = a
        .node_record(a.local_peer_id())
        .await?
        .context("own record")?;
    ensure!(own.record.region == "region-of-a");

    // Unprovide is accepted (withdrawal from other nodes: see
    // unprovide_withdraws_the_record_from_other_nodes).
    b.unprovide(k).await?;

    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rejoins_from_the_peers_file() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let peers_file = dir.path().join("peers.json");
    let a = start("a", vec![]).await?;
    let a_addr = addr_of(&a, "quic-v1").await?;

    let keypair = Keypair::generate_ed25519();
    let x = reef_overlay::spawn(config(
        keypair.clone(),
        "x",
        vec![a_addr],
        Some(peers_file.clone()),
    ))
    .await?;
    x.wait_joined(JOIN_TIMEOUT).await?;
    // Identify has told X where A listens once A's record of X is in A's table both ways.
    eventually(
        "x to learn a's listen addresses",
        CONDITION_TIMEOUT,
        || async { Ok((x.status().await?.routing_table_size > 0).then_some(())) },
    )
    .await?;
    x.shutdown().await;

    let saved = std::fs::read_to_string(&peers_file)?;
    ensure!(
        saved.contains(&a.local_peer_id().to_string()),
        "peers file: {saved}"
    );

    // Same key, same peers file, no bootstrap addresses.
    let x = reef_overlay::spawn(config(keypair.clone(), "x", vec![], Some(peers_file))).await?;
    ensure!(x.local_peer_id() == keypair.public().to_peer_id());
    x.wait_joined(JOIN_TIMEOUT)
        .await
        .context("rejoining from the peers file")?;
    let status = x.status().await?;
    ensure!(
        status
            .connected_peers
            .contains(&a.local_peer_id().to_string()),
        "{status:?}"
    );
    x.shutdown().await;
    a.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_later_gets_the_records_it_is_now_closest_to() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    let b = start("b", vec![addr_of(&a, "quic-v1").await?]).await?;
    a.wait_joined(JOIN_TIMEOUT).await?;
    b.wait_joined(JOIN_TIMEOUT).await?;
    // A and B published their records while the overlay was the two of them. C comes later
    // and is, in an overlay of three, among the closest to every key.
    let c = start("c", vec![addr_of(&b, "quic-v1").await?]).await?;
    c.wait_joined(JOIN_TIMEOUT).await?;
    eventually(
        "a and b to hand c their records",
        CONDITION_TIMEOUT,
        || async {
            // Its own, A's and B's.
            Ok((c.status().await?.dht_records >= 3).then_some(()))
        },
    )
    .await?;
    // With A and B gone, C still resolves A: from the copy it was handed, not from A.
    let a_peer = a.local_peer_id();
    a.shutdown().await;
    b.shutdown().await;
    let record = c.node_record(a_peer).await?.context("c has a's record")?;
    ensure!(record.record.http == "a.test:8080");
    c.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_the_loop() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    let other = a.clone();
    a.status().await?;
    a.shutdown().await;

    ensure!(matches!(other.status().await, Err(Error::Stopped)));
    ensure!(matches!(a.provide(key(4)).await, Err(Error::Stopped)));
    ensure!(matches!(a.unprovide(key(4)).await, Err(Error::Stopped)));
    ensure!(matches!(
        a.find_holders(key(4), 3).await,
        Err(Error::Stopped)
    ));
    ensure!(matches!(
        a.node_record(PeerId::random()).await,
        Err(Error::Stopped)
    ));
    ensure!(matches!(
        a.wait_joined(Duration::from_secs(1)).await,
        Err(Error::Stopped)
    ));
    // A second shutdown is harmless.
    a.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn lone_node_is_not_joined() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    ensure!(matches!(
        a.wait_joined(Duration::from_millis(300)).await,
        Err(Error::Timeout)
    ));
    ensure!(a.find_holders(key(5), 3).await?.is_empty());
    a.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn bootstrap_addresses_must_name_the_peer() -> Result<()> {
    let cfg = config(
        Keypair::generate_ed25519(),
        "a",
        vec!["/ip4/127.0.0.1/tcp/4001".parse()?],
        None,
    );
    match reef_overlay::spawn(cfg).await {
        Err(Error::BootstrapAddr(_)) => Ok(()),
        other => bail!(
            "expected BootstrapAddr, got {:?}",
            other.map(|c| c.local_peer_id())
        ),
    }
}

#[tokio::test]
async fn unbindable_listen_address_is_an_error() -> Result<()> {
    let mut cfg = config(Keypair::generate_ed25519(), "a", vec![], None);
    // TEST-NET-3 is not assigned to any local interface.
    cfg.listen = vec!["/ip4/203.0.113.1/tcp/0".parse()?];
    match reef_overlay::spawn(cfg).await {
        Err(Error::Listen(_)) => Ok(()),
        other => bail!(
            "expected Listen, got {:?}",
            other.map(|c| c.local_peer_id())
        ),
    }
}

/// A bootstrap peer given with two addresses, the first of them dead, is reached through the
/// second: its addresses go into one dial, not one dial each (where the second was refused
/// while the first was in progress, and the peer was never reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_is_reached_through_any_of_its_addresses() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    let a_quic = addr_of(&a, "quic-v1").await?;
    // A TCP port nobody listens on any more, named as A's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dead: Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{closed}/p2p/{}", a.local_peer_id()).parse()?;
    let b = start("b", vec![dead, a_quic]).await?;
    b.wait_joined(JOIN_TIMEOUT)
        .await
        .context("joining through the bootstrap peer's second address")?;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_once_an_unreachable_bootstrap_peer_comes_up() -> Result<()> {
    init_tracing();
    // Learn a free port and identity for A, then take A down.
    let a_key = Keypair::generate_ed25519();
    let a = reef_overlay::spawn(config(a_key.clone(), "a", vec![], None)).await?;
    let a_quic = addr_of(&a, "quic-v1").await?;
    a.shutdown().await;

    let b = start("b", vec![a_quic.clone()]).await?;
    ensure!(matches!(
        b.wait_joined(Duration::from_millis(700)).await,
        Err(Error::Timeout)
    ));

    // A comes back on the same address; B's join retries find it.
    let mut a_config = config(a_key, "a", vec![], None);
    let mut base = a_quic.clone();
    base.pop();
    a_config.listen = vec![base];
    let a = reef_overlay::spawn(a_config).await?;
    b.wait_joined(JOIN_TIMEOUT)
        .await
        .context("joining after the bootstrap peer came up")?;
    a.wait_joined(JOIN_TIMEOUT).await?;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn dropping_every_client_ends_the_loop() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let peers_file = dir.path().join("peers.json");
    let a = reef_overlay::spawn(config(
        Keypair::generate_ed25519(),
        "a",
        vec![],
        Some(peers_file.clone()),
    ))
    .await?;
    let b = a.clone();
    drop(a);
    b.status().await?;
    ensure!(
        !peers_file.exists(),
        "a lone node saves only on its 30 s tick or when it stops"
    );
    drop(b);
    // The loop saves the peers file as it ends.
    eventually("the loop to end", CONDITION_TIMEOUT, || async {
        Ok(peers_file.exists().then_some(()))
    })
    .await?;
    Ok(())
}

/// Receives the next message on `rx`, reporting `Accept` for it (so it may travel on).
async fn next_accepted(
    node: &Client,
    rx: &mut tokio::sync::mpsc::Receiver<GossipMessage>,
) -> Result<GossipMessage> {
    let message = tokio::time::timeout(CONDITION_TIMEOUT, rx.recv())
        .await
        .context("waiting for a gossip message")?
        .context("subscription closed")?;
    ensure!(
        node.report(message.handle.clone(), Acceptance::Accept)
            .await?
    );
    Ok(message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_reach_the_subscribers_on_other_nodes() -> Result<()> {
    init_tracing();
    const TOPIC: &str = "reef/test/1";
    let a = start("a", vec![]).await?;
    let a_addr = addr_of(&a, "quic-v1").await?;
    let b = start("b", vec![a_addr.clone()]).await?;
    let c = start("c", vec![a_addr]).await?;
    for node in [&a, &b, &c] {
        node.wait_joined(JOIN_TIMEOUT).await?;
    }
    // Nobody listens yet: nothing to tell, and that is not an error.
    ensure!(a.publish(TOPIC, b"early".to_vec()).await? == Published::NoPeers);

    let mut at_b = b.subscribe(TOPIC, 8).await?;
    let mut at_c = c.subscribe(TOPIC, 8).await?;
    ensure!(matches!(b.subscribe(TOPIC, 8).await, Err(Error::Gossip(_))));

    // Subscriptions travel to A asynchronously: publish until both have heard one message.
    let mut sent = 0u32;
    let mut heard_b = None;
    let mut heard_c = None;
    let started = Instant::now();
    while heard_b.is_none() || heard_c.is_none() {
        ensure!(
            started.elapsed() < CONDITION_TIMEOUT,
            "b heard {heard_b:?}, c heard {heard_c:?}"
        );
        sent += 1;
        a.publish(TOPIC, format!("hello {sent}").into_bytes())
            .await?;
        let poll = Duration::from_millis(100);
        for (rx, heard, node) in [(&mut at_b, &mut heard_b, &b), (&mut at_c, &mut heard_c, &c)] {
            if heard.is_none()
                && let Ok(Some(m)) = tokio::time::timeout(poll, rx.recv()).await
            {
                ensure!(node.report(m.handle.clone(), Acceptance::Accept).await?);
                *heard = Some(m);
            }
        }
    }
    for m in [heard_b.as_ref(), heard_c.as_ref()].into_iter().flatten() {
        ensure!(m.source == a.local_peer_id(), "{m:?}");
        ensure!(m.topic == TOPIC);
        ensure!(String::from_utf8_lossy(&m.data).starts_with("hello "));
    }
    // Both are known subscribers now: one publish reaches both, byte for byte (after any
    // "hello" still on its way).
    ensure!(a.publish(TOPIC, b"one message".to_vec()).await? == Published::Sent);
    for (node, rx) in [(&b, &mut at_b), (&c, &mut at_c)] {
        let m = loop {
            let m = next_accepted(node, rx).await?;
            if !m.data.starts_with(b"hello ") {
                break m;
            }
        };
        ensure!(m.data == b"one message" && m.source == a.local_peer_id());
    }
    // The same bytes again within a minute are the same message to gossipsub.
    ensure!(matches!(
        a.publish(TOPIC, b"one message".to_vec()).await,
        Err(Error::Gossip(_))
    ));

    // A subscriber that does not keep up loses messages; they are counted, never queued
    // without bound, and the loop does not wait for it.
    drop(at_c);
    let mut slow = c.subscribe(TOPIC, 1).await?;
    let before = c.status().await?.gossip_dropped;
    let flood = std::sync::atomic::AtomicU64::new(0);
    eventually("c to drop a message", CONDITION_TIMEOUT, || async {
        let n = flood.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        a.publish(TOPIC, format!("flood {n}").into_bytes()).await?;
        Ok((c.status().await?.gossip_dropped > before).then_some(()))
    })
    .await?;
    ensure!(
        slow.try_recv().is_ok(),
        "the one queued message is still there"
    );

    for node in [&a, &b, &c] {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprovide_withdraws_the_record_from_other_nodes() -> Result<()> {
    init_tracing();
    let a = start("a", vec![]).await?;
    let a_addr = addr_of(&a, "quic-v1").await?;
    let b = start("b", vec![a_addr.clone()]).await?;
    let c = start("c", vec![a_addr]).await?;
    for node in [&a, &b, &c] {
        node.wait_joined(JOIN_TIMEOUT).await?;
    }
    let k = key(7);
    b.provide(k).await?;
    c.provide(k).await?;
    eventually("a to find b and c", CONDITION_TIMEOUT, || async {
        Ok((a.find_holders(k, 5).await?.len() == 2).then_some(()))
    })
    .await?;

    // kad's own stop_providing only forgets B's local record; the gossiped withdrawal makes
    // the nodes storing B's record drop it too, long before it would expire (4 h). C's record
    // for the same key stays: a withdrawal only ever removes its signer's records.
    b.unprovide(k).await?;
    eventually("b's record to be withdrawn", CONDITION_TIMEOUT, || async {
        let holders = a.find_holders(k, 5).await?;
        let peers: Vec<PeerId> = holders.iter().map(|h| h.peer).collect();
        Ok((peers == [c.local_peer_id()]).then_some(()))
    })
    .await?;
    eventually("c to stop finding b", CONDITION_TIMEOUT, || async {
        Ok(c.find_holders(k, 5).await?.is_empty().then_some(()))
    })
    .await?;
    for node in [&a, &b, &c] {
        node.shutdown().await;
    }
    Ok(())
}
