//! A client's request body with a read deadline: a client that trickles the body of an
//! unsafe-method request cannot hold its connection, and the origin request behind it,
//! open forever. The deadline starts at `timeout` and moves out by the time each received
//! chunk would take at [`MIN_BODY_RATE`], so an upload at any real speed never meets it
//! while a trickle does within about `timeout`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use crate::body::BoxError;

/// Slowest upload kept alive, bytes per second: a very poor mobile link still sends more.
pub const MIN_BODY_RATE: u64 = 8 * 1024;

/// How a guarded body ended, when it failed on the client's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client did not send it in time.
    Timeout,
    /// The client sent something that is not a body (a bad chunk size, a short body).
    Malformed,
}

/// Tells, after the body was used, whether it failed on the client's side.
#[derive(Debug, Clone, Default)]
pub struct Watch(Arc<AtomicU8>);

impl Watch {
    pub fn failure(&self) -> Option<Failure> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(Failure::Timeout),
            2 => Some(Failure::Malformed),
            _ => None,
        }
    }

    fn set(&self, f: Failure) {
        let v = match f {
            Failure::Timeout => 1,
            Failure::Malformed => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }
}

pub struct Guarded<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    watch: Watch,
    on_failure: Box<dyn Fn(Failure) + Send + Sync>,
}

/// `body` failing with a timeout unless it keeps the pace described above; `on_failure` is
/// told once if it fails on the client's side (whether or not the origin answered already).
pub fn guard<B>(
    body: B,
    timeout: Duration,
    on_failure: impl Fn(Failure) + Send + Sync + 'static,
) -> (Guarded<B>, Watch) {
    let watch = Watch::default();
    let guarded = Guarded {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        watch: watch.clone(),
        on_failure: Box::new(on_failure),
    };
    (guarded, watch)
}

impl<B> Guarded<B> {
    fn fail(&self, f: Failure) {
        if self.watch.failure().is_none() {
            (self.on_failure)(f);
        }
        self.watch.set(f);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the client did not send the request body in time")]
pub struct BodyTimeout;

impl<B> HttpBody for Guarded<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let credit = Duration::from_secs_f64(data.len() as f64 / MIN_BODY_RATE as f64);
                    let until = this.deadline.deadline() + credit;
                    this.deadline.as_mut().reset(until);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fail(Failure::Malformed);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.fail(Failure::Timeout);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// No test here waits on a figure: the trickle never ends, so only the deadline can end
    /// it, and the fast body never pauses.
    #[tokio::test]
    async fn a_trickled_body_times_out() {
        let chunks = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x"))), ()))
        });
        let (body, watch) = guard(
            StreamBody::new(Box::pin(chunks)),
            Duration::from_millis(200),
            |_| {},
        );
        let got = tokio::time::timeout(Duration::from_secs(60), body.collect())
            .await
            .expect("the deadline ends an endless trickle");
        assert!(got.is_err());
        assert_eq!(watch.failure(), Some(Failure::Timeout));
    }

    #[tokio::test]
    async fn a_body_sent_at_pace_passes_and_a_failing_one_is_malformed() {
        let chunks = futures::stream::iter(0..20)
            .map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![0u8; 64 * 1024]))));
        let (body, watch) = guard(StreamBody::new(chunks), Duration::from_secs(10), |_| {});
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 20 * 64 * 1024);
        assert_eq!(watch.failure(), None);

        let chunks = futures::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"ab"))),
            Err("invalid chunk size".into()),
        ]);
        let told = Arc::new(AtomicU8::new(0));
        let counted = told.clone();
        let (body, watch) = guard(
            StreamBody::new(chunks),
            Duration::from_secs(10),
            move |_| {
                counted.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert!(body.collect().await.is_err());
        assert_eq!(watch.failure(), Some(Failure::Malformed));
        assert_eq!(told.load(Ordering::Relaxed), 1);
    }
}
