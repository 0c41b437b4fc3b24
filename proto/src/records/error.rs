use super::Kind;

/// Why a record was not sealed or not accepted.
///
/// [`RecordError::reason`] is the stable label for `reef_records_rejected_total{kind,reason}`;
/// the `Display` text carries the detail for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("record is {len} bytes, over the {max}-byte limit of its kind")]
    TooLarge { len: usize, max: usize },
    /// The envelope or the body inside it does not decode.
    #[error("{0} does not decode")]
    Garbage(&'static str),
    #[error("envelope version {0} is not supported")]
    Version(u8),
    #[error("envelope holds kind {found}, expected {expected:?}")]
    WrongKind { expected: Kind, found: u8 },
    /// Includes a signer key that is not a valid ed25519 point.
    #[error("signature does not verify")]
    BadSignature,
    #[error("record expired at {expires_at} (now {now})")]
    Expired { expires_at: u64, now: u64 },
    #[error("record is issued at {issued_at}, ahead of now ({now}) by more than the clock skew")]
    Future { issued_at: u64, now: u64 },
    #[error("record lifetime {issued_at}..{expires_at} is empty or longer than {max_ms} ms")]
    Lifetime {
        issued_at: u64,
        expires_at: u64,
        max_ms: u64,
    },
    /// The signer is not the key the record (or the DHT key it sits under) belongs to.
    #[error("wrong signer: {0}")]
    WrongSigner(&'static str),
    #[error("invalid {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: &'static str,
    },
    /// The provider certificate carried inside a node record or load report was rejected.
    #[error("certificate: {0}")]
    Cert(Box<RecordError>),
    /// Not newer than the record already held under the same key. Never returned by this
    /// crate; the stores that keep state use it so every rejection shares one type.
    #[error("not newer than the record already held")]
    Replay,
}

impl RecordError {
    /// Stable snake_case label for metrics. A rejected certificate reports its own reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Garbage(_) => "garbage",
            Self::Version(_) => "version",
            Self::WrongKind { .. } => "wrong_kind",
            Self::BadSignature => "bad_signature",
            Self::Expired { .. } => "expired",
            Self::Future { .. } => "future",
            Self::Lifetime { .. } => "lifetime",
            Self::WrongSigner(_) => "wrong_signer",
            Self::Invalid { .. } => "invalid",
            Self::Cert(inner) => inner.reason(),
            Self::Replay => "replay",
        }
    }

    pub(crate) fn invalid(field: &'static str, problem: &'static str) -> Self {
        Self::Invalid { field, problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable_labels() {
        let all = [
            (RecordError::TooLarge { len: 2, max: 1 }, "too_large"),
            (RecordError::Garbage("envelope"), "garbage"),
            (RecordError::Version(2), "version"),
            (
                RecordError::WrongKind {
                    expected: Kind::NodeRecord,
                    found: 3,
                },
                "wrong_kind",
            ),
            (RecordError::BadSignature, "bad_signature"),
            (
                RecordError::Expired {
                    expires_at: 1,
                    now: 2,
                },
                "expired",
            ),
            (
                RecordError::Future {
                    issued_at: 9,
                    now: 0,
                },
                "future",
            ),
            (
                RecordError::Lifetime {
                    issued_at: 0,
                    expires_at: 9,
                    max_ms: 1,
                },
                "lifetime",
            ),
            (RecordError::WrongSigner("x"), "wrong_signer"),
            (RecordError::invalid("name", "too long"), "invalid"),
            (
                RecordError::Cert(Box::new(RecordError::BadSignature)),
                "bad_signature",
            ),
            (RecordError::Replay, "replay"),
        ];
        for (error, label) in all {
            assert_eq!(error.reason(), label, "{error}");
        }
    }
}
