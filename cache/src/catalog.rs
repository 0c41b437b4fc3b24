//! The in-memory index of committed objects: key → (blob, length, LRU position), plus how many
//! entries and in-flight commits refer to each blob. Kept compact (no `Meta`); rebuilt at open.

use std::collections::HashMap;
use std::collections::hash_map;

use reef_proto::ContentKey;

use crate::blobs::BlobId;
use crate::lru::{Lru, Tick};

#[derive(Debug)]
struct Entry {
    blob: BlobId,
    tick: Tick,
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

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    entries: HashMap<ContentKey, Entry>,
    blobs: HashMap<BlobId, BlobRefs>,
    lru: Lru,
    /// Bytes of distinct referenced blobs, i.e. what the cache occupies on disk.
    bytes: u64,
}

impl Catalog {
    /// Marks `key` most recently used and says which blob holds it.
    pub fn touch(&mut self, key: &ContentKey) -> Option<BlobId> {
        let e = self.entries.get_mut(key)?;
        e.tick = self.lru.touch(e.tick);
        Some(e.blob)
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
    pub fn insert_pinned(&mut self, key: ContentKey, blob: BlobId) -> Option<Removed> {
        let old = self.remove(&key);
        let tick = self.lru.push(key);
        self.entries.insert(key, Entry { blob, tick });
        old
    }

    pub fn remove(&mut self, key: &ContentKey) -> Option<Removed> {
        let e = self.entries.remove(key)?;
        self.lru.remove(e.tick);
        let orphaned = self.unpin(&e.blob);
        Some(Removed {
            blob: e.blob,
            orphaned,
        })
    }

    /// The least recently used keys to remove, oldest first, so that what remains fits in
    /// `max_bytes` and `max_objects`. Blobs shared with surviving entries or pinned by a commit
    /// in progress free nothing, so this may pick more keys than a naive sum suggests.
    pub fn victims(&self, max_bytes: u64, max_objects: usize) -> Vec<ContentKey> {
        let mut bytes = self.bytes;
        let mut objects = self.entries.len();
        let mut dropped: HashMap<BlobId, u32> = HashMap::new();
        let mut out = Vec::new();
        for key in self.lru.iter() {
            if bytes <= max_bytes && objects <= max_objects {
                break;
            }
            let Some(e) = self.entries.get(key) else {
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
            out.push(*key);
        }
        out
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
        c.insert_pinned(k(key), blob(b));
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
        let mut c = Catalog::default();
        add(&mut c, 1, 9, 100); // shares with 3
        add(&mut c, 2, 8, 50);
        add(&mut c, 3, 9, 100);
        assert_eq!(c.bytes(), 150);
        // Dropping key 1 frees nothing (3 still holds blob 9); dropping 2 frees 50.
        assert_eq!(c.victims(100, usize::MAX), vec![k(1), k(2)]);
        assert_eq!(c.victims(150, 2), vec![k(1)]);
        assert_eq!(c.touch(&k(1)), Some(blob(9)));
        assert_eq!(c.victims(100, usize::MAX), vec![k(2)]);
    }

    #[test]
    fn replacing_an_entry_releases_the_old_blob() {
        let mut c = Catalog::default();
        add(&mut c, 1, 9, 100);
        c.pin(blob(8), 10);
        let old = c.insert_pinned(k(1), blob(8)).unwrap();
        assert!(old.orphaned);
        assert_eq!(old.blob, blob(9));
        assert_eq!(c.bytes(), 10);
        assert_eq!(c.objects(), 1);
    }
}
