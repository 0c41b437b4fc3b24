//! The in-memory index of committed objects: key → blob, plus how many entries and in-flight
//! commits refer to each blob, the eviction policy's view of the keys and the per-tenant quota
//! ledger. Kept compact (no `Meta`); rebuilt at open.

use std::collections::hash_map;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use reef_proto::ContentKey;

use crate::blobs::BlobId;
use crate::family::Families;
use crate::hot::{Hot, HotEntry};
use crate::lru::Lru;
use crate::policy::Policy;
use crate::quota::{Ledger, QuotaStats, Refused};

#[derive(Debug)]
struct Entry {
    blob: BlobId,
    /// Set only when the entry's tenant has a quota: the label shared with the ledger.
    tenant: Option<Arc<str>>,
    /// New whenever the entry's index row is written, so a copy read from an older row (a hot
    /// entry, or one a reader is still decoding) can be told apart.
    generation: u64,
}

/// What `Catalog::touch_hot` finds for a key.
#[derive(Debug)]
pub(crate) struct Touched {
    pub blob: BlobId,
    pub generation: u64,
    /// The entry's metadata (and small body) if it was read recently.
    pub hot: Option<HotEntry>,
}

#[derive(Debug)]
struct BlobRefs {
    /// Entries plus commits that have installed the blob but not yet inserted their entry.
    refs: u32,
    len: u64,
}

/// An entry taken out of the catalog.
#[derive(Debug)]
pub(crate) struct Removed {
    pub blob: BlobId,
    /// Nothing refers to the blob any more; the caller should delete its file.
    pub orphaned: bool,
}

#[derive(Debug)]
pub(crate) struct Catalog {
    entries: HashMap<ContentKey, Entry>,
    blobs: HashMap<BlobId, BlobRefs>,
    /// Tracks exactly the keys of `entries`, each sized by its blob's length.
    policy: Box<dyn Policy>,
    /// Bytes of distinct referenced blobs, i.e. what the cache occupies on disk.
    bytes: u64,
    /// Variants of URLs whose responses vary; entries leave with their keys.
    families: Families,
    /// Kept in step with `entries` by every insert and remove below.
    ledger: Ledger,
    /// Recently read entries; every entry taken out or rewritten leaves it too.
    hot: Hot,
    next_generation: u64,
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog::new(Box::new(Lru::new()), Ledger::default())
    }
}

impl Catalog {
    pub fn new(policy: Box<dyn Policy>, ledger: Ledger) -> Catalog {
        Catalog {
            entries: HashMap::new(),
            blobs: HashMap::new(),
            policy,
            bytes: 0,
            families: Families::default(),
            ledger,
            hot: Hot::default(),
            next_generation: 0,
        }
    }

    /// Like `touch`, with the entry's generation and its hot copy, if any.
    pub fn touch_hot(&mut self, key: &ContentKey) -> Option<Touched> {
        let e = self.entries.get(key)?;
        self.policy.touch(key);
        Some(Touched {
            blob: e.blob,
            generation: e.generation,
            hot: self.hot.get(key, e.generation).cloned(),
        })
    }

    /// Keeps `entry` (read from disk for generation `entry.generation`) hot, unless the entry
    /// has been rewritten or removed since.
    pub fn remember(&mut self, key: ContentKey, entry: HotEntry) {
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.generation == entry.generation)
        {
            self.hot.insert(key, entry);
        }
    }

    /// The entry's index row was rewritten in place (same blob): copies of the old row are
    /// no longer current.
    pub fn rewritten(&mut self, key: &ContentKey) {
        let generation = self.new_generation();
        if let Some(e) = self.entries.get_mut(key) {
            e.generation = generation;
        }
        self.hot.forget(key);
    }

    fn new_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Tells the policy `key` was read and says which blob holds it.
    #[cfg(test)]
    pub fn touch(&mut self, key: &ContentKey) -> Option<BlobId> {
        let e = self.entries.get(key)?;
        self.policy.touch(key);
        Some(e.blob)
    }

    fn len_of(&self, blob: &BlobId) -> u64 {
        self.blobs.get(blob).map_or(0, |b| b.len)
    }

    pub fn blob_of(&self, key: &ContentKey) -> Option<BlobId> {
        self.entries.get(key).map(|e| e.blob)
    }

    /// Takes a reference on a blob before its file is installed; true if it was already
    /// referenced (so its file should already be in place).
    pub fn pin(&mut self, blob: BlobId, len: u64) -> bool {
        match self.blobs.entry(blob) {
            hash_map::Entry::Occupied(mut o) => {
                o.get_mut().refs += 1;
                true
            }
            hash_map::Entry::Vacant(v) => {
                v.insert(BlobRefs { refs: 1, len });
                self.bytes += len;
                false
            }
        }
    }

    /// Drops a reference; true if the blob is now unreferenced.
    pub fn unpin(&mut self, blob: &BlobId) -> bool {
        let hash_map::Entry::Occupied(mut o) = self.blobs.entry(*blob) else {
            return true;
        };
        o.get_mut().refs -= 1;
        if o.get().refs > 0 {
            return false;
        }
        self.bytes -= o.remove().len;
        true
    }

    pub fn is_referenced(&self, blob: &BlobId) -> bool {
        self.blobs.contains_key(blob)
    }

    /// Adds (or replaces) an entry whose blob the caller has already pinned; the pin becomes the
    /// entry's reference. Returns what a replaced entry left behind.
    /// Replacing a key keeps what the policy knows about it (a replacement counts as an access).
    pub fn insert_pinned(
        &mut self,
        key: ContentKey,
        blob: BlobId,
        tenant: Option<&str>,
    ) -> Option<Removed> {
        let old = self.take_entry(&key).map(|e| Removed {
            blob: e.blob,
            orphaned: self.unpin(&e.blob),
        });
        self.families.forget(&key);
        self.add_entry(key, blob, tenant);
        self.policy.insert(key, self.len_of(&blob));
        old
    }

    /// Records that the entry `variant` (already inserted) is a variant of `primary`.
    pub fn set_variant_of(&mut self, variant: ContentKey, primary: ContentKey) {
        if self.entries.contains_key(&variant) {
            self.families.add(primary, variant);
        }
    }

    pub fn variants_of(&self, primary: &ContentKey) -> Vec<ContentKey> {
        self.families.variants_of(primary)
    }

    /// Like `insert_pinned` for an entry found at open; call these oldest stored first.
    pub fn restore_pinned(&mut self, key: ContentKey, blob: BlobId, tenant: Option<&str>) {
        self.add_entry(key, blob, tenant);
        self.policy.restore(key, self.len_of(&blob));
    }

    pub fn remove(&mut self, key: &ContentKey) -> Option<Removed> {
        let e = self.take_entry(key)?;
        self.policy.remove(key);
        self.families.forget(key);
        let orphaned = self.unpin(&e.blob);
        Some(Removed {
            blob: e.blob,
            orphaned,
        })
    }

    /// Inserts an entry (the caller has dealt with any old one) and charges its tenant.
    fn add_entry(&mut self, key: ContentKey, blob: BlobId, tenant: Option<&str>) {
        let tenant = tenant.and_then(|t| self.ledger.tenant(t));
        if let Some(t) = &tenant {
            self.ledger.add_stored(t, self.len_of(&blob));
        }
        let generation = self.new_generation();
        self.hot.forget(&key);
        self.entries.insert(
            key,
            Entry {
                blob,
                tenant,
                generation,
            },
        );
    }

    /// Takes an entry out of `entries` and credits its tenant; the blob stays pinned.
    fn take_entry(&mut self, key: &ContentKey) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        self.hot.forget(key);
        if let Some(t) = &e.tenant {
            self.ledger.sub_stored(t, self.len_of(&e.blob));
        }
        Some(e)
    }

    /// Claims `extra` bytes of `tenant`'s quota for a fill of `key`, crediting the entry the
    /// fill would replace. Counts a refusal.
    pub fn reserve(&mut self, key: &ContentKey, tenant: &str, extra: u64) -> Result<(), Refused> {
        let credit = self
            .entries
            .get(key)
            .filter(|e| e.tenant.as_deref() == Some(tenant))
            .map_or(0, |e| self.len_of(&e.blob));
        self.ledger.reserve(tenant, extra, credit)
    }

    pub fn release(&mut self, tenant: &str, bytes: u64) {
        self.ledger.release(tenant, bytes);
    }

    /// The shared label of `name` if it has a quota.
    pub fn quota_tenant(&self, name: &str) -> Option<Arc<str>> {
        self.ledger.tenant(name)
    }

    pub fn quotas(&self) -> BTreeMap<String, QuotaStats> {
        self.ledger.stats()
    }

    #[cfg(test)]
    pub fn reserved(&self, tenant: &str) -> u64 {
        self.ledger.reserved(tenant)
    }

    /// The keys the policy picks to remove, in its order, so that what remains fits in
    /// `max_bytes` and `max_objects`. Blobs shared with surviving entries or pinned by a commit
    /// in progress free nothing, so this may pick more keys than a naive sum suggests.
    ///
    /// The policy stops tracking the keys returned: the caller must `remove` each of them, or
    /// hand them back with `unpick` if it cannot.
    pub fn victims(&mut self, max_bytes: u64, max_objects: usize) -> Vec<ContentKey> {
        let mut bytes = self.bytes;
        let mut objects = self.entries.len();
        let mut dropped: HashMap<BlobId, u32> = HashMap::new();
        let mut out = Vec::new();
        while bytes > max_bytes || objects > max_objects {
            let Some(key) = self.policy.victim() else {
                break;
            };
            let Some(e) = self.entries.get(&key) else {
                continue;
            };
            objects -= 1;
            let d = dropped.entry(e.blob).or_default();
            *d += 1;
            if let Some(b) = self.blobs.get(&e.blob)
                && b.refs == *d
            {
                bytes -= b.len;
            }
            out.push(key);
        }
        out
    }

    /// Gives keys picked by `victims` but not removed back to the policy.
    pub fn unpick(&mut self, keys: &[ContentKey]) {
        for key in keys {
            if let Some(e) = self.entries.get(key) {
                let len = self.len_of(&e.blob);
                self.policy.restore(*key, len);
            }
        }
    }

    pub fn keys(&self) -> Vec<ContentKey> {
        self.entries.keys().copied().collect()
    }

    pub fn objects(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn k(b: u8) -> ContentKey {
        ContentKey::from_bytes([b; 32])
    }

    fn blob(b: u8) -> BlobId {
        BlobId::from_bytes([b; 32])
    }

    fn add(c: &mut Catalog, key: u8, b: u8, len: u64) {
        c.pin(blob(b), len);
        c.insert_pinned(k(key), blob(b), None);
    }

    #[test]
    fn shared_blob_counts_once_and_survives_one_removal() {
        let mut c = Catalog::default();
        add(&mut c, 1, 9, 100);
        add(&mut c, 2, 9, 100);
        assert_eq!(c.bytes(), 100);
        let r = c.remove(&k(1)).unwrap();
        assert!(!r.orphaned);
        assert!(c.is_referenced(&blob(9)));
        let r = c.remove(&k(2)).unwrap();
        assert!(r.orphaned);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn victims_skip_nothing_but_account_for_sharing() {
        let mut c = Catalog::default(); // LRU
        add(&mut c, 1, 9, 100); // shares with 3
        add(&mut c, 2, 8, 50);
        add(&mut c, 3, 9, 100);
        assert_eq!(c.bytes(), 150);
        // Dropping key 1 frees nothing (3 still holds blob 9); dropping 2 frees 50.
        assert_eq!(c.victims(100, usize::MAX), vec![k(1), k(2)]);
        // Not removed: handed back, they become the most recent.
        c.unpick(&[k(1), k(2)]);
        assert_eq!(c.victims(150, 2), vec![k(3)]);
        c.unpick(&[k(3)]);
        // Order is now 1, 2, 3; reading 1 makes 2 the oldest.
        assert_eq!(c.touch(&k(1)), Some(blob(9)));
        assert_eq!(c.victims(100, usize::MAX), vec![k(2)]);
        assert!(c.remove(&k(2)).unwrap().orphaned);
        assert_eq!(c.bytes(), 100);
        assert!(c.victims(100, usize::MAX).is_empty());
    }

    #[test]
    fn victims_follow_the_policy_and_stay_in_step_with_entries() {
        let mut c = Catalog::new(Box::new(crate::S3Fifo::new(300)), Ledger::default());
        add(&mut c, 1, 1, 100);
        add(&mut c, 2, 2, 100);
        add(&mut c, 3, 3, 100);
        c.touch(&k(1));
        add(&mut c, 4, 4, 100);
        // S3-FIFO: 1 was read while on probation, so it moves on; 2 goes.
        let v = c.victims(300, usize::MAX);
        assert_eq!(v, vec![k(2)]);
        for key in &v {
            c.remove(key);
        }
        // Replacing a key's body keeps it known to the policy, with the new size.
        c.pin(blob(5), 250);
        c.insert_pinned(k(3), blob(5), None);
        assert_eq!(c.bytes(), 450);
        // 3 was "read" (replaced) on probation so it moves on; 4 goes, then main's head, 1.
        let v = c.victims(300, usize::MAX);
        assert_eq!(v, vec![k(4), k(1)]);
        for key in &v {
            c.remove(key);
        }
        assert!(c.bytes() <= 300);
        // Every surviving entry is still tracked: evicting everything names each one once.
        let mut rest = c.victims(0, 0);
        rest.sort();
        let mut keys = c.keys();
        keys.sort();
        assert_eq!(rest, keys);
    }

    #[test]
    fn replacing_an_entry_releases_the_old_blob() {
        let mut c = Catalog::default();
        add(&mut c, 1, 9, 100);
        c.pin(blob(8), 10);
        let old = c.insert_pinned(k(1), blob(8), None).unwrap();
        assert!(old.orphaned);
        assert_eq!(old.blob, blob(9));
        assert_eq!(c.bytes(), 10);
        assert_eq!(c.objects(), 1);
    }
}
