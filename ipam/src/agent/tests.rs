use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn agent(me: u64, init: Init, now: Instant) -> Ipam {
    let mut c = Config::new(Peer(me), net("10.32.0.0/12"));
    c.init = init;
    Ipam::new(c, now).unwrap()
}

/// Delivers everything between the agents (all reachable) until quiet.
fn exchange(agents: &mut [&mut Ipam], now: Instant) {
    let all: BTreeSet<Peer> = agents.iter().map(|a| a.me()).collect();
    for a in agents.iter_mut() {
        let others = all.iter().filter(|p| **p != a.me()).copied().collect();
        if a.reachable.len() != all.len() {
            a.on_peers_changed(now, &others);
        }
    }
    loop {
        let mut moved = false;
        for i in 0..agents.len() {
            while let Some(o) = agents[i].poll_outgoing() {
                moved = true;
                let from = agents[i].me();
                for (j, to) in agents.iter_mut().enumerate() {
                    if i == j {
                        continue;
                    }
                    match &o {
                        Outgoing::Gossip(b) => drop(to.on_gossip(now, from, b).unwrap()),
                        Outgoing::Broadcast(b) => to.on_broadcast(now, from, b).unwrap(),
                        Outgoing::Unicast(p, b) if *p == to.me() => {
                            to.on_unicast(now, from, b).unwrap()
                        }
                        Outgoing::Unicast(..) => {}
                    }
                }
            }
        }
        if !moved {
            return;
        }
    }
}

fn one(a: &mut Ipam) -> Result<Allocation, IpamError> {
    let mut done = a.take_done();
    assert_eq!(done.len(), 1, "{done:?}");
    done.remove(0).result
}

/// Gossip as the mesh carries it: each agent tells its neighbours, and
/// what was news to one goes on to its other neighbours. Returns how
/// many messages were delivered before all fell quiet (or `cap`).
fn gossip_along(agents: &mut [Ipam], links: &[(usize, usize)], now: Instant, cap: usize) -> usize {
    deliver(agents, links, now, cap, false)
}

/// [`gossip_along`], optionally with gossip overtaking the rest.
fn deliver(
    agents: &mut [Ipam],
    links: &[(usize, usize)],
    now: Instant,
    cap: usize,
    slow_unicasts: bool,
) -> usize {
    let neighbours = |i: usize| -> Vec<usize> {
        links
            .iter()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .collect()
    };
    // (from, to, is gossip, bytes); broadcasts and unicasts go straight
    // to their routers (the mesh routes them; they do not echo).
    let mut queue: VecDeque<(usize, usize, bool, Vec<u8>)> = VecDeque::new();
    let mut delivered = 0;
    loop {
        for i in 0..agents.len() {
            while let Some(o) = agents[i].poll_outgoing() {
                match o {
                    Outgoing::Gossip(b) => {
                        for n in neighbours(i) {
                            queue.push_back((i, n, true, b.clone()));
                        }
                    }
                    Outgoing::Broadcast(b) => {
                        for n in (0..agents.len()).filter(|n| *n != i) {
                            queue.push_back((i, n, false, b.clone()));
                        }
                    }
                    Outgoing::Unicast(p, b) => {
                        if let Some(n) = agents.iter().position(|a| a.me() == p) {
                            queue.push_back((i, n, false, b));
                        }
                    }
                }
            }
        }
        // Gossip overtakes unicasts and broadcasts, as it may on a
        // busy mesh: a router hears of a grant before its recipient.
        let next = match queue.iter().position(|(_, _, g, _)| *g) {
            Some(i) if slow_unicasts => queue.remove(i),
            _ => queue.pop_front(),
        };
        let Some((from, to, gossip, bytes)) = next else {
            return delivered;
        };
        delivered += 1;
        if delivered >= cap {
            return delivered;
        }
        let sender = agents[from].me();
        if !gossip {
            agents[to].on_unicast(now, sender, &bytes).unwrap();
            continue;
        }
        if let Some(news) = agents[to].on_gossip(now, sender, &bytes).unwrap() {
            for n in neighbours(to).into_iter().filter(|n| *n != from) {
                queue.push_back((to, n, true, news.clone()));
            }
        }
    }
}

#[test]
fn many_routers_asking_at_once_all_get_space() {
    // One router owns the whole range; forty others attach a container
    // each at the same moment, and their requests for space cross
    // grants they have not heard of yet.
    let now = Instant::now();
    let n = 40u64;
    let mut agents: Vec<Ipam> = (1..=n)
        .map(|me| agent(me, Init::Seed(vec![Peer(1)]), now))
        .collect();
    let all: BTreeSet<Peer> = (1..=n).map(Peer).collect();
    for a in agents.iter_mut() {
        let others = all.iter().filter(|p| **p != a.me()).copied().collect();
        a.on_peers_changed(now, &others);
    }
    // Everyone connected to everyone, as a mesh with discovery is.
    let links: Vec<(usize, usize)> = (0..n as usize)
        .flat_map(|a| (a + 1..n as usize).map(move |b| (a, b)))
        .collect();
    gossip_along(&mut agents, &links, now, 1_000_000);
    for (i, a) in agents.iter_mut().enumerate().skip(1) {
        a.allocate(now, &format!("c{i}"), None);
    }
    // The owner is busy: no answer within the 2 s a request waits
    // before it is asked again. That is no refusal.
    let mut t = now + Duration::from_secs(3);
    for a in agents.iter_mut().skip(1) {
        a.tick(t);
    }
    let mut results = Vec::new();
    for _ in 0..40 {
        deliver(&mut agents, &links, t, 1_000_000, true);
        for a in agents.iter_mut() {
            results.extend(a.take_done().into_iter().map(|d| d.result));
        }
        if results.len() == n as usize - 1 {
            break;
        }
        t += Duration::from_millis(500);
        for a in agents.iter_mut() {
            a.tick(t);
        }
    }
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        results.len()
    );
    assert_eq!(results.len(), n as usize - 1);
}

#[test]
fn gossip_dies_down_after_one_allocation() {
    // A ring of routers: every record comes back round to its owner.
    let now = Instant::now();
    let n = 10;
    let seeds: Vec<Peer> = (1..=n as u64).map(Peer).collect();
    let mut agents: Vec<Ipam> = (1..=n as u64)
        .map(|me| agent(me, Init::Seed(seeds.clone()), now))
        .collect();
    let links: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
    for a in agents.iter_mut() {
        let others = seeds.iter().filter(|p| **p != a.me()).copied().collect();
        a.on_peers_changed(now, &others);
    }
    gossip_along(&mut agents, &links, now, 100_000);
    agents[0].allocate(now, "c1", None);
    let after = gossip_along(&mut agents, &links, now, 100_000);
    assert!(agents[0].take_done()[0].result.is_ok());
    assert!(after < 200, "{after} messages after one allocation");
    // Then the mesh's anti-entropy: each router sends its whole state
    // to its neighbours, over and over. Every router's copy of the
    // allocating router's record is as new as its own, so this must
    // cause nothing more (the old merge took its own record, echoed
    // back at the same version, as news: a new version, a new wave,
    // every round, for ever).
    let mut caused = Vec::new();
    for _round in 0..5 {
        let mut news = 0;
        for i in 0..n {
            let full = agents[i].full_state().unwrap();
            let from = agents[i].me();
            for &(a, b) in &links {
                let to = if a == i {
                    b
                } else if b == i {
                    a
                } else {
                    continue;
                };
                if agents[to].on_gossip(now, from, &full).unwrap().is_some() {
                    news += 1;
                }
            }
        }
        news += gossip_along(&mut agents, &links, now, 100_000);
        caused.push(news);
    }
    assert_eq!(caused, vec![0; 5], "anti-entropy keeps the gossip going");
}

#[test]
fn adopted_addresses_are_never_handed_out_here_or_by_a_peer() {
    let now = Instant::now();
    // A router whose state was lost, rebuilt from its containers.
    let mut a = agent(1, Init::Consensus(2), now);
    a.adopt("attach:web", Ipv4Addr::new(10, 32, 0, 1)).unwrap();
    a.adopt("attach:web", Ipv4Addr::new(10, 32, 0, 1)).unwrap();
    assert!(matches!(
        a.adopt("attach:db", Ipv4Addr::new(10, 32, 0, 1)),
        Err(IpamError::AddressInUse { .. })
    ));
    assert!(matches!(
        a.adopt("attach:db", Ipv4Addr::new(192, 0, 2, 1)),
        Err(IpamError::AddressOutside { .. })
    ));
    let mut b = agent(2, Init::Consensus(2), now);
    exchange(&mut [&mut a, &mut b], now);
    // Whoever owns the block, the adopted address is taken.
    for agent in [&mut a, &mut b] {
        agent.claim(now, "other", Ipv4Addr::new(10, 32, 0, 1), None);
        exchange(&mut [], now);
    }
    exchange(&mut [&mut a, &mut b], now);
    for agent in [&mut a, &mut b] {
        let done = agent.take_done();
        assert!(
            done.iter()
                .all(|d| matches!(d.result, Err(IpamError::AddressInUse { .. }))),
            "{done:?}"
        );
    }
    let mut handed = BTreeSet::new();
    for i in 0..40 {
        a.allocate(now, &format!("a{i}"), None);
        b.allocate(now, &format!("b{i}"), None);
        exchange(&mut [&mut a, &mut b], now);
        for agent in [&mut a, &mut b] {
            for d in agent.take_done() {
                handed.insert(d.result.unwrap().addr);
            }
        }
    }
    assert_eq!(handed.len(), 80);
    assert!(!handed.contains(&Ipv4Addr::new(10, 32, 0, 1)), "{handed:?}");
}

#[test]
fn a_lone_peer_allocates_at_once_and_idempotently() {
    let now = Instant::now();
    let mut a = agent(1, Init::Consensus(1), now);
    a.allocate(now, "c1", None);
    let first = one(&mut a).unwrap();
    assert_eq!(first.cidr(), net("10.32.0.1/12"));
    a.allocate(now, "c1", None);
    assert_eq!(one(&mut a).unwrap(), first, "same container, same address");
    a.allocate(now, "c2", None);
    assert_eq!(one(&mut a).unwrap().addr, Ipv4Addr::new(10, 32, 0, 2));
    assert_eq!(a.release(now, "c1", None), vec![first.addr]);
    a.allocate(now, "c3", Some(net("10.32.5.0/24")));
    assert_eq!(one(&mut a).unwrap().cidr(), net("10.32.5.1/24"));
    a.allocate(now, "c4", Some(net("10.99.0.0/24")));
    assert!(matches!(one(&mut a), Err(IpamError::SubnetOutside { .. })));
}

#[test]
fn claims_and_space_move_between_peers() {
    let now = Instant::now();
    let mut a = agent(1, Init::Seed(vec![Peer(1), Peer(2)]), now);
    let mut b = agent(2, Init::Seed(vec![Peer(1), Peer(2)]), now);
    let mut c = agent(3, Init::Observer, now);
    exchange(&mut [&mut a, &mut b, &mut c], now);
    // The observer owns nothing: its first allocation asks for space.
    c.allocate(now, "x", None);
    exchange(&mut [&mut a, &mut b, &mut c], now);
    let x = one(&mut c).unwrap();
    assert_eq!(
        c.ring()
            .unwrap()
            .block(c.layout().block_of(x.addr).unwrap())
            .owner,
        Peer(3)
    );
    // An address in another peer's block: the owner gives or lends it.
    let wanted = Ipv4Addr::new(10, 47, 255, 7);
    a.claim(now, "y", wanted, None);
    exchange(&mut [&mut a, &mut b, &mut c], now);
    assert_eq!(one(&mut a).unwrap().addr, wanted);
    // Nobody else may have it now.
    b.claim(now, "z", wanted, None);
    exchange(&mut [&mut a, &mut b, &mut c], now);
    assert!(matches!(one(&mut b), Err(IpamError::AddressInUse { .. })));
    let st = a.status(now);
    assert_eq!(st.peers.iter().map(|p| p.held).sum::<u64>(), 2, "{st:?}");
    assert!(st.peers.iter().any(|p| p.peer == st.me));
}

#[test]
fn a_donor_that_never_answers_is_passed_over() {
    let t0 = Instant::now();
    let seeds = Init::Seed(vec![Peer(1), Peer(2)]);
    let mut a = agent(1, seeds.clone(), t0);
    let mut b = agent(2, seeds, t0);
    let mut c = agent(3, Init::Observer, t0);
    exchange(&mut [&mut a, &mut b, &mut c], t0);
    c.allocate(t0, "x", None);
    // a (reachable, as much space as b) is asked first and never
    // answers: everything c sends is lost.
    let mut asked = Vec::new();
    let mut now = t0;
    for _ in 0..UNANSWERED_LIMIT {
        while let Some(o) = c.poll_outgoing() {
            if let Outgoing::Unicast(to, _) = o {
                asked.push(to);
            }
        }
        now += RESEND * 2;
        c.tick(now);
    }
    assert_eq!(asked, vec![Peer(1); UNANSWERED_LIMIT as usize]);
    // Now b is asked, and gives.
    exchange(&mut [&mut b, &mut c], now);
    let x = one(&mut c).unwrap();
    let block = c.layout().block_of(x.addr).unwrap();
    assert_eq!(c.ring().unwrap().block(block).owner, Peer(3));
}

#[test]
fn meshes_formed_apart_refuse_each_other_unless_one_is_unused() {
    let now = Instant::now();
    let mut a = agent(1, Init::Consensus(1), now);
    let mut b = agent(2, Init::Consensus(1), now);
    a.allocate(now, "a", None);
    b.allocate(now, "b", None);
    one(&mut a).unwrap();
    one(&mut b).unwrap();
    let err = a.compatible("peer-b", b.summary()).unwrap_err().to_string();
    assert!(err.contains("weft ipam reset"), "{err}");
    exchange(&mut [&mut a, &mut b], now);
    assert!(a.status(now).state.starts_with("conflict"));
    assert_ne!(a.summary(), b.summary(), "neither ring was overwritten");
    // After a reset, b joins a's cluster.
    b.reset(now);
    assert!(a.compatible("b", b.summary()).is_ok());
    exchange(&mut [&mut a, &mut b], now);
    assert_eq!(a.summary().unwrap().0, b.summary().unwrap().0);
    b.allocate(now, "b", None);
    exchange(&mut [&mut a, &mut b], now);
    assert_ne!(one(&mut b).unwrap().addr, Ipv4Addr::new(10, 32, 0, 1));
}

#[test]
fn snapshots_restore_and_refuse_another_peer_or_range() {
    let now = Instant::now();
    let mut a = agent(1, Init::Consensus(1), now);
    a.allocate(now, "c1", None);
    let got = one(&mut a).unwrap();
    assert!(a.dirty());
    let snap = a.snapshot();
    let mut back = Ipam::restore(a.config.clone(), now, &snap).unwrap();
    assert_eq!(back.lookup("c1"), vec![got]);
    back.allocate(now, "c2", None);
    assert_ne!(one(&mut back).unwrap().addr, got.addr);
    let mut other = a.config.clone();
    other.me = Peer(2);
    let e = Ipam::restore(other, now, &snap).err().unwrap();
    assert!(matches!(e, IpamError::StateMismatch(_)), "{e}");
    let mut other = a.config.clone();
    other.range = net("10.0.0.0/16");
    other.default_subnet = other.range;
    assert!(Ipam::restore(other, now, &snap).is_err());
    assert!(Ipam::restore(a.config.clone(), now, &snap[..snap.len() / 2]).is_err());
}

#[test]
fn rmpeer_takes_a_departed_peers_space_but_never_a_reachable_one() {
    let now = Instant::now();
    let seeds = Init::Seed(vec![Peer(1), Peer(2)]);
    let mut a = agent(1, seeds.clone(), now);
    let mut b = agent(2, seeds, now);
    exchange(&mut [&mut a, &mut b], now);
    assert!(matches!(
        a.remove_peer(now, Peer(2)),
        Err(IpamError::PeerReachable(_))
    ));
    assert!(matches!(
        a.remove_peer(now, Peer(1)),
        Err(IpamError::CannotRemoveSelf)
    ));
    a.on_peers_changed(now, &BTreeSet::new());
    assert_eq!(a.remove_peer(now, Peer(2)).unwrap(), 8192);
    assert_eq!(a.ring().unwrap().members(), [Peer(1)].into());
    assert!(matches!(
        a.remove_peer(now, Peer(9)),
        Err(IpamError::UnknownPeer(_))
    ));
}

#[test]
fn automatic_reclaim_waits_for_the_grace_period_and_a_majority() {
    let now = Instant::now();
    let seeds = Init::Seed(vec![Peer(1), Peer(2), Peer(3)]);
    let mut ps: Vec<Ipam> = (1..=3).map(|i| agent(i, seeds.clone(), now)).collect();
    for p in &mut ps {
        p.config.reclaim_after = Some(Duration::from_secs(60));
    }
    let [a, b, c] = &mut ps[..] else {
        unreachable!()
    };
    exchange(&mut [a, b, c], now);
    // Peer 3 is gone; 1 and 2 are a majority of 3.
    let two: BTreeSet<Peer> = [Peer(1), Peer(2)].into();
    a.on_peers_changed(now, &two);
    b.on_peers_changed(now, &two);
    a.tick(now + Duration::from_secs(30));
    assert_eq!(
        a.ring().unwrap().members().len(),
        3,
        "not before the grace period"
    );
    b.tick(now + Duration::from_secs(61));
    assert_eq!(
        b.ring().unwrap().members().len(),
        3,
        "only the lowest-named reclaims"
    );
    a.tick(now + Duration::from_secs(61));
    assert_eq!(a.ring().unwrap().members(), two);
    // A peer alone (1 of 3) never reclaims.
    let mut lone = agent(3, Init::Seed(vec![Peer(1), Peer(2), Peer(3)]), now);
    lone.config.reclaim_after = Some(Duration::from_secs(1));
    lone.on_peers_changed(now, &BTreeSet::new());
    lone.tick(now + Duration::from_secs(100));
    assert_eq!(lone.ring().unwrap().members().len(), 3);
}

/// Hands everything `from` has to say to `to`, as gossip arriving before
/// the mesh has told `to` that `from` is reachable.
fn gossip_only(from: &mut Ipam, to: &mut Ipam, now: Instant) {
    while let Some(o) = from.poll_outgoing() {
        match &o {
            Outgoing::Gossip(b) => drop(to.on_gossip(now, from.me(), b).unwrap()),
            Outgoing::Broadcast(b) => to.on_broadcast(now, from.me(), b).unwrap(),
            Outgoing::Unicast(..) => {}
        }
    }
}

#[test]
fn a_claim_waits_for_an_owner_the_mesh_has_not_reported_reachable_yet() {
    let t0 = Instant::now();
    let mut a = agent(1, Init::Consensus(1), t0);
    a.allocate(t0, "first", None);
    assert_eq!(one(&mut a).unwrap().addr, Ipv4Addr::new(10, 32, 0, 1));
    // A router joins long after its agent was made (a slow start), and
    // the ring arrives before the routes that make its owner reachable.
    let mut b = agent(2, Init::Consensus(2), t0);
    let late = t0 + Duration::from_secs(20);
    gossip_only(&mut a, &mut b, late);
    assert!(b.ring().is_some());
    let wanted = Ipv4Addr::new(10, 32, 0, 2);
    b.claim(late, "second", wanted, None);
    assert!(b.take_done().is_empty(), "waits for the owner");
    b.tick(late + Duration::from_secs(2));
    assert!(b.take_done().is_empty(), "still waits");
    exchange(&mut [&mut a, &mut b], late + Duration::from_secs(3));
    assert_eq!(one(&mut b).unwrap().addr, wanted);

    // An owner that stays unreachable fails the claim, with the reason.
    b.on_peers_changed(late, &BTreeSet::new());
    let lost = late + Duration::from_secs(4);
    b.claim(lost, "third", Ipv4Addr::new(10, 32, 0, 3), None);
    assert!(b.take_done().is_empty(), "just lost: waits");
    assert!(
        b.next_timeout().unwrap() <= late + Duration::from_secs(10),
        "a tick is due when the claim stops waiting"
    );
    b.tick(lost + Duration::from_secs(11));
    match one(&mut b) {
        Err(IpamError::NoSpace { detail, .. }) => {
            assert!(detail.contains("unreachable"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}
