//! weft's fast datapath on simulated hosts inside the kernel VM (the only
//! place with the openvswitch module): connections choose it, fall back to
//! the userspace path when vxlan is blocked and say why, come back when it
//! heals, and survive the datapath being deleted under them. Run by
//! `scripts/vm-test`; on a kernel without openvswitch they fail.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde_json::Value;
use testbed::{Block, Spec, Testbed, WeftHost, container_addr, eventually, pings, tcp_seen_source};
use weft_odp::{Client, features};

/// Under emulation a router takes a few seconds to set up its datapath
/// and pass the first heartbeats.
const SETTLE: Duration = Duration::from_secs(30);

fn all_on_fastdp(routers: &[WeftHost]) {
    for r in routers {
        eventually("connections on fastdp", SETTLE, || {
            r.overlays("fastdp", routers.len() - 1)
        });
    }
}

/// `ovs-dpctl dump-flows` of host `h`.
fn kernel_flows(tb: &Testbed, h: usize) -> String {
    tb.host(h)
        .run(["ovs-dpctl", "dump-flows", "weft-dp"])
        .unwrap()
}

/// The counter `field` (`packets`, `bytes`) of one `ovs-dpctl
/// dump-flows` line.
fn flow_counter(line: &str, field: &str) -> Option<u64> {
    let n = line.split(&format!("{field}:")).nth(1)?;
    n.split(',').next()?.trim().parse().ok()
}

/// Bytes counted on the flows of host `h` that send into a tunnel.
fn tunnelled_bytes(tb: &Testbed, h: usize) -> u64 {
    kernel_flows(tb, h)
        .lines()
        .filter(|l| l.contains("set(tunnel("))
        .filter_map(|l| flow_counter(l, "bytes"))
        .sum()
}

/// Switches weft's datapath in this namespace to per-CPU upcall dispatch,
/// as `ovs-dpctl` does, and says how soon the router switched it back.
fn features_put_back_after() -> Duration {
    let mut odp = Client::connect().unwrap();
    let dp = odp.datapath("weft-dp").unwrap();
    let pid = odp.port_id();
    let changed = Instant::now();
    odp.set_datapath(
        dp.ifindex,
        pid,
        features::UNALIGNED | features::DISPATCH_UPCALL_PER_CPU,
    )
    .unwrap();
    while odp.datapath("weft-dp").unwrap().user_features != 0 {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "the router never put the features back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = changed.elapsed();
    // The router's own change is announced too: let its second look pass.
    std::thread::sleep(Duration::from_millis(200));
    took
}

/// Every flush each router logged, with its cause, for a failure message.
fn flushes(routers: &[WeftHost]) -> String {
    let mut out = String::new();
    for r in routers {
        for line in r.log().lines().filter(|l| l.contains("flushing the fast")) {
            out.push_str(&format!("h{}: {line}\n", r.host));
        }
    }
    out
}

/// What each router and datapath says, for a failure message.
fn diagnostics(routers: &[WeftHost]) -> String {
    let mut out = String::new();
    for r in routers {
        let status = r.run(&["status", "connections"]).unwrap_or_default();
        let flows = r.run(&["dp", "flows"]).unwrap_or_default();
        out.push_str(&format!(
            "==== h{}\n{status}\n{flows}\n{}\n",
            r.host,
            r.log_tail(25)
        ));
    }
    out
}

#[test]
fn three_hosts_use_the_fast_datapath_fall_back_when_blocked_and_heal() {
    let mut tb = Testbed::create_owned("fd3", Spec::hosts(3).containers(1)).unwrap();
    let routers = tb.weft_mesh(3, &[]).unwrap();
    all_on_fastdp(&routers);
    for r in &routers {
        for c in r.connections().unwrap() {
            assert_eq!(c["mtu"], 1450, "1500 underlay minus vxlan: {c}");
            assert_eq!(c["reason"], Value::Null, "{c}");
        }
    }
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("fastdp"), "{status}");
    tb.ping_all_pairs(3);

    // Bulk TCP goes through the kernel: the tunnel flows count it.
    let before = tunnelled_bytes(&tb, 1);
    tb.transfer((1, 2), 5201, 20_000_000, || diagnostics(&routers));
    let flows = kernel_flows(&tb, 1);
    let sent = tunnelled_bytes(&tb, 1) - before;
    assert!(
        sent >= 20_000_000,
        "20 MB over fastdp: {sent} bytes on tunnel flows\n{flows}"
    );
    assert!(flows.contains("set(tunnel(tun_id="), "{flows}");
    let dp = routers[0].run(&["dp", "show"]).unwrap();
    for port in ["weft-dp", "(internal)", "weft-tap", "weft-vxlan"] {
        assert!(dp.contains(port), "weft dp show: {dp}");
    }
    assert!(dp.contains("udp 6784"), "{dp}");
    // Another program changing the datapath's features (ovs-dpctl switches
    // it to per-CPU upcall dispatch just by opening it, and every upcall,
    // heartbeats too, goes to its sockets) is announced by the kernel: the
    // router puts them back at once, not at its next pass up to a second
    // later (which passes five tries in a row one time in 32).
    for _ in 0..5 {
        let took = tb.host(1).in_thread(features_put_back_after).unwrap();
        eprintln!("the router put the datapath's features back after {took:?}");
        assert!(
            took < Duration::from_millis(500),
            "features put back after {took:?}\n{}",
            diagnostics(&routers)
        );
    }
    // Peers' heartbeats come up through their own flow, not as misses.
    let heartbeats = flows
        .lines()
        .find(|l| l.contains("eth_type(0x88b5)"))
        .unwrap_or_else(|| panic!("no heartbeat flow: {flows}"));
    assert!(heartbeats.contains("actions:userspace("), "{heartbeats}");
    let counted = flow_counter(heartbeats, "packets").unwrap_or(0);
    assert!(
        counted > 0,
        "no heartbeat counted on its flow: {heartbeats}"
    );
    let ours = routers[0].run(&["dp", "flows"]).unwrap();
    assert!(
        ours.contains("set(tunnel(id="),
        "weft dp flows: {ours}\nthe kernel's, just before: {flows}\n{}",
        diagnostics(&routers)
    );

    // vxlan blocked between h1 and h2: they fall back within 5 s and keep
    // carrying traffic; h1-h3 stays on fastdp.
    tb.block(1, 2, Block::UdpPort(6784)).unwrap();
    let blocked = Instant::now();
    for (r, peer) in [(&routers[0], "h2"), (&routers[1], "h1")] {
        eventually("fallback to userspace", Duration::from_secs(30), || {
            r.connection_is(peer, "userspace", Some("vxlan-blocked"))
        });
    }
    eprintln!("fallback seen after {:?}", blocked.elapsed());
    routers[0].connection_is("h3", "fastdp", None).unwrap();
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("vxlan-blocked"), "{status}");
    tb.ping_all_pairs(3);
    tb.transfer((2, 1), 5202, 5_000_000, || diagnostics(&routers));

    // Pings every 50 ms across the upgrade: the switch itself may cost a
    // few of them, no more.
    let c1 = tb.container(1, 1);
    let to = container_addr(2).to_string();
    let pinger = std::thread::spawn(move || {
        c1.command(["ping", "-q", "-c", "200", "-i", "0.05", "-W", "1", &to])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(1));
    tb.unblock(1, 2).unwrap();
    let healed = Instant::now();
    for (r, peer) in [(&routers[0], "h2"), (&routers[1], "h1")] {
        eventually("upgrade back to fastdp", Duration::from_secs(30), || {
            r.connection_is(peer, "fastdp", None)
        });
    }
    eprintln!("upgrade seen after {:?}", healed.elapsed());
    let out = String::from_utf8_lossy(&pinger.join().unwrap().stdout).into_owned();
    let received: u32 = out
        .split(" received")
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("ping output: {out}"));
    eprintln!("{} of 200 pings lost across the upgrade", 200 - received);
    assert!(received >= 197, "switching to fastdp lost pings: {out}");
    tb.ping_all_pairs(3);

    let ports_back = |what: &str| {
        eventually(what, Duration::from_secs(30), || {
            let show = tb
                .host(1)
                .run(["ovs-dpctl", "show", "weft-dp"])
                .map_err(|e| e.to_string())?;
            // The internal port is back on the bridge too, and the port
            // that gives the bridge its headroom, down.
            let link = tb
                .host(1)
                .run(["ip", "link", "show", "weft-dp"])
                .map_err(|e| e.to_string())?;
            let headroom = tb
                .host(1)
                .run(["ip", "link", "show", "weft-headroom"])
                .map_err(|e| e.to_string())?;
            if ["(internal)", "weft-tap", "weft-vxlan"]
                .iter()
                .all(|p| show.contains(p))
                && link.contains("master weft ")
                && headroom.contains("master weft state DOWN")
            {
                Ok(())
            } else {
                Err(format!("{show}\n{link}\n{headroom}"))
            }
        })
    };

    // The datapath deleted under the router: rebuilt, traffic resumes.
    tb.host(1).run(["ovs-dpctl", "del-dp", "weft-dp"]).unwrap();
    let deleted = Instant::now();
    ports_back("datapath rebuilt");
    eprintln!("datapath rebuilt after {:?}", deleted.elapsed());
    eventually("traffic after the rebuild", Duration::from_secs(30), || {
        if pings(&tb.container(1, 1), container_addr(2)) {
            Ok(())
        } else {
            Err("no ping h1c1 -> h2c1".to_string())
        }
    });
    all_on_fastdp(&routers);

    // ovs-dpctl switches the datapath to per-CPU upcalls just by opening
    // it (above, many times): the router notices and switches it back.
    eventually(
        "datapath features restored",
        Duration::from_secs(30),
        || {
            let show = routers[0].run(&["dp", "show"]).map_err(|e| e.to_string())?;
            if show.contains("features: none") {
                Ok(())
            } else {
                Err(show)
            }
        },
    );

    // A port taken off the datapath, the vxlan device deleted, then every
    // flow: all come back by themselves.
    tb.host(1)
        .run(["ovs-dpctl", "del-if", "weft-dp", "weft-tap"])
        .unwrap();
    ports_back("weft-tap back on the datapath");
    tb.host(1).ip(["link", "del", "weft-vxlan"]).unwrap();
    ports_back("weft-vxlan recreated");
    // The headroom port cannot come up (so never receives) while the
    // datapath's vxlan port holds its UDP port; deleted, it comes back.
    let up = tb.host(1).ip(["link", "set", "weft-headroom", "up"]);
    assert!(up.is_err(), "the headroom port came up: {up:?}");
    tb.host(1).ip(["link", "del", "weft-headroom"]).unwrap();
    ports_back("weft-headroom put back");
    tb.host(1)
        .run(["ovs-dpctl", "del-flows", "weft-dp"])
        .unwrap();
    eventually(
        "traffic after flows were deleted",
        Duration::from_secs(30),
        || {
            if pings(&tb.container(1, 1), container_addr(3)) {
                Ok(())
            } else {
                Err("no ping h1c1 -> h3c1".to_string())
            }
        },
    );
    tb.ping_all_pairs(3);

    // A router that stops takes its datapath and headroom port with it.
    routers[0].run(&["stop"]).unwrap();
    eventually(
        "the stopped router's devices gone",
        Duration::from_secs(10),
        || {
            let link = |name: &str| tb.host(1).run(["ip", "link", "show", name]);
            match (link("weft-dp"), link("weft-headroom")) {
                (Err(_), Err(_)) => Ok(()),
                (dp, headroom) => Err(format!("{dp:?}\n{headroom:?}")),
            }
        },
    );
}

#[test]
fn a_jumbo_underlay_gives_an_8950_byte_overlay() {
    let tb = Testbed::create_owned("fdjumbo", Spec::hosts(2).containers(1).mtu(9000)).unwrap();
    let routers = tb.weft_mesh(2, &[]).unwrap();
    all_on_fastdp(&routers);
    for r in &routers {
        let c = r
            .connection_to(if r.host == 1 { "h2" } else { "h1" })
            .unwrap();
        assert_eq!(c["mtu"], 8950, "{c}");
    }
    let link = tb
        .container(1, 1)
        .run(["ip", "link", "show", "weft0"])
        .unwrap();
    assert!(
        link.contains("mtu 8950"),
        "the container's interface: {link}"
    );
    // A full-size packet that must not be fragmented crosses.
    let to = container_addr(2).to_string();
    assert!(
        tb.container(1, 1)
            .succeeds(["ping", "-c2", "-W2", "-M", "do", "-s", "8922", &to])
            .unwrap(),
        "8950-byte IP packets over fastdp"
    );
}

#[test]
fn a_password_keeps_data_encrypted_except_between_trusted_hosts() {
    let tb = Testbed::create_owned("fdpw", Spec::hosts(2).containers(1)).unwrap();
    let routers = tb.weft_mesh(2, &["--password", "s3cret"]).unwrap();
    for r in &routers {
        eventually("encrypted userspace path", SETTLE, || {
            let c = r.connection_to(if r.host == 1 { "h2" } else { "h1" })?;
            if c["overlay"] == "userspace"
                && c["reason"] == "encryption-required"
                && c["encrypted"] == true
            {
                Ok(())
            } else {
                Err(c.to_string())
            }
        });
    }
    assert!(pings(&tb.container(1, 1), container_addr(2)));
    let status = routers[0].run(&["status", "connections"]).unwrap();
    assert!(status.contains("encryption-required"), "{status}");
    drop(routers);
    drop(tb);

    let tb = Testbed::create_owned("fdtrust", Spec::hosts(2).containers(1)).unwrap();
    let routers = tb
        .weft_mesh(
            2,
            &["--password", "s3cret", "--trusted-subnets", "192.0.2.0/24"],
        )
        .unwrap();
    all_on_fastdp(&routers);
    assert!(pings(&tb.container(1, 1), container_addr(2)));
}

#[test]
fn services_and_the_world_are_reached_over_the_fast_datapath() {
    let tb = Testbed::create_owned("fdsvc", Spec::hosts(3).containers(1).with_outside()).unwrap();
    let (routers, gateways, containers) = tb.exposed_mesh(3, &[], "fastdp").unwrap();
    let [via_service_1, via_service_2, via_node_port] = tb
        .service_sources(&containers)
        .unwrap_or_else(|e| panic!("{e}\n{}", diagnostics(&routers)));
    assert_eq!(via_service_1, containers[0]);
    assert_eq!(via_service_2, containers[1]);
    // The node port's answer comes back to host 1 and, translated, leaves
    // by the datapath port it came in (hairpin).
    assert_eq!(via_node_port, gateways[0]);
    let world = tb.spec().outside_addr();
    assert_eq!(
        tcp_seen_source(&tb.container(2, 1), &tb.outside(), world, 7001).unwrap(),
        tb.host_addr(2),
        "masqueraded to the world"
    );
    all_on_fastdp(&routers);
}

/// Round trips of `count` pings 20 ms apart, sorted.
fn round_trips(from: &testbed::Netns, to: &str, count: usize) -> Vec<f64> {
    let (mut rtts, _) = testbed::ping(from, to, count, "0.02");
    rtts.sort_by(f64::total_cmp);
    rtts
}

#[test]
fn a_conditioned_container_is_conditioned_and_counted_on_the_fast_datapath() {
    let tb = Testbed::create_owned("fdcond", Spec::hosts(2).containers(1)).unwrap();
    let routers = tb.weft_mesh(2, &[]).unwrap();
    all_on_fastdp(&routers);
    let (c1, to) = (tb.container(1, 1), container_addr(2).to_string());
    eventually("the containers reach each other", SETTLE, || {
        (!round_trips(&c1, &to, 3).is_empty())
            .then_some(())
            .ok_or("no reply".to_string())
    });
    let base = round_trips(&c1, &to, 50);
    assert!(
        base.len() >= 45,
        "unconditioned: {} of 50 answered",
        base.len()
    );
    let base = base[base.len() / 2];

    routers[0]
        .run(&[
            "condition",
            c1.name(),
            "--direction",
            "egress",
            "--latency",
            "20",
        ])
        .unwrap();
    let before = tunnelled_bytes(&tb, 1);
    let rtts = round_trips(&c1, &to, 50);
    let added = rtts[rtts.len() / 2] - base;
    eprintln!("fastdp, latency 20 ms: median round trip grew by {added:.2} ms (base {base:.2} ms)");
    // Never less than the latency; the host suite holds it to 1 ms, but
    // under emulation each pass through the port thread (two packet
    // copies, a wakeup) costs milliseconds of its own, as many as the
    // emulating machine is slow: 2.5-3.6 ms seen on one, 11.3 ms on one
    // 4.6 times slower. So here the bound only catches the latency held
    // twice (40 ms and more), not how exactly it is held.
    assert!(
        (19.5..40.0).contains(&added),
        "round trips grew by {added:.2} ms"
    );
    assert!(
        tunnelled_bytes(&tb, 1) > before,
        "the conditioned pings still cross on fastdp:\n{}",
        diagnostics(&routers)
    );
    all_on_fastdp(&routers);

    // Flow top sees them there too.
    let _pings = tb
        .spawn(&c1, "ping", ["ping", "-n", "-i", "0.1", "-c", "100", &to])
        .unwrap();
    let top = routers[0].json(&["top", "--json"]).unwrap();
    let icmp = top["containers"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["flows"].as_array().unwrap())
        .find(|f| f["protocol"] == 1 && f["remote"] == to.as_str())
        .unwrap_or_else(|| panic!("the pings in flow top: {top:#}"))
        .clone();
    assert!(icmp["outbound"]["packets"].as_u64() > Some(0), "{icmp}");
}

/// Where openvswitch exists `auto` (the default) chooses the fast
/// datapath, and each of the three paths can be forced: `--overlay vxlan`
/// makes the kernel's vxlan device instead of the datapath, `userspace`
/// neither. Traffic crosses each.
#[test]
fn fastdp_is_preferred_and_each_path_can_be_forced() {
    let tb = Testbed::create_owned("fdforce", Spec::hosts(2).containers(1)).unwrap();
    for (overlay, expected) in [
        ("auto", "fastdp"),
        ("vxlan", "vxlan"),
        ("userspace", "userspace"),
    ] {
        for h in 1..=2 {
            let _ = tb.weft(h).run(&["reset", "--detach"]);
        }
        let routers = tb.weft_mesh(2, &["--overlay", overlay]).unwrap();
        for r in &routers {
            eventually(&format!("--overlay {overlay}"), SETTLE, || {
                r.overlays(expected, 1)
            });
        }
        let dp = tb.host(1).run(["ovs-dpctl", "show"]).unwrap_or_default();
        assert_eq!(
            dp.contains("weft-dp"),
            expected == "fastdp",
            "--overlay {overlay}: {dp}"
        );
        let device = tb.host(1).run(["ip", "link", "show", "weft-vxdev"]).is_ok();
        assert_eq!(device, expected == "vxlan", "--overlay {overlay}");
        tb.transfer((1, 2), 5301, 2_000_000, || diagnostics(&routers));
        eprintln!("--overlay {overlay}: {expected}, 2 MB crossed");
    }
}

/// A container sending from 600 source MACs at 200 frames/s fills a flow
/// table of 128 (`--fastdp-max-flows`: a debug router under emulation
/// plans some ten misses a second, too few to fill 8,192 within a test),
/// beside the other VM tests: the router
/// sheds flows in steps instead of flushing the table, the table never
/// holds more than its bound, and two containers that keep talking (pings
/// five times a second) keep their flows: no ping is lost, and a transfer
/// between them goes through meanwhile. A second pair that carried a
/// transfer before the flood and then paused keeps its flow however often
/// the table turns over (least recently used order alone shed it first),
/// and its next connection goes through.
#[test]
fn a_flood_of_mac_pairs_sheds_old_flows_without_a_flush() {
    let tb = Testbed::create_owned("fdchurn", Spec::hosts(2).containers(2)).unwrap();
    let routers = tb.weft_mesh(2, &["--fastdp-max-flows", "128"]).unwrap();
    all_on_fastdp(&routers);
    let (paused_from, paused_to) = (tb.container(1, 2), tb.container(2, 2));
    let paused_addr = Ipv4Addr::new(10, 32, 1, 2);
    for (h, router) in routers.iter().enumerate() {
        let cidr = format!("10.32.1.{}/12", h + 1);
        router
            .run(&["attach", &cidr, tb.container(h + 1, 2).name()])
            .unwrap();
    }
    testbed::tcp_transfer(&paused_from, &paused_to, paused_addr, 5303, 2_000_000).unwrap();
    let (paused_src, paused_dst) = (
        paused_from.mac("weft0").unwrap(),
        paused_to.mac("weft0").unwrap(),
    );
    let paused_flow = || {
        let flows = kernel_flows(&tb, 1);
        let found = flows.lines().any(|l| {
            l.contains(&format!("src={paused_src}")) && l.contains(&format!("dst={paused_dst}"))
        });
        found.then_some(()).ok_or(flows)
    };
    if let Err(flows) = paused_flow() {
        panic!("no flow for the transfer {paused_src} -> {paused_dst} on host 1:\n{flows}");
    }
    let to = container_addr(2).to_string();
    assert!(pings(&tb.container(1, 1), container_addr(2)));
    let pinger = {
        let c1 = tb.container(1, 1);
        std::thread::spawn(move || {
            c1.command(["ping", "-q", "-i", "0.2", "-w", "75", &to])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        })
    };
    let flushes_before = routers[0].fastdp_counter("flushes");
    let dst = tb.container(2, 1).mac("weft0").unwrap();
    let churn = testbed::MacChurn::start(&tb.container(1, 1), "weft0", &dst, 600, 200).unwrap();
    let mut most = 0;
    let mut wait_for_evictions = |wanted: u64, within: Duration| {
        let what = format!("{wanted} flows evicted for room on host 1");
        eventually(&what, within, || {
            most = most.max(routers[0].kernel_flows().unwrap());
            match routers[0].fastdp_counter("flows_evicted") {
                n if n >= wanted => Ok(()),
                n => Err(format!(
                    "{n} evicted, {most} flows at most so far; {}",
                    routers[0].fastdp_metrics().unwrap().join(", ") + &routers[0].log()
                )),
            }
        })
    };
    wait_for_evictions(1, Duration::from_secs(45));
    tb.transfer((1, 2), 5302, 2_000_000, || diagnostics(&routers));
    // As many flows shed as the table holds: least recently used order
    // alone took the paused pair's flow in the first step. (Checked well
    // within the minute after which an idle flow goes anyway.)
    wait_for_evictions(128, Duration::from_secs(40));
    if let Err(flows) = paused_flow() {
        panic!(
            "the paused transfer's flow {paused_src} -> {paused_dst} was shed under the flood:\n{flows}"
        );
    }
    if let Err(e) = testbed::tcp_transfer(&paused_from, &paused_to, paused_addr, 5304, 200_000) {
        panic!(
            "the paused pair's next connection: {e}\n{}",
            diagnostics(&routers)
        );
    }
    most = most.max(routers[0].kernel_flows().unwrap());
    let pings = pinger.join().unwrap().unwrap();
    let sent = churn.stop().unwrap();
    let evicted = routers[0].fastdp_counter("flows_evicted");
    eprintln!(
        "{sent} churn frames sent; host 1: {} misses planned, {} over budget, {evicted} evicted, {} forwarded without a flow, at most {most} flows; pings: {pings}",
        routers[0].fastdp_counter("misses"),
        routers[0].fastdp_counter("misses_over_budget"),
        routers[0].fastdp_counter("flows_not_installed_table_full"),
    );
    assert!(most <= 128, "the table held {most} flows");
    assert_eq!(
        routers[0].fastdp_counter("flushes"),
        flushes_before,
        "the table was flushed under churn:\n{}",
        flushes(&routers)
    );
    let stats = pings
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping statistics: {pings}"));
    let count = |word: &str| -> u64 {
        let before = stats.split(word).next().unwrap();
        before.split_whitespace().last().unwrap().parse().unwrap()
    };
    let (transmitted, received) = (count(" packets transmitted"), count(" received"));
    assert!(transmitted >= 300, "{stats}");
    assert_eq!(
        received,
        transmitted,
        "pings of a pair in use lost: {stats}\n{}",
        flushes(&routers)
    );
    all_on_fastdp(&routers);
}
