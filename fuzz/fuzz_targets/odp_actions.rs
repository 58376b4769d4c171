#![no_main]
//! Any bytes as a list of nested attributes: parsing never panics, and
//! what parses re-emits to bytes that parse to the same list.

use libfuzzer_sys::fuzz_target;
use weft_odp::{Action, nla};

fuzz_target!(|data: &[u8]| {
    if let Ok(attrs) = nla::parse_all::<Action>(data) {
        let again =
            nla::parse_all::<Action>(&nla::to_bytes(&attrs)).expect("emitted attributes parse");
        assert_eq!(again, attrs);
    }
});
