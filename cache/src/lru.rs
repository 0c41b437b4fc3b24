//! Least-recently-used order. It only says what is oldest; removing is the caller's job.

use std::collections::BTreeMap;

use reef_proto::ContentKey;

/// A position in the order; larger is more recent. Stored next to each entry so a touch is
/// O(log n) without a linked list.
pub(crate) type Tick = u64;

#[derive(Debug, Default)]
pub(crate) struct Lru {
    by_tick: BTreeMap<Tick, ContentKey>,
    next: Tick,
}

impl Lru {
    /// Makes `key` the most recent and returns its new tick.
    pub fn push(&mut self, key: ContentKey) -> Tick {
        let tick = self.next;
        self.next += 1;
        self.by_tick.insert(tick, key);
        tick
    }

    pub fn remove(&mut self, tick: Tick) {
        self.by_tick.remove(&tick);
    }

    /// Moves an entry to the most recent end.
    pub fn touch(&mut self, tick: Tick) -> Tick {
        match self.by_tick.remove(&tick) {
            Some(key) => self.push(key),
            None => tick,
        }
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &ContentKey> {
        self.by_tick.values()
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
        let a = lru.push(k(1));
        let _b = lru.push(k(2));
        let c = lru.push(k(3));
        lru.touch(a);
        lru.remove(c);
        let order: Vec<_> = lru.iter().copied().collect();
        assert_eq!(order, vec![k(2), k(1)]);
    }
}
