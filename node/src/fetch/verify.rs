//! Bodies fetched from peers are checked against what the origin-fetching node signed in its
//! ContentRecord (length and blake3). Two ways:
//!
//! - [`download`]: a complete copy (any provider's) is downloaded into an unnamed scratch
//!   file while being hashed, and handed on only if it matches: nobody sees a byte before.
//! - [`streaming`]: a copy still arriving at a node of our own provider (its fill is in
//!   progress, so no ContentRecord exists yet) is passed on as it comes, one chunk behind;
//!   the last chunk is released only once the whole body matches the record that appears
//!   when that fill commits. A mismatch ends the stream with an error instead, so the fill
//!   reading it is never committed or announced, and a client reading it sees a truncated
//!   response, never a complete wrong one.
//!
//! A peer that sends wrong bytes is remembered, so it is not asked for that content again.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
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
    #[error("no content record to check the body against arrived in time")]
    NoRecord,
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

/// A ContentRecord we trust for a key: what the body must be, and the sealed record itself,
/// to pass on to whoever takes our copy.
#[derive(Debug, Clone)]
pub struct Vouched {
    pub expected: Expected,
    pub sealed: Vec<u8>,
}

/// Whether a body received as `got` is the one `want` describes.
pub fn matches(got: Expected, want: Expected) -> Result<(), VerifyError> {
    if got.len != want.len {
        return Err(VerifyError::Length {
            got: got.len,
            want: want.len,
        });
    }
    if got.hash != want.hash {
        return Err(VerifyError::Hash);
    }
    Ok(())
}

/// `body` passed on as it arrives, one chunk behind, and hashed on the way. At its end
/// `check` gets the length and blake3 of what arrived; only if it says yes does the last
/// chunk go out (then the end), otherwise the stream ends with its error. Bodies longer than
/// `max_len`, or silent for `idle`, end with an error too.
pub fn streaming<F, Fut>(body: Body, max_len: u64, idle: Duration, check: F) -> Body
where
    F: FnOnce(Expected) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), VerifyError>> + Send + 'static,
{
    let state = Streaming {
        body,
        hasher: Box::new(blake3::Hasher::new()),
        len: 0,
        held: None,
        check: Some(check),
        max_len,
        idle,
    };
    let stream = futures::stream::unfold(Step::Running(state), |step| async move {
        match step {
            Step::Done => None,
            Step::Running(s) => s.next().await,
        }
    });
    crate::body::from_stream(futures::StreamExt::boxed(stream))
}

struct Streaming<F> {
    body: Body,
    hasher: Box<blake3::Hasher>,
    len: u64,
    /// The chunk not yet passed on: the last one must wait for the check.
    held: Option<Bytes>,
    check: Option<F>,
    max_len: u64,
    idle: Duration,
}

enum Step<F> {
    Running(Streaming<F>),
    Done,
}

type Item<F> = (Result<Bytes, VerifyError>, Step<F>);

impl<F, Fut> Streaming<F>
where
    F: FnOnce(Expected) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), VerifyError>> + Send + 'static,
{
    async fn next(mut self) -> Option<Item<F>> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Some((Err(VerifyError::Stalled), Step::Done)),
                Ok(Some(Err(e))) => {
                    return Some((Err(VerifyError::Body(e.to_string())), Step::Done));
                }
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => return self.end().await,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let data: Bytes = data;
            if data.is_empty() {
                continue;
            }
            self.len += data.len() as u64;
            if self.len > self.max_len {
                return Some((Err(VerifyError::TooLong(self.max_len)), Step::Done));
            }
            self.hasher.update(&data);
            if let Some(previous) = self.held.replace(data) {
                return Some((Ok(previous), Step::Running(self)));
            }
        }
    }

    async fn end(mut self) -> Option<Item<F>> {
        let got = Expected {
            hash: *self.hasher.finalize().as_bytes(),
            len: self.len,
        };
        let check = self.check.take()?;
        match check(got).await {
            Ok(()) => self.held.take().map(|last| (Ok(last), Step::Done)),
            Err(e) => Some((Err(e), Step::Done)),
        }
    }
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

    fn chunked(data: &[u8], size: usize) -> Body {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        crate::body::from_stream(futures::stream::iter(chunks))
    }

    async fn read_all(body: Body) -> (Vec<u8>, Option<String>) {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn streaming_passes_a_matching_body_through_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let want = expected(&data);
        let body = streaming(
            chunked(&data, 7000),
            1 << 20,
            IDLE_TIMEOUT,
            move |got| async move { matches(got, want) },
        );
        let (out, err) = read_all(body).await;
        assert_eq!(err, None);
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn streaming_withholds_the_last_chunk_of_a_wrong_body() {
        let data = vec![3u8; 50_000];
        let want = expected(&data);
        let mut bad = data.clone();
        bad[49_999] ^= 1;
        let body = streaming(
            chunked(&bad, 10_000),
            1 << 20,
            IDLE_TIMEOUT,
            move |got| async move { matches(got, want) },
        );
        let (out, err) = read_all(body).await;
        assert_eq!(out.len(), 40_000, "everything but the last chunk went out");
        assert!(err.is_some_and(|e| e.contains("blake3")));
    }

    #[tokio::test]
    async fn streaming_ends_with_an_error_when_no_record_comes_or_the_body_is_too_long() {
        let data = vec![1u8; 3000];
        let body = streaming(chunked(&data, 1000), 1 << 20, IDLE_TIMEOUT, |_| async {
            Err(VerifyError::NoRecord)
        });
        let (out, err) = read_all(body).await;
        assert_eq!(out.len(), 2000);
        assert!(err.is_some());
        let body = streaming(chunked(&data, 1000), 2500, IDLE_TIMEOUT, |_| async {
            Ok(())
        });
        let (out, err) = read_all(body).await;
        assert_eq!(out.len(), 1000);
        assert!(err.is_some_and(|e| e.contains("longer")));
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
