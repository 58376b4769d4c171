#![no_main]
//! Any bytes: parsing never panics, and what parses re-emits to bytes that
//! parse to the same message.

use libfuzzer_sys::fuzz_target;
use weft_odp::{DatapathFamily, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::<DatapathFamily>::parse(data) {
        let again =
            Message::<DatapathFamily>::parse(&msg.to_bytes()).expect("emitted messages parse");
        assert_eq!(again, msg);
    }
});
