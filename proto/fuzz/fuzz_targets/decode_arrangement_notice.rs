//! `peering::decode_notice` (a notice on the reef/arrangements/1 gossip topic) must return,
//! never panic, and whatever it accepts must encode back to a notice that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::peering::{decode_notice, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(notice) = decode_notice(data) {
        let again = decode_notice(&encode(&notice).expect("an accepted notice encodes"))
            .expect("re-encoded notice decodes");
        assert_eq!(again, notice);
    }
});
