//! Telling the DHT that we hold an object, off the request path and with bounded effort.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reef_proto::ContentKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

/// Announcements in flight at once; beyond this new ones are dropped (the next start
/// re-announces everything we hold), so a burst of fills cannot pile up DHT queries.
const MAX_CONCURRENT_ANNOUNCES: usize = 64;

#[derive(Clone)]
pub struct Announcer {
    overlay: reef_overlay::Client,
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
    pub fn new(overlay: reef_overlay::Client) -> Self {
        Self {
            overlay,
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

    pub fn announce(&self, key: ContentKey) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            warn!(key = %key.short(), "too many announcements in flight; skipping this one");
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        tokio::spawn(self.clone().provide(key, permit));
    }

    async fn provide(self, key: ContentKey, permit: OwnedSemaphorePermit) {
        match self.overlay.provide(key).await {
            Ok(()) => self.counts.done.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                debug!(key = %key.short(), error = %e, "announcement failed");
                self.counts.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        drop(permit);
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
