//! Signed records: every record and gossip message Reef exchanges is a [`seal`]ed envelope
//! (version, [`Kind`], signer, issued/expiry time, postcard body, ed25519 signature) that
//! [`open`] checks completely before anyone looks at its contents.
//!
//! Identities are self-certifying: a provider *is* its ed25519 public key ([`ProviderId`]), a
//! node *is* its libp2p ed25519 key (its peer id is derived with [`peer_id_bytes`]). Names are
//! only labels. A node belongs to a provider only if that provider's key signed a
//! [`ProviderCert`] for it.
//!
//! # Envelope bytes (version 1)
//!
//! ```text
//! offset  size      field
//! 0       1         version      = 1
//! 1       1         kind         Kind::code(), e.g. 2 = NodeRecord
//! 2       32        signer       ed25519 public key
//! 34      1..=10    issued_at    unix ms, postcard varint (LEB128)
//! ..      1..=10    expires_at   unix ms, postcard varint
//! ..      1..=3     body length  postcard varint
//! ..      n         body         postcard of the record
//! len-64  64        signature    ed25519 over DOMAIN ++ bytes[0 .. len-64]
//! ```
//!
//! Everything before the signature is exactly `postcard((version, kind, signer, issued_at,
//! expires_at, body))`, and the signature covers those received bytes as they are, behind the
//! domain-separation prefix `b"reef signed record v1\0"`. Verifying the bytes as received (not a
//! re-encoding) means no alternative encoding of the same fields can carry a valid signature,
//! and the prefix means no signature over anything else made with the same key (libp2p noise
//! handshakes, gossipsub messages) can pass as a record.
//!
//! # What `open` rejects, in order
//! size over the kind's limit (`too_large`) → does not decode (`garbage`) → version
//! (`version`) → kind (`wrong_kind`) → signature, `verify_strict` (`bad_signature`) → expired,
//! `expires_at <= now` (`expired`) → issued more than [`MAX_CLOCK_SKEW_MS`] ahead of now
//! (`future`) → `expires_at - issued_at` not in `1..=T::MAX_LIFETIME_MS` (`lifetime`) → body
//! does not decode (`garbage`) → the record's own checks (`wrong_signer`, `invalid`). Stores add
//! `replay` for a record not newer ([`is_newer`]) than the one they hold, and check with
//! [`key_belongs`] / [`open_under_key`] that a DHT value sits under its own key. A provider
//! certificate carried in a node record, load report or usage receipt is opened the same way,
//! and a rejected one rejects the record with the certificate's reason.
//!
//! # Kinds
//! - [`ProviderCert`]: a provider vouches for one of its nodes.
//! - [`NodeRecord`] (DHT): where a node listens, what it can take, whom it belongs to.
//! - [`ContentRecord`] (DHT): what a body fetched from a peer must hash to.
//! - [`CapacityOffer`] (DHT): a provider's spare capacity, for peering.
//! - [`LoadReport`] (gossip): a node's load, every second.
//! - [`ServiceRecord`] (DHT): a hostname a provider serves, and its origin.
//! - [`Terms`] (peering protocol): an arrangement as the primary proposes it; countersigned by
//!   the peer it becomes an [`Agreement`], checked by [`open_agreement`].
//! - [`UsageReceipt`] (peering protocol): a serving node's running totals for an arrangement.
//! - [`ArrangementEnd`] (gossip): a party's word that an arrangement is over.
//!
//! # Who signs
//! Providers sign certificates, offers, service records, terms and arrangement ends with a
//! [`ProviderKey`]; a
//! peer accepts terms by [`countersign`]ing them. Nodes sign their own records (node records,
//! content records, load reports, usage receipts) with their libp2p ed25519 key:
//! `SigningKey::from_bytes` of its 32-byte secret gives the same public key, and
//! [`peer_id_bytes`] of that key is the node's libp2p PeerId.

mod arrangement;
mod cert;
mod content;
mod end;
mod envelope;
mod error;
mod identity;
mod keys;
mod kind;
mod load;
mod node;
mod offer;
mod receipt;
mod service;
pub(crate) mod text;

#[cfg(test)]
pub(crate) mod tests;

pub use arrangement::{
    Agreement, ArrangementId, BadArrangementId, COUNTERSIGN_DOMAIN, Countersignature,
    MAX_ARRANGEMENT_DURATION_MS, MAX_ARRANGEMENT_REGIONS, MAX_ARRANGEMENT_SERVICES, MAX_PERMILLE,
    OpenedAgreement, Sla, Terms, countersign, open_agreement,
};
pub use cert::{MAX_PROVIDER_NAME_LEN, Membership, ProviderCert};
pub use content::{ContentRecord, MAX_ETAG_LEN, MAX_LAST_MODIFIED_LEN};
pub use ed25519_dalek::SigningKey;
pub use end::{ArrangementEnd, EndReason};
pub use envelope::{
    DOMAIN, ENVELOPE_OVERHEAD, ENVELOPE_VERSION, MAX_CLOCK_SKEW_MS, Opened, SIGNATURE_LEN,
    decode_body, is_newer, open, seal,
};
pub use error::RecordError;
pub(crate) use identity::random;
pub use identity::{
    BadProviderId, KeyError, ProviderId, ProviderKey, ed25519_key_of_peer_id, peer_id_bytes,
};
pub use keys::{
    content_record_key, key_belongs, kind_of_key, node_record_key, offer_key, open_under_key,
    region_announce_key, region_key, service_key,
};
pub use kind::Kind;
pub use load::{LOAD_TOPIC, LoadReport, MAX_HIT_RATIO_PERMILLE, MAX_UTILISATION_PERMILLE};
pub use node::{
    Capacity, MAX_ADDR_LEN, MAX_HTTP_LEN, MAX_LISTEN_ADDRS, MAX_REGION_LEN, NodeRecord,
};
pub use offer::{CapacityOffer, MAX_OFFER_REGIONS};
pub use receipt::{ReceiptAck, UsageReceipt};
pub use service::{
    Access, MAX_HOSTNAME_LABEL_LEN, MAX_HOSTNAME_LEN, MAX_ORIGIN_LEN, ServiceRecord,
};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One minute in milliseconds, for the limits below.
pub(crate) const MINUTE_MS: u64 = 60 * 1000;
/// One hour in milliseconds.
pub(crate) const HOUR_MS: u64 = 60 * MINUTE_MS;

/// A record type that travels in a signed envelope.
///
/// Limits are per kind so a small, frequent record (a load report) cannot be padded to the size
/// of a large one, and a long-lived kind (a provider certificate) does not lend its lifetime to
/// short-lived ones.
pub trait Record: Serialize + DeserializeOwned {
    /// The envelope's `kind`; a record is only ever opened as the kind it was sealed as.
    const KIND: Kind;
    /// Largest sealed envelope of this kind in bytes; bigger input is rejected before decoding.
    const MAX_LEN: usize;
    /// Longest `expires_at - issued_at` allowed, in milliseconds.
    const MAX_LIFETIME_MS: u64;

    /// The record's own checks, run by [`open`] after signature and times have been verified
    /// (and by [`seal`] with `now_ms = issued_at`, so a node cannot publish what others reject):
    /// field lengths, and that `signer` is the key the record says it belongs to.
    fn validate(&self, signer: &[u8; 32], now_ms: u64) -> Result<(), RecordError>;

    /// The DHT key this record is stored under, or `None` for records that never go into the
    /// DHT (gossip, or carried inside another record).
    fn dht_key(&self) -> Option<Vec<u8>>;
}
