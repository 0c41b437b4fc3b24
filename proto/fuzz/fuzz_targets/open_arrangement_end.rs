//! `records::open::<ArrangementEnd>` of arbitrary bytes must return, never panic; so must the
//! body decoder behind it. The first 8 bytes are the clock, so the time checks are reached too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::records::{ArrangementEnd, decode_body, open};

fuzz_target!(|data: &[u8]| {
    let Some((now, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = u64::from_le_bytes(*now);
    let _ = open::<ArrangementEnd>(bytes, now);
    // The body decoder and record checks, which the fuzzer cannot reach through `open`
    // without forging a signature: the next 32 bytes are the signer, the rest the body.
    if let Some((signer, body)) = bytes.split_first_chunk::<32>() {
        let _ = decode_body::<ArrangementEnd>(body, signer, now);
    }
});
