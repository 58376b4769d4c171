use proptest::prelude::*;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::*;
use crate::frame::FrameDecoder;

fn hello(identity: &str, min: u16, max: u16) -> Hello {
    Hello {
        min_version: min,
        max_version: max,
        encryption: false,
        nonce: [0; crate::hello::NONCE_LEN],
        identity: identity.as_bytes().to_vec(),
    }
}

fn password(p: &str) -> Option<Password> {
    // Argon2 is slow by design; derive each test password once.
    use std::{collections::HashMap, sync::Mutex};
    static CACHE: Mutex<Option<HashMap<String, Password>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap();
    let cache = cache.get_or_insert_with(HashMap::new);
    Some(
        cache
            .entry(p.to_string())
            .or_insert_with(|| Password::derive(p))
            .clone(),
    )
}

/// What each side ended with.
struct Outcome {
    initiator: Result<Established, HandshakeError>,
    responder: Result<Established, HandshakeError>,
}

/// Runs two handshakes against each other, delivering every frame through
/// a frame decoder as a TCP stream would; `tamper` may alter frames sent by
/// the responder (index, bytes) on the way.
fn run(
    mut i: Handshake,
    i_hello: Vec<u8>,
    mut r: Handshake,
    r_hello: Vec<u8>,
    tamper: impl Fn(usize, &mut Vec<u8>),
) -> Outcome {
    let mut to_r = vec![i_hello];
    let mut to_i = vec![r_hello];
    let (mut i_done, mut r_done) = (None, None);
    let mut sent_by_r = 0;
    for _ in 0..10 {
        for frame in std::mem::take(&mut to_r) {
            if r_done.is_some() {
                break;
            }
            let mut d = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
            d.push(&frame);
            let payload = d.next_frame().unwrap().unwrap();
            match r.handle(&payload) {
                Ok(step) => {
                    for mut f in step.send {
                        tamper(sent_by_r, &mut f);
                        sent_by_r += 1;
                        to_i.push(f);
                    }
                    if let Some(e) = step.established {
                        r_done = Some(Ok(e));
                    }
                }
                Err(f) => {
                    to_i.extend(f.notice);
                    r_done = Some(Err(f.error));
                }
            }
        }
        for frame in std::mem::take(&mut to_i) {
            if i_done.is_some() {
                break;
            }
            let mut d = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
            d.push(&frame);
            let payload = d.next_frame().unwrap().unwrap();
            match i.handle(&payload) {
                Ok(step) => {
                    to_r.extend(step.send);
                    if let Some(e) = step.established {
                        i_done = Some(Ok(e));
                    }
                }
                Err(f) => {
                    to_r.extend(f.notice);
                    i_done = Some(Err(f.error));
                }
            }
        }
        if i_done.is_some() && r_done.is_some() {
            break;
        }
    }
    Outcome {
        initiator: i_done.expect("the initiator finished"),
        responder: r_done.expect("the responder finished"),
    }
}

fn connect(i_password: Option<Password>, r_password: Option<Password>) -> Outcome {
    let (i, ih) = Handshake::new(Role::Initiator, hello("i", 1, 1), i_password);
    let (r, rh) = Handshake::new(Role::Responder, hello("r", 1, 1), r_password);
    run(i, ih, r, rh, |_, _| {})
}

fn exchange(a: &mut Established, b: &mut Established, message: &[u8]) -> Vec<u8> {
    let frame = a.sender.seal(message).unwrap();
    let mut d = FrameDecoder::new(crate::record::MAX_FRAME);
    d.push(&frame);
    b.receiver.open(d.next_frame().unwrap().unwrap()).unwrap()
}

#[test]
fn the_same_password_gives_matching_encrypted_channels() {
    let out = connect(password("secret"), password("secret"));
    let (mut i, mut r) = (out.initiator.unwrap(), out.responder.unwrap());
    assert_eq!((i.version, r.version), (1, 1));
    assert_eq!(
        (i.peer.identity.as_slice(), r.peer.identity.as_slice()),
        (&b"r"[..], &b"i"[..])
    );
    assert!(i.sender.is_encrypted() && r.sender.is_encrypted());
    assert_eq!(exchange(&mut i, &mut r, b"to responder"), b"to responder");
    assert_eq!(exchange(&mut r, &mut i, b"to initiator"), b"to initiator");
    let (ik, rk) = (i.data_keys.unwrap(), r.data_keys.unwrap());
    assert_eq!(ik.send, rk.recv);
    assert_eq!(ik.recv, rk.send);
    assert_ne!(ik.send, ik.recv, "each direction has its own key");
}

#[test]
fn every_connection_gets_fresh_keys() {
    let a = connect(password("secret"), password("secret"))
        .initiator
        .unwrap();
    let b = connect(password("secret"), password("secret"))
        .initiator
        .unwrap();
    assert_ne!(a.data_keys.unwrap().send, b.data_keys.unwrap().send);
}

#[test]
fn a_wrong_password_is_reported_on_both_sides() {
    let out = connect(password("secret"), password("other"));
    assert_eq!(out.responder.unwrap_err(), HandshakeError::WrongPassword);
    assert_eq!(out.initiator.unwrap_err(), HandshakeError::WrongPassword);
}

#[test]
fn encryption_mismatch_is_told_apart_on_each_side() {
    let out = connect(None, password("secret"));
    assert_eq!(
        out.initiator.unwrap_err(),
        HandshakeError::PeerRequiresEncryption
    );
    assert_eq!(
        out.responder.unwrap_err(),
        HandshakeError::PeerSentNoEncryption
    );
    let out = connect(password("secret"), None);
    assert_eq!(
        out.initiator.unwrap_err(),
        HandshakeError::PeerSentNoEncryption
    );
    assert_eq!(
        out.responder.unwrap_err(),
        HandshakeError::PeerRequiresEncryption
    );
}

#[test]
fn without_passwords_the_channel_is_plain() {
    let out = connect(None, None);
    let (mut i, mut r) = (out.initiator.unwrap(), out.responder.unwrap());
    assert!(!i.sender.is_encrypted() && i.data_keys.is_none());
    assert_eq!(exchange(&mut i, &mut r, b"clear"), b"clear");
}

#[test]
fn versions_are_negotiated_or_refused() {
    let (i, ih) = Handshake::new(Role::Initiator, hello("i", 1, 3), password("p"));
    let (r, rh) = Handshake::new(Role::Responder, hello("r", 2, 5), password("p"));
    let out = run(i, ih, r, rh, |_, _| {});
    assert_eq!(out.initiator.unwrap().version, 3);
    let (i, ih) = Handshake::new(Role::Initiator, hello("i", 1, 1), None);
    let (r, rh) = Handshake::new(Role::Responder, hello("r", 2, 2), None);
    let out = run(i, ih, r, rh, |_, _| {});
    assert!(matches!(
        out.initiator.unwrap_err(),
        HandshakeError::VersionMismatch {
            ours: (1, 1),
            theirs: (2, 2)
        }
    ));
}

/// A router of protocol 1 sent a shorter hello (no nonce): what it gets
/// back, and what we log, is that the versions differ, not "malformed".
#[test]
fn an_older_routers_shorter_hello_is_a_version_mismatch() {
    let (mut r, _) = Handshake::new(Role::Responder, hello("r", 2, 2), None);
    let mut old = vec![KIND_HELLO];
    old.extend_from_slice(b"weft");
    old.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0]);
    let failure = r.handle(&old).unwrap_err();
    assert_eq!(
        failure.error,
        HandshakeError::VersionMismatch {
            ours: (2, 2),
            theirs: (1, 1)
        }
    );
    // A short hello that does share our version is malformed, as before.
    let (mut r, _) = Handshake::new(Role::Responder, hello("r", 1, 2), None);
    let failure = r.handle(&old).unwrap_err();
    assert!(matches!(failure.error, HandshakeError::Malformed(_)));
}

/// An attacker who rewrites the responder's hello (its name, or its
/// versions to force a downgrade) breaks the handshake: the hellos are in
/// the prologue.
#[test]
fn altered_hellos_are_detected() {
    for (what, tamper) in [
        (
            "identity",
            Box::new(|f: &mut Vec<u8>| *f.last_mut().unwrap() ^= 1) as Box<dyn Fn(&mut Vec<u8>)>,
        ),
        (
            "max version",
            Box::new(|f: &mut Vec<u8>| f[4 + 1 + 4 + 3] = 1),
        ),
    ] {
        let (i, ih) = Handshake::new(Role::Initiator, hello("i", 1, 2), password("p"));
        let (r, rh) = Handshake::new(Role::Responder, hello("r", 1, 2), password("p"));
        let mut rh_bent = rh.clone();
        tamper(&mut rh_bent);
        let out = run(i, ih, r, rh_bent, |_, _| {});
        assert!(
            out.initiator.is_err() || out.responder.is_err(),
            "altered {what} went unnoticed"
        );
    }
}

/// The first handshake message of one connection does not work in another,
/// even with the right password and the same identities: each hello's
/// nonce is fresh, and the hellos are the prologue.
#[test]
fn messages_cannot_be_spliced_between_connections() {
    let payload = |frame: &[u8]| frame[4..].to_vec();
    // Connection A: an initiator answers a responder hello with msg1.
    let (mut a_init, _) = Handshake::new(Role::Initiator, hello("i", 1, 1), password("p"));
    let (_, a_resp_hello) = Handshake::new(Role::Responder, hello("r", 1, 1), password("p"));
    let msg1_of_a = a_init
        .handle(&payload(&a_resp_hello))
        .unwrap()
        .send
        .remove(0);
    // Connection B, between the same two routers: a replay of A's first
    // message is refused.
    let (mut b_resp, _) = Handshake::new(Role::Responder, hello("r", 1, 1), password("p"));
    let (_, b_init_hello) = Handshake::new(Role::Initiator, hello("i", 1, 1), password("p"));
    b_resp.handle(&payload(&b_init_hello)).unwrap();
    let err = b_resp.handle(&payload(&msg1_of_a)).unwrap_err();
    assert_eq!(err.error, HandshakeError::WrongPassword);
}

#[test]
fn garbage_and_refusals_are_errors() {
    let (mut h, _) = Handshake::new(Role::Responder, hello("r", 1, 1), None);
    let err = h.handle(b"\x01GET / HTTP/1.1").unwrap_err();
    assert!(
        matches!(err.error, HandshakeError::Malformed(_)),
        "{:?}",
        err.error
    );
    assert!(err.notice.is_some(), "the peer hears why");
    let (mut h, _) = Handshake::new(Role::Responder, hello("r", 1, 1), None);
    let notice = refusal(
        RefuseCode::Other,
        "name clash: 02:00:00:00:00:01 is already connected",
    );
    let err = h.handle(&notice[4..]).unwrap_err();
    assert_eq!(
        err.error,
        HandshakeError::Refused {
            code: RefuseCode::Other,
            message: "name clash: 02:00:00:00:00:01 is already connected".into()
        }
    );
}

proptest! {
    #[test]
    fn any_frame_in_any_state_is_handled_without_panic(
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..120), 1..6),
        with_password: bool,
    ) {
        let (mut h, _) = Handshake::new(Role::Responder, hello("r", 1, 1), with_password.then(|| password("p")).flatten());
        for f in frames {
            if h.handle(&f).is_err() { break; }
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The value of `"key": "value"` in the vector file.
fn field(json: &str, key: &str) -> String {
    let start = json.find(&format!("\"{key}\": \"")).unwrap() + key.len() + 5;
    json[start..start + json[start..].find('"').unwrap()].to_string()
}

/// Against Python's `noiseprotocol` and `argon2-cffi`
/// (tests/vectors/make_handshake_kat.py): the same hellos, password and
/// ephemeral keys give the same handshake messages, hash and split.
#[test]
fn matches_an_independent_noise_implementation() {
    let kat = include_str!("../../tests/vectors/handshake-kat.json");
    let eph = |k: &str| -> [u8; 32] { unhex(&field(kat, k)).try_into().unwrap() };
    let nonce =
        |k: &str| -> [u8; crate::hello::NONCE_LEN] { unhex(&field(kat, k)).try_into().unwrap() };
    let (mut i, ih) = Handshake::start(
        Role::Initiator,
        hello(&field(kat, "initiator_identity"), 1, 1),
        password("correct horse"),
        nonce("initiator_nonce"),
    );
    let (mut r, rh) = Handshake::start(
        Role::Responder,
        hello(&field(kat, "responder_identity"), 1, 1),
        password("correct horse"),
        nonce("responder_nonce"),
    );
    assert_eq!(
        unhex(&field(kat, "psk")),
        r.password.as_ref().unwrap().psk().to_vec()
    );
    i.fixed_ephemeral = Some(eph("initiator_ephemeral"));
    r.fixed_ephemeral = Some(eph("responder_ephemeral"));
    let noise_bodies = std::cell::RefCell::new(Vec::new());
    let record = |_: usize, f: &mut Vec<u8>| noise_bodies.borrow_mut().push(f.clone());
    let mut i_sent = Vec::new();
    {
        // Drive by hand to see the initiator's noise frame too.
        let payload = |f: &[u8]| f[4..].to_vec();
        let step = i.handle(&payload(&rh)).unwrap();
        i_sent.extend(step.send.iter().map(|f| payload(f)));
        r.handle(&payload(&ih)).unwrap();
        let step = r.handle(&i_sent[0]).unwrap();
        record(0, &mut step.send[0].clone());
        assert!(step.established.is_some());
        let step = i.handle(&payload(&step.send[0])).unwrap();
        let established = step.established.expect("established");
        assert_eq!(
            established.peer.identity,
            field(kat, "responder_identity").as_bytes(),
            "the responder's identity arrived sealed"
        );
    }
    // With a password the hellos carry no identity at all.
    for (frame, who) in [(&ih, "initiator_identity"), (&rh, "responder_identity")] {
        let name = field(kat, who);
        assert!(
            !frame.windows(name.len()).any(|w| w == name.as_bytes()),
            "{who} in the clear hello"
        );
    }
    assert!(
        !i_sent[0]
            .windows(b"initiator".len())
            .any(|w| w == b"initiator"),
        "the identity is sealed in the first Noise message"
    );
    assert_eq!(
        i_sent[0][1..],
        unhex(&field(kat, "msg1"))[..],
        "first handshake message"
    );
    assert_eq!(
        noise_bodies.borrow()[0][5..],
        unhex(&field(kat, "msg2"))[..],
        "second handshake message"
    );
    let (i_to_r, _, hash) = i.transcript.clone().unwrap();
    assert_eq!(hash, unhex(&field(kat, "handshake_hash")));
    // Noise transport: nonce 0, little-endian counter after 4 zero bytes.
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &i_to_r).unwrap());
    let mut msg = b"kat".to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::empty(),
        &mut msg,
    )
    .unwrap();
    assert_eq!(msg, unhex(&field(kat, "first_transport_message")));
}
