//! Signed records live in the DHT for a limited time: a worker puts ours again well before
//! they expire, and soon again after a failure.

use std::future::Future;
use std::time::Duration;

use tracing::{info, warn};

/// Records are put every `every`, and `retry` after a round that failed. `round` returns what
/// it published, for the log.
pub fn spawn<F, Fut>(
    what: &'static str,
    every: Duration,
    retry: Duration,
    mut round: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<String, String>> + Send,
{
    tokio::spawn(async move {
        loop {
            let wait = match round().await {
                Ok(done) => {
                    info!(%done, "{what} published");
                    every
                }
                Err(error) => {
                    warn!(%error, "publishing {what} failed; retrying");
                    retry
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}
