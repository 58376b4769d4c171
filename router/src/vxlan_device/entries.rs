//! The forwarding entries of weft's vxlan device, decided with no I/O.
//!
//! The device sends a frame only where an entry for its destination MAC
//! points (learning off, no multicast group, no default entry), and the
//! bridge sends it a frame only for a MAC it holds a static entry for
//! (flooding to it off). So a container's frames take the vxlan device
//! exactly to the MACs of routers whose connection is on it; everything
//! else (broadcasts, unknown MACs, routers on the userspace path or
//! reached through others) floods to the TAP and takes the userspace path
//! as before. The MACs come from the router's one MAC table, which the
//! userspace path fills from every frame it carries (the first frames
//! between two containers, ARP among them, always cross it).
//!
//! Each peer probed through the device also gets an entry for its bridge's
//! MAC: heartbeats go there, and the peer's bridge hands them up to its
//! router rather than forwarding them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    identity::PeerName,
    userspace::forwarding::{Mac, is_group},
};

/// Most container MACs the device holds entries for, so a flood of forged
/// sources cannot grow the kernel's tables without end; MACs past it take
/// the userspace path.
pub const MAX_ENTRIES: usize = 16_384;

/// What the device and the bridge hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entries {
    /// The device's entries: frames for this MAC go to this host.
    pub remote: BTreeMap<Mac, Ipv4Addr>,
    /// The bridge's entries on the device's port: frames for these MACs
    /// go to the device.
    pub bridged: BTreeSet<Mac>,
}

/// A peer the device sends heartbeats to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probed {
    pub remote: Ipv4Addr,
    pub bridge_mac: Mac,
}

/// The entries wanted: heartbeats to every probed peer, and the MACs of
/// routers whose connection is on the device (`carrying`), from `macs`
/// (each MAC and the router it lives at).
pub fn wanted(
    probed: &BTreeMap<PeerName, Probed>,
    carrying: &BTreeSet<PeerName>,
    macs: impl IntoIterator<Item = (Mac, PeerName)>,
) -> Entries {
    let mut want = Entries::default();
    for p in probed.values() {
        want.remote.insert(p.bridge_mac, p.remote);
    }
    let mut count = 0;
    for (mac, owner) in macs {
        let Some(p) = probed.get(&owner).filter(|_| carrying.contains(&owner)) else {
            continue;
        };
        if is_group(&mac) || want.remote.contains_key(&mac) || count >= MAX_ENTRIES {
            continue;
        }
        count += 1;
        want.remote.insert(mac, p.remote);
        want.bridged.insert(mac);
    }
    want
}

/// How to get from the entries held to those wanted, in the order to
/// apply: new device entries before the bridge sends anything there, and
/// bridge entries gone before the device entries they lead to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub set_remote: Vec<(Mac, Ipv4Addr)>,
    pub set_bridged: Vec<Mac>,
    pub unset_bridged: Vec<Mac>,
    pub unset_remote: Vec<Mac>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self == &Changes::default()
    }
}

pub fn changes(have: &Entries, want: &Entries) -> Changes {
    Changes {
        set_remote: want
            .remote
            .iter()
            .filter(|(mac, ip)| have.remote.get(*mac) != Some(*ip))
            .map(|(mac, ip)| (*mac, *ip))
            .collect(),
        set_bridged: want.bridged.difference(&have.bridged).copied().collect(),
        unset_bridged: have.bridged.difference(&want.bridged).copied().collect(),
        unset_remote: have
            .remote
            .keys()
            .filter(|mac| !want.remote.contains_key(*mac))
            .copied()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u8) -> (PeerName, Probed) {
        (
            PeerName::from_u64(0x0200_0000_0000 + u64::from(i)),
            Probed {
                remote: Ipv4Addr::new(192, 0, 2, i),
                bridge_mac: [2, 0xb, 0, 0, 0, i],
            },
        )
    }

    fn mac(i: u8) -> Mac {
        [2, 0xc, 0, 0, 0, i]
    }

    #[test]
    fn only_macs_of_routers_on_the_device_get_entries_and_every_probed_peer_a_heartbeat_entry() {
        let (a, pa) = peer(1);
        let (b, pb) = peer(2);
        let (c, _) = peer(3);
        let probed = BTreeMap::from([(a, pa), (b, pb)]);
        let carrying = BTreeSet::from([a]);
        let macs = [
            (mac(1), a),
            (mac(2), b), // probed, but its connection is on userspace
            (mac(3), c), // not probed: reached through others
            ([0xff; 6], a),
            ([1, 0, 0x5e, 0, 0, 1], a),
        ];
        let want = wanted(&probed, &carrying, macs);
        assert_eq!(
            want.remote,
            BTreeMap::from([
                (pa.bridge_mac, pa.remote),
                (pb.bridge_mac, pb.remote),
                (mac(1), pa.remote),
            ])
        );
        assert_eq!(want.bridged, BTreeSet::from([mac(1)]));
    }

    #[test]
    fn changes_add_what_is_missing_move_what_moved_and_remove_the_rest_in_a_safe_order() {
        let (a, pa) = peer(1);
        let (b, pb) = peer(2);
        let probed = BTreeMap::from([(a, pa), (b, pb)]);
        let before = wanted(
            &probed,
            &BTreeSet::from([a, b]),
            [(mac(1), a), (mac(2), b), (mac(3), a)],
        );
        // mac 3 moved to b, a's connection left the device.
        let after = wanted(&probed, &BTreeSet::from([b]), [(mac(2), b), (mac(3), b)]);
        let ch = changes(&before, &after);
        assert_eq!(ch.set_remote, vec![(mac(3), pb.remote)]);
        assert!(ch.set_bridged.is_empty());
        assert_eq!(ch.unset_bridged, vec![mac(1)]);
        assert_eq!(ch.unset_remote, vec![mac(1)]);
        assert!(changes(&after, &after).is_empty());
        // From nothing (a new or repaired device): everything.
        let fresh = changes(&Entries::default(), &after);
        assert_eq!(fresh.set_remote.len(), after.remote.len());
        assert_eq!(fresh.set_bridged.len(), 2);
    }

    #[test]
    fn entries_are_bounded() {
        let (a, pa) = peer(1);
        let probed = BTreeMap::from([(a, pa)]);
        let many = (0..MAX_ENTRIES as u32 + 10).map(|i| {
            let b = i.to_be_bytes();
            ([2, 0xd, b[0], b[1], b[2], b[3]], a)
        });
        let want = wanted(&probed, &BTreeSet::from([a]), many);
        assert_eq!(want.bridged.len(), MAX_ENTRIES);
        assert_eq!(want.remote.len(), MAX_ENTRIES + 1);
    }
}
