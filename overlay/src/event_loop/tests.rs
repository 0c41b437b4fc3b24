#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use libp2p::{
    Multiaddr, PeerId,
    identity::Keypair,
    kad::{self, RecordKey, store::RecordStore},
};
use reef_proto::ContentKey;
use reef_proto::records::{Capacity, NodeRecord, node_record_key, peer_id_bytes, seal};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::*;
use crate::behaviour::build_swarm;
use crate::node_records::signing_key;
use crate::validate::unix_ms;

fn local_info(http: &str) -> LocalInfo {
    LocalInfo {
        http: http.into(),
        region: "r".into(),
        capacity: Capacity::default(),
        cert: None,
    }
}

fn event_loop() -> EventLoop {
    let keypair = Keypair::generate_ed25519();
    let mut registry = libp2p::metrics::Registry::default();
    let swarm = build_swarm(
        keypair.clone(),
        false,
        crate::PEERING_REQUEST_TIMEOUT,
        &mut registry,
    )
    .unwrap();
    let (_tx, commands) = mpsc::channel(1);
    let (joined_tx, _rx) = watch::channel(false);
    EventLoop::new(
        swarm,
        Parts {
            signer: signing_key(&keypair).unwrap(),
            local_info: local_info("h:1"),
            metrics: Metrics::default(),
            commands,
            joined_tx,
            started: Instant::now(),
            peers_file: None,
            peering_timeout: crate::PEERING_REQUEST_TIMEOUT,
            keep_connections: crate::DEFAULT_KEEP_CONNECTIONS,
            broken: Default::default(),
        },
    )
}

/// A node record of `keypair`'s node, issued at `issued_at` (unix ms).
fn signed(keypair: &Keypair, issued_at: u64) -> Vec<u8> {
    let key = signing_key(keypair).unwrap();
    let record = NodeRecord {
        peer_id: peer_id_bytes(&key.verifying_key().to_bytes()),
        http: "x:1".into(),
        region: "r".into(),
        listen_addrs: vec![],
        capacity: Capacity::default(),
        cert: None,
    };
    seal(&key, &record, issued_at, issued_at + 60_000).unwrap()
}

fn key_of(peer: &PeerId) -> RecordKey {
    RecordKey::new(&node_record_key(&peer.to_bytes()))
}

fn stored(el: &mut EventLoop, peer: &PeerId) -> Option<kad::Record> {
    el.swarm
        .behaviour_mut()
        .kad
        .store_mut()
        .get(&key_of(peer))
        .map(|r| r.into_owned())
}

#[tokio::test]
async fn inbound_records_are_validated_before_storing() {
    let mut el = event_loop();
    let source = PeerId::random();
    let y = Keypair::generate_ed25519();
    let y_peer = y.public().to_peer_id();
    let now = unix_ms();

    // X's valid record offered under Y's key.
    let x = Keypair::generate_ed25519();
    el.on_inbound_record(source, kad::Record::new(key_of(&y_peer), signed(&x, now)));
    assert!(stored(&mut el, &y_peer).is_none());

    // Garbage under a node key, and anything under a key no record kind owns.
    el.on_inbound_record(source, kad::Record::new(key_of(&y_peer), vec![1, 2, 3]));
    el.on_inbound_record(
        source,
        kad::Record::new(b"/other/key".to_vec(), signed(&y, now)),
    );
    assert!(stored(&mut el, &y_peer).is_none());
    assert_eq!(
        el.swarm.behaviour_mut().kad.store_mut().records().count(),
        0
    );

    // Genuine: stored (expiring with the record) and cached.
    let genuine = signed(&y, now);
    el.on_inbound_record(source, kad::Record::new(key_of(&y_peer), genuine.clone()));
    let held = stored(&mut el, &y_peer).unwrap();
    assert_eq!(held.value, genuine);
    let expires = held.expires.unwrap();
    assert!(expires <= std::time::Instant::now() + Duration::from_secs(60));
    assert!(
        el.records
            .get(&y_peer, std::time::Instant::now(), now)
            .is_some()
    );

    // The same record again is no attack; an older one is a replay and changes nothing.
    el.on_inbound_record(source, kad::Record::new(key_of(&y_peer), genuine.clone()));
    let older = signed(&y, now - 100);
    el.on_inbound_record(source, kad::Record::new(key_of(&y_peer), older));
    assert_eq!(stored(&mut el, &y_peer).unwrap().value, genuine);

    let counted: Vec<(String, u64)> = el.rejected.clone().into_iter().collect();
    assert_eq!(
        counted,
        [
            ("node_record/garbage".to_string(), 1),
            ("node_record/replay".to_string(), 1),
            ("node_record/wrong_signer".to_string(), 1),
            ("unknown/invalid".to_string(), 1),
        ]
    );
}

#[tokio::test]
async fn inbound_provider_records_are_checked() {
    let mut el = event_loop();
    let provider = PeerId::random();
    let short = kad::ProviderRecord::new(b"short".to_vec(), provider, vec![]);
    el.on_inbound_provider(short);
    assert!(
        el.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .providers(&RecordKey::new(b"short"))
            .is_empty()
    );

    let key = RecordKey::new(&[7u8; 32]);
    let addrs: Vec<Multiaddr> = vec![
        "/ip4/192.0.2.1/tcp/1".parse().unwrap(),
        "/ip4/0.0.0.0/tcp/1".parse().unwrap(),
        "/ip4/127.0.0.1/tcp/1".parse().unwrap(),
    ];
    el.on_inbound_provider(kad::ProviderRecord::new(key.clone(), provider, addrs));
    let stored = el.swarm.behaviour_mut().kad.store_mut().providers(&key);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].addresses,
        vec!["/ip4/192.0.2.1/tcp/1".parse::<Multiaddr>().unwrap()]
    );
}

fn test_config(name: &str, bootstrap: Vec<Multiaddr>) -> crate::Config {
    budget_config(name, bootstrap, crate::DEFAULT_KEEP_CONNECTIONS)
}

fn budget_config(name: &str, bootstrap: Vec<Multiaddr>, keep: usize) -> crate::Config {
    crate::Config {
        keypair: Keypair::generate_ed25519(),
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        mdns: false,
        peers_file: None,
        local_record: local_info(&format!("{name}:80")),
        metrics: Metrics::default(),
        peering_timeout: crate::PEERING_REQUEST_TIMEOUT,
        keep_connections: keep,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_provided_before_joining_are_announced_on_join() {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let a = crate::spawn(test_config("a", vec![])).await.unwrap();
    let k = ContentKey::from_bytes([9; 32]);
    // Alone: stored locally, and the call returns.
    a.provide(k).await.unwrap();
    assert!(!a.status().await.unwrap().joined);

    let a_addr: Multiaddr = a.status().await.unwrap().listen_addrs[0].parse().unwrap();
    let b = crate::spawn(test_config("b", vec![a_addr])).await.unwrap();
    a.wait_joined(TIMEOUT).await.unwrap();
    b.wait_joined(TIMEOUT).await.unwrap();

    // Only A's announcement on joining can put A's provider record into B's store (B never
    // looks the key up, and kad's own re-announcement is an hour away).
    wait_holds_provider(&b, k, a.local_peer_id(), "A's key never reached B").await;
    a.shutdown().await;
    b.shutdown().await;
}

/// Waits until `node`'s store holds `provider`'s record for `k`; panics with `what` after 30 s.
async fn wait_holds_provider(node: &crate::Client, k: ContentKey, provider: PeerId, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = node
            .inspect(move |el| {
                let key = RecordKey::new(k.as_bytes());
                let store = el.swarm.behaviour_mut().kad.store_mut();
                store.providers(&key).iter().any(|p| p.provider == provider)
            })
            .await
            .unwrap();
        if held {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        // Poll interval, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_announced_in_a_small_overlay_reach_a_node_that_came_later() {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let a = crate::spawn(test_config("a", vec![])).await.unwrap();
    let a_addr: Multiaddr = a.status().await.unwrap().listen_addrs[0].parse().unwrap();
    let b = crate::spawn(test_config("b", vec![a_addr])).await.unwrap();
    a.wait_joined(TIMEOUT).await.unwrap();
    b.wait_joined(TIMEOUT).await.unwrap();
    // Announced while the overlay is A and B: B stores it.
    let k = ContentKey::from_bytes([7; 32]);
    a.provide(k).await.unwrap();
    let a_peer = a.local_peer_id();
    wait_holds_provider(&b, k, a_peer, "A's key never reached B").await;

    // C comes later. Nobody looks the key up, and kad's republish is an hour away: only A
    // announcing again, as its routing table doubled (1 to 2), can tell C.
    let b_addr: Multiaddr = b.status().await.unwrap().listen_addrs[0].parse().unwrap();
    let c = crate::spawn(test_config("c", vec![b_addr])).await.unwrap();
    c.wait_joined(TIMEOUT).await.unwrap();
    wait_holds_provider(&c, k, a_peer, "A's key never reached C").await;
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[test]
fn our_record_is_republished_well_before_it_expires() {
    use super::records::republish_delay;
    let interval = Duration::from_secs(600);
    let now = 1_700_000_000_000;
    assert_eq!(republish_delay(interval, now + 3_600_000, now), interval);
    // A certificate expiring in 4 minutes: again in 2.
    assert_eq!(
        republish_delay(interval, now + 240_000, now),
        Duration::from_secs(120)
    );
    assert_eq!(
        republish_delay(interval, now - 1, now),
        Duration::from_secs(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_topics_are_scored_and_their_bytes_counted() {
    use libp2p::gossipsub::IdentTopic;

    use crate::{Acceptance, GRAYLIST_THRESHOLD, Published};

    const TIMEOUT: Duration = Duration::from_secs(30);
    const TOPIC: &str = "reef/test/scored";
    let a = crate::spawn(test_config("a", vec![])).await.unwrap();
    let a_addr: Multiaddr = a.status().await.unwrap().listen_addrs[0].parse().unwrap();
    let b = crate::spawn(test_config("b", vec![a_addr])).await.unwrap();
    a.wait_joined(TIMEOUT).await.unwrap();
    b.wait_joined(TIMEOUT).await.unwrap();
    let mut inbox = b.subscribe(TOPIC, 8).await.unwrap();
    let scored = b
        .inspect(|el| {
            let g = &el.swarm.behaviour().gossipsub;
            [TOPIC, reef_proto::WITHDRAWAL_TOPIC]
                .map(|t| g.get_topic_params(&IdentTopic::new(t)).is_some())
        })
        .await
        .unwrap();
    assert_eq!(scored, [true, true]);

    // Publish until A knows B's subscription; then B hears it.
    let deadline = Instant::now() + TIMEOUT;
    let mut n = 0;
    while a
        .publish(TOPIC, format!("m{n}").into_bytes())
        .await
        .unwrap()
        != Published::Sent
    {
        assert!(
            Instant::now() < deadline,
            "B's subscription never reached A"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = tokio::time::timeout(TIMEOUT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(b.report(m.handle, Acceptance::Accept).await.unwrap());

    let sent = a.status().await.unwrap().traffic;
    let got = b.status().await.unwrap();
    let (out, inn) = (sent.gossip[TOPIC], got.traffic.gossip[TOPIC]);
    assert!(
        out.messages_out >= 1 && out.bytes_out > m.data.len() as u64,
        "{out:?}"
    );
    assert!(
        inn.messages_in >= 1 && inn.bytes_in > m.data.len() as u64,
        "{inn:?}"
    );
    assert!(sent.streams_out > 0 && got.traffic.streams_in > 0);
    let a_id = a.local_peer_id().to_string();
    assert!(got.gossip_scores[&a_id] >= 0.0, "{:?}", got.gossip_scores);

    // One rejected message costs A, but far from the graylist.
    a.publish(TOPIC, b"bad".to_vec()).await.unwrap();
    let m = tokio::time::timeout(TIMEOUT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(b.report(m.handle, Acceptance::Reject).await.unwrap());
    let score = b.status().await.unwrap().gossip_scores[&a_id];
    assert!(score < 0.0 && score > GRAYLIST_THRESHOLD, "{score}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_forged_records_is_disconnected_and_refused() {
    use crate::offenders::STRIKES_TO_BAN;

    const TIMEOUT: Duration = Duration::from_secs(30);
    let a = crate::spawn(test_config("a", vec![])).await.unwrap();
    let a_addr: Multiaddr = a.status().await.unwrap().listen_addrs[0].parse().unwrap();
    let b = crate::spawn(test_config("b", vec![a_addr.clone()]))
        .await
        .unwrap();
    a.wait_joined(TIMEOUT).await.unwrap();
    b.wait_joined(TIMEOUT).await.unwrap();
    let (a_peer, b_peer) = (a.local_peer_id(), b.local_peer_id());

    // B puts records signed by the wrong key into A's store, straight at A.
    let victim_peer = Keypair::generate_ed25519().public().to_peer_id();
    for _ in 0..STRIKES_TO_BAN {
        let forger = Keypair::generate_ed25519();
        let forged = kad::Record::new(key_of(&victim_peer), signed(&forger, unix_ms()));
        b.inspect(move |el| {
            el.swarm.behaviour_mut().kad.put_record_to(
                forged,
                std::iter::once(a_peer),
                kad::Quorum::One,
            );
        })
        .await
        .unwrap();
    }

    let deadline = Instant::now() + TIMEOUT;
    loop {
        let status = a.status().await.unwrap();
        let b_id = b_peer.to_string();
        if status.banned_peers.contains(&b_id) && !status.connected_peers.contains(&b_id) {
            assert_eq!(status.peers_banned, 1);
            assert!(
                status.records_rejected["node_record/wrong_signer"] >= u64::from(STRIKES_TO_BAN)
            );
            break;
        }
        assert!(Instant::now() < deadline, "B was never banned: {status:?}");
        // Poll interval, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // B cannot come back while banned: its dial is refused by A.
    b.inspect(move |el| {
        let _ = el.swarm.dial(a_addr);
    })
    .await
    .unwrap();
    let refused_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < refused_until {
        let connected = a.status().await.unwrap().connected_peers;
        assert!(!connected.contains(&b_peer.to_string()), "{connected:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Polls `check` until it holds; panics with `what` after 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}");
        // Poll interval, not synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_budget_close_after_a_goodbye_and_break_nothing() {
    const NODES: usize = 6;
    const KEEP: usize = 2;
    let first = crate::spawn(budget_config("n0", vec![], KEEP))
        .await
        .unwrap();
    let first_addr: Multiaddr = first.status().await.unwrap().listen_addrs[0]
        .parse()
        .unwrap();
    let mut nodes = vec![first];
    for i in 1..NODES {
        let config = budget_config(&format!("n{i}"), vec![first_addr.clone()], KEEP);
        nodes.push(crate::spawn(config).await.unwrap());
    }
    for node in &nodes {
        node.wait_joined(Duration::from_secs(30)).await.unwrap();
    }
    let peers: Vec<PeerId> = nodes.iter().map(|n| n.local_peer_id()).collect();

    // Joining connects the first node to everyone; it prunes down to its budget, but for
    // peers that asked to stay: a peer the others pruned first may be short by the time the
    // first node's goodbye reaches it, which depends on the order things happen in.
    eventually("the first node never pruned", || async {
        let (pruned, over) = nodes[0]
            .inspect(|el| {
                let connected: Vec<PeerId> = el.swarm.connected_peers().copied().collect();
                let staying = connected.iter().filter(|p| el.budget.is_staying(p)).count();
                (el.metrics.pruned(), connected.len().saturating_sub(staying))
            })
            .await
            .unwrap();
        pruned > 0 && over <= KEEP
    })
    .await;

    // Nobody took a goodbye for a crash: every node still counts every other as alive, and
    // still has it in its routing table (a break would have removed it).
    for node in &nodes {
        for peer in &peers {
            assert!(!node.connection_broken(peer), "{peer} counted as broken");
        }
        assert_eq!(node.status().await.unwrap().routing_table_size, NODES - 1);
    }

    // A lookup still reaches a holder the asker is not connected to: it dials.
    let k = ContentKey::from_bytes([5; 32]);
    let holder = NODES - 1;
    nodes[holder].provide(k).await.unwrap();
    let connected = nodes[0].status().await.unwrap().connected_peers;
    let asker = (1..NODES - 1)
        .find(|i| !connected.contains(&peers[*i].to_string()))
        .unwrap_or(1);
    eventually("the holder was never found", || async {
        let found = nodes[asker].find_holders(k, 4).await.unwrap_or_default();
        found.iter().any(|h| h.peer == peers[holder])
    })
    .await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_short_of_connections_asks_to_keep_its_own() {
    // A would close every connection; B, with one connection and a budget of four, is short
    // and says so.
    let a = crate::spawn(budget_config("a", vec![], 0)).await.unwrap();
    let a_addr: Multiaddr = a.status().await.unwrap().listen_addrs[0].parse().unwrap();
    let b = crate::spawn(budget_config("b", vec![a_addr], 4))
        .await
        .unwrap();
    b.wait_joined(Duration::from_secs(30)).await.unwrap();
    let b_peer = b.local_peer_id();
    eventually("B never asked to stay", || async {
        a.inspect(move |el| el.budget.is_staying(&b_peer))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(
        a.status().await.unwrap().connected_peers,
        [b_peer.to_string()]
    );
    assert_eq!(a.inspect(|el| el.metrics.pruned()).await.unwrap(), 0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_short_of_connections_dials_peers_it_knows() {
    let mut el = event_loop();
    let known: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
    for (i, peer) in known.iter().enumerate() {
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 1000 + i).parse().unwrap();
        el.swarm.behaviour_mut().kad.add_address(peer, addr);
    }
    let pending = |el: &EventLoop| {
        el.swarm
            .network_info()
            .connection_counters()
            .num_pending_outgoing() as usize
    };
    // Not joined yet: joining does its own dialling.
    el.prune_connections();
    assert_eq!(pending(&el), 0);

    // Joined with no connection at all: dials three quarters of the budget, once a while.
    el.joined = true;
    el.prune_connections();
    assert_eq!(pending(&el), crate::DEFAULT_KEEP_CONNECTIONS * 3 / 4);
    el.prune_connections();
    assert_eq!(pending(&el), crate::DEFAULT_KEEP_CONNECTIONS * 3 / 4);
}
