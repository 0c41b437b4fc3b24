use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Name of the file, in a node's data dir, that holds its [`Runtime`].
pub const RUNTIME_FILE: &str = "runtime.json";

/// What a running node actually bound, written (atomically) to `DATA_DIR/runtime.json` once
/// every listener is up: the contract between `reef run` and whatever launched it on port 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub peer_id: String,
    pub pid: u32,
    /// The provider's name: the certified one, or the node's own label.
    pub provider: String,
    /// The provider's id (hex public key; the node's own key when it is independent). Empty
    /// in files written before provider keys existed.
    #[serde(default)]
    pub provider_id: String,
    /// Whether a provider key certified the node.
    #[serde(default)]
    pub certified: bool,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// Full multiaddrs including `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    /// The DNS server's address (UDP and TCP), when the node runs one (`--dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<SocketAddr>,
}
