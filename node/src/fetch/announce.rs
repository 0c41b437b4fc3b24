//! Telling the DHT that we hold an object, off the request path and with bounded effort.

use std::sync::Arc;

use reef_proto::ContentKey;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Announcements in flight at once; beyond this new ones are dropped (the next start
/// re-announces everything we hold), so a burst of fills cannot pile up DHT queries.
const MAX_CONCURRENT_ANNOUNCES: usize = 64;

#[derive(Clone)]
pub struct Announcer {
    overlay: reef_overlay::Client,
    permits: Arc<Semaphore>,
}

impl Announcer {
    pub fn new(overlay: reef_overlay::Client) -> Self {
        Self {
            overlay,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_ANNOUNCES)),
        }
    }

    pub fn announce(&self, key: ContentKey) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            warn!(key = %key.short(), "too many announcements in flight; skipping this one");
            return;
        };
        let overlay = self.overlay.clone();
        tokio::spawn(async move {
            if let Err(e) = overlay.provide(key).await {
                debug!(key = %key.short(), error = %e, "announcement failed");
            }
            drop(permit);
        });
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
