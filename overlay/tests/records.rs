//! Signed records across real swarms: honest overlays on loopback, and an attacker that is a
//! bare libp2p Kademlia speaking Reef's DHT protocol, sending PUT_VALUE requests straight to
//! the honest nodes with values it made up. Every forged value must be refused by every
//! receiving node, never stored, never handed to a caller, and counted by kind and reason.
//!
//! Tests wait on conditions with deadlines; they never sleep to synchronise.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use ed25519_dalek::Signer;
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm, noise, tcp, yamux};
use prometheus_client::registry::Registry;
use reef_overlay::{Client, Config, Error, Keypair, LocalInfo, Metrics, Multiaddr, PeerId};
use reef_proto::ContentKey;
use reef_proto::records::{
    Capacity, CapacityOffer, ContentRecord, DOMAIN, Kind, Membership, NodeRecord, ProviderCert,
    ProviderId, ProviderKey, Record, SigningKey, content_record_key, node_record_key, offer_key,
    peer_id_bytes, region_key, seal,
};
use tokio::sync::{mpsc, oneshot};

const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);
const MINUTE: u64 = 60 * 1000;
const HOUR: u64 = 60 * MINUTE;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        // Poll interval, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- honest nodes ----

struct Honest {
    client: Client,
    signer: SigningKey,
}

fn signing_key(keypair: &Keypair) -> SigningKey {
    let ed = keypair.clone().try_into_ed25519().expect("ed25519");
    let secret: [u8; 32] = ed.secret().as_ref().try_into().expect("32 bytes");
    SigningKey::from_bytes(&secret)
}

fn config(keypair: Keypair, bootstrap: Vec<Multiaddr>, cert: Option<Vec<u8>>) -> Config {
    Config {
        keypair,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        bootstrap,
        mdns: false,
        peers_file: None,
        local_record: LocalInfo {
            http: "127.0.0.1:8080".into(),
            region: "eu".into(),
            capacity: Capacity::default(),
            cert,
        },
        metrics: Metrics::default(),
        peering_timeout: reef_overlay::PEERING_REQUEST_TIMEOUT,
        keep_connections: reef_overlay::DEFAULT_KEEP_CONNECTIONS,
    }
}

async fn honest(bootstrap: Vec<Multiaddr>, cert_from: Option<&ProviderKey>) -> Result<Honest> {
    let keypair = Keypair::generate_ed25519();
    let signer = signing_key(&keypair);
    let cert = cert_from.map(|p| cert_for(p, &signer, "acme"));
    let client = reef_overlay::spawn(config(keypair, bootstrap, cert)).await?;
    Ok(Honest { client, signer })
}

async fn addr_of(client: &Client) -> Result<Multiaddr> {
    let status = client.status().await?;
    Ok(status.listen_addrs.first().context("no address")?.parse()?)
}

// ---- records ----

fn peer_bytes(key: &SigningKey) -> Vec<u8> {
    peer_id_bytes(&key.verifying_key().to_bytes())
}

fn cert_for(provider: &ProviderKey, node: &SigningKey, name: &str) -> Vec<u8> {
    let cert = ProviderCert {
        provider: provider.id(),
        name: name.into(),
        node: peer_bytes(node),
    };
    let now = now_ms();
    seal(provider.signing_key(), &cert, now - MINUTE, now + 24 * HOUR).expect("cert")
}

fn node_record(key: &SigningKey, cert: Option<Vec<u8>>) -> NodeRecord {
    NodeRecord {
        peer_id: peer_bytes(key),
        http: "203.0.113.9:80".into(),
        region: "eu".into(),
        listen_addrs: vec![],
        capacity: Capacity::default(),
        cert,
    }
}

fn content_record(key: ContentKey, hash: u8) -> ContentRecord {
    ContentRecord {
        key,
        body_hash: [hash; 32],
        body_len: 1234,
        etag: Some("\"v1\"".into()),
        last_modified: None,
    }
}

fn offer(provider: &ProviderKey) -> CapacityOffer {
    CapacityOffer {
        provider: provider.id(),
        name: "mallory".into(),
        req_per_s: 10,
        mbit_per_s: 10,
        regions: vec!["eu".into()],
        price_micros_per_gb: 1,
        min_duration_s: 60,
        max_duration_s: 600,
    }
}

/// An envelope signed as given, without the checks `seal` makes: for records an honest
/// sealer refuses to make (a record naming another signer, a stolen certificate).
fn seal_unchecked<T: Record>(
    key: &SigningKey,
    record: &T,
    issued_at: u64,
    expires_at: u64,
) -> Vec<u8> {
    let body = postcard::to_stdvec(record).expect("body");
    let signed: (u8, u8, [u8; 32], u64, u64, Vec<u8>) = (
        1,
        T::KIND.code(),
        key.verifying_key().to_bytes(),
        issued_at,
        expires_at,
        body,
    );
    let mut bytes = postcard::to_stdvec(&signed).expect("envelope");
    let mut message = DOMAIN.to_vec();
    message.extend_from_slice(&bytes);
    bytes.extend_from_slice(&key.sign(&message).to_bytes());
    bytes
}

/// A valid envelope with one bit of its signature flipped.
fn bad_signature(mut sealed: Vec<u8>) -> Vec<u8> {
    if let Some(last) = sealed.last_mut() {
        *last ^= 1;
    }
    sealed
}

fn padded(mut sealed: Vec<u8>, to: usize) -> Vec<u8> {
    sealed.resize(to, 0);
    sealed
}

/// Bytes that are no envelope at all: every varint runs past ten bytes.
fn garbage() -> Vec<u8> {
    vec![0xff; 200]
}

// ---- the attacker ----

/// What the attacker's swarm task is told to do; the answer is whether the query succeeded.
enum Order {
    Put(kad::Record, Vec<PeerId>, oneshot::Sender<bool>),
    Provide(kad::RecordKey, oneshot::Sender<bool>),
}

/// A bare Kademlia node on Reef's DHT protocol, driven by its own task (kad sends provider
/// announcements after it reports them done, so the swarm must keep running).
struct Attacker {
    orders: mpsc::Sender<Order>,
    peer: PeerId,
    key: SigningKey,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Attacker {
    async fn new(targets: &[(PeerId, Multiaddr)]) -> Result<Attacker> {
        let keypair = Keypair::generate_ed25519();
        let key = signing_key(&keypair);
        let mut swarm: Swarm<kad::Behaviour<MemoryStore>> =
            libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )?
                .with_behaviour(|key| {
                    let peer = key.public().to_peer_id();
                    let mut cfg = kad::Config::new(StreamProtocol::new("/reef/kad/1.0.0"));
                    cfg.set_max_packet_size(64 * 1024);
                    kad::Behaviour::with_config(peer, MemoryStore::new(peer), cfg)
                })?
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
        for (peer, addr) in targets {
            swarm.behaviour_mut().add_address(peer, addr.clone());
        }
        let peer = *swarm.local_peer_id();
        let (orders, mut inbox) = mpsc::channel::<Order>(8);
        let task = tokio::spawn(async move {
            let mut waiting: HashMap<kad::QueryId, oneshot::Sender<bool>> = HashMap::new();
            loop {
                tokio::select! {
                    order = inbox.recv() => match order {
                        Some(Order::Put(record, to, reply)) => {
                            let id = swarm.behaviour_mut().put_record_to(
                                record,
                                to.into_iter(),
                                kad::Quorum::All,
                            );
                            waiting.insert(id, reply);
                        }
                        Some(Order::Provide(key, reply)) => {
                            match swarm.behaviour_mut().start_providing(key) {
                                Ok(id) => {
                                    waiting.insert(id, reply);
                                }
                                Err(_) => {
                                    let _ = reply.send(false);
                                }
                            }
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                            id, result, ..
                        }) = event
                        {
                            let ok = match result {
                                kad::QueryResult::PutRecord(r) => r.is_ok(),
                                kad::QueryResult::StartProviding(r) => r.is_ok(),
                                _ => continue,
                            };
                            if let Some(reply) = waiting.remove(&id) {
                                let _ = reply.send(ok);
                            }
                        }
                    }
                }
            }
        });
        Ok(Attacker {
            orders,
            peer,
            key,
            task,
        })
    }

    fn peer(&self) -> PeerId {
        self.peer
    }

    async fn order(&self, order: impl FnOnce(oneshot::Sender<bool>) -> Order) -> Result<bool> {
        let (reply, answer) = oneshot::channel();
        self.orders
            .send(order(reply))
            .await
            .map_err(|_| anyhow::anyhow!("attacker task gone"))?;
        Ok(tokio::time::timeout(CONDITION_TIMEOUT, answer)
            .await
            .context("attacker query timed out")??)
    }

    /// Sends PUT_VALUE(key, value) to every peer in `to`, and waits for their answers.
    async fn put(&mut self, key: Vec<u8>, value: Vec<u8>, to: &[PeerId]) -> Result<()> {
        let record = kad::Record {
            key: kad::RecordKey::new(&key),
            value,
            publisher: None,
            expires: None,
        };
        let ok = self
            .order(|reply| Order::Put(record, to.to_vec(), reply))
            .await?;
        ensure!(ok, "honest nodes did not answer the PUT");
        Ok(())
    }

    /// Announces that it holds `key` (a provider record at the closest peers).
    async fn provide(&mut self, key: ContentKey) -> Result<()> {
        let key = kad::RecordKey::new(key.as_bytes());
        let ok = self.order(|reply| Order::Provide(key, reply)).await?;
        ensure!(ok, "provider announcement failed");
        Ok(())
    }
}

/// One forged value and what every honest node must count for it.
struct Forgery {
    what: &'static str,
    key: Vec<u8>,
    value: Vec<u8>,
    kind: &'static str,
    reason: &'static str,
}

/// Valid values to send before their replays.
struct Genuine {
    key: Vec<u8>,
    value: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_are_rejected_by_every_node_and_counted() -> Result<()> {
    init_tracing();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let a_keypair = Keypair::generate_ed25519();
    let a_signer = signing_key(&a_keypair);
    let mut a_config = config(a_keypair, vec![], None);
    a_config.metrics = metrics;
    let a = Honest {
        client: reef_overlay::spawn(a_config).await?,
        signer: a_signer,
    };
    let a_addr = addr_of(&a.client).await?;
    let b = honest(vec![a_addr.clone()], None).await?;
    let c = honest(vec![a_addr.clone()], None).await?;
    let nodes = [&a, &b, &c];
    let mut targets = Vec::new();
    for node in nodes {
        node.client.wait_joined(JOIN_TIMEOUT).await?;
        targets.push((node.client.local_peer_id(), addr_of(&node.client).await?));
    }
    let peers: Vec<PeerId> = targets.iter().map(|(p, _)| *p).collect();
    let mut mallory = Attacker::new(&targets).await?;
    let x = mallory.key.clone();
    let x_key = node_record_key(&peer_bytes(&x));
    let a_key = node_record_key(&peer_bytes(&a.signer));
    let now = now_ms();

    // What Mallory may legitimately publish: its own node record, a content record (any node
    // may vouch for a body it fetched), and the offer of a provider key it holds.
    let k1 = ContentKey::from_bytes([1; 32]);
    let k2 = ContentKey::from_bytes([2; 32]);
    let c1_key = content_record_key(&k1);
    let m_provider = ProviderKey::from_bytes(&[77; 32]);
    let o_key = offer_key(&m_provider.id());
    let own_node = |at: u64| seal(&x, &node_record(&x, None), at, at + HOUR).expect("seal");
    let own_content = |at: u64| seal(&x, &content_record(k1, 1), at, at + HOUR).expect("seal");
    let own_offer =
        |at: u64| seal(m_provider.signing_key(), &offer(&m_provider), at, at + HOUR).expect("seal");
    let victim_provider = ProviderKey::from_bytes(&[78; 32]).id();

    let forgeries = vec![
        // Node records.
        Forgery {
            what: "node record with a flipped signature bit",
            key: x_key.clone(),
            value: bad_signature(own_node(now)),
            kind: "node_record",
            reason: "bad_signature",
        },
        Forgery {
            what: "Mallory's valid record under honest A's key",
            key: a_key.clone(),
            value: own_node(now),
            kind: "node_record",
            reason: "wrong_signer",
        },
        Forgery {
            what: "expired node record",
            key: x_key.clone(),
            value: own_node(now - 2 * HOUR),
            kind: "node_record",
            reason: "expired",
        },
        Forgery {
            what: "node record from the future",
            key: x_key.clone(),
            value: own_node(now + 10 * MINUTE),
            kind: "node_record",
            reason: "future",
        },
        Forgery {
            what: "oversized node record",
            key: x_key.clone(),
            value: padded(own_node(now), NodeRecord::MAX_LEN + 1),
            kind: "node_record",
            reason: "too_large",
        },
        Forgery {
            what: "garbage node record",
            key: x_key.clone(),
            value: garbage(),
            kind: "node_record",
            reason: "garbage",
        },
        Forgery {
            what: "older node record (replay)",
            key: x_key.clone(),
            value: own_node(now - 5 * MINUTE),
            kind: "node_record",
            reason: "replay",
        },
        // Content records.
        Forgery {
            what: "content record with a flipped signature bit",
            key: c1_key.clone(),
            value: bad_signature(own_content(now)),
            kind: "content_record",
            reason: "bad_signature",
        },
        Forgery {
            what: "content record of K1 under K2",
            key: content_record_key(&k2),
            value: own_content(now),
            kind: "content_record",
            reason: "wrong_signer",
        },
        Forgery {
            what: "expired content record",
            key: c1_key.clone(),
            value: own_content(now - 30 * HOUR),
            kind: "content_record",
            reason: "expired",
        },
        Forgery {
            what: "content record from the future",
            key: c1_key.clone(),
            value: own_content(now + 10 * MINUTE),
            kind: "content_record",
            reason: "future",
        },
        Forgery {
            what: "oversized content record",
            key: c1_key.clone(),
            value: padded(own_content(now), ContentRecord::MAX_LEN + 1),
            kind: "content_record",
            reason: "too_large",
        },
        Forgery {
            what: "garbage content record",
            key: c1_key.clone(),
            value: garbage(),
            kind: "content_record",
            reason: "garbage",
        },
        Forgery {
            what: "older content record (replay)",
            key: c1_key.clone(),
            value: own_content(now - 5 * MINUTE),
            kind: "content_record",
            reason: "replay",
        },
        // Capacity offers.
        Forgery {
            what: "offer with a flipped signature bit",
            key: o_key.clone(),
            value: bad_signature(own_offer(now)),
            kind: "capacity_offer",
            reason: "bad_signature",
        },
        Forgery {
            what: "Mallory's offer under another provider's key",
            key: offer_key(&victim_provider),
            value: own_offer(now),
            kind: "capacity_offer",
            reason: "wrong_signer",
        },
        Forgery {
            what: "expired offer",
            key: o_key.clone(),
            value: own_offer(now - 2 * HOUR),
            kind: "capacity_offer",
            reason: "expired",
        },
        Forgery {
            what: "offer from the future",
            key: o_key.clone(),
            value: own_offer(now + 10 * MINUTE),
            kind: "capacity_offer",
            reason: "future",
        },
        Forgery {
            what: "oversized offer",
            key: o_key.clone(),
            value: padded(own_offer(now), CapacityOffer::MAX_LEN + 1),
            kind: "capacity_offer",
            reason: "too_large",
        },
        Forgery {
            what: "garbage offer",
            key: o_key.clone(),
            value: garbage(),
            kind: "capacity_offer",
            reason: "garbage",
        },
        Forgery {
            what: "older offer (replay)",
            key: o_key.clone(),
            value: own_offer(now - 5 * MINUTE),
            kind: "capacity_offer",
            reason: "replay",
        },
        // A key no record kind owns (region keys hold provider announcements only).
        Forgery {
            what: "value under a region key",
            key: region_key("eu"),
            value: own_offer(now),
            kind: "unknown",
            reason: "invalid",
        },
    ];

    // The genuine versions first, so that the older ones are replays.
    let genuine = [
        Genuine {
            key: x_key.clone(),
            value: own_node(now),
        },
        Genuine {
            key: c1_key.clone(),
            value: own_content(now),
        },
        Genuine {
            key: o_key.clone(),
            value: own_offer(now),
        },
    ];
    for g in &genuine {
        mallory.put(g.key.clone(), g.value.clone(), &peers).await?;
        for node in nodes {
            let client = &node.client;
            eventually("the genuine record to be stored", || async {
                Ok(
                    (client.local_record(g.key.clone()).await? == Some(g.value.clone()))
                        .then_some(()),
                )
            })
            .await?;
        }
    }
    // Storing it again is no attack.
    mallory
        .put(genuine[0].key.clone(), genuine[0].value.clone(), &peers)
        .await?;

    for forgery in &forgeries {
        mallory
            .put(forgery.key.clone(), forgery.value.clone(), &peers)
            .await
            .with_context(|| forgery.what)?;
    }

    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for f in &forgeries {
        *expected
            .entry(format!("{}/{}", f.kind, f.reason))
            .or_default() += 1;
    }
    ensure!(
        expected.len() == forgeries.len(),
        "one forgery per kind and reason"
    );
    for node in nodes {
        let client = &node.client;
        let counted = eventually("every forgery to be counted", || async {
            let counted = client.status().await?.records_rejected;
            Ok((counted == expected).then_some(counted))
        })
        .await
        .with_context(|| format!("at {}", client.local_peer_id()))?;
        ensure!(counted == expected);
        for forgery in &forgeries {
            let held = client.local_record(forgery.key.clone()).await?;
            ensure!(
                held.as_ref() != Some(&forgery.value),
                "{} stored at {}",
                forgery.what,
                client.local_peer_id()
            );
        }
        // What is held is still the genuine version.
        for g in &genuine {
            ensure!(client.local_record(g.key.clone()).await? == Some(g.value.clone()));
        }
        ensure!(
            client
                .local_record(content_record_key(&k2))
                .await?
                .is_none()
        );
        ensure!(
            client
                .local_record(offer_key(&victim_provider))
                .await?
                .is_none()
        );
    }

    // Nobody hands a forgery to a caller: lookups return the genuine records.
    ensure!(b.client.get_record(a_key.clone()).await? != Some(own_node(now)));
    let a_record = b
        .client
        .node_record(a.client.local_peer_id())
        .await?
        .context("A's record")?;
    ensure!(a_record.record.http == "127.0.0.1:8080");
    ensure!(
        c.client
            .get_record(content_record_key(&k2))
            .await?
            .is_none()
    );
    ensure!(c.client.get_record(c1_key.clone()).await? == Some(genuine[1].value.clone()));
    ensure!(matches!(
        c.client.get_record(region_key("eu")).await,
        Err(Error::Rejected {
            kind: "unknown",
            ..
        })
    ));

    // The metric says the same as the status.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    for f in &forgeries {
        let line = format!(
            "reef_records_rejected_total{{kind=\"{}\",reason=\"{}\"}} 1",
            f.kind, f.reason
        );
        ensure!(text.contains(&line), "{line} missing from\n{text}");
    }

    for node in nodes {
        node.client.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_published_and_found_newest_first() -> Result<()> {
    init_tracing();
    let a = honest(vec![], None).await?;
    let a_addr = addr_of(&a.client).await?;
    let b = honest(vec![a_addr.clone()], None).await?;
    let c = honest(vec![a_addr], None).await?;
    for node in [&a, &b, &c] {
        node.client.wait_joined(JOIN_TIMEOUT).await?;
    }
    let k = ContentKey::from_bytes([9; 32]);
    let key = content_record_key(&k);
    let now = now_ms();
    let v1 = seal(&a.signer, &content_record(k, 1), now - MINUTE, now + HOUR)?;
    let v2 = seal(&b.signer, &content_record(k, 2), now, now + HOUR)?;

    ensure!(c.client.get_record(key.clone()).await?.is_none());
    a.client.put_record(key.clone(), v1.clone()).await?;
    // Putting the same value again is how a publisher keeps it alive.
    a.client.put_record(key.clone(), v1.clone()).await?;
    let found = eventually("c to find v1", || async {
        Ok(c.client.get_record(key.clone()).await?)
    })
    .await?;
    ensure!(found == v1);

    // A newer record from another node replaces it everywhere it lands.
    b.client.put_record(key.clone(), v2.clone()).await?;
    eventually("c to find v2", || async {
        Ok((c.client.get_record(key.clone()).await? == Some(v2.clone())).then_some(()))
    })
    .await?;
    // A's own store took the newer one too, so A refuses to publish the older one again.
    eventually("a to hold v2", || async {
        Ok((a.client.local_record(key.clone()).await? == Some(v2.clone())).then_some(()))
    })
    .await?;
    ensure!(matches!(
        a.client.put_record(key.clone(), v1.clone()).await,
        Err(Error::Rejected {
            kind: "content_record",
            error: reef_proto::records::RecordError::Replay
        })
    ));

    // Invalid values are refused before anything is sent.
    for (bad_key, bad_value) in [
        (key.clone(), garbage()),
        (
            content_record_key(&ContentKey::from_bytes([8; 32])),
            v2.clone(),
        ),
        (region_key("eu"), v2.clone()),
        (
            key.clone(),
            seal(&a.signer, &content_record(k, 3), now - 2 * HOUR, now - HOUR)?,
        ),
    ] {
        ensure!(
            matches!(
                a.client.put_record(bad_key, bad_value).await,
                Err(Error::Rejected { .. })
            ),
            "an invalid record was published"
        );
    }
    // A node's own refusals are not attacks on it.
    ensure!(a.client.status().await?.records_rejected.is_empty());

    for node in [&a, &b, &c] {
        node.client.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_certificate_from_the_providers_key_makes_a_member() -> Result<()> {
    init_tracing();
    let acme = ProviderKey::from_bytes(&[1; 32]);
    let a = honest(vec![], Some(&acme)).await?;
    let a_addr = addr_of(&a.client).await?;
    let b = honest(vec![a_addr.clone()], None).await?;
    for node in [&a, &b] {
        node.client.wait_joined(JOIN_TIMEOUT).await?;
    }
    let certified = Membership::Certified {
        provider: acme.id(),
        name: "acme".into(),
    };

    // A node cannot start with a certificate that is not its own, or not from the key of the
    // provider it names.
    let stolen = cert_for(&acme, &a.signer, "acme");
    let keypair = Keypair::generate_ed25519();
    let me = signing_key(&keypair);
    match reef_overlay::spawn(config(keypair, vec![], Some(stolen.clone()))).await {
        Err(Error::Cert(e)) => ensure!(e.reason() == "wrong_signer", "{e}"),
        other => bail!("started with a stolen certificate: {:?}", other.map(|_| ())),
    }
    let impostor = ProviderKey::from_bytes(&[2; 32]);
    let forged_cert = seal_unchecked(
        impostor.signing_key(),
        &ProviderCert {
            provider: acme.id(),
            name: "acme".into(),
            node: peer_bytes(&me),
        },
        now_ms() - MINUTE,
        now_ms() + HOUR,
    );
    let keypair = Keypair::generate_ed25519();
    match reef_overlay::spawn(config(keypair, vec![], Some(forged_cert))).await {
        Err(Error::Cert(e)) => ensure!(e.reason() == "wrong_signer", "{e}"),
        other => bail!("started with a forged certificate: {:?}", other.map(|_| ())),
    }

    // Mallory speaks Kademlia directly: a record carrying A's certificate is refused, its
    // plain record is accepted, and it announces a key A holds too.
    let targets = vec![
        (a.client.local_peer_id(), a_addr),
        (b.client.local_peer_id(), addr_of(&b.client).await?),
    ];
    let peers: Vec<PeerId> = targets.iter().map(|(p, _)| *p).collect();
    let mut mallory = Attacker::new(&targets).await?;
    let x = mallory.key.clone();
    let x_key = node_record_key(&peer_bytes(&x));
    let now = now_ms();
    let claims_acme = seal_unchecked(&x, &node_record(&x, Some(stolen)), now, now + HOUR);
    mallory.put(x_key.clone(), claims_acme, &peers).await?;
    let client = &b.client;
    eventually("b to refuse the stolen certificate", || async {
        let counted = client.status().await?.records_rejected;
        Ok(counted
            .contains_key("node_record/wrong_signer")
            .then_some(()))
    })
    .await?;
    ensure!(b.client.node_record(mallory.peer()).await?.is_none());

    let plain = seal(&x, &node_record(&x, None), now, now + HOUR)?;
    mallory.put(x_key, plain, &peers).await?;
    let k = ContentKey::from_bytes([5; 32]);
    a.client.provide(k).await?;
    mallory.provide(k).await?;

    let holders = eventually("b to find both holders", || async {
        let holders = client.find_holders(k, 5).await?;
        Ok((holders.len() == 2).then_some(holders))
    })
    .await?;
    for holder in &holders {
        if holder.peer == a.client.local_peer_id() {
            ensure!(holder.membership == certified, "{:?}", holder.membership);
        } else {
            ensure!(holder.peer == mallory.peer());
            ensure!(
                holder.membership
                    == Membership::Independent {
                        provider: ProviderId::from_bytes(x.verifying_key().to_bytes())
                    },
                "{:?}",
                holder.membership
            );
        }
    }
    let a_info = b
        .client
        .node_record(a.client.local_peer_id())
        .await?
        .context("a's record")?;
    ensure!(a_info.membership == certified);
    let own = a
        .client
        .node_record(a.client.local_peer_id())
        .await?
        .context("own record")?;
    ensure!(own.membership == certified);

    // Renewal: a fresh certificate is taken; another node's is refused; dropping it makes A
    // independent at once.
    a.client
        .set_provider_cert(Some(cert_for(&acme, &a.signer, "acme")))
        .await?;
    ensure!(matches!(
        a.client
            .set_provider_cert(Some(cert_for(&acme, &x, "acme")))
            .await,
        Err(Error::Cert(_))
    ));
    a.client.set_provider_cert(None).await?;
    let own = a
        .client
        .node_record(a.client.local_peer_id())
        .await?
        .context("own record")?;
    ensure!(!own.membership.is_certified());
    ensure!(Kind::NodeRecord.label() == "node_record");

    for node in [&a, &b] {
        node.client.shutdown().await;
    }
    Ok(())
}
