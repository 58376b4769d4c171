//! Peers as IPAM knows them: the router's 48-bit peer names, without the
//! router's types.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Peer(pub u64);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `0a:0b:0c:0d:0e:0f`, as printed.
    fn from_str(s: &str) -> Result<Peer, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a peer name like 0a:0b:0c:0d:0e:0f"));
        }
        let mut n = 0u64;
        for p in parts {
            let b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a peer name like 0a:0b:0c:0d:0e:0f"))?;
            n = n << 8 | u64::from(b);
        }
        Ok(Peer(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_print_like_the_router_names_them() {
        assert_eq!(Peer(0x0a0b_0c0d_0e0f).to_string(), "0a:0b:0c:0d:0e:0f");
        assert_eq!("0a:0b:0c:0d:0e:0f".parse(), Ok(Peer(0x0a0b_0c0d_0e0f)));
        assert!("0a:0b".parse::<Peer>().is_err());
    }
}
