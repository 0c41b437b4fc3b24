//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running a testnet.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or socket operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// No `reef` binary was found.
    #[error(
        "cannot find the `reef` binary (tried: {tried}); build it with \
         `cargo build --release -p reef-node` and pass `--bin target/release/reef` \
         or set REEF_BIN"
    )]
    BinaryNotFound { tried: String },

    /// A node process exited before it became ready (or while we waited on it).
    #[error(
        "node in {dir} exited ({status}) before it was ready; last lines of its log:\n{log_tail}"
    )]
    NodeExited {
        dir: PathBuf,
        status: String,
        log_tail: String,
    },

    /// A node did not reach a state in time.
    #[error("node in {dir} was not {what} after {waited:?}; last lines of its log:\n{log_tail}")]
    NotReady {
        dir: PathBuf,
        what: String,
        waited: Duration,
        log_tail: String,
    },

    /// An HTTP exchange failed (connect, protocol, unexpected status, bad body).
    #[error("HTTP request to {url} failed: {reason}")]
    Http { url: String, reason: String },

    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },

    /// A JSON document (runtime.json, status, manifest) could not be read or written.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    /// TLS material could not be used.
    #[error("TLS setup failed: {0}")]
    Tls(String),

    /// `reef provider init` could not make a provider's key.
    #[error("making provider key {path}: {reason}")]
    ProviderKey { path: PathBuf, reason: String },

    /// The caller asked for something impossible.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn http(url: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Http {
            url: url.into(),
            reason: reason.to_string(),
        }
    }
}
