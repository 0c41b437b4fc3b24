//! Per-client state in bounded memory, whatever the number of addresses: the table holds at
//! most [`MAX_CLIENTS`] entries and, when full, forgets the longest-known client first. A
//! sweep of spoofed or rotating addresses so costs a fixed amount of memory and O(1) per
//! request; what it buys the sweeper is that old entries are forgotten early, i.e. a
//! throttled client may start over — which rotating addresses would give it anyway.
//!
//! Clients are keyed by IPv4 address, and by /64 prefix for IPv6: one IPv6 subscriber
//! usually holds a whole /64, and keying by full address would let it take 2^64 buckets.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Clients tracked at once: ~100 bytes each, so a few MiB at most.
pub const MAX_CLIENTS: usize = 64 * 1024;
/// Independent locks: two worker threads on one hot client still meet, but different
/// clients rarely do.
const SHARDS: usize = 16;

/// What identifies a client for limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(u128::from(u32::from(v4))),
                // The /64 in the high half; bit 63 set keeps it apart from every IPv4 key.
                None => Self((u128::from(v6) & !0u128 << 64) | 1u128 << 63),
            },
        }
    }
}

/// A bounded map from client to `V`.
pub struct Table<V> {
    shards: Vec<Mutex<Shard<V>>>,
    hasher: RandomState,
    per_shard: usize,
}

struct Shard<V> {
    map: HashMap<ClientKey, V>,
    /// Keys in the order they were added, oldest first: who goes when the shard is full.
    order: VecDeque<ClientKey>,
}

impl<V> Table<V> {
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            per_shard,
        }
    }

    fn shard(&self, key: ClientKey) -> &Mutex<Shard<V>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Runs `f` on `key`'s entry, made by `make` if there is none (forgetting the oldest
    /// entry of its shard if that is full).
    pub fn with<R>(
        &self,
        key: ClientKey,
        make: impl FnOnce() -> V,
        f: impl FnOnce(&mut V) -> R,
    ) -> R {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let shard = &mut *shard;
        if !shard.map.contains_key(&key) {
            while shard.map.len() >= self.per_shard {
                let Some(oldest) = shard.order.pop_front() else {
                    break;
                };
                shard.map.remove(&oldest);
            }
            shard.order.push_back(key);
        }
        f(shard.map.entry(key).or_insert_with(make))
    }

    /// Runs `f` on `key`'s entry if there is one.
    pub fn peek<R>(&self, key: ClientKey, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.map.get_mut(&key).map(f)
    }

    /// Entries held.
    pub fn entries(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn ipv6_clients_are_their_64_and_mapped_ipv4_is_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a.into()), ClientKey::of(b.into()));
        assert_ne!(ClientKey::of(a.into()), ClientKey::of(c.into()));
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            ClientKey::of(v4.into()),
            ClientKey::of(v4.to_ipv6_mapped().into())
        );
        assert_ne!(
            ClientKey::of(v4.into()),
            ClientKey::of(Ipv4Addr::new(192, 0, 2, 8).into())
        );
    }

    #[test]
    fn a_sweep_of_addresses_stays_within_capacity_and_forgets_the_oldest() {
        let table: Table<u32> = Table::new(1024);
        let key = |i: u32| ClientKey::of(Ipv4Addr::from(0x0a00_0000 + i).into());
        table.with(key(0), || 7, |_| ());
        for i in 1..100_000 {
            table.with(key(i), || 1, |v| *v += 1);
        }
        assert!(table.entries() <= 1024 + SHARDS, "{}", table.entries());
        assert_eq!(
            table.peek(key(0), |v| *v),
            None,
            "the first one was forgotten"
        );
        assert_eq!(table.peek(key(99_999), |v| *v), Some(2));
        // A known client keeps its entry.
        table.with(key(99_999), || 0, |v| *v += 1);
        assert_eq!(table.peek(key(99_999), |v| *v), Some(3));
    }
}
