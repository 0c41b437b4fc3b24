//! Redirection: an overloaded node of a primary sends the agreed share of its service
//! requests to the least loaded node of the peer, with a `302`.
//!
//! The redirect names the peer node by address, so the service travels in the path:
//! `http://PEER/_reef/s/HOST/PATH`, which any node reads as `Host: HOST`, `PATH`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::debug;

use super::Arrangements;
use crate::load::Load;

/// Path prefix of a service request addressed to a node rather than to the service's name.
pub const SERVICE_PATH: &str = "/_reef/s/";
/// Peer nodes tried for an address before the request is served here instead; the load
/// table lists the least loaded first, so the first almost always answers from the overlay's
/// record cache.
const CANDIDATES: usize = 3;

/// Decides, per request, whether to send it to a peer provider.
pub struct Redirector {
    arrangements: Arc<Arrangements>,
    load: Load,
    overlay: reef_overlay::Client,
    /// Our own utilisation at or above which we start redirecting.
    high_watermark_permille: u16,
    /// Requests considered, for the share: of every 1000, `share_permille` go.
    considered: AtomicU64,
}

impl Redirector {
    pub fn new(
        arrangements: Arc<Arrangements>,
        load: Load,
        overlay: reef_overlay::Client,
        high_watermark_permille: u16,
    ) -> Self {
        Self {
            arrangements,
            load,
            overlay,
            high_watermark_permille,
            considered: AtomicU64::new(0),
        }
    }

    /// Where to send a request for `path_and_query` of our service `host`, if it should go
    /// to a peer: this node is at or over its high watermark, an active arrangement covers the
    /// service, and the request falls in the arrangement's share.
    pub async fn location(&self, host: &str, path_and_query: &str) -> Option<String> {
        if self.load.own().utilisation_permille < self.high_watermark_permille {
            return None;
        }
        let arrangement = self.arrangements.primary_for(host)?;
        let n = self.considered.fetch_add(1, Ordering::Relaxed);
        // Spread evenly: request n goes when the running share crosses a whole request.
        let share = u64::from(arrangement.share_permille);
        if (n + 1) * share / 1000 == n * share / 1000 {
            return None;
        }
        for (peer, _) in self
            .load
            .nodes_of(&arrangement.peer)
            .into_iter()
            .take(CANDIDATES)
        {
            match self.overlay.node_record(peer).await {
                Ok(Some(info)) => {
                    arrangement.usage.redirected();
                    debug!(arrangement = %arrangement.id, %peer, %host, "redirected to a peer");
                    return Some(format!(
                        "http://{}{SERVICE_PATH}{host}{path_and_query}",
                        info.record.http
                    ));
                }
                Ok(None) => continue,
                Err(error) => debug!(%peer, %error, "no record for a peer node"),
            }
        }
        None
    }
}

/// A service request addressed to a node (`/_reef/s/HOST/PATH`): `(HOST, /PATH)`.
pub fn parse_service_path(path_and_query: &str) -> Option<(&str, String)> {
    let rest = path_and_query.strip_prefix(SERVICE_PATH)?;
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Some((host, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_paths_split_into_host_and_path() {
        assert_eq!(
            parse_service_path("/_reef/s/video.example/a/b?x=1"),
            Some(("video.example", "/a/b?x=1".to_string()))
        );
        assert_eq!(
            parse_service_path("/_reef/s/video.example"),
            Some(("video.example", "/".to_string()))
        );
        assert_eq!(
            parse_service_path("/_reef/s/video.example?q"),
            Some(("video.example", "/?q".to_string()))
        );
        assert_eq!(parse_service_path("/_reef/s/"), None);
        assert_eq!(parse_service_path("/other"), None);
    }

    #[test]
    fn the_share_is_spread_evenly() {
        for share in [1u64, 300, 500, 999, 1000] {
            let went = (0..10_000u64)
                .filter(|n| (n + 1) * share / 1000 != n * share / 1000)
                .count() as u64;
            assert_eq!(went, share * 10, "share {share}");
        }
    }
}
