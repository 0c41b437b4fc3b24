//! `peering::decode_request` (a /reef/peering/1 request from any peer) must return, never
//! panic, and whatever it accepts must encode back to a request that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::peering::{decode_request, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let again = decode_request(&encode(&request).expect("an accepted request encodes"))
            .expect("re-encoded request decodes");
        assert_eq!(again, request);
    }
});
