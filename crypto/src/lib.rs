//! Cryptography for weft's control connections and userspace data path.
//!
//! This crate owns the authenticated key exchange between two routers
//! ([`handshake`]), the record layer of the TCP control stream ([`record`],
//! over [`frame`]) and the sealing of data packets sent over UDP
//! ([`datagram`]), including replay protection ([`replay`]) and rekeying.
//!
//! It must stay pure: no sockets, no threads and no clock (time comes in as
//! an argument), so every property can be tested in memory and fuzzed.
//! Secrets live in [`SecretKey`] and are wiped when dropped.

#[cfg(target_arch = "x86_64")]
mod avx512;
pub mod datagram;
#[cfg(test)]
mod formats;
pub mod frame;
pub mod handshake;
pub mod hello;
mod kdf;
mod key;
mod password;
pub mod record;
pub mod replay;

pub use datagram::{OpenError, Opener, RekeyPolicy, SealError, Sealer};
pub use frame::{FrameDecoder, FrameError};
pub use handshake::{
    DataKeys, Established, Failure, Handshake, HandshakeError, RefuseCode, Role, Step, refusal,
};
pub use hello::{Hello, HelloError};
pub use kdf::hkdf;
pub use key::{KEY_LEN, SecretKey, TAG_LEN};
pub use password::Password;
pub use record::{RecordError, RecordReceiver, RecordSender};

/// Which ChaCha20-Poly1305 implementation this CPU gets: "avx512" (ours,
/// with AVX-512 F/BW/VL and IFMA) or "ring".
pub fn aead_implementation() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        return "avx512";
    }
    "ring"
}
