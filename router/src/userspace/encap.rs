//! The userspace data path's wire format: what goes into a UDP datagram
//! between two routers.
//!
//! ```text
//!  0        1        2                4                         8
//! +--------+--------+----------------+-------------------------+---------
//! | ver|kind| flags | reserved (0)   | receiver session (u32)  | body ...
//! +--------+--------+----------------+-------------------------+---------
//! ```
//!
//! The first 8 bytes travel in the clear so the receiver can find the
//! session; with encryption the body is a sealed datagram (see
//! `weft_crypto::datagram`) and those 8 bytes are its associated data, so
//! they cannot be altered either. Bodies by kind:
//!
//! | kind        | body                                                  |
//! |-------------|-------------------------------------------------------|
//! | Frame       | an Ethernet frame from the sender's own containers    |
//! | Forwarded   | origin name (6), destination name (6), hops (1), frame |
//! | Broadcast   | origin name (6), hops (1), frame                      |
//! | Heartbeat   | sequence (u32), padding to the probed size            |
//! | Ack         | sequence (u32), size received (u16)                   |

use crate::identity::PeerName;

pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
const FLAG_SEALED: u8 = 1;
/// Ethernet header of the inner frame.
pub const ETHERNET_LEN: usize = 14;
/// Outer IPv4 and UDP headers.
pub const OUTER_IP_UDP_LEN: usize = 20 + 8;
/// The most any frame carries before its Ethernet header: a forwarded
/// frame's names and hop count.
pub const MAX_ROUTING_LEN: usize = 13;
/// Forwarded and broadcast frames are dropped after this many hops.
pub const MAX_HOPS: u8 = 16;

/// What vxlan adds to an overlay frame: outer IPv4, UDP and vxlan headers
/// and the inner Ethernet header.
pub const VXLAN_OVERHEAD: u32 = 20 + 8 + 8 + ETHERNET_LEN as u32;

/// Bytes between the underlay MTU and the overlay MTU: outer headers, our
/// header, the routing fields of a relayed frame, the inner Ethernet
/// header, and the crypto overhead when sealed.
pub const fn overhead(sealed: bool) -> u32 {
    let crypto = if sealed {
        weft_crypto::datagram::OVERHEAD
    } else {
        0
    };
    (OUTER_IP_UDP_LEN + HEADER_LEN + MAX_ROUTING_LEN + ETHERNET_LEN + crypto) as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Frame,
    Forwarded,
    Broadcast,
    Heartbeat,
    Ack,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Frame => 1,
            Kind::Forwarded => 2,
            Kind::Broadcast => 3,
            Kind::Heartbeat => 4,
            Kind::Ack => 5,
        }
    }

    fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::Frame,
            2 => Kind::Forwarded,
            3 => Kind::Broadcast,
            4 => Kind::Heartbeat,
            5 => Kind::Ack,
            _ => return None,
        })
    }
}

/// The cleartext header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub sealed: bool,
    pub session: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncapError {
    #[error("datagram too short")]
    Short,
    #[error("unknown version or kind {0:#04x}")]
    Unknown(u8),
}

impl Header {
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = (VERSION << 4) | self.kind.code();
        h[1] = if self.sealed { FLAG_SEALED } else { 0 };
        h[4..8].copy_from_slice(&self.session.to_be_bytes());
        h
    }

    pub fn parse(datagram: &[u8]) -> Result<Header, EncapError> {
        if datagram.len() < HEADER_LEN {
            return Err(EncapError::Short);
        }
        let kind = (datagram[0] >> 4 == VERSION)
            .then(|| Kind::from_code(datagram[0] & 0x0f))
            .flatten()
            .ok_or(EncapError::Unknown(datagram[0]))?;
        Ok(Header {
            kind,
            sealed: datagram[1] & FLAG_SEALED != 0,
            session: u32::from_be_bytes(datagram[4..8].try_into().expect("4 bytes")),
        })
    }
}

/// Who a relayed or broadcast frame is from (and for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routing {
    pub origin: PeerName,
    /// `None` for a broadcast.
    pub destination: Option<PeerName>,
    pub hops: u8,
}

impl Routing {
    pub fn len(kind: Kind) -> usize {
        match kind {
            Kind::Forwarded => 13,
            Kind::Broadcast => 7,
            _ => 0,
        }
    }

    pub fn emit(&self, out: &mut [u8]) -> usize {
        out[..6].copy_from_slice(&self.origin.octets());
        match self.destination {
            Some(d) => {
                out[6..12].copy_from_slice(&d.octets());
                out[12] = self.hops;
                13
            }
            None => {
                out[6] = self.hops;
                7
            }
        }
    }

    pub fn parse(kind: Kind, body: &[u8]) -> Result<Routing, EncapError> {
        let name = |b: &[u8]| {
            let mut n = [0u8; 8];
            n[2..].copy_from_slice(&b[..6]);
            PeerName::from_u64(u64::from_be_bytes(n))
        };
        match kind {
            Kind::Forwarded if body.len() >= 13 => Ok(Routing {
                origin: name(&body[..6]),
                destination: Some(name(&body[6..12])),
                hops: body[12],
            }),
            Kind::Broadcast if body.len() >= 7 => Ok(Routing {
                origin: name(&body[..6]),
                destination: None,
                hops: body[6],
            }),
            _ => Err(EncapError::Short),
        }
    }
}

/// A heartbeat's body: its sequence number, padded to `len` bytes (at
/// least 4) so that the datagram probes a path MTU.
pub fn heartbeat_body(seq: u32, len: usize) -> Vec<u8> {
    let mut body = vec![0u8; len.max(4)];
    body[..4].copy_from_slice(&seq.to_be_bytes());
    body
}

/// The sequence number of a heartbeat's body.
pub fn parse_heartbeat(body: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(body.get(..4)?.try_into().ok()?))
}

/// An ack's body: the heartbeat's sequence number and the IP packet size
/// it arrived at.
pub fn ack_body(seq: u32, received: u16) -> [u8; 6] {
    let mut ack = [0u8; 6];
    ack[..4].copy_from_slice(&seq.to_be_bytes());
    ack[4..].copy_from_slice(&received.to_be_bytes());
    ack
}

/// An ack's sequence number and size.
pub fn parse_ack(body: &[u8]) -> Option<(u32, u16)> {
    let seq = parse_heartbeat(body)?;
    let size = body.get(4..6)?;
    Some((seq, u16::from_be_bytes([size[0], size[1]])))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn headers_round_trip() {
        for kind in [
            Kind::Frame,
            Kind::Forwarded,
            Kind::Broadcast,
            Kind::Heartbeat,
            Kind::Ack,
        ] {
            let h = Header {
                kind,
                sealed: true,
                session: 0xdead_beef,
            };
            assert_eq!(Header::parse(&h.emit()), Ok(h));
        }
        assert_eq!(Header::parse(&[0x11, 0, 0]), Err(EncapError::Short));
        assert_eq!(
            Header::parse(&[0x21, 0, 0, 0, 0, 0, 0, 0]),
            Err(EncapError::Unknown(0x21))
        );
    }

    #[test]
    fn routing_round_trips() {
        let r = Routing {
            origin: PeerName::from_u64(0x0200_0000_0001),
            destination: Some(PeerName::from_u64(0x0200_0000_0002)),
            hops: 3,
        };
        let mut buf = [0u8; 13];
        assert_eq!(r.emit(&mut buf), 13);
        assert_eq!(Routing::parse(Kind::Forwarded, &buf), Ok(r));
        let b = Routing {
            destination: None,
            ..r
        };
        assert_eq!(b.emit(&mut buf), 7);
        assert_eq!(Routing::parse(Kind::Broadcast, &buf[..7]), Ok(b));
    }

    #[test]
    fn overheads_leave_standard_overlay_mtus() {
        assert_eq!(1500 - overhead(false), 1437);
        assert_eq!(1500 - overhead(true), 1409);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(h) = Header::parse(&bytes) {
                let _ = Routing::parse(h.kind, &bytes[HEADER_LEN..]);
            }
        }
    }
}
