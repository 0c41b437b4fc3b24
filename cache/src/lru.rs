//! Least-recently-used order: the baseline eviction policy. It only says what is oldest;
//! removing is the caller's job.

use std::collections::{BTreeMap, HashMap};

use reef_proto::ContentKey;

use crate::policy::Policy;

/// A position in the order; larger is more recent. Kept per key so a touch is O(log n)
/// without a linked list.
type Tick = u64;

/// Plain LRU. Not scan-resistant: one pass over cold keys, or one object as large as the
/// budget, flushes everything else.
#[derive(Debug, Default)]
pub struct Lru {
    by_tick: BTreeMap<Tick, ContentKey>,
    ticks: HashMap<ContentKey, Tick>,
    next: Tick,
}

impl Lru {
    pub fn new() -> Lru {
        Lru::default()
    }

    fn push(&mut self, key: ContentKey) {
        let tick = self.next;
        self.next += 1;
        self.by_tick.insert(tick, key);
        self.ticks.insert(key, tick);
    }
}

impl Policy for Lru {
    fn insert(&mut self, key: ContentKey, _size: u64) {
        self.remove(&key);
        self.push(key);
    }

    fn touch(&mut self, key: &ContentKey) {
        if let Some(tick) = self.ticks.remove(key) {
            self.by_tick.remove(&tick);
            self.push(*key);
        }
    }

    fn remove(&mut self, key: &ContentKey) {
        if let Some(tick) = self.ticks.remove(key) {
            self.by_tick.remove(&tick);
        }
    }

    fn victim(&mut self) -> Option<ContentKey> {
        let (_, key) = self.by_tick.pop_first()?;
        self.ticks.remove(&key);
        Some(key)
    }

    fn len(&self) -> usize {
        self.ticks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> ContentKey {
        ContentKey::from_bytes([b; 32])
    }

    #[test]
    fn touch_moves_to_the_back() {
        let mut lru = Lru::default();
        lru.insert(k(1), 1);
        lru.insert(k(2), 1);
        lru.insert(k(3), 1);
        lru.touch(&k(1));
        lru.remove(&k(3));
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.victim(), Some(k(2)));
        assert_eq!(lru.victim(), Some(k(1)));
        assert_eq!(lru.victim(), None);
        assert_eq!(lru.len(), 0);
    }
}
