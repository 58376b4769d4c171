//! Off the overlay, on simulated hosts with a host of the world beside
//! them: the host's gateway (`weft expose`), containers' default route
//! through it, masquerading in weft's own nftables table (and its repair),
//! Kubernetes-style service addresses across hosts, and ranges that
//! collide with the host's network refused.

use std::time::Duration;

use testbed::{Netns, Spec, Testbed, eventually, pings, tcp_seen_source};

/// Whether weft's tables (both families) are in the host's kernel.
fn tables_exist(host: &Netns) -> bool {
    ["inet", "bridge"].iter().all(|family| {
        host.succeeds(["nft", "list", "table", family, "weft"])
            .unwrap()
    })
}

#[test]
fn containers_reach_their_host_other_hosts_and_the_world_through_the_gateway() {
    let tb = Testbed::create_owned("gw", Spec::hosts(3).containers(1).with_outside()).unwrap();
    let (routers, gateways, containers) = tb.exposed_mesh(3, &[], "userspace").unwrap();
    let (c2, out) = (tb.container(2, 1), tb.outside());
    let world = tb.spec().outside_addr();

    // The container's routes: the range on-link, everything else to the
    // host's gateway.
    let routes = c2.ip(["-4", "route"]).unwrap();
    assert!(
        routes.contains(&format!("default via {}", gateways[1])),
        "{routes}"
    );
    assert!(routes.contains("10.32.0.0/12 dev weft0"), "{routes}");

    // To the world: ping and TCP, leaving with host 2's address.
    assert!(pings(&c2, world), "h2c1 -> the outside");
    assert_eq!(
        tcp_seen_source(&c2, &out, world, 7001).unwrap(),
        tb.host_addr(2),
        "the outside sees host 2's address"
    );
    // To its own host, by gateway and by underlay address.
    assert!(pings(&c2, gateways[1]));
    assert!(pings(&c2, tb.host_addr(2)));
    // To another host of the mesh: with its own address (that host has a
    // gateway, so it answers through the overlay).
    assert_eq!(
        tcp_seen_source(&c2, &tb.host(1), tb.host_addr(1), 7002).unwrap(),
        containers[1]
    );
    // A host's processes reach containers on other hosts through its
    // gateway address.
    assert_eq!(
        tcp_seen_source(&tb.host(1), &tb.container(3, 1), containers[2], 7003).unwrap(),
        gateways[0]
    );

    // What the router says: the gateway, the table, the mesh hosts.
    let status = routers[1].run(&["status"]).unwrap();
    assert!(
        status.contains(&format!("Gateway: {}/12 on bridge weft", gateways[1])),
        "{status}"
    );
    assert!(
        status.contains("nftables tables inet weft and bridge weft"),
        "{status}"
    );
    assert!(status.contains("2 mesh host(s)"), "{status}");
    let ps = routers[1].run(&["ps"]).unwrap();
    assert!(ps.starts_with("weft:expose"), "{ps}");

    // Someone deletes weft's table: it comes back, and so does the way out.
    tb.host(2)
        .run(["nft", "delete", "table", "inet", "weft"])
        .unwrap();
    eventually("the table restored", Duration::from_secs(30), || {
        let restored =
            routers[1].report().map_err(|e| e.to_string())?["host"]["firewall"]["restored"]
                .as_u64()
                .unwrap_or(0);
        (restored >= 1 && tables_exist(&tb.host(2)))
            .then_some(())
            .ok_or(format!("restored {restored}"))
    });
    assert_eq!(
        tcp_seen_source(&c2, &out, world, 7004).unwrap(),
        tb.host_addr(2)
    );

    // A restart keeps the gateway: it is back on the bridge, with the same
    // MAC (containers' ARP entries stay right), and the container still
    // gets out.
    let mac = |ns: &Netns| {
        let link = ns.ip(["-o", "link", "show", "weft"]).unwrap();
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap()
            .to_string()
    };
    let before = mac(&tb.host(2));
    routers[1].run(&["stop"]).unwrap();
    routers[1].launch(&[&tb.host_addr(1).to_string()]).unwrap();
    assert_eq!(mac(&tb.host(2)), before, "the bridge keeps its MAC");
    let bridge = tb.host(2).ip(["-4", "-o", "addr", "show", "weft"]).unwrap();
    assert!(bridge.contains(&format!("{}/12", gateways[1])), "{bridge}");
    assert!(
        pings(&c2, world),
        "out again after the restart: routes {} bridge {} table {:?} log {}",
        c2.ip(["-4", "route"]).unwrap(),
        tb.host(2).ip(["-4", "addr", "show", "weft"]).unwrap(),
        tb.host(2).run(["nft", "list", "ruleset"]),
        routers[1].log()
    );

    // Hide: the gateway leaves the bridge and IPAM.
    let hidden = routers[1].run(&["hide"]).unwrap();
    assert_eq!(hidden.trim(), format!("{}/12", gateways[1]));
    assert!(!pings(&c2, world), "no way out without a gateway");
    assert!(
        routers[1]
            .run(&["status"])
            .unwrap()
            .contains("Gateway: none"),
        "status says so"
    );
    let held = routers[1].ipam_holdings().unwrap();
    assert!(!held.contains_key("weft:expose"), "{held:?}");

    // Reset takes weft's table away.
    routers[1].run(&["reset", "--detach"]).unwrap();
    assert!(!tables_exist(&tb.host(2)));
    tb.destroy().unwrap();
}

#[test]
fn without_masquerade_the_world_sees_containers_own_addresses() {
    let tb = Testbed::create_owned("nomasq", Spec::hosts(2).containers(1).with_outside()).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    h1.launch(&["--no-masquerade"]).unwrap();
    h2.launch(&[
        "--masquerade-exclude",
        "192.0.2.253/32",
        &tb.host_addr(1).to_string(),
    ])
    .unwrap();
    eventually("connected", Duration::from_secs(30), || {
        h2.overlays("userspace", 1)
    });
    let world = tb.spec().outside_addr();
    for (h, router) in [(1, &h1), (2, &h2)] {
        router.run(&["expose"]).unwrap();
        let addr = router.run(&["attach", tb.container(h, 1).name()]).unwrap();
        let addr = addr.trim().split('/').next().unwrap().to_string();
        // The world routes the container back to its host, as a network
        // that is told the range would.
        tb.outside()
            .ip(["route", "add", &addr, "via", &tb.host_addr(h).to_string()])
            .unwrap();
        assert_eq!(
            tcp_seen_source(&tb.container(h, 1), &tb.outside(), world, 7010 + h as u16)
                .unwrap()
                .to_string(),
            addr,
            "h{h}c1 reaches the world with its own address"
        );
    }
    let status = h1.run(&["status"]).unwrap();
    assert!(status.contains("no masquerading"), "{status}");
    tb.destroy().unwrap();
}

#[test]
fn a_cluster_ip_and_a_node_port_answer_containers_on_every_host() {
    let tb = Testbed::create_owned("svc", Spec::hosts(3).containers(1)).unwrap();
    let (_routers, gateways, containers) = tb.exposed_mesh(3, &[], "userspace").unwrap();
    let [via_service_1, via_service_2, via_node_port] = tb.service_sources(&containers).unwrap();
    // Through the service, with their own addresses.
    assert_eq!(via_service_1, containers[0]);
    assert_eq!(via_service_2, containers[1]);
    // Through host 1's node port: masqueraded by host 1, as kube-proxy
    // does, so the answer goes back through it.
    assert_eq!(via_node_port, gateways[0]);
    tb.destroy().unwrap();
}

#[test]
fn a_range_that_collides_with_the_hosts_network_is_refused() {
    let tb = Testbed::create_owned("collide", Spec::hosts(1).containers(1)).unwrap();
    let h1 = tb.weft(1);
    for (range, expected) in [
        (
            "192.0.2.0/24",
            "holds this host's own address 192.0.2.1 (on eth0)",
        ),
        (
            "192.0.0.0/16",
            "holds this host's own address 192.0.2.1 (on eth0)",
        ),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("127.0.0.0/16", "loopback"),
    ] {
        let out = h1.command(&["launch", "--ipalloc-range", range]).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{range} accepted");
        assert!(stderr.contains(expected), "{range}: {stderr}");
        assert!(stderr.contains("choose one"), "{range}: {stderr}");
        assert!(h1.pid().is_none(), "no router left running");
    }
    // A launched router refuses to expose an address on the host's LAN.
    h1.launch(&[]).unwrap();
    let out = h1.command(&["expose", "192.0.2.77/24"]).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("192.0.2.1 (on eth0)"), "{stderr}");
    assert!(
        h1.run(&["status"]).unwrap().contains("Gateway: none"),
        "nothing exposed"
    );
    // Nor does it attach a container at an address on the host's LAN.
    let out = h1
        .command(&["attach", "192.0.2.50/24", tb.container(1, 1).name()])
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("192.0.2.1 (on eth0)"), "{stderr}");
    assert!(
        tb.container(1, 1).ip(["link", "show", "weft0"]).is_err(),
        "nothing attached"
    );
    tb.destroy().unwrap();
}
