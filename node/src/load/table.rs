//! The load table: the latest verified report of every node heard from recently.
//!
//! Bounded ([`MAX_NODES`]; when full, dead entries, then the entry closest to expiry make
//! room), and expiring: a node is listed until its [`listing_ttl`] (half the report's lifetime:
//! [`ENTRY_TTL`] for every busy node, longer for quiet nodes of a large overlay, which report
//! more rarely) after its last report was
//! *issued*. The deadline runs on our monotonic clock: at arrival the report's age
//! (`issued_at` against our wall clock, clamped to 0..TTL) is taken off the TTL once, so a
//! report that took a slow path does not keep a dead node listed for longer, and a sender
//! whose clock runs ahead gets no more than the TTL from arrival. An entry that stopped being
//! listed is kept until its report has also expired by the wall clock, so that a replay of an
//! older, still-unexpired report of a silent node is still recognised as old instead of
//! bringing the node back with stale figures.
//!
//! A report replaces the held one only if both its `seq` and its `issued_at` are greater.
//! Reporters make both grow (see `report.rs`), so reordered or replayed copies never win.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reef_overlay::PeerId;
use reef_proto::records::{LoadReport, Membership, Opened};

/// Nodes the table holds at most: far above any overlay Reef runs today, and bounded so that a
/// flood of fresh identities costs a fixed amount of memory (about 1 KiB per entry).
pub const MAX_NODES: usize = 4096;
/// A node that has not reported for this long is not listed: five missed reports (one a second)
/// is a node that is gone or cut off, not one whose report was late.
pub const ENTRY_TTL: Duration = Duration::from_secs(5);
/// The longest a report may ask to be listed: a quiet node of a large overlay, reporting every
/// 12 s (see `QUIET_REPORTS_PER_S` in `load/mod.rs`), still listed after one lost report.
pub const MAX_ENTRY_TTL: Duration = Duration::from_secs(30);

/// How long after it was issued `report` lists its node: half its lifetime (senders seal
/// twice the listing, so that a copy that took a slow path is still valid), within
/// [`ENTRY_TTL`]..=[`MAX_ENTRY_TTL`].
pub fn listing_ttl(report: &Opened<LoadReport>) -> Duration {
    let lifetime = report.expires_at().saturating_sub(report.issued_at());
    Duration::from_millis(lifetime / 2).clamp(ENTRY_TTL, MAX_ENTRY_TTL)
}

/// The time at which the table is read or changed, on both clocks it needs.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For listing and expiry of entries.
    pub mono: Instant,
    /// Unix milliseconds, to compare with reports' own times (membership, record expiry).
    pub unix_ms: u64,
}

impl Now {
    pub fn current() -> Now {
        Now {
            mono: Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}

/// The wall clock in unix milliseconds (0 before 1970, which no report can be valid at).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One node's latest report.
#[derive(Debug, Clone)]
pub struct Entry {
    pub report: Opened<LoadReport>,
    /// The provider its load counts toward, as of when the report arrived (the report was
    /// opened then, certificate included; it is replaced within a second).
    pub membership: Membership,
    /// When the report was issued, on our monotonic clock (see the module docs).
    pub issued: Instant,
    /// Its [`listing_ttl`].
    pub ttl: Duration,
}

impl Entry {
    /// Listed while `now` is before this.
    pub fn listed_until(&self) -> Instant {
        self.issued + self.ttl
    }
}

/// The held report is at least as new as the offered one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotNewer;

#[derive(Debug)]
pub struct Table {
    entries: HashMap<PeerId, Entry>,
    capacity: usize,
}

impl Default for Table {
    fn default() -> Self {
        Table::new(MAX_NODES)
    }
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Takes `report` (already opened and checked to be `peer`'s own) as `peer`'s latest.
    pub fn insert(
        &mut self,
        peer: PeerId,
        report: Opened<LoadReport>,
        now: Now,
    ) -> Result<(), NotNewer> {
        if let Some(held) = self.entries.get(&peer) {
            let newer = report.record().seq > held.report.record().seq
                && report.issued_at() > held.report.issued_at();
            if !newer {
                return Err(NotNewer);
            }
        } else if self.entries.len() >= self.capacity {
            self.sweep(now);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.issued)
                    .map(|(p, _)| *p);
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        let ttl = listing_ttl(&report);
        let age = Duration::from_millis(now.unix_ms.saturating_sub(report.issued_at())).min(ttl);
        let entry = Entry {
            membership: report.membership(now.unix_ms),
            report,
            issued: now.mono.checked_sub(age).unwrap_or(now.mono),
            ttl,
        };
        self.entries.insert(peer, entry);
        Ok(())
    }

    /// The entries listed at `now`: reports issued within their TTL.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (&PeerId, &Entry)> {
        self.entries
            .iter()
            .filter(move |(_, e)| now < e.listed_until())
    }

    /// Drops entries that are neither listed nor needed to recognise replays any more.
    pub fn sweep(&mut self, now: Now) {
        self.entries
            .retain(|_, e| now.mono < e.listed_until() || now.unix_ms < e.report.expires_at());
    }

    /// Entries held, listed or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use reef_proto::records::{SigningKey, open, peer_id_bytes, seal};

    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const LIFETIME: u64 = 10_000;

    struct Node {
        key: SigningKey,
        peer: PeerId,
    }

    fn node(seed: u8) -> Node {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let peer = PeerId::from_bytes(&peer_id_bytes(&key.verifying_key().to_bytes())).unwrap();
        Node { key, peer }
    }

    fn report(node: &Node, seq: u64, issued_at: u64) -> Opened<LoadReport> {
        report_living(node, seq, issued_at, LIFETIME)
    }

    fn report_living(node: &Node, seq: u64, issued_at: u64, lifetime: u64) -> Opened<LoadReport> {
        let record = LoadReport {
            peer_id: node.peer.to_bytes(),
            cert: None,
            seq,
            req_per_s: seq as u32,
            egress_bytes_per_s: 0,
            utilisation_permille: 0,
            hit_ratio_permille: 0,
            demand_permille: 0,
        };
        let sealed = seal(&node.key, &record, issued_at, issued_at + lifetime).unwrap();
        open(&sealed, issued_at).unwrap()
    }

    fn at(start: Instant, ms: u64) -> Now {
        Now {
            mono: start + Duration::from_millis(ms),
            unix_ms: T0 + ms,
        }
    }

    fn listed(table: &Table, now: Now) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = table.live(now.mono).map(|(p, _)| *p).collect();
        peers.sort();
        peers
    }

    #[test]
    fn only_newer_reports_replace_the_held_one() {
        let start = Instant::now();
        let a = node(1);
        let mut t = Table::default();
        t.insert(a.peer, report(&a, 10, T0), at(start, 0)).unwrap();
        // Replays and reorderings: same, older seq, older time, or only one of them newer.
        for (seq, issued) in [
            (10, T0),
            (9, T0 + 1000),
            (11, T0),
            (11, T0 - 1),
            (5, T0 - 5),
        ] {
            let got = t.insert(a.peer, report(&a, seq, issued), at(start, 500));
            assert_eq!(got, Err(NotNewer), "seq {seq} issued {issued}");
        }
        t.insert(a.peer, report(&a, 11, T0 + 1000), at(start, 1000))
            .unwrap();
        let (_, e) = t.live(at(start, 1000).mono).next().unwrap();
        assert_eq!(e.report.record().seq, 11);
        assert_eq!(
            e.membership.provider().as_bytes(),
            &a.key.verifying_key().to_bytes()
        );
        assert!(!e.membership.is_certified());
    }

    #[test]
    fn silent_nodes_stop_being_listed_after_the_ttl() {
        let start = Instant::now();
        let (a, b) = (node(1), node(2));
        let mut t = Table::default();
        t.insert(a.peer, report(&a, 1, T0), at(start, 0)).unwrap();
        t.insert(b.peer, report(&b, 1, T0), at(start, 0)).unwrap();
        for i in 1..=9 {
            let now = at(start, i * 1000);
            t.insert(a.peer, report(&a, 1 + i, now.unix_ms), now)
                .unwrap();
        }
        let mut both = vec![a.peer, b.peer];
        both.sort();
        assert_eq!(listed(&t, at(start, 4999)), both);
        assert_eq!(listed(&t, at(start, 5000)), vec![a.peer]);

        // B is no longer listed but still held: a replay of its last report is recognised.
        t.sweep(at(start, 9000));
        assert_eq!(t.len(), 2);
        let replay = report(&b, 1, T0);
        assert_eq!(t.insert(b.peer, replay, at(start, 9000)), Err(NotNewer));
        assert_eq!(listed(&t, at(start, 9000)), vec![a.peer]);
        // Once its report has expired too, B is forgotten; a new report brings it back.
        t.sweep(at(start, LIFETIME));
        assert_eq!(t.len(), 1);
        let now = at(start, LIFETIME + 1);
        t.insert(b.peer, report(&b, 2, now.unix_ms), now).unwrap();
        assert_eq!(listed(&t, now), both);
    }

    #[test]
    fn a_report_that_arrives_late_is_listed_for_what_is_left_of_the_ttl() {
        let start = Instant::now();
        let a = node(1);
        let mut t = Table::default();
        // Issued 3 s before it arrives: listed for 2 s more.
        t.insert(a.peer, report(&a, 1, T0 - 3000), at(start, 0))
            .unwrap();
        assert_eq!(listed(&t, at(start, 1999)), vec![a.peer]);
        assert!(listed(&t, at(start, 2000)).is_empty());
        // From a clock 60 s ahead: never more than the TTL from arrival.
        let b = node(2);
        t.insert(b.peer, report(&b, 1, T0 + 60_000), at(start, 0))
            .unwrap();
        assert_eq!(listed(&t, at(start, 4999)), vec![b.peer]);
        assert!(listed(&t, at(start, 5000)).is_empty());
    }

    #[test]
    fn a_quiet_report_is_listed_for_half_its_lifetime_within_bounds() {
        let start = Instant::now();
        let (a, b, c) = (node(1), node(2), node(3));
        let mut t = Table::default();
        t.insert(a.peer, report_living(&a, 1, T0, 50_000), at(start, 0))
            .unwrap();
        // A lifetime under twice the floor still lists for the floor.
        t.insert(b.peer, report_living(&b, 1, T0, 2_000), at(start, 0))
            .unwrap();
        t.insert(c.peer, report_living(&c, 1, T0, 60_000), at(start, 0))
            .unwrap();
        assert_eq!(listed(&t, at(start, 4999)).len(), 3);
        assert_eq!(listed(&t, at(start, 5000)).len(), 2);
        let mut a_and_c = vec![a.peer, c.peer];
        a_and_c.sort();
        assert_eq!(listed(&t, at(start, 24_999)), a_and_c);
        assert_eq!(listed(&t, at(start, 25_000)), vec![c.peer]);
        assert!(listed(&t, at(start, 30_000)).is_empty());
    }

    #[test]
    fn a_full_table_drops_the_node_heard_from_longest_ago() {
        let start = Instant::now();
        let nodes: Vec<Node> = (1..=4).map(node).collect();
        let mut t = Table::new(3);
        for (i, n) in nodes.iter().take(3).enumerate() {
            let now = at(start, i as u64 * 100);
            t.insert(n.peer, report(n, 1, now.unix_ms), now).unwrap();
        }
        // Node 0 reports again: node 1 is now the one heard from longest ago.
        let now = at(start, 300);
        t.insert(nodes[0].peer, report(&nodes[0], 2, now.unix_ms), now)
            .unwrap();
        let now = at(start, 400);
        t.insert(nodes[3].peer, report(&nodes[3], 1, now.unix_ms), now)
            .unwrap();
        assert_eq!(t.len(), 3);
        let mut want = vec![nodes[0].peer, nodes[2].peer, nodes[3].peer];
        want.sort();
        assert_eq!(listed(&t, now), want);
        // Dead entries make room before live ones are dropped.
        let late = at(start, 400 + LIFETIME + 1);
        t.insert(nodes[1].peer, report(&nodes[1], 5, late.unix_ms), late)
            .unwrap();
        assert_eq!(t.len(), 1);
    }
}
