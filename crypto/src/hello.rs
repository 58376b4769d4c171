//! The first frame each side sends: what it is, which protocol versions it
//! speaks, whether it encrypts, and who it says it is.
//!
//! ```text
//! +--------+---------+---------+-------+----------+------------+----------------+
//! | "weft" | min u16 | max u16 | flags | nonce 16 | id len u16 | identity bytes |
//! +--------+---------+---------+-------+----------+------------+----------------+
//! ```
//!
//! The nonce is fresh for every connection; both hellos are the Noise
//! prologue, so a handshake message recorded on one connection is worth
//! nothing on another.
//!
//! Hellos travel in the clear, so that two routers can tell "wrong
//! password" from "no password" from "not a weft router"; both are then
//! bound into the encrypted handshake, so none of it can be altered
//! unnoticed. With a password the identity is left out (length 0): it
//! travels sealed in the handshake instead.

pub const MAGIC: &[u8; 4] = b"weft";
/// Identities are the router's name, nickname and incarnation; this is
/// ample and keeps a hostile hello small.
pub const MAX_IDENTITY: usize = 1024;
const FLAG_ENCRYPTION: u8 = 1;
pub const NONCE_LEN: usize = 16;
const FIXED_LEN: usize = 4 + 2 + 2 + 1 + NONCE_LEN + 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// The sender has a network password and insists on encryption.
    pub encryption: bool,
    /// Fresh per connection (the handshake sets it).
    pub nonce: [u8; NONCE_LEN],
    /// Opaque to this crate: the router's own description of itself.
    pub identity: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not a weft router (the connection did not start with \"weft\")")]
    NotWeft,
    #[error("hello truncated")]
    Truncated,
    #[error("identity of {0} bytes exceeds {MAX_IDENTITY}")]
    IdentityTooLong(usize),
    #[error("versions {0}..={1} are an empty range")]
    BadVersions(u16, u16),
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + self.identity.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.min_version.to_be_bytes());
        out.extend_from_slice(&self.max_version.to_be_bytes());
        out.push(if self.encryption { FLAG_ENCRYPTION } else { 0 });
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&(self.identity.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.identity);
        out
    }

    /// The versions a hello of any protocol version says it speaks: the
    /// magic and the two versions lead every hello, so that a router can
    /// tell "too old to talk to" from "garbage" whatever came after them.
    pub fn peek_versions(bytes: &[u8]) -> Option<(u16, u16)> {
        let versions = bytes.strip_prefix(MAGIC)?.get(..4)?;
        Some((
            u16::from_be_bytes([versions[0], versions[1]]),
            u16::from_be_bytes([versions[2], versions[3]]),
        ))
    }

    pub fn decode(bytes: &[u8]) -> Result<Hello, HelloError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(HelloError::NotWeft);
        }
        if bytes.len() < FIXED_LEN {
            return Err(HelloError::Truncated);
        }
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let (min_version, max_version) = (u16_at(4), u16_at(6));
        if min_version > max_version {
            return Err(HelloError::BadVersions(min_version, max_version));
        }
        let len = usize::from(u16_at(9 + NONCE_LEN));
        if len > MAX_IDENTITY {
            return Err(HelloError::IdentityTooLong(len));
        }
        if bytes.len() != FIXED_LEN + len {
            return Err(HelloError::Truncated);
        }
        Ok(Hello {
            min_version,
            max_version,
            encryption: bytes[8] & FLAG_ENCRYPTION != 0,
            nonce: bytes[9..9 + NONCE_LEN]
                .try_into()
                .expect("a nonce's length"),
            identity: bytes[FIXED_LEN..].to_vec(),
        })
    }

    /// The highest version both sides speak, if any.
    pub fn negotiate(&self, theirs: &Hello) -> Option<u16> {
        let version = self.max_version.min(theirs.max_version);
        (version >= self.min_version.max(theirs.min_version)).then_some(version)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn hello(min: u16, max: u16) -> Hello {
        Hello {
            min_version: min,
            max_version: max,
            encryption: true,
            nonce: [7; NONCE_LEN],
            identity: b"router-1".to_vec(),
        }
    }

    /// The bytes on the wire, so a change to the layout is a decision.
    #[test]
    fn the_layout_is_pinned() {
        let mut h = hello(2, 3);
        h.nonce = *b"0123456789abcdef";
        assert_eq!(
            h.encode(),
            b"weft\x00\x02\x00\x03\x010123456789abcdef\x00\x08router-1".to_vec()
        );
    }

    #[test]
    fn versions_meet_at_the_highest_common_one() {
        assert_eq!(hello(1, 3).negotiate(&hello(2, 5)), Some(3));
        assert_eq!(hello(1, 1).negotiate(&hello(2, 2)), None);
    }

    #[test]
    fn garbage_is_not_weft() {
        assert_eq!(Hello::decode(b"GET / HTTP/1.1"), Err(HelloError::NotWeft));
        let mut bytes = hello(1, 1).encode();
        bytes.pop();
        assert_eq!(Hello::decode(&bytes), Err(HelloError::Truncated));
    }

    proptest! {
        #[test]
        fn round_trips(min in 0u16..10, span in 0u16..10, encryption: bool, nonce: [u8; NONCE_LEN], identity in prop::collection::vec(any::<u8>(), 0..MAX_IDENTITY)) {
            let h = Hello { min_version: min, max_version: min + span, encryption, nonce, identity };
            prop_assert_eq!(Hello::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Hello::decode(&bytes);
        }
    }
}
