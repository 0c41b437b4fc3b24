//! Remembered peers: the peers we were recently connected to, saved so that a restarted node
//! rejoins the overlay without bootstrap flags.
//!
//! Format: `{"peers":[{"peer_id":"12D3Koo…","addrs":["/ip4/…/udp/…/quic-v1"]}]}`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// Peers written to the file: enough to find the overlay again after many of them are gone.
pub(crate) const MAX_SAVED_PEERS: usize = 64;
/// Peers remembered in memory between saves (more than we save, so the best 64 can be chosen).
const MAX_TRACKED_PEERS: usize = 256;
/// Addresses kept per peer; a node rarely listens on more than a handful.
const MAX_ADDRS_PER_PEER: usize = 8;
/// A peers file larger than this is not ours (64 peers × 8 addresses is ~40 KiB).
const MAX_FILE_LEN: u64 = 256 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct PeersFile {
    peers: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    peer_id: String,
    addrs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PeersFileError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {len} bytes, over the limit")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("{path} is not a peers file: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads the remembered peers. A missing file is an empty list; bad entries are skipped.
pub(crate) async fn load(path: &Path) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, PeersFileError> {
    let io_err = |source| PeersFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = match tokio::fs::metadata(path).await {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    if len > MAX_FILE_LEN {
        return Err(PeersFileError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    let bytes = tokio::fs::read(path).await.map_err(io_err)?;
    parse(&bytes).map_err(|source| PeersFileError::Format {
        path: path.to_path_buf(),
        source,
    })
}

fn parse(bytes: &[u8]) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, serde_json::Error> {
    let file: PeersFile = serde_json::from_slice(bytes)?;
    let peers = file
        .peers
        .into_iter()
        .filter_map(|e| {
            let peer: PeerId = e.peer_id.parse().ok()?;
            let addrs: Vec<Multiaddr> = e
                .addrs
                .iter()
                .filter_map(|a| a.parse().ok())
                .take(MAX_ADDRS_PER_PEER)
                .collect();
            (!addrs.is_empty()).then_some((peer, addrs))
        })
        .take(MAX_SAVED_PEERS)
        .collect();
    Ok(peers)
}

/// Writes the file atomically: a temporary file in the same directory, fsync, rename.
/// Blocking: call from `spawn_blocking`.
pub(crate) fn save_blocking(path: &Path, contents: &[u8]) -> Result<(), PeersFileError> {
    let io_err = |source| PeersFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp).map_err(io_err)?;
        file.write_all(contents).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// Recently connected peers and where they listen, bounded.
#[derive(Debug, Default)]
pub(crate) struct RecentPeers {
    peers: HashMap<PeerId, Recent>,
}

#[derive(Debug)]
struct Recent {
    addrs: Vec<Multiaddr>,
    last_seen: Instant,
}

impl RecentPeers {
    /// Records that `peer` was seen now, listening on `addrs` (added to what we knew).
    pub(crate) fn seen(
        &mut self,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
        now: Instant,
    ) {
        if !self.peers.contains_key(&peer)
            && self.peers.len() >= MAX_TRACKED_PEERS
            && let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(p, _)| *p)
        {
            self.peers.remove(&oldest);
        }
        let entry = self.peers.entry(peer).or_insert_with(|| Recent {
            addrs: Vec::new(),
            last_seen: now,
        });
        entry.last_seen = entry.last_seen.max(now);
        for addr in addrs {
            if let Some(i) = entry.addrs.iter().position(|a| *a == addr) {
                // Most recently reported first.
                entry.addrs.remove(i);
            }
            entry.addrs.insert(0, addr);
        }
        entry.addrs.truncate(MAX_ADDRS_PER_PEER);
    }

    /// Forgets `peer` (banned): it is neither redialled nor saved.
    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Up to `n` most recently seen peers that have addresses, most recent first.
    pub(crate) fn best(&self, n: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut peers: Vec<(&PeerId, &Recent)> = self
            .peers
            .iter()
            .filter(|(_, r)| !r.addrs.is_empty())
            .collect();
        peers.sort_by_key(|(_, r)| std::cmp::Reverse(r.last_seen));
        peers
            .into_iter()
            .take(n)
            .map(|(p, r)| (*p, r.addrs.clone()))
            .collect()
    }

    /// The file contents: the most recently seen peers that have addresses.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        let file = PeersFile {
            peers: self
                .best(MAX_SAVED_PEERS)
                .into_iter()
                .map(|(p, addrs)| Entry {
                    peer_id: p.to_string(),
                    addrs: addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
        };
        // Serialising strings into JSON cannot fail.
        serde_json::to_vec_pretty(&file).unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[tokio::test]
    async fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        assert!(
            load(&path).await.unwrap().is_empty(),
            "a missing file is no peers"
        );

        let now = Instant::now();
        let mut recent = RecentPeers::default();
        let a = PeerId::random();
        let b = PeerId::random();
        recent.seen(a, [addr(1)], now);
        recent.seen(b, [addr(2), addr(3)], now + Duration::from_secs(1));
        recent.seen(PeerId::random(), [], now); // no address: not saved
        save_blocking(&path, &recent.to_json()).unwrap();

        let loaded = load(&path).await.unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].0, b, "most recent first");
        assert_eq!(loaded[0].1, vec![addr(3), addr(2)]);
        assert_eq!(loaded[1], (a, vec![addr(1)]));
        assert!(!dir.path().join("peers.json.tmp").exists());
    }

    #[test]
    fn bounded() {
        let now = Instant::now();
        let mut recent = RecentPeers::default();
        for i in 0..(MAX_TRACKED_PEERS + 10) {
            let addrs: Vec<Multiaddr> = (0..20).map(|p| addr(p as u16)).collect();
            recent.seen(
                PeerId::random(),
                addrs,
                now + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(recent.len(), MAX_TRACKED_PEERS);
        let loaded = parse(&recent.to_json()).unwrap();
        assert_eq!(loaded.len(), MAX_SAVED_PEERS);
        assert!(loaded.iter().all(|(_, a)| a.len() == MAX_ADDRS_PER_PEER));
    }

    #[test]
    fn skips_bad_entries() {
        let good = PeerId::random();
        let json = format!(
            r#"{{"peers":[{{"peer_id":"nope","addrs":["/ip4/1.2.3.4/tcp/1"]}},
                {{"peer_id":"{good}","addrs":["garbage","/ip4/1.2.3.4/tcp/1"]}}]}}"#
        );
        let loaded = parse(json.as_bytes()).unwrap();
        assert_eq!(
            loaded,
            vec![(good, vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()])]
        );
        assert!(parse(b"[]").is_err());
    }
}
