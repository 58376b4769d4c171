//! The handshake of a control connection, as a state machine over frames.
//!
//! Both sides send a [`Hello`] at once. From the two hellos each side
//! decides the protocol version and whether to encrypt; a side with a
//! password refuses one without, and the other way round, each with its own
//! error. With passwords on both sides they run Noise `NNpsk0` (X25519,
//! ChaCha20-Poly1305, SHA-256) with the password-derived key as PSK and
//! both hellos as prologue:
//!
//! ```text
//! initiator                                responder
//!   hello (no identity) ----------------->
//!          <------------------------------  hello (no identity)
//!   noise: psk, e (identity, sealed) ---->   wrong password? refuse
//!          <------------------------------  noise: e, ee (identity, sealed)
//! ```
//!
//! With a password nothing but "weft", the versions and the encryption
//! flag crosses in the clear: each side's identity (name, nickname, IPAM
//! cluster) rides in its Noise message, sealed under the password-derived
//! key (and, for the responder's, the ephemeral one too). Without one, the
//! identity is in the hello, as there is nothing to seal it with.
//!
//! The PSK enters before the first message, so the responder learns from
//! the first message and the initiator from the second whether the other
//! knows the password. Fresh ephemeral keys give each connection keys of
//! its own (forward secrecy), and since both hellos are in the prologue,
//! altering a name, version or flag in transit makes the handshake fail.
//! Session keys are derived from Noise's split, one per direction and use.
//!
//! Frames are `[kind u8][body]`; a side that gives up sends a refusal frame
//! saying why, so both ends can report the same reason.

use std::fmt;

use snow::{Builder, HandshakeState};

use crate::{
    frame,
    hello::{Hello, HelloError},
    kdf::derive,
    key::SecretKey,
    password::Password,
    record::{RecordReceiver, RecordSender},
};

const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
const PROLOGUE_LABEL: &[u8] = b"weft control handshake v2";
/// The largest handshake frame: a hello with the largest identity.
pub const MAX_HANDSHAKE_FRAME: usize = 2048;
/// An ephemeral key, the largest identity and an AEAD tag.
const MAX_NOISE_MESSAGE: usize = 32 + crate::hello::MAX_IDENTITY + 16;

const KIND_HELLO: u8 = 1;
const KIND_NOISE: u8 = 2;
const KIND_REFUSE: u8 = 3;
const MAX_REFUSE_TEXT: usize = 512;

/// Who opened the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Why one side refused the other; sent in refusal frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseCode {
    WrongPassword,
    EncryptionRequired,
    NoEncryption,
    VersionMismatch,
    Malformed,
    /// A reason of the router's own (name clash, connecting to itself,
    /// connection limit); the text says which.
    Other,
}

impl RefuseCode {
    fn to_byte(self) -> u8 {
        match self {
            RefuseCode::WrongPassword => 1,
            RefuseCode::EncryptionRequired => 2,
            RefuseCode::NoEncryption => 3,
            RefuseCode::VersionMismatch => 4,
            RefuseCode::Malformed => 5,
            RefuseCode::Other => 6,
        }
    }

    fn from_byte(b: u8) -> RefuseCode {
        match b {
            1 => RefuseCode::WrongPassword,
            2 => RefuseCode::EncryptionRequired,
            3 => RefuseCode::NoEncryption,
            4 => RefuseCode::VersionMismatch,
            5 => RefuseCode::Malformed,
            _ => RefuseCode::Other,
        }
    }
}

/// Why a handshake failed. The first three are the ones operators meet and
/// each says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error(
        "wrong password: the peer's network password differs from ours (or the handshake was tampered with)"
    )]
    WrongPassword,
    #[error(
        "the peer requires encryption: give this router the network password (--password or WEFT_PASSWORD)"
    )]
    PeerRequiresEncryption,
    #[error(
        "the peer sent no encryption but this router has a password: give the peer the same password"
    )]
    PeerSentNoEncryption,
    #[error(
        "no common protocol version: ours {ours:?}, the peer's {theirs:?}; upgrade the older router"
    )]
    VersionMismatch {
        ours: (u16, u16),
        theirs: (u16, u16),
    },
    #[error("malformed handshake: {0}")]
    Malformed(String),
    #[error("the peer refused the connection: {message}")]
    Refused { code: RefuseCode, message: String },
}

impl HandshakeError {
    fn refuse_code(&self) -> Option<RefuseCode> {
        match self {
            HandshakeError::WrongPassword => Some(RefuseCode::WrongPassword),
            HandshakeError::PeerRequiresEncryption => Some(RefuseCode::NoEncryption),
            HandshakeError::PeerSentNoEncryption => Some(RefuseCode::EncryptionRequired),
            HandshakeError::VersionMismatch { .. } => Some(RefuseCode::VersionMismatch),
            HandshakeError::Malformed(_) => Some(RefuseCode::Malformed),
            HandshakeError::Refused { .. } => None,
        }
    }
}

/// A failed handshake: the error, and the refusal frame to send the peer
/// before closing, if it should hear why.
#[derive(Debug)]
pub struct Failure {
    pub error: HandshakeError,
    pub notice: Option<Vec<u8>>,
}

impl From<HandshakeError> for Failure {
    fn from(error: HandshakeError) -> Failure {
        let notice = error
            .refuse_code()
            .map(|code| refusal(code, &error.to_string()));
        Failure { error, notice }
    }
}

/// A frame that refuses the connection, for reasons of the caller's own.
pub fn refusal(code: RefuseCode, message: &str) -> Vec<u8> {
    let mut body = vec![KIND_REFUSE, code.to_byte()];
    let text = message.as_bytes();
    body.extend_from_slice(&text[..text.len().min(MAX_REFUSE_TEXT)]);
    frame::encode(&body)
}

/// Keys for the userspace data path of this connection, one per direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeys {
    pub send: SecretKey,
    pub recv: SecretKey,
}

/// What a finished handshake gives the connection.
pub struct Established {
    pub version: u16,
    pub peer: Hello,
    pub sender: RecordSender,
    pub receiver: RecordReceiver,
    /// `None` on a mesh without a password.
    pub data_keys: Option<DataKeys>,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("version", &self.version)
            .field("peer", &self.peer)
            .field("encrypted", &self.data_keys.is_some())
            .finish()
    }
}

/// What to do after handling a frame.
#[derive(Debug, Default)]
pub struct Step {
    /// Frames to send, in order (length prefixes included).
    pub send: Vec<Vec<u8>>,
    /// Set once the handshake is complete.
    pub established: Option<Established>,
}

enum State {
    AwaitHello,
    AwaitNoise {
        noise: Box<HandshakeState>,
        peer: Hello,
        version: u16,
    },
    Finished,
}

pub struct Handshake {
    role: Role,
    hello: Hello,
    /// With a password, our identity, kept out of the hello for the sealed
    /// Noise payload.
    identity: Vec<u8>,
    /// Our hello frame body, as sent, for the prologue.
    sent: Vec<u8>,
    password: Option<Password>,
    state: State,
    /// The peer's hello once received: even when the handshake fails, it
    /// says who claimed to be calling.
    peer_hello: Option<Hello>,
    #[cfg(test)]
    fixed_ephemeral: Option<[u8; 32]>,
    /// Noise's split and handshake hash, kept for known-answer tests.
    #[cfg(test)]
    transcript: Option<([u8; 32], [u8; 32], Vec<u8>)>,
}

impl Handshake {
    /// Starts a handshake; returns it and the hello frame to send now.
    /// `hello.encryption` is set from whether there is a password.
    pub fn new(role: Role, hello: Hello, password: Option<Password>) -> (Handshake, Vec<u8>) {
        Handshake::start(role, hello, password, rand_nonce())
    }

    /// [`Handshake::new`] with the hello's nonce given (known answers).
    fn start(
        role: Role,
        mut hello: Hello,
        password: Option<Password>,
        nonce: [u8; crate::hello::NONCE_LEN],
    ) -> (Handshake, Vec<u8>) {
        hello.encryption = password.is_some();
        hello.nonce = nonce;
        let identity = if hello.encryption {
            std::mem::take(&mut hello.identity)
        } else {
            Vec::new()
        };
        let mut sent = vec![KIND_HELLO];
        sent.extend_from_slice(&hello.encode());
        let frame = frame::encode(&sent);
        let handshake = Handshake {
            role,
            hello,
            identity,
            sent,
            password,
            state: State::AwaitHello,
            peer_hello: None,
            #[cfg(test)]
            fixed_ephemeral: None,
            #[cfg(test)]
            transcript: None,
        };
        (handshake, frame)
    }

    /// The hello the peer sent, unauthenticated: who it claims to be.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
    }

    /// Handles one frame from the peer (a payload from the frame decoder).
    pub fn handle(&mut self, frame: &[u8]) -> Result<Step, Failure> {
        let Some((&kind, body)) = frame.split_first() else {
            return Err(HandshakeError::Malformed("empty frame".into()).into());
        };
        if kind == KIND_REFUSE {
            return Err(Failure {
                error: refused(body),
                notice: None,
            });
        }
        match (std::mem::replace(&mut self.state, State::Finished), kind) {
            (State::AwaitHello, KIND_HELLO) => self.on_hello(frame),
            (
                State::AwaitNoise {
                    noise,
                    peer,
                    version,
                },
                KIND_NOISE,
            ) => self.on_noise(noise, peer, version, body),
            (State::Finished, _) => {
                Err(HandshakeError::Malformed("frame after the handshake ended".into()).into())
            }
            (_, other) => {
                Err(HandshakeError::Malformed(format!("unexpected frame kind {other}")).into())
            }
        }
    }

    fn on_hello(&mut self, frame: &[u8]) -> Result<Step, Failure> {
        let ours = (self.hello.min_version, self.hello.max_version);
        let peer = Hello::decode(&frame[1..]).map_err(|e| {
            // A hello of another version may be laid out differently
            // after its versions: if we share none, say that.
            let theirs = Hello::peek_versions(&frame[1..]);
            match (e, theirs) {
                (e @ HelloError::NotWeft, _) => HandshakeError::Malformed(e.to_string()),
                (_, Some(theirs)) if theirs.1 < ours.0 || theirs.0 > ours.1 => {
                    HandshakeError::VersionMismatch { ours, theirs }
                }
                (other, _) => HandshakeError::Malformed(format!("bad hello: {other}")),
            }
        })?;
        self.peer_hello = Some(peer.clone());
        let version = self
            .hello
            .negotiate(&peer)
            .ok_or(HandshakeError::VersionMismatch {
                ours,
                theirs: (peer.min_version, peer.max_version),
            })?;
        let Some(password) = &self.password else {
            if peer.encryption {
                return Err(HandshakeError::PeerRequiresEncryption.into());
            }
            return Ok(Step {
                send: Vec::new(),
                established: Some(Established {
                    version,
                    peer,
                    sender: RecordSender::plain(),
                    receiver: RecordReceiver::plain(),
                    data_keys: None,
                }),
            });
        };
        if !peer.encryption {
            return Err(HandshakeError::PeerSentNoEncryption.into());
        }
        let mut prologue = PROLOGUE_LABEL.to_vec();
        let (first, second) = match self.role {
            Role::Initiator => (&self.sent[..], frame),
            Role::Responder => (frame, &self.sent[..]),
        };
        for part in [first, second] {
            prologue.extend_from_slice(&(part.len() as u16).to_be_bytes());
            prologue.extend_from_slice(part);
        }
        let params = NOISE_PARAMS.parse().expect("valid noise parameters");
        let builder = Builder::new(params)
            .psk(0, password.psk())
            .and_then(|b| b.prologue(&prologue))
            .expect("psk and prologue are accepted");
        #[cfg(test)]
        let builder = match &self.fixed_ephemeral {
            Some(key) => builder.fixed_ephemeral_key_for_testing_only(key),
            None => builder,
        };
        let mut noise = match self.role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map(Box::new)
        .expect("the noise state builds with its psk");
        let mut step = Step::default();
        if self.role == Role::Initiator {
            step.send.push(noise_frame(&mut noise, &self.identity)?);
        }
        self.state = State::AwaitNoise {
            noise,
            peer,
            version,
        };
        Ok(step)
    }

    fn on_noise(
        &mut self,
        mut noise: Box<HandshakeState>,
        mut peer: Hello,
        version: u16,
        message: &[u8],
    ) -> Result<Step, Failure> {
        let mut payload = [0u8; MAX_NOISE_MESSAGE];
        if message.len() > MAX_NOISE_MESSAGE {
            return Err(HandshakeError::Malformed("oversized handshake message".into()).into());
        }
        let len = noise
            .read_message(message, &mut payload)
            .map_err(|_| HandshakeError::WrongPassword)?;
        if len > crate::hello::MAX_IDENTITY {
            return Err(HandshakeError::Malformed("oversized identity".into()).into());
        }
        // The peer's identity, authenticated now.
        peer.identity = payload[..len].to_vec();
        self.peer_hello = Some(peer.clone());
        let mut step = Step::default();
        if self.role == Role::Responder {
            step.send.push(noise_frame(&mut noise, &self.identity)?);
        }
        if !noise.is_handshake_finished() {
            return Err(HandshakeError::Malformed("handshake did not finish".into()).into());
        }
        let (i_to_r, r_to_i) = noise.dangerously_get_raw_split();
        #[cfg(test)]
        {
            self.transcript = Some((i_to_r, r_to_i, noise.get_handshake_hash().to_vec()));
        }
        let (out, inn) = match self.role {
            Role::Initiator => (SecretKey::from_bytes(i_to_r), SecretKey::from_bytes(r_to_i)),
            Role::Responder => (SecretKey::from_bytes(r_to_i), SecretKey::from_bytes(i_to_r)),
        };
        step.established = Some(Established {
            version,
            peer,
            sender: RecordSender::sealed(&derive(&out, "control records")),
            receiver: RecordReceiver::sealed(&derive(&inn, "control records")),
            data_keys: Some(DataKeys {
                send: derive(&out, "datagrams"),
                recv: derive(&inn, "datagrams"),
            }),
        });
        Ok(step)
    }
}

fn rand_nonce() -> [u8; crate::hello::NONCE_LEN] {
    let mut nonce = [0u8; crate::hello::NONCE_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .expect("the system's random source works");
    nonce
}

fn noise_frame(noise: &mut HandshakeState, payload: &[u8]) -> Result<Vec<u8>, Failure> {
    let mut message = [0u8; MAX_NOISE_MESSAGE];
    let len = noise
        .write_message(payload, &mut message)
        .map_err(|e| HandshakeError::Malformed(format!("noise: {e}")))?;
    let mut body = vec![KIND_NOISE];
    body.extend_from_slice(&message[..len]);
    Ok(frame::encode(&body))
}

fn refused(body: &[u8]) -> HandshakeError {
    let Some((&code, text)) = body.split_first() else {
        return HandshakeError::Malformed("empty refusal".into());
    };
    let code = RefuseCode::from_byte(code);
    let message = String::from_utf8_lossy(&text[..text.len().min(MAX_REFUSE_TEXT)]).into_owned();
    match code {
        RefuseCode::WrongPassword => HandshakeError::WrongPassword,
        _ => HandshakeError::Refused { code, message },
    }
}

#[cfg(test)]
mod tests;
