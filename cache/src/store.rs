//! The store: ties the blob files, the persistent index and the in-memory catalog together and
//! keeps them consistent across concurrent fills, removals, evictions and crashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use reef_proto::ContentKey;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::Error;
use crate::blobs::{BlobId, Layout, remove_file_quiet, sync_dir};
use crate::catalog::{Catalog, Touched};
use crate::fill::{self, Fill, FillGuard, Slot, Tail};
use crate::hot::{HotEntry, MAX_HOT_BODY};
use crate::index::Index;
use crate::meta::Meta;
use crate::policy::{Policy, S3Fifo};
use crate::quota::{Claim, Ledger, QuotaStats};

/// Most committed objects kept, whatever their size: each costs ~350 bytes of memory in the
/// catalog and the eviction policy (ghost keys included), and empty bodies would otherwise fill
/// it without touching the byte budget.
pub const MAX_OBJECTS: usize = 1 << 20;

/// Most fills in progress at once: each holds an open file descriptor and a temp file that the
/// byte budget does not count. Beyond this a fill still fetches but does not store.
pub const MAX_FILLS: usize = 256;

const INDEX_FILE: &str = "index.redb";

#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `index.redb`, `blobs/` and `tmp/`; created if missing.
    pub dir: PathBuf,
    /// Budget for stored body bytes (identical bodies count once). Also the largest body
    /// accepted.
    pub max_bytes: u64,
    /// Byte quota per tenant (`Meta::tenant`), on top of the shared budget. A body that would
    /// take its tenant past its quota is not stored; tenants not listed only share the budget.
    pub quotas: HashMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub objects: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// A committed object, ready to serve.
#[derive(Debug)]
pub struct Hit {
    /// Shared with the store's memory of hot entries: cloning it costs a reference count.
    pub meta: Arc<Meta>,
    /// The stored response header fields (`Meta::header_map`), shared the same way.
    pub headers: Arc<http::HeaderMap>,
    pub body: HitBody,
}

/// Where a hit's bytes are.
pub enum HitBody {
    /// The whole body, held in memory (an object up to `MAX_HOT_BODY`).
    Memory(Bytes),
    /// The body's file, open, its length checked against `Meta::body_len`. Blobs are never
    /// written in place, so positional reads (`FileExt::read_at`) of it are stable.
    File(File),
}

impl fmt::Debug for HitBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HitBody::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
            HitBody::File(file) => f.debug_tuple("File").field(file).finish(),
        }
    }
}

/// Handle to the cache; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    pub(crate) max_bytes: u64,
    pub(crate) layout: Layout,
    pub(crate) index: Index,
    pub(crate) catalog: Mutex<Catalog>,
    /// Serialises installing and deleting blob files with the reference check that justifies
    /// them, so a blob is never unlinked just after a commit decided to reuse it.
    blob_gate: Mutex<()>,
    /// Serialises each index write with the matching catalog change, so both see the same
    /// order of inserts and removes for a key.
    pub(crate) index_gate: Mutex<()>,
    pub(crate) fills: Mutex<HashMap<ContentKey, Arc<Slot>>>,
}

impl Store {
    /// Opens (or creates) the cache in `config.dir` and repairs what a crash may have left:
    /// temp files, blobs no entry refers to, and entries whose blob is missing or has the wrong
    /// length. Blocks on disk; call it at start-up or on a blocking thread.
    ///
    /// Evicts with S3-FIFO (see `S3Fifo`): scan-resistant, and one huge object cannot flush the
    /// objects that are read again and again.
    pub fn open(config: Config) -> Result<Store, Error> {
        Store::open_with(config, |max_bytes| Box::new(S3Fifo::new(max_bytes)))
    }

    /// `open` with another eviction policy, made for the byte budget.
    pub(crate) fn open_with(
        config: Config,
        policy: impl FnOnce(u64) -> Box<dyn Policy>,
    ) -> Result<Store, Error> {
        fs::create_dir_all(&config.dir)?;
        let layout = Layout::new(&config.dir);
        layout.create_dirs(&config.dir)?;
        // The index's file lock keeps a second store off this directory, so take it before
        // deleting anything a live store might still be writing.
        let index = Index::open(&config.dir.join(INDEX_FILE))?;
        let temps = layout.clear_tmp()?;

        let mut blob_lens: HashMap<BlobId, Option<u64>> = HashMap::new();
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (key, summary) in index.summaries()? {
            let s = match summary {
                Ok(s) => s,
                Err(e) => {
                    warn!(key = %key.short(), error = %e, "dropping undecodable cache entry");
                    bad.push(key);
                    continue;
                }
            };
            let blob = BlobId::from_bytes(s.body_hash);
            let on_disk = *blob_lens
                .entry(blob)
                .or_insert_with(|| file_len(&layout.blob_path(&blob)));
            if on_disk == Some(s.body_len) {
                good.push((s.stored_at, key, blob, s.body_len, s.tenant, s.variant_of));
            } else {
                warn!(key = %key.short(), expected = s.body_len, found = ?on_disk, "dropping cache entry with a missing or wrong-sized body");
                bad.push(key);
            }
        }
        index.delete(&bad)?;
        let referenced: HashSet<BlobId> = good.iter().map(|g| g.2).collect();
        let swept = layout.sweep(|b| referenced.contains(b))?;

        // Access history is not persisted; the order objects were stored in is the best guess.
        good.sort_by_key(|g| g.0);
        let mut catalog = Catalog::new(policy(config.max_bytes), Ledger::new(&config.quotas));
        for (_, key, blob, len, tenant, variant_of) in good {
            catalog.pin(blob, len);
            catalog.restore_pinned(key, blob, tenant.as_deref());
            if let Some(primary) = variant_of {
                catalog.set_variant_of(key, primary);
            }
        }

        let store = Store {
            inner: Arc::new(Inner {
                dir: config.dir,
                max_bytes: config.max_bytes,
                layout,
                index,
                catalog: Mutex::new(catalog),
                blob_gate: Mutex::new(()),
                index_gate: Mutex::new(()),
                fills: Mutex::new(HashMap::new()),
            }),
        };
        // The budget may have shrunk since the last run.
        let evicted = store.inner.evict()?;
        let stats = store.stats();
        info!(
            dir = %store.inner.dir.display(),
            objects = stats.objects,
            bytes = stats.bytes,
            max_bytes = stats.max_bytes,
            dropped = bad.len(),
            swept,
            temps,
            evicted,
            "cache opened"
        );
        Ok(store)
    }

    /// A committed object, marked as read: from memory if it was read recently (no blocking
    /// work at all for a small one), else from the index and its body file, checking the
    /// body's length. `None` if absent; also `None` (and the entry removed) if the body is
    /// missing or its length differs from the index, so a truncated body is never served.
    pub async fn get(&self, key: &ContentKey) -> Result<Option<Hit>, Error> {
        let Some(touched) = lock(&self.inner.catalog).touch_hot(key) else {
            return Ok(None);
        };
        if let Some(HotEntry {
            meta,
            headers,
            body: Some(body),
            ..
        }) = touched.hot
        {
            return Ok(Some(Hit {
                meta,
                headers,
                body: HitBody::Memory(body),
            }));
        }
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || inner.lookup(key, touched)).await
    }
    /// Coalesces fills: the first caller for a key leads, the others follow until the leader
    /// commits, skips or drops.
    pub fn fill(&self, key: ContentKey) -> Fill {
        let mut fills = lock(&self.inner.fills);
        if let Some(slot) = fills.get(&key) {
            return Fill::Follower(fill::subscribe(slot));
        }
        if fills.len() >= MAX_FILLS {
            warn!(key = %key.short(), max = MAX_FILLS, "too many fills in progress; not storing this one");
            return Fill::Leader(FillGuard::new(self.clone(), key, None));
        }
        let slot = Slot::new();
        fills.insert(key, slot.clone());
        Fill::Leader(FillGuard::new(self.clone(), key, Some(slot)))
    }

    /// The in-progress fill of `key`, readable from its start, if its body is being written.
    pub fn tail(&self, key: &ContentKey) -> Option<Tail> {
        lock(&self.inner.fills).get(key).and_then(|s| Tail::of(s))
    }

    /// Replaces the metadata of a committed object whose body is unchanged (a revalidation
    /// answered 304). False, and nothing written, if the entry is gone or now holds another
    /// body than `meta.body_hash` names.
    pub async fn refresh(&self, key: &ContentKey, meta: Meta) -> Result<bool, Error> {
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || {
            let encoded = crate::meta::encode(&meta)?;
            let _gate = lock(&inner.index_gate);
            if lock(&inner.catalog).blob_of(&key) != Some(BlobId::from_bytes(meta.body_hash)) {
                return Ok(false);
            }
            inner.index.put(&key, &encoded)?;
            lock(&inner.catalog).rewritten(&key);
            Ok(true)
        })
        .await
    }

    /// Removes a committed object; false if there was none.
    pub async fn remove(&self, key: &ContentKey) -> Result<bool, Error> {
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || inner.remove_entry(key, None)).await
    }

    /// Where callers may create scratch files (best unnamed, e.g. `tempfile::tempfile_in`):
    /// on the cache's file system, and emptied at every open.
    pub fn scratch_dir(&self) -> PathBuf {
        self.inner.layout.tmp_dir().to_path_buf()
    }

    pub fn stats(&self) -> Stats {
        let c = lock(&self.inner.catalog);
        Stats {
            objects: c.objects(),
            bytes: c.bytes(),
            max_bytes: self.inner.max_bytes,
        }
    }

    /// A committed object's metadata, from the index, without marking the object as read:
    /// for housekeeping that must not look like demand to the eviction policy.
    pub async fn peek(&self, key: &ContentKey) -> Result<Option<Meta>, Error> {
        let inner = self.inner.clone();
        let key = *key;
        blocking(move || inner.index.get(&key)).await
    }

    /// Keys of all committed objects.
    pub fn keys(&self) -> Vec<ContentKey> {
        lock(&self.inner.catalog).keys()
    }

    /// Usage and refusals of every tenant with a quota, by tenant.
    pub fn quotas(&self) -> BTreeMap<String, QuotaStats> {
        lock(&self.inner.catalog).quotas()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

// Everything below blocks on disk and runs on a blocking thread (or in `open`).
impl Inner {
    /// Reads what the catalog entry `touched` describes: the hot metadata if it has some,
    /// else the index row; then the body file, whose length must match. A small body is read
    /// whole and, with the metadata, kept hot for the next reader.
    fn lookup(&self, key: ContentKey, touched: Touched) -> Result<Option<Hit>, Error> {
        let (meta, headers, hot) = match touched.hot {
            Some(hot) => (hot.meta, hot.headers, true),
            None => match self.index.get(&key) {
                Ok(Some(meta)) => {
                    let headers = Arc::new(meta.header_map());
                    (Arc::new(meta), headers, false)
                }
                // Also what a concurrent removal looks like; `drop_damaged` then finds nothing
                // to do.
                Ok(None) => return self.drop_damaged(key, touched.blob, "no index entry"),
                Err(Error::Corrupt(why)) => return self.drop_damaged(key, touched.blob, &why),
                Err(e) => return Err(e),
            },
        };
        let blob = BlobId::from_bytes(meta.body_hash);
        let mut file = match File::open(self.layout.blob_path(&blob)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.drop_damaged(key, blob, "body file missing");
            }
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        if len != meta.body_len {
            let why = format!("body file has {len} bytes, index says {}", meta.body_len);
            return self.drop_damaged(key, blob, &why);
        }
        if hot || len > MAX_HOT_BODY {
            if !hot {
                self.remember(key, touched.generation, &meta, &headers, None);
            }
            return Ok(Some(Hit {
                meta,
                headers,
                body: HitBody::File(file),
            }));
        }
        let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // One byte more than expected, to notice a body that grew under us.
        (&mut file).take(len + 1).read_to_end(&mut body)?;
        if body.len() as u64 != len {
            let why = format!("body file has {} bytes, index says {len}", body.len());
            return self.drop_damaged(key, blob, &why);
        }
        let body = Bytes::from(body);
        self.remember(key, touched.generation, &meta, &headers, Some(body.clone()));
        Ok(Some(Hit {
            meta,
            headers,
            body: HitBody::Memory(body),
        }))
    }

    fn remember(
        &self,
        key: ContentKey,
        generation: u64,
        meta: &Arc<Meta>,
        headers: &Arc<http::HeaderMap>,
        body: Option<Bytes>,
    ) {
        lock(&self.catalog).remember(
            key,
            HotEntry {
                generation,
                meta: meta.clone(),
                headers: headers.clone(),
                body,
            },
        );
    }

    fn drop_damaged<T>(
        &self,
        key: ContentKey,
        blob: BlobId,
        why: &str,
    ) -> Result<Option<T>, Error> {
        if self.remove_entry(key, Some(blob))? {
            warn!(key = %key.short(), why, "dropped damaged cache entry");
        }
        Ok(None)
    }

    /// Removes the entry for `key` (only if it still points at `only_blob`, when given): index
    /// first, then the blob file if nothing else refers to it, so a crash in between leaves an
    /// orphan blob that `open` sweeps, never an entry without a body.
    pub(crate) fn remove_entry(
        &self,
        key: ContentKey,
        only_blob: Option<BlobId>,
    ) -> Result<bool, Error> {
        let removed = {
            let _gate = lock(&self.index_gate);
            let Some(current) = lock(&self.catalog).blob_of(&key) else {
                return Ok(false);
            };
            if only_blob.is_some_and(|b| b != current) {
                return Ok(false);
            }
            self.index.delete(&[key])?;
            lock(&self.catalog).remove(&key)
        };
        if let Some(r) = &removed
            && r.orphaned
        {
            self.release_blob(r.blob);
        }
        Ok(removed.is_some())
    }

    /// Removes the objects the policy picks until the catalog fits the budget.
    fn evict(&self) -> Result<usize, Error> {
        let (count, orphans) = {
            let _gate = lock(&self.index_gate);
            let victims = lock(&self.catalog).victims(self.max_bytes, MAX_OBJECTS);
            if victims.is_empty() {
                return Ok(0);
            }
            if let Err(e) = self.index.delete(&victims) {
                lock(&self.catalog).unpick(&victims);
                return Err(e);
            }
            let mut catalog = lock(&self.catalog);
            let orphans: Vec<BlobId> = victims
                .iter()
                .filter_map(|k| catalog.remove(k))
                .filter(|r| r.orphaned)
                .map(|r| r.blob)
                .collect();
            (victims.len(), orphans)
        };
        for blob in orphans {
            self.release_blob(blob);
        }
        debug!(count, "evicted cache objects");
        Ok(count)
    }

    /// The blocking half of `Writer::commit`. The fill's quota claim (if any) turns into the
    /// entry's stored bytes in the same catalog update, so the tenant is never counted twice
    /// nor left uncounted; on failure dropping the claim gives its bytes back.
    ///
    /// False, and nothing stored, if a purge covered the fill: checked under the index gate,
    /// which the purge also holds while it marks fills, so a commit lands either before the
    /// purge (and the purge removes it) or not at all.
    pub(crate) fn commit(
        &self,
        key: ContentKey,
        staged: Staged<'_>,
        encoded: &[u8],
        mut claim: Option<Claim>,
        slot: Option<&Slot>,
    ) -> Result<bool, Error> {
        let purged = || slot.is_some_and(Slot::is_purged);
        let Staged {
            file,
            temp,
            blob,
            len,
            variant_of,
        } = staged;
        if purged() {
            return Ok(false);
        }
        // The bytes must be on disk before any name or index entry points at them.
        file.sync_all()?;
        self.install_blob(temp, blob, len)?;
        let replaced = {
            let _gate = lock(&self.index_gate);
            if purged() {
                drop(_gate);
                if lock(&self.catalog).unpin(&blob) {
                    self.release_blob(blob);
                }
                return Ok(false);
            }
            match self.index.put(&key, encoded) {
                Ok(()) => {
                    let mut catalog = lock(&self.catalog);
                    let tenant = claim.as_mut().map(|c| c.settle(&mut catalog));
                    let replaced = catalog.insert_pinned(key, blob, tenant.as_deref());
                    if let Some(primary) = variant_of {
                        catalog.set_variant_of(key, primary);
                    }
                    replaced
                }
                Err(e) => {
                    drop(_gate);
                    if lock(&self.catalog).unpin(&blob) {
                        self.release_blob(blob);
                    }
                    return Err(e);
                }
            }
        };
        if let Some(r) = replaced
            && r.orphaned
        {
            self.release_blob(r.blob);
        }
        // The object is stored; an eviction failure only delays reclaiming space until the next
        // commit retries it.
        if let Err(e) = self.evict() {
            warn!(error = %e, "cache eviction failed");
        }
        Ok(true)
    }

    /// Puts the temp file in place as blob `blob` (or drops it if an identical blob is already
    /// there) and takes a reference on the blob for the entry about to be inserted.
    fn install_blob(&self, temp: &Path, blob: BlobId, len: u64) -> Result<(), Error> {
        let _gate = lock(&self.blob_gate);
        let already = lock(&self.catalog).pin(blob, len);
        let path = self.layout.blob_path(&blob);
        if already && file_len(&path) == Some(len) {
            if let Err(e) = remove_file_quiet(temp) {
                // Harmless debris: `open` clears `tmp/`.
                warn!(path = %temp.display(), error = %e, "cannot remove duplicate temp file");
            }
            return Ok(());
        }
        // A rename over a damaged file of the same name repairs it for every entry sharing it.
        let res = fs::rename(temp, &path).and_then(|()| sync_dir(&self.layout.fanout_dir(&blob)));
        if let Err(e) = res {
            if lock(&self.catalog).unpin(&blob)
                && let Err(e) = remove_file_quiet(&path)
            {
                warn!(path = %path.display(), error = %e, "cannot remove blob");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Deletes a blob's file if nothing refers to it any more.
    pub(crate) fn release_blob(&self, blob: BlobId) {
        let _gate = lock(&self.blob_gate);
        if lock(&self.catalog).is_referenced(&blob) {
            return;
        }
        let path = self.layout.blob_path(&blob);
        // Not fsynced: should the unlink be lost in a crash, `open` sweeps the orphan.
        if let Err(e) = remove_file_quiet(&path) {
            warn!(path = %path.display(), error = %e, "cannot remove blob");
        }
    }

    /// Ends a fill: forgets it (so the next `fill` of the key leads again) and publishes its
    /// final state to followers and tails.
    pub(crate) fn finish_fill(
        &self,
        key: &ContentKey,
        slot: &Arc<Slot>,
        update: impl FnOnce(&mut fill::Phase),
    ) {
        {
            let mut fills = lock(&self.fills);
            if fills.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                fills.remove(key);
            }
        }
        slot.send_modify(update);
    }
}

/// A whole body in its temp file, ready to be committed as blob `blob`.
pub(crate) struct Staged<'a> {
    pub file: &'a File,
    pub temp: &'a Path,
    pub blob: BlobId,
    pub len: u64,
    /// The URL entry this one is a variant of, if any.
    pub variant_of: Option<ContentKey>,
}

fn file_len(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data consistent
/// at each step, and a cache that stops working after one panic would be worse.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs disk work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}
