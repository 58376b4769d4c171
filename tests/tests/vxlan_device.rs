//! The kernel's vxlan device as the data path of hosts without
//! openvswitch (these hosts): every connection of a three-host mesh uses
//! it, bulk traffic never reaches the router, vxlan blocked between two
//! hosts falls back to the userspace path with the reason within 5 s and
//! comes back, and a deleted device or forwarding entry is put back.

use std::time::{Duration, Instant};

use testbed::{Block, Spec, Testbed, WeftHost, eventually};

const DEVICE: &str = "weft-vxdev";

/// `bridge fdb show dev weft-vxdev` on host `h`.
fn entries(tb: &Testbed, h: usize) -> String {
    tb.host(h)
        .run(["bridge", "fdb", "show", "dev", DEVICE])
        .unwrap_or_default()
}

/// The MAC of host `h`'s first container.
fn container_mac(tb: &Testbed, h: usize) -> String {
    let link = tb
        .container(h, 1)
        .run(["cat", "/sys/class/net/weft0/address"])
        .unwrap();
    link.trim().to_string()
}

fn all_on_the_device(routers: &[WeftHost]) {
    for r in routers {
        eventually(
            "connections on the vxlan device",
            Duration::from_secs(30),
            || r.overlays("vxlan", routers.len() - 1),
        );
    }
}

fn diagnostics(tb: &Testbed, routers: &[WeftHost]) -> String {
    let mut out = String::new();
    for r in routers {
        let status = r.run(&["status", "connections"]).unwrap_or_default();
        out.push_str(&format!(
            "==== h{}\n{status}\n{}\n{}\n",
            r.host,
            entries(tb, r.host),
            r.log_tail(20)
        ));
    }
    out
}

#[test]
fn three_hosts_use_the_vxlan_device_fall_back_when_blocked_and_repair_it() {
    let spec = Spec::hosts(3).containers(1).with_outside();
    let mut tb = Testbed::create_owned("vxd3", spec).unwrap();
    // The default a user gets: no openvswitch here, so the device.
    let routers = tb.weft_mesh(3, &["--overlay", "auto"]).unwrap();
    all_on_the_device(&routers);
    for r in &routers {
        for c in r.connections().unwrap() {
            assert_eq!(c["mtu"], 1450, "1500 underlay minus vxlan: {c}");
            assert_eq!(c["reason"], serde_json::Value::Null, "{c}");
        }
    }
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("vxlan"), "{status}");
    tb.ping_all_pairs(3);

    // The device holds entries for the other containers' MACs, and bulk
    // TCP crosses it without the router reading the frames.
    let mac2 = container_mac(&tb, 2);
    eventually("h2c1's MAC on h1's device", Duration::from_secs(10), || {
        let e = entries(&tb, 1);
        if e.contains(&format!("{mac2} dst {}", tb.host_addr(2)))
            && e.contains(&format!("{mac2} sticky master weft static"))
        {
            Ok(())
        } else {
            Err(e)
        }
    });
    let before = routers[0].datapath_counter("frames_from_bridge");
    let started = Instant::now();
    tb.transfer((1, 2), 5201, 20_000_000, || diagnostics(&tb, &routers));
    let read = routers[0].datapath_counter("frames_from_bridge") - before;
    eprintln!(
        "20 MB over the vxlan device in {:?}; the TAP read {read} frames",
        started.elapsed()
    );
    assert!(
        read < 200,
        "20 MB took the userspace path: {read} frames read from the TAP"
    );

    // Anyone else on the underlay who sends vxlan to the device's port is
    // dropped before the device (which would hand the frames to the
    // bridge): 100 frames for h1c1's MAC from the outside host.
    let rx = |tb: &Testbed| -> u64 {
        tb.container(1, 1)
            .run(["cat", "/sys/class/net/weft0/statistics/rx_packets"])
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = rx(&tb);
    let forge = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         frame = bytes.fromhex('{}') + bytes.fromhex('020000000099') + b'\\x88\\xb6' + bytes(46)\n\
         for _ in range(100): s.sendto(bytes.fromhex('0800000077656600') + frame, ('{}', 6784))\n",
        container_mac(&tb, 1).replace(':', ""),
        tb.host_addr(1)
    );
    tb.outside().run(["python3", "-c", &forge]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let forged = rx(&tb) - before;
    assert!(forged < 10, "{forged} forged frames reached h1c1");
    let table = tb
        .host(1)
        .run(["nft", "list", "table", "inet", "weft"])
        .unwrap();
    assert!(
        table.contains("udp dport 6784 ip saddr != @vxlan_peers drop")
            && table.contains(&tb.host_addr(2).to_string())
            && table.contains(&tb.host_addr(3).to_string()),
        "{table}"
    );

    // vxlan blocked between h1 and h2: both fall back within 5 s with the
    // reason and keep carrying traffic; h1-h3 stays on the device.
    tb.block(1, 2, Block::UdpPort(6784)).unwrap();
    let blocked = Instant::now();
    for (r, peer) in [(&routers[0], "h2"), (&routers[1], "h1")] {
        eventually("fallback to userspace", Duration::from_secs(30), || {
            r.connection_is(peer, "userspace", Some("vxlan-blocked"))
        });
    }
    let fallback = blocked.elapsed();
    eprintln!("fallback seen after {fallback:?}");
    assert!(
        fallback <= Duration::from_secs(5),
        "fallback took {fallback:?}"
    );
    routers[0].connection_is("h3", "vxlan", None).unwrap();
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("vxlan-blocked"), "{status}");
    tb.ping_all_pairs(3);
    assert!(
        !entries(&tb, 1).contains(&format!("{mac2} sticky master")),
        "h2's MACs left the bridge's entries for the device:\n{}",
        entries(&tb, 1)
    );
    tb.transfer((2, 1), 5202, 5_000_000, || diagnostics(&tb, &routers));

    tb.unblock(1, 2).unwrap();
    let healed = Instant::now();
    for (r, peer) in [(&routers[0], "h2"), (&routers[1], "h1")] {
        eventually("back on the device", Duration::from_secs(30), || {
            r.connection_is(peer, "vxlan", None)
        });
    }
    eprintln!("back on the device after {:?}", healed.elapsed());
    tb.ping_all_pairs(3);

    // The device carries no broadcasts: with the userspace path's UDP
    // blocked between h1 and h2 (vxlan open), their connection does not
    // count as carrying data (the mesh relays through h3), and says why.
    tb.block(1, 2, Block::UdpPort(6783)).unwrap();
    for (r, peer) in [(&routers[0], "h2"), (&routers[1], "h1")] {
        eventually(
            "not established without userspace",
            Duration::from_secs(30),
            || {
                let c = r.connection_to(peer)?;
                let reason = c["reason"].as_str().unwrap_or_default();
                if c["state"] == "connected" && reason.contains("needs the userspace path") {
                    Ok(())
                } else {
                    Err(c.to_string())
                }
            },
        );
    }
    tb.ping_all_pairs(3);
    tb.unblock(1, 2).unwrap();
    for (r, peer) in [(&routers[0], "h2"), (&routers[1], "h1")] {
        eventually("established again", Duration::from_secs(30), || {
            r.connection_is(peer, "vxlan", None)
        });
    }

    // A forwarding entry deleted under the router is put back.
    tb.host(1)
        .run(["bridge", "fdb", "del", &mac2, "dev", DEVICE, "self"])
        .unwrap();
    let deleted = Instant::now();
    eventually("the entry put back", Duration::from_secs(10), || {
        let e = entries(&tb, 1);
        if e.contains(&format!("{mac2} dst {}", tb.host_addr(2))) {
            Ok(())
        } else {
            Err(e)
        }
    });
    eprintln!("entry repaired after {:?}", deleted.elapsed());

    // So is the device itself, and the connections return to it.
    tb.host(1).run(["ip", "link", "del", DEVICE]).unwrap();
    let deleted = Instant::now();
    eventually("the device put back", Duration::from_secs(10), || {
        tb.host(1)
            .run(["ip", "-d", "link", "show", DEVICE])
            .map_err(|e| e.to_string())
            .and_then(|l| {
                if l.contains("master weft") && l.contains("dstport 6784") {
                    Ok(())
                } else {
                    Err(l)
                }
            })
    });
    eprintln!("device repaired after {:?}", deleted.elapsed());
    all_on_the_device(&routers);
    tb.ping_all_pairs(3);
    tb.transfer((3, 1), 5203, 5_000_000, || diagnostics(&tb, &routers));
    tb.destroy().unwrap();
}

#[test]
fn a_host_without_the_device_talks_userspace_and_says_why() {
    let tb = Testbed::create_owned("vxdmix", Spec::hosts(2).containers(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&["--overlay", "vxlan"]).unwrap();
    let h2 = tb.weft(2);
    let first = tb.host_addr(1).to_string();
    h2.launch(&["--overlay", "userspace", &first]).unwrap();
    for (r, peer, reason) in [
        (&h1, "h2", "peer-without-vxlan-device"),
        (&h2, "h1", "no-datapath"),
    ] {
        eventually("userspace with the reason", Duration::from_secs(30), || {
            r.connection_is(peer, "userspace", Some(reason))
        });
    }
    let status = h1.run(&["status", "connections"]).unwrap();
    assert!(status.contains("peer-without-vxlan-device"), "{status}");
    // The userspace-only host made no device; reset removes h1's.
    assert!(tb.host(2).run(["ip", "link", "show", DEVICE]).is_err());
    assert!(tb.host(1).run(["ip", "link", "show", DEVICE]).is_ok());
    let out = h1.run(&["reset"]).unwrap();
    assert!(out.contains(&format!("removed device {DEVICE}")), "{out}");
    assert!(tb.host(1).run(["ip", "link", "show", DEVICE]).is_err());
    // A device a stopped router left is removed by a router that runs
    // none (its entries would hold MACs nothing maintains).
    h1.launch(&["--overlay", "vxlan"]).unwrap();
    h1.run(&["stop"]).unwrap();
    assert!(tb.host(1).run(["ip", "link", "show", DEVICE]).is_ok());
    h1.launch(&["--overlay", "userspace"]).unwrap();
    assert!(tb.host(1).run(["ip", "link", "show", DEVICE]).is_err());
    tb.destroy().unwrap();
}
