//! Purge notices: what a node gossips to the other nodes of its provider when an operator
//! purges a URL or a URL prefix.

use serde::{Deserialize, Serialize};

use crate::records::ProviderId;
use crate::{CanonicalUrl, MAX_URL_LEN};

/// Gossipsub topic carrying [`PurgeNotice`]s. Every node subscribes (and forwards valid notices),
/// whatever its provider; only nodes of the notice's provider apply it.
pub const PURGE_TOPIC: &str = "reef/purge/1";
/// Largest encoded notice: half the overlay's 64 KiB gossip cap leaves room for the gossipsub
/// envelope (signature, key, topic, sequence number) with a wide margin.
pub const MAX_PURGE_NOTICE_LEN: usize = 32 * 1024;
/// Most URLs plus prefixes in one notice; an operator purging more sends several.
pub const MAX_PURGE_TARGETS: usize = 64;
/// A notice older than this is refused: gossip delivers in seconds, so an old one is a replay
/// (gossipsub forgets message ids after a minute) or comes from a badly wrong clock.
pub const MAX_PURGE_NOTICE_AGE_SECS: u64 = 10 * 60;
/// A notice issued further in the future than this comes from a badly wrong clock.
pub const MAX_PURGE_CLOCK_SKEW_SECS: u64 = 10 * 60;

/// Current wire version of [`PurgeNotice`]. Version 1 named the provider by its (unverifiable)
/// name; version 2 by its [`ProviderId`].
const PURGE_NOTICE_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error("notice is {0} bytes, over the limit of {MAX_PURGE_NOTICE_LEN}")]
    TooLarge(usize),
    #[error("notice version {0} is not supported")]
    Version(u8),
    #[error("notice does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("notice names no URL or prefix")]
    Empty,
    #[error("notice names {0} URLs and prefixes, over the limit of {MAX_PURGE_TARGETS}")]
    TooManyTargets(usize),
    #[error("{0:?} is not a canonical http(s) URL")]
    NotCanonical(String),
    #[error("notice was issued {0} s ago, too long ago to apply")]
    TooOld(u64),
    #[error("notice is issued {0} s in the future")]
    FromTheFuture(u64),
}

/// One thing to purge, as a canonical URL string (`CanonicalUrl::as_str`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurgeTarget {
    /// Exactly this URL.
    Url(String),
    /// Every URL whose canonical form starts with this string (a plain string prefix: `…/dir`
    /// also matches `…/directory`; end it with `/` to mean a directory).
    Prefix(String),
}

impl PurgeTarget {
    pub fn url(url: &CanonicalUrl) -> Self {
        Self::Url(url.as_str().to_string())
    }

    pub fn prefix(prefix: &CanonicalUrl) -> Self {
        Self::Prefix(prefix.as_str().to_string())
    }

    /// The canonical URL string, whichever kind this is.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Url(s) | Self::Prefix(s) => s,
        }
    }
}

/// "Drop these URLs": published on [`PURGE_TOPIC`] by the node an operator asked to purge.
///
/// Who may say so: the gossip message carrying the notice is signed by the publishing node
/// (gossipsub's strict mode), so the receiver knows which node sent it, and it applies the
/// notice only if that node's verified membership (its NodeRecord's
/// [`ProviderCert`](crate::records::ProviderCert), or the node's own key for a node without
/// one) is the notice's provider and that provider is its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeNotice {
    /// The provider whose nodes must drop the targets.
    pub provider: ProviderId,
    pub targets: Vec<PurgeTarget>,
    /// Seconds since the Unix epoch when the operator asked.
    pub issued_at: u64,
    /// Random: gossipsub names a message by the hash of its bytes, so without it two identical
    /// purges within its one-minute memory would be taken for one and the second dropped.
    pub nonce: u64,
}

impl PurgeNotice {
    /// The wire form (version byte, then postcard). Fails if the notice breaks a limit that
    /// receivers enforce, so we never publish what every peer would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, NoticeError> {
        self.validate()?;
        let mut out = vec![PURGE_NOTICE_VERSION];
        out.extend(postcard::to_stdvec(self)?);
        if out.len() > MAX_PURGE_NOTICE_LEN {
            return Err(NoticeError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// Parses and validates a notice from the wire (limits, canonical URLs; not its age, which
    /// needs a clock: see [`PurgeNotice::check_age`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, NoticeError> {
        if bytes.len() > MAX_PURGE_NOTICE_LEN {
            return Err(NoticeError::TooLarge(bytes.len()));
        }
        let notice: Self = match bytes.split_first() {
            Some((&PURGE_NOTICE_VERSION, rest)) => postcard::from_bytes(rest)?,
            Some((&v, _)) => return Err(NoticeError::Version(v)),
            None => return Err(postcard::Error::DeserializeUnexpectedEnd.into()),
        };
        notice.validate()?;
        Ok(notice)
    }

    /// Size limits, and every target a canonical URL (so all nodes match the same strings the
    /// same way).
    pub fn validate(&self) -> Result<(), NoticeError> {
        match self.targets.len() {
            0 => return Err(NoticeError::Empty),
            n if n > MAX_PURGE_TARGETS => return Err(NoticeError::TooManyTargets(n)),
            _ => {}
        }
        for target in &self.targets {
            let s = target.as_str();
            let canonical =
                s.len() <= MAX_URL_LEN && CanonicalUrl::parse(s).is_ok_and(|u| u.as_str() == s);
            if !canonical {
                return Err(NoticeError::NotCanonical(truncated(s)));
            }
        }
        Ok(())
    }

    /// Refuses a notice issued too long before `now` (seconds since the Unix epoch) or too far
    /// after it.
    pub fn check_age(&self, now: u64) -> Result<(), NoticeError> {
        if self.issued_at > now.saturating_add(MAX_PURGE_CLOCK_SKEW_SECS) {
            return Err(NoticeError::FromTheFuture(self.issued_at - now));
        }
        let age = now.saturating_sub(self.issued_at);
        if age > MAX_PURGE_NOTICE_AGE_SECS {
            return Err(NoticeError::TooOld(age));
        }
        Ok(())
    }
}

/// Enough of a bad target to recognise it in a log line, never the whole 8 KiB.
fn truncated(s: &str) -> String {
    const SHOWN: usize = 80;
    match s.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> ProviderId {
        ProviderId::from_bytes([7; 32])
    }

    fn notice(targets: Vec<PurgeTarget>) -> PurgeNotice {
        PurgeNotice {
            provider: acme(),
            targets,
            issued_at: 1_000_000,
            nonce: 7,
        }
    }

    fn url(s: &str) -> PurgeTarget {
        PurgeTarget::url(&CanonicalUrl::parse(s).unwrap())
    }

    #[test]
    fn round_trips() {
        let n = notice(vec![
            url("http://a.example/x"),
            PurgeTarget::prefix(&CanonicalUrl::parse("HTTP://A.example:80/dir/").unwrap()),
        ]);
        let bytes = n.encode().unwrap();
        assert_eq!(bytes[0], PURGE_NOTICE_VERSION);
        let back = PurgeNotice::decode(&bytes).unwrap();
        assert_eq!(back, n);
        assert_eq!(back.targets[1].as_str(), "http://a.example/dir/");
    }

    #[test]
    fn nonce_changes_the_bytes() {
        let a = notice(vec![url("http://a/x")]);
        let b = PurgeNotice {
            nonce: 8,
            ..a.clone()
        };
        assert_ne!(a.encode().unwrap(), b.encode().unwrap());
    }

    #[test]
    fn refuses_bad_versions_and_garbage() {
        assert!(matches!(
            PurgeNotice::decode(&[]),
            Err(NoticeError::Decode(_))
        ));
        assert!(matches!(
            PurgeNotice::decode(&[3, 0, 0]),
            Err(NoticeError::Version(3))
        ));
        // Version 1 named providers by name, which nobody could verify.
        assert!(matches!(
            PurgeNotice::decode(&[1, 4, b'a', b'c', b'm', b'e']),
            Err(NoticeError::Version(1))
        ));
        assert!(matches!(
            PurgeNotice::decode(&[PURGE_NOTICE_VERSION, 0xff, 0xff]),
            Err(NoticeError::Decode(_))
        ));
    }

    #[test]
    fn enforces_size_limits_on_decode() {
        assert!(matches!(
            PurgeNotice::decode(&vec![1; MAX_PURGE_NOTICE_LEN + 1]),
            Err(NoticeError::TooLarge(_))
        ));
        // Too many targets, each canonical, still under the byte limit: refused on decode.
        let many = notice(
            (0..=MAX_PURGE_TARGETS)
                .map(|i| url(&format!("http://a/{i}")))
                .collect(),
        );
        let mut bytes = vec![PURGE_NOTICE_VERSION];
        bytes.extend(postcard::to_stdvec(&many).unwrap());
        assert!(bytes.len() <= MAX_PURGE_NOTICE_LEN);
        assert!(matches!(
            PurgeNotice::decode(&bytes),
            Err(NoticeError::TooManyTargets(n)) if n == MAX_PURGE_TARGETS + 1
        ));
        // ... and refused on encode, so we never send it.
        assert!(matches!(many.encode(), Err(NoticeError::TooManyTargets(_))));
        // Few targets but too many bytes.
        let long = |i: usize| url(&format!("http://a/{i}/{}", "x".repeat(7 * 1024)));
        let big = notice((0..5).map(long).collect());
        assert!(matches!(big.encode(), Err(NoticeError::TooLarge(_))));
        let mut bytes = vec![PURGE_NOTICE_VERSION];
        bytes.extend(postcard::to_stdvec(&big).unwrap());
        assert!(matches!(
            PurgeNotice::decode(&bytes),
            Err(NoticeError::TooLarge(_))
        ));
        // A huge claimed length of a list with nothing behind it fails cleanly.
        let mut bytes = vec![PURGE_NOTICE_VERSION];
        bytes.extend_from_slice(acme().as_bytes());
        bytes.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(
            PurgeNotice::decode(&bytes),
            Err(NoticeError::Decode(_))
        ));
    }

    #[test]
    fn refuses_empty_and_non_canonical_contents() {
        assert!(matches!(notice(vec![]).encode(), Err(NoticeError::Empty)));
        let raw = |n: &PurgeNotice| {
            let mut bytes = vec![PURGE_NOTICE_VERSION];
            bytes.extend(postcard::to_stdvec(n).unwrap());
            PurgeNotice::decode(&bytes)
        };
        for bad in [
            "HTTP://A/x",
            "http://a/./x",
            "ftp://a/x",
            "/x",
            "http://a:80/x",
            "",
        ] {
            let n = notice(vec![PurgeTarget::Url(bad.into())]);
            assert!(
                matches!(raw(&n), Err(NoticeError::NotCanonical(_))),
                "{bad}"
            );
            let n = notice(vec![PurgeTarget::Prefix(bad.into())]);
            assert!(
                matches!(raw(&n), Err(NoticeError::NotCanonical(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn age_window() {
        let n = notice(vec![url("http://a/x")]);
        let t = n.issued_at;
        assert!(n.check_age(t).is_ok());
        assert!(n.check_age(t + MAX_PURGE_NOTICE_AGE_SECS).is_ok());
        assert!(matches!(
            n.check_age(t + MAX_PURGE_NOTICE_AGE_SECS + 1),
            Err(NoticeError::TooOld(_))
        ));
        assert!(n.check_age(t - MAX_PURGE_CLOCK_SKEW_SECS).is_ok());
        assert!(matches!(
            n.check_age(t - MAX_PURGE_CLOCK_SKEW_SECS - 1),
            Err(NoticeError::FromTheFuture(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..1024)) {
            let _ = PurgeNotice::decode(&bytes);
        }
    }
}
