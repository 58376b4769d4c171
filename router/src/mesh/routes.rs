//! Routes over the mesh, computed from the topology alone, so every router
//! that knows the same topology computes the same routes.
//!
//! Unicast: the first hop of a shortest path. Broadcast from a source S: a
//! breadth-first tree rooted at S; each router forwards what S sent to its
//! own children in S's tree, so every router receives each broadcast once,
//! and no router can loop it. Ties go to the lower peer name.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    sync::Mutex,
};

use crate::identity::PeerName;

pub type Adjacency = BTreeMap<PeerName, BTreeSet<PeerName>>;

pub struct Routes {
    local: PeerName,
    adjacency: Adjacency,
    /// Destination -> our neighbor on the way there.
    next_hop: BTreeMap<PeerName, PeerName>,
    /// Broadcast trees, computed on first use per source (routes are
    /// shared with the data path's thread, hence the lock).
    children: Mutex<HashMap<PeerName, Vec<PeerName>>>,
}

/// Parent of each peer in the breadth-first tree rooted at `root`; peers
/// are visited in name order at each level, so the tree is the same
/// wherever it is computed.
fn bfs_tree(adjacency: &Adjacency, root: PeerName) -> BTreeMap<PeerName, PeerName> {
    let mut parent = BTreeMap::new();
    let mut seen = BTreeSet::from([root]);
    let mut queue = VecDeque::from([root]);
    while let Some(u) = queue.pop_front() {
        for &v in adjacency.get(&u).into_iter().flatten() {
            if seen.insert(v) {
                parent.insert(v, u);
                queue.push_back(v);
            }
        }
    }
    parent
}

impl Routes {
    pub fn compute(local: PeerName, adjacency: Adjacency) -> Routes {
        let parent = bfs_tree(&adjacency, local);
        let mut next_hop = BTreeMap::new();
        for &dest in parent.keys() {
            // Walk up until the hop whose parent is us.
            let mut hop = dest;
            while parent[&hop] != local {
                hop = parent[&hop];
            }
            next_hop.insert(dest, hop);
        }
        Routes {
            local,
            adjacency,
            next_hop,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// The neighbor to send to for `dest`, if it is reachable.
    pub fn next_hop(&self, dest: PeerName) -> Option<PeerName> {
        self.next_hop.get(&dest).copied()
    }

    /// Peers reachable from us (ourselves included).
    pub fn reachable(&self) -> BTreeSet<PeerName> {
        self.next_hop.keys().copied().chain([self.local]).collect()
    }

    /// Our neighbors that get a broadcast originated by `source` from us.
    pub fn broadcast_children(&self, source: PeerName) -> Vec<PeerName> {
        let mut cache = self.children.lock().expect("no panics while holding it");
        if let Some(children) = cache.get(&source) {
            return children.clone();
        }
        let children: Vec<PeerName> = bfs_tree(&self.adjacency, source)
            .into_iter()
            .filter(|(_, parent)| *parent == self.local)
            .map(|(child, _)| child)
            .collect();
        cache.insert(source, children.clone());
        children
    }

    pub fn adjacency(&self) -> &Adjacency {
        &self.adjacency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u64) -> PeerName {
        PeerName::from_u64(x)
    }

    fn graph(edges: &[(u64, u64)]) -> Adjacency {
        let mut adj = Adjacency::new();
        for &(a, b) in edges {
            adj.entry(n(a)).or_default().insert(n(b));
            adj.entry(n(b)).or_default().insert(n(a));
        }
        adj
    }

    #[test]
    fn unicast_takes_a_shortest_path() {
        // 1 - 2 - 3 - 4, plus a shortcut 1 - 5 - 4
        let routes = Routes::compute(n(1), graph(&[(1, 2), (2, 3), (3, 4), (1, 5), (5, 4)]));
        assert_eq!(routes.next_hop(n(3)), Some(n(2)));
        assert_eq!(routes.next_hop(n(4)), Some(n(5)));
        assert_eq!(routes.next_hop(n(9)), None);
        assert_eq!(routes.reachable().len(), 5);
    }

    /// Every peer, forwarding a broadcast to its children in the source's
    /// tree, delivers it to every reachable peer exactly once.
    #[test]
    fn broadcasts_reach_everyone_once() {
        let edges: Vec<(u64, u64)> = (1..=30)
            .flat_map(|a| [(a, a % 30 + 1), (a, (a * 7) % 30 + 1)])
            .filter(|(a, b)| a != b)
            .collect();
        let adj = graph(&edges);
        let routes: BTreeMap<PeerName, Routes> = adj
            .keys()
            .map(|&p| (p, Routes::compute(p, adj.clone())))
            .collect();
        for &source in adj.keys() {
            let mut received: BTreeMap<PeerName, usize> = BTreeMap::new();
            let mut queue = VecDeque::from([source]);
            while let Some(p) = queue.pop_front() {
                for child in routes[&p].broadcast_children(source) {
                    assert!(adj[&p].contains(&child), "children are neighbors");
                    *received.entry(child).or_default() += 1;
                    queue.push_back(child);
                }
            }
            assert_eq!(received.len(), adj.len() - 1, "everyone but the source");
            assert!(received.values().all(|&c| c == 1), "nobody twice");
        }
    }
}
