use std::time::Duration;

use http::StatusCode;

/// Why a request could not be served, and whose fault it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("{0}")]
    BadRequest(String),
    #[error("method {0} is not supported by this proxy")]
    Method(String),
    /// No service of that hostname is published in the overlay.
    #[error(
        "{0} is not a service known to this overlay; to fetch any URL, send it in absolute form (forward proxy)"
    )]
    UnknownService(String),
    /// The service belongs to a provider this node may not serve it for.
    #[error("{0}")]
    Forbidden(String),
    #[error("cannot reach origin {authority}: {reason}")]
    OriginUnreachable { authority: String, reason: String },
    #[error("origin {authority} did not answer within {after:?}")]
    OriginTimeout { authority: String, after: Duration },
    #[error("origin {authority} failed: {reason}")]
    Origin { authority: String, reason: String },
    #[error("the fetch this request was waiting on failed")]
    Coalesced,
    #[error("not in this node's cache (the request said only-if-cached)")]
    NotCached,
    #[error("internal error: {0}")]
    Internal(String),
}

impl FetchError {
    /// Client faults are 4xx, upstream faults 502/504, our own 500.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Method(_) => StatusCode::NOT_IMPLEMENTED,
            Self::UnknownService(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::OriginUnreachable { .. } | Self::Origin { .. } | Self::Coalesced => {
                StatusCode::BAD_GATEWAY
            }
            // RFC 9111 §5.2.1.7 names 504 for only-if-cached misses.
            Self::OriginTimeout { .. } | Self::NotCached => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed if the client tries again.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            Self::BadRequest(_) | Self::Method(_) | Self::UnknownService(_)
        )
    }
}
