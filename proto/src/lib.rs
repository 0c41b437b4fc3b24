//! Reef's shared vocabulary: content keys, canonical URLs and the records nodes exchange.
//!
//! This crate owns the wire and persisted types and their canonical encoding (postcard,
//! versioned). It must not do I/O: no sockets, no files, no clocks beyond what a caller passes in.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod content_key;
mod node_record;
mod purge;
mod runtime;
mod url;
mod withdrawal;

pub use content_key::BadKey;
pub use content_key::ContentKey;
pub use node_record::{MAX_NODE_RECORD_LEN, NodeRecord, RecordError};
pub use purge::{
    MAX_PROVIDER_NAME_LEN, MAX_PURGE_CLOCK_SKEW_SECS, MAX_PURGE_NOTICE_AGE_SECS,
    MAX_PURGE_NOTICE_LEN, MAX_PURGE_TARGETS, NoticeError, PURGE_TOPIC, PurgeNotice, PurgeTarget,
};
pub use runtime::{RUNTIME_FILE, Runtime};
pub use url::{CanonicalUrl, MAX_URL_LEN, UrlError};
pub use withdrawal::{
    MAX_WITHDRAWAL_KEYS, MAX_WITHDRAWAL_LEN, WITHDRAWAL_TOPIC, Withdrawal, WithdrawalError,
};
