//! The peering protocol: what providers' agents and nodes say to each other over the libp2p
//! request-response protocol [`PROTOCOL`] to make, use, end and settle arrangements.
//!
//! The primary [`Propose`](Request::Propose)s sealed [`Terms`]; the peer answers with its
//! countersignature ([`Accept`](Response::Accept)), a [`Counter`](Response::Counter)
//! suggestion, or a [`Reject`](Response::Reject); the primary [`Commit`](Request::Commit)s the
//! [`Agreement`]. While it runs, the peer's serving nodes send
//! [`Usage`](Request::Usage) receipts to the primary's agent; either side may
//! [`End`](Request::End) it, and they [`Settle`](Request::Settle) by comparing
//! [`Settlement`]s.
//!
//! Both providers' nodes learn of an arrangement, and of its end, from a [`Notice`] on the
//! gossip topic [`NOTICE_TOPIC`].
//!
//! Decoding checks structure and bounds only. The signed parts inside (terms, agreements,
//! receipts) need a clock and are opened by the handler with [`open`](crate::records::open) and
//! [`open_agreement`](crate::records::open_agreement).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::records::EndReason;
use crate::records::text;
use crate::records::{Agreement, ArrangementId, Countersignature, ReceiptAck, RecordError, Terms};

/// The libp2p protocol name.
pub const PROTOCOL: &str = "/reef/peering/1";
/// The gossip topic on which agreements and their ends reach both providers' nodes.
pub const NOTICE_TOPIC: &str = "reef/arrangements/1";
/// Largest encoded message either way; the largest valid one (a counter-proposal of the
/// largest terms) is under 20 KiB, and a reader stops at this many bytes.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Longest free-text reason in a message: enough for a sentence in a log line.
pub const MAX_REASON_LEN: usize = 256;

/// Current wire version of [`Request`] and [`Response`].
const PEERING_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    #[error("peering message is {0} bytes, over the limit of {MAX_MESSAGE_LEN}")]
    TooLarge(usize),
    #[error("peering message version {0} is not supported")]
    Version(u8),
    #[error("peering message does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("peering message has trailing bytes")]
    Trailing,
    /// A reason text, or the terms of a counter-proposal, out of bounds.
    #[error("peering message: {0}")]
    Invalid(#[from] RecordError),
}

/// From the one who opens the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Sealed [`Terms`], signed by the primary, to the peer.
    Propose { sealed_terms: Vec<u8> },
    /// The terms with the peer's countersignature, back to the peer: the primary confirms.
    Commit { agreement: Agreement },
    /// A sealed [`UsageReceipt`](crate::records::UsageReceipt), from a serving node to the
    /// primary's agent.
    Usage { sealed_receipt: Vec<u8> },
    /// Either side stops the arrangement before its end.
    End {
        id: ArrangementId,
        reason: EndReason,
    },
    /// The sender's account of an arrangement; the other side answers with its own.
    Settle { settlement: Settlement },
}

/// The answer on the same stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// To `Propose`: the peer's [`countersign`](crate::records::countersign)ature.
    Accept {
        countersignature: Countersignature,
    },
    /// To `Propose`: terms the peer would accept, unsigned; the primary may propose them.
    Counter {
        terms: Terms,
        reason: String,
    },
    Reject {
        reason: RejectReason,
    },
    /// To `Commit`.
    Committed,
    /// To `Usage`.
    Ack(ReceiptAck),
    /// To `End`.
    Ended,
    /// To `Settle`: the receiver's own account, to compare.
    Settled {
        settlement: Settlement,
    },
    /// The request could not be handled (malformed, or a failure on the receiver's side).
    Error {
        reason: String,
    },
}

/// Why a peer refuses a proposal (or a node's receipt, or a commit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    PolicyRefuses,
    NoCapacity,
    PriceTooLow,
    DurationOutOfRange,
    UnknownService,
    BadSignature,
    /// The terms name another peer, or the receipt another primary.
    NotForUs,
    Expired,
    /// At most [`MAX_REASON_LEN`] bytes.
    Other(String),
}

/// What one side owes for an arrangement: the traffic it counts (from the receipts) and the
/// amount for it. Both ledgers compute it with [`Settlement::compute`] and must agree exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub id: ArrangementId,
    pub requests: u64,
    pub bytes: u64,
    pub amount_micros: u64,
}

/// Bytes per billed gigabyte: decimal, as transit is priced.
const BYTES_PER_GB: u128 = 1_000_000_000;

impl Settlement {
    /// `amount_micros = bytes × price_micros_per_gb / 10^9`, in exact integer arithmetic
    /// (u128, so the product cannot overflow), rounded down, and saturating at `u64::MAX`:
    /// both sides get the same amount from the same counts on any machine.
    pub fn compute(
        id: ArrangementId,
        requests: u64,
        bytes: u64,
        price_micros_per_gb: u64,
    ) -> Settlement {
        let amount = u128::from(bytes) * u128::from(price_micros_per_gb) / BYTES_PER_GB;
        Settlement {
            id,
            requests,
            bytes,
            amount_micros: u64::try_from(amount).unwrap_or(u64::MAX),
        }
    }
}

/// What travels on [`NOTICE_TOPIC`]: an agreement both parties signed, or a party's sealed
/// [`ArrangementEnd`](crate::records::ArrangementEnd). Receivers open either before they act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    Agreed(Agreement),
    Ended { sealed_end: Vec<u8> },
}

/// A peering message, [`encode`]d and decoded the same way: [`Request`], [`Response`] and
/// [`Notice`].
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {
    /// The bounds a receiver enforces beyond the size limit.
    fn check(&self) -> Result<(), PeeringError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Request {}
    impl Sealed for super::Response {}
    impl Sealed for super::Notice {}
}

impl Message for Notice {
    fn check(&self) -> Result<(), PeeringError> {
        // Both kinds are signed and checked when opened.
        Ok(())
    }
}

impl Message for Request {
    fn check(&self) -> Result<(), PeeringError> {
        // Everything else inside is either fixed-size or sealed, and checked when opened.
        Ok(())
    }
}

impl Message for Response {
    fn check(&self) -> Result<(), PeeringError> {
        match self {
            Response::Counter { terms, reason } => {
                terms.check()?;
                reason_text(reason)
            }
            Response::Reject {
                reason: RejectReason::Other(reason),
            }
            | Response::Error { reason } => reason_text(reason),
            _ => Ok(()),
        }
    }
}

fn reason_text(reason: &str) -> Result<(), PeeringError> {
    Ok(text::optional_text("reason", reason, MAX_REASON_LEN)?)
}

/// The wire form: a version byte, then postcard. Fails on a message the receiver would refuse
/// (too large, a reason too long), so we never send one.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, PeeringError> {
    msg.check()?;
    let mut out = vec![PEERING_VERSION];
    out.extend(postcard::to_stdvec(msg)?);
    if out.len() > MAX_MESSAGE_LEN {
        return Err(PeeringError::TooLarge(out.len()));
    }
    Ok(out)
}

pub fn decode_request(bytes: &[u8]) -> Result<Request, PeeringError> {
    decode(bytes)
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, PeeringError> {
    decode(bytes)
}

pub fn decode_notice(bytes: &[u8]) -> Result<Notice, PeeringError> {
    decode(bytes)
}

fn decode<M: Message>(bytes: &[u8]) -> Result<M, PeeringError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(PeeringError::TooLarge(bytes.len()));
    }
    let msg: M = match bytes.split_first() {
        Some((&PEERING_VERSION, rest)) => match postcard::take_from_bytes(rest)? {
            (msg, []) => msg,
            _ => return Err(PeeringError::Trailing),
        },
        Some((&v, _)) => return Err(PeeringError::Version(v)),
        None => return Err(postcard::Error::DeserializeUnexpectedEnd.into()),
    };
    msg.check()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::support::*;
    use crate::records::{countersign, seal};

    fn id() -> ArrangementId {
        ArrangementId::from_bytes([9; 16])
    }

    fn requests() -> Vec<Request> {
        let primary = provider_key(1);
        let terms = terms_of(&primary, &provider_key(2));
        let sealed_terms = seal(primary.signing_key(), &terms, NOW, terms.end_ms).unwrap();
        let node = node_key(3);
        vec![
            Request::Propose {
                sealed_terms: sealed_terms.clone(),
            },
            Request::Commit {
                agreement: Agreement {
                    countersignature: countersign(provider_key(2).signing_key(), &sealed_terms),
                    sealed_terms,
                },
            },
            Request::Usage {
                sealed_receipt: seal(&node, &receipt_of(&node, None), NOW, NOW + 1000).unwrap(),
            },
            Request::End {
                id: id(),
                reason: EndReason::SlaBreach,
            },
            Request::Settle {
                settlement: Settlement::compute(id(), 10, 2_000_000_000, 12_000),
            },
        ]
    }

    fn responses() -> Vec<Response> {
        let terms = terms_of(&provider_key(1), &provider_key(2));
        vec![
            Response::Accept {
                countersignature: Countersignature([4; 64]),
            },
            Response::Counter {
                terms,
                reason: "price too low for eu".into(),
            },
            Response::Reject {
                reason: RejectReason::NoCapacity,
            },
            Response::Reject {
                reason: RejectReason::Other("maintenance window".into()),
            },
            Response::Committed,
            Response::Ack(ReceiptAck {
                arrangement: id(),
                node: [5; 32],
                seq: 6,
            }),
            Response::Ended,
            Response::Settled {
                settlement: Settlement::compute(id(), 10, 2_000_000_000, 12_000),
            },
            Response::Error {
                reason: "unknown arrangement".into(),
            },
        ]
    }

    #[test]
    fn protocol_name_is_stable() {
        assert_eq!(PROTOCOL, "/reef/peering/1");
        assert_eq!(NOTICE_TOPIC, "reef/arrangements/1");
    }

    #[test]
    fn notices_round_trip() {
        let primary = provider_key(1);
        let terms = terms_of(&primary, &provider_key(2));
        let sealed_terms = seal(primary.signing_key(), &terms, NOW, terms.end_ms).unwrap();
        let end = crate::records::ArrangementEnd {
            id: id(),
            party: primary.id(),
            reason: EndReason::LowLoad,
        };
        let notices = [
            Notice::Agreed(Agreement {
                countersignature: countersign(provider_key(2).signing_key(), &sealed_terms),
                sealed_terms,
            }),
            Notice::Ended {
                sealed_end: seal(primary.signing_key(), &end, NOW, NOW + 1000).unwrap(),
            },
        ];
        for notice in notices {
            let bytes = encode(&notice).unwrap();
            assert_eq!(decode_notice(&bytes).unwrap(), notice);
        }
        assert!(decode_notice(&[PEERING_VERSION, 7]).is_err());
        assert!(decode_notice(&vec![PEERING_VERSION; MAX_MESSAGE_LEN + 1]).is_err());
    }

    #[test]
    fn round_trips() {
        for request in requests() {
            let bytes = encode(&request).unwrap();
            assert_eq!(bytes[0], PEERING_VERSION);
            assert_eq!(decode_request(&bytes).unwrap(), request);
        }
        for response in responses() {
            let bytes = encode(&response).unwrap();
            assert_eq!(bytes[0], PEERING_VERSION);
            assert_eq!(decode_response(&bytes).unwrap(), response);
        }
    }

    #[test]
    fn refuses_bad_versions_garbage_and_trailing_bytes() {
        assert!(matches!(decode_request(&[]), Err(PeeringError::Decode(_))));
        assert!(matches!(decode_response(&[]), Err(PeeringError::Decode(_))));
        let mut bytes = encode(&Response::Committed).unwrap();
        bytes[0] = 2;
        assert!(matches!(
            decode_response(&bytes),
            Err(PeeringError::Version(2))
        ));
        assert!(matches!(
            decode_request(&[PEERING_VERSION, 0xff]),
            Err(PeeringError::Decode(_))
        ));
        let mut bytes = encode(&Response::Ended).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode_response(&bytes),
            Err(PeeringError::Trailing)
        ));
        // A huge claimed length with nothing behind it fails cleanly.
        assert!(matches!(
            decode_request(&[PEERING_VERSION, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(PeeringError::Decode(_))
        ));
    }

    #[test]
    fn enforces_the_size_limit() {
        let big = Request::Usage {
            sealed_receipt: vec![0; MAX_MESSAGE_LEN],
        };
        assert!(matches!(encode(&big), Err(PeeringError::TooLarge(_))));
        let mut bytes = vec![PEERING_VERSION];
        bytes.extend(postcard::to_stdvec(&big).unwrap());
        assert!(matches!(
            decode_request(&bytes),
            Err(PeeringError::TooLarge(_))
        ));
        // The largest message that fits is accepted.
        let header = encode(&Request::Usage {
            sealed_receipt: vec![],
        })
        .unwrap()
        .len();
        let fits = Request::Usage {
            sealed_receipt: vec![0; MAX_MESSAGE_LEN - header - 2],
        };
        let bytes = encode(&fits).unwrap();
        assert_eq!(bytes.len(), MAX_MESSAGE_LEN);
        assert_eq!(decode_request(&bytes).unwrap(), fits);
    }

    #[test]
    fn reasons_are_bounded() {
        let long = "r".repeat(MAX_REASON_LEN + 1);
        let terms = terms_of(&provider_key(1), &provider_key(2));
        let bad = [
            Response::Error {
                reason: long.clone(),
            },
            Response::Error {
                reason: "a\nforged log line".into(),
            },
            Response::Reject {
                reason: RejectReason::Other(long.clone()),
            },
            Response::Counter {
                terms: terms.clone(),
                reason: long,
            },
            // The counter-proposal's terms are checked like signed ones (bar the signer).
            Response::Counter {
                terms: Terms {
                    share_permille: 0,
                    ..terms
                },
                reason: String::new(),
            },
        ];
        for response in bad {
            assert!(
                matches!(encode(&response), Err(PeeringError::Invalid(_))),
                "{response:?}"
            );
            let mut bytes = vec![PEERING_VERSION];
            bytes.extend(postcard::to_stdvec(&response).unwrap());
            assert!(matches!(
                decode_response(&bytes),
                Err(PeeringError::Invalid(_))
            ));
        }
        let longest = Response::Error {
            reason: "r".repeat(MAX_REASON_LEN),
        };
        assert!(encode(&longest).is_ok());
    }

    #[test]
    fn largest_counter_fits() {
        let label = "a".repeat(63);
        let hostname = [&label[..], &label, &label, &"b".repeat(61)].join(".");
        let counter = Response::Counter {
            terms: Terms {
                services: vec![hostname; crate::records::MAX_ARRANGEMENT_SERVICES],
                regions: vec![
                    "r".repeat(crate::records::MAX_REGION_LEN);
                    crate::records::MAX_ARRANGEMENT_REGIONS
                ],
                ..terms_of(&provider_key(1), &provider_key(2))
            },
            reason: "r".repeat(MAX_REASON_LEN),
        };
        assert!(encode(&counter).unwrap().len() < 20 * 1024);
    }

    #[test]
    fn settlement_is_exact_integer_math() {
        let s = |bytes, price| Settlement::compute(id(), 1, bytes, price).amount_micros;
        assert_eq!(s(1_000_000_000, 12_000), 12_000);
        assert_eq!(s(2_500_000_000, 12_000), 30_000);
        // Rounded down: 999_999_999 bytes at 1 µ/GB is 0.999… µ.
        assert_eq!(s(999_999_999, 1), 0);
        assert_eq!(s(1_999_999_999, 3), 5);
        assert_eq!(s(0, u64::MAX), 0);
        // No overflow in the product; saturates only when the amount itself does not fit.
        assert_eq!(s(u64::MAX, 1_000_000_000), u64::MAX);
        assert_eq!(s(u64::MAX, 1), u64::MAX / 1_000_000_000);
        assert_eq!(s(u64::MAX, u64::MAX), u64::MAX);
        let full = Settlement::compute(id(), 7, 8, 9);
        assert_eq!((full.id, full.requests, full.bytes), (id(), 7, 8));
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(0u8.., 0..2048),
            versioned in proptest::bool::ANY,
        ) {
            let mut bytes = bytes;
            if versioned {
                bytes.insert(0, PEERING_VERSION);
            }
            if let Ok(request) = decode_request(&bytes) {
                let again = decode_request(&encode(&request).unwrap()).unwrap();
                proptest::prop_assert_eq!(again, request);
            }
            if let Ok(response) = decode_response(&bytes) {
                let again = decode_response(&encode(&response).unwrap()).unwrap();
                proptest::prop_assert_eq!(again, response);
            }
            if let Ok(notice) = decode_notice(&bytes) {
                let again = decode_notice(&encode(&notice).unwrap()).unwrap();
                proptest::prop_assert_eq!(again, notice);
            }
        }

        #[test]
        fn settlement_matches_wide_arithmetic(bytes in 0u64.., price in 0u64..) {
            let amount = Settlement::compute(id(), 0, bytes, price).amount_micros;
            let exact = u128::from(bytes) * u128::from(price) / 1_000_000_000;
            proptest::prop_assert_eq!(u128::from(amount), exact.min(u128::from(u64::MAX)));
        }
    }
}
