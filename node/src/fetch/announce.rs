//! Telling the DHT that we hold an object, off the request path and with bounded effort; for
//! an object fetched from its origin, publishing the signed ContentRecord that lets other
//! nodes verify the copies they fetch from peers.
//!
//! A fill from the origin is announced as soon as it starts (peers may stream it from us while
//! it arrives) and vouched for when it commits: the record is sealed at once and kept here for
//! a while, so peers that streamed the body from us can fetch it from us directly
//! (`/_reef/record/<key>`) without waiting for the DHT, and published to the DHT for everyone.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reef_proto::ContentKey;
use reef_proto::records::{ContentRecord, Record, SigningKey, content_record_key, seal};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Announcements in flight at once; beyond this new ones are dropped (the next start
/// re-announces everything we hold), so a burst of fills cannot pile up DHT queries.
const MAX_CONCURRENT_ANNOUNCES: usize = 64;
/// Sealed records kept for peers that streamed the body from us: they ask within milliseconds
/// of the commit, and the DHT has the record for anyone later.
const MAX_RECENT_RECORDS: usize = 1024;
/// Early announcements awaiting their fill's end; fills in progress are bounded (256) well
/// below this.
const MAX_EARLY: usize = 1024;

#[derive(Clone)]
pub struct Announcer {
    overlay: reef_overlay::Client,
    signer: Arc<SigningKey>,
    permits: Arc<Semaphore>,
    counts: Arc<Counts>,
    recent: Arc<Mutex<Recent>>,
    /// Announcements made at fill start, until the fill's end takes them (bounded: fills are).
    early: Arc<Mutex<HashMap<ContentKey, JoinHandle<bool>>>>,
}

/// The last [`MAX_RECENT_RECORDS`] records we sealed, by content key.
#[derive(Default)]
struct Recent {
    sealed: HashMap<ContentKey, Vec<u8>>,
    order: VecDeque<ContentKey>,
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
            recent: Arc::default(),
            early: Arc::default(),
        }
    }

    /// Seals `record` (for a body we fetched from its origin, complete but not yet committed)
    /// and keeps it for [`Announcer::sealed`], so that peers streaming the body from us can
    /// have it the moment their stream ends. None if it cannot be sealed.
    pub fn seal(&self, record: &ContentRecord) -> Option<Vec<u8>> {
        let now = crate::provider::unix_ms();
        match seal(
            &self.signer,
            record,
            now,
            now + ContentRecord::MAX_LIFETIME_MS,
        ) {
            Ok(sealed) => {
                self.remember(record.key, sealed.clone());
                Some(sealed)
            }
            Err(e) => {
                warn!(key = %record.key.short(), error = %e, "cannot seal our content record");
                None
            }
        }
    }

    /// Publishes a record [`Announcer::seal`] made, once its body is committed, to the DHT in
    /// the background. We announced the key when the fill started; the object counts as
    /// announced (`done`) once both are out.
    pub fn vouch(&self, key: ContentKey, sealed: Vec<u8>) {
        let early = self.take_early(&key);
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            warn!(key = %key.short(), "too many announcements in flight; not publishing this record");
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let published = this
                .overlay
                .put_record(content_record_key(&key), sealed)
                .await;
            let provided = match early {
                Some(task) => task.await.unwrap_or(false),
                None => this.overlay.provide(key).await.is_ok(),
            };
            match published {
                Ok(()) if provided => this.counts.done.fetch_add(1, Ordering::Relaxed),
                Ok(()) => this.counts.failed.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    debug!(key = %key.short(), error = %e, "publishing the content record failed");
                    this.counts.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            drop(permit);
        });
    }

    /// Announces `key` as a fill from the origin starts, so that peers can stream it from us
    /// while it arrives. [`Announcer::vouch`] (after the commit) or [`Announcer::withdraw`]
    /// (when nothing was stored) follows.
    pub fn announce_early(&self, key: ContentKey) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            warn!(key = %key.short(), "too many announcements in flight; skipping this one");
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let overlay = self.overlay.clone();
        let task = tokio::spawn(async move {
            let result = overlay.provide(key).await;
            drop(permit);
            match result {
                Ok(()) => true,
                Err(e) => {
                    debug!(key = %key.short(), error = %e, "early announcement failed");
                    false
                }
            }
        });
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        if early.len() < MAX_EARLY {
            early.insert(key, task);
        }
    }

    fn take_early(&self, key: &ContentKey) -> Option<JoinHandle<bool>> {
        let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
        early.remove(key)
    }

    /// Keeps a sealed ContentRecord for `key` (ours, or the one a peer's copy checked out
    /// against) to hand to peers with our copy: they check it themselves, so passing on
    /// another node's record is safe, and saves them a DHT lookup.
    pub fn remember(&self, key: ContentKey, sealed: Vec<u8>) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.sealed.insert(key, sealed).is_none() {
            recent.order.push_back(key);
        }
        while recent.order.len() > MAX_RECENT_RECORDS {
            if let Some(old) = recent.order.pop_front() {
                recent.sealed.remove(&old);
            }
        }
    }

    /// The sealed ContentRecord for `key` we made or checked lately, if any.
    pub fn sealed(&self, key: &ContentKey) -> Option<Vec<u8>> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.sealed.get(key).cloned()
    }

    /// A fill we announced at its start ended without storing anything: stop naming us.
    pub fn withdraw(&self, key: ContentKey) {
        let early = self.take_early(&key);
        let overlay = self.overlay.clone();
        tokio::spawn(async move {
            // After the announcement, or it could land after the withdrawal.
            if let Some(task) = early {
                let _ = task.await;
            }
            if let Err(e) = overlay.unprovide(key).await {
                debug!(key = %key.short(), error = %e, "withdrawing the announcement failed");
            }
        });
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
