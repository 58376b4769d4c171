#![no_main]
//! Any bytes as a sealed datagram: refused without panic, and never
//! accepted (the fuzzer does not know the key).

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_crypto::{Opener, RekeyPolicy, SecretKey};

fuzz_target!(|data: &[u8]| {
    let mut opener = Opener::new(SecretKey::from_bytes([1; 32]), RekeyPolicy::default());
    let mut packet = data.to_vec();
    assert!(opener.open(Instant::now(), b"", &mut packet).is_err());
});
