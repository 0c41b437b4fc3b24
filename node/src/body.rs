//! The one response body type of the edge, and ways to make it from bytes, files and streams.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body::SizeHint;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
// Unsync: streams built from futures are Send but rarely Sync, and hyper needs only Send.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Chunk size for reading bodies from disk: large enough for throughput, small for memory.
pub const CHUNK: usize = 64 * 1024;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn from_stream<S, E>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    BodyExt::boxed_unsync(StreamBody::new(
        stream.map_ok(Frame::data).map_err(Into::into),
    ))
}

/// `body`, calling `seen` with the length of each data frame as the connection pulls it.
pub fn count_data(body: Body, seen: impl Fn(u64) + Send + 'static) -> Body {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            seen(data.len() as u64);
        }
        frame
    })
    .boxed_unsync()
}

/// Streams exactly `len` bytes of an open file.
pub fn from_file(file: tokio::fs::File, len: u64) -> Body {
    use tokio::io::AsyncReadExt;
    from_stream(tokio_util::io::ReaderStream::with_capacity(
        file.take(len),
        CHUNK,
    ))
}

/// Bytes read from a stored body's file at a time: a few large reads (each one trip to the
/// blocking pool, one copy into a buffer hyper then writes without copying) rather than many
/// small ones. A response holds at most two chunks: the one being written, the next being read.
pub const FILE_CHUNK: usize = 256 * 1024;

/// Streams `len` bytes of a stored body's `file` from `offset`, reading one chunk ahead on
/// the blocking pool while the connection writes the previous one. Fails if the file ends
/// early (the store checked its length when it opened it; nothing writes blobs in place).
pub fn from_stored_file(file: std::fs::File, offset: u64, len: u64) -> Body {
    StoredFile {
        file: Some(file),
        seek_to: offset,
        requested: 0,
        sent: 0,
        len,
        reading: None,
    }
    .boxed_unsync()
}

type ChunkRead = JoinHandle<(std::fs::File, std::io::Result<Bytes>)>;

struct StoredFile {
    /// Here between reads; with the blocking task during one.
    file: Option<std::fs::File>,
    /// Where the first read starts (a range's first byte); 0 once done.
    seek_to: u64,
    /// Bytes asked of reads so far, and handed to the connection so far.
    requested: u64,
    sent: u64,
    len: u64,
    reading: Option<ChunkRead>,
}

impl StoredFile {
    /// Starts reading the next chunk, if any bytes are left to ask for and no read runs.
    fn read_ahead(&mut self) {
        if self.reading.is_some() || self.requested >= self.len {
            return;
        }
        let Some(mut file) = self.file.take() else {
            return;
        };
        let want = (self.len - self.requested).min(FILE_CHUNK as u64);
        self.requested += want;
        let seek_to = std::mem::take(&mut self.seek_to);
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let read = (|| {
                if seek_to > 0 {
                    file.seek(SeekFrom::Start(seek_to))?;
                }
                let mut buf = Vec::with_capacity(want as usize);
                (&mut file).take(want).read_to_end(&mut buf)?;
                Ok(Bytes::from(buf))
            })();
            (file, read)
        }));
    }
}

impl http_body::Body for StoredFile {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        this.read_ahead();
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let done = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let chunk = match done {
            Ok((file, Ok(chunk))) => {
                this.file = Some(file);
                chunk
            }
            Ok((_, Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Err(e) => return Poll::Ready(Some(Err(e.into()))),
        };
        let expected = (this.len - this.sent).min(FILE_CHUNK as u64);
        if chunk.len() as u64 != expected {
            return Poll::Ready(Some(Err(format!(
                "stored body ended early: read {} of {expected} bytes at offset {}",
                chunk.len(),
                this.sent
            )
            .into())));
        }
        this.sent += expected;
        this.read_ahead();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

/// Streams a cache tail (an object still being written) until it ends or fails.
pub fn from_tail(tail: reef_cache::Tail) -> Body {
    let stream = futures::stream::unfold(Some(tail), |state| async move {
        let mut tail = state?;
        match tail.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok::<_, BoxError>(chunk), Some(tail))),
            Ok(None) => None,
            Err(e) => Some((Err(e.into()), None)),
        }
    });
    from_stream(stream.boxed())
}
