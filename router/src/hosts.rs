//! What each router tells the mesh about its host, on the `hosts` gossip
//! channel: its gateways (exposed addresses) and the host addresses that
//! answer containers' own addresses, so that containers elsewhere reach
//! them without masquerading.
//!
//! Each router writes only its own record, with a version that grows;
//! merging keeps the newest per router, so every router converges on the
//! same set whatever order gossip arrives in. A router unreachable for
//! [`FORGET_AFTER`] is forgotten, so routers that left for good do not
//! pile up. Pure: no I/O; time is passed in.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    identity::PeerName,
    mesh::{Channel, Outgoing, channel::Shared, departures::Departures},
};

/// The mesh channel host records travel on.
pub const CHANNEL: &str = "hosts";

/// Most records one gossip message may carry, and most addresses a record
/// may list: a peer cannot make us hold more than this. Our full state
/// never carries more, so a mesh beyond it still converges on the
/// reachable routers' records.
const MAX_RECORDS: usize = 4096;
const MAX_ADDRESSES: usize = 64;

/// How long a router's record outlives its reachability. Its record only
/// counts while it is reachable; keeping it a while spares re-learning it
/// after a short partition, and the router resends it when it returns.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);

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

/// The wire form: records by router.
pub(crate) type Records = Vec<(PeerName, HostRecord)>;

pub(crate) fn encode(records: &Records) -> Vec<u8> {
    postcard::to_allocvec(records).expect("host records serialize")
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Records, String> {
    let records: Records =
        postcard::from_bytes(bytes).map_err(|e| format!("malformed host records: {e}"))?;
    if records.len() > MAX_RECORDS
        || records
            .iter()
            .any(|(_, r)| r.direct.len() > MAX_ADDRESSES || r.gateways.len() > MAX_ADDRESSES)
    {
        return Err("host records over the limit".into());
    }
    Ok(records)
}

/// Every router's record, as this router knows them.
pub struct Hosts {
    me: PeerName,
    records: BTreeMap<PeerName, HostRecord>,
    reachable: BTreeSet<PeerName>,
    /// Routers unreachable, and those forgotten: a neighbour that has not
    /// forgotten yet must not bring them back.
    departures: Departures,
    outgoing: VecDeque<Outgoing>,
    /// Grows whenever [`Hosts::direct_hosts`] may have changed, so the
    /// router recomputes it only then.
    generation: u64,
}

impl Hosts {
    /// Starts with an empty record of ours at `version`.
    pub fn new(me: PeerName, version: u64) -> Hosts {
        let mut records = BTreeMap::new();
        records.insert(
            me,
            HostRecord {
                version,
                ..HostRecord::default()
            },
        );
        Hosts {
            me,
            records,
            reachable: BTreeSet::new(),
            departures: Departures::new(FORGET_AFTER, FORGET_AFTER),
            outgoing: VecDeque::new(),
            generation: 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn local(&self) -> &HostRecord {
        &self.records[&self.me]
    }

    /// Replaces our record's contents; gossips it if it changed.
    pub fn set_local(&mut self, mut direct: Vec<Ipv4Addr>, mut gateways: Vec<Ipv4Net>) {
        direct.sort();
        direct.dedup();
        direct.truncate(MAX_ADDRESSES);
        gateways.sort();
        gateways.dedup();
        gateways.truncate(MAX_ADDRESSES);
        let mine = self.records.get_mut(&self.me).expect("our own record");
        if mine.direct == direct && mine.gateways == gateways {
            return;
        }
        mine.version = mine.version.saturating_add(1);
        mine.direct = direct;
        mine.gateways = gateways;
        let record = mine.clone();
        self.generation += 1;
        self.outgoing
            .push_back(Outgoing::Gossip(encode(&vec![(self.me, record)])));
    }

    /// The addresses of reachable other hosts that containers reach
    /// untranslated.
    pub fn direct_hosts(&self) -> BTreeSet<Ipv4Addr> {
        self.records
            .iter()
            .filter(|(name, _)| **name != self.me && self.reachable.contains(name))
            .flat_map(|(_, r)| r.direct.iter().copied())
            .collect()
    }

    pub fn get(&self, peer: PeerName) -> Option<&HostRecord> {
        self.records.get(&peer)
    }

    /// Keeps the newer of ours and theirs per router; returns what was
    /// news. A record claiming to be ours and newer means we restarted
    /// with a clock behind the last run: ours jumps past it.
    fn merge(&mut self, now: Instant, records: Records) -> Records {
        let mut news = Vec::new();
        for (name, theirs) in records {
            if name == self.me {
                let mine = self.records.get_mut(&self.me).expect("our own record");
                if theirs.version >= mine.version && theirs != *mine {
                    mine.version = theirs.version.saturating_add(1);
                    let record = mine.clone();
                    self.outgoing
                        .push_back(Outgoing::Gossip(encode(&vec![(self.me, record)])));
                }
                continue;
            }
            let newer = self
                .records
                .get(&name)
                .is_none_or(|ours| theirs.version > ours.version);
            if newer && self.departures.admits(name, theirs.version) {
                self.departures
                    .holding(name, self.reachable.contains(&name), now);
                self.generation += 1;
                self.records.insert(name, theirs.clone());
                news.push((name, theirs));
            }
        }
        news
    }
}

impl Channel for Hosts {
    fn on_gossip(
        &mut self,
        now: Instant,
        _from: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        let news = self.merge(now, decode(payload)?);
        Ok((!news.is_empty()).then(|| encode(&news)))
    }

    fn full_state(&self) -> Option<Vec<u8>> {
        // Ours and the reachable routers' first, should there be too many.
        let (live, rest): (Records, Records) = self
            .records
            .iter()
            .map(|(n, r)| (*n, r.clone()))
            .partition(|(n, _)| *n == self.me || self.reachable.contains(n));
        let all: Records = live.into_iter().chain(rest).take(MAX_RECORDS).collect();
        Some(encode(&all))
    }

    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>) {
        if self.reachable != *reachable {
            self.generation += 1;
            self.reachable = reachable.clone();
        }
        self.departures
            .on_peers_changed(now, reachable, self.me, self.records.keys().copied());
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.departures.next_timeout()
    }

    fn on_timeout(&mut self, now: Instant) {
        for name in self.departures.due(now) {
            if let Some(record) = self.records.remove(&name) {
                self.departures.forgot(name, record.version, now);
                self.generation += 1;
            }
        }
    }

    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }
}

/// The channel as the router shares it between the mesh and its own task.
pub type HostsHandle = Shared<Hosts>;

#[cfg(test)]
mod tests {
    use super::*;

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
        h.on_gossip(Instant::now(), name(2), &encode(&forged))
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
        assert_eq!(decode(&b.full_state().unwrap()).unwrap().len(), 1);
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
        assert!(h.on_gossip(now, name(2), &encode(&huge)).is_err());
        assert!(h.get(name(2)).is_none());
    }
}
