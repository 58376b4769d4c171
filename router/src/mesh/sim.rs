//! A simulated network of routers: every [`Mesh`] runs unchanged, messages
//! take a fixed latency, time is simulated, and everything is
//! deterministic for a given seed. Tests and benchmarks of hundreds of
//! routers run on it in memory.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::{ConnId, ControlMessage, Input, Mesh, MeshConfig, Output, Source};
use crate::identity::{PeerIdentity, PeerName};

/// Where a connection lands: router index and its connection id there.
type End = (usize, ConnId);

enum Event {
    Input(usize, Input),
    /// Router `i` asked to be woken at this time.
    Wake(usize),
    /// A connection attempt from `from` reaches its target.
    Arrive {
        from: usize,
        target: SocketAddr,
    },
}

/// One simulated router.
pub struct SimRouter {
    pub mesh: Mesh,
    pub address: SocketAddr,
    pub up: bool,
    /// The wake-up already scheduled, so each router has at most one.
    wake: Option<Instant>,
    /// Control messages and their encoded bytes sent by this router.
    pub messages: u64,
    pub bytes: u64,
    /// Connection attempts it made.
    pub attempts: u64,
}

pub struct Network {
    pub start: Instant,
    pub now: Instant,
    pub latency: Duration,
    pub routers: Vec<SimRouter>,
    by_address: BTreeMap<SocketAddr, usize>,
    links: BTreeMap<End, End>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    next_conn: ConnId,
    rng: SmallRng,
    /// Pairs of routers that cannot reach each other.
    cut: BTreeSet<(usize, usize)>,
}

fn address_of(index: usize) -> SocketAddr {
    let [_, b, c, d] = (index as u32 + 1).to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(10, b, c, d), 6783))
}

impl Network {
    pub fn new(seed: u64) -> Network {
        let start = Instant::now();
        Network {
            start,
            now: start,
            latency: Duration::from_millis(1),
            routers: Vec::new(),
            by_address: BTreeMap::new(),
            links: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            rng: SmallRng::seed_from_u64(seed),
            cut: BTreeSet::new(),
        }
    }

    /// The config a router at `index` starts with; `tweak` may change it.
    pub fn config(&mut self, index: usize) -> MeshConfig {
        let identity = PeerIdentity {
            name: PeerName::from_u64(0x0200_0000_0000 + index as u64 + 1),
            nickname: format!("sim{}", index + 1),
            uid: self.rng.random(),
            listen_port: 6783,
            admission: Vec::new(),
        };
        let elapsed = (self.now - self.start).as_millis() as u64;
        MeshConfig::new(identity, 1_000_000 + elapsed, self.rng.random())
    }

    pub fn add_router(&mut self, tweak: impl FnOnce(&mut MeshConfig)) -> usize {
        let index = self.routers.len();
        let mut config = self.config(index);
        tweak(&mut config);
        let address = address_of(index);
        self.by_address.insert(address, index);
        self.routers.push(SimRouter {
            mesh: Mesh::new(config, self.now),
            address,
            up: true,
            wake: None,
            messages: 0,
            bytes: 0,
            attempts: 0,
        });
        self.drain(index);
        index
    }

    /// Tells router `from` to connect to router `to`, as the command line
    /// or `weft connect` would.
    pub fn add_target(&mut self, from: usize, to: usize) {
        let address = self.routers[to].address;
        self.schedule(
            self.now,
            Event::Input(
                from,
                Input::AddTarget {
                    address,
                    source: Source::CommandLine,
                },
            ),
        );
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.routers[a].up && self.routers[b].up && !self.cut.contains(&(a.min(b), a.max(b)))
    }

    /// Runs until `deadline` (simulated).
    pub fn run_until(&mut self, deadline: Instant) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > deadline {
                break;
            }
            self.queue.pop();
            self.now = at;
            let event = self.events.remove(&seq).expect("scheduled event");
            self.process(event);
        }
        self.now = self.now.max(deadline);
    }

    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Input(i, input) => {
                if self.routers[i].up {
                    let now = self.now;
                    self.routers[i].mesh.handle(now, input);
                    self.drain(i);
                }
            }
            Event::Wake(i) => {
                if self.routers[i].wake == Some(self.now) {
                    self.routers[i].wake = None;
                    self.process(Event::Input(i, Input::Tick));
                }
            }
            Event::Arrive { from, target } => self.arrive(from, target),
        }
    }

    /// Carries out what router `i` asked for.
    fn drain(&mut self, i: usize) {
        while let Some(output) = self.routers[i].mesh.poll_output() {
            match output {
                Output::Connect { target } => {
                    self.routers[i].attempts += 1;
                    self.schedule(self.now + self.latency, Event::Arrive { from: i, target });
                }
                Output::Send { conn, message } => {
                    let size = message.encode().len() as u64;
                    self.routers[i].messages += 1;
                    self.routers[i].bytes += size;
                    if let Some(&(j, cj)) = self.links.get(&(i, conn))
                        && self.reachable(i, j)
                    {
                        let input = Input::Received { conn: cj, message };
                        self.schedule(self.now + self.latency, Event::Input(j, input));
                    }
                }
                Output::Close {
                    conn,
                    reason,
                    refuse,
                } => {
                    if let Some((j, cj)) = self.links.remove(&(i, conn)) {
                        self.links.remove(&(j, cj));
                        let at = self.now + self.latency;
                        if refuse {
                            let message = ControlMessage::Refuse {
                                reason: reason.clone(),
                            };
                            self.schedule(
                                at,
                                Event::Input(j, Input::Received { conn: cj, message }),
                            );
                        }
                        let reason = format!("closed by the peer: {reason}");
                        self.schedule(at, Event::Input(j, Input::Closed { conn: cj, reason }));
                    }
                }
            }
        }
        let next = self.routers[i].mesh.next_timeout().max(self.now);
        if self.routers[i].wake.is_none_or(|w| next < w) {
            self.routers[i].wake = Some(next);
            self.schedule(next, Event::Wake(i));
        }
    }

    fn arrive(&mut self, from: usize, target: SocketAddr) {
        let to = self.by_address.get(&target).copied();
        let Some(to) = to.filter(|&to| self.reachable(from, to)) else {
            let input = Input::ConnectFailed {
                target,
                peer: None,
                reason: "connection timed out".into(),
                refused: false,
            };
            self.schedule(self.now + self.latency, Event::Input(from, input));
            return;
        };
        let (a, b) = (self.next_conn, self.next_conn + 1);
        self.next_conn += 2;
        self.links.insert((from, a), (to, b));
        self.links.insert((to, b), (from, a));
        let at = self.now + self.latency;
        let (id_from, id_to) = (
            self.routers[from].mesh.identity().clone(),
            self.routers[to].mesh.identity().clone(),
        );
        let (addr_from, addr_to) = (self.routers[from].address, self.routers[to].address);
        let outbound = Input::Connected {
            conn: a,
            peer: id_to,
            address: addr_to,
            outbound: true,
            target: Some(target),
            encrypted: false,
        };
        let inbound = Input::Connected {
            conn: b,
            peer: id_from,
            address: addr_from,
            outbound: false,
            target: None,
            encrypted: false,
        };
        self.schedule(at, Event::Input(from, outbound));
        self.schedule(at, Event::Input(to, inbound));
    }

    /// Router `i` dies: its peers see its connections close after
    /// `detection` (a reset at once, or a heartbeat timeout).
    pub fn kill(&mut self, i: usize, detection: Duration) {
        self.routers[i].up = false;
        let ends: Vec<(End, End)> = self
            .links
            .iter()
            .filter(|((r, _), _)| *r == i)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (mine, (j, cj)) in ends {
            self.links.remove(&mine);
            self.links.remove(&(j, cj));
            let reason = "connection lost".to_string();
            self.schedule(
                self.now + detection,
                Event::Input(j, Input::Closed { conn: cj, reason }),
            );
        }
    }

    /// Router `i` starts again with a new uid, with the same targets it was
    /// given before.
    pub fn restart(&mut self, i: usize, targets: &[usize]) {
        let name = self.routers[i].mesh.name();
        let mut config = self.config(i);
        config.identity.name = name;
        self.routers[i].mesh = Mesh::new(config, self.now);
        self.routers[i].up = true;
        self.routers[i].wake = None;
        self.drain(i);
        for &t in targets {
            self.add_target(i, t);
        }
    }

    /// Cuts (or heals) the network between two routers: their connection,
    /// if any, breaks after `detection`.
    pub fn set_cut(&mut self, a: usize, b: usize, cut: bool, detection: Duration) {
        let key = (a.min(b), a.max(b));
        if !cut {
            self.cut.remove(&key);
            return;
        }
        self.cut.insert(key);
        let ends: Vec<(End, End)> = self
            .links
            .iter()
            .filter(|((r, _), (s, _))| *r == a && *s == b)
            .map(|(x, y)| (*x, *y))
            .collect();
        for ((ra, ca), (rb, cb)) in ends {
            self.links.remove(&(ra, ca));
            self.links.remove(&(rb, cb));
            let reason = "connection lost".to_string();
            self.schedule(
                self.now + detection,
                Event::Input(
                    ra,
                    Input::Closed {
                        conn: ca,
                        reason: reason.clone(),
                    },
                ),
            );
            self.schedule(
                self.now + detection,
                Event::Input(rb, Input::Closed { conn: cb, reason }),
            );
        }
    }

    /// Whether every live router knows exactly the live routers, with the
    /// same version of every entry.
    pub fn converged(&self) -> bool {
        let live: BTreeSet<PeerName> = self
            .routers
            .iter()
            .filter(|r| r.up)
            .map(|r| r.mesh.name())
            .collect();
        let mut views = self
            .routers
            .iter()
            .filter(|r| r.up)
            .map(|r| r.mesh.topology().digest());
        let Some(first) = views.next() else {
            return true;
        };
        let names: BTreeSet<PeerName> = first.iter().map(|(n, _, _)| *n).collect();
        names == live && views.all(|v| v == first)
    }

    /// Runs until [`Network::converged`] holds (checked every `step`), or
    /// `limit` passes; returns the simulated time it took.
    pub fn run_until_converged(&mut self, step: Duration, limit: Duration) -> Option<Duration> {
        let began = self.now;
        while self.now - began < limit {
            self.run_for(step);
            if self.converged() {
                return Some(self.now - began);
            }
        }
        None
    }
}
