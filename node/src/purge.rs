//! Purge: an operator drops a URL, or every URL under a prefix, from all nodes of this node's
//! provider.
//!
//! [`Purger::request`] (behind `POST /api/purge`) removes the matching objects here, keeps
//! fills already under way from storing them, withdraws their DHT announcements, and publishes
//! a [`PurgeNotice`] on gossip. Every node runs [`Purger::listen`]: it checks each notice it
//! receives (well-formed, recent, and published by a node whose verified membership is the
//! notice's provider: a certificate from that provider's key in its NodeRecord, or, for a node
//! without one, its own key), lets valid ones travel on whatever its own provider (gossip may
//! reach a provider's nodes through nodes of other providers), and applies those for its own
//! provider the same way, without publishing again.
//!
//! What a purge does not do: other providers' copies stay (they are not ours to drop), so a
//! node that misses afterwards may refill from one of them while that copy is fresh by its own
//! headers; and an announcement of an object evicted before the purge is not withdrawn by a
//! prefix purge (the store no longer knows its URL), so it lingers until it expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use reef_cache::Store;
use reef_overlay::{Acceptance, GossipMessage, Published};
use reef_proto::records::ProviderId;
use reef_proto::{CanonicalUrl, ContentKey, PURGE_TOPIC, PurgeNotice, PurgeTarget};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span, warn};

/// Notices waiting to be checked. Purges are rare; a full queue means a flood, whose excess
/// the overlay drops (and counts) rather than queueing without bound.
pub const NOTICE_QUEUE: usize = 64;
/// Notices checked at once: each may wait up to 3 s for its sender's NodeRecord, and one slow
/// lookup must not hold up the others.
const MAX_CONCURRENT_CHECKS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error("cache: {0}")]
    Store(#[from] reef_cache::Error),
    #[error("cannot build the purge notice: {0}")]
    Notice(#[from] reef_proto::NoticeError),
}

/// What a purge requested here did.
#[derive(Debug)]
pub struct Outcome {
    /// Objects removed from this node.
    pub removed: Vec<ContentKey>,
    /// Whether the other nodes were told.
    pub told: Result<Published, reef_overlay::Error>,
}

/// Purge counters for `/api/status`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PurgeStats {
    /// Purges requested through this node's admin API.
    pub requested: u64,
    /// Notices received over gossip, valid or not.
    pub received: u64,
    /// Notices for our provider, from one of its nodes, applied here.
    pub applied: u64,
    /// Valid notices for another provider: passed on, not applied.
    pub other_provider: u64,
    /// Notices refused: malformed, too old, or not from a node of the provider they name.
    pub rejected: u64,
    /// Objects removed from this node by purges, requested here or received.
    pub objects_removed: u64,
}

#[derive(Default)]
struct Counts {
    requested: AtomicU64,
    received: AtomicU64,
    applied: AtomicU64,
    other_provider: AtomicU64,
    rejected: AtomicU64,
    objects_removed: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Clone)]
pub struct Purger {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    overlay: reef_overlay::Client,
    /// Our provider's id (our own key's when we are independent).
    provider: ProviderId,
    counts: Counts,
}

impl Purger {
    pub fn new(store: Store, overlay: reef_overlay::Client, provider: ProviderId) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                overlay,
                provider,
                counts: Counts::default(),
            }),
        }
    }

    pub fn stats(&self) -> PurgeStats {
        let c = &self.inner.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PurgeStats {
            requested: get(&c.requested),
            received: get(&c.received),
            applied: get(&c.applied),
            other_provider: get(&c.other_provider),
            rejected: get(&c.rejected),
            objects_removed: get(&c.objects_removed),
        }
    }

    /// Tells the other nodes of our provider to purge `target`, and purges it here. An error
    /// means the local removal failed (the notice may have gone out).
    pub async fn request(&self, target: PurgeTarget) -> Result<Outcome, PurgeError> {
        let notice = PurgeNotice {
            provider: self.inner.provider,
            targets: vec![target],
            issued_at: unix_now(),
            nonce: rand::random(),
        };
        // Encoded first: a notice that could not be sent must not half-happen.
        let data = notice.encode()?;
        bump(&self.inner.counts.requested, 1);
        // Told first: the other nodes need not wait for our disk (a prefix purge reads the
        // whole index).
        let told = self.inner.overlay.publish(PURGE_TOPIC, data).await;
        let removed = self.apply(&notice.targets).await?;
        match &told {
            Ok(published) => info!(
                target = notice.targets[0].as_str(),
                removed = removed.len(),
                ?published,
                "purge requested"
            ),
            Err(error) => warn!(%error, "purged here but could not publish the notice"),
        }
        Ok(Outcome { removed, told })
    }

    /// Checks and applies the notices that arrive on `inbound` until it closes (when the
    /// overlay stops).
    pub fn listen(&self, mut inbound: mpsc::Receiver<GossipMessage>) -> JoinHandle<()> {
        let purger = self.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS));
            while let Some(message) = inbound.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let purger = purger.clone();
                let span = info_span!("purge notice", source = %message.source);
                tokio::spawn(
                    async move {
                        purger.on_notice(message).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        })
    }

    async fn on_notice(&self, message: GossipMessage) {
        let counts = &self.inner.counts;
        bump(&counts.received, 1);
        let handle = message.handle.clone();
        let notice = match self.check(&message).await {
            Ok(notice) => notice,
            Err((verdict, why)) => {
                bump(&counts.rejected, 1);
                debug!(%why, ?verdict, "purge notice refused");
                self.report(handle, verdict).await;
                return;
            }
        };
        // Forward first: the other nodes should not wait for our disk.
        self.report(handle, Acceptance::Accept).await;
        if notice.provider != self.inner.provider {
            bump(&counts.other_provider, 1);
            debug!(provider = %notice.provider.short(), "purge notice for another provider passed on");
            return;
        }
        match self.apply(&notice.targets).await {
            Ok(removed) => {
                bump(&counts.applied, 1);
                info!(removed = removed.len(), "purge notice applied");
            }
            Err(error) => warn!(%error, "applying a purge notice failed"),
        }
    }

    /// A notice is valid when it decodes within limits, is recent, and its publisher (whose
    /// signature gossipsub checked) belongs to the notice's provider by its verified NodeRecord:
    /// it carries a current certificate signed by that provider's key (or, independent, the
    /// provider id is its own key). A name proves nothing.
    async fn check(&self, message: &GossipMessage) -> Result<PurgeNotice, (Acceptance, String)> {
        let notice =
            PurgeNotice::decode(&message.data).map_err(|e| (Acceptance::Reject, e.to_string()))?;
        // Possibly a replay, possibly a bad clock: not forwarded, but nobody is punished.
        notice
            .check_age(unix_now())
            .map_err(|e| (Acceptance::Ignore, e.to_string()))?;
        match self.inner.overlay.node_record(message.source).await {
            Ok(Some(node)) if node.membership.provider() == notice.provider => Ok(notice),
            Ok(Some(node)) => Err((
                Acceptance::Reject,
                format!(
                    "sender belongs to {}, not {}",
                    node.membership.provider().short(),
                    notice.provider.short()
                ),
            )),
            // We cannot tell right now; someone who can will forward it.
            Ok(None) => Err((Acceptance::Ignore, "sender has no node record".into())),
            Err(e) => Err((Acceptance::Ignore, format!("sender's node record: {e}"))),
        }
    }

    async fn report(&self, handle: reef_overlay::MessageHandle, verdict: Acceptance) {
        if let Err(error) = self.inner.overlay.report(handle, verdict).await {
            debug!(%error, "cannot report a purge notice's verdict");
        }
    }

    /// Removes what `targets` name from the store and withdraws its announcements.
    async fn apply(&self, targets: &[PurgeTarget]) -> Result<Vec<ContentKey>, reef_cache::Error> {
        let store = &self.inner.store;
        let mut removed = Vec::new();
        let mut withdraw = Vec::new();
        for target in targets {
            match target {
                PurgeTarget::Url(url) => {
                    // Targets were canonicalised (here) or validated (on decode) already.
                    let Ok(url) = CanonicalUrl::parse(url) else {
                        continue;
                    };
                    let key = ContentKey::for_url(&url);
                    let keys = store.purge_url(&key, url.as_str()).await?;
                    // The URL's key even when not stored (evicted, say): the overlay withdraws
                    // it only if we still announce it.
                    withdraw.push(key);
                    withdraw.extend(keys.iter().filter(|k| **k != key));
                    removed.extend(keys);
                }
                PurgeTarget::Prefix(prefix) => {
                    let keys = store.purge_prefix(prefix).await?;
                    withdraw.extend_from_slice(&keys);
                    removed.extend(keys);
                }
            }
        }
        bump(&self.inner.counts.objects_removed, removed.len() as u64);
        if let Err(error) = self.inner.overlay.unprovide_all(withdraw).await {
            // Our records then expire on their own, and we answer 404 to peers meanwhile.
            warn!(%error, "withdrawing purged announcements failed");
        }
        Ok(removed)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use http_cache_semantics::CachePolicy;
    use reef_cache::{Fill, Meta};
    use reef_overlay::{Keypair, LocalInfo, Metrics, Multiaddr};
    use reef_proto::records::{Capacity, ProviderCert, ProviderKey, Record, seal};

    use super::*;

    /// Joining and first gossip over loopback take well under a second; generous for CI.
    const WAIT: Duration = Duration::from_secs(30);

    struct TestNode {
        overlay: reef_overlay::Client,
        purger: Purger,
        store: Store,
        _dir: tempfile::TempDir,
    }

    /// A node certified by `provider`.
    async fn node(provider: &ProviderKey, bootstrap: Vec<Multiaddr>) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(reef_cache::Config {
            dir: dir.path().to_path_buf(),
            max_bytes: 1 << 20,
            quotas: Default::default(),
        })
        .unwrap();
        let keypair = Keypair::generate_ed25519();
        let cert = ProviderCert {
            provider: provider.id(),
            name: "acme".into(),
            node: keypair.public().to_peer_id().to_bytes(),
        };
        let now = crate::provider::unix_ms();
        let cert = seal(
            provider.signing_key(),
            &cert,
            now,
            now + ProviderCert::MAX_LIFETIME_MS,
        )
        .unwrap();
        let overlay = reef_overlay::spawn(reef_overlay::Config {
            keypair,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap,
            mdns: false,
            peers_file: None,
            local_record: LocalInfo {
                http: "127.0.0.1:1".into(),
                region: "r".into(),
                capacity: Capacity::default(),
                cert: Some(cert),
            },
            metrics: Metrics::default(),
            peering_timeout: reef_overlay::PEERING_REQUEST_TIMEOUT,
            keep_connections: reef_overlay::DEFAULT_KEEP_CONNECTIONS,
        })
        .await
        .unwrap();
        let notices = overlay.subscribe(PURGE_TOPIC, NOTICE_QUEUE).await.unwrap();
        let purger = Purger::new(store.clone(), overlay.clone(), provider.id());
        purger.listen(notices);
        TestNode {
            overlay,
            purger,
            store,
            _dir: dir,
        }
    }

    async fn store_url(store: &Store, url: &str) -> ContentKey {
        let key = ContentKey::for_url(&CanonicalUrl::parse(url).unwrap());
        let req = http::Request::get(url).body(()).unwrap();
        let res = http::Response::builder()
            .header("cache-control", "max-age=600")
            .body(())
            .unwrap();
        let meta = Meta::new(url.into(), CachePolicy::new(&req, &res), 200, Vec::new());
        let Fill::Leader(guard) = store.fill(key) else {
            panic!("expected to lead");
        };
        let mut writer = guard.start(meta, None).await.unwrap();
        writer.write(b"body").await.unwrap();
        writer.commit().await.unwrap();
        key
    }

    fn notice(provider: ProviderId, url: &str, issued_at: u64) -> Vec<u8> {
        PurgeNotice {
            provider,
            targets: vec![PurgeTarget::url(&CanonicalUrl::parse(url).unwrap())],
            issued_at,
            nonce: rand::random(),
        }
        .encode()
        .unwrap()
    }

    /// Waits until `check` holds for `purger`'s counters.
    async fn counted(purger: &Purger, check: impl Fn(&PurgeStats) -> bool) -> PurgeStats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = purger.stats();
            if check(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "counters stuck at {stats:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notices_apply_only_when_recent_and_from_a_node_of_the_named_provider() {
        let acme = ProviderKey::from_bytes(&[1; 32]);
        // Calls itself acme too, but has its own key.
        let globex = ProviderKey::from_bytes(&[2; 32]).id();
        let a = node(&acme, vec![]).await;
        let a_addr = a.overlay.status().await.unwrap().listen_addrs[0]
            .parse()
            .unwrap();
        let b = node(&acme, vec![a_addr]).await;
        b.overlay.wait_joined(WAIT).await.unwrap();
        a.overlay.wait_joined(WAIT).await.unwrap();
        let url = "http://origin.test/x";
        let key = store_url(&b.store, url).await;

        // A node of acme claiming to speak for another provider: refused. (Published until
        // B hears it: B's subscription reaches A shortly after they connect.)
        let deadline = Instant::now() + WAIT;
        let mut sent = 0;
        while b.purger.stats().received == 0 {
            assert!(Instant::now() < deadline, "b never heard a notice");
            let told = a
                .overlay
                .publish(PURGE_TOPIC, notice(globex, url, unix_now()));
            if told.await.unwrap() == Published::Sent {
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stats = counted(&b.purger, |s| s.rejected == sent).await;
        assert_eq!((stats.received, stats.applied), (sent, 0));

        // Too old to be anything but a replay; and bytes that are no notice at all.
        let old = unix_now() - reef_proto::MAX_PURGE_NOTICE_AGE_SECS - 60;
        for data in [notice(acme.id(), url, old), b"\x02garbage".to_vec()] {
            let told = a.overlay.publish(PURGE_TOPIC, data).await.unwrap();
            assert_eq!(told, Published::Sent);
        }
        counted(&b.purger, |s| s.rejected == sent + 2).await;
        assert!(b.store.get(&key).await.unwrap().is_some(), "still stored");

        // The real thing, through the API: removed at A (nothing there) and at B.
        let outcome = a
            .purger
            .request(PurgeTarget::Url(url.into()))
            .await
            .unwrap();
        assert!(outcome.removed.is_empty());
        assert_eq!(outcome.told.unwrap(), Published::Sent);
        let stats = counted(&b.purger, |s| s.applied == 1).await;
        assert_eq!(stats.objects_removed, 1);
        assert!(b.store.get(&key).await.unwrap().is_none());
        assert_eq!(a.purger.stats().requested, 1);
        assert_eq!(b.purger.stats().requested, 0);
    }
}
