//! The one response body type of the edge, and ways to make it from bytes, files and streams.

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;

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
