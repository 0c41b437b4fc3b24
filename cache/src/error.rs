use std::io;

/// Everything that can go wrong in the cache. Callers mostly care whether to keep serving
/// without caching (`TooLarge`, `Busy`, `OverQuota`, `Aborted`) or to report an internal fault
/// (the rest).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cache i/o: {0}")]
    Io(#[from] io::Error),
    #[error("cache index: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt cache data: {0}")]
    Corrupt(String),
    /// The body would exceed the cache's byte budget; stream it without storing.
    #[error("body exceeds the cache budget")]
    TooLarge,
    /// The response metadata (mostly headers) is too large to persist.
    #[error("response metadata exceeds {max} bytes")]
    MetaTooLarge { max: usize },
    /// The fill was abandoned (writer dropped, a write failed, or the store gave up on it).
    #[error("fill aborted")]
    Aborted,
    /// Too many fills are in progress; this one can be served but not stored.
    #[error("too many fills in progress")]
    Busy,
    /// Storing the body would take its tenant past its quota: it is (or was) served, not stored.
    #[error("{tenant} is over its storage quota")]
    OverQuota { tenant: String },
    /// A purge covered the fill while it was being written; it was served but not stored.
    #[error("purged while being filled; not stored")]
    Purged,
    /// A blocking task panicked or was cancelled at shutdown.
    #[error("cache background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

// redb splits its errors by operation; they all mean "the index failed", so fold them into `Db`.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(redb::Error::from(e))
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
