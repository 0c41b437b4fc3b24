//! Reef's shared vocabulary: identities, signed records, content keys and canonical URLs.
//!
//! This crate owns the wire and persisted types and their canonical encoding (postcard,
//! versioned), and everything needed to check what arrives from the network: [`records`]
//! seals and opens the signed envelope every record and gossip message travels in, and says
//! why a rejected one was rejected; [`peering`] holds the messages providers exchange to make,
//! use and settle peering arrangements. It must not do I/O: no sockets, no files, no clocks beyond
//! what a caller passes in (the one exception is OS randomness for a new key).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod content_key;
pub mod peering;
mod purge;
pub mod records;
mod runtime;
pub mod token;
mod url;
mod withdrawal;

pub use content_key::BadKey;
pub use content_key::ContentKey;
pub use purge::{
    MAX_PURGE_CLOCK_SKEW_SECS, MAX_PURGE_NOTICE_AGE_SECS, MAX_PURGE_NOTICE_LEN, MAX_PURGE_TARGETS,
    NoticeError, PURGE_TOPIC, PurgeNotice, PurgeTarget,
};
pub use runtime::{RUNTIME_FILE, Runtime};
pub use url::{CanonicalUrl, MAX_URL_LEN, UrlError};
pub use withdrawal::{
    MAX_WITHDRAWAL_KEYS, MAX_WITHDRAWAL_LEN, WITHDRAWAL_TOPIC, Withdrawal, WithdrawalError,
};
