//! `CanonicalUrl::parse` of arbitrary UTF-8 must return, never panic, and its output must be
//! a fixed point (parsing the canonical form gives the same URL).
#![no_main]

use libfuzzer_sys::fuzz_target;
use reef_proto::CanonicalUrl;

fuzz_target!(|input: &str| {
    if let Ok(url) = CanonicalUrl::parse(input) {
        let again = CanonicalUrl::parse(url.as_str());
        assert_eq!(again.as_ref().map(|u| u.as_str()), Ok(url.as_str()));
    }
});
