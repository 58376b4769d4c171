//! Golden bytes of what this crate puts on the wire: the hello, control
//! records (plain and sealed) and a sealed data packet, each with fixed
//! keys so the bytes are reproducible. The handshake itself is pinned by
//! the known-answer test in `handshake/tests.rs`.

use std::time::Instant;

use weft_golden::Golden;

use crate::{
    Opener, RekeyPolicy, Sealer, SecretKey,
    datagram::OVERHEAD,
    frame::FrameDecoder,
    hello::{Hello, NONCE_LEN},
    record::{RecordReceiver, RecordSender},
};

fn golden() -> Golden {
    Golden::new(env!("CARGO_MANIFEST_DIR"))
}

fn hello() -> Hello {
    Hello {
        min_version: 1,
        max_version: 2,
        encryption: true,
        nonce: [0x5a; NONCE_LEN],
        identity: b"identity".to_vec(),
    }
}

fn key() -> SecretKey {
    SecretKey::from_bytes([0x42; 32])
}

fn decoded_frame(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = FrameDecoder::new(1 << 16);
    decoder.push(bytes);
    decoder.next_frame().unwrap().expect("one whole frame")
}

#[test]
fn formats_match_their_golden_bytes() {
    let g = golden();
    g.check(
        "hello",
        "hello: magic, versions, flags, nonce, identity",
        &hello().encode(),
    );
    assert_eq!(Hello::decode(&g.bytes("hello")), Ok(hello()));

    let message = b"a control message";
    g.check(
        "record-plain",
        "control record without a password: length prefix, message",
        &RecordSender::plain().seal(message).unwrap(),
    );
    let plain = decoded_frame(&g.bytes("record-plain"));
    assert_eq!(RecordReceiver::plain().open(plain).unwrap(), message);

    g.check(
        "record-sealed",
        "control record with a password: length prefix, ciphertext, tag (counter 0)",
        &RecordSender::sealed(&key()).seal(message).unwrap(),
    );
    let sealed = decoded_frame(&g.bytes("record-sealed"));
    assert_eq!(
        RecordReceiver::sealed(&key()).open(sealed).unwrap(),
        message
    );

    let now = Instant::now();
    let payload = b"an overlay frame";
    let mut packet = vec![0u8; OVERHEAD + payload.len()];
    packet[crate::datagram::HEADER_LEN..][..payload.len()].copy_from_slice(payload);
    Sealer::new(key(), now, RekeyPolicy::default())
        .seal(now, b"aad", &mut packet)
        .unwrap();
    g.check(
        "datagram-sealed",
        "sealed data packet: epoch, counter, ciphertext, tag (aad \"aad\")",
        &packet,
    );
    let mut packet = g.bytes("datagram-sealed");
    let range = Opener::new(key(), RekeyPolicy::default())
        .open(now, b"aad", &mut packet)
        .unwrap();
    assert_eq!(&packet[range], payload);
}

/// A router of this version must understand one of the last release
/// during a rolling upgrade.
#[test]
fn the_previous_release_still_decodes() {
    for (kind, mut bytes) in golden().previous() {
        let ok = match kind.as_str() {
            "hello" => Hello::decode(&bytes).is_ok(),
            "record-plain" => RecordReceiver::plain().open(decoded_frame(&bytes)).is_ok(),
            "record-sealed" => RecordReceiver::sealed(&key())
                .open(decoded_frame(&bytes))
                .is_ok(),
            "datagram-sealed" => Opener::new(key(), RekeyPolicy::default())
                .open(Instant::now(), b"aad", &mut bytes)
                .is_ok(),
            other => panic!("{other}: no decoder is named for it; add one here"),
        };
        assert!(ok, "previous/{kind} no longer decodes");
    }
}
