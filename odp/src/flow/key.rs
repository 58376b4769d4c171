//! Flow keys and masks (`OVS_KEY_ATTR_*`): what a flow matches on, and
//! what the kernel reports it extracted from a packet in an upcall.
//!
//! A mask is a list of the same attributes whose values are bit masks: all
//! ones matches the field exactly, zero ignores it, and a field absent from
//! the mask is ignored.

use std::net::Ipv4Addr;

use crate::{codec::Fixed, nla_enum};

nla_enum! {
    /// `enum ovs_key_attr`.
    pub enum KeyAttr {
        /// The inner fields of an 802.1Q frame.
        Encap(Vec<KeyAttr>) = 1 as nested,
        Priority(u32) = 2 as ne,
        /// The datapath port the packet came in on.
        InPort(u32) = 3 as ne,
        Ethernet(EthernetKey) = 4 as fixed,
        Vlan(u16) = 5 as be,
        EtherType(u16) = 6 as be,
        Ipv4(Ipv4Key) = 7 as fixed,
        Tcp(PortsKey) = 9 as fixed,
        Udp(PortsKey) = 10 as fixed,
        Icmp(IcmpKey) = 11 as fixed,
        Arp(ArpKey) = 13 as fixed,
        SkbMark(u32) = 15 as ne,
        /// The tunnel a packet arrived through (in keys), or the tunnel to
        /// send it into (in a `set` action).
        Tunnel(Vec<TunnelAttr>) = 16 as nested,
        Sctp(PortsKey) = 17 as fixed,
        TcpFlags(u16) = 18 as be,
        DpHash(u32) = 19 as ne,
        RecircId(u32) = 20 as ne,
        CtState(u32) = 22 as ne,
        CtZone(u16) = 23 as ne,
        CtMark(u32) = 24 as ne,
        CtLabels(Vec<u8>) = 25 as bytes,
    }
}

nla_enum! {
    /// `enum ovs_tunnel_key_attr`. Note that the tunnel id is type 0.
    pub enum TunnelAttr {
        /// The tunnel id (the vxlan VNI sits in its low 24 bits).
        Id(u64) = 0 as be,
        Ipv4Src(Ipv4Addr) = 1 as be,
        Ipv4Dst(Ipv4Addr) = 2 as be,
        Tos(u8) = 3 as ne,
        Ttl(u8) = 4 as ne,
        TpSrc(u16) = 9 as be,
        TpDst(u16) = 10 as be,
        VxlanOpts(Vec<u8>) = 11 as bytes,
        @flags {
            /// Set DF on the outer IP header.
            DontFragment = 5,
            /// Compute the outer UDP checksum.
            Csum = 6,
            Oam = 7,
        }
    }
}

/// `struct ovs_key_ethernet`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EthernetKey {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// `struct ovs_key_ipv4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Key {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub tos: u8,
    pub ttl: u8,
    /// `OVS_FRAG_TYPE_*`: 0 none, 1 first fragment, 2 later fragment.
    pub frag: u8,
}

/// `struct ovs_key_arp`; the kernel's struct has two bytes of padding at
/// the end, written as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpKey {
    pub sip: Ipv4Addr,
    pub tip: Ipv4Addr,
    pub op: u16,
    pub sha: [u8; 6],
    pub tha: [u8; 6],
}

/// `struct ovs_key_tcp`, `ovs_key_udp` and `ovs_key_sctp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortsKey {
    pub src: u16,
    pub dst: u16,
}

/// `struct ovs_key_icmp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpKey {
    pub kind: u8,
    pub code: u8,
}

fn mac(bytes: &[u8]) -> [u8; 6] {
    bytes.try_into().expect("length checked")
}

fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

impl Fixed for EthernetKey {
    const LEN: usize = 12;
    fn read(b: &[u8]) -> EthernetKey {
        EthernetKey {
            src: mac(&b[0..6]),
            dst: mac(&b[6..12]),
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.src);
        buf.extend_from_slice(&self.dst);
    }
}

impl Fixed for Ipv4Key {
    const LEN: usize = 12;
    fn read(b: &[u8]) -> Ipv4Key {
        Ipv4Key {
            src: ipv4(&b[0..4]),
            dst: ipv4(&b[4..8]),
            proto: b[8],
            tos: b[9],
            ttl: b[10],
            frag: b[11],
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.src.octets());
        buf.extend_from_slice(&self.dst.octets());
        buf.extend_from_slice(&[self.proto, self.tos, self.ttl, self.frag]);
    }
}

impl Fixed for ArpKey {
    const LEN: usize = 24;
    fn read(b: &[u8]) -> ArpKey {
        ArpKey {
            sip: ipv4(&b[0..4]),
            tip: ipv4(&b[4..8]),
            op: u16::from_be_bytes([b[8], b[9]]),
            sha: mac(&b[10..16]),
            tha: mac(&b[16..22]),
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.sip.octets());
        buf.extend_from_slice(&self.tip.octets());
        buf.extend_from_slice(&self.op.to_be_bytes());
        buf.extend_from_slice(&self.sha);
        buf.extend_from_slice(&self.tha);
        buf.extend_from_slice(&[0, 0]);
    }
}

impl Fixed for PortsKey {
    const LEN: usize = 4;
    fn read(b: &[u8]) -> PortsKey {
        PortsKey {
            src: u16::from_be_bytes([b[0], b[1]]),
            dst: u16::from_be_bytes([b[2], b[3]]),
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.src.to_be_bytes());
        buf.extend_from_slice(&self.dst.to_be_bytes());
    }
}

impl Fixed for IcmpKey {
    const LEN: usize = 2;
    fn read(b: &[u8]) -> IcmpKey {
        IcmpKey {
            kind: b[0],
            code: b[1],
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.kind, self.code]);
    }
}

/// Lookups on a key (or mask) as a list of attributes.
pub trait KeyFields {
    fn in_port(&self) -> Option<u32>;
    fn ethernet(&self) -> Option<EthernetKey>;
    fn ether_type(&self) -> Option<u16>;
    fn tunnel(&self) -> Option<&[TunnelAttr]>;
    /// The tunnel id, when the key has a tunnel with one.
    fn tunnel_id(&self) -> Option<u64> {
        self.tunnel()?.iter().find_map(|t| match t {
            TunnelAttr::Id(id) => Some(*id),
            _ => None,
        })
    }
}

impl KeyFields for [KeyAttr] {
    fn in_port(&self) -> Option<u32> {
        self.iter().find_map(|a| match a {
            KeyAttr::InPort(p) => Some(*p),
            _ => None,
        })
    }
    fn ethernet(&self) -> Option<EthernetKey> {
        self.iter().find_map(|a| match a {
            KeyAttr::Ethernet(e) => Some(*e),
            _ => None,
        })
    }
    fn ether_type(&self) -> Option<u16> {
        self.iter().find_map(|a| match a {
            KeyAttr::EtherType(t) => Some(*t),
            _ => None,
        })
    }
    fn tunnel(&self) -> Option<&[TunnelAttr]> {
        self.iter().find_map(|a| match a {
            KeyAttr::Tunnel(t) => Some(t.as_slice()),
            _ => None,
        })
    }
}

/// The tunnel to send a packet into, as a `set(tunnel(...))` action
/// carries it; see [`crate::flow::Action::set_tunnel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelKey {
    pub id: u64,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub tos: u8,
    pub ttl: u8,
    pub dont_fragment: bool,
    pub csum: bool,
}

impl TunnelKey {
    pub fn attrs(&self) -> Vec<TunnelAttr> {
        let mut attrs = vec![
            TunnelAttr::Id(self.id),
            TunnelAttr::Ipv4Src(self.src),
            TunnelAttr::Ipv4Dst(self.dst),
            TunnelAttr::Tos(self.tos),
            TunnelAttr::Ttl(self.ttl),
        ];
        if self.dont_fragment {
            attrs.push(TunnelAttr::DontFragment);
        }
        if self.csum {
            attrs.push(TunnelAttr::Csum);
        }
        attrs
    }
}
