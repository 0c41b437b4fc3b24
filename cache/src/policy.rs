//! Eviction policies. A policy says what to evict and leaves removing to the caller: it tracks
//! keys and their sizes, hears about accesses, and names the next victim; the catalog decides
//! when to stop (it alone knows the real bytes on disk, with identical bodies counted once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use reef_proto::ContentKey;

/// What to evict next. Sizes are bytes; a policy may use them to balance its queues but never
/// decides how much to evict.
pub trait Policy: fmt::Debug + Send {
    /// A newly stored key. Inserting a key that is already tracked (its body was replaced)
    /// updates its size and counts as an access.
    fn insert(&mut self, key: ContentKey, size: u64);

    /// A key found on disk at open, called coldest first. Defaults to `insert`.
    fn restore(&mut self, key: ContentKey, size: u64) {
        self.insert(key, size);
    }

    /// `key` was read. Unknown keys are ignored.
    fn touch(&mut self, key: &ContentKey);

    /// Forgets `key` (removed for some reason other than eviction). Unknown keys are ignored.
    fn remove(&mut self, key: &ContentKey);

    /// The next key to evict, which the policy stops tracking: the caller must remove the
    /// object, or `restore` the key if it cannot. `None` once nothing is tracked.
    fn victim(&mut self) -> Option<ContentKey>;

    /// Keys tracked.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fewest ghost entries kept, so a cache of a few large objects still remembers some.
const MIN_GHOSTS: usize = 64;

/// Highest access count kept (two bits).
const MAX_FREQ: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
}

#[derive(Debug)]
struct Entry {
    queue: Queue,
    tick: u64,
    freq: u8,
    size: u64,
}

/// S3-FIFO (Yang et al., SOSP '23), by bytes.
///
/// New keys enter a small FIFO sized at a tenth of the budget; a key reaching the head of the
/// small queue moves to the main FIFO if it was read while in small, and is otherwise evicted
/// and remembered in a ghost FIFO of keys only. A key inserted while in the ghost goes straight
/// to main. Main evicts from its head, but gives a key read since it was last considered
/// another round (decrementing its 2-bit counter). So a one-pass scan of cold keys, or one
/// object larger than the small queue, only churns the small queue and never flushes the hot
/// set in main.
#[derive(Debug)]
pub struct S3Fifo {
    small_target: u64,
    small: BTreeMap<u64, ContentKey>,
    main: BTreeMap<u64, ContentKey>,
    small_bytes: u64,
    main_bytes: u64,
    entries: HashMap<ContentKey, Entry>,
    /// Keys evicted from small, oldest first, with the generation they were added at; an item
    /// whose generation no longer matches `ghost_gen` is stale.
    ghost: VecDeque<(ContentKey, u64)>,
    ghost_gen: HashMap<ContentKey, u64>,
    next: u64,
}

impl S3Fifo {
    /// A policy for a cache of `capacity` bytes: the small queue gets a tenth of it.
    pub fn new(capacity: u64) -> S3Fifo {
        S3Fifo {
            small_target: capacity / 10,
            small: BTreeMap::new(),
            main: BTreeMap::new(),
            small_bytes: 0,
            main_bytes: 0,
            entries: HashMap::new(),
            ghost: VecDeque::new(),
            ghost_gen: HashMap::new(),
            next: 0,
        }
    }

    /// Bytes tracked in the small and main queues, as told by `insert`.
    pub fn queue_bytes(&self) -> (u64, u64) {
        (self.small_bytes, self.main_bytes)
    }

    /// Keys remembered in the ghost queue.
    pub fn ghosts(&self) -> usize {
        self.ghost_gen.len()
    }

    fn tick(&mut self) -> u64 {
        let t = self.next;
        self.next += 1;
        t
    }

    /// Appends a tracked (or new) key to the tail of `queue`.
    fn push(&mut self, key: ContentKey, queue: Queue, freq: u8, size: u64) {
        let tick = self.tick();
        match queue {
            Queue::Small => {
                self.small.insert(tick, key);
                self.small_bytes += size;
            }
            Queue::Main => {
                self.main.insert(tick, key);
                self.main_bytes += size;
            }
        }
        self.entries.insert(
            key,
            Entry {
                queue,
                tick,
                freq,
                size,
            },
        );
    }

    /// Takes a key out of its queue; the entry's accounting goes with it.
    fn unlink(&mut self, key: &ContentKey) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        match e.queue {
            Queue::Small => {
                self.small.remove(&e.tick);
                self.small_bytes -= e.size;
            }
            Queue::Main => {
                self.main.remove(&e.tick);
                self.main_bytes -= e.size;
            }
        }
        Some(e)
    }

    fn remember(&mut self, key: ContentKey) {
        let generation = self.tick();
        self.ghost.push_back((key, generation));
        self.ghost_gen.insert(key, generation);
        let cap = self.entries.len().max(MIN_GHOSTS);
        while self.ghost.len() > cap {
            if let Some((k, g)) = self.ghost.pop_front()
                && self.ghost_gen.get(&k) == Some(&g)
            {
                self.ghost_gen.remove(&k);
            }
        }
    }

    fn evict_small(&self) -> bool {
        !self.small.is_empty() && (self.small_bytes >= self.small_target || self.main.is_empty())
    }
}

impl Policy for S3Fifo {
    fn insert(&mut self, key: ContentKey, size: u64) {
        if let Some(e) = self.entries.get_mut(&key) {
            let old = std::mem::replace(&mut e.size, size);
            e.freq = (e.freq + 1).min(MAX_FREQ);
            match e.queue {
                Queue::Small => self.small_bytes = self.small_bytes - old + size,
                Queue::Main => self.main_bytes = self.main_bytes - old + size,
            }
            return;
        }
        let queue = if self.ghost_gen.remove(&key).is_some() {
            Queue::Main
        } else {
            Queue::Small
        };
        self.push(key, queue, 0, size);
    }

    /// Into main: whatever survived the last run has earned more than a probation, and the
    /// order keeps evicting the oldest stored first until reads say otherwise.
    fn restore(&mut self, key: ContentKey, size: u64) {
        self.unlink(&key);
        self.ghost_gen.remove(&key);
        self.push(key, Queue::Main, 0, size);
    }

    fn touch(&mut self, key: &ContentKey) {
        if let Some(e) = self.entries.get_mut(key) {
            e.freq = (e.freq + 1).min(MAX_FREQ);
        }
    }

    fn remove(&mut self, key: &ContentKey) {
        self.unlink(key);
    }

    fn victim(&mut self) -> Option<ContentKey> {
        loop {
            if self.evict_small() {
                let (_, key) = self.small.first_key_value()?;
                let key = *key;
                let e = self.unlink(&key)?;
                if e.freq > 0 {
                    self.push(key, Queue::Main, 0, e.size);
                } else {
                    self.remember(key);
                    return Some(key);
                }
            } else {
                let (_, key) = self.main.first_key_value()?;
                let key = *key;
                let e = self.unlink(&key)?;
                if e.freq > 0 {
                    self.push(key, Queue::Main, e.freq - 1, e.size);
                } else {
                    return Some(key);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::lru::Lru;

    fn k(n: u32) -> ContentKey {
        let mut b = [0; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        ContentKey::from_bytes(b)
    }

    /// A cache of `cap` bytes run by a policy, the way the catalog runs one.
    struct Sim<P> {
        policy: P,
        cap: u64,
        resident: HashMap<ContentKey, u64>,
        bytes: u64,
    }

    impl<P: Policy> Sim<P> {
        fn new(policy: P, cap: u64) -> Self {
            Sim {
                policy,
                cap,
                resident: HashMap::new(),
                bytes: 0,
            }
        }

        /// True on a hit; a miss stores the object and evicts to fit.
        fn get(&mut self, n: u32, size: u64) -> bool {
            let key = k(n);
            if self.resident.contains_key(&key) {
                self.policy.touch(&key);
                return true;
            }
            self.resident.insert(key, size);
            self.bytes += size;
            self.policy.insert(key, size);
            while self.bytes > self.cap {
                let v = self.policy.victim().unwrap();
                self.bytes -= self.resident.remove(&v).unwrap();
            }
            assert_eq!(self.policy.len(), self.resident.len());
            false
        }

        fn has(&self, n: u32) -> bool {
            self.resident.contains_key(&k(n))
        }
    }

    /// 50 hot keys read a few times, then one pass over 1,000 cold keys, in a cache of 100.
    fn hot_after_scan<P: Policy>(policy: P) -> usize {
        let mut sim = Sim::new(policy, 100);
        for _ in 0..3 {
            for n in 0..50 {
                sim.get(n, 1);
            }
        }
        for n in 1000..2000 {
            assert!(!sim.get(n, 1));
        }
        (0..50).filter(|&n| sim.has(n)).count()
    }

    #[test]
    fn s3fifo_keeps_the_hot_set_through_a_scan_and_lru_does_not() {
        assert_eq!(hot_after_scan(S3Fifo::new(100)), 50);
        assert_eq!(hot_after_scan(Lru::new()), 0);
    }

    /// 90 hot objects of 10 bytes, read twice, then one object of 500 in a cache of 1,000.
    fn hot_after_huge<P: Policy>(policy: P) -> (usize, bool) {
        let mut sim = Sim::new(policy, 1000);
        for _ in 0..2 {
            for n in 0..90 {
                sim.get(n, 10);
            }
        }
        sim.get(999, 500);
        ((0..90).filter(|&n| sim.has(n)).count(), sim.has(999))
    }

    #[test]
    fn one_huge_object_does_not_flush_the_hot_set() {
        assert_eq!(hot_after_huge(S3Fifo::new(1000)), (90, false));
        let (lru_hot, lru_huge) = hot_after_huge(Lru::new());
        assert!(lru_huge);
        assert!(lru_hot <= 50, "{lru_hot}");
    }

    #[test]
    fn huge_objects_churn_only_the_small_queue() {
        let mut sim = Sim::new(S3Fifo::new(1000), 1000);
        for n in 0..50 {
            sim.get(n, 10);
            sim.get(n, 10);
        }
        // Push the hot set into main.
        for n in 100..200 {
            sim.get(n, 10);
        }
        assert!((0..50).all(|n| sim.has(n)));
        for n in 1000..1020 {
            sim.get(n, 400);
        }
        assert!((0..50).all(|n| sim.has(n)));
    }

    #[test]
    fn ghost_hits_go_to_main() {
        let mut p = S3Fifo::new(10);
        for n in 0..10 {
            p.insert(k(n), 1);
        }
        p.insert(k(10), 1);
        assert_eq!(p.victim(), Some(k(0)));
        assert_eq!(p.ghosts(), 1);
        assert_eq!(p.queue_bytes(), (10, 0));
        p.insert(k(0), 1);
        assert_eq!(p.ghosts(), 0);
        assert_eq!(p.queue_bytes(), (10, 1));
        // Small is over its tenth, so its head goes before anything in main.
        assert_eq!(p.victim(), Some(k(1)));
        assert_eq!(p.queue_bytes(), (9, 1));
    }

    #[test]
    fn read_on_probation_moves_to_main_and_main_gives_second_chances() {
        let mut p = S3Fifo::new(4);
        for n in 0..4 {
            p.insert(k(n), 1);
        }
        p.touch(&k(0));
        p.touch(&k(2));
        // 0 moves to main; 1 was never read.
        assert_eq!(p.victim(), Some(k(1)));
        // 2 moves to main, 3 goes.
        assert_eq!(p.victim(), Some(k(3)));
        assert_eq!(p.queue_bytes(), (0, 2));
        p.touch(&k(0));
        // Main: 0 (read again) is reinserted behind 2.
        assert_eq!(p.victim(), Some(k(2)));
        assert_eq!(p.victim(), Some(k(0)));
        assert_eq!(p.victim(), None);
        assert!(p.is_empty());
    }

    #[test]
    fn ghost_is_bounded() {
        let mut p = S3Fifo::new(10);
        for n in 0..10_000 {
            p.insert(k(n), 1);
            if p.len() > 10 {
                p.victim().unwrap();
            }
        }
        assert!(p.ghosts() <= MIN_GHOSTS);
        assert!(p.ghost.len() <= MIN_GHOSTS);
    }

    #[test]
    fn removal_forgets_keys_in_either_queue() {
        let mut p = S3Fifo::new(100);
        for n in 0..5 {
            p.insert(k(n), 10);
        }
        p.restore(k(9), 30);
        assert_eq!(p.queue_bytes(), (50, 30));
        p.remove(&k(2));
        p.remove(&k(9));
        p.remove(&k(77)); // unknown: ignored
        p.touch(&k(77));
        assert_eq!(p.len(), 4);
        assert_eq!(p.queue_bytes(), (40, 0));
        let mut out = Vec::new();
        while let Some(v) = p.victim() {
            out.push(v);
        }
        assert_eq!(out, vec![k(0), k(1), k(3), k(4)]);
        assert_eq!(p.queue_bytes(), (0, 0));
    }

    #[test]
    fn byte_accounting_is_exact() {
        let mut p = S3Fifo::new(5_000);
        let mut model: HashMap<ContentKey, u64> = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = k((x % 300) as u32);
            let size = (x >> 20) % 200;
            match (x >> 40) % 5 {
                0 | 1 => {
                    p.insert(key, size);
                    model.insert(key, size);
                }
                2 => p.touch(&key),
                3 => {
                    p.remove(&key);
                    model.remove(&key);
                }
                _ => {
                    if let Some(v) = p.victim() {
                        assert!(model.remove(&v).is_some());
                    }
                }
            }
            let (small, main) = p.queue_bytes();
            assert_eq!(small + main, model.values().sum::<u64>());
            assert_eq!(p.len(), model.len());
        }
    }
}
