//! The peering database (`peering.redb` in the data dir): what this node served and
//! redirected under each arrangement, so a restart resumes its accounting instead of
//! starting from zero. Every call blocks on disk; callers run it on a blocking thread.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Arrangement id → JSON of [`Counts`]. JSON, not postcard: it is local state an operator may
/// want to read with a generic tool, and the rows are few and small.
const USAGE: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("usage_v1");

#[derive(Debug, thiserror::Error)]
#[error("peering database: {0}")]
pub struct StoreError(String);

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

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

    /// Writes every row of `rows` in one transaction.
    pub fn save_usage(&self, rows: &[([u8; 16], Counts)]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(USAGE)?;
            for (id, counts) in rows {
                let json = serde_json::to_vec(counts).map_err(|e| StoreError(e.to_string()))?;
                table.insert(id, json.as_slice())?;
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
            store.save_usage(&[([7; 16], counts)]).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.usage().unwrap(), vec![([7; 16], counts)]);
    }
}
