//! `Withdrawal::decode` (gossip from any peer) must return, never panic, and whatever it
//! accepts must encode back to a withdrawal that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::Withdrawal;

fuzz_target!(|data: &[u8]| {
    if let Ok(withdrawal) = Withdrawal::decode(data) {
        let again =
            Withdrawal::decode(&withdrawal.encode().expect("an accepted withdrawal encodes"))
                .expect("re-encoded withdrawal decodes");
        assert_eq!(again, withdrawal);
    }
});
