//! `peering::decode_response` (a /reef/peering/1 response from any peer) must return, never
//! panic, and whatever it accepts must encode back to a response that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::peering::{decode_response, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = decode_response(data) {
        let again = decode_response(&encode(&response).expect("an accepted response encodes"))
            .expect("re-encoded response decodes");
        assert_eq!(again, response);
    }
});
