//! Peers whose last connection broke: closed by an I/O error (a reset, an end of stream)
//! rather than by an idle timeout. The event loop writes it, clients read it without a round
//! trip to the loop, so a node that has just died is known dead at once to everyone in this
//! process (the HTTP redirector, say), well before its load reports would have expired.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Peers remembered; the longest broken make room.
const MAX_BROKEN: usize = 1024;
/// After this, a break says nothing more: a peer that stays away has left the load tables
/// and routing tables by then, one that came back has connected again.
const FORGET_AFTER: Duration = Duration::from_secs(60);

#[derive(Clone, Default)]
pub(crate) struct Broken(Arc<Mutex<HashMap<PeerId, Instant>>>);

impl Broken {
    fn map(&self) -> MutexGuard<'_, HashMap<PeerId, Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn broke(&self, peer: PeerId, now: Instant) {
        let mut map = self.map();
        map.retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
        if map.len() >= MAX_BROKEN
            && let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p)
        {
            map.remove(&oldest);
        }
        map.insert(peer, now);
    }

    pub(crate) fn connected(&self, peer: &PeerId) {
        self.map().remove(peer);
    }

    pub(crate) fn is_broken(&self, peer: &PeerId, now: Instant) -> bool {
        self.map()
            .get(peer)
            .is_some_and(|at| now.saturating_duration_since(*at) < FORGET_AFTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_break_lasts_until_the_peer_connects_again_or_is_forgotten() {
        let broken = Broken::default();
        let (peer, now) = (PeerId::random(), Instant::now());
        assert!(!broken.is_broken(&peer, now));
        broken.broke(peer, now);
        assert!(broken.is_broken(&peer, now));
        assert!(!broken.is_broken(&peer, now + FORGET_AFTER));
        broken.connected(&peer);
        assert!(!broken.is_broken(&peer, now));
        for _ in 0..MAX_BROKEN + 5 {
            broken.broke(PeerId::random(), now);
        }
        assert_eq!(broken.map().len(), MAX_BROKEN);
    }
}
