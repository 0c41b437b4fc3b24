//! `ContentKey::from_str` (content keys in peer-fetch paths) must return, never panic, and
//! whatever it accepts must print back as the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::ContentKey;

fuzz_target!(|input: &str| {
    if let Ok(key) = input.parse::<ContentKey>() {
        assert_eq!(key.to_string(), input.to_ascii_lowercase());
    }
});
