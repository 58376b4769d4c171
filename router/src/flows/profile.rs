//! Flow top in Synthetic Network's own binary form (its
//! `/top/ingress.profile` and `/top/egress.profile`), so that its client
//! and page show a container's flows from weft's counts.
//!
//! The form: 2,048 slots of three little-endian `u64`s, packets, bits and
//! an id `port << 48 | protocol << 32 | ip` (the IPv4 address as it lies
//! on the wire, read little-endian; the port in host order). Ingress is
//! keyed by where packets came from, egress by where they went: the
//! remote end, either way. Its client skips empty slots, keys flows by
//! their id and takes rates from two readings, so a flow keeps its counts
//! cumulative between readings and the slot it lies in means nothing.
//!
//! Bits are counted as Synthetic Network counts them, on the wire:
//! preamble, gap, header and checksum around each frame (its client takes
//! 24 bytes off again to show the frame size). weft counts IP bytes, so
//! the 14-byte Ethernet header is added back; frames padded to 60 bytes
//! are counted unpadded.

use std::{collections::BTreeMap, net::IpAddr};

use super::top::ContainerFlows;

/// Slots in a profile, as Synthetic Network's client reads them.
pub const SLOTS: usize = 2048;
/// Bytes of one slot.
const SLOT: usize = 24;
/// What a frame costs on the wire besides its IP packet: preamble and
/// start (8), inter-frame gap (12), Ethernet header (14), checksum (4).
const WIRE_OVERHEAD: u64 = 8 + 12 + 14 + 4;

/// Which way the packets went, seen from the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Ingress,
    Egress,
}

/// The profile of one container's flows one way. Flows that share an id
/// (the same remote end over two local ports) are summed; IPv6 flows,
/// which the form cannot hold, are counted as Synthetic Network counts
/// anything not IPv4: address, protocol and port 0. Past [`SLOTS`] ids
/// the busiest keep a slot.
pub fn encode(container: &ContainerFlows, way: Way) -> Vec<u8> {
    let mut by_id: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for flow in container.rules.iter().flat_map(|r| &r.flows) {
        let traffic = match way {
            Way::Ingress => flow.inbound,
            Way::Egress => flow.outbound,
        };
        if traffic.packets == 0 {
            continue;
        }
        let id = match flow.remote {
            IpAddr::V4(v4) => {
                let port = flow.remote_port.unwrap_or(0);
                u64::from(port) << 48
                    | u64::from(flow.protocol) << 32
                    | u64::from(u32::from_le_bytes(v4.octets()))
            }
            IpAddr::V6(_) => 0,
        };
        let counts = by_id.entry(id).or_default();
        counts.0 += traffic.packets;
        counts.1 += (traffic.bytes + WIRE_OVERHEAD * traffic.packets) * 8;
    }
    let mut slots: Vec<(u64, (u64, u64))> = by_id.into_iter().collect();
    if slots.len() > SLOTS {
        slots.sort_by_key(|(id, (_, bits))| (std::cmp::Reverse(*bits), *id));
        slots.truncate(SLOTS);
    }
    let mut out = vec![0u8; SLOTS * SLOT];
    for (slot, (id, (packets, bits))) in out.chunks_exact_mut(SLOT).zip(slots) {
        slot[0..8].copy_from_slice(&packets.to_le_bytes());
        slot[8..16].copy_from_slice(&bits.to_le_bytes());
        slot[16..24].copy_from_slice(&id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::top::{Flow, RuleFlows, Traffic};

    fn traffic(packets: u64, bytes: u64) -> Traffic {
        Traffic {
            packets,
            bytes,
            ..Traffic::default()
        }
    }

    fn flow(remote: &str, protocol: u8, port: Option<u16>, inbound: Traffic) -> Flow {
        Flow {
            remote: remote.parse().unwrap(),
            protocol,
            local_port: port.map(|_| 40000),
            remote_port: port,
            inbound,
            outbound: traffic(1, 100),
        }
    }

    fn container(flows: Vec<Flow>) -> ContainerFlows {
        ContainerFlows {
            id: "web".into(),
            addresses: vec!["10.32.0.2".parse().unwrap()],
            conditioned: false,
            rules: vec![RuleFlows {
                rule: "default".into(),
                inbound: Traffic::default(),
                outbound: Traffic::default(),
                flows,
                omitted: 0,
            }],
        }
    }

    /// Reads a profile back as Synthetic Network's client does:
    /// (packets, bits, ip, protocol, port) per non-empty slot.
    fn read(profile: &[u8]) -> Vec<(u64, u64, u32, u8, u16)> {
        let word = |i: usize| u64::from_le_bytes(profile[i..i + 8].try_into().unwrap());
        (0..SLOTS)
            .filter(|s| word(s * SLOT) > 0)
            .map(|s| {
                let id = word(s * SLOT + 16);
                (
                    word(s * SLOT),
                    word(s * SLOT + 8),
                    id as u32,
                    (id >> 32) as u8,
                    (id >> 48) as u16,
                )
            })
            .collect()
    }

    #[test]
    fn golden_bytes_of_one_flow() {
        // 10 UDP datagrams of 1,028 IP bytes from 10.32.0.1:5201.
        let c = container(vec![flow("10.32.0.1", 17, Some(5201), traffic(10, 10_280))]);
        let profile = encode(&c, Way::Ingress);
        assert_eq!(profile.len(), 49_152);
        let hex: String = profile[..24].iter().map(|b| format!("{b:02x}")).collect();
        // packets 10; bits (10,280 + 38 x 10) x 8 = 85,280; id: port
        // 5201 (0x1451) << 48 | 17 << 32 | 10.32.0.1 as it lies on the wire.
        assert_eq!(
            hex,
            concat!("0a00000000000000", "204d010000000000", "0a20000111005114")
        );
        assert!(profile[24..].iter().all(|b| *b == 0));
        // Its client's frame size: bits / 8 / packets - 24 = 1,042, the
        // IP packet and its 14-byte Ethernet header.
        let (packets, bits, ..) = read(&profile)[0];
        assert_eq!(bits / 8 / packets - 24, 1_042);
    }

    #[test]
    fn ways_keys_and_what_the_form_cannot_hold() {
        let c = container(vec![
            flow("10.32.0.1", 6, Some(80), traffic(5, 500)),
            // The same remote end from another local port: summed.
            flow("10.32.0.1", 6, Some(80), traffic(2, 200)),
            flow("10.32.0.3", 1, None, traffic(3, 252)),
            flow("fd00::1", 17, Some(53), traffic(4, 400)),
            // Nothing this way: no slot.
            flow("10.32.0.4", 17, Some(9), traffic(0, 0)),
        ]);
        let ingress = read(&encode(&c, Way::Ingress));
        let ip = |s: &str| u32::from_le_bytes(s.parse::<std::net::Ipv4Addr>().unwrap().octets());
        assert_eq!(
            ingress,
            vec![
                (4, (400 + 4 * 38) * 8, 0, 0, 0),
                (3, (252 + 3 * 38) * 8, ip("10.32.0.3"), 1, 0),
                (7, (700 + 7 * 38) * 8, ip("10.32.0.1"), 6, 80),
            ]
        );
        // Egress counts what went out (one packet per flow here).
        let egress = read(&encode(&c, Way::Egress));
        assert_eq!(egress.iter().map(|s| s.0).sum::<u64>(), 5);
    }

    #[test]
    fn past_the_slots_the_busiest_stay() {
        let flows = (0..SLOTS as u16 + 10)
            .map(|i| flow("10.32.0.1", 17, Some(i + 1), traffic(1, u64::from(i) + 100)))
            .collect();
        let slots = read(&encode(&container(flows), Way::Ingress));
        assert_eq!(slots.len(), SLOTS);
        let quietest = slots.iter().map(|s| s.4).min().unwrap();
        assert_eq!(
            quietest, 11,
            "the ten quietest flows (ports 1-10) lost their slots"
        );
    }
}
