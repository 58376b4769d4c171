//! IPAM on simulated hosts: real routers, driven through `weft ipam`,
//! `weft status ipam` and `weft connect` like a user would.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use testbed::{Block, Spec, Testbed, WeftHost, eventually, workspace_bin};

const INIT3: &[&str] = &["--ipalloc-init", "consensus=3"];

/// Runs `count` `weft ipam allocate` at once in `weft`'s host; returns
/// the container ids and the addresses printed.
fn allocate_concurrently(weft: &WeftHost, prefix: &str, count: usize) -> Vec<(String, String)> {
    let bin = workspace_bin("weft").unwrap();
    let script = format!(
        "for i in $(seq 1 {count}); do (echo \"{prefix}$i $(\"$WEFT\" ipam allocate {prefix}$i 2>&1)\") & done; wait"
    );
    let out = weft
        .netns
        .command(["sh", "-c", &script])
        .env("WEFT", &bin)
        .env("WEFT_DATA_DIR", &weft.data_dir)
        .env("WEFT_RUN_DIR", &weft.run_dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, a)| (id.to_string(), a.trim().to_string()))
        .collect()
}

/// Every container id → addresses each router's IPAM says it holds.
fn holdings(routers: &[&WeftHost]) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut all = BTreeMap::new();
    for r in routers {
        for (id, addrs) in r.ipam_holdings().unwrap() {
            let list = addrs.iter().map(|a| a.parse().unwrap()).collect();
            all.insert(format!("h{}/{id}", r.host), list);
        }
    }
    all
}

/// Fails on any address held twice.
fn assert_unique(holdings: &BTreeMap<String, Vec<Ipv4Addr>>) -> usize {
    let mut seen: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (id, addrs) in holdings {
        for a in addrs {
            if let Some(other) = seen.insert(*a, id) {
                panic!("DUPLICATE {a}: held by {other} and {id}");
            }
        }
    }
    seen.len()
}

fn parse_cidr(s: &str) -> Option<Ipv4Addr> {
    s.split_once('/')?.0.parse().ok()
}

#[test]
fn three_hosts_allocate_200_addresses_at_once_and_a_restart_keeps_them() {
    let tb = Testbed::create_owned("ipam3", Spec::hosts(3)).unwrap();
    let routers = tb.weft_mesh(3, INIT3).unwrap();
    let started = std::time::Instant::now();
    let handles: Vec<_> = routers
        .iter()
        .map(|r| {
            let w = r.clone();
            std::thread::spawn(move || allocate_concurrently(&w, &format!("h{}-c", w.host), 67))
        })
        .collect();
    let results: Vec<(String, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    eprintln!("201 concurrent allocations took {:?}", started.elapsed());
    assert_eq!(results.len(), 201, "{results:?}");
    let addrs: Vec<Ipv4Addr> = results
        .iter()
        .map(|(id, a)| parse_cidr(a).unwrap_or_else(|| panic!("{id}: {a}")))
        .collect();
    let unique: BTreeSet<&Ipv4Addr> = addrs.iter().collect();
    assert_eq!(unique.len(), 201, "no address given twice");
    let r: Vec<&WeftHost> = routers.iter().collect();
    assert_eq!(assert_unique(&holdings(&r)), 201);
    let status = routers[0].run(&["status", "ipam"]).unwrap();
    eprintln!("{status}");
    assert!(
        status.contains("ready") && status.contains("h3"),
        "{status}"
    );

    // A restart keeps every allocation, and asking again gives the same.
    let before = holdings(&r[1..2]);
    routers[1].run(&["stop"]).unwrap();
    routers[1]
        .launch(&[INIT3, &[&tb.host_addr(1).to_string()]].concat())
        .unwrap();
    assert_eq!(holdings(&r[1..2]), before, "allocations survive a restart");
    let again = routers[1].run(&["ipam", "allocate", "h2-c5"]).unwrap();
    let (_, first) = results.iter().find(|(id, _)| id == "h2-c5").unwrap();
    assert_eq!(again.trim(), first, "same container, same address");
    // Released addresses are free again; the count goes down.
    let released = routers[1].run(&["ipam", "release", "h2-c5"]).unwrap();
    assert_eq!(released.trim(), parse_cidr(first).unwrap().to_string());
    assert_eq!(assert_unique(&holdings(&r)), 200);
    tb.destroy().unwrap();
}

#[test]
fn a_healed_partition_leaves_no_duplicates() {
    let tb = Testbed::create_owned("ipampart", Spec::hosts(3)).unwrap();
    let mut routers = tb.weft_mesh(3, INIT3).unwrap();
    for r in &routers {
        r.run(&["ipam", "allocate", &format!("warmup{}", r.host)])
            .unwrap();
    }
    let mut tb = tb;
    // Host 3 alone on one side, hosts 1 and 2 on the other.
    tb.block(1, 3, Block::All).unwrap();
    tb.block(2, 3, Block::All).unwrap();
    eventually("host 3 to lose its peers", Duration::from_secs(30), || {
        let out = routers[2]
            .run(&["status", "ipam"])
            .map_err(|e| e.to_string())?;
        (out.matches("UNREACHABLE").count() == 2)
            .then_some(())
            .ok_or(out)
    });
    let majority: Vec<_> = (0..2)
        .map(|i| allocate_concurrently(&routers[i], &format!("split{}-", i + 1), 20))
        .collect();
    let minority = allocate_concurrently(&routers[2], "split3-", 5);
    let ok = |v: &Vec<(String, String)>| v.iter().filter(|(_, a)| parse_cidr(a).is_some()).count();
    eprintln!(
        "during the partition: {} + {} allocated on the majority side, {} on host 3",
        ok(&majority[0]),
        ok(&majority[1]),
        ok(&minority)
    );
    assert_eq!(ok(&majority[0]) + ok(&majority[1]), 40, "{majority:?}");
    assert!(ok(&minority) >= 1, "host 3 uses what it had: {minority:?}");
    tb.unblock(1, 3).unwrap();
    tb.unblock(2, 3).unwrap();
    eventually("the partition to heal", Duration::from_secs(60), || {
        let out = routers[0]
            .run(&["status", "ipam"])
            .map_err(|e| e.to_string())?;
        (!out.contains("UNREACHABLE")).then_some(()).ok_or(out)
    });
    for (i, r) in routers.iter().enumerate() {
        for n in 0..10 {
            r.run(&["ipam", "allocate", &format!("after{}-{n}", i + 1)])
                .unwrap();
        }
    }
    let r: Vec<&WeftHost> = routers.iter().collect();
    let total = assert_unique(&holdings(&r));
    assert_eq!(total, 3 + 40 + ok(&minority) + 30);
    routers.clear();
    tb.destroy().unwrap();
}

#[test]
fn meshes_formed_apart_are_refused_until_one_side_resets() {
    let tb = Testbed::create_owned("ipamsplit", Spec::hosts(2)).unwrap();
    let a = tb.weft(1);
    let b = tb.weft(2);
    a.launch(&[]).unwrap();
    b.launch(&[]).unwrap();
    a.run(&["ipam", "allocate", "x"]).unwrap();
    b.run(&["ipam", "allocate", "y"]).unwrap();
    b.run(&["connect", &tb.host_addr(1).to_string()]).unwrap();
    let refusal = eventually(
        "the connection to be refused",
        Duration::from_secs(30),
        || {
            let out = b.run(&["status", "targets"]).map_err(|e| e.to_string())?;
            out.contains("IPAM cluster")
                .then_some(out.clone())
                .ok_or(out)
        },
    );
    eprintln!("{refusal}");
    assert!(refusal.contains("weft ipam reset"), "{refusal}");
    let conns = a.run(&["status", "connections"]).unwrap();
    assert!(!conns.contains("established"), "{conns}");
    // The operator resolves it: host 2 gives up its allocations.
    let err = b.command(&["ipam", "reset"]).unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("--detach"));
    b.run(&["ipam", "reset", "--detach"]).unwrap();
    b.run(&["connect", "--replace", &tb.host_addr(1).to_string()])
        .unwrap();
    eventually("one IPAM cluster", Duration::from_secs(30), || {
        let show = |w: &WeftHost| w.json(&["ipam", "show"]).unwrap();
        let (sa, sb) = (show(&a), show(&b));
        (sa["cluster"] == sb["cluster"] && !sb["cluster"].is_null())
            .then_some(())
            .ok_or(format!("{} vs {}", sa["cluster"], sb["cluster"]))
    });
    let y = b.run(&["ipam", "allocate", "y2"]).unwrap();
    let x = a.run(&["ipam", "allocate", "x"]).unwrap();
    assert_ne!(y.trim(), x.trim());
    tb.destroy().unwrap();
}

#[test]
fn attach_without_an_address_takes_one_from_ipam_and_detach_gives_it_back() {
    let tb = Testbed::create_owned("ipamattach", Spec::hosts(2).containers(1)).unwrap();
    let a = tb.weft(1);
    let b = tb.weft(2);
    a.launch(&["--ipalloc-init", "consensus=2"]).unwrap();
    b.launch(&[
        "--ipalloc-init",
        "consensus=2",
        &tb.host_addr(1).to_string(),
    ])
    .unwrap();
    let ca = a.run(&["attach", tb.container(1, 1).name()]).unwrap();
    let cb = b.run(&["attach", tb.container(2, 1).name()]).unwrap();
    let (ca, cb) = (
        parse_cidr(ca.trim()).unwrap(),
        parse_cidr(cb.trim()).unwrap(),
    );
    assert_ne!(ca, cb);
    assert!(testbed::pings(&tb.container(1, 1), cb), "{ca} reaches {cb}");
    let held = |w: &WeftHost| w.ipam_holdings().unwrap().len();
    assert_eq!(held(&b), 1);
    b.run(&["detach", tb.container(2, 1).name()]).unwrap();
    assert_eq!(held(&b), 0, "detach releases the address");
    tb.destroy().unwrap();
}
