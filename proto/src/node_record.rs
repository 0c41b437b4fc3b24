use serde::{Deserialize, Serialize};

/// Largest encoded NodeRecord we accept; real ones are a few hundred bytes.
pub const MAX_NODE_RECORD_LEN: usize = 4 * 1024;

/// Current wire version of [`NodeRecord`].
const NODE_RECORD_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("record version {0} is not supported")]
    Version(u8),
    #[error("record does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// What a node tells the overlay about itself: where its HTTP edge listens and whom it belongs to.
///
/// Published in the DHT under the node's peer id. The overlay signs the encoded bytes with the
/// node's key, so the record can only be written by the node it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Peer id bytes (libp2p's multihash encoding).
    pub peer_id: Vec<u8>,
    /// `host:port` of the node's HTTP edge.
    pub http: String,
    pub provider: String,
    pub region: String,
    /// Multiaddrs the node listens on, as text.
    pub listen_addrs: Vec<String>,
    /// Seconds since the Unix epoch when the node wrote this record; a newer one replaces an older.
    pub issued_at: u64,
}

impl NodeRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![NODE_RECORD_VERSION];
        // Serialising plain owned fields into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_NODE_RECORD_LEN {
            return Err(RecordError::TooLarge(bytes.len()));
        }
        match bytes.split_first() {
            Some((&NODE_RECORD_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
            Some((&v, _)) => Err(RecordError::Version(v)),
            None => Err(RecordError::Decode(
                postcard::Error::DeserializeUnexpectedEnd,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = NodeRecord {
            peer_id: vec![1, 2, 3],
            http: "127.0.0.2:8080".into(),
            provider: "acme".into(),
            region: "eu".into(),
            listen_addrs: vec!["/ip4/127.0.0.2/tcp/4001".into()],
            issued_at: 42,
        };
        assert_eq!(NodeRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            NodeRecord::decode(&[]),
            Err(RecordError::Decode(_))
        ));
        assert!(matches!(
            NodeRecord::decode(&[9, 0]),
            Err(RecordError::Version(9))
        ));
        assert!(matches!(
            NodeRecord::decode(&vec![1; MAX_NODE_RECORD_LEN + 1]),
            Err(RecordError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..512)) {
            let _ = NodeRecord::decode(&bytes);
        }
    }
}
