#![no_main]
//! Any bytes as a hello: never a panic, and what decodes survives an
//! encode/decode round trip unchanged (unknown flag bits are ignored, so
//! the bytes themselves need not).

use libfuzzer_sys::fuzz_target;
use weft_crypto::Hello;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = Hello::decode(data) {
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
    }
});
