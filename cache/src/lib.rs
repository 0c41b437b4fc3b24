//! The on-disk object store behind a Reef node's HTTP caching proxy.
//!
//! Owns: response bodies on disk, content-addressed by blake3 so identical bodies are stored
//! once; the index of stored objects (redb) with each object's HTTP freshness metadata (a
//! `CachePolicy` the caller built); eviction under a byte budget (S3-FIFO by default, behind the
//! `Policy` seam); per-tenant byte quotas (a tenant is a label the caller gives each object);
//! crash safety; and coalescing of concurrent fills of one key, with readers that follow a body
//! while it is still being written.
//!
//! Purging (`Store::purge_url`, `Store::purge_prefix`) removes committed objects by URL (with
//! every variant) or by URL prefix and keeps fills already under way from storing what may predate the purge.
//!
//! Must not: touch the network, or decide HTTP semantics (the caller says what is cacheable and
//! checks freshness with the stored policy).
//!
//! Recently read entries stay in memory (decoded metadata, and whole bodies up to
//! `MAX_HOT_BODY`), so a hit on a hot object touches neither the index nor the disk.
//!
//! A fill becomes durable in this order: temp file → fsync → rename into `blobs/` → fsync the
//! directory → index commit. `Store::open` removes whatever a crash left between those steps,
//! and `Store::get` checks the body's length before serving it, so a truncated or half-written
//! body is never served.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod blobs;
mod catalog;
mod error;
mod family;
mod fill;
mod hot;
mod index;
mod lru;
mod meta;
mod policy;
mod purge;
mod quota;
mod store;

pub use error::Error;
pub use fill::{Fill, FillGuard, FillWait, Outcome, TAIL_CHUNK, Tail, Writer};
pub use hot::{HOT_BODY_BYTES, MAX_HOT_BODY, MAX_HOT_ENTRIES};
pub use lru::Lru;
pub use meta::{MAX_META_LEN, Meta};
pub use policy::{Policy, S3Fifo};
pub use quota::QuotaStats;
pub use store::{Config, Hit, HitBody, MAX_FILLS, MAX_OBJECTS, Stats, Store};

#[cfg(test)]
mod tests;
