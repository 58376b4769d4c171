#![no_main]
//! Frames off the wire fed to a handshake in every role, with and without a
//! password: errors, never panics.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use weft_crypto::{Handshake, Hello, Password, Role};

static PASSWORD: OnceLock<Password> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let password = PASSWORD.get_or_init(|| Password::derive("fuzz"));
    let hello = Hello {
        min_version: 1,
        max_version: 2,
        encryption: false,
        nonce: [0; weft_crypto::hello::NONCE_LEN],
        identity: b"fuzz".to_vec(),
    };
    for (role, password) in [
        (Role::Initiator, Some(password.clone())),
        (Role::Responder, Some(password.clone())),
        (Role::Responder, None),
    ] {
        let (mut handshake, _) = Handshake::new(role, hello.clone(), password);
        // The input is a series of frames: a length byte, then that many bytes.
        let mut rest = data;
        while let Some((&len, tail)) = rest.split_first() {
            let (frame, next) = tail.split_at(usize::from(len).min(tail.len()));
            if handshake.handle(frame).is_err() {
                break;
            }
            rest = next;
        }
    }
});
