//! The switch in memory: routers joined by a simulated network whose links
//! can be cut, limited in size or tampered with, driven by a simulated
//! clock, with the control plane's part (data routes from the paths the
//! switches report usable) played by the simulator.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::*;
use crate::{
    liveness::PATH_HEARTBEAT_INTERVAL, mesh::routes::Adjacency,
    userspace::packet::testing::ipv4_frame,
};

fn name(i: usize) -> PeerName {
    PeerName::from_u64(i as u64 + 1)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i as u8 + 1], 6784))
}

/// A container's MAC on router `i`.
fn mac(i: usize, container: u8) -> Mac {
    [2, 0, 0, 0, i as u8 + 1, container]
}

type Mac = [u8; 6];

/// A UDP frame from `src` to `dst` carrying `payload_len` bytes.
fn frame(src: Mac, dst: Mac, payload_len: usize, df: bool) -> Vec<u8> {
    let mut udp = vec![0u8; 8 + payload_len];
    udp[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    let mut f = ipv4_frame(17, 7, df, &udp);
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// What the TAP would hand over for `frame`.
fn tap_read(frame: &[u8]) -> Vec<u8> {
    let mut read = VnetHdr::default().emit().to_vec();
    read.extend_from_slice(frame);
    read
}

/// What one switch wrote.
#[derive(Default)]
struct Recorder {
    sent: Vec<(SocketAddr, Vec<u8>, usize)>,
    bridge: Vec<Vec<u8>>,
}

impl Wire for Recorder {
    fn send(&mut self, addr: SocketAddr, datagrams: &[u8], size: usize) -> io::Result<usize> {
        self.sent.push((addr, datagrams.to_vec(), size));
        Ok(datagrams.len())
    }

    fn to_bridge(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bridge.push(bytes[VNET_HDR_LEN..].to_vec());
        Ok(())
    }
}

struct Node {
    switch: Switch,
    wire: Recorder,
    counters: Arc<Counters>,
    /// The last report per peer: whether its path is usable.
    usable: BTreeMap<PeerName, PathReport>,
}

/// A link's state, both ways.
#[derive(Clone, Copy, PartialEq)]
enum Link {
    Up,
    Cut,
    /// Datagrams larger than this IP packet size are lost.
    Mtu(usize),
    /// Every datagram has one byte changed on the way.
    Tampering,
}

struct Net {
    nodes: Vec<Node>,
    /// Control connections (the mesh's topology): who is a peer of whom.
    peers: BTreeSet<(usize, usize)>,
    links: BTreeMap<(usize, usize), Link>,
    now: Instant,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Net {
    /// `count` routers, peers as `edges` say, paths sealed if `sealed`.
    fn new(count: usize, edges: &[(usize, usize)], sealed: bool) -> Net {
        let now = Instant::now();
        let nodes = (0..count)
            .map(|i| {
                let counters = Arc::new(Counters::default());
                Node {
                    switch: Switch::new(
                        name(i),
                        1500,
                        SharedMacs::default(),
                        counters.clone(),
                        now,
                    ),
                    wire: Recorder::default(),
                    counters,
                    usable: BTreeMap::new(),
                }
            })
            .collect();
        let mut net = Net {
            nodes,
            peers: BTreeSet::new(),
            links: BTreeMap::new(),
            now,
        };
        for &(a, b) in edges {
            net.peers.insert(pair(a, b));
            for (me, other) in [(a, b), (b, a)] {
                // Sessions name the receiver's choice: 1000 * receiver + sender.
                let keys = sealed.then(|| {
                    let key = |from: usize, to: usize| {
                        weft_crypto::SecretKey::from_bytes([(from * 16 + to) as u8; 32])
                    };
                    DataKeys {
                        send: key(me, other),
                        recv: key(other, me),
                    }
                });
                let spec = PeerSpec {
                    name: name(other),
                    addr: addr(other),
                    send_session: (1000 * other + me) as u32,
                    recv_session: (1000 * me + other) as u32,
                    keys,
                };
                net.command(me, UserspaceCommand::AddPeer(spec));
            }
        }
        net.update_routes();
        net
    }

    fn command(&mut self, i: usize, command: UserspaceCommand) {
        let node = &mut self.nodes[i];
        node.switch
            .handle_command(self.now, command, &mut node.wire);
    }

    /// The control plane's part: data routes over the paths each switch
    /// reports usable (a path not yet measured counts, as in the router).
    fn update_routes(&mut self) {
        let mut adjacency = Adjacency::new();
        for &(a, b) in &self.peers {
            let up =
                |x: usize, y: usize| self.nodes[x].usable.get(&name(y)).is_none_or(|r| r.usable);
            if up(a, b) && up(b, a) {
                adjacency.entry(name(a)).or_default().insert(name(b));
                adjacency.entry(name(b)).or_default().insert(name(a));
            }
        }
        for i in 0..self.nodes.len() {
            let routes = Arc::new(Routes::compute(name(i), adjacency.clone()));
            self.command(i, UserspaceCommand::Routes(routes));
        }
    }

    fn link(&self, a: usize, b: usize) -> Link {
        self.links.get(&pair(a, b)).copied().unwrap_or(Link::Up)
    }

    /// A container on router `i` sends `frame`.
    fn container_sends(&mut self, i: usize, frame: &[u8]) {
        let node = &mut self.nodes[i];
        let mut read = tap_read(frame);
        node.switch
            .handle_bridge(self.now, &mut read, &mut node.wire);
        node.switch.flush(self.now, &mut node.wire);
        self.deliver();
    }

    /// Carries every datagram sent until the network is quiet.
    fn deliver(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for from in 0..self.nodes.len() {
                let sent = std::mem::take(&mut self.nodes[from].wire.sent);
                for (to_addr, mut datagrams, size) in sent {
                    moved = true;
                    let to = (0..self.nodes.len())
                        .find(|&j| addr(j) == to_addr)
                        .expect("sent to a router of the net");
                    let link = self.link(from, to);
                    for datagram in datagrams.chunks_mut(size) {
                        match link {
                            Link::Cut => continue,
                            Link::Mtu(mtu) if datagram.len() + encap::OUTER_IP_UDP_LEN > mtu => {
                                continue;
                            }
                            Link::Tampering => *datagram.last_mut().unwrap() ^= 1,
                            _ => {}
                        }
                        let node = &mut self.nodes[to];
                        let len = datagram.len();
                        node.switch.handle_datagrams(
                            self.now,
                            datagram,
                            len,
                            addr(from),
                            &mut node.wire,
                        );
                    }
                    let node = &mut self.nodes[to];
                    node.switch.flush(self.now, &mut node.wire);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never went quiet: a forwarding loop?");
    }

    /// Runs the clock on by `span`, waking each switch when it asks to be,
    /// and acting on the path changes they report.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let next = self
                .nodes
                .iter()
                .map(|n| n.switch.next_timeout())
                .min()
                .unwrap()
                .max(self.now);
            if next > end {
                self.now = end;
                return;
            }
            self.now = next;
            let mut changed = false;
            for node in &mut self.nodes {
                node.switch.handle_timeout(self.now, &mut node.wire);
                while let Some(report) = node.switch.poll_report() {
                    let was = node.usable.insert(report.peer, report.clone());
                    changed |= was.is_none_or(|w| w.usable != report.usable);
                }
            }
            self.deliver();
            if changed {
                self.update_routes();
                self.deliver();
            }
        }
    }

    fn bridge(&mut self, i: usize) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.nodes[i].wire.bridge)
    }

    /// Which routers' bridges got exactly `frame`, and how often.
    fn received(&mut self, frame: &[u8]) -> BTreeMap<usize, usize> {
        let mut got = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let n = self.bridge(i).iter().filter(|f| *f == frame).count();
            if n > 0 {
                got.insert(i, n);
            }
        }
        got
    }

    fn report(&self, i: usize, peer: usize) -> Option<&PathReport> {
        self.nodes[i].usable.get(&name(peer))
    }
}

fn full_mesh(count: usize) -> Vec<(usize, usize)> {
    (0..count)
        .flat_map(|a| (a + 1..count).map(move |b| (a, b)))
        .collect()
}

const BROADCAST: Mac = [0xff; 6];

#[test]
fn a_frame_floods_until_its_answer_teaches_the_way() {
    let mut net = Net::new(3, &full_mesh(3), false);
    net.run_for(Duration::from_secs(2));
    assert!(net.report(0, 1).is_some_and(|r| r.usable));

    let ask = frame(mac(0, 1), BROADCAST, 28, false);
    net.container_sends(0, &ask);
    assert_eq!(net.received(&ask), BTreeMap::from([(1, 1), (2, 1)]));

    let answer = frame(mac(1, 1), mac(0, 1), 28, false);
    net.container_sends(1, &answer);
    assert_eq!(
        net.received(&answer),
        BTreeMap::from([(0, 1)]),
        "router 1 learnt where mac(0, 1) lives"
    );
    let next = frame(mac(0, 1), mac(1, 1), 100, false);
    net.container_sends(0, &next);
    assert_eq!(net.received(&next), BTreeMap::from([(1, 1)]));

    let local = frame(mac(0, 2), mac(0, 1), 100, false);
    net.container_sends(0, &local);
    assert!(
        net.received(&local).is_empty(),
        "a frame between two containers of one host is the bridge's job"
    );
    let sent = net.nodes[0].counters.datagrams_sent.load(Ordering::Relaxed);
    assert!(sent > 0);
}

#[test]
fn a_broadcast_reaches_every_bridge_once_along_the_tree() {
    // A random connected mesh of 40 routers, each joined to a few others.
    let count = 40;
    let mut rng = SmallRng::seed_from_u64(25);
    let mut edges: BTreeSet<(usize, usize)> = (1..count)
        .map(|i| pair(i, rng.random_range(0..i)))
        .collect();
    for _ in 0..40 {
        let (a, b) = (rng.random_range(0..count), rng.random_range(0..count));
        if a != b {
            edges.insert(pair(a, b));
        }
    }
    let edges: Vec<_> = edges.into_iter().collect();
    let mut net = Net::new(count, &edges, true);
    net.run_for(Duration::from_secs(2));
    for origin in [0, 17, 39] {
        let hello = frame(mac(origin, 9), BROADCAST, 40, false);
        net.container_sends(origin, &hello);
        let expected: BTreeMap<usize, usize> = (0..count)
            .filter(|&i| i != origin)
            .map(|i| (i, 1))
            .collect();
        assert_eq!(net.received(&hello), expected, "from {origin}");
    }
    // Every router learnt where router 17's container lives: an answer
    // from the far side of the mesh goes to 17's bridge alone.
    let answer = frame(mac(39, 1), mac(17, 9), 40, false);
    net.container_sends(39, &answer);
    assert_eq!(net.received(&answer), BTreeMap::from([(17, 1)]));
}

#[test]
fn a_cut_link_is_reported_and_traffic_goes_around_it_until_it_heals() {
    let mut net = Net::new(4, &full_mesh(4), false);
    net.run_for(Duration::from_secs(2));
    // Router 1's container is known to router 0.
    net.container_sends(1, &frame(mac(1, 1), BROADCAST, 28, false));
    for i in 0..4 {
        net.bridge(i);
    }

    net.links.insert(pair(0, 1), Link::Cut);
    net.run_for(PATH_DEAD_AFTER + PATH_HEARTBEAT_INTERVAL * 2);
    let report = net.report(0, 1).expect("reported");
    assert!(!report.usable);
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("is UDP to 192.0.2.2:6784 blocked?")),
        "{report:?}"
    );
    assert!(net.report(1, 0).is_some_and(|r| !r.usable));
    assert!(net.report(0, 2).is_some_and(|r| r.usable), "others stay up");

    let data = frame(mac(0, 1), mac(1, 1), 200, false);
    net.container_sends(0, &data);
    assert_eq!(net.received(&data), BTreeMap::from([(1, 1)]), "relayed");
    let relayed: u64 = (2..4)
        .map(|i| net.nodes[i].counters.relayed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(relayed, 1, "by one of the other routers");

    net.links.remove(&pair(0, 1));
    net.run_for(PATH_HEARTBEAT_INTERVAL * 4);
    assert!(net.report(0, 1).is_some_and(|r| r.usable), "healed");
    net.container_sends(0, &data);
    assert_eq!(net.received(&data), BTreeMap::from([(1, 1)]));
    let relayed_after: u64 = (2..4)
        .map(|i| net.nodes[i].counters.relayed.load(Ordering::Relaxed))
        .sum();
    assert_eq!(relayed_after, 1, "direct again");
}

#[test]
fn the_path_mtu_is_found_and_big_packets_are_cut_or_refused() {
    let mut net = Net::new(2, &full_mesh(2), true);
    net.links.insert(pair(0, 1), Link::Mtu(1400));
    net.run_for(Duration::from_secs(10));
    let mtu = net.report(0, 1).and_then(|r| r.path_mtu);
    assert_eq!(mtu, Some(1400));
    net.container_sends(1, &frame(mac(1, 1), BROADCAST, 28, false));
    net.bridge(0);

    // May be fragmented: it arrives in pieces that fit.
    let big = frame(mac(0, 1), mac(1, 1), 1420, false);
    net.container_sends(0, &big);
    let pieces = net.bridge(1);
    assert!(pieces.len() >= 2, "{} pieces", pieces.len());
    assert_eq!(
        pieces.iter().map(|p| p.len() - 14 - 20).sum::<usize>(),
        big.len() - 14 - 20,
        "the pieces carry the whole payload"
    );
    assert_eq!(net.nodes[0].counters.fragmented.load(Ordering::Relaxed), 1);

    // May not: the sender hears "fragmentation needed" with the MTU.
    let df = frame(mac(0, 1), mac(1, 1), 1420, true);
    net.container_sends(0, &df);
    assert!(net.bridge(1).is_empty());
    let answers = net.bridge(0);
    assert_eq!(answers.len(), 1);
    let icmp = &answers[0][14 + 20..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, frag needed"
    );
    let next_mtu = u16::from_be_bytes([icmp[6], icmp[7]]);
    assert!(
        (1300..1400).contains(&next_mtu),
        "the MTU left inside the tunnel: {next_mtu}"
    );
}

#[test]
fn tampered_and_unknown_datagrams_are_dropped_and_counted() {
    let mut net = Net::new(2, &full_mesh(2), true);
    net.run_for(Duration::from_secs(2));
    net.links.insert(pair(0, 1), Link::Tampering);
    let data = frame(mac(0, 1), BROADCAST, 64, false);
    net.container_sends(0, &data);
    assert!(net.received(&data).is_empty());
    let dropped = &net.nodes[1].counters.dropped_unauthentic;
    assert_eq!(dropped.load(Ordering::Relaxed), 1);

    // A datagram with a session nobody has.
    let header = Header {
        kind: Kind::Frame,
        sealed: false,
        session: 77,
    };
    let mut stray = header.emit().to_vec();
    stray.extend_from_slice(&data);
    let node = &mut net.nodes[1];
    let len = stray.len();
    node.switch
        .handle_datagrams(net.now, &mut stray, len, addr(0), &mut node.wire);
    assert!(node.wire.bridge.is_empty());
    let unknown = &node.counters.dropped_unknown_session;
    assert_eq!(unknown.load(Ordering::Relaxed), 1);
    let mut short = vec![1u8, 2];
    node.switch
        .handle_datagrams(net.now, &mut short, 2, addr(0), &mut node.wire);
    assert_eq!(node.counters.dropped_malformed.load(Ordering::Relaxed), 1);
}

#[test]
fn a_first_frame_with_no_router_yet_is_held_then_sent() {
    let mut net = Net::new(2, &[], false);
    let arp = frame(mac(0, 1), BROADCAST, 28, false);
    let stale = frame(mac(0, 2), BROADCAST, 28, false);
    net.container_sends(0, &stale);
    net.run_for(HOLD_FOR + Duration::from_millis(100));
    net.container_sends(0, &arp);
    assert!(net.received(&arp).is_empty(), "nowhere to go yet");

    // The mesh comes up: the fresh frame goes, the stale one does not.
    net.peers.insert(pair(0, 1));
    for (me, other) in [(0, 1), (1, 0)] {
        let spec = PeerSpec {
            name: name(other),
            addr: addr(other),
            send_session: (1000 * other + me) as u32,
            recv_session: (1000 * me + other) as u32,
            keys: None,
        };
        net.command(me, UserspaceCommand::AddPeer(spec));
    }
    net.update_routes();
    net.deliver();
    assert_eq!(net.received(&arp), BTreeMap::from([(1, 1)]));
    assert!(net.received(&stale).is_empty());
    let released = &net.nodes[0].counters.held_released;
    assert_eq!(released.load(Ordering::Relaxed), 1);
}

#[test]
fn a_router_that_leaves_takes_its_macs_along() {
    let mut net = Net::new(3, &full_mesh(3), false);
    net.run_for(Duration::from_secs(2));
    net.container_sends(1, &frame(mac(1, 1), BROADCAST, 28, false));
    let data = frame(mac(0, 1), mac(1, 1), 50, false);
    net.container_sends(0, &data);
    assert_eq!(net.received(&data), BTreeMap::from([(1, 1)]));
    net.command(0, UserspaceCommand::RemovePeer(name(1)));
    net.container_sends(0, &data);
    assert_eq!(
        net.received(&data),
        BTreeMap::from([(2, 1)]),
        "unknown again: flooded to those left"
    );
}
