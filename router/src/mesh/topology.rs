//! What every router knows about every other: each peer's own account of
//! its connections, versioned by the peer that owns it.
//!
//! Entries spread by gossip. A newer version of an entry replaces an older
//! one; only the owner changes its own entry, and the owner raises its
//! version past any stale copy of itself it hears about (from before a
//! restart, say), so its current account always wins.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::identity::PeerName;

/// A peer's account of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: PeerName,
    pub nickname: String,
    pub uid: u64,
    /// Raised by the owner at every change.
    pub version: u64,
    /// Sorted by peer name.
    pub connections: Vec<ConnInfo>,
}

/// One connection as its owner reports it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnInfo {
    pub peer: PeerName,
    /// Where the peer accepts connections, as seen from the owner: what
    /// others try when they discover the peer.
    pub address: SocketAddr,
    pub outbound: bool,
    /// Whether data crosses this connection (its data path passes
    /// heartbeats), not only control messages.
    pub usable: bool,
}

/// `(name, uid, version)`: enough to tell who has the newer entry.
pub type DigestEntry = (PeerName, u64, u64);

/// What merging one entry did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    Unchanged,
    New,
    Updated,
    /// The same name with another uid: the peer restarted.
    Restarted,
    /// An entry about ourselves that is not ours; we raised our version.
    SelfCorrected,
}

struct Entry {
    info: PeerInfo,
    /// Since when the entry has been unreachable from us.
    unreachable_since: Option<Instant>,
}

pub struct Topology {
    local: PeerName,
    entries: BTreeMap<PeerName, Entry>,
}

/// Whether `a` is newer than `b` (same name): higher version, or on a tie
/// the higher uid, so every router picks the same entry.
fn newer(a: &PeerInfo, b: &PeerInfo) -> bool {
    (a.version, a.uid) > (b.version, b.uid)
}

impl Topology {
    pub fn new(local: PeerInfo) -> Topology {
        let name = local.name;
        let mut entries = BTreeMap::new();
        entries.insert(
            name,
            Entry {
                info: local,
                unreachable_since: None,
            },
        );
        Topology {
            local: name,
            entries,
        }
    }

    pub fn local(&self) -> &PeerInfo {
        &self.entries[&self.local].info
    }

    pub fn get(&self, name: PeerName) -> Option<&PeerInfo> {
        self.entries.get(&name).map(|e| &e.info)
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerInfo> {
        self.entries.values().map(|e| &e.info)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Replaces our own connection list; returns whether it changed (and
    /// the version went up).
    pub fn set_local_connections(&mut self, mut connections: Vec<ConnInfo>) -> bool {
        connections.sort();
        let local = &mut self.entries.get_mut(&self.local).expect("local entry").info;
        if local.connections == connections {
            return false;
        }
        local.connections = connections;
        local.version += 1;
        true
    }

    /// Takes in an entry received by gossip.
    pub fn merge(&mut self, info: PeerInfo, now: Instant) -> Merged {
        if info.name == self.local {
            let local = &mut self.entries.get_mut(&self.local).expect("local entry").info;
            if info != *local && info.version >= local.version {
                local.version = info.version + 1;
                return Merged::SelfCorrected;
            }
            return Merged::Unchanged;
        }
        match self.entries.get_mut(&info.name) {
            None => {
                self.entries.insert(
                    info.name,
                    Entry {
                        info,
                        unreachable_since: Some(now),
                    },
                );
                Merged::New
            }
            Some(entry) if newer(&info, &entry.info) => {
                let restarted = info.uid != entry.info.uid;
                entry.info = info;
                if restarted {
                    Merged::Restarted
                } else {
                    Merged::Updated
                }
            }
            Some(_) => Merged::Unchanged,
        }
    }

    /// Connections both ends report: the graph control messages route on.
    pub fn adjacency(&self) -> BTreeMap<PeerName, BTreeSet<PeerName>> {
        self.edges(|_| true)
    }

    /// Connections both ends report as carrying data: the graph frames
    /// route on.
    pub fn data_adjacency(&self) -> BTreeMap<PeerName, BTreeSet<PeerName>> {
        self.edges(|c| c.usable)
    }

    fn edges(&self, keep: impl Fn(&ConnInfo) -> bool) -> BTreeMap<PeerName, BTreeSet<PeerName>> {
        let reports = |a: PeerName, b: PeerName| {
            self.entries.get(&a).is_some_and(|e| {
                e.info
                    .connections
                    .binary_search_by(|c| c.peer.cmp(&b))
                    .is_ok_and(|i| keep(&e.info.connections[i]))
            })
        };
        let mut adjacency: BTreeMap<PeerName, BTreeSet<PeerName>> = BTreeMap::new();
        for entry in self.entries.values() {
            let a = entry.info.name;
            adjacency.entry(a).or_default();
            for c in &entry.info.connections {
                if a < c.peer && keep(c) && reports(c.peer, a) {
                    adjacency.entry(a).or_default().insert(c.peer);
                    adjacency.entry(c.peer).or_default().insert(a);
                }
            }
        }
        adjacency
    }

    /// Notes which entries are reachable now (from the routes), starting
    /// the clock on those that became unreachable.
    pub fn mark_reachable(&mut self, reachable: &BTreeSet<PeerName>, now: Instant) {
        for (name, entry) in &mut self.entries {
            if reachable.contains(name) || *name == self.local {
                entry.unreachable_since = None;
            } else if entry.unreachable_since.is_none() {
                entry.unreachable_since = Some(now);
            }
        }
    }

    /// Removes entries unreachable for longer than `grace`; returns them.
    pub fn collect_garbage(&mut self, now: Instant, grace: std::time::Duration) -> Vec<PeerName> {
        let gone: Vec<PeerName> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.unreachable_since
                    .is_some_and(|since| now >= since + grace)
            })
            .map(|(name, _)| *name)
            .collect();
        for name in &gone {
            self.entries.remove(name);
        }
        gone
    }

    /// When the oldest unreachable entry became so.
    pub fn earliest_unreachable(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.unreachable_since)
            .min()
    }

    pub fn digest(&self) -> Vec<DigestEntry> {
        self.entries
            .values()
            .map(|e| (e.info.name, e.info.uid, e.info.version))
            .collect()
    }

    /// Given a neighbor's digest: the entries we have that it lacks or has
    /// older, and the names it has newer than ours (or that we lack).
    pub fn compare(&self, theirs: &[DigestEntry]) -> (Vec<PeerInfo>, Vec<PeerName>) {
        let theirs: BTreeMap<PeerName, (u64, u64)> =
            theirs.iter().map(|(n, uid, v)| (*n, (*v, *uid))).collect();
        let ours_newer = self
            .entries
            .values()
            .filter(|e| {
                theirs
                    .get(&e.info.name)
                    .is_none_or(|t| (e.info.version, e.info.uid) > *t)
            })
            .map(|e| e.info.clone())
            .collect();
        let theirs_newer = theirs
            .iter()
            .filter(|(name, t)| {
                self.entries
                    .get(name)
                    .is_none_or(|e| **t > (e.info.version, e.info.uid))
            })
            .map(|(name, _)| *name)
            .collect();
        (ours_newer, theirs_newer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn name(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    fn info(n: u64, uid: u64, version: u64, peers: &[u64]) -> PeerInfo {
        PeerInfo {
            name: name(n),
            nickname: format!("p{n}"),
            uid,
            version,
            connections: peers
                .iter()
                .map(|p| ConnInfo {
                    peer: name(*p),
                    address: format!("192.0.2.{p}:6783").parse().unwrap(),
                    outbound: true,
                    usable: *p != 3,
                })
                .collect(),
        }
    }

    #[test]
    fn newer_versions_replace_older_and_restarts_are_noticed() {
        let now = Instant::now();
        let mut t = Topology::new(info(1, 1, 1, &[]));
        assert_eq!(t.merge(info(2, 7, 5, &[]), now), Merged::New);
        assert_eq!(t.merge(info(2, 7, 4, &[1]), now), Merged::Unchanged);
        assert_eq!(t.merge(info(2, 7, 6, &[1]), now), Merged::Updated);
        assert_eq!(t.merge(info(2, 8, 9, &[]), now), Merged::Restarted);
        assert_eq!(t.get(name(2)).unwrap().uid, 8);
    }

    #[test]
    fn ties_are_broken_the_same_way_everywhere() {
        let now = Instant::now();
        let mut a = Topology::new(info(1, 1, 1, &[]));
        let mut b = Topology::new(info(3, 1, 1, &[]));
        let (x, y) = (info(2, 10, 5, &[]), info(2, 20, 5, &[1]));
        a.merge(x.clone(), now);
        a.merge(y.clone(), now);
        b.merge(y, now);
        b.merge(x, now);
        assert_eq!(a.get(name(2)), b.get(name(2)));
        assert_eq!(a.get(name(2)).unwrap().uid, 20);
    }

    #[test]
    fn a_stale_entry_about_ourselves_raises_our_version() {
        let now = Instant::now();
        let mut t = Topology::new(info(1, 1, 3, &[]));
        assert_eq!(t.merge(info(1, 99, 10, &[2]), now), Merged::SelfCorrected);
        assert_eq!(t.local().version, 11);
        assert_eq!(t.local().uid, 1, "our own entry stays ours");
        assert_eq!(t.merge(t.local().clone(), now), Merged::Unchanged);
    }

    #[test]
    fn only_connections_both_ends_report_are_edges() {
        let now = Instant::now();
        let mut t = Topology::new(info(1, 1, 1, &[2, 3]));
        t.merge(info(2, 1, 1, &[1]), now);
        t.merge(info(3, 1, 1, &[]), now);
        let adj = t.adjacency();
        assert_eq!(adj[&name(1)], BTreeSet::from([name(2)]));
        assert!(adj[&name(3)].is_empty());
    }

    #[test]
    fn data_routes_use_only_connections_that_carry_data() {
        let now = Instant::now();
        // 1 - 2 carries data; 1 - 3 only control (see `info`).
        let mut t = Topology::new(info(1, 1, 1, &[2, 3]));
        t.merge(info(2, 1, 1, &[1]), now);
        t.merge(info(3, 1, 1, &[1]), now);
        assert_eq!(t.adjacency()[&name(1)], BTreeSet::from([name(2), name(3)]));
        assert_eq!(t.data_adjacency()[&name(1)], BTreeSet::from([name(2)]));
    }

    #[test]
    fn unreachable_entries_go_after_the_grace_period() {
        let t0 = Instant::now();
        let mut t = Topology::new(info(1, 1, 1, &[]));
        t.merge(info(2, 1, 1, &[]), t0);
        t.mark_reachable(&BTreeSet::from([name(1)]), t0);
        assert!(
            t.collect_garbage(t0 + Duration::from_secs(1), Duration::from_secs(5))
                .is_empty()
        );
        assert_eq!(
            t.collect_garbage(t0 + Duration::from_secs(5), Duration::from_secs(5)),
            vec![name(2)]
        );
        assert!(t.get(name(2)).is_none());
        assert!(t.get(name(1)).is_some(), "we never collect ourselves");
    }

    #[test]
    fn digests_find_what_each_side_lacks() {
        let now = Instant::now();
        let mut a = Topology::new(info(1, 1, 1, &[]));
        a.merge(info(2, 1, 5, &[]), now);
        a.merge(info(3, 1, 1, &[]), now);
        let theirs = vec![(name(2), 1, 4), (name(3), 1, 2), (name(4), 1, 1)];
        let (ours_newer, theirs_newer) = a.compare(&theirs);
        let ours: Vec<PeerName> = ours_newer.iter().map(|p| p.name).collect();
        assert_eq!(ours, vec![name(1), name(2)]);
        assert_eq!(theirs_newer, vec![name(3), name(4)]);
    }
}
