//! Purging: removing committed objects by key or by URL prefix, and keeping fills that were
//! already under way from committing a body that may predate the purge.
//!
//! Fills in progress when a purge arrives are *marked*: whoever already reads one gets the
//! whole body, but it is never committed, and the mark takes the fill out of the map of fills,
//! so the next request for the key starts a fresh fill instead of joining the old one. A
//! prefix purge cannot tell which URL a fill is for until the fill has its response head, so it
//! marks every fill still waiting for one; at worst a few unrelated objects are fetched again.

use std::sync::Arc;

use reef_proto::ContentKey;
use tracing::debug;

use crate::Error;
use crate::blobs::BlobId;
use crate::fill::Slot;
use crate::store::{Inner, Store, blocking, lock};

impl Store {
    /// Removes the object stored under `key` (the key of `url`), if any, with every stored
    /// variant of it, and stops any fill of them in progress from being stored. Returns the
    /// keys removed.
    pub async fn purge_url(&self, key: &ContentKey, url: &str) -> Result<Vec<ContentKey>, Error> {
        let inner = self.inner.clone();
        let (key, url) = (*key, url.to_string());
        blocking(move || {
            inner.mark_fills(|k, slot| *k == key || slot.url_matches(|u| u == url) == Some(true));
            let mut keys = lock(&inner.catalog).variants_of(&key);
            keys.push(key);
            let mut removed = Vec::new();
            for key in keys {
                if inner.remove_entry(key, None)? {
                    removed.push(key);
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Removes every committed object whose URL (`Meta::url`) starts with `prefix`, and stops
    /// matching fills in progress (and fills whose URL is not known yet) from being stored.
    /// Returns the keys removed.
    ///
    /// Reads every index row (only the URL and body hash of each are decoded), so it takes time
    /// in proportion to the number of stored objects; it runs on a blocking thread.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<Vec<ContentKey>, Error> {
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            inner.mark_fills(|_, slot| slot.url_starts_with(&prefix).unwrap_or(true));
            let candidates = inner.index.with_url_prefix(&prefix)?;
            inner.remove_entries(&candidates)
        })
        .await
    }
}

impl Inner {
    /// Marks the fills `matches` picks as purged and takes them out of the map of fills.
    /// Holds the index gate, as `commit` does when it checks the mark (see there).
    fn mark_fills(&self, matches: impl Fn(&ContentKey, &Slot) -> bool) {
        let _gate = lock(&self.index_gate);
        let mut fills = lock(&self.fills);
        let marked: Vec<(ContentKey, Arc<Slot>)> = fills
            .iter()
            .filter(|(k, slot)| matches(k, slot))
            .map(|(k, slot)| (*k, slot.clone()))
            .collect();
        for (key, slot) in marked {
            slot.purge();
            fills.remove(&key);
            debug!(key = %key.short(), "fill in progress purged");
        }
    }

    /// Removes the entries that still hold the blob the caller saw (an entry refilled since
    /// then holds a newer body and stays), in one index transaction.
    fn remove_entries(
        &self,
        candidates: &[(ContentKey, BlobId)],
    ) -> Result<Vec<ContentKey>, Error> {
        let (removed, orphans) = {
            let _gate = lock(&self.index_gate);
            let current: Vec<ContentKey> = {
                let catalog = lock(&self.catalog);
                candidates
                    .iter()
                    .filter(|(key, blob)| catalog.blob_of(key) == Some(*blob))
                    .map(|(key, _)| *key)
                    .collect()
            };
            self.index.delete(&current)?;
            let mut catalog = lock(&self.catalog);
            let orphans: Vec<BlobId> = current
                .iter()
                .filter_map(|k| catalog.remove(k))
                .filter(|r| r.orphaned)
                .map(|r| r.blob)
                .collect();
            (current, orphans)
        };
        for blob in orphans {
            self.release_blob(blob);
        }
        Ok(removed)
    }
}
