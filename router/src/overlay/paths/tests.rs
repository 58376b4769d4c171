use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::*;
use crate::overlay::heartbeat::VxlanState;

/// What the underlay between two hosts lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    /// vxlan at all, and at full size.
    vxlan: bool,
    vxlan_full: bool,
    /// The userspace path's UDP.
    udp: bool,
}

const HEALTHY: Link = Link {
    vxlan: true,
    vxlan_full: true,
    udp: true,
};

/// One router's machine and what its planes and mesh were told.
struct Node {
    paths: DataPaths,
    /// Its fast datapath is up.
    datapath: bool,
    /// Its vxlan device is up.
    device: bool,
    userspace: BTreeMap<PeerName, Start>,
    /// Peers probed by its kernel plane, whichever it runs.
    tunnels: BTreeSet<PeerName>,
    on_fastdp: BTreeSet<PeerName>,
    on_device: BTreeSet<PeerName>,
    usable: BTreeMap<PeerName, bool>,
}

/// Routers of a simulated mesh, their connections and links.
struct Sim {
    nodes: Vec<Node>,
    /// Connection id -> (from, to): the same id at both ends.
    conns: BTreeMap<ConnId, (usize, usize)>,
    links: BTreeMap<(usize, usize), Link>,
    next_conn: ConnId,
    rng: SmallRng,
    password: bool,
}

fn name(i: usize) -> PeerName {
    PeerName::from_u64(0x0200_0000_0000 + i as u64)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1 + i as u8), 6783))
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// `datapath(i)`: whether router `i`'s kernel has a datapath.
    fn new(n: usize, datapath: impl Fn(usize) -> bool, password: bool, trusted: &[&str]) -> Sim {
        Sim::with_kernels(
            n,
            |i| datapath(i).then_some(Overlay::Fastdp),
            password,
            trusted,
        )
    }

    /// `kernel(i)`: the kernel plane router `i` runs, if any.
    fn with_kernels(
        n: usize,
        kernel: impl Fn(usize) -> Option<Overlay>,
        password: bool,
        trusted: &[&str],
    ) -> Sim {
        let nodes = (0..n)
            .map(|i| {
                let datapath = kernel(i) == Some(Overlay::Fastdp);
                let device = kernel(i) == Some(Overlay::Vxlan);
                Node {
                    paths: DataPaths::new(DataPathsConfig {
                        udp_port: 6783,
                        fastdp_port: datapath.then_some(6784),
                        trusted_subnets: trusted.iter().map(|t| t.parse().unwrap()).collect(),
                        fastdp: datapath,
                        vxlan_device_port: device.then_some(6784),
                    }),
                    datapath,
                    device,
                    userspace: BTreeMap::new(),
                    tunnels: BTreeSet::new(),
                    on_fastdp: BTreeSet::new(),
                    on_device: BTreeSet::new(),
                    usable: BTreeMap::new(),
                }
            })
            .collect();
        Sim {
            nodes,
            conns: BTreeMap::new(),
            links: BTreeMap::new(),
            next_conn: 1,
            rng: SmallRng::seed_from_u64(20),
            password,
        }
    }

    fn link(&self, a: usize, b: usize) -> Link {
        self.links.get(&pair(a, b)).copied().unwrap_or(HEALTHY)
    }

    fn keys(&self) -> Option<DataKeys> {
        self.password.then(|| DataKeys {
            send: weft_crypto::SecretKey::from_bytes([1; 32]),
            recv: weft_crypto::SecretKey::from_bytes([2; 32]),
        })
    }

    fn connect(&mut self, a: usize, b: usize) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(conn, (a, b));
        for (me, other) in [(a, b), (b, a)] {
            let session = self.rng.random::<u32>().max(1);
            let keys = self.keys();
            self.nodes[me].paths.handle(Event::Connected(Connected {
                conn,
                peer: name(other),
                remote: addr(other),
                local: addr(me),
                keys,
                current: Some(conn),
                session,
                version: OFFER_VERSION,
            }));
        }
        self.settle();
        conn
    }

    fn connect_all(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                self.connect(a, b);
            }
        }
    }

    /// Every link as `pick` draws it from the sim's random source, checked;
    /// then every link healed, checked.
    fn break_and_heal(&mut self, round: usize, pick: impl Fn(&mut SmallRng) -> Link) {
        let n = self.nodes.len();
        for a in 0..n {
            for b in a + 1..n {
                let link = pick(&mut self.rng);
                self.links.insert((a, b), link);
            }
        }
        self.heartbeats();
        self.check(&format!("round {round}: links broken"));
        self.links.clear();
        self.heartbeats();
        self.check(&format!("round {round}: links healed"));
    }

    fn close(&mut self, conn: ConnId) {
        let (a, b) = self.conns.remove(&conn).expect("a known connection");
        for me in [a, b] {
            self.nodes[me].paths.handle(Event::Closed { conn });
        }
        self.settle();
    }

    /// Carries out every action until none is left: offers cross their
    /// connections, the rest is recorded.
    fn settle(&mut self) {
        loop {
            let mut quiet = true;
            for me in 0..self.nodes.len() {
                while let Some(action) = self.nodes[me].paths.poll() {
                    quiet = false;
                    self.act(me, action);
                }
            }
            if quiet {
                return;
            }
        }
    }

    fn act(&mut self, me: usize, action: Action) {
        let node = &mut self.nodes[me];
        match action {
            Action::Send { conn, message } => {
                let ControlMessage::DataPathOffer {
                    udp_port,
                    session,
                    encrypt,
                    fastdp_port,
                    vxlan_device_port,
                } = message
                else {
                    panic!("only offers are sent: {message:?}");
                };
                let (a, b) = self.conns[&conn];
                let other = if a == me { b } else { a };
                self.nodes[other].paths.handle(Event::Offered {
                    conn,
                    current: Some(conn),
                    offer: PeerOffer {
                        udp_port,
                        session,
                        encrypt,
                        vxlan_port: fastdp_port,
                        vxlan_device_port,
                    },
                });
            }
            Action::StartUserspace(start) => {
                node.userspace.insert(start.peer, start);
            }
            Action::StartFastdp(tunnel) => {
                assert!(node.paths.config.fastdp, "a tunnel without a datapath");
                node.tunnels.insert(tunnel.name);
            }
            Action::StartVxlanDevice(tunnel) => {
                assert!(
                    node.paths.config.vxlan_device_port.is_some(),
                    "a tunnel without a vxlan device"
                );
                node.tunnels.insert(tunnel.name);
            }
            Action::Stop(peer) => {
                node.userspace.remove(&peer);
                node.tunnels.remove(&peer);
                node.usable.remove(&peer);
            }
            Action::OnFastdp(set) => node.on_fastdp = set,
            Action::OnVxlanDevice(set) => node.on_device = set,
            Action::Usable { peer, usable } => {
                node.usable.insert(peer, usable);
            }
        }
    }

    /// One round of heartbeats on every started path, as the links let
    /// them through.
    fn heartbeats(&mut self) {
        for me in 0..self.nodes.len() {
            let peers: Vec<PeerName> = self.nodes[me].userspace.keys().copied().collect();
            for peer in peers {
                let other = self.index(peer);
                let link = self.link(me, other);
                let tunnels_both = self.nodes[me].tunnels.contains(&peer)
                    && self.nodes[other].tunnels.contains(&name(me));
                let vxlan = if tunnels_both && link.vxlan {
                    VxlanState::Up {
                        full_size: link.vxlan_full,
                    }
                } else {
                    VxlanState::Down
                };
                let paths = &mut self.nodes[me].paths;
                paths.handle(Event::Vxlan { peer, state: vxlan });
                paths.handle(Event::Userspace(PathReport {
                    peer,
                    usable: link.udp,
                    path_mtu: link.udp.then_some(1500),
                    reason: (!link.udp).then(|| "no UDP heartbeats".into()),
                }));
            }
        }
        self.settle();
    }

    fn index(&self, peer: PeerName) -> usize {
        (0..self.nodes.len())
            .find(|i| name(*i) == peer)
            .expect("a peer of the sim")
    }

    /// The overlay and reason a connection must have, from first
    /// principles.
    fn expected(&self, me: usize, other: usize) -> (Overlay, Option<Reason>) {
        let link = self.link(me, other);
        let (a, b) = (&self.nodes[me], &self.nodes[other]);
        let shared = if a.datapath && b.datapath {
            Some(Overlay::Fastdp)
        } else if a.device && b.device {
            Some(Overlay::Vxlan)
        } else {
            None
        };
        let reason = match shared {
            None if !a.datapath && !a.device => Reason::NoDatapath,
            None if a.datapath => Reason::PeerWithoutFastdp,
            None => Reason::PeerWithoutVxlanDevice,
            Some(_) if self.password => Reason::EncryptionRequired,
            Some(_) if !link.vxlan => Reason::VxlanBlocked,
            Some(_) if !link.vxlan_full => Reason::MtuTooSmall,
            Some(kernel) => return (kernel, None),
        };
        (Overlay::Userspace, Some(reason))
    }

    /// Every connected pair is on the overlay it must be, the planes know
    /// the fast datapath's peers, and the mesh knows which carry data.
    fn check(&self, when: &str) {
        for (&conn, &(a, b)) in &self.conns {
            for (me, other) in [(a, b), (b, a)] {
                let node = &self.nodes[me];
                let p = node
                    .paths
                    .peer(name(other))
                    .unwrap_or_else(|| panic!("{when}: {me}->{other} (conn {conn}) has no path"));
                let want = self.expected(me, other);
                assert_eq!(
                    (p.overlay(), p.reason()),
                    want,
                    "{when}: {me}->{other} with {:?}",
                    self.link(me, other)
                );
                assert_eq!(
                    node.on_fastdp.contains(&name(other)),
                    want.0 == Overlay::Fastdp,
                    "{when}: {me}'s planes were told the wrong fastdp set for {other}"
                );
                assert_eq!(
                    node.on_device.contains(&name(other)),
                    want.0 == Overlay::Vxlan,
                    "{when}: {me}'s device was told the wrong set for {other}"
                );
                // The vxlan device needs the userspace path for floods.
                let usable = want.0 == Overlay::Fastdp || self.link(me, other).udp;
                assert_eq!(
                    node.usable.get(&name(other)),
                    Some(&usable),
                    "{when}: {me}->{other} usable"
                );
                assert_eq!(node.userspace[&name(other)].peer, name(other));
            }
        }
    }
}

#[test]
fn a_simulated_mesh_follows_links_that_fail_and_heal() {
    // Every fifth router's kernel has no datapath.
    let n = 16;
    let mut sim = Sim::new(n, |i| i % 5 != 4, false, &[]);
    sim.connect_all();
    // Before any heartbeat nothing carries data, and pairs that could use
    // the fast datapath are probing it.
    for (me, node) in sim.nodes.iter().enumerate() {
        for other in (0..n).filter(|o| *o != me) {
            let p = node.paths.peer(name(other)).unwrap();
            assert!(!p.usable() && !node.usable[&name(other)]);
            let probing = node.datapath && sim.nodes[other].datapath;
            assert_eq!(
                p.reason() == Some(Reason::VxlanProbing),
                probing,
                "{me}->{other}"
            );
        }
    }
    sim.heartbeats();
    sim.check("all links healthy");
    let fastdp_pairs = sim.nodes.iter().map(|n| n.on_fastdp.len()).sum::<usize>();
    assert_eq!(
        fastdp_pairs,
        13 * 12,
        "13 routers with a datapath, all pairs on fastdp"
    );

    for round in 0..5 {
        // A third of the links break in one of three ways.
        sim.break_and_heal(round, |rng| match rng.random_range(0..9) {
            0 => Link {
                vxlan: false,
                ..HEALTHY
            },
            1 => Link {
                vxlan_full: false,
                ..HEALTHY
            },
            2 => Link {
                vxlan: false,
                vxlan_full: false,
                udp: false,
            },
            _ => HEALTHY,
        });
    }

    // A datapath that goes away takes its router off fastdp everywhere it
    // decides, and back when it returns.
    sim.nodes[0].datapath = false;
    sim.nodes[0]
        .paths
        .handle(Event::LocalDatapath { up: false });
    sim.settle();
    assert!(sim.nodes[0].on_fastdp.is_empty());
    sim.nodes[0].datapath = true;
    sim.nodes[0].paths.handle(Event::LocalDatapath { up: true });
    sim.heartbeats();
    sim.check("datapath back");

    // Connections that close stop their paths; new ones start again.
    let conns: Vec<ConnId> = sim.conns.keys().copied().filter(|c| c % 3 == 0).collect();
    for conn in &conns {
        let (a, b) = sim.conns[conn];
        sim.close(*conn);
        assert!(!sim.nodes[a].userspace.contains_key(&name(b)));
        assert!(!sim.nodes[a].on_fastdp.contains(&name(b)));
        assert!(sim.nodes[a].paths.peer(name(b)).is_none());
        sim.connect(a, b);
    }
    sim.heartbeats();
    sim.check("after reconnecting");
}

#[test]
fn a_mesh_of_fastdp_vxlan_device_and_userspace_hosts_finds_each_pair_s_kernel_path() {
    // Router i runs the fast datapath (i % 3 == 0), the vxlan device
    // (i % 3 == 1) or no kernel plane at all.
    let kernel = |i: usize| match i % 3 {
        0 => Some(Overlay::Fastdp),
        1 => Some(Overlay::Vxlan),
        _ => None,
    };
    let n = 30;
    let mut sim = Sim::with_kernels(n, kernel, false, &[]);
    sim.connect_all();
    sim.heartbeats();
    sim.check("all links healthy");
    let count = |sim: &Sim, f: fn(&Node) -> usize| sim.nodes.iter().map(f).sum::<usize>();
    assert_eq!(count(&sim, |n| n.on_fastdp.len()), 10 * 9);
    assert_eq!(count(&sim, |n| n.on_device.len()), 10 * 9);
    // Only pairs of one kind were probed at all.
    for (me, node) in sim.nodes.iter().enumerate() {
        for peer in &node.tunnels {
            assert_eq!(kernel(me), kernel(sim.index(*peer)), "{me} probed {peer}");
        }
    }
    for round in 0..4 {
        // vxlan blocked on a third of the links.
        sim.break_and_heal(round, |rng| {
            if rng.random_range(0..3) == 0 {
                Link {
                    vxlan: false,
                    ..HEALTHY
                }
            } else {
                HEALTHY
            }
        });
    }
    // A vxlan device that cannot be put back takes its router's pairs to
    // userspace with the reason, and they return with it.
    sim.nodes[1].device = false;
    sim.nodes[1]
        .paths
        .handle(Event::LocalVxlanDevice { up: false });
    sim.settle();
    assert!(sim.nodes[1].on_device.is_empty());
    let p = sim.nodes[1].paths.peer(name(4)).unwrap();
    assert_eq!(
        (p.overlay(), p.reason()),
        (Overlay::Userspace, Some(Reason::NoDatapath))
    );
    sim.nodes[1].device = true;
    sim.nodes[1]
        .paths
        .handle(Event::LocalVxlanDevice { up: true });
    sim.heartbeats();
    sim.check("device back");
    assert_eq!(sim.nodes[1].on_device.len(), 9);
}

#[test]
fn a_password_keeps_data_on_the_userspace_path_except_between_trusted_subnets() {
    let mut sim = Sim::new(3, |_| true, true, &[]);
    sim.connect(0, 1);
    sim.heartbeats();
    sim.check("encrypted");
    assert!(sim.nodes[0].tunnels.is_empty(), "no tunnel for sealed data");
    assert!(sim.nodes[0].userspace[&name(1)].keys.is_some());

    let mut trusted = Sim::new(2, |_| true, true, &["192.0.2.0/24"]);
    trusted.connect(0, 1);
    trusted.heartbeats();
    let p = trusted.nodes[0].paths.peer(name(1)).unwrap();
    assert!(!p.sealed);
    assert_eq!(p.overlay(), Overlay::Fastdp);
}

#[test]
fn offers_name_our_ports_and_the_vxlan_port_only_while_the_datapath_is_up() {
    let mut paths = DataPaths::new(DataPathsConfig {
        udp_port: 7000,
        fastdp_port: Some(7001),
        trusted_subnets: Vec::new(),
        fastdp: true,
        vxlan_device_port: None,
    });
    let connected_as = |conn, current, session| {
        Event::Connected(Connected {
            conn,
            peer: name(conn as usize),
            remote: addr(conn as usize),
            local: addr(0),
            keys: None,
            current: Some(current),
            session,
            version: OFFER_VERSION,
        })
    };
    let connected = |conn, session| connected_as(conn, conn, session);
    paths.handle(connected(1, 77));
    assert_eq!(
        paths.poll(),
        Some(Action::Send {
            conn: 1,
            message: ControlMessage::DataPathOffer {
                udp_port: 7000,
                session: 77,
                encrypt: false,
                fastdp_port: Some(7001),
                vxlan_device_port: None,
            }
        })
    );
    paths.handle(Event::LocalDatapath { up: false });
    paths.handle(connected(2, 78));
    assert!(matches!(
        paths.poll(),
        Some(Action::Send {
            message: ControlMessage::DataPathOffer {
                fastdp_port: None,
                vxlan_device_port: None,
                ..
            },
            ..
        })
    ));
    // A connection the mesh did not keep makes no offer.
    paths.handle(connected_as(3, 9, 79));
    assert_eq!(paths.poll(), None);
    // The peer's offer starts the userspace path first, its tunnel next.
    paths.handle(Event::LocalDatapath { up: true });
    paths.handle(Event::Offered {
        conn: 1,
        current: Some(1),
        offer: PeerOffer {
            udp_port: 6000,
            session: 5,
            encrypt: false,
            vxlan_port: Some(6001),
            vxlan_device_port: None,
        },
    });
    match paths.poll() {
        Some(Action::StartUserspace(start)) => {
            assert_eq!(
                start.addr,
                SocketAddr::from((Ipv4Addr::new(192, 0, 2, 2), 6000))
            );
            assert_eq!((start.send_session, start.recv_session), (5, 77));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(paths.poll(), Some(Action::StartFastdp(t)) if t.name == name(1)));
    assert_eq!(
        paths.poll(),
        Some(Action::Usable {
            peer: name(1),
            usable: false
        })
    );
    assert_eq!(paths.poll(), None);
    assert_eq!(
        paths.peer(name(1)).unwrap().reason(),
        Some(Reason::VxlanProbing)
    );
}

#[test]
fn a_peer_of_the_previous_protocol_gets_the_offer_it_reads_and_no_device() {
    let mut paths = DataPaths::new(DataPathsConfig {
        udp_port: 7000,
        fastdp_port: None,
        trusted_subnets: Vec::new(),
        fastdp: false,
        vxlan_device_port: Some(7001),
    });
    let connected = |conn: ConnId, version| {
        Event::Connected(Connected {
            conn,
            peer: name(conn as usize),
            remote: addr(conn as usize),
            local: addr(0),
            keys: None,
            current: Some(conn),
            session: 77,
            version,
        })
    };
    paths.handle(connected(1, OFFER_VERSION - 1));
    assert_eq!(
        paths.poll(),
        Some(Action::Send {
            conn: 1,
            message: ControlMessage::DataPath {
                udp_port: 7000,
                session: 77,
                encrypt: false,
                vxlan_port: None,
            }
        })
    );
    paths.handle(connected(2, OFFER_VERSION));
    assert!(matches!(
        paths.poll(),
        Some(Action::Send {
            message: ControlMessage::DataPathOffer {
                vxlan_device_port: Some(7001),
                fastdp_port: None,
                ..
            },
            ..
        })
    ));
    // The new peer's offer names its device: probed through ours.
    paths.handle(Event::Offered {
        conn: 2,
        current: Some(2),
        offer: PeerOffer {
            udp_port: 6000,
            session: 5,
            encrypt: false,
            vxlan_port: None,
            vxlan_device_port: Some(6001),
        },
    });
    assert!(matches!(paths.poll(), Some(Action::StartUserspace(_))));
    assert!(matches!(paths.poll(), Some(Action::StartVxlanDevice(t)) if t.name == name(2)));
}
