//! The peering database (`peering.redb` in the data dir): the negotiated arrangements, what
//! this node served and redirected under each, and how past peers kept their SLAs, so a
//! restart resumes its arrangements and accounting instead of starting from zero. Every call blocks on disk; callers run it on a blocking thread.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// Arrangement id → JSON of [`Counts`]. JSON, not postcard: it is local state an operator may
/// want to read with a generic tool, and the rows are few and small.
const USAGE: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("usage_v1");
/// Arrangement id → postcard of [`Saved`]: negotiated arrangements (long-term ones come from
/// the config at every start). Version 2 added the end reason.
const ARRANGEMENTS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("arrangements_v2");

/// Provider id → JSON of [`PeerRecord`]: how the providers we bought capacity from did.
const PEER_RECORDS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("peer_records_v1");

/// Unix ms when loaded → JSON of the checked policy: the policies this node has run with, the
/// latest last, each kept only when it differs from the one before.
const POLICIES: TableDefinition<u64, &str> = TableDefinition::new("policies_v1");
/// Policies kept in the history; the oldest make room.
pub const MAX_POLICIES: usize = 32;

/// How a provider served us as the peer of our negotiated arrangements: what ranking a new
/// candidate weighs besides price and distance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    pub arrangements: u32,
    pub breaches: u32,
    /// Unix ms of the last SLA breach; 0 if none.
    pub last_breach_ms: u64,
}

/// A negotiated arrangement as kept on disk: the agreement both parties signed (re-verified at
/// open), when we accepted it (its validity is judged at that time), and how it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub agreement: reef_proto::records::Agreement,
    pub accepted_at_ms: u64,
    pub ended: bool,
    pub end_reason: Option<reef_proto::records::EndReason>,
    /// Unix ms when it ended here.
    pub ended_at_ms: Option<u64>,
    /// The other party's agent, as peer id bytes.
    pub counterpart: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct StoreError(pub(crate) String);

/// redb splits its errors by operation (and we encode rows with serde); they all mean "the
/// database failed", so each converts into one error of ours, made by `$make` from the text.
macro_rules! from_db_errors {
    ($target:ty, $make:expr) => {
        $crate::peering::store::from_db_errors!(@each $target, $make;
            redb::DatabaseError, redb::TransactionError, redb::TableError,
            redb::StorageError, redb::CommitError, serde_json::Error);
    };
    (@each $target:ty, $make:expr; $($t:ty),*) => {$(
        impl From<$t> for $target {
            fn from(e: $t) -> Self {
                let make: fn(String) -> Self = $make;
                make(e.to_string())
            }
        }
    )*};
}
pub(crate) use from_db_errors;

from_db_errors!(StoreError, StoreError);

/// One arrangement's counters at this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub bytes: u64,
    pub redirected: u64,
}

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(USAGE)?;
        txn.open_table(ARRANGEMENTS)?;
        txn.open_table(PEER_RECORDS)?;
        txn.open_table(POLICIES)?;
        txn.commit()?;
        Ok(Store { db })
    }

    /// Every row; a row that does not decode is skipped (its arrangement starts from zero).
    pub fn usage(&self) -> Result<Vec<([u8; 16], Counts)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(USAGE)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if let Ok(counts) = serde_json::from_slice(v.value()) {
                out.push((*k.value(), counts));
            }
        }
        Ok(out)
    }

    /// Every negotiated arrangement saved; rows that do not decode are skipped.
    pub fn arrangements(&self) -> Result<Vec<Saved>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ARRANGEMENTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            if let Ok(saved) = postcard::from_bytes(v.value()) {
                out.push(saved);
            }
        }
        Ok(out)
    }

    /// Adds `policy` (JSON) to the history at `now_ms`, unless it is the latest one already.
    pub fn record_policy(&self, policy: &str, now_ms: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(POLICIES)?;
            let latest = table.last()?.map(|(_, v)| v.value().to_string());
            if latest.as_deref() != Some(policy) {
                table.insert(now_ms, policy)?;
                while table.len()? > MAX_POLICIES as u64 {
                    table.pop_first()?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The policy history, oldest first: (unix ms loaded, JSON).
    pub fn policies(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(POLICIES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push((k.value(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Every provider's record; rows that do not decode are skipped.
    pub fn peer_records(&self) -> Result<Vec<([u8; 32], PeerRecord)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(PEER_RECORDS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if let Ok(record) = serde_json::from_slice(v.value()) {
                out.push((*k.value(), record));
            }
        }
        Ok(out)
    }

    /// Writes the usage rows, the negotiated arrangements and the peer records in one
    /// transaction.
    pub fn save(
        &self,
        usage: &[([u8; 16], Counts)],
        arrangements: &[([u8; 16], Saved)],
        peer_records: &[([u8; 32], PeerRecord)],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(USAGE)?;
            for (id, counts) in usage {
                let json = serde_json::to_vec(counts)?;
                table.insert(id, json.as_slice())?;
            }
            let mut table = txn.open_table(ARRANGEMENTS)?;
            for (id, saved) in arrangements {
                let bytes = postcard::to_stdvec(saved).map_err(|e| StoreError(e.to_string()))?;
                table.insert(id, bytes.as_slice())?;
            }
            let mut table = txn.open_table(PEER_RECORDS)?;
            for (id, record) in peer_records {
                table.insert(id, serde_json::to_vec(record)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peering.redb");
        let counts = Counts {
            requests: 3,
            bytes: 9000,
            redirected: 1,
        };
        {
            let store = Store::open(&path).unwrap();
            assert!(store.usage().unwrap().is_empty());
            let record = PeerRecord {
                arrangements: 2,
                breaches: 1,
                last_breach_ms: 99,
            };
            store
                .save(&[([7; 16], counts)], &[], &[([3; 32], record)])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.usage().unwrap(), vec![([7; 16], counts)]);
        assert_eq!(store.peer_records().unwrap()[0].1.breaches, 1);
    }

    #[test]
    fn the_policy_history_keeps_changes_only_and_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("peering.redb")).unwrap();
        store.record_policy("{\"a\":1}", 1).unwrap();
        store.record_policy("{\"a\":1}", 2).unwrap();
        store.record_policy("{\"a\":2}", 3).unwrap();
        let kept = store.policies().unwrap();
        assert_eq!(kept, vec![(1, "{\"a\":1}".into()), (3, "{\"a\":2}".into())]);
        for i in 0..(MAX_POLICIES as u64 + 5) {
            store
                .record_policy(&format!("{{\"n\":{i}}}"), 10 + i)
                .unwrap();
        }
        let kept = store.policies().unwrap();
        assert_eq!(kept.len(), MAX_POLICIES);
        assert_eq!(kept.last().unwrap().0, 10 + MAX_POLICIES as u64 + 4);
    }
}
