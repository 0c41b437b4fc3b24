//! `DATA_DIR/runtime.json`: the addresses a running node actually bound, for launchers and
//! tests that start nodes on port 0. Written atomically once every listener is up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "runtime.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Runtime {
    pub peer_id: String,
    pub pid: u32,
    pub provider: String,
    pub region: String,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub listen_addrs: Vec<String>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

pub fn write(data_dir: &Path, runtime: &Runtime) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let json = serde_json::to_vec_pretty(runtime).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path(data_dir))
}

pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}
