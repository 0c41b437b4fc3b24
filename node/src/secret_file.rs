//! Key files holding a secret: written once, readable by their owner only.

use std::io::Write;
use std::path::Path;

/// Writes `text` to a new file at `path`, mode 0600, synced. An existing file is never
/// overwritten: the error's kind is then `AlreadyExists`, for the caller to say so.
pub fn create(path: &Path, text: &str) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
