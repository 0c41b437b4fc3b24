//! Provider withdrawals: "I no longer hold these keys", gossiped so that the nodes storing our
//! Kademlia provider records drop them now instead of when they expire.

use serde::{Deserialize, Serialize};

use crate::ContentKey;

/// Gossipsub topic carrying [`Withdrawal`]s; the overlay handles it itself.
pub const WITHDRAWAL_TOPIC: &str = "reef/withdraw/1";
/// Keys per message: 32 bytes each, so 1024 keys stay well under the 64 KiB gossip cap.
pub const MAX_WITHDRAWAL_KEYS: usize = 1024;
/// Largest encoded withdrawal: the keys, their count, the nonce and the version byte.
pub const MAX_WITHDRAWAL_LEN: usize = MAX_WITHDRAWAL_KEYS * 32 + 32;

/// Current wire version of [`Withdrawal`].
const WITHDRAWAL_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WithdrawalError {
    #[error("withdrawal is {0} bytes, over the limit of {MAX_WITHDRAWAL_LEN}")]
    TooLarge(usize),
    #[error("withdrawal version {0} is not supported")]
    Version(u8),
    #[error("withdrawal does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("withdrawal names {0} keys; it must name 1 to {MAX_WITHDRAWAL_KEYS}")]
    KeyCount(usize),
}

/// Keys whose provider records the sender withdraws. It carries no sender: the gossip message
/// around it is signed, and a receiver removes only the records naming that signer, so nobody
/// can withdraw another node's announcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub keys: Vec<ContentKey>,
    /// Random: gossipsub names a message by the hash of its bytes, so two nodes withdrawing the
    /// same key (or one node withdrawing it twice within a minute) would otherwise collide.
    pub nonce: u64,
}

impl Withdrawal {
    pub fn encode(&self) -> Result<Vec<u8>, WithdrawalError> {
        self.check()?;
        let mut out = vec![WITHDRAWAL_VERSION];
        out.extend(postcard::to_stdvec(self)?);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, WithdrawalError> {
        if bytes.len() > MAX_WITHDRAWAL_LEN {
            return Err(WithdrawalError::TooLarge(bytes.len()));
        }
        let w: Self = match bytes.split_first() {
            Some((&WITHDRAWAL_VERSION, rest)) => postcard::from_bytes(rest)?,
            Some((&v, _)) => return Err(WithdrawalError::Version(v)),
            None => return Err(postcard::Error::DeserializeUnexpectedEnd.into()),
        };
        w.check()?;
        Ok(w)
    }

    fn check(&self) -> Result<(), WithdrawalError> {
        let n = self.keys.len();
        if n == 0 || n > MAX_WITHDRAWAL_KEYS {
            return Err(WithdrawalError::KeyCount(n));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<ContentKey> {
        (0..n)
            .map(|i| ContentKey::from_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect()
    }

    #[test]
    fn round_trips_up_to_the_limit() {
        for n in [1, MAX_WITHDRAWAL_KEYS] {
            let w = Withdrawal {
                keys: keys(n),
                nonce: u64::MAX,
            };
            let bytes = w.encode().unwrap();
            assert!(bytes.len() <= MAX_WITHDRAWAL_LEN, "{}", bytes.len());
            assert_eq!(Withdrawal::decode(&bytes).unwrap(), w);
        }
    }

    #[test]
    fn refuses_bad_counts_and_bytes() {
        for n in [0, MAX_WITHDRAWAL_KEYS + 1] {
            let w = Withdrawal {
                keys: keys(n),
                nonce: 1,
            };
            assert!(
                matches!(w.encode(), Err(WithdrawalError::KeyCount(_))),
                "{n}"
            );
        }
        let mut empty = vec![WITHDRAWAL_VERSION];
        empty.extend(
            postcard::to_stdvec(&Withdrawal {
                keys: vec![],
                nonce: 1,
            })
            .unwrap(),
        );
        assert!(matches!(
            Withdrawal::decode(&empty),
            Err(WithdrawalError::KeyCount(0))
        ));
        assert!(matches!(
            Withdrawal::decode(&[9, 1]),
            Err(WithdrawalError::Version(9))
        ));
        assert!(matches!(
            Withdrawal::decode(&vec![1; MAX_WITHDRAWAL_LEN + 1]),
            Err(WithdrawalError::TooLarge(_))
        ));
        assert!(matches!(
            Withdrawal::decode(&[1, 1, 0]),
            Err(WithdrawalError::Decode(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8.., 0..2048)) {
            let _ = Withdrawal::decode(&bytes);
        }
    }
}
