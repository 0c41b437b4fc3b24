//! `ArrangementId::from_str` (arrangement ids in the admin API) must return, never panic, and
//! whatever it accepts must print back as the same id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::records::ArrangementId;

fuzz_target!(|input: &str| {
    if let Ok(id) = input.parse::<ArrangementId>() {
        assert_eq!(id.to_string(), input.to_ascii_lowercase());
    }
});
