//! Telling the DHT that we hold an object, off the request path and with bounded effort; for
//! an object fetched from its origin, first publishing the signed ContentRecord that lets
//! other nodes verify the copies they fetch from peers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reef_proto::ContentKey;
use reef_proto::records::{ContentRecord, Record, SigningKey, content_record_key, seal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Announcements in flight at once; beyond this new ones are dropped (the next start
/// re-announces everything we hold), so a burst of fills cannot pile up DHT queries.
const MAX_CONCURRENT_ANNOUNCES: usize = 64;

#[derive(Clone)]
pub struct Announcer {
    overlay: reef_overlay::Client,
    signer: Arc<SigningKey>,
    permits: Arc<Semaphore>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    done: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// Announcement counters for the admin API: a test or an operator can see when what a node
/// stored has become findable.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct AnnounceStats {
    pub done: u64,
    pub failed: u64,
    pub skipped: u64,
    pub in_flight: u64,
}

impl Announcer {
    pub fn new(overlay: reef_overlay::Client, signer: SigningKey) -> Self {
        Self {
            overlay,
            signer: Arc::new(signer),
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_ANNOUNCES)),
            counts: Arc::default(),
        }
    }

    pub fn stats(&self) -> AnnounceStats {
        let c = &self.counts;
        AnnounceStats {
            done: c.done.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            in_flight: (MAX_CONCURRENT_ANNOUNCES - self.permits.available_permits()) as u64,
        }
    }

    /// Announces `key`; with `record` (for a body fetched from the origin) publishes it first, so
    /// that whoever finds us as a holder can also find what our body must hash to.
    pub fn announce(&self, key: ContentKey, record: Option<ContentRecord>) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            warn!(key = %key.short(), "too many announcements in flight; skipping this one");
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        tokio::spawn(self.clone().provide(key, record, permit));
    }

    async fn provide(
        self,
        key: ContentKey,
        record: Option<ContentRecord>,
        permit: OwnedSemaphorePermit,
    ) {
        if let Some(record) = record
            && let Err(e) = self.publish(&record).await
        {
            // Peers cannot verify our copy without it; they fetch elsewhere. Still announce:
            // an older record for the same body may be out there.
            debug!(key = %key.short(), error = %e, "publishing the content record failed");
        }
        match self.overlay.provide(key).await {
            Ok(()) => self.counts.done.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                debug!(key = %key.short(), error = %e, "announcement failed");
                self.counts.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        drop(permit);
    }

    async fn publish(&self, record: &ContentRecord) -> Result<(), String> {
        let now = crate::provider::unix_ms();
        let sealed = seal(
            &self.signer,
            record,
            now,
            now + ContentRecord::MAX_LIFETIME_MS,
        )
        .map_err(|e| e.to_string())?;
        self.overlay
            .put_record(content_record_key(&record.key), sealed)
            .await
            .map_err(|e| e.to_string())
    }

    /// Re-announces every stored object, a bounded number at a time (used once at start).
    pub async fn announce_all(&self, keys: Vec<ContentKey>) {
        for key in keys {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                return;
            };
            let overlay = self.overlay.clone();
            tokio::spawn(async move {
                if let Err(e) = overlay.provide(key).await {
                    debug!(key = %key.short(), error = %e, "re-announcement failed");
                }
                drop(permit);
            });
        }
    }
}
