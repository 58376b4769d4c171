//! The userspace data path on simulated hosts: containers on different
//! hosts reach each other through weft routers, across relays, through a
//! smaller-MTU hop, and encrypted when there is a password.

use std::{net::UdpSocket, time::Duration};

use testbed::{Block, Spec, Testbed, capture, container_addr, eventually, pings, tcp_transfer};

#[test]
fn containers_on_three_hosts_reach_each_other() {
    let tb = Testbed::create_owned("us3", Spec::hosts(3).containers(1)).unwrap();
    let routers = tb.weft_mesh(3, &[]).unwrap();
    for r in &routers {
        eventually("data paths", Duration::from_secs(30), || {
            r.overlays("userspace", 2)
        });
        // This kernel has no openvswitch: every connection says so.
        for c in r.connections().unwrap() {
            assert_eq!(c["reason"], "no-datapath", "h{}: {c}", r.host);
        }
    }
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("no-datapath"), "{status}");
    for a in 1..=3 {
        for b in (1..=3).filter(|b| *b != a) {
            assert!(
                pings(&tb.container(a, 1), container_addr(b)),
                "h{a}c1 -> h{b}c1"
            );
        }
        // ARP resolved every other container's address on the overlay.
        let neigh = tb
            .container(a, 1)
            .run(["ip", "neigh", "show", "dev", "weft0"])
            .unwrap();
        for b in (1..=3).filter(|b| *b != a) {
            assert!(
                neigh.contains(&container_addr(b).to_string()),
                "h{a}c1 ARP table: {neigh}"
            );
        }
    }
    let ps = routers[0].run(&["ps"]).unwrap();
    assert!(
        ps.contains(tb.container(1, 1).name()) && ps.contains("10.32.0.1/12"),
        "{ps}"
    );

    let server = tb.spawn(&tb.container(2, 1), "qperf", ["qperf"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = tb
        .container(1, 1)
        .run([
            "qperf",
            "-t",
            "2",
            &container_addr(2).to_string(),
            "tcp_bw",
            "udp_lat",
        ])
        .unwrap();
    assert!(out.contains("bw") && out.contains("latency"), "{out}");
    drop(server);
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("userspace"), "{status}");

    // Detach takes the container off the network.
    routers[1]
        .run(&["detach", tb.container(2, 1).name()])
        .unwrap();
    assert!(!pings(&tb.container(1, 1), container_addr(2)));
    assert!(
        !routers[1]
            .run(&["ps"])
            .unwrap()
            .contains(tb.container(2, 1).name())
    );
}

#[test]
fn hosts_without_a_direct_path_are_relayed_through_a_third() {
    let tb = Testbed::create_owned("usrelay", Spec::hosts(3).containers(1)).unwrap();
    let mut tb = tb;
    tb.block(2, 3, Block::AllUdp).unwrap();
    let routers = tb.weft_mesh(3, &["--no-discovery"]).unwrap();
    eventually("h1's data paths", Duration::from_secs(30), || {
        routers[0].overlays("userspace", 2)
    });
    for r in &routers[1..] {
        eventually("the spokes' data paths", Duration::from_secs(30), || {
            r.overlays("userspace", 1)
        });
    }
    let before = routers[0].datapath_counter("relayed");
    assert!(
        pings(&tb.container(2, 1), container_addr(3)),
        "h2 -> h3 through h1"
    );
    assert!(
        pings(&tb.container(3, 1), container_addr(2)),
        "h3 -> h2 through h1"
    );
    assert!(
        routers[0].datapath_counter("relayed") > before,
        "h1 relayed the frames"
    );
    tcp_transfer(
        &tb.container(2, 1),
        &tb.container(3, 1),
        container_addr(3),
        5001,
        1 << 20,
    )
    .unwrap();
}

#[test]
fn a_smaller_mtu_hop_does_not_black_hole_tcp() {
    // Host 1 on one side of a router whose link towards hosts 2-3 has MTU
    // 1400; all hosts' own links are 1500.
    let tb = Testbed::create_owned("ushop", Spec::hosts(3).containers(1).hop(1, 1400)).unwrap();
    let routers = tb.weft_mesh(3, &[]).unwrap();
    for r in &routers {
        eventually("data paths", Duration::from_secs(30), || {
            r.overlays("userspace", 2)
        });
    }
    // The overlay MTU follows the 1500 links; the path MTU to h2 is found.
    let mtu = eventually("the path MTU to h2", Duration::from_secs(30), || {
        let report = routers[0].report().map_err(|e| e.to_string())?;
        report["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["nickname"] == "h2")
            .and_then(|c| c["mtu"].as_u64())
            .ok_or_else(|| "not yet".to_string())
    });
    assert!(
        mtu < 1400 - 28,
        "the connection MTU reflects the hop: {mtu}"
    );
    let link = tb
        .container(1, 1)
        .run(["ip", "link", "show", "weft0"])
        .unwrap();
    assert!(link.contains("mtu 1437"), "{link}");
    let took = tcp_transfer(
        &tb.container(1, 1),
        &tb.container(2, 1),
        container_addr(2),
        5001,
        10 << 20,
    )
    .unwrap();
    println!("10 MB through the 1400 hop in {took:?}");
    assert!(
        routers[0].datapath_counter("dropped_too_big") > 0,
        "full-size frames were refused with ICMP"
    );
}

/// Sends datagrams carrying `canary` from host 1's container to host 2's,
/// while tcpdump records the underlay; returns whether the canary appears.
fn canary_on_the_wire(tb: &Testbed, canary: &'static [u8]) -> bool {
    let to = container_addr(2);
    let bytes = capture(tb, "udp", || {
        tb.container(1, 1)
            .in_thread(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..20 {
                    s.send_to(canary, (to, 9999)).unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
            .unwrap();
    })
    .unwrap();
    assert!(
        bytes.len() > 24 + 20 * 40,
        "the capture holds the datagrams ({} bytes)",
        bytes.len()
    );
    bytes.windows(canary.len()).any(|w| w == canary)
}

#[test]
fn with_a_password_nothing_readable_crosses_the_wire() {
    let canary: &'static [u8] = b"weft-plaintext-canary-0123456789";
    let tb = Testbed::create_owned("uspw", Spec::hosts(3).containers(1)).unwrap();
    let first = tb.host_addr(1).to_string();
    let (h1, h2, h3) = (tb.weft(1), tb.weft(2), tb.weft(3));
    h1.launch(&["--password", "s3cret"]).unwrap();
    h2.launch(&["--password", "s3cret", &first]).unwrap();
    // Never admitted, h3 divides the range alone (its container's address
    // is claimed in IPAM, which needs a ring).
    h3.launch(&[
        "--password",
        "wrong",
        "--ipalloc-init",
        "consensus=1",
        &first,
    ])
    .unwrap();
    for h in 1..=3 {
        let cidr = format!("{}/12", container_addr(h));
        tb.weft(h)
            .run(&["attach", &cidr, tb.container(h, 1).name()])
            .unwrap();
    }
    eventually("h1-h2 data path", Duration::from_secs(30), || {
        h1.overlays("userspace", 1)
    });
    let report = h1.report().unwrap();
    assert_eq!(report["connections"][0]["encrypted"], true, "{report}");
    assert!(pings(&tb.container(1, 1), container_addr(2)));
    assert!(
        !canary_on_the_wire(&tb, canary),
        "plaintext on the underlay"
    );
    // A bulk transfer arrives intact; its datagrams reach h2 in runs (UDP
    // GRO), which are opened together.
    tcp_transfer(
        &tb.container(1, 1),
        &tb.container(2, 1),
        container_addr(2),
        5001,
        8 << 20,
    )
    .unwrap();
    assert!(h2.datapath_counter("opened_together") > 0);

    // The router with the wrong password is never given a data path, so it
    // gets nothing: no frame reaches its bridge, its container reaches no one.
    assert!(!pings(&tb.container(3, 1), container_addr(1)));
    assert_eq!(h3.datapath_counter("frames_to_bridge"), 0);
    assert_eq!(h3.overlays("userspace", 0), Ok(()));
}

#[test]
fn without_a_password_the_capture_does_show_the_payload() {
    // The control for the test above: the canary check can see plaintext.
    let canary: &'static [u8] = b"weft-plaintext-canary-0123456789";
    let tb = Testbed::create_owned("usclear", Spec::hosts(2).containers(1)).unwrap();
    let routers = tb.weft_mesh(2, &[]).unwrap();
    eventually("data path", Duration::from_secs(30), || {
        routers[0].overlays("userspace", 1)
    });
    assert!(pings(&tb.container(1, 1), container_addr(2)));
    assert!(canary_on_the_wire(&tb, canary));
}

#[test]
fn trusted_subnets_skip_encryption_of_data() {
    let tb = Testbed::create_owned("ustrust", Spec::hosts(2).containers(1)).unwrap();
    let routers = tb
        .weft_mesh(
            2,
            &["--password", "s3cret", "--trusted-subnets", "192.0.2.0/24"],
        )
        .unwrap();
    eventually("data path", Duration::from_secs(30), || {
        routers[0].overlays("userspace", 1)
    });
    let report = routers[0].report().unwrap();
    assert_eq!(report["connections"][0]["encrypted"], false, "{report}");
    assert!(pings(&tb.container(1, 1), container_addr(2)));
}
