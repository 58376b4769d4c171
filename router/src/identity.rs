//! Who a router is: a stable 48-bit name, a nickname for people, and a uid
//! that is new at every start so that peers notice restarts.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A router's stable name, written like a MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerName(u64);

const NAME_MASK: u64 = (1 << 48) - 1;

impl PeerName {
    pub const fn from_u64(n: u64) -> PeerName {
        PeerName(n & NAME_MASK)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// A name derived from `seed` (the machine id and data directory): a
    /// locally administered unicast MAC, so it can never be a vendor's.
    pub fn derive(seed: &[u8]) -> PeerName {
        let digest = ring::digest::digest(&ring::digest::SHA256, seed);
        let mut bytes = [0u8; 8];
        bytes[2..].copy_from_slice(&digest.as_ref()[..6]);
        bytes[2] = (bytes[2] | 0x02) & !0x01;
        PeerName(u64::from_be_bytes(bytes))
    }

    pub fn octets(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.octets();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerName {
    type Err = String;

    fn from_str(s: &str) -> Result<PeerName, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || format!("{s:?} is not a peer name (six hex bytes, like 02:00:00:00:00:01)");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut n = 0u64;
        for part in parts {
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            n = (n << 8) | u64::from(u8::from_str_radix(part, 16).map_err(|_| bad())?);
        }
        Ok(PeerName(n))
    }
}

/// What a router tells a peer about itself in the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub name: PeerName,
    pub nickname: String,
    /// Random at every start: the same name with another uid is the same
    /// router restarted (or, if both are alive, a name clash).
    pub uid: u64,
    /// The TCP port it accepts control connections on, so that others can
    /// connect to it at the address they see it from.
    pub listen_port: u16,
    /// Per gossip channel, what decides whether the peer may join us
    /// (see [`crate::mesh::Channel::admit`]).
    pub admission: Vec<(String, Vec<u8>)>,
}

/// A nickname longer than this is cut: it is for display only.
pub const MAX_NICKNAME: usize = 64;

impl PeerIdentity {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("identities serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerIdentity, String> {
        let id: PeerIdentity =
            postcard::from_bytes(bytes).map_err(|e| format!("bad peer identity: {e}"))?;
        if id.nickname.len() > MAX_NICKNAME {
            return Err(format!("nickname of {} bytes", id.nickname.len()));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_print_and_parse_like_macs() {
        let name: PeerName = "02:00:0a:ff:00:01".parse().unwrap();
        assert_eq!(name.to_string(), "02:00:0a:ff:00:01");
        assert!("02:00:0a:ff:00".parse::<PeerName>().is_err());
        assert!("02:00:0a:ff:00:1g".parse::<PeerName>().is_err());
        assert!("002:00:0a:ff:00:01".parse::<PeerName>().is_err());
    }

    #[test]
    fn derived_names_are_stable_local_unicast_macs() {
        let a = PeerName::derive(b"machine-1/var/lib/weft");
        assert_eq!(a, PeerName::derive(b"machine-1/var/lib/weft"));
        assert_ne!(a, PeerName::derive(b"machine-1/var/lib/weft-2"));
        let first = a.octets()[0];
        assert_eq!(first & 0x03, 0x02, "locally administered, not multicast");
    }

    #[test]
    fn identities_round_trip() {
        let id = PeerIdentity {
            name: PeerName::from_u64(0x0200_0000_0001),
            nickname: "host-1".into(),
            uid: 42,
            listen_port: 6783,
            admission: Vec::new(),
        };
        assert_eq!(PeerIdentity::decode(&id.encode()), Ok(id));
        assert!(PeerIdentity::decode(&[0xff; 3]).is_err());
    }
}
