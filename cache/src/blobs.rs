//! Where bodies live on disk: `blobs/<2 hex>/<64 hex>` named by the blake3 of the body, and
//! `tmp/` for fills in progress. Everything here blocks; callers run it on a blocking thread.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use reef_proto::ContentKey;
use tracing::{debug, warn};

pub(crate) type BlobId = blake3::Hash;

/// Suffix of temp files, so a sweep never mistakes anything else in `tmp/` for ours.
const TEMP_SUFFIX: &str = ".part";

#[derive(Debug)]
pub(crate) struct Layout {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        Layout {
            blobs: dir.join("blobs"),
            tmp: dir.join("tmp"),
        }
    }

    /// Creates `blobs/`, all 256 fan-out directories and `tmp/`, so a commit only ever has to
    /// fsync the one fan-out directory it renamed into.
    pub fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(&self.tmp)?;
        fs::create_dir_all(&self.blobs)?;
        for b in 0..=255u8 {
            let d = self.blobs.join(format!("{b:02x}"));
            if !d.is_dir() {
                fs::create_dir(&d)?;
            }
        }
        sync_dir(&self.blobs)?;
        sync_dir(dir)
    }

    pub fn blob_path(&self, blob: &BlobId) -> PathBuf {
        let hex = blob.to_hex();
        self.blobs.join(&hex[..2]).join(hex.as_str())
    }

    pub fn fanout_dir(&self, blob: &BlobId) -> PathBuf {
        self.blobs.join(&blob.to_hex()[..2])
    }

    /// A fresh temp path; the random part lets two fills of one key (one of them not
    /// coalesced) never share a file.
    pub fn temp_path(&self, key: &ContentKey) -> PathBuf {
        let nonce: u64 = rand::random();
        self.tmp
            .join(format!("{}.{nonce:016x}{TEMP_SUFFIX}", key.short()))
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Deletes everything in `tmp/`: at open no fill can be in progress, so it is all debris
    /// of a crash.
    pub fn clear_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            match remove_any(&path) {
                Ok(()) => removed += 1,
                Err(e) => warn!(path = %path.display(), error = %e, "cannot remove temp file"),
            }
        }
        Ok(removed)
    }

    /// Deletes every file under `blobs/` that `keep` does not claim, including names that are
    /// not blob ids at all. Returns how many were removed.
    pub fn sweep(&self, keep: impl Fn(&BlobId) -> bool) -> io::Result<usize> {
        let mut removed = 0;
        for fan in fs::read_dir(&self.blobs)? {
            let fan = fan?;
            let fan_path = fan.path();
            let fan_name = fan.file_name();
            let is_fanout = fan.file_type()?.is_dir()
                && fan_name.len() == 2
                && fan_name
                    .to_str()
                    .is_some_and(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_fanout {
                remove_any(&fan_path)?;
                removed += 1;
                continue;
            }
            for file in fs::read_dir(&fan_path)? {
                let path = file?.path();
                let wanted = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| blake3::Hash::from_hex(n).ok())
                    .is_some_and(|id| path == self.blob_path(&id) && keep(&id));
                if !wanted {
                    debug!(path = %path.display(), "removing unreferenced blob");
                    remove_any(&path)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Makes a rename or create inside `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_file_quiet(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    // symlink_metadata so a symlink is removed itself, never followed.
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        remove_file_quiet(path)
    }
}
