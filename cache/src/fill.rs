//! Filling the cache: one leader per key writes the body to a temp file while any number of
//! followers and tails read it back as it grows.
//!
//! The state of a fill lives in a `watch` channel (one value, so followers never queue up
//! behind a slow writer): `Pending` until the leader knows whether the response is cacheable,
//! then `Streaming` with the byte count written so far and how it ended.
//!
//! A body that goes over its tenant's quota while it is written keeps being written, so tails
//! still get all of it, but the commit discards it instead of storing it.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use reef_proto::ContentKey;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::Error;
use crate::blobs::{BlobId, remove_file_quiet};
use crate::meta::{self, Meta};
use crate::quota::Claim;
use crate::store::{Staged, Store, blocking};

/// Largest chunk a tail hands out: big enough to keep syscalls per byte low, small enough that
/// a peer sees data soon after the origin sends it.
pub const TAIL_CHUNK: usize = 64 * 1024;

/// One fill in progress, shared by the leader, the store's map of fills and every follower.
pub(crate) struct Slot {
    tx: watch::Sender<Phase>,
    /// Set by a purge: the body may predate it, so it is streamed to whoever already reads it
    /// but never committed. Set under the store's index gate, and `Inner::commit` checks it
    /// under the same gate, so a commit and a purge never interleave.
    purged: AtomicBool,
}

impl Slot {
    pub fn new() -> Arc<Slot> {
        Arc::new(Slot {
            tx: watch::Sender::new(Phase::Pending),
            purged: AtomicBool::new(false),
        })
    }

    pub fn send_modify(&self, update: impl FnOnce(&mut Phase)) {
        self.tx.send_modify(update);
    }

    pub fn purge(&self) {
        self.purged.store(true, Ordering::SeqCst);
    }

    pub fn is_purged(&self) -> bool {
        self.purged.load(Ordering::SeqCst)
    }

    /// Whether the URL being filled starts with `prefix`; `None` while the leader still waits
    /// for the response head and the URL is not known here yet.
    pub fn url_starts_with(&self, prefix: &str) -> Option<bool> {
        self.url_matches(|url| url.starts_with(prefix))
    }

    /// Whether `matches` holds for the URL being filled; `None` while it is not known yet.
    pub fn url_matches(&self, matches: impl Fn(&str) -> bool) -> Option<bool> {
        match &*self.tx.borrow() {
            Phase::Streaming { body, .. } => Some(matches(&body.meta.url)),
            Phase::Pending => None,
            // Finished fills leave the map at once; nothing left to stop.
            Phase::Uncached | Phase::Failed => Some(false),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Phase {
    /// The leader is still waiting for the response head.
    Pending,
    Uncached,
    Failed,
    Streaming {
        body: Arc<Body>,
        written: u64,
        end: End,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Open,
    Committed,
    /// The whole body was written, but it was over its tenant's quota and is not kept.
    Unstored,
    Aborted,
}

impl End {
    /// Every byte of the body is in the file.
    fn complete(self) -> bool {
        matches!(self, End::Committed | End::Unstored)
    }
}

/// The body being written: its metadata and the temp file, read and written with positional
/// I/O so the writer and every tail can share one handle. The handle stays valid after the file
/// is renamed into `blobs/` or unlinked on abort.
#[derive(Debug)]
pub(crate) struct Body {
    meta: Meta,
    file: File,
}

/// What `Store::fill` hands out: the first caller for a key fetches, the others wait for it.
#[derive(Debug)]
pub enum Fill {
    Leader(FillGuard),
    Follower(FillWait),
}

/// The right (and duty) to fetch a key. Dropping it without `start` or `skip` means the fetch
/// failed: followers get `Outcome::Failed`.
pub struct FillGuard {
    store: Store,
    key: ContentKey,
    /// None when too many fills were in progress: this leader is not coalesced and cannot store.
    slot: Option<Arc<Slot>>,
}

impl FillGuard {
    pub(crate) fn new(store: Store, key: ContentKey, slot: Option<Arc<Slot>>) -> FillGuard {
        FillGuard { store, key, slot }
    }

    pub fn key(&self) -> ContentKey {
        self.key
    }

    /// The response is cacheable: creates the temp file; followers now see
    /// `Outcome::Streaming`. `expected_len` is the body's length when known in advance.
    /// `Err(Error::Busy)` if this fill could not be registered, `Err(Error::MetaTooLarge)` if the
    /// metadata cannot be stored, and `Err(Error::OverQuota)` if `expected_len` would take
    /// `meta.tenant` past its quota (followers then get `Outcome::Uncached`); in every case the
    /// caller serves its client without caching.
    pub async fn start(mut self, meta: Meta, expected_len: Option<u64>) -> Result<Writer, Error> {
        if self.slot.is_none() {
            return Err(Error::Busy);
        }
        // Refuse metadata that could never be committed before writing any body.
        meta::encode(&meta)?;
        let mut claim = meta
            .tenant
            .as_deref()
            .and_then(|t| Claim::new(&self.store.inner, self.key, t));
        if let (Some(c), Some(len)) = (claim.as_mut(), expected_len)
            && c.grow_to(len).is_err()
        {
            let tenant = c.tenant().to_string();
            self.skip();
            return Err(Error::OverQuota { tenant });
        }
        let temp = self.store.inner.layout.temp_path(&self.key);
        let path = temp.clone();
        let file = blocking(move || {
            Ok(OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?)
        })
        .await?;
        // Only now give up the slot: had the await above been cancelled or failed, dropping
        // `self` tells followers the fill failed.
        let Some(slot) = self.slot.take() else {
            return Err(Error::Busy);
        };
        let body = Arc::new(Body { meta, file });
        slot.tx.send_modify(|p| {
            *p = Phase::Streaming {
                body: body.clone(),
                written: 0,
                end: End::Open,
            }
        });
        Ok(Writer {
            store: self.store.clone(),
            key: self.key,
            slot,
            body,
            temp,
            written: 0,
            hasher: Some(Box::new(blake3::Hasher::new())),
            claim,
            over_quota: None,
            finished: false,
        })
    }

    /// Stores an entry that has no body (such as an index naming other entries), then lets
    /// followers look again (`Outcome::Uncached`), when they will find it.
    pub async fn put_bodiless(self, mut meta: Meta) -> Result<(), Error> {
        if self.slot.is_none() {
            return Err(Error::Busy);
        }
        meta.body_len = 0;
        meta.body_hash = *blake3::hash(&[]).as_bytes();
        meta.stored_at = SystemTime::now();
        let encoded = meta::encode(&meta)?;
        let (blob, variant_of) = (BlobId::from_bytes(meta.body_hash), meta.variant_of);
        let inner = self.store.inner.clone();
        let key = self.key;
        let slot = self.slot.clone();
        let stored = blocking(move || {
            let temp = inner.layout.temp_path(&key);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp)?;
            let staged = Staged {
                file: &file,
                temp: &temp,
                blob,
                len: 0,
                variant_of,
            };
            // A purge that covered this fill leaves nothing stored, which is all it asks.
            let res = inner
                .commit(key, staged, &encoded, None, slot.as_deref())
                .map(|_| ());
            if res.is_err() {
                let _ = remove_file_quiet(&temp);
            }
            res
        })
        .await;
        self.skip();
        stored
    }

    /// The response must not be stored: followers get `Outcome::Uncached` and fetch on their own.
    pub fn skip(mut self) {
        if let Some(slot) = self.slot.take() {
            self.store
                .inner
                .finish_fill(&self.key, &slot, |p| *p = Phase::Uncached);
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.store
                .inner
                .finish_fill(&self.key, &slot, |p| *p = Phase::Failed);
        }
    }
}

impl fmt::Debug for FillGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FillGuard")
            .field("key", &self.key)
            .field("coalesced", &self.slot.is_some())
            .finish()
    }
}

/// Writes one body into the cache. Dropping it without `commit` aborts: the temp file is
/// removed, followers get `Outcome::Failed` and tails an error.
pub struct Writer {
    store: Store,
    key: ContentKey,
    slot: Arc<Slot>,
    body: Arc<Body>,
    temp: PathBuf,
    written: u64,
    /// None once a write failed or was cancelled midway: the hash no longer matches the file, so
    /// the writer can only be dropped.
    hasher: Option<Box<blake3::Hasher>>,
    /// The tenant's quota held for the bytes written so far; None if it has no quota (or the
    /// body went over it).
    claim: Option<Claim>,
    /// The tenant whose quota the body went over: it is still written for its readers, and
    /// `commit` discards it.
    over_quota: Option<String>,
    /// Committed, or completed without storing: nothing left for `Drop` to abort.
    finished: bool,
}

impl Writer {
    pub fn key(&self) -> ContentKey {
        self.key
    }

    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The blake3 and length of the body written so far, which `commit` will store it under
    /// (so a caller can vouch for the bytes before readers see the end); None once the body
    /// went over its quota (it is no longer hashed then) or a write failed.
    pub fn digest(&self) -> Option<([u8; 32], u64)> {
        if self.over_quota.is_some() {
            return None;
        }
        let hasher = self.hasher.as_ref()?;
        Some((*hasher.clone().finalize().as_bytes(), self.written))
    }

    /// Appends a chunk, hashing it on the way, and wakes tails. `Err(Error::TooLarge)` once the
    /// body would exceed the cache's budget; after any error the writer only accepts being
    /// dropped. Going over the tenant's quota is not an error here: see `commit`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let Some(mut hasher) = self.hasher.take() else {
            return Err(Error::Aborted);
        };
        if chunk.is_empty() {
            self.hasher = Some(hasher);
            return Ok(());
        }
        let end = self.written + chunk.len() as u64;
        if end > self.store.inner.max_bytes {
            return Err(Error::TooLarge);
        }
        self.claim_to(end);
        // A body that will not be stored needs no hash.
        let hash = self.over_quota.is_none();
        let body = self.body.clone();
        let buf = chunk.to_vec();
        let offset = self.written;
        let (hasher, res) = tokio::task::spawn_blocking(move || {
            let res = body.file.write_all_at(&buf, offset);
            if hash {
                hasher.update(&buf);
            }
            (hasher, res)
        })
        .await?;
        res?;
        self.hasher = Some(hasher);
        self.written = end;
        self.slot.tx.send_modify(|p| {
            if let Phase::Streaming { written, .. } = p {
                *written = end;
            }
        });
        Ok(())
    }

    /// Holds `end` bytes of the tenant's quota, or marks the body as over it (and gives back
    /// what was held, so other fills of the tenant may use it).
    fn claim_to(&mut self, end: u64) {
        let Some(claim) = self.claim.as_mut() else {
            return;
        };
        if claim.grow_to(end).is_err() {
            self.over_quota = Some(claim.tenant().to_string());
            self.claim = None;
        }
    }

    /// Makes the body durable and visible: fsync, rename into `blobs/`, fsync the directory,
    /// commit the index entry, then evict down to the budget. Returns the stored `Meta` with
    /// length, hash and time filled in.
    ///
    /// `Err(Error::OverQuota)` if the body went over its tenant's quota, and `Err(Error::Purged)`
    /// if a purge covered this fill while it ran: either way readers still get the whole body,
    /// but the temp file is removed and nothing is stored (nor to be announced).
    pub async fn commit(mut self) -> Result<Meta, Error> {
        let Some(hasher) = self.hasher.take() else {
            return Err(Error::Aborted);
        };
        if let Some(tenant) = self.over_quota.take() {
            self.finish_unstored();
            return Err(Error::OverQuota { tenant });
        }
        let blob = hasher.finalize();
        let mut meta = self.body.meta.clone();
        meta.body_len = self.written;
        meta.body_hash = *blob.as_bytes();
        meta.stored_at = SystemTime::now();
        // Encoded here, before any disk work, so an unencodable meta leaves nothing behind.
        let encoded = meta::encode(&meta)?;

        let inner = self.store.inner.clone();
        let body = self.body.clone();
        let temp = self.temp.clone();
        let (key, len, variant_of) = (self.key, self.written, meta.variant_of);
        let claim = self.claim.take();
        let slot = self.slot.clone();
        let stored = blocking(move || {
            let staged = Staged {
                file: &body.file,
                temp: &temp,
                blob,
                len,
                variant_of,
            };
            inner.commit(key, staged, &encoded, claim, Some(&slot))
        })
        .await?;
        if !stored {
            self.finish_unstored();
            return Err(Error::Purged);
        }

        self.finished = true;
        self.store.inner.finish_fill(&self.key, &self.slot, |p| {
            if let Phase::Streaming { end, .. } = p {
                *end = End::Committed;
            }
        });
        debug!(key = %self.key.short(), len, blob = %blob.to_hex(), "cache fill committed");
        Ok(meta)
    }

    /// Aborts explicitly; the same as dropping the writer.
    pub fn abort(self) {}

    /// Ends a complete body that must not be stored: readers finish it through their open
    /// handles, and the temp file goes.
    fn finish_unstored(&mut self) {
        self.finished = true;
        self.store.inner.finish_fill(&self.key, &self.slot, |p| {
            if let Phase::Streaming { end, .. } = p {
                *end = End::Unstored;
            }
        });
        if let Err(e) = remove_file_quiet(&self.temp) {
            warn!(path = %self.temp.display(), error = %e, "cannot remove temp file");
        }
        debug!(key = %self.key.short(), written = self.written, "cache fill over quota; served, not stored");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.store.inner.finish_fill(&self.key, &self.slot, |p| {
            if let Phase::Streaming { end, .. } = p {
                *end = End::Aborted;
            }
        });
        // Unlinking here, on whatever thread drops us, is cheap: `body` still holds the file
        // open, so this only removes a directory entry; blocks are freed at the last close.
        if let Err(e) = remove_file_quiet(&self.temp) {
            warn!(path = %self.temp.display(), error = %e, "cannot remove aborted temp file");
        }
        debug!(key = %self.key.short(), written = self.written, "cache fill aborted");
    }
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish()
    }
}

/// A follower's ticket: resolves once the leader has decided.
#[derive(Debug)]
pub struct FillWait {
    rx: watch::Receiver<Phase>,
}

impl FillWait {
    pub(crate) fn new(rx: watch::Receiver<Phase>) -> FillWait {
        FillWait { rx }
    }

    pub async fn wait(self) -> Outcome {
        let mut rx = self.rx;
        let body = {
            let Ok(phase) = rx.wait_for(|p| !matches!(p, Phase::Pending)).await else {
                return Outcome::Failed;
            };
            match &*phase {
                Phase::Streaming { body, end, .. } if *end != End::Aborted => body.clone(),
                Phase::Uncached => return Outcome::Uncached,
                _ => return Outcome::Failed,
            }
        };
        Outcome::Streaming(Tail::new(rx, body))
    }
}

/// How a leader's fill turned out, as a follower sees it.
#[derive(Debug)]
pub enum Outcome {
    /// The body is being stored; read it from the start.
    Streaming(Tail),
    /// Not cacheable: fetch on your own.
    Uncached,
    /// The leader's fetch failed: fetch on your own (or give up).
    Failed,
}

/// A reader of a body while it is being written; it keeps working after the commit renames the
/// file, because it reads through the fill's own handle.
pub struct Tail {
    rx: watch::Receiver<Phase>,
    body: Arc<Body>,
    pos: u64,
}

impl Tail {
    fn new(rx: watch::Receiver<Phase>, body: Arc<Body>) -> Tail {
        Tail { rx, body, pos: 0 }
    }

    /// A tail of `slot` if it is streaming and not aborted.
    pub(crate) fn of(slot: &Slot) -> Option<Tail> {
        let rx = slot.tx.subscribe();
        let body = match &*rx.borrow() {
            Phase::Streaming { body, end, .. } if *end != End::Aborted => body.clone(),
            _ => return None,
        };
        Some(Tail::new(rx, body))
    }

    /// Length, hash and time are still zero while the fill is in progress.
    pub fn meta(&self) -> &Meta {
        &self.body.meta
    }

    /// The next chunk (at most `TAIL_CHUNK` bytes); `Ok(None)` at the end of a complete body
    /// (committed, or over quota and not stored), `Err(Error::Aborted)` if the writer gave up.
    /// Waits while caught up with the writer.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        let mut writer_gone = false;
        loop {
            let (written, end) = match &*self.rx.borrow_and_update() {
                Phase::Streaming { written, end, .. } => (*written, *end),
                _ => return Err(Error::Aborted),
            };
            if end == End::Aborted {
                return Err(Error::Aborted);
            }
            if self.pos < written {
                let n = (written - self.pos).min(TAIL_CHUNK as u64) as usize;
                let (body, pos) = (self.body.clone(), self.pos);
                let buf = blocking(move || {
                    let mut buf = vec![0; n];
                    body.file.read_exact_at(&mut buf, pos)?;
                    Ok(buf)
                })
                .await?;
                self.pos += n as u64;
                return Ok(Some(Bytes::from(buf)));
            }
            if end.complete() {
                return Ok(None);
            }
            // The state above was the last one ever sent, and it was not an end.
            if writer_gone {
                return Err(Error::Aborted);
            }
            if self.rx.changed().await.is_err() {
                writer_gone = true;
            }
        }
    }
}

impl fmt::Debug for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tail")
            .field("url", &self.body.meta.url)
            .field("pos", &self.pos)
            .finish()
    }
}

pub(crate) fn subscribe(slot: &Slot) -> FillWait {
    FillWait::new(slot.tx.subscribe())
}
