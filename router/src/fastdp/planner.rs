//! What the kernel datapath should do with a frame that missed every flow:
//! the actions of the flow to install for it, decided like a learning
//! switch whose ports are the bridge, vxlan tunnels to peers on the fast
//! datapath, and the TAP to the userspace path for the others.

use std::collections::BTreeSet;

use crate::{
    identity::PeerName,
    mesh::Routes,
    userspace::forwarding::{Mac, MacTable, is_group},
};

/// Where a frame came into the datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingress {
    /// From our bridge: our containers.
    Bridge,
    /// From the vxlan port, sent by `peer`.
    Vxlan { peer: PeerName },
    /// From the userspace path, which handles its own forwarding.
    Tap,
}

/// One output of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hop {
    Bridge,
    /// Into the vxlan tunnel to `peer`.
    Tunnel(PeerName),
    /// To the userspace path, which sends it on.
    Tap,
    /// To the userspace path, telling it the frame's origin router, so it
    /// forwards a broadcast along the right tree or relays a unicast.
    Userspace(PeerName),
}

/// Which peers the datapath reaches by vxlan.
pub struct View<'a> {
    pub local: PeerName,
    pub routes: &'a Routes,
    pub fastdp: &'a BTreeSet<PeerName>,
}

/// The outputs for a frame from `src` to `dst` that came in at `ingress`,
/// learning where `src` lives on the way. `macs` is the router's one
/// table, which the userspace path learns into as well.
pub fn plan(
    view: &View,
    macs: &mut MacTable,
    ingress: Ingress,
    src: Mac,
    dst: Mac,
    now: std::time::Instant,
) -> Vec<Hop> {
    let origin = match ingress {
        Ingress::Bridge => view.local,
        Ingress::Vxlan { peer } => peer,
        Ingress::Tap => {
            // The userspace path delivers only frames for us and forwards
            // the rest itself. It learnt `src`'s router before handing the
            // frame over, with the frame's origin, which only it knows.
            return vec![Hop::Bridge];
        }
    };
    macs.learn(src, origin, now);
    let unicast_to = (!is_group(&dst)).then(|| macs.lookup(&dst, now)).flatten();
    let mut hops = Vec::new();
    match (ingress, unicast_to) {
        (Ingress::Bridge, Some(owner)) if owner == view.local => {}
        (Ingress::Bridge, Some(owner)) => hops.push(toward(view, owner)),
        (Ingress::Vxlan { peer }, Some(owner)) if owner != view.local => {
            // We are not where it is: a relay the fast datapath does not
            // do; the userspace path routes it.
            hops.push(Hop::Userspace(peer));
        }
        (Ingress::Vxlan { .. }, Some(_)) => hops.push(Hop::Bridge),
        (_, None) => {
            // Broadcast, multicast or unknown: flood along the origin's tree.
            if matches!(ingress, Ingress::Vxlan { .. }) {
                hops.push(Hop::Bridge);
            }
            let mut userspace = false;
            for child in view.routes.broadcast_children(origin) {
                if view.fastdp.contains(&child) {
                    hops.push(Hop::Tunnel(child));
                } else {
                    userspace = true;
                }
            }
            if userspace {
                hops.push(match ingress {
                    Ingress::Bridge => Hop::Tap,
                    _ => Hop::Userspace(origin),
                });
            }
        }
        (Ingress::Tap, _) => unreachable!("handled above"),
    }
    hops
}

/// How to send a unicast frame to router `owner`: by tunnel when it is a
/// fast datapath neighbor, else through the userspace path.
fn toward(view: &View, owner: PeerName) -> Hop {
    if view.fastdp.contains(&owner) {
        Hop::Tunnel(owner)
    } else {
        Hop::Tap
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Instant};

    use super::*;

    fn n(x: u64) -> PeerName {
        PeerName::from_u64(x)
    }

    /// A star: us (1) in the middle, 2 and 3 on fastdp, 4 on userspace.
    fn routes() -> Routes {
        let mut adj: BTreeMap<PeerName, BTreeSet<PeerName>> = BTreeMap::new();
        for p in [2, 3, 4] {
            adj.entry(n(1)).or_default().insert(n(p));
            adj.entry(n(p)).or_default().insert(n(1));
        }
        Routes::compute(n(1), adj)
    }

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];

    #[test]
    fn floods_go_by_tunnel_to_fastdp_peers_and_once_to_userspace() {
        let routes = routes();
        let fastdp = BTreeSet::from([n(2), n(3)]);
        let view = View {
            local: n(1),
            routes: &routes,
            fastdp: &fastdp,
        };
        let mut macs = MacTable::default();
        let now = Instant::now();
        assert_eq!(
            plan(&view, &mut macs, Ingress::Bridge, A, [0xff; 6], now),
            vec![Hop::Tunnel(n(2)), Hop::Tunnel(n(3)), Hop::Tap]
        );
        // A broadcast from peer 2: our bridge, and 2's tree goes on through
        // us to 3 (by tunnel) and 4 (userspace, told the origin).
        let hops = plan(
            &view,
            &mut macs,
            Ingress::Vxlan { peer: n(2) },
            B,
            [0xff; 6],
            now,
        );
        assert_eq!(
            hops,
            vec![Hop::Bridge, Hop::Tunnel(n(3)), Hop::Userspace(n(2))]
        );
    }

    #[test]
    fn unicasts_follow_what_was_learnt() {
        let routes = routes();
        let fastdp = BTreeSet::from([n(2), n(3)]);
        let view = View {
            local: n(1),
            routes: &routes,
            fastdp: &fastdp,
        };
        let mut macs = MacTable::default();
        let now = Instant::now();
        // B answers from peer 2 over vxlan: learnt, and for A (local) it
        // goes to the bridge.
        macs.learn(A, n(1), now);
        assert_eq!(
            plan(&view, &mut macs, Ingress::Vxlan { peer: n(2) }, B, A, now),
            vec![Hop::Bridge]
        );
        assert_eq!(
            plan(&view, &mut macs, Ingress::Bridge, A, B, now),
            vec![Hop::Tunnel(n(2))]
        );
        macs.learn(B, n(4), now);
        assert_eq!(
            plan(&view, &mut macs, Ingress::Bridge, A, B, now),
            vec![Hop::Tap],
            "peer 4 is on userspace"
        );
        assert_eq!(
            plan(&view, &mut macs, Ingress::Tap, B, A, now),
            vec![Hop::Bridge]
        );
        assert_eq!(
            plan(&view, &mut macs, Ingress::Bridge, A, B, now),
            vec![Hop::Tap],
            "a frame from the TAP teaches nothing: B is still at 4"
        );
        // The userspace path relayed a frame of B from peer 3 and learnt
        // it there; 3 is a fastdp neighbor, so the answer takes the tunnel.
        macs.learn(B, n(3), now);
        assert_eq!(
            plan(&view, &mut macs, Ingress::Bridge, A, B, now),
            vec![Hop::Tunnel(n(3))]
        );
        macs.learn(B, n(1), now);
        assert!(
            plan(&view, &mut macs, Ingress::Bridge, A, B, now).is_empty(),
            "local to local is the bridge's job"
        );
    }

    #[test]
    fn broadcasts_from_a_peer_reach_userspace_children_with_their_origin() {
        // A line 2 - 1 - 4: a broadcast of 2 goes on to 4, which is on
        // the userspace path.
        let mut adj: BTreeMap<PeerName, BTreeSet<PeerName>> = BTreeMap::new();
        for (a, b) in [(1, 2), (1, 4)] {
            adj.entry(n(a)).or_default().insert(n(b));
            adj.entry(n(b)).or_default().insert(n(a));
        }
        let routes = Routes::compute(n(1), adj);
        let fastdp = BTreeSet::from([n(2)]);
        let view = View {
            local: n(1),
            routes: &routes,
            fastdp: &fastdp,
        };
        let hops = plan(
            &view,
            &mut MacTable::default(),
            Ingress::Vxlan { peer: n(2) },
            B,
            [0xff; 6],
            Instant::now(),
        );
        assert_eq!(hops, vec![Hop::Bridge, Hop::Userspace(n(2))]);
    }
}
