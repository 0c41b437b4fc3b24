//! The one response body type of the edge, and ways to make it from bytes, files and streams.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
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

/// Bytes read from a stored body's file at a time: a few large reads (and writes to the
/// socket) rather than many small ones, each straight into a buffer hyper then writes without
/// copying. A response holds one chunk, plus the one hyper is still writing.
pub const FILE_CHUNK: usize = 256 * 1024;

/// Bytes of a mapped body handed on at a time: they are written from the page cache, not read
/// into a buffer, so a chunk costs no memory, and larger chunks mean fewer writes (nginx's
/// `sendfile_max_chunk` is the same 2 MiB).
const MAPPED_CHUNK: usize = 2 * 1024 * 1024;

/// Read buffers kept for reuse: a fresh 256 KiB allocation costs page faults (and zeroing)
/// every time, a reused one nothing. Past this many idle buffers, returned ones are freed.
const POOLED_CHUNKS: usize = 64;

/// Idle read buffers, each `FILE_CHUNK` long and already initialised.
static CHUNK_POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn take_chunk() -> Vec<u8> {
    let pooled = CHUNK_POOL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    pooled.unwrap_or_else(|| vec![0; FILE_CHUNK])
}

/// A read buffer lent to a `Bytes`: back to the pool when hyper has written it.
struct PooledChunk {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PooledChunk {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for PooledChunk {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = CHUNK_POOL.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.len() == FILE_CHUNK && pool.len() < POOLED_CHUNKS {
            pool.push(buf);
        }
    }
}

fn chunk_bytes(buf: Vec<u8>, len: usize) -> Bytes {
    Bytes::from_owner(PooledChunk { buf, len })
}

/// Streams `len` bytes of a stored body's `file` from `offset`. A body of at least a chunk is
/// mapped ([`crate::mapped`]; a blob small enough is mapped whole and kept for the responses
/// after): each chunk the page cache holds goes to hyper as `Bytes` pointing into the
/// mapping, and is copied once, into the socket. Other chunks are read: first
/// without waiting (`preadv2` with `RWF_NOWAIT`: only what the page cache holds, on the
/// connection's own thread, as copying a body from memory would be), and only a chunk that
/// must come from the disk on the blocking pool. A hot object so costs no thread switch at
/// all. Fails if the file ends early (the store checked its length when it opened it, and
/// nothing writes blobs in place).
pub fn from_stored_file(file: std::fs::File, offset: u64, len: u64) -> Body {
    // The length is checked here because a mapping would read a short file's last page as
    // zeros past its end; the read path reports the early end instead.
    let meta = file.metadata().ok().filter(|m| {
        len >= FILE_CHUNK as u64 && offset.checked_add(len).is_some_and(|end| end <= m.len())
    });
    let whole = meta.as_ref().and_then(|m| crate::mapped::whole(&file, m));
    StoredFile {
        file: Arc::new(file),
        mapped: meta.is_some(),
        whole,
        offset,
        left: len,
        nowait: true,
        reading: None,
    }
    .boxed_unsync()
}

type ChunkRead = JoinHandle<std::io::Result<Bytes>>;

struct StoredFile {
    file: Arc<std::fs::File>,
    /// Whether chunks are mapped rather than read (when the page cache holds them).
    mapped: bool,
    /// The whole file, mapped and kept between responses, if it is small enough to keep.
    whole: Option<Arc<crate::mapped::Whole>>,
    /// Where the next chunk starts in the file, and the bytes still to send.
    offset: u64,
    left: u64,
    /// Whether the file system takes `RWF_NOWAIT` reads (cleared the first time it refuses).
    nowait: bool,
    /// A chunk being read on the blocking pool.
    reading: Option<ChunkRead>,
}

impl StoredFile {
    /// The next chunk as a slice of the mapping, if the page cache holds all of it.
    fn mapped_chunk(&self) -> Option<Bytes> {
        if !self.mapped {
            return None;
        }
        // Bounded by MAPPED_CHUNK, so it fits a usize.
        let want = self.left.min(MAPPED_CHUNK as u64) as usize;
        match &self.whole {
            Some(whole) => whole.chunk(self.offset, want),
            None => crate::mapped::cached_chunk(&self.file, self.offset, want),
        }
    }

    /// The next chunk if the page cache holds (the start of) it; `None` if it must be read
    /// from the disk.
    fn read_cached(&mut self, want: usize) -> std::io::Result<Option<Bytes>> {
        let mut buf = take_chunk();
        let read = rustix::io::preadv2(
            &*self.file,
            &mut [std::io::IoSliceMut::new(&mut buf[..want])],
            self.offset,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        match read {
            Ok(n) => Ok(Some(chunk_bytes(buf, n))),
            Err(e) if e == rustix::io::Errno::AGAIN || e == rustix::io::Errno::INTR => {
                drop(PooledChunk { buf, len: 0 });
                Ok(None)
            }
            // No RWF_NOWAIT on this file system (or kernel): read on the blocking pool.
            Err(e)
                if e == rustix::io::Errno::OPNOTSUPP
                    || e == rustix::io::Errno::NOSYS
                    || e == rustix::io::Errno::INVAL =>
            {
                drop(PooledChunk { buf, len: 0 });
                self.nowait = false;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the next chunk on the blocking pool.
    fn read_blocking(&self, want: usize) -> ChunkRead {
        let (file, offset) = (self.file.clone(), self.offset);
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buf = take_chunk();
            let mut got = 0;
            while got < want {
                match file.read_at(&mut buf[got..want], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(chunk_bytes(buf, got))
        })
    }

    /// Hands `chunk` on, or fails the body if the file ended early.
    fn deliver(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if chunk.is_empty() {
            let offset = self.offset;
            self.left = 0;
            return Poll::Ready(Some(Err(format!(
                "stored body ended early, at offset {offset}"
            )
            .into())));
        }
        self.offset += chunk.len() as u64;
        self.left -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
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
        if this.reading.is_none() {
            if this.left == 0 {
                return Poll::Ready(None);
            }
            if let Some(chunk) = this.mapped_chunk() {
                return this.deliver(chunk);
            }
            // Bounded by FILE_CHUNK, so it fits a usize.
            let want = this.left.min(FILE_CHUNK as u64) as usize;
            if this.nowait {
                match this.read_cached(want) {
                    Ok(Some(chunk)) => return this.deliver(chunk),
                    Ok(None) => {}
                    Err(e) => {
                        this.left = 0;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
            this.reading = Some(this.read_blocking(want));
        }
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        match read {
            Ok(Ok(chunk)) => this.deliver(chunk),
            Ok(Err(e)) => {
                this.left = 0;
                Poll::Ready(Some(Err(e.into())))
            }
            Err(e) => {
                this.left = 0;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;

    use http_body::Body as _;

    use super::*;

    fn file_of(data: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    async fn collect(body: Body) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_stored_file_streams_exactly_the_bytes_asked_for() {
        let data: Vec<u8> = (0..FILE_CHUNK * 2 + 12_345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let len = data.len() as u64;
        for (offset, n) in [
            (0, len),
            (1, len - 1),
            (0, 1),
            (FILE_CHUNK as u64 - 1, 2),
            (FILE_CHUNK as u64, FILE_CHUNK as u64),
            (len - 10, 10),
            (5, 0),
        ] {
            let body = from_stored_file(file_of(&data), offset, n);
            assert_eq!(body.size_hint().exact(), Some(n));
            let got = collect(body).await.unwrap();
            let (from, to) = (offset as usize, (offset + n) as usize);
            assert_eq!(got, data[from..to], "offset {offset}, {n} bytes");
        }
    }

    /// A large body goes out in mapped chunks of up to `MAPPED_CHUNK`, from any offset.
    #[tokio::test]
    async fn a_large_stored_file_streams_in_mapped_chunks() {
        let data: Vec<u8> = (0..MAPPED_CHUNK * 2 + 4097)
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        let offset = 4095;
        let n = data.len() as u64 - offset - 1;
        let mut body = from_stored_file(file_of(&data), offset, n);
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let chunk = frame.unwrap().into_data().unwrap();
            assert!(chunk.len() <= MAPPED_CHUNK);
            got.extend_from_slice(&chunk);
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert!(got == data[offset as usize..data.len() - 1]);
    }

    #[tokio::test]
    async fn a_stored_file_that_ends_early_fails_the_body() {
        let data = vec![9u8; 1000];
        let body = from_stored_file(file_of(&data), 0, 5000);
        assert!(collect(body).await.is_err());
        let body = from_stored_file(file_of(&data), 0, FILE_CHUNK as u64 + 1);
        assert!(collect(body).await.is_err());
    }
}
