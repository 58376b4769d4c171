//! Ten IPAM agents on a simulated network with random partitions, crashes
//! and restarts from their last stored snapshot, over thousands of
//! allocations: no address is ever handed to two containers, every
//! allocation survives restarts, and when the network heals all rings
//! agree and account for the whole range.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use weft_ipam::{Config, Init, Ipam, IpamError, Outgoing, Peer};

const N: usize = 10;

struct Node {
    peer: Peer,
    ipam: Option<Ipam>,
    stored: Option<Vec<u8>>,
    /// Requests in flight: op → container.
    ops: BTreeMap<u64, String>,
}

enum Kind {
    Gossip,
    Broadcast,
    Unicast,
}

struct Sim {
    nodes: Vec<Node>,
    group: [u8; N],
    queue: VecDeque<(usize, usize, Kind, Vec<u8>)>,
    now: Instant,
    rng: u64,
    /// The truth: address → (node, container) for every successful
    /// allocation not yet released.
    held: BTreeMap<Ipv4Addr, (usize, String)>,
    ok: u64,
    failed: BTreeMap<String, u64>,
    range: ipnet::Ipv4Net,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let start = Instant::now();
        let range: ipnet::Ipv4Net = "10.40.0.0/21".parse().unwrap();
        let nodes = (0..N)
            .map(|i| Node {
                peer: Peer(0x100 + i as u64),
                ipam: None,
                stored: None,
                ops: BTreeMap::new(),
            })
            .collect();
        let mut sim = Sim {
            nodes,
            group: [0; N],
            queue: VecDeque::new(),
            now: start,
            rng: seed,
            held: BTreeMap::new(),
            ok: 0,
            failed: BTreeMap::new(),
            range,
        };
        for i in 0..N {
            sim.start(i);
        }
        sim.peers_changed();
        sim
    }

    fn random(&mut self, n: u64) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }

    fn config(&self, i: usize) -> Config {
        let mut c = Config::new(self.nodes[i].peer, self.range);
        c.nickname = format!("host{i}");
        // Seven of the ten vote on the first division; the others are
        // late joiners that get space from them.
        c.init = if i < 7 {
            Init::Consensus(7)
        } else {
            Init::Observer
        };
        c.reclaim_after = Some(Duration::from_secs(30));
        c.request_timeout = Duration::from_secs(20);
        c.seed = 77 + i as u64;
        c
    }

    fn start(&mut self, i: usize) {
        let config = self.config(i);
        let ipam = match &self.nodes[i].stored {
            Some(bytes) => Ipam::restore(config, self.now, bytes).expect("restores"),
            None => Ipam::new(config, self.now).unwrap(),
        };
        self.nodes[i].ipam = Some(ipam);
        self.nodes[i].ops.clear();
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].ipam = None;
        self.queue.retain(|(f, t, _, _)| *f != i && *t != i);
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.nodes[a].ipam.is_some()
            && self.nodes[b].ipam.is_some()
            && self.group[a] == self.group[b]
    }

    fn peers_changed(&mut self) {
        let now = self.now;
        for i in 0..N {
            let set: BTreeSet<Peer> = (0..N)
                .filter(|&j| j != i && self.reachable(i, j))
                .map(|j| self.nodes[j].peer)
                .collect();
            if let Some(ipam) = &mut self.nodes[i].ipam {
                ipam.on_peers_changed(now, &set);
            }
        }
        // New neighbors exchange their whole state, as the mesh does.
        for i in 0..N {
            let state = self.nodes[i].ipam.as_ref().and_then(Ipam::full_state);
            if let Some(s) = state {
                for j in 0..N {
                    if j != i && self.reachable(i, j) {
                        self.queue.push_back((i, j, Kind::Gossip, s.clone()));
                    }
                }
            }
        }
        self.pump();
    }

    /// Stores what must be stored, collects results and queues messages.
    fn outputs(&mut self, i: usize) {
        let Some(ipam) = &mut self.nodes[i].ipam else {
            return;
        };
        if ipam.dirty() {
            self.nodes[i].stored = Some(ipam.snapshot());
            let ipam = self.nodes[i].ipam.as_mut().unwrap();
            ipam.saved();
        }
        let ipam = self.nodes[i].ipam.as_mut().unwrap();
        let done = ipam.take_done();
        let mut out = Vec::new();
        while let Some(o) = ipam.poll_outgoing() {
            out.push(o);
        }
        for d in done {
            let Some(container) = self.nodes[i].ops.remove(&d.op) else {
                continue;
            };
            match d.result {
                Ok(a) => {
                    if let Some(prev) = self.held.get(&a.addr) {
                        assert_eq!(
                            prev,
                            &(i, container.clone()),
                            "DUPLICATE: {} handed to node {i} container {container}, already held by {prev:?}",
                            a.addr
                        );
                    }
                    assert!(self.range.contains(&a.addr));
                    self.held.insert(a.addr, (i, container));
                    self.ok += 1;
                }
                Err(e) => {
                    let kind = match e {
                        IpamError::NoSpace { .. } => "no-space",
                        IpamError::Timeout { .. } => "timeout",
                        IpamError::AddressInUse { .. } => "in-use",
                        other => panic!("unexpected error {other}"),
                    };
                    *self.failed.entry(kind.into()).or_default() += 1;
                }
            }
        }
        for o in out {
            match o {
                Outgoing::Gossip(b) => {
                    for j in 0..N {
                        if j != i && self.reachable(i, j) {
                            self.queue.push_back((i, j, Kind::Gossip, b.clone()));
                        }
                    }
                }
                Outgoing::Broadcast(b) => {
                    for j in 0..N {
                        if j != i && self.reachable(i, j) {
                            self.queue.push_back((i, j, Kind::Broadcast, b.clone()));
                        }
                    }
                }
                Outgoing::Unicast(p, b) => {
                    let j = self
                        .nodes
                        .iter()
                        .position(|n| n.peer == p)
                        .expect("known peer");
                    if self.reachable(i, j) {
                        self.queue.push_back((i, j, Kind::Unicast, b));
                    }
                }
            }
        }
    }

    /// Delivers messages, in a shuffled order, until none is left.
    fn pump(&mut self) {
        for i in 0..N {
            self.outputs(i);
        }
        let mut steps = 0;
        while !self.queue.is_empty() {
            steps += 1;
            assert!(steps < 1_000_000, "message storm");
            let pick = self.random(self.queue.len().min(4) as u64) as usize;
            let (from, to, kind, bytes) = self.queue.remove(pick).unwrap();
            if !self.reachable(from, to) {
                continue;
            }
            let now = self.now;
            let src = self.nodes[from].peer;
            let ipam = self.nodes[to].ipam.as_mut().unwrap();
            match kind {
                Kind::Gossip => {
                    if let Some(news) = ipam.on_gossip(now, src, &bytes).expect("valid gossip") {
                        for j in 0..N {
                            if j != to && j != from && self.reachable(to, j) {
                                self.queue.push_back((to, j, Kind::Gossip, news.clone()));
                            }
                        }
                    }
                }
                Kind::Broadcast => ipam
                    .on_broadcast(now, src, &bytes)
                    .expect("valid broadcast"),
                Kind::Unicast => ipam.on_unicast(now, src, &bytes).expect("valid unicast"),
            }
            self.outputs(to);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        for i in 0..N {
            if let Some(ipam) = &mut self.nodes[i].ipam {
                ipam.tick(now);
            }
        }
        self.pump();
    }

    fn allocate(&mut self, i: usize, container: String) {
        let now = self.now;
        let Some(ipam) = &mut self.nodes[i].ipam else {
            return;
        };
        let op = ipam.allocate(now, &container, None);
        self.nodes[i].ops.insert(op, container);
        self.outputs(i);
        self.pump();
    }

    fn claim(&mut self, i: usize, container: String, addr: Ipv4Addr) {
        let now = self.now;
        let Some(ipam) = &mut self.nodes[i].ipam else {
            return;
        };
        let op = ipam.claim(now, &container, addr, None);
        self.nodes[i].ops.insert(op, container);
        self.outputs(i);
        self.pump();
    }

    fn release(&mut self, addr: Ipv4Addr) {
        let (i, container) = self.held[&addr].clone();
        let now = self.now;
        let Some(ipam) = &mut self.nodes[i].ipam else {
            return; // the host is down; its containers stay.
        };
        let released = ipam.release(now, &container, Some(addr));
        assert_eq!(released, vec![addr], "node {i} forgot {container}'s {addr}");
        self.held.remove(&addr);
        self.outputs(i);
        self.pump();
    }

    /// Every live node holds exactly what the truth says it does.
    fn check_holdings(&self) {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(ipam) = &node.ipam else { continue };
            let have: BTreeSet<(String, Ipv4Addr)> = ipam
                .handles()
                .iter()
                .flat_map(|(c, set)| set.iter().map(move |a| (c.clone(), Ipv4Addr::from(*a))))
                .collect();
            let want: BTreeSet<(String, Ipv4Addr)> = self
                .held
                .iter()
                .filter(|(_, (n, _))| *n == i)
                .map(|(a, (_, c))| (c.clone(), *a))
                .collect();
            assert_eq!(
                have, want,
                "node {i}'s addresses differ from what it handed out"
            );
        }
    }
}

fn run(seed: u64, ops: usize) -> Sim {
    let mut sim = Sim::new(seed);
    let mut next_container = 0u64;
    for step in 0..ops {
        match sim.random(100) {
            0..=59 => {
                let i = sim.random(N as u64) as usize;
                next_container += 1;
                sim.allocate(i, format!("c{next_container}"));
            }
            60..=61 => {
                // Asking again for a container that has an address gives
                // the same address.
                if let Some((addr, (i, c))) = sim.held.iter().next().map(|(a, v)| (*a, v.clone()))
                    && sim.nodes[i].ipam.is_some()
                {
                    sim.allocate(i, c);
                    assert_eq!(sim.held.get(&addr).map(|v| v.0), Some(i));
                }
            }
            62..=64 => {
                let i = sim.random(N as u64) as usize;
                let addr =
                    Ipv4Addr::from(u32::from(sim.range.network()) + 1 + sim.random(2000) as u32);
                next_container += 1;
                sim.claim(i, format!("c{next_container}"), addr);
            }
            65..=84 => {
                if !sim.held.is_empty() {
                    let k = sim.random(sim.held.len() as u64) as usize;
                    let addr = *sim.held.keys().nth(k).unwrap();
                    sim.release(addr);
                }
            }
            85..=88 => {
                // A new partition: random groups, sometimes all together.
                let groups: u8 = [1, 1, 2, 2, 3][sim.random(5) as usize];
                for g in 0..N {
                    sim.group[g] = sim.random(u64::from(groups)) as u8;
                }
                sim.peers_changed();
            }
            89..=90 => {
                let i = sim.random(N as u64) as usize;
                if sim.nodes[i].ipam.is_some() {
                    sim.crash(i);
                    sim.peers_changed();
                }
            }
            _ => {
                // Crashed routers come back (systemd restarts them).
                for i in 0..N {
                    if sim.nodes[i].ipam.is_none() && sim.random(3) == 0 {
                        sim.start(i);
                        sim.peers_changed();
                    }
                }
                let secs = 1 + sim.random(30);
                sim.advance(Duration::from_secs(secs));
            }
        }
        if step % 50 == 0 {
            sim.check_holdings();
        }
    }
    // Heal: everyone up, one network, time to settle.
    for i in 0..N {
        if sim.nodes[i].ipam.is_none() {
            sim.start(i);
        }
    }
    sim.group = [0; N];
    sim.peers_changed();
    for _ in 0..60 {
        sim.advance(Duration::from_secs(2));
    }
    sim.check_holdings();
    sim
}

fn check_converged(sim: &Sim) {
    let rings: Vec<_> = sim
        .nodes
        .iter()
        .map(|n| n.ipam.as_ref().unwrap().ring().expect("a ring").clone())
        .collect();
    for r in &rings[1..] {
        assert_eq!(r, &rings[0], "rings differ after healing");
    }
    // The whole range is accounted for: every block has one owner, a peer
    // of the mesh, and the owners' shares add up to the range.
    let peers: BTreeSet<Peer> = sim.nodes.iter().map(|n| n.peer).collect();
    let holdings = rings[0].holdings();
    assert!(holdings.keys().all(|p| peers.contains(p)));
    let blocks: u32 = holdings.values().map(|h| h.blocks).sum();
    assert_eq!(blocks, rings[0].layout().block_count());
    // Every held address is inside the range, and every node's status
    // agrees on how many addresses are in use.
    let in_use = sim.held.len() as u64;
    for n in &sim.nodes {
        let st = n.ipam.as_ref().unwrap().status(sim.now);
        let counted: u64 = st.peers.iter().map(|p| p.in_use_in_blocks).sum();
        assert_eq!(counted, in_use, "status of {} miscounts", n.peer);
        let free: u64 = st.peers.iter().map(|p| p.free).sum();
        assert_eq!(free + in_use, 1 << (32 - sim.range.prefix_len()));
    }
}

#[test]
fn no_duplicates_through_partitions_crashes_and_restarts() {
    let mut total = 0;
    for seed in [1, 2, 3] {
        let sim = run(seed, 3000);
        check_converged(&sim);
        eprintln!(
            "seed {seed}: {} allocations, {} held at the end, failures {:?}",
            sim.ok,
            sim.held.len(),
            sim.failed
        );
        assert!(sim.ok > 1000, "too few allocations succeeded: {}", sim.ok);
        total += sim.ok;
    }
    assert!(total > 3000);
}

#[test]
fn allocation_after_healing_always_succeeds() {
    // After the storm, every peer can allocate again (space is obtained
    // from whoever has it).
    let mut sim = run(9, 1500);
    for i in 0..N {
        sim.allocate(i, format!("after{i}"));
        sim.advance(Duration::from_secs(2));
        assert!(
            sim.held
                .values()
                .any(|(n, c)| *n == i && c == &format!("after{i}")),
            "node {i} could not allocate after healing: {:?}",
            sim.failed
        );
    }
    check_converged(&sim);
}
