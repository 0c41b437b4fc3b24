use std::time::SystemTime;

use http_cache_semantics::CachePolicy;
use reef_proto::ContentKey;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Leading byte of every persisted `Meta`, so a later layout can be told apart and migrated.
const META_VERSION: u8 = 1;

/// Ceiling for one encoded `Meta`. Request plus response headers stay far below this in
/// practice (hyper caps a header block at ~100 KiB); anything bigger is not worth an index row.
pub const MAX_META_LEN: usize = 256 * 1024;

/// What the cache knows about a stored body besides its bytes.
///
/// Encoded as JSON rather than postcard because `CachePolicy` serialises its headers through
/// `http_serde`, which needs a self-describing format.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Canonical URL, for logs and purges.
    pub url: String,
    /// Freshness rules; decides whether the copy may be served without asking upstream.
    pub policy: CachePolicy,
    /// Response status and end-to-end headers as received, in order and with repeats
    /// (`CachePolicy` neither exposes its copy nor keeps repeated fields such as `Set-Cookie`).
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Set by the store at commit; callers pass 0.
    pub body_len: u64,
    /// blake3 of the body, set by the store at commit.
    pub body_hash: [u8; 32],
    /// Set by the store at commit.
    pub stored_at: SystemTime,
    /// Some on the entry of a URL whose responses vary: the request headers they vary on
    /// (lower-case, in `Vary` order). Such an entry has no body; each variant is an entry of
    /// its own whose `variant_of` names this one.
    #[serde(default)]
    pub vary: Option<Vec<String>>,
    /// For one variant of a URL: the key of the URL's entry, so removing the URL removes it too.
    #[serde(default)]
    pub variant_of: Option<ContentKey>,
    /// Whose storage quota the body counts against (see `Config::quotas`); None for no one.
    /// Absent in entries written before quotas existed, which therefore count for no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Meta {
    pub fn new(
        url: String,
        policy: CachePolicy,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Meta {
        Meta {
            url,
            policy,
            status,
            headers,
            body_len: 0,
            body_hash: [0; 32],
            stored_at: SystemTime::now(),
            vary: None,
            variant_of: None,
            tenant: None,
        }
    }

    /// True for the bodiless entry that says which headers select a URL's variants.
    pub fn is_vary_index(&self) -> bool {
        self.vary.is_some()
    }

    /// The stored response header fields as a `HeaderMap`, in order, repeats kept. A field
    /// that is not valid HTTP (Reef never stores one, but the row is data) is left out.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value),
            ) {
                map.append(n, v);
            }
        }
        map
    }

    /// Charges the body to `tenant`'s quota, if it has one.
    pub fn with_tenant(mut self, tenant: impl Into<String>) -> Meta {
        self.tenant = Some(tenant.into());
        self
    }
}

/// The few fields `Store::open` needs to rebuild its in-memory index; skipping the policy keeps
/// a restart with many objects cheap.
#[derive(Deserialize)]
pub(crate) struct Summary {
    pub body_len: u64,
    pub body_hash: [u8; 32],
    pub stored_at: SystemTime,
    #[serde(default)]
    pub variant_of: Option<ContentKey>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The fields a purge by URL prefix needs.
#[derive(Deserialize)]
pub(crate) struct UrlSummary {
    pub url: String,
    pub body_hash: [u8; 32],
}

pub(crate) fn encode(meta: &Meta) -> Result<Vec<u8>, Error> {
    let mut out = vec![META_VERSION];
    serde_json::to_writer(&mut out, meta)
        .map_err(|e| Error::Corrupt(format!("encoding meta: {e}")))?;
    if out.len() > MAX_META_LEN {
        return Err(Error::MetaTooLarge { max: MAX_META_LEN });
    }
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Meta, Error> {
    serde_json::from_slice(payload(bytes)?).map_err(|e| Error::Corrupt(format!("meta: {e}")))
}

pub(crate) fn decode_summary(bytes: &[u8]) -> Result<Summary, Error> {
    serde_json::from_slice(payload(bytes)?).map_err(|e| Error::Corrupt(format!("meta: {e}")))
}

pub(crate) fn decode_url(bytes: &[u8]) -> Result<UrlSummary, Error> {
    serde_json::from_slice(payload(bytes)?).map_err(|e| Error::Corrupt(format!("meta: {e}")))
}

fn payload(bytes: &[u8]) -> Result<&[u8], Error> {
    match bytes.split_first() {
        Some((&META_VERSION, rest)) => Ok(rest),
        Some((v, _)) => Err(Error::Corrupt(format!("unknown meta version {v}"))),
        None => Err(Error::Corrupt("empty meta".into())),
    }
}
