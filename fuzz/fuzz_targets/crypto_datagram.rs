#![no_main]
//! Any bytes as a sealed datagram, alone or cut into a batch: refused
//! without panic, and never accepted (the fuzzer does not know the key).
//! The pieces of that batch, sealed together under a key both ends have,
//! open back to themselves: batches of any lengths stay within their bytes
//! (the fuzz build checks every read) and agree with one another.

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_crypto::datagram::{HEADER_LEN, OVERHEAD};
use weft_crypto::{OpenError, Opener, RekeyPolicy, Sealer, SecretKey};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut opener = Opener::new(SecretKey::from_bytes([1; 32]), RekeyPolicy::default());
    let mut packet = data.to_vec();
    assert!(opener.open(now, b"", &mut packet).is_err());

    let pieces: Vec<&[u8]> = data.split(|&b| b == 0xff).collect();
    let mut results: Vec<Result<_, OpenError>> =
        pieces.iter().map(|_| Err(OpenError::TooShort)).collect();
    let mut packets: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
    opener.open_batch(now, b"", &mut packets, &mut results);
    assert!(
        results.iter().all(Result::is_err),
        "a forged datagram was accepted"
    );

    let key = SecretKey::from_bytes([2; 32]);
    let mut sealer = Sealer::new(key.clone(), now, RekeyPolicy::default());
    let mut opener = Opener::new(key, RekeyPolicy::default());
    let mut packets: Vec<Vec<u8>> = pieces
        .iter()
        .map(|piece| {
            let mut packet = vec![0; piece.len() + OVERHEAD];
            packet[HEADER_LEN..HEADER_LEN + piece.len()].copy_from_slice(piece);
            packet
        })
        .collect();
    sealer
        .seal_batch(now, b"aad", &mut packets)
        .expect("room for header and tag");
    opener.open_batch(now, b"aad", &mut packets, &mut results);
    for ((packet, result), piece) in packets.iter().zip(&results).zip(&pieces) {
        let payload = result
            .clone()
            .expect("a datagram sealed with the key opens");
        assert_eq!(
            &packet[payload], *piece,
            "a datagram opens to what was sealed"
        );
    }
});
