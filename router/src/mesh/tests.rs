use std::{cell::RefCell, collections::VecDeque, rc::Rc, time::Duration};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::{sim::Network, *};

const SEC: Duration = Duration::from_secs(1);

fn peers_seen(net: &Network, i: usize) -> usize {
    net.routers[i].mesh.topology().len()
}

#[test]
fn two_routers_connect_and_know_each_other() {
    let mut net = Network::new(1);
    let (a, b) = (net.add_router(|_| {}), net.add_router(|_| {}));
    net.add_target(a, b);
    net.run_for(SEC);
    for (x, y) in [(a, b), (b, a)] {
        let mesh = &net.routers[x].mesh;
        let peer = net.routers[y].mesh.name();
        assert!(mesh.connection_to(peer).is_some());
        assert_eq!(mesh.routes().next_hop(peer), Some(peer));
    }
    assert!(net.converged());
    let conn = net.routers[a]
        .mesh
        .connection_to(net.routers[b].mesh.name())
        .unwrap();
    assert!(conn.outbound && conn.target.is_some());
}

#[test]
fn one_address_is_enough_to_join_the_whole_mesh() {
    let mut net = Network::new(2);
    let routers: Vec<usize> = (0..6).map(|_| net.add_router(|_| {})).collect();
    for &r in &routers[1..] {
        net.add_target(r, routers[0]);
    }
    net.run_for(5 * SEC);
    assert!(net.converged());
    for &r in &routers {
        assert_eq!(peers_seen(&net, r), 6);
        assert_eq!(
            net.routers[r].mesh.connections().count(),
            5,
            "discovery made a full mesh"
        );
    }
}

#[test]
fn simultaneous_connections_settle_on_the_same_one_at_both_ends() {
    let mut net = Network::new(3);
    let (a, b) = (net.add_router(|_| {}), net.add_router(|_| {}));
    net.add_target(a, b);
    net.add_target(b, a);
    net.run_for(30 * SEC);
    let (na, nb) = (net.routers[a].mesh.name(), net.routers[b].mesh.name());
    let ca = net.routers[a].mesh.connection_to(nb).expect("a connected");
    let cb = net.routers[b].mesh.connection_to(na).expect("b connected");
    assert_eq!(net.routers[a].mesh.connections().count(), 1);
    assert_eq!(net.routers[b].mesh.connections().count(), 1);
    assert_ne!(
        ca.outbound, cb.outbound,
        "both ends kept the same connection"
    );
    let lower_started = if na < nb { ca.outbound } else { cb.outbound };
    assert!(
        lower_started,
        "the connection started by the lower name wins"
    );
}

#[test]
fn a_name_clash_is_refused_and_not_retried_in_a_tight_loop() {
    let mut net = Network::new(4);
    let a = net.add_router(|_| {});
    let clash = net.routers[a].mesh.name();
    let b = net.add_router(|c| c.identity.name = clash);
    net.add_target(b, a);
    net.run_for(60 * SEC);
    assert_eq!(net.routers[a].mesh.connections().count(), 0);
    let target = net.routers[b].mesh.targets().next().unwrap();
    let error = target.last_error.clone().unwrap();
    assert!(error.contains("name clash"), "{error}");
    assert!(
        net.routers[b].attempts <= 8,
        "{} attempts in a minute",
        net.routers[b].attempts
    );
    assert!(net.routers[a].mesh.stats().refused >= 1);
}

#[test]
fn connecting_to_ourselves_is_noticed_once() {
    let mut net = Network::new(5);
    let a = net.add_router(|_| {});
    net.add_target(a, a);
    net.run_for(60 * SEC);
    let target = net.routers[a].mesh.targets().next().unwrap();
    assert_eq!(target.state, TargetState::OurOwn);
    assert_eq!(net.routers[a].attempts, 1);
}

#[test]
fn the_connection_limit_holds() {
    let mut net = Network::new(6);
    let hub = net.add_router(|c| c.conn_limit = 3);
    let others: Vec<usize> = (0..6)
        .map(|_| net.add_router(|c| c.discovery = false))
        .collect();
    for &o in &others {
        net.add_target(o, hub);
    }
    net.run_for(5 * SEC);
    assert_eq!(net.routers[hub].mesh.connections().count(), 3);
    let refused = others.iter().filter(|&&o| {
        net.routers[o].mesh.targets().any(|t| {
            t.last_error
                .as_deref()
                .is_some_and(|e| e.contains("connection limit"))
        })
    });
    assert_eq!(refused.count(), 3);
}

#[test]
fn a_dead_router_is_forgotten_and_rejoins_when_restarted() {
    let mut net = Network::new(7);
    let routers: Vec<usize> = (0..5).map(|_| net.add_router(|_| {})).collect();
    for &r in &routers[1..] {
        net.add_target(r, routers[0]);
    }
    net.run_for(5 * SEC);
    assert!(net.converged());
    let victim = routers[3];
    let name = net.routers[victim].mesh.name();
    net.kill(victim, Duration::from_millis(10));
    net.run_for(SEC);
    for &r in routers.iter().filter(|&&r| r != victim) {
        let mesh = &net.routers[r].mesh;
        assert!(mesh.connection_to(name).is_none());
        assert!(
            !mesh.routes().reachable().contains(&name),
            "unreachable at once"
        );
    }
    net.run_for(15 * SEC);
    assert!(net.converged(), "forgotten after the grace period");
    assert_eq!(peers_seen(&net, routers[0]), 4);

    net.restart(victim, &[routers[0]]);
    let took = net
        .run_until_converged(Duration::from_millis(10), 10 * SEC)
        .expect("rejoins");
    assert!(took < 2 * SEC, "rejoined in {took:?}");
    assert_eq!(peers_seen(&net, routers[0]), 5);
}

#[test]
fn a_partition_heals_through_anti_entropy_and_reconnection() {
    let mut net = Network::new(8);
    let routers: Vec<usize> = (0..6)
        .map(|_| net.add_router(|c| c.discovery = false))
        .collect();
    // A line 0 - 1 - 2 - 3 - 4 - 5.
    for w in routers.windows(2) {
        net.add_target(w[1], w[0]);
    }
    net.run_for(5 * SEC);
    assert!(net.converged());
    net.set_cut(routers[2], routers[3], true, Duration::from_millis(100));
    net.run_for(20 * SEC);
    assert_eq!(peers_seen(&net, routers[0]), 3, "the far side is forgotten");
    net.set_cut(routers[2], routers[3], false, Duration::ZERO);
    let took = net
        .run_until_converged(Duration::from_millis(50), 120 * SEC)
        .expect("heals");
    assert!(
        took <= 70 * SEC,
        "healed in {took:?} (retries back off to a minute at most)"
    );
}

/// The headline simulation: routers given only a couple of random
/// addresses each converge to the same complete view of the mesh.
#[test]
fn five_hundred_routers_with_sparse_links_converge_to_identical_knowledge() {
    let n = 500;
    let mut net = Network::new(42);
    let routers: Vec<usize> = (0..n)
        .map(|_| net.add_router(|c| c.discovery = false))
        .collect();
    let mut rng = SmallRng::seed_from_u64(42);
    for &r in &routers {
        for _ in 0..2 {
            let other = rng.random_range(0..n);
            if other != r {
                net.add_target(r, other);
            }
        }
    }
    let took = net
        .run_until_converged(Duration::from_millis(10), 120 * SEC)
        .expect("converged within two simulated minutes");
    let messages: u64 = net.routers.iter().map(|r| r.messages).sum();
    let bytes: u64 = net.routers.iter().map(|r| r.bytes).sum();
    println!(
        "{n} routers converged in {took:?} simulated; {:.1} messages and {:.0} bytes sent per router",
        messages as f64 / n as f64,
        bytes as f64 / n as f64
    );
    for r in &net.routers {
        assert_eq!(r.mesh.topology().len(), n);
        assert_eq!(
            r.mesh.routes().reachable().len(),
            n,
            "every router routes to every other"
        );
    }
    assert!(
        took < 5 * SEC,
        "gossip should spread in seconds, took {took:?}"
    );
}

/// A toy subsystem: gossips the highest number it has seen, and records
/// the broadcasts and unicasts it receives. The test keeps a handle on the
/// state the mesh's copy works on.
#[derive(Default)]
struct MaxState {
    value: u64,
    outgoing: VecDeque<Outgoing>,
    broadcasts: Vec<(PeerName, Vec<u8>)>,
    unicasts: Vec<(PeerName, Vec<u8>)>,
}

struct MaxChannel(Rc<RefCell<MaxState>>);

impl Channel for MaxChannel {
    fn on_gossip(
        &mut self,
        _: Instant,
        _: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        let v = u64::from_be_bytes(payload.try_into().map_err(|_| "not a u64".to_string())?);
        let mut s = self.0.borrow_mut();
        if v > s.value {
            s.value = v;
            Ok(Some(payload.to_vec()))
        } else {
            Ok(None)
        }
    }
    fn on_broadcast(&mut self, _: Instant, source: PeerName, payload: &[u8]) -> Result<(), String> {
        self.0
            .borrow_mut()
            .broadcasts
            .push((source, payload.to_vec()));
        Ok(())
    }
    fn on_unicast(&mut self, _: Instant, source: PeerName, payload: &[u8]) -> Result<(), String> {
        self.0
            .borrow_mut()
            .unicasts
            .push((source, payload.to_vec()));
        Ok(())
    }
    fn full_state(&self) -> Option<Vec<u8>> {
        Some(self.0.borrow().value.to_be_bytes().to_vec())
    }
    fn on_peers_changed(&mut self, _: Instant, _: &BTreeSet<PeerName>) {}
    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.0.borrow_mut().outgoing.pop_front()
    }
}

#[test]
fn gossip_channels_gossip_broadcast_and_unicast_across_the_mesh() {
    let mut net = Network::new(9);
    let routers: Vec<usize> = (0..8)
        .map(|_| net.add_router(|c| c.discovery = false))
        .collect();
    let states: Vec<Rc<RefCell<MaxState>>> = routers
        .iter()
        .map(|&r| {
            let state = Rc::new(RefCell::new(MaxState::default()));
            net.routers[r]
                .mesh
                .add_channel("max", Box::new(MaxChannel(state.clone())));
            state
        })
        .collect();
    for w in routers.windows(2) {
        net.add_target(w[1], w[0]); // a line: broadcasts and unicasts need hops
    }
    net.run_for(2 * SEC);

    let source = net.routers[routers[0]].mesh.name();
    let dest = net.routers[routers[7]].mesh.name();
    {
        let mut s3 = states[3].borrow_mut();
        s3.value = 42;
        s3.outgoing
            .push_back(Outgoing::Gossip(42u64.to_be_bytes().to_vec()));
        let mut s0 = states[0].borrow_mut();
        s0.outgoing
            .push_back(Outgoing::Broadcast(b"hello all".to_vec()));
        s0.outgoing
            .push_back(Outgoing::Unicast(dest, b"hello 7".to_vec()));
    }
    // Any input lets routers 0 and 3 send what their channels queued.
    net.add_target(routers[0], routers[0]);
    net.add_target(routers[3], routers[3]);
    net.run_for(2 * SEC);

    for (r, state) in states.iter().enumerate() {
        let s = state.borrow();
        assert_eq!(s.value, 42, "gossip reached router {r}");
        if r != 0 {
            assert_eq!(
                s.broadcasts,
                vec![(source, b"hello all".to_vec())],
                "router {r} got the broadcast once"
            );
        }
    }
    assert_eq!(
        states[7].borrow().unicasts,
        vec![(source, b"hello 7".to_vec())]
    );
    assert!(
        states[4].borrow().unicasts.is_empty(),
        "relays do not consume unicasts"
    );
}
