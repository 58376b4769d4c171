//! Which flow a packet belongs to, seen from the container: the remote
//! end's address, the protocol and the remote end's port. Into the
//! container (ingress) that is the source; out of it (egress), the
//! destination, so one rule covers both directions of a conversation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Into the container.
    Ingress,
    /// Out of the container.
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub remote: IpAddr,
    pub protocol: u8,
    /// For TCP, UDP and SCTP, in the first fragment.
    pub port: Option<u16>,
}

const ETH_HEADER: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;

impl FlowKey {
    /// The flow of an Ethernet frame (one VLAN tag allowed); `None` for
    /// anything but IPv4 and IPv6, or a frame too short to say.
    pub fn of_frame(frame: &[u8], dir: Direction) -> Option<FlowKey> {
        let mut at = ETH_HEADER;
        let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        if ethertype == ETHERTYPE_VLAN {
            ethertype = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
            at += 4;
        }
        match ethertype {
            ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => FlowKey::of_ip(frame.get(at..)?, dir),
            _ => None,
        }
    }

    /// The flow of an IP packet (version read from its first byte).
    pub fn of_ip(packet: &[u8], dir: Direction) -> Option<FlowKey> {
        match packet.first()? >> 4 {
            4 => of_ipv4(packet, dir),
            6 => of_ipv6(packet, dir),
            _ => None,
        }
    }
}

fn of_ipv4(p: &[u8], dir: Direction) -> Option<FlowKey> {
    let header = usize::from(p.first()? & 0x0f) * 4;
    if header < 20 || p.len() < header {
        return None;
    }
    let protocol = p[9];
    let at = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
    let remote = match dir {
        Direction::Ingress => at(12),
        Direction::Egress => at(16),
    };
    // Only the first fragment carries the ports.
    let first_fragment = u16::from_be_bytes([p[6], p[7]]) & 0x1fff == 0;
    let port = first_fragment
        .then(|| port(&p[header..], protocol, dir))
        .flatten();
    Some(FlowKey {
        remote: IpAddr::V4(remote),
        protocol,
        port,
    })
}

fn of_ipv6(p: &[u8], dir: Direction) -> Option<FlowKey> {
    if p.len() < 40 {
        return None;
    }
    let at = |i: usize| {
        let bytes: [u8; 16] = p[i..i + 16].try_into().expect("16 bytes");
        Ipv6Addr::from(bytes)
    };
    let remote = match dir {
        Direction::Ingress => at(8),
        Direction::Egress => at(24),
    };
    // Extension headers are not followed: their protocol is what they
    // are, with no port, which only a rule naming it matches.
    let protocol = p[6];
    Some(FlowKey {
        remote: IpAddr::V6(remote),
        protocol,
        port: port(&p[40..], protocol, dir),
    })
}

/// The remote end's port of a TCP, UDP or SCTP header (all start with
/// source port, destination port).
fn port(l4: &[u8], protocol: u8, dir: Direction) -> Option<u16> {
    if !crate::rules::has_ports(protocol) {
        return None;
    }
    let i = match dir {
        Direction::Ingress => 0,
        Direction::Egress => 2,
    };
    Some(u16::from_be_bytes([*l4.get(i)?, *l4.get(i + 1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(protocol: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
        p.extend(src);
        p.extend(dst);
        p.extend(l4);
        p
    }

    #[test]
    fn the_remote_end_is_the_source_coming_in_and_the_destination_going_out() {
        // UDP 10.32.0.1:5000 -> 10.32.0.2:53
        let p = ipv4(
            17,
            [10, 32, 0, 1],
            [10, 32, 0, 2],
            &[0x13, 0x88, 0, 53, 0, 8, 0, 0],
        );
        let inn = FlowKey::of_ip(&p, Direction::Ingress).unwrap();
        assert_eq!(inn.remote, IpAddr::from([10, 32, 0, 1]));
        assert_eq!((inn.protocol, inn.port), (17, Some(5000)));
        let out = FlowKey::of_ip(&p, Direction::Egress).unwrap();
        assert_eq!(out.remote, IpAddr::from([10, 32, 0, 2]));
        assert_eq!(out.port, Some(53));
        // In a frame, and behind a VLAN tag.
        let mut frame = vec![0; 12];
        frame.extend([0x08, 0x00]);
        frame.extend(&p);
        assert_eq!(FlowKey::of_frame(&frame, Direction::Egress), Some(out));
        let mut tagged = vec![0; 12];
        tagged.extend([0x81, 0x00, 0, 5, 0x08, 0x00]);
        tagged.extend(&p);
        assert_eq!(FlowKey::of_frame(&tagged, Direction::Egress), Some(out));
        // ARP is no flow.
        frame[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(FlowKey::of_frame(&frame, Direction::Egress), None);
    }

    #[test]
    fn fragments_options_icmp_and_ipv6() {
        let mut p = ipv4(6, [1, 2, 3, 4], [5, 6, 7, 8], &[0, 80, 0x1f, 0x90]);
        p[6] = 0x00;
        p[7] = 0x10; // a later fragment: its bytes are not ports
        assert_eq!(FlowKey::of_ip(&p, Direction::Egress).unwrap().port, None);
        // IHL 6: four bytes of options before the ports.
        let mut opt = ipv4(
            6,
            [1, 2, 3, 4],
            [5, 6, 7, 8],
            &[1, 1, 1, 1, 0, 80, 0x1f, 0x90],
        );
        opt[0] = 0x46;
        assert_eq!(
            FlowKey::of_ip(&opt, Direction::Egress).unwrap().port,
            Some(8080)
        );
        let icmp = ipv4(1, [1, 2, 3, 4], [5, 6, 7, 8], &[8, 0, 0, 0]);
        assert_eq!(FlowKey::of_ip(&icmp, Direction::Egress).unwrap().port, None);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend([0x30, 0x39, 0, 53]);
        let k = FlowKey::of_ip(&v6, Direction::Egress).unwrap();
        assert_eq!(k.remote, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(k.port, Some(53));
        // Truncated anywhere: never a panic, at most no port.
        for n in 0..v6.len() {
            let _ = FlowKey::of_ip(&v6[..n], Direction::Ingress);
            let _ = FlowKey::of_ip(&opt[..n.min(opt.len())], Direction::Ingress);
        }
        assert_eq!(FlowKey::of_ip(&opt[..21], Direction::Ingress), None);
    }
}
