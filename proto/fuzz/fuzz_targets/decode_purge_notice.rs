//! `PurgeNotice::decode` (gossip from any peer) must return, never panic, and whatever it
//! accepts must encode back to a notice that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::PurgeNotice;

fuzz_target!(|data: &[u8]| {
    if let Ok(notice) = PurgeNotice::decode(data) {
        let again = PurgeNotice::decode(&notice.encode().expect("an accepted notice encodes"))
            .expect("re-encoded notice decodes");
        assert_eq!(again, notice);
    }
});
