//! What each router tells the mesh about its host, on the `hosts` gossip
//! channel: its gateways (exposed addresses) and the host addresses that
//! answer containers' own addresses, so that containers elsewhere reach
//! them without masquerading.
//!
//! One record per router, the newest winning, forgotten some time after
//! its router left ([`crate::mesh::per_router`]). Pure.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use crate::mesh::per_router::FORGET_AFTER;
use crate::mesh::{
    channel::Shared,
    per_router::{PerRouter, RouterRecord},
};

/// The mesh channel host records travel on.
pub const CHANNEL: &str = "hosts";

/// Most addresses a record may list: a peer cannot make us hold more.
const MAX_ADDRESSES: usize = 64;

/// One router's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Grows with every change; a restart starts above the last run (the
    /// router seeds it from the wall clock).
    pub version: u64,
    /// The host's addresses that answer the range directly: empty unless
    /// the host has a gateway and accepts the range's source addresses
    /// from its underlay (no strict reverse-path filter).
    pub direct: Vec<Ipv4Addr>,
    /// The host's addresses on the `weft` bridge.
    pub gateways: Vec<Ipv4Net>,
}

impl RouterRecord for HostRecord {
    const WHAT: &'static str = "host records";

    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn within_bounds(&self) -> bool {
        self.direct.len() <= MAX_ADDRESSES && self.gateways.len() <= MAX_ADDRESSES
    }
}

/// Every router's host record, as this router knows them.
pub type Hosts = PerRouter<HostRecord>;

impl Hosts {
    /// Replaces our record's contents; gossips it if it changed.
    pub fn set_local(&mut self, mut direct: Vec<Ipv4Addr>, mut gateways: Vec<Ipv4Net>) {
        direct.sort();
        direct.dedup();
        direct.truncate(MAX_ADDRESSES);
        gateways.sort();
        gateways.dedup();
        gateways.truncate(MAX_ADDRESSES);
        self.publish(HostRecord {
            version: 0,
            direct,
            gateways,
        });
    }

    /// The addresses of reachable other hosts that containers reach
    /// untranslated.
    pub fn direct_hosts(&self) -> BTreeSet<Ipv4Addr> {
        self.reachable_others()
            .flat_map(|(_, r)| r.direct.iter().copied())
            .collect()
    }
}

/// The channel as the router shares it between the mesh and its own task.
pub type HostsHandle = Shared<Hosts>;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{
        identity::PeerName,
        mesh::{Channel, Outgoing},
    };

    fn name(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn gossip_of(h: &mut Hosts) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| h.poll_outgoing())
            .map(|o| match o {
                Outgoing::Gossip(p) => p,
                other => panic!("hosts only gossip: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn records_spread_and_only_reachable_exposed_hosts_count() {
        let now = Instant::now();
        let (mut a, mut b) = (Hosts::new(name(1), 100), Hosts::new(name(2), 100));
        a.set_local(
            vec![addr("192.0.2.1")],
            vec!["10.32.0.1/12".parse().unwrap()],
        );
        for payload in gossip_of(&mut a) {
            let news = b.on_gossip(now, name(1), &payload).unwrap();
            assert!(news.is_some(), "a's record is news to b");
        }
        assert!(b.direct_hosts().is_empty(), "a is not reachable yet");
        let seen = b.generation();
        b.on_peers_changed(now, &[name(1), name(2)].into());
        assert!(b.generation() > seen, "reachability changes what counts");
        assert_eq!(b.direct_hosts(), [addr("192.0.2.1")].into());
        // The same gossip again is no news: nothing to pass on.
        let full = a.full_state().unwrap();
        assert_eq!(b.on_gossip(now, name(1), &full).unwrap(), None);
        // Our own record is never a direct host of ours.
        a.on_peers_changed(now, &[name(1), name(2)].into());
        assert!(a.direct_hosts().is_empty());
        // a hides: the newer, empty record replaces the old one.
        a.set_local(vec![], vec![]);
        for payload in gossip_of(&mut a) {
            b.on_gossip(now, name(1), &payload).unwrap();
        }
        assert!(b.direct_hosts().is_empty());
    }

    #[test]
    fn an_older_record_never_replaces_a_newer_one() {
        let now = Instant::now();
        let mut a = Hosts::new(name(1), 10);
        a.set_local(vec![addr("192.0.2.1")], vec![]);
        let old = a.full_state().unwrap();
        a.set_local(vec![addr("192.0.2.9")], vec![]);
        let new = a.full_state().unwrap();
        let mut b = Hosts::new(name(2), 10);
        b.on_peers_changed(now, &[name(1)].into());
        b.on_gossip(now, name(1), &new).unwrap();
        assert_eq!(b.on_gossip(now, name(1), &old).unwrap(), None);
        assert_eq!(b.direct_hosts(), [addr("192.0.2.9")].into());
    }

    #[test]
    fn a_restart_behind_its_own_old_record_moves_past_it() {
        let now = Instant::now();
        let mut before = Hosts::new(name(1), 500);
        before.set_local(vec![addr("192.0.2.1")], vec![]);
        let stale = before.full_state().unwrap();
        // Restarted with a clock behind: version 100 < 501.
        let mut after = Hosts::new(name(1), 100);
        after.set_local(vec![addr("192.0.2.7")], vec![]);
        gossip_of(&mut after);
        after.on_gossip(now, name(2), &stale).unwrap();
        assert!(after.local().version > 501);
        assert_eq!(after.local().direct, vec![addr("192.0.2.7")]);
        assert_eq!(
            gossip_of(&mut after).len(),
            1,
            "the new version is gossiped"
        );
    }

    #[test]
    fn a_record_of_ours_at_the_largest_version_does_not_overflow() {
        // Found by the host_records fuzz target.
        let mut h = Hosts::new(name(1), 1);
        let forged = vec![(
            name(1),
            HostRecord {
                version: u64::MAX,
                direct: vec![],
                gateways: vec![],
            },
        )];
        h.on_gossip(
            Instant::now(),
            name(2),
            &crate::mesh::per_router::encode(&forged),
        )
        .unwrap();
        assert_eq!(h.local().version, u64::MAX);
    }

    #[test]
    fn a_router_gone_for_good_is_forgotten_and_not_brought_back() {
        let t0 = Instant::now();
        let mut a = Hosts::new(name(1), 10);
        a.set_local(vec![addr("192.0.2.1")], vec![]);
        let a_state = a.full_state().unwrap();
        let mut b = Hosts::new(name(2), 10);
        b.on_peers_changed(t0, &[name(1), name(2)].into());
        b.on_gossip(t0, name(1), &a_state).unwrap();
        assert_eq!(b.next_timeout(), None, "nothing to forget while a is here");
        // a leaves; a short absence forgets nothing.
        b.on_peers_changed(t0, &[name(2)].into());
        assert_eq!(b.next_timeout(), Some(t0 + FORGET_AFTER));
        b.on_timeout(t0 + FORGET_AFTER / 2);
        assert!(b.get(name(1)).is_some());
        b.on_timeout(t0 + FORGET_AFTER);
        assert!(b.get(name(1)).is_none(), "forgotten after FORGET_AFTER");
        assert!(!b.full_state().unwrap().is_empty());
        assert_eq!(
            crate::mesh::per_router::decode::<HostRecord>(&b.full_state().unwrap())
                .unwrap()
                .len(),
            1
        );
        // A neighbour that has not forgotten yet does not bring it back.
        let later = t0 + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(b.on_gossip(later, name(3), &a_state).unwrap(), None);
        assert!(b.get(name(1)).is_none());
        // a returns: its record (same version) is welcome again.
        b.on_peers_changed(later, &[name(1), name(2)].into());
        assert!(b.on_gossip(later, name(1), &a_state).unwrap().is_some());
        assert_eq!(b.direct_hosts(), [addr("192.0.2.1")].into());
    }

    #[test]
    fn a_record_heard_of_an_unreachable_router_is_forgotten_too() {
        let t0 = Instant::now();
        let mut a = Hosts::new(name(1), 10);
        a.set_local(vec![addr("192.0.2.1")], vec![]);
        let mut b = Hosts::new(name(2), 10);
        b.on_peers_changed(t0, &[name(2)].into());
        b.on_gossip(t0, name(3), &a.full_state().unwrap()).unwrap();
        assert_eq!(b.next_timeout(), Some(t0 + FORGET_AFTER));
        b.on_timeout(t0 + FORGET_AFTER);
        assert!(b.get(name(1)).is_none());
        // The tombstone itself goes in time.
        assert_eq!(b.next_timeout(), Some(t0 + 2 * FORGET_AFTER));
        b.on_timeout(t0 + 2 * FORGET_AFTER);
        assert_eq!(b.next_timeout(), None);
    }

    #[test]
    fn garbage_and_oversized_gossip_are_refused() {
        let now = Instant::now();
        let mut h = Hosts::new(name(1), 1);
        assert!(h.on_gossip(now, name(2), &[0xff, 0xff, 0xff]).is_err());
        let huge = vec![(
            name(2),
            HostRecord {
                version: 1,
                direct: vec![addr("192.0.2.1"); MAX_ADDRESSES + 1],
                gateways: vec![],
            },
        )];
        assert!(
            h.on_gossip(now, name(2), &crate::mesh::per_router::encode(&huge))
                .is_err()
        );
        assert!(h.get(name(2)).is_none());
    }
}
