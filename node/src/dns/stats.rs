//! DNS counters for `/api/status` → `dns` (and, later, `/metrics`): every message received and
//! what it got.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, bumped on the query path (relaxed atomics).
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// The counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct Counts {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub fn counts(&self) -> Counts {
                Counts {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Messages received, over UDP and TCP, whatever they were.
    queries,
    /// NOERROR with at least one record in the answer section.
    answered,
    /// NOERROR without an answer: the name exists, not with that type (or has no address of
    /// that family).
    nodata,
    /// The name is in our zone and does not exist.
    nxdomain,
    /// Not ours to answer: outside the zone, a class other than IN, a zone transfer.
    refused,
    /// Malformed, or not exactly one question.
    formerr,
    /// A service with no node listed at all, or an answer we could not encode.
    servfail,
    /// An opcode other than QUERY.
    notimp,
    /// An EDNS version other than 0.
    badvers,
    /// Not answered: shorter than a DNS header, a response, or over a size limit.
    dropped,
    /// Answers cut to fit the client's UDP size (it retries over TCP).
    truncated,
    /// Service answers led by an arrangement's peer provider.
    peer_answers,
    /// TCP connections accepted.
    tcp_connections,
    /// TCP connections closed at once because the limit was reached.
    tcp_rejected,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
