use super::*;
use crate::mesh::sim::Network;

fn peer(n: u64) -> PeerName {
    PeerName::from_u64(n)
}

fn policy(id: &str) -> Key {
    Key::Policy(id.into())
}

fn body(records: &Records, id: &str) -> Option<String> {
    records
        .policies()
        .into_iter()
        .find(|(i, _)| i == id)
        .and_then(|(_, v)| v.body.clone())
}

#[test]
fn the_later_write_wins_everywhere_whatever_the_order_of_arrival() {
    let now = Instant::now();
    let mut a = Records::new(peer(1), 1);
    let mut b = Records::new(peer(2), 1);
    a.set(now, policy("x/p"), Some("one".into()));
    // b has seen a's write, so its own is later.
    b.on_gossip(now, peer(1), &a.full_state().unwrap()).unwrap();
    b.set(now, policy("x/p"), Some("two".into()));
    let mut c = Records::new(peer(3), 1);
    c.on_gossip(now, peer(2), &b.full_state().unwrap()).unwrap();
    c.on_gossip(now, peer(1), &a.full_state().unwrap()).unwrap();
    a.on_gossip(now, peer(2), &b.full_state().unwrap()).unwrap();
    for r in [&a, &b, &c] {
        assert_eq!(body(r, "x/p").as_deref(), Some("two"));
    }
    // Concurrent writes at the same clock: the higher origin wins on both.
    let mut d = Records::new(peer(4), 50);
    let mut e = Records::new(peer(5), 50);
    d.set(now, policy("x/q"), Some("d".into()));
    e.set(now, policy("x/q"), Some("e".into()));
    let (ds, es) = (d.full_state().unwrap(), e.full_state().unwrap());
    d.on_gossip(now, peer(5), &es).unwrap();
    e.on_gossip(now, peer(4), &ds).unwrap();
    assert_eq!(body(&d, "x/q"), body(&e, "x/q"));
    assert_eq!(body(&d, "x/q").as_deref(), Some("e"));
}

#[test]
fn removals_are_tombstones_that_win_and_then_go() {
    let now = Instant::now();
    let mut a = Records::new(peer(1), 1);
    let mut b = Records::new(peer(2), 1);
    a.set(now, policy("x/p"), Some("one".into()));
    b.on_gossip(now, peer(1), &a.full_state().unwrap()).unwrap();
    assert!(b.set(now, policy("x/p"), None));
    assert!(!b.set(now, policy("x/p"), None), "removed already");
    a.on_gossip(now, peer(2), &b.full_state().unwrap()).unwrap();
    assert!(a.policies().is_empty());
    // An old copy arriving late does not bring it back.
    let mut stale = Records::new(peer(3), 1);
    stale.set(now, policy("x/p"), Some("old".into()));
    a.on_gossip(now, peer(3), &stale.full_state().unwrap())
        .unwrap();
    assert!(a.policies().is_empty());
    assert_eq!(a.next_timeout(), Some(now + TOMBSTONE_TTL));
    a.on_timeout(now + TOMBSTONE_TTL);
    assert!(a.entries.is_empty());
}

#[test]
fn endpoints_count_while_their_router_is_reachable() {
    let now = Instant::now();
    let mut a = Records::new(peer(1), 1);
    let mut b = Records::new(peer(2), 1);
    b.set(now, Key::Endpoint(peer(2), "c1".into()), Some("{}".into()));
    a.on_gossip(now, peer(2), &b.full_state().unwrap()).unwrap();
    assert!(a.endpoints().is_empty(), "router 2 is not reachable yet");
    a.on_peers_changed(now, &[peer(2)].into());
    assert_eq!(a.endpoints().len(), 1);
    a.on_peers_changed(now, &BTreeSet::new());
    assert!(a.endpoints().is_empty());
    a.on_timeout(now + FORGET_AFTER);
    assert!(a.entries.is_empty(), "forgotten after the grace period");
    // Someone else's copy of router 2's endpoint pretending to be ours
    // is not taken as ours.
    let forged = vec![(
        Key::Endpoint(peer(1), "c9".into()),
        Value {
            clock: 99,
            origin: peer(2),
            body: Some("{}".into()),
        },
    )];
    a.on_gossip(now, peer(2), &encode(&forged)).unwrap();
    assert!(a.endpoints().is_empty(), "ours, unknown: removed");
}

#[test]
fn bad_gossip_is_refused_whole() {
    let now = Instant::now();
    let mut a = Records::new(peer(1), 1);
    assert!(a.on_gossip(now, peer(2), b"\xff\xff\xff").is_err());
    let big = vec![(
        policy("x/p"),
        Value {
            clock: 1,
            origin: peer(2),
            body: Some("x".repeat(MAX_BODY + 1)),
        },
    )];
    let e = a.on_gossip(now, peer(2), &encode(&big)).unwrap_err();
    assert!(e.contains("over"), "{e}");
    assert!(a.entries.is_empty());
}

/// The wire form, pinned.
#[test]
fn the_entries_encoding_is_pinned() {
    let entries = vec![
        (
            policy("x/deny"),
            Value {
                clock: 7,
                origin: peer(0x0a0b),
                body: Some("{}".into()),
            },
        ),
        (
            Key::Endpoint(peer(1), "c".into()),
            Value {
                clock: 8,
                origin: peer(1),
                body: None,
            },
        ),
        (
            Key::Namespace("x".into()),
            Value {
                clock: 9,
                origin: peer(2),
                body: Some(r#"{"ns":"x"}"#.into()),
            },
        ),
    ];
    let bytes = encode(&entries);
    weft_golden::Golden::new(env!("CARGO_MANIFEST_DIR")).check(
        "policy-entries",
        "the policy channel's gossip: a policy, an endpoint tombstone, a namespace's labels",
        &bytes,
    );
    assert_eq!(decode(&bytes).unwrap(), entries);
}

struct PolicyMesh {
    net: Network,
    records: Vec<PolicyRecords>,
}

impl PolicyMesh {
    fn new(count: usize) -> PolicyMesh {
        let mut net = Network::new(33);
        let mut records = Vec::new();
        for i in 0..count {
            let index = net.add_router(|_| {});
            let handle = PolicyRecords::new(Records::new(net.routers[index].mesh.name(), 1000));
            net.routers[index]
                .mesh
                .add_channel(CHANNEL, handle.channel());
            records.push(handle);
            if i > 0 {
                net.add_target(i, i - 1);
            }
        }
        let mut mesh = PolicyMesh { net, records };
        mesh.net
            .run_until_converged(Duration::from_millis(100), Duration::from_secs(60))
            .expect("the mesh forms");
        mesh
    }

    fn set(&mut self, router: usize, id: &str, value: Option<&str>) {
        let now = self.net.now;
        self.records[router]
            .lock()
            .set(now, policy(id), value.map(str::to_string));
        self.net.run_for(Duration::ZERO);
    }

    fn agree_on(&mut self, id: &str, want: Option<&str>, limit: Duration) -> Option<Duration> {
        let start = self.net.now;
        while self.net.now - start <= limit {
            let agree = (0..self.records.len())
                .filter(|&i| self.net.routers[i].up)
                .all(|i| body(&self.records[i].lock(), id).as_deref() == want);
            if agree {
                return Some(self.net.now - start);
            }
            self.net.run_for(Duration::from_millis(10));
        }
        None
    }
}

#[test]
fn in_a_simulated_mesh_policies_spread_and_partitions_heal_to_one_answer() {
    let mut mesh = PolicyMesh::new(10);
    mesh.set(0, "x/p", Some("v1"));
    let took = mesh.agree_on("x/p", Some("v1"), Duration::from_secs(5));
    assert!(
        took.is_some_and(|t| t <= Duration::from_secs(1)),
        "{took:?}"
    );

    // Both sides of a partition change it; after the heal all agree on
    // one of the two, and a removal on one side of a second cut wins over
    // the older write.
    mesh.net.set_cut(4, 5, true, Duration::from_millis(50));
    mesh.net.run_for(Duration::from_secs(2));
    mesh.set(0, "x/p", Some("left"));
    mesh.set(9, "x/p", Some("right"));
    mesh.set(9, "x/q", Some("only-right"));
    mesh.net.run_for(Duration::from_secs(2));
    mesh.net.set_cut(4, 5, false, Duration::from_millis(50));
    mesh.net
        .run_until_converged(Duration::from_millis(100), Duration::from_secs(60))
        .expect("the mesh heals");
    // Both writes were concurrent: either may win, but one wins on all.
    let winner = (0..200).find_map(|_| {
        mesh.net.run_for(Duration::from_millis(50));
        let seen: BTreeSet<Option<String>> = mesh
            .records
            .iter()
            .map(|r| body(&r.lock(), "x/p"))
            .collect();
        (seen.len() == 1).then(|| seen.into_iter().next().unwrap())
    });
    let winner = winner
        .expect("all routers agree on x/p")
        .expect("x/p is there");
    assert!(["left", "right"].contains(&winner.as_str()), "{winner:?}");
    let winner = Some(winner);
    assert!(
        mesh.agree_on("x/q", Some("only-right"), Duration::from_secs(10))
            .is_some()
    );
    mesh.set(3, "x/q", None);
    assert!(mesh.agree_on("x/q", None, Duration::from_secs(5)).is_some());

    // A restart from the stored snapshot loses nothing.
    let (clock, kept) = mesh.records[9].lock().snapshot();
    mesh.net.kill(9, Duration::from_millis(50));
    mesh.net.run_for(Duration::from_secs(1));
    mesh.net.restart(9, &[8]);
    let mut restored = Records::new(mesh.net.routers[9].mesh.name(), 1);
    restored.restore(mesh.net.now, clock, kept);
    mesh.records[9] = PolicyRecords::new(restored);
    let channel = mesh.records[9].channel();
    mesh.net.routers[9].mesh.add_channel(CHANNEL, channel);
    mesh.set(9, "x/r", Some("after-restart"));
    assert!(
        mesh.agree_on("x/r", Some("after-restart"), Duration::from_secs(10))
            .is_some()
    );
    assert!(
        mesh.agree_on("x/p", winner.as_deref(), Duration::from_secs(10))
            .is_some()
    );
}

/// Found by the fuzzer: a peer's entry of ours at the highest clock made
/// the next write overflow it.
#[test]
fn a_clock_at_its_highest_does_not_overflow() {
    let now = Instant::now();
    let mut a = Records::new(peer(1), 1);
    a.set(now, Key::Endpoint(peer(1), "c".into()), Some("{}".into()));
    let theirs = vec![(
        Key::Endpoint(peer(1), "c".into()),
        Value {
            clock: u64::MAX,
            origin: peer(1),
            body: Some("[]".into()),
        },
    )];
    a.on_gossip(now, peer(2), &encode(&theirs)).unwrap();
    assert!(a.set(now, policy("x/p"), Some("p".into())));
}
