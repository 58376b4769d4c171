use std::net::Ipv4Addr;

use super::*;
use crate::mesh::sim::Network;

fn peer(n: u64) -> PeerName {
    PeerName::from_u64(n)
}

fn fqdn(s: &str) -> Fqdn {
    Fqdn::parse(s).unwrap()
}

fn key(name: &str, addr: [u8; 4], owner: &str) -> Key {
    Key {
        name: fqdn(name),
        addr: Ipv4Addr::from(addr),
        owner: owner.into(),
    }
}

/// Hands everything `from` wants said to `to`, as a neighbour would.
fn gossip(from: &mut Names, from_name: PeerName, to: &mut Names, now: Instant) -> usize {
    let mut news = 0;
    while let Some(out) = from.poll_outgoing() {
        let Outgoing::Gossip(payload) = out else {
            panic!("names only gossip")
        };
        if to.on_gossip(now, from_name, &payload).unwrap().is_some() {
            news += 1;
        }
    }
    news
}

fn addrs(names: &Names, name: &str) -> Vec<Ipv4Addr> {
    names.lookup(&fqdn(name)).iter().map(|i| i.addr).collect()
}

#[test]
fn a_name_spreads_answers_and_goes_with_its_removal() {
    let now = Instant::now();
    let (mut a, mut b) = (Names::new(peer(1), 100), Names::new(peer(2), 100));
    b.on_peers_changed(now, &[peer(1)].into());
    assert!(a.add(now, key("db.weft.local", [10, 32, 0, 5], "c1"), Some(5432)));
    assert!(
        !a.add(now, key("db.weft.local", [10, 32, 0, 5], "c1"), Some(5432)),
        "the same again is no change"
    );
    a.add(now, key("db.weft.local", [10, 32, 0, 6], "c2"), None);
    assert_eq!(gossip(&mut a, peer(1), &mut b, now), 2);
    assert_eq!(
        addrs(&b, "db.weft.local"),
        [[10, 32, 0, 5], [10, 32, 0, 6]].map(Ipv4Addr::from)
    );
    assert_eq!(b.lookup(&fqdn("db.weft.local"))[0].port, Some(5432));
    assert_eq!(
        b.reverse([10, 32, 0, 6].into()),
        vec![fqdn("db.weft.local")]
    );

    // Old news: the full state from before the removal.
    let before = a.full_state().unwrap();
    assert_eq!(a.remove(now, Some("c1"), None, None), 1);
    gossip(&mut a, peer(1), &mut b, now);
    assert_eq!(
        addrs(&b, "db.weft.local"),
        vec![Ipv4Addr::from([10, 32, 0, 6])]
    );
    assert_eq!(b.on_gossip(now, peer(1), &before).unwrap(), None, "no news");
    assert_eq!(addrs(&b, "db.weft.local").len(), 1, "the removal holds");
}

#[test]
fn names_of_unreachable_routers_do_not_answer_and_are_forgotten() {
    let now = Instant::now();
    let (mut a, mut b) = (Names::new(peer(1), 100), Names::new(peer(2), 100));
    a.add(now, key("web.weft.local", [10, 32, 0, 9], "c"), None);
    gossip(&mut a, peer(1), &mut b, now);
    assert!(
        addrs(&b, "web.weft.local").is_empty(),
        "1 is not reachable yet"
    );
    b.on_peers_changed(now, &[peer(1)].into());
    assert_eq!(addrs(&b, "web.weft.local").len(), 1);
    b.on_peers_changed(now, &BTreeSet::new());
    assert!(addrs(&b, "web.weft.local").is_empty());
    let forget_at = b.next_timeout().unwrap();
    assert_eq!(forget_at, now + FORGET_AFTER);
    b.on_timeout(forget_at);
    assert!(b.all().is_empty() && b.entries.is_empty());
    // A neighbour that kept them cannot bring them back.
    let old = a.full_state().unwrap();
    assert_eq!(b.on_gossip(forget_at, peer(3), &old).unwrap(), None);
    // Once 1 is back, its names are news again.
    b.on_peers_changed(forget_at, &[peer(1)].into());
    a.add(forget_at, key("api.weft.local", [10, 32, 0, 10], "d"), None);
    gossip(&mut a, peer(1), &mut b, forget_at);
    assert_eq!(addrs(&b, "api.weft.local").len(), 1);
}

#[test]
fn tombstones_go_after_their_time() {
    let now = Instant::now();
    let mut a = Names::new(peer(1), 1);
    a.add(now, key("x.weft.local", [10, 32, 0, 1], "c"), None);
    a.remove(now, Some("c"), None, None);
    assert_eq!(a.entries.len(), 1, "the removal is remembered");
    assert_eq!(a.next_timeout(), Some(now + TOMBSTONE_TTL));
    a.on_timeout(now + TOMBSTONE_TTL);
    assert!(a.entries.is_empty());
    assert_eq!(a.next_timeout(), None, "nothing left to wait for");
}

#[test]
fn a_lookup_finds_every_instance_of_its_name_among_many_and_only_them() {
    let now = Instant::now();
    let mut a = Names::new(peer(1), 1);
    let mut b = Names::new(peer(2), 1);
    for i in 0..500u32 {
        let [_, _, x, y] = (0x0a20_0000 + i).to_be_bytes();
        a.add(
            now,
            key(&format!("n{i}.weft.local"), [10, 32, x, y], "a"),
            None,
        );
    }
    b.add(now, key("n7.weft.local", [10, 33, 0, 7], "b"), None);
    b.add(now, key("n7a.weft.local", [10, 33, 0, 8], "b"), None);
    a.on_peers_changed(now, &[peer(2)].into());
    a.on_gossip(now, peer(2), &b.full_state().unwrap()).unwrap();
    let mut found: Vec<Ipv4Addr> = a
        .lookup(&Fqdn::parse("n7.weft.local").unwrap())
        .iter()
        .map(|i| i.addr)
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![Ipv4Addr::new(10, 32, 0, 7), Ipv4Addr::new(10, 33, 0, 7)],
        "ours and theirs, not n7a's"
    );
    assert!(
        a.lookup(&Fqdn::parse("n500.weft.local").unwrap())
            .is_empty()
    );
    assert_eq!(a.per_origin.get(&peer(2)), Some(&2));
}

#[test]
fn stale_news_of_our_own_names_is_corrected() {
    let now = Instant::now();
    let (mut a, mut b) = (Names::new(peer(1), 100), Names::new(peer(2), 100));
    b.on_peers_changed(now, &[peer(1)].into());
    a.add(now, key("db.weft.local", [10, 32, 0, 5], "c1"), None);
    gossip(&mut a, peer(1), &mut b, now);
    // a restarts having lost its names (and with a clock behind): b still
    // has db, and tells a.
    let mut a = Names::new(peer(1), 50);
    let full = b.full_state().unwrap();
    a.on_gossip(now, peer(2), &full).unwrap();
    gossip(&mut a, peer(1), &mut b, now);
    assert!(
        addrs(&b, "db.weft.local").is_empty(),
        "a said it has no db, newer than b's copy"
    );
}

#[test]
fn a_restart_keeps_our_names() {
    let now = Instant::now();
    let mut a = Names::new(peer(1), 100);
    a.add(now, key("db.weft.local", [10, 32, 0, 5], "c1"), Some(1));
    let (clock, own) = a.snapshot();
    let mut again = Names::new(peer(1), 10);
    again.restore(now, clock, own);
    assert_eq!(addrs(&again, "db.weft.local").len(), 1);
    again.add(now, key("db.weft.local", [10, 32, 0, 6], "c2"), None);
    assert!(again.clock > clock, "the clock goes on from the last run");
}

#[test]
fn bad_gossip_is_refused_whole() {
    let now = Instant::now();
    let mut a = Names::new(peer(1), 1);
    assert!(a.on_gossip(now, peer(2), b"\xff\xff\xff").is_err());
    // A name not in normal form, written by hand.
    let entries: Vec<(PeerName, (String, Ipv4Addr, String), Value)> = vec![(
        peer(2),
        ("DB.weft.local.".into(), Ipv4Addr::LOCALHOST, "c".into()),
        Value {
            clock: 1,
            port: None,
            ready: true,
            deleted: false,
        },
    )];
    let bytes = postcard::to_allocvec(&entries).unwrap();
    let err = a.on_gossip(now, peer(2), &bytes).unwrap_err();
    assert!(err.contains("malformed name entries"), "{err}");
    assert!(a.entries.is_empty());
    // The same with the name in normal form is taken.
    let good: Vec<(PeerName, (String, Ipv4Addr, String), Value)> = entries
        .into_iter()
        .map(|(p, (n, a, o), v)| (p, (n.to_lowercase(), a, o), v))
        .collect();
    a.on_gossip(now, peer(2), &postcard::to_allocvec(&good).unwrap())
        .unwrap();
    assert_eq!(a.entries.len(), 1);
}

/// Names on every router of a simulated mesh, as the router would wire
/// them: one `Names` per router, driven by its `Mesh`.
struct NamedMesh {
    net: Network,
    names: Vec<NamesHandle>,
}

impl NamedMesh {
    /// `count` routers in a line (each given the one before).
    fn new(count: usize) -> NamedMesh {
        let mut net = Network::new(21);
        let mut names = Vec::new();
        for i in 0..count {
            let index = net.add_router(|_| {});
            let handle = NamesHandle::new(Names::new(net.routers[index].mesh.name(), 1000));
            net.routers[index]
                .mesh
                .add_channel(CHANNEL, handle.channel());
            names.push(handle);
            if i > 0 {
                net.add_target(i, i - 1);
            }
        }
        let mut mesh = NamedMesh { net, names };
        mesh.net
            .run_until_converged(Duration::from_millis(100), Duration::from_secs(60))
            .expect("the mesh forms");
        mesh
    }

    fn add(&mut self, router: usize, name: &str, addr: [u8; 4], owner: &str) {
        let now = self.net.now;
        self.names[router]
            .lock()
            .add(now, key(name, addr, owner), None);
        self.net.run_for(Duration::ZERO);
    }

    /// How long until every up router answers `name` with `expected`
    /// addresses, at most `limit`.
    fn time_to_agree(&mut self, name: &str, expected: usize, limit: Duration) -> Option<Duration> {
        let start = self.net.now;
        while self.net.now - start <= limit {
            let agree = (0..self.names.len())
                .filter(|&i| self.net.routers[i].up)
                .all(|i| addrs(&self.names[i].lock(), name).len() == expected);
            if agree {
                return Some(self.net.now - start);
            }
            self.net.run_for(Duration::from_millis(10));
        }
        None
    }
}

#[test]
fn in_a_simulated_mesh_names_spread_survive_partitions_and_restarts() {
    let mut mesh = NamedMesh::new(12);
    let names_at = |mesh: &NamedMesh, i: usize| mesh.names[i].lock().all().len();

    // Registered at one end, answered at the other within a second.
    mesh.add(0, "db.weft.local", [10, 32, 0, 1], "c1");
    let took = mesh.time_to_agree("db.weft.local", 1, Duration::from_secs(5));
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(1)),
        "{took:?}"
    );

    // A partition between 5 and 6: each side changes names; after the
    // heal, everyone agrees on both sides' changes.
    mesh.net.set_cut(5, 6, true, Duration::from_millis(50));
    mesh.net.run_for(Duration::from_secs(2));
    mesh.add(11, "web.weft.local", [10, 32, 0, 11], "w");
    let now = mesh.net.now;
    assert_eq!(mesh.names[0].lock().remove(now, Some("c1"), None, None), 1);
    mesh.net.run_for(Duration::from_secs(2));
    assert_eq!(addrs(&mesh.names[11].lock(), "web.weft.local").len(), 1);
    assert!(addrs(&mesh.names[0].lock(), "web.weft.local").is_empty());
    mesh.net.set_cut(5, 6, false, Duration::from_millis(50));
    mesh.net
        .run_until_converged(Duration::from_millis(100), Duration::from_secs(60))
        .expect("the mesh heals");
    assert!(
        mesh.time_to_agree("web.weft.local", 1, Duration::from_secs(10))
            .is_some()
    );
    assert!(
        mesh.time_to_agree("db.weft.local", 0, Duration::from_secs(10))
            .is_some()
    );

    // Router 11 restarts with the names it stored: nothing flickers away.
    let (clock, own) = mesh.names[11].lock().snapshot();
    mesh.net.kill(11, Duration::from_millis(50));
    mesh.net.run_for(Duration::from_secs(1));
    mesh.net.restart(11, &[10]);
    let name = mesh.net.routers[11].mesh.name();
    let mut names = Names::new(name, 500);
    names.restore(mesh.net.now, clock, own);
    mesh.names[11] = NamesHandle::new(names);
    let channel = mesh.names[11].channel();
    mesh.net.routers[11].mesh.add_channel(CHANNEL, channel);
    assert!(
        mesh.time_to_agree("web.weft.local", 1, Duration::from_secs(10))
            .is_some()
    );
    assert_eq!(names_at(&mesh, 11), 1);

    // Router 11 leaves for good: its names leave every other router after
    // the grace period, not before.
    mesh.net.kill(11, Duration::from_millis(50));
    mesh.net.run_for(Duration::from_secs(5));
    let held_of = |mesh: &NamedMesh, origin: PeerName| {
        let names = mesh.names[0].lock();
        names.entries.keys().filter(|(_, o)| *o == origin).count()
    };
    assert_eq!(names_at(&mesh, 0), 0, "gone from answers at once");
    assert_eq!(held_of(&mesh, name), 1, "but remembered");
    mesh.net.run_for(FORGET_AFTER + Duration::from_secs(5));
    assert_eq!(held_of(&mesh, name), 0, "then forgotten");
}
