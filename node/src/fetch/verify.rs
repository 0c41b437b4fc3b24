//! Bodies fetched from peers are checked before anyone sees them: downloaded into an unnamed
//! scratch file while being hashed, and handed on only if length and blake3 match what the
//! origin-fetching node signed in its ContentRecord. A peer that sends anything else is
//! remembered, so it is not asked for that content again.

use std::collections::{HashMap, VecDeque};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use reef_overlay::PeerId;
use reef_proto::ContentKey;

use crate::body::Body;

/// An upstream body that stalls this long is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a peer that served a wrong body for a key stays out of the running for it.
const BAD_HOLDER_TTL: Duration = Duration::from_secs(3600);
/// Most (key, peer) pairs remembered; the oldest is forgotten first.
const MAX_BAD_HOLDERS: usize = 4096;

/// What the body must be, from a verified ContentRecord.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub hash: [u8; 32],
    pub len: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("body is longer than the {0} bytes promised")]
    TooLong(u64),
    #[error("body has {got} bytes, {want} promised")]
    Length { got: u64, want: u64 },
    #[error("body does not match its content record's blake3")]
    Hash,
    #[error("body stalled for {IDLE_TIMEOUT:?}")]
    Stalled,
    #[error("body failed: {0}")]
    Body(String),
    #[error("scratch file: {0}")]
    Scratch(#[from] std::io::Error),
}

impl VerifyError {
    /// True when the peer sent wrong bytes (as opposed to a transfer or local failure).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, Self::TooLong(_) | Self::Length { .. } | Self::Hash)
    }
}

/// Downloads `body` into an unnamed file in `scratch_dir`, hashing it on the way, and returns
/// the file rewound to its start if it is exactly `expected`.
pub async fn download(
    body: Body,
    expected: Expected,
    scratch_dir: &Path,
) -> Result<tokio::fs::File, VerifyError> {
    let dir = scratch_dir.to_path_buf();
    let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(dir))
        .await
        .map_err(|e| VerifyError::Body(e.to_string()))??;
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(VerifyError::Stalled),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(VerifyError::Body(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let data: Bytes = data;
        written += data.len() as u64;
        if written > expected.len {
            return Err(VerifyError::TooLong(expected.len));
        }
        hasher.update(&data);
        tokio::io::AsyncWriteExt::write_all(&mut file, &data).await?;
    }
    if written != expected.len {
        return Err(VerifyError::Length {
            got: written,
            want: expected.len,
        });
    }
    if *hasher.finalize().as_bytes() != expected.hash {
        return Err(VerifyError::Hash);
    }
    let mut file = file.into_std().await;
    let file = tokio::task::spawn_blocking(move || {
        file.flush()?;
        file.seek(SeekFrom::Start(0))?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| VerifyError::Body(e.to_string()))??;
    Ok(tokio::fs::File::from_std(file))
}

/// Peers that served a wrong body, per content key, for a while.
#[derive(Default)]
pub struct BadHolders {
    inner: Mutex<BadInner>,
}

#[derive(Default)]
struct BadInner {
    since: HashMap<(ContentKey, PeerId), Instant>,
    order: VecDeque<(ContentKey, PeerId)>,
}

impl BadHolders {
    pub fn mark(&self, key: ContentKey, peer: PeerId) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.since.insert((key, peer), Instant::now()).is_none() {
            inner.order.push_back((key, peer));
        }
        while inner.order.len() > MAX_BAD_HOLDERS {
            if let Some(old) = inner.order.pop_front() {
                inner.since.remove(&old);
            }
        }
    }

    pub fn is_bad(&self, key: &ContentKey, peer: &PeerId) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .since
            .get(&(*key, *peer))
            .is_some_and(|t| t.elapsed() < BAD_HOLDER_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn expected(data: &[u8]) -> Expected {
        Expected {
            hash: *blake3::hash(data).as_bytes(),
            len: data.len() as u64,
        }
    }

    #[tokio::test]
    async fn accepts_exactly_the_promised_body() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 100_000];
        let mut file = download(crate::body::full(data.clone()), expected(&data), dir.path())
            .await
            .unwrap();
        let mut back = Vec::new();
        file.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, data);
        // Unnamed: nothing left behind in the scratch directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn rejects_a_flipped_byte_a_short_body_and_a_long_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 1000];
        let want = expected(&data);
        let mut flipped = data.clone();
        flipped[500] ^= 1;
        let cases = [flipped, data[..999].to_vec(), [&data[..], b"x"].concat()];
        for bad in cases {
            let err = download(crate::body::full(bad), want, dir.path())
                .await
                .unwrap_err();
            assert!(err.is_mismatch(), "{err}");
        }
    }

    #[test]
    fn remembers_bad_holders_per_key_within_bounds() {
        let bad = BadHolders::default();
        let peer = PeerId::random();
        let (k1, k2) = (
            ContentKey::from_bytes([1; 32]),
            ContentKey::from_bytes([2; 32]),
        );
        bad.mark(k1, peer);
        assert!(bad.is_bad(&k1, &peer));
        assert!(!bad.is_bad(&k2, &peer));
        for i in 0..MAX_BAD_HOLDERS {
            bad.mark(ContentKey::from_bytes([3; 32]), PeerId::random());
            let _ = i;
        }
        assert!(
            !bad.is_bad(&k1, &peer),
            "the oldest entry is forgotten first"
        );
    }
}
