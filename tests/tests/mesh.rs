//! The mesh on simulated hosts: real `weft` routers in network namespaces,
//! driven through the command line like a user would.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io::Write,
    net::TcpStream,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{Spec, Testbed, WeftHost, eventually};

fn peer_names(report: &Value) -> BTreeSet<String> {
    report["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// Whether the established connections in a report connect every peer.
fn connected_mesh(report: &Value) -> bool {
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in report["peers"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_string();
        let list = edges.entry(name).or_default();
        for c in p["connections"].as_array().unwrap() {
            if c["established"].as_bool().unwrap() {
                list.push(c["peer"].as_str().unwrap().to_string());
            }
        }
    }
    let Some(start) = edges.keys().next().cloned() else {
        return false;
    };
    let mut seen = BTreeSet::from([start.clone()]);
    let mut queue = VecDeque::from([start]);
    while let Some(p) = queue.pop_front() {
        for q in edges.get(&p).into_iter().flatten() {
            if seen.insert(q.clone()) {
                queue.push_back(q.clone());
            }
        }
    }
    seen.len() == edges.len()
}

#[test]
fn five_hosts_given_one_address_form_a_connected_mesh() {
    let tb = Testbed::create_owned("mesh5", Spec::hosts(5)).unwrap();
    let started = Instant::now();
    let routers = tb.weft_mesh(5, &[]).unwrap();
    let names: BTreeSet<String> = routers
        .iter()
        .map(|r| {
            r.report().unwrap()["router"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names.len(), 5, "distinct peer names derived per host");
    for r in &routers {
        eventually(
            &format!("h{} to see all five", r.host),
            Duration::from_secs(30),
            || {
                let report = r.report().map_err(|e| e.to_string())?;
                if peer_names(&report) == names && connected_mesh(&report) {
                    Ok(())
                } else {
                    Err(format!("{:?}", peer_names(&report)))
                }
            },
        );
    }
    println!(
        "5 routers formed a connected mesh {:?} after launch began",
        started.elapsed()
    );
    let status = routers[2].run(&["status"]).unwrap();
    assert!(status.contains("Peers: 5"), "{status}");
    let table = routers[2].run(&["status", "connections"]).unwrap();
    assert!(table.starts_with("DIR  ADDRESS"), "{table}");
    assert!(table.contains("established"), "{table}");
    // `weft report` prints the API's report (what the tests read).
    let report = routers[0].json(&["report"]).unwrap();
    assert_eq!(peer_names(&report), names, "weft report: {report}");
    for field in ["name", "nickname", "version"] {
        assert!(report["router"][field].is_string(), "router.{field}");
    }
    for c in report["connections"].as_array().unwrap() {
        for field in [
            "peer",
            "nickname",
            "address",
            "outbound",
            "state",
            "overlay",
            "encrypted",
            "mtu",
            "reason",
        ] {
            assert!(c.get(field).is_some(), "connections[].{field} in {c}");
        }
    }
    // The TCP side of the API, as Prometheus would scrape it; connections
    // count as established once their data paths work too.
    let scrape = || routers[0].metrics().unwrap();
    eventually("metrics of a healthy mesh", Duration::from_secs(30), || {
        let metrics = scrape();
        if metrics.contains("weft_peers 5")
            && metrics.contains("weft_connections{state=\"established\"} 4")
        {
            Ok(())
        } else {
            Err(metrics)
        }
    });
}

#[test]
fn a_killed_router_is_seen_gone_and_rejoins_when_started_again() {
    let tb = Testbed::create_owned("meshkill", Spec::hosts(4)).unwrap();
    let routers = tb.weft_mesh(4, &[]).unwrap();
    let all = |r: &WeftHost, n: usize| -> Result<(), String> {
        let report = r.report().map_err(|e| e.to_string())?;
        let seen = peer_names(&report).len();
        if seen == n {
            Ok(())
        } else {
            Err(format!("{seen} peers"))
        }
    };
    for r in &routers {
        eventually("the mesh", Duration::from_secs(30), || all(r, 4));
    }
    let victim = &routers[2];
    let victim_name = victim.report().unwrap()["router"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    victim.kill9().unwrap();
    let killed = Instant::now();
    for r in routers.iter().filter(|r| r.host != victim.host) {
        eventually(
            "the killed router to be gone",
            Duration::from_secs(30),
            || {
                let report = r.report().map_err(|e| e.to_string())?;
                if peer_names(&report).contains(&victim_name) {
                    Err("still listed".into())
                } else {
                    Ok(())
                }
            },
        );
    }
    println!("others saw it gone after {:?}", killed.elapsed());
    let out = victim.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    assert!(out.contains(&victim_name), "same name after restart: {out}");
    let restarted = Instant::now();
    for r in &routers {
        eventually(
            "the restarted router to rejoin",
            Duration::from_secs(30),
            || all(r, 4),
        );
    }
    println!("rejoined after {:?}", restarted.elapsed());
}

#[test]
fn a_wrong_password_is_refused_and_both_sides_say_why() {
    let tb = Testbed::create_owned("meshpw", Spec::hosts(3)).unwrap();
    let first = tb.host_addr(1).to_string();
    let (h1, h2, h3) = (tb.weft(1), tb.weft(2), tb.weft(3));
    h1.launch(&["--password", "correct horse"]).unwrap();
    h2.launch(&["--password", "correct horse", &first]).unwrap();
    h3.launch(&["--password", "battery staple", &first])
        .unwrap();
    eventually(
        "h1 and h2 to connect, encrypted",
        Duration::from_secs(30),
        || {
            let report = h2.report().map_err(|e| e.to_string())?;
            let c = &report["connections"][0];
            if c["state"] == "established" && c["encrypted"] == true {
                Ok(())
            } else {
                Err(c.to_string())
            }
        },
    );
    let wrong = |r: &WeftHost| -> Result<String, String> {
        let table = r
            .run(&["status", "connections"])
            .map_err(|e| e.to_string())?;
        table
            .lines()
            .find(|l| l.contains("wrong password"))
            .map(str::to_string)
            .ok_or(table)
    };
    let on_h3 = eventually(
        "h3 to report the wrong password",
        Duration::from_secs(30),
        || wrong(&h3),
    );
    let on_h1 = eventually(
        "h1 to report the wrong password",
        Duration::from_secs(30),
        || wrong(&h1),
    );
    println!("h3: {on_h3}\nh1: {on_h1}");
    // Who it was stays sealed (the hello names no one with a password):
    // h1 says where the attempt came from.
    assert!(
        on_h1.contains(&tb.host_addr(3).to_string()),
        "h1 says where the attempt came from: {on_h1}"
    );
    let report = h3.report().unwrap();
    assert_eq!(peer_names(&report).len(), 1, "h3 joined nothing");
    // Refused peers back off instead of retrying in a tight loop.
    std::thread::sleep(Duration::from_secs(5));
    let targets = h3.report().unwrap()["targets"].clone();
    let attempts = targets[0]["attempts"].as_u64().unwrap();
    assert!(
        attempts <= 2,
        "{attempts} attempts in about 10 s: {targets}"
    );
}

#[test]
fn garbage_on_the_control_port_never_crashes_or_stalls_the_router() {
    let tb = Testbed::create_owned("meshjunk", Spec::hosts(3)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    h1.launch(&[]).unwrap();
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    eventually("h2 connected", Duration::from_secs(30), || {
        let n = peer_names(&h2.report().map_err(|e| e.to_string())?).len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} peers"))
        }
    });
    let target = std::net::SocketAddr::from((tb.host_addr(1), 6783));
    let junk: Vec<Vec<u8>> = vec![
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        b"\x00\x00\x00\x20\x01weft\x00\x01".to_vec(), // a hello cut short
        (100u32 << 20).to_be_bytes().to_vec(),        // a 100 MB frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    // One connection that says nothing at all, held open throughout.
    let idle = tb
        .host(3)
        .spawn_thread(move || {
            let s = TcpStream::connect(target);
            std::thread::sleep(Duration::from_secs(12));
            drop(s);
        })
        .unwrap();
    for bytes in junk {
        tb.host(3)
            .in_thread(move || {
                let mut s = TcpStream::connect(target).unwrap();
                let _ = s.write_all(&bytes);
                std::thread::sleep(Duration::from_millis(200));
            })
            .unwrap();
    }
    // A real router joins while the idle connection still hangs.
    let h3 = tb.weft(3);
    h3.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    eventually(
        "h3 to join despite the junk",
        Duration::from_secs(30),
        || {
            let n = peer_names(&h3.report().map_err(|e| e.to_string())?).len();
            if n == 3 {
                Ok(())
            } else {
                Err(format!("{n} peers"))
            }
        },
    );
    let table = h1.run(&["status", "connections"]).unwrap();
    assert!(
        table.contains("exceeds the limit"),
        "the 100 MB frame was refused: {table}"
    );
    assert!(
        h1.pid()
            .is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    );
    idle.join().unwrap().unwrap();
    let table = h1.run(&["status", "connections"]).unwrap();
    assert!(table.contains("handshake timed out"), "{table}");
}
