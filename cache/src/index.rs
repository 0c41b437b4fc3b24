//! The persistent index: content key → encoded `Meta`, in redb. Every call blocks on disk, so
//! callers run it on a blocking thread.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use reef_proto::ContentKey;

use crate::Error;
use crate::blobs::BlobId;
use crate::meta::{self, Meta, Summary};

/// One index row as `Store::open` sees it; an undecodable row is kept as `Err` so it can be dropped.
pub(crate) type Row = (ContentKey, Result<Summary, Error>);

const OBJECTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("objects");

pub(crate) struct Index {
    db: Database,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, Error> {
        let db = Database::create(path)?;
        // Create the table up front so readers never see "table does not exist".
        let txn = db.begin_write()?;
        txn.open_table(OBJECTS)?;
        txn.commit()?;
        Ok(Index { db })
    }

    pub fn get(&self, key: &ContentKey) -> Result<Option<Meta>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        match table.get(key.as_bytes())? {
            Some(v) => Ok(Some(meta::decode(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn put(&self, key: &ContentKey, encoded: &[u8]) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(OBJECTS)?;
            table.insert(key.as_bytes(), encoded)?;
        }
        txn.commit()?;
        Ok(())
    }

    pub fn delete(&self, keys: &[ContentKey]) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(OBJECTS)?;
            for key in keys {
                table.remove(key.as_bytes())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Keys and body hashes of the rows whose URL starts with `prefix`. Rows that do not
    /// decode are skipped (the next `Store::open` drops them).
    pub fn with_url_prefix(&self, prefix: &str) -> Result<Vec<(ContentKey, BlobId)>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            if let Ok(u) = meta::decode_url(v.value())
                && u.url.starts_with(prefix)
            {
                out.push((
                    ContentKey::from_bytes(*k.value()),
                    BlobId::from_bytes(u.body_hash),
                ));
            }
        }
        Ok(out)
    }

    /// Every row, decoded just enough to rebuild the in-memory index.
    pub fn summaries(&self) -> Result<Vec<Row>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            let key = ContentKey::from_bytes(*k.value());
            out.push((key, meta::decode_summary(v.value())));
        }
        Ok(out)
    }
}
