//! `DATA_DIR/runtime.json`: the addresses a running node actually bound, for launchers and
//! tests that start nodes on port 0. Written atomically once every listener is up.

use std::path::{Path, PathBuf};

use reef_proto::RUNTIME_FILE;
pub use reef_proto::Runtime;

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(RUNTIME_FILE)
}

pub fn write(data_dir: &Path, runtime: &Runtime) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{RUNTIME_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(runtime).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path(data_dir))
}

pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(path(data_dir));
}
