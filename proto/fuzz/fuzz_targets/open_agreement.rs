//! `records::open_agreement` of an arbitrary agreement must return, never panic. The first 8
//! bytes are the clock, the next 64 the countersignature, the rest the sealed terms.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::records::{Agreement, Countersignature, open_agreement};

fuzz_target!(|data: &[u8]| {
    let Some((now, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some((countersignature, sealed_terms)) = rest.split_first_chunk::<64>() else {
        return;
    };
    let agreement = Agreement {
        sealed_terms: sealed_terms.to_vec(),
        countersignature: Countersignature(*countersignature),
    };
    let _ = open_agreement(&agreement, u64::from_le_bytes(*now));
});
