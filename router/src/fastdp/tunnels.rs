//! The vxlan tunnels to our peers' datapaths, by peer and by underlay
//! address: what a flow or a heartbeat to a peer is encapsulated with, and
//! which peer a frame that came out of a tunnel was sent by. The datapath
//! thread and the heartbeat thread each keep a copy.

use std::{collections::HashMap, net::Ipv4Addr};

use weft_odp::{Action, KeyAttr, KeyFields, TunnelAttr, TunnelKey};

use super::{PeerTunnel, vni};
use crate::identity::PeerName;

#[derive(Default)]
pub struct Tunnels {
    by_name: HashMap<PeerName, PeerTunnel>,
    by_ip: HashMap<Ipv4Addr, PeerName>,
}

impl Tunnels {
    /// Adds a peer's tunnel, or replaces it (its address may have changed).
    pub fn insert(&mut self, tunnel: PeerTunnel) {
        self.remove(tunnel.name);
        self.by_ip.insert(tunnel.remote, tunnel.name);
        self.by_name.insert(tunnel.name, tunnel);
    }

    pub fn remove(&mut self, name: PeerName) {
        self.by_name.remove(&name);
        self.by_ip.retain(|_, n| *n != name);
    }

    /// The peer a frame that came through the vxlan port was sent by, from
    /// its key's outer source address; `None` for a host that is not our
    /// peer.
    pub fn sender(&self, key: &[KeyAttr]) -> Option<PeerName> {
        let src = key.tunnel()?.iter().find_map(|a| match a {
            TunnelAttr::Ipv4Src(ip) => Some(*ip),
            _ => None,
        })?;
        self.by_ip.get(&src).copied()
    }

    /// The action that encapsulates a frame from `local` for `peer`.
    pub fn set_tunnel(&self, local: PeerName, peer: PeerName) -> Option<Action> {
        let t = self.by_name.get(&peer)?;
        Some(Action::set_tunnel(&TunnelKey {
            id: vni(local, peer),
            src: t.local,
            dst: t.remote,
            tos: 0,
            ttl: 64,
            dont_fragment: true,
            csum: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(name: u64, remote: [u8; 4]) -> PeerTunnel {
        PeerTunnel {
            name: PeerName::from_u64(name),
            remote: remote.into(),
            local: Ipv4Addr::new(10, 0, 0, 1),
        }
    }

    fn from(ip: [u8; 4]) -> Vec<KeyAttr> {
        vec![KeyAttr::Tunnel(vec![TunnelAttr::Ipv4Src(ip.into())])]
    }

    #[test]
    fn a_peer_that_moves_is_found_only_at_its_new_address() {
        let mut t = Tunnels::default();
        t.insert(tunnel(7, [10, 0, 0, 2]));
        assert_eq!(t.sender(&from([10, 0, 0, 2])), Some(PeerName::from_u64(7)));
        t.insert(tunnel(7, [10, 0, 0, 3]));
        assert_eq!(t.sender(&from([10, 0, 0, 2])), None);
        assert_eq!(t.sender(&from([10, 0, 0, 3])), Some(PeerName::from_u64(7)));
        let local = PeerName::from_u64(1);
        assert!(t.set_tunnel(local, PeerName::from_u64(7)).is_some());
        t.remove(PeerName::from_u64(7));
        assert_eq!(t.sender(&from([10, 0, 0, 3])), None);
        assert!(t.set_tunnel(local, PeerName::from_u64(7)).is_none());
        // A frame with no tunnel metadata names no one.
        assert_eq!(t.sender(&[KeyAttr::InPort(3)]), None);
    }
}
