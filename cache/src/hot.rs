//! The store's memory of recently read entries: each one's decoded `Meta` and, for small
//! objects, the whole body. A hit on a hot entry needs no index read (a redb transaction and a
//! JSON decode), no file open and read, and so no trip to a blocking thread: on a small
//! machine those trips, not the bytes, were most of what a hit cost.
//!
//! Entries are what a `get` read from disk, so the first read of an object after a start or a
//! commit still goes to disk (and checks the body's length); later ones are served from here.
//! Each is tagged with the generation of the catalog entry it was read for, and the catalog
//! drops it whenever that entry is replaced, refreshed or removed, so a hot entry is never
//! older than the index row. Bounded by a count and a byte budget for bodies; past either the
//! oldest insertions go first (FIFO: cheap, and the catalog's own policy already decides what
//! stays on disk).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use reef_proto::ContentKey;

use crate::meta::Meta;

/// Most hot entries. A decoded `Meta` (URL, policy, headers) is a few KiB at most, so this
/// keeps the metadata of a busy working set in some tens of MiB.
pub const MAX_HOT_ENTRIES: usize = 16 * 1024;
/// Bodies up to this size are kept whole; larger ones are read from their file on every hit,
/// where the copying, not the lookup, is the cost.
pub const MAX_HOT_BODY: u64 = 256 * 1024;
/// Bytes of bodies kept at most: a RAM cache in front of the page cache, small next to the
/// disk budget.
pub const HOT_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// One hot entry: what `Store::get` would read from disk for the catalog entry of generation
/// `gen`.
#[derive(Debug, Clone)]
pub(crate) struct HotEntry {
    pub generation: u64,
    pub meta: Arc<Meta>,
    /// `meta.header_map()`, made once.
    pub headers: Arc<http::HeaderMap>,
    /// The whole body, for objects up to `MAX_HOT_BODY`.
    pub body: Option<Bytes>,
}

impl HotEntry {
    fn body_len(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| b.len() as u64)
    }
}

#[derive(Debug)]
pub(crate) struct Hot {
    entries: HashMap<ContentKey, HotEntry>,
    /// Insertion order, with the generation inserted: a key replaced or forgotten since leaves a
    /// stale item behind, skipped when it comes up.
    order: VecDeque<(ContentKey, u64)>,
    body_bytes: u64,
    max_entries: usize,
    max_body_bytes: u64,
}

impl Default for Hot {
    fn default() -> Hot {
        Hot::new(MAX_HOT_ENTRIES, HOT_BODY_BYTES)
    }
}

impl Hot {
    pub fn new(max_entries: usize, max_body_bytes: u64) -> Hot {
        Hot {
            entries: HashMap::new(),
            order: VecDeque::new(),
            body_bytes: 0,
            max_entries,
            max_body_bytes,
        }
    }

    /// The hot entry of `key` if it was read for catalog generation `generation`.
    pub fn get(&self, key: &ContentKey, generation: u64) -> Option<&HotEntry> {
        self.entries.get(key).filter(|e| e.generation == generation)
    }

    pub fn insert(&mut self, key: ContentKey, entry: HotEntry) {
        if self.max_entries == 0 || entry.body_len() > self.max_body_bytes {
            return;
        }
        self.forget(&key);
        self.body_bytes += entry.body_len();
        self.order.push_back((key, entry.generation));
        self.entries.insert(key, entry);
        while self.entries.len() > self.max_entries || self.body_bytes > self.max_body_bytes {
            let Some((oldest, generation)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&oldest).map(|e| e.generation) == Some(generation) {
                self.forget(&oldest);
            }
        }
        // Stale items pile up when keys are forgotten out of order; keep the queue within a
        // small multiple of the live entries.
        if self.order.len() > 2 * self.max_entries.max(16) {
            let entries = &self.entries;
            self.order
                .retain(|(k, g)| entries.get(k).map(|e| e.generation) == Some(*g));
        }
    }

    pub fn forget(&mut self, key: &ContentKey) {
        if let Some(old) = self.entries.remove(key) {
            self.body_bytes -= old.body_len();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn k(b: u8) -> ContentKey {
        ContentKey::from_bytes([b; 32])
    }

    fn entry(generation: u64, body: usize) -> HotEntry {
        let req = http::Request::get("http://a.example/").body(()).unwrap();
        let res = http::Response::builder().body(()).unwrap();
        let policy = http_cache_semantics::CachePolicy::new(&req, &res);
        HotEntry {
            generation,
            meta: Arc::new(Meta::new("http://a.example/".into(), policy, 200, vec![])),
            headers: Arc::default(),
            body: Some(Bytes::from(vec![0u8; body])),
        }
    }

    #[test]
    fn a_newer_generation_hides_the_entry() {
        let mut hot = Hot::new(4, 1000);
        hot.insert(k(1), entry(7, 10));
        assert!(hot.get(&k(1), 7).is_some());
        assert!(hot.get(&k(1), 8).is_none());
        hot.forget(&k(1));
        assert!(hot.get(&k(1), 7).is_none());
        assert_eq!(hot.body_bytes(), 0);
    }

    #[test]
    fn budgets_drop_the_oldest_first() {
        let mut hot = Hot::new(3, 250);
        for i in 1..=3 {
            hot.insert(k(i), entry(u64::from(i), 100));
        }
        // 300 body bytes > 250: the first one went.
        assert_eq!(hot.len(), 2);
        assert!(hot.get(&k(1), 1).is_none());
        hot.insert(k(4), entry(4, 0));
        hot.insert(k(5), entry(5, 0));
        assert_eq!(hot.len(), 3);
        assert!(hot.get(&k(2), 2).is_none());
        assert!(hot.get(&k(5), 5).is_some());
        // Too big for the whole budget: not kept at all.
        hot.insert(k(6), entry(6, 251));
        assert!(hot.get(&k(6), 6).is_none());
    }

    #[test]
    fn stale_queue_items_stay_bounded() {
        let mut hot = Hot::new(16, 1 << 20);
        for i in 0..10_000u64 {
            hot.insert(k((i % 4) as u8), entry(i, 1));
            hot.forget(&k((i % 4) as u8));
        }
        assert!(hot.order.len() <= 2 * 16 + 1);
        assert_eq!(hot.len(), 0);
    }
}
