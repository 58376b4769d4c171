//! The odp crate against the real kernel datapath. These tests need the
//! openvswitch module, which only the kernel VM has: `scripts/test` runs
//! them there through `scripts/vm-test`. Anywhere else they fail, loudly.

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use testbed::{Netns, Spec, Testbed};
use weft_odp::{
    Action, Batch, ChangeSocket, Client, Error, Flow, KeyAttr, KeyFields, PacketCmd, PutMode,
    TunnelAttr, TunnelKey, Upcall, UpcallSocket, VportKind, VportType,
    flow::{EthernetKey, Ipv4Key, PortsKey},
};

const VXLAN_PORT: u16 = 6784;

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, last]
}

fn mac_str(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Connects to the datapath inside `ns`: datapaths, vports and upcall
/// ports all belong to the namespace the netlink socket was opened in.
fn client_in(ns: &Netns) -> Client {
    ns.in_thread(Client::connect)
        .unwrap()
        .expect("the openvswitch module: these tests run in the kernel VM (scripts/vm-test)")
}

fn upcalls_in(ns: &Netns) -> UpcallSocket {
    let socket = ns.in_thread(UpcallSocket::open).unwrap().unwrap();
    socket.set_nonblocking().unwrap();
    socket
}

/// Plugs container `c` into `host` with a veth pair: `port` in the host,
/// `eth0` with `addr/24` and MAC `mac` in the container.
fn plug(host: &Netns, port: &str, c: &Netns, addr: &str, mac: [u8; 6]) {
    host.ip([
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        c.name(),
    ])
    .unwrap();
    c.ip(["link", "set", "dev", "eth0", "address", &mac_str(mac), "up"])
        .unwrap();
    c.ip(["addr", "add", &format!("{addr}/24"), "dev", "eth0"])
        .unwrap();
    host.ip(["link", "set", "dev", port, "up"]).unwrap();
}

fn pings(from: &Netns, to: &str) -> bool {
    // Three tries: under emulation the first may wait on ARP; a path that
    // does not forward fails all three.
    from.succeeds(["ping", "-c3", "-i0.3", "-W2", "-q", to])
        .unwrap()
}

/// Matches every Ethernet frame from `port`: the key needs an Ethernet
/// field (without one the kernel matches only non-Ethernet packets), and
/// the mask ignores everything but the port.
fn from_port(port: u32) -> (Vec<KeyAttr>, Vec<KeyAttr>) {
    let key = vec![
        KeyAttr::InPort(port),
        KeyAttr::Ethernet(EthernetKey::default()),
    ];
    let mask = vec![
        KeyAttr::InPort(u32::MAX),
        KeyAttr::Ethernet(EthernetKey::default()),
    ];
    (key, mask)
}

fn forward(client: &mut Client, dp: i32, from: u32, actions: Vec<Action>) -> Flow {
    let (key, mask) = from_port(from);
    client
        .put_flow(dp, &Flow::new(key, Some(mask), actions), PutMode::Create)
        .unwrap()
}

/// Waits for an upcall that `wanted` accepts; others are skipped.
fn wait_upcall(socket: &UpcallSocket, mut wanted: impl FnMut(&Upcall) -> bool) -> Upcall {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for upcall in socket.recv().unwrap() {
            let upcall = upcall.expect("upcalls from the kernel parse");
            if wanted(&upcall) {
                return upcall;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no matching upcall within 10 s");
}

/// With `WEFT_ODP_CAPTURE=DIR`, records the netlink traffic of namespace
/// `ns` into `DIR/<name>.pcap` while the returned guard lives: the source
/// of the byte-exact fixtures in `odp/tests/captures`
/// (`scripts/capture-odp` regenerates them).
fn capture(tb: &Testbed, ns: &Netns, name: &str) -> Option<Capture> {
    let dir = std::env::var_os("WEFT_ODP_CAPTURE")?;
    ns.ip(["link", "add", "nlmon0", "type", "nlmon"]).unwrap();
    ns.ip(["link", "set", "dev", "nlmon0", "up"]).unwrap();
    let file = std::path::Path::new(&dir).join(format!("{name}.pcap"));
    let file = file.to_str().unwrap();
    let tcpdump = tb
        .spawn(
            ns,
            "tcpdump",
            [
                "tcpdump",
                "--immediate-mode",
                "-i",
                "nlmon0",
                "-U",
                "-w",
                file,
            ],
        )
        .unwrap();
    // tcpdump needs a moment to attach; traffic before that is lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tcpdump.log().contains("listening on") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Capture { _tcpdump: tcpdump })
}

/// Stops tcpdump when dropped, after letting it write out.
struct Capture {
    _tcpdump: testbed::Background,
}

impl Drop for Capture {
    fn drop(&mut self) {
        // Let tcpdump write out what the test's last requests produced.
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn ovs_dpctl(ns: &Netns, args: &[&str]) -> String {
    ns.run(std::iter::once("ovs-dpctl").chain(args.iter().copied()))
        .unwrap()
}

/// The upcall socket gets the whole buffer it asks for, whatever
/// net.core.rmem_max says (208 KiB on the VM's stock kernel): with the
/// capped buffer, a burst of new connections overflowed it and the lost
/// upcalls took the vxlan heartbeats with them.
#[test]
fn the_upcall_socket_gets_its_whole_buffer_past_rmem_max() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let socket = UpcallSocket::open().unwrap();
    let got = socket.recv_buffer_size().unwrap();
    // The kernel counts twice what was asked.
    assert!(
        got >= 2 * weft_odp::upcall::RECEIVE_BUFFER,
        "{got} bytes with rmem_max {rmem_max}"
    );
}

#[test]
fn two_netdev_ports_forward_only_through_installed_flows() {
    let tb = Testbed::create_owned("odp_netdev", Spec::hosts(1).containers(2)).unwrap();
    let (h1, c1, c2) = (tb.host(1), tb.container(1, 1), tb.container(1, 2));
    plug(&h1, "v1", &c1, "10.9.0.1", mac(1));
    plug(&h1, "v2", &c2, "10.9.0.2", mac(2));
    let _capture = capture(&tb, &h1, "netdev");
    let mut odp = client_in(&h1);
    let upcalls = upcalls_in(&h1);

    let dp = odp.create_datapath("tdp", upcalls.port_id(), 0).unwrap();
    assert_eq!(dp.name, "tdp");
    let pid = [upcalls.port_id()];
    let v1 = odp
        .create_vport(dp.ifindex, "v1", VportKind::Netdev, &pid)
        .unwrap();
    let v2 = odp
        .create_vport(dp.ifindex, "v2", VportKind::Netdev, &pid)
        .unwrap();
    assert_eq!((v1.kind, v1.name.as_str()), (VportType::Netdev, "v1"));
    assert_eq!(v1.upcall_pids, pid);

    assert!(!pings(&c1, "10.9.0.2"), "no flows, no forwarding");

    forward(
        &mut odp,
        dp.ifindex,
        v1.port_no,
        vec![Action::Output(v2.port_no)],
    );
    forward(
        &mut odp,
        dp.ifindex,
        v2.port_no,
        vec![Action::Output(v1.port_no)],
    );
    assert!(pings(&c1, "10.9.0.2"), "the flows forward");
    assert!(pings(&c2, "10.9.0.1"));

    // ovs-dpctl, an independent client, sees exactly what we made.
    let show = ovs_dpctl(&h1, &["show"]);
    let ports: Vec<&str> = show
        .lines()
        .filter(|l| l.trim_start().starts_with("port "))
        .collect();
    assert!(show.starts_with("system@tdp:"), "{show}");
    assert_eq!(ports.len(), 3, "local port plus two netdevs: {show}");
    assert!(
        show.contains(&format!("port {}: v1\n", v1.port_no)),
        "{show}"
    );
    assert!(
        show.contains(&format!("port {}: v2\n", v2.port_no)),
        "{show}"
    );
    let flows = ovs_dpctl(&h1, &["dump-flows", "system@tdp"]);
    assert_eq!(flows.lines().count(), 2, "{flows}");
    for (from, to) in [(v1.port_no, v2.port_no), (v2.port_no, v1.port_no)] {
        assert!(
            flows
                .lines()
                .any(|l| l.contains(&format!("in_port({from})"))
                    && l.ends_with(&format!("actions:{to}"))),
            "flow {from} -> {to} in {flows}"
        );
    }
    let listed = odp.flows(dp.ifindex).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|f| f.stats.packets > 0),
        "both flows carried the pings"
    );
    let (key, _) = from_port(v2.port_no);
    let one = odp.flow(dp.ifindex, &key).unwrap();
    assert_eq!(one.actions, vec![Action::Output(v1.port_no)]);
    assert!(one.used_ms.is_some(), "a flow that matched reports when");
    // Putting a flow that exists: Create refuses, CreateOrModify replaces
    // its actions (the kernel reads NLM_F_CREATE as "exclusive").
    let (key, mask) = from_port(v2.port_no);
    let again = Flow::new(key.clone(), Some(mask), vec![Action::Output(v1.port_no)]);
    assert!(matches!(
        odp.put_flow(dp.ifindex, &again, PutMode::Create),
        Err(Error::AlreadyExists { .. })
    ));
    let dropping = Flow::new(again.key.clone(), again.mask.clone(), Vec::new());
    odp.put_flow(dp.ifindex, &dropping, PutMode::CreateOrModify)
        .unwrap();
    assert!(odp.flow(dp.ifindex, &key).unwrap().actions.is_empty());
    odp.put_flow(dp.ifindex, &again, PutMode::CreateOrModify)
        .unwrap();
    assert_eq!(
        odp.flow(dp.ifindex, &key).unwrap().actions,
        vec![Action::Output(v1.port_no)]
    );
    let stats = odp.datapath("tdp").unwrap().stats;
    assert!(
        stats.missed > 0,
        "the pings before the flows were misses: {stats:?}"
    );
    assert!(stats.hit > 0, "the pings after them hit: {stats:?}");
    assert_eq!(stats.flows, 2);
    // Every change to a datapath or its ports is announced, whichever
    // program made it: the router's repairs wait for nothing else.
    let ids = odp.family_ids();
    assert!(ids.datapath_mcgroup.is_some() && ids.vport_mcgroup.is_some());
    let changes = h1
        .in_thread(move || ChangeSocket::open(&ids))
        .unwrap()
        .unwrap();
    assert_eq!(changes.drain(64).unwrap(), 0, "nothing changed yet");
    let features = weft_odp::features::UNALIGNED;
    let changed = odp
        .set_datapath(dp.ifindex, upcalls.port_id(), features)
        .unwrap();
    assert_eq!(changed.user_features & features, features);
    assert_eq!(changes.drain(64).unwrap(), 1, "the features' change");
    let names: Vec<String> = odp
        .datapaths()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["tdp"]);
    let vports = odp.vports(dp.ifindex).unwrap();
    assert_eq!(vports.len(), 3);
    assert!(
        vports
            .iter()
            .any(|v| v.port_no == 0 && v.kind == VportType::Internal && v.name == "tdp")
    );

    // Flows come and go individually.
    let (key, _) = from_port(v1.port_no);
    let deleted = odp.delete_flow(dp.ifindex, &key).unwrap();
    assert!(deleted.stats.packets > 0);
    assert!(!pings(&c1, "10.9.0.2"), "half the path is gone");
    odp.flush_flows(dp.ifindex).unwrap();
    assert!(odp.flows(dp.ifindex).unwrap().is_empty());

    odp.delete_vport(dp.ifindex, v2.port_no).unwrap();
    assert_eq!(changes.drain(64).unwrap(), 1, "the port's deletion");
    assert!(matches!(
        odp.vport(dp.ifindex, "v2"),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(odp.vports(dp.ifindex).unwrap().len(), 2);

    odp.delete_datapath(dp.ifindex).unwrap();
    assert_eq!(ovs_dpctl(&h1, &["show"]), "", "nothing is left");
    assert!(matches!(odp.datapath("tdp"), Err(Error::NotFound { .. })));
    let links = h1.ip(["-o", "link", "show"]).unwrap();
    assert!(
        !links.contains("tdp"),
        "the local port went with the datapath: {links}"
    );
}

/// Sets up one side of a vxlan link: a datapath on `host` with a vxlan
/// vport and a netdev vport to `container`.
struct Side {
    odp: Client,
    upcalls: UpcallSocket,
    dp: i32,
    vxlan: u32,
    local: u32,
}

fn side(host: &Netns, container: &Netns, addr: &str, mac: [u8; 6]) -> Side {
    plug(host, "veth", container, addr, mac);
    let mut odp = client_in(host);
    let upcalls = upcalls_in(host);
    let pid = [upcalls.port_id()];
    let dp = odp
        .create_datapath("vx", upcalls.port_id(), 0)
        .unwrap()
        .ifindex;
    let vxlan = odp
        .create_vport(
            dp,
            "vxlan",
            VportKind::Vxlan {
                dst_port: VXLAN_PORT,
            },
            &pid,
        )
        .unwrap();
    assert_eq!(
        (vxlan.kind, vxlan.dst_port),
        (VportType::Vxlan, Some(VXLAN_PORT))
    );
    let local = odp
        .create_vport(dp, "veth", VportKind::Netdev, &pid)
        .unwrap()
        .port_no;
    Side {
        odp,
        upcalls,
        dp,
        vxlan: vxlan.port_no,
        local,
    }
}

#[test]
fn vxlan_ports_carry_traffic_with_the_tunnel_key() {
    let tb = Testbed::create_owned("odp_vxlan", Spec::hosts(2).containers(1)).unwrap();
    let (h1, h2) = (tb.host(1), tb.host(2));
    let (c1, c2) = (tb.container(1, 1), tb.container(2, 1));
    let _capture = capture(&tb, &h2, "vxlan");
    let mut a = side(&h1, &c1, "10.9.1.1", mac(1));
    let mut b = side(&h2, &c2, "10.9.1.2", mac(2));
    let tunnel = |id, src, dst| TunnelKey {
        id,
        src,
        dst,
        tos: 0,
        ttl: 64,
        dont_fragment: true,
        csum: false,
    };
    let (ha, hb) = (tb.host_addr(1), tb.host_addr(2));

    // Into the tunnel on both sides.
    for (side, key) in [(&mut a, tunnel(42, ha, hb)), (&mut b, tunnel(42, hb, ha))] {
        let actions = vec![Action::set_tunnel(&key), Action::Output(side.vxlan)];
        forward(&mut side.odp, side.dp, side.local, actions);
    }
    // Out of the tunnel only on a: b has no flow yet, so what h1 sends
    // arrives on b as a miss, and its key shows the tunnel.
    forward(&mut a.odp, a.dp, a.vxlan, vec![Action::Output(a.local)]);
    assert!(!pings(&c1, "10.9.1.2"));
    let upcall = wait_upcall(&b.upcalls, |u| u.key.in_port() == Some(b.vxlan));
    assert_eq!(upcall.cmd, PacketCmd::Miss);
    let tun = upcall
        .key
        .tunnel()
        .expect("a tunnel in the key of a packet from vxlan");
    assert!(tun.contains(&TunnelAttr::Id(42)), "{tun:?}");
    assert!(tun.contains(&TunnelAttr::Ipv4Src(ha)), "{tun:?}");
    assert!(tun.contains(&TunnelAttr::Ipv4Dst(hb)), "{tun:?}");
    assert_eq!(upcall.key.ethernet().map(|e| e.src), Some(mac(1)));

    // Now b matches the tunnel id too, and the ping crosses. The kernel
    // wants a TTL in a tunnel key even where the mask ignores it.
    let key = vec![
        KeyAttr::Tunnel(vec![
            TunnelAttr::Id(42),
            TunnelAttr::Ipv4Src(ha),
            TunnelAttr::Ipv4Dst(hb),
            TunnelAttr::Ttl(64),
        ]),
        KeyAttr::InPort(b.vxlan),
        KeyAttr::Ethernet(EthernetKey::default()),
    ];
    let mask = vec![
        KeyAttr::Tunnel(vec![
            TunnelAttr::Id(u64::MAX),
            TunnelAttr::Ipv4Src(Ipv4Addr::BROADCAST),
            TunnelAttr::Ipv4Dst(Ipv4Addr::BROADCAST),
        ]),
        KeyAttr::InPort(u32::MAX),
        KeyAttr::Ethernet(EthernetKey::default()),
    ];
    let flow = Flow::new(key, Some(mask), vec![Action::Output(b.local)]);
    let installed = b.odp.put_flow(b.dp, &flow, PutMode::Create).unwrap();
    assert_eq!(installed.key.tunnel_id(), Some(42));
    assert!(pings(&c1, "10.9.1.2"), "ping across the vxlan tunnel");
    let flows = b.odp.flows(b.dp).unwrap();
    let rx = flows
        .iter()
        .find(|f| f.key.tunnel_id() == Some(42))
        .expect("the tunnel flow");
    assert!(rx.stats.packets > 0, "{rx:?}");
    let dump = ovs_dpctl(&h1, &["dump-flows", "system@vx"]);
    assert!(
        dump.contains("set(tunnel(tun_id=0x2a,src=192.0.2.1,dst=192.0.2.2"),
        "{dump}"
    );

    // Changing a flow's actions in place (modify), then a duplicate create.
    let (key, mask) = from_port(b.local);
    let dropped = Flow::new(key, Some(mask), Vec::new());
    b.odp.put_flow(b.dp, &dropped, PutMode::Modify).unwrap();
    assert!(!pings(&c1, "10.9.1.2"), "b's replies are now dropped");
    let err = b.odp.put_flow(b.dp, &dropped, PutMode::Create).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
}

#[test]
fn misses_arrive_as_upcalls_with_the_packet_key_and_can_be_executed() {
    let tb = Testbed::create_owned("odp_upcall", Spec::hosts(1).containers(2)).unwrap();
    let (h1, c1, c2) = (tb.host(1), tb.container(1, 1), tb.container(1, 2));
    plug(&h1, "v1", &c1, "10.9.2.1", mac(1));
    plug(&h1, "v2", &c2, "10.9.2.2", mac(2));
    let _capture = capture(&tb, &h1, "upcall");
    let mut odp = client_in(&h1);
    let upcalls = upcalls_in(&h1);
    let pid = [upcalls.port_id()];
    let dp = odp
        .create_datapath("up", upcalls.port_id(), 0)
        .unwrap()
        .ifindex;
    let v1 = odp
        .create_vport(dp, "v1", VportKind::Netdev, &pid)
        .unwrap()
        .port_no;
    let v2 = odp
        .create_vport(dp, "v2", VportKind::Netdev, &pid)
        .unwrap()
        .port_no;
    // No ARP needed: c1 knows c2's MAC, so the first packet is the datagram.
    c1.ip([
        "neigh",
        "add",
        "10.9.2.2",
        "lladdr",
        &mac_str(mac(2)),
        "dev",
        "eth0",
    ])
    .unwrap();

    let receiver = c2
        .spawn_thread(|| {
            let socket = UdpSocket::bind("10.9.2.2:9999").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            (buf[..n].to_vec(), from)
        })
        .unwrap();
    c1.in_thread(|| {
        let socket = UdpSocket::bind("10.9.2.1:7777").unwrap();
        socket.send_to(b"weft-upcall", "10.9.2.2:9999").unwrap();
    })
    .unwrap();

    let upcall = wait_upcall(&upcalls, |u| {
        u.key
            .iter()
            .any(|k| matches!(k, KeyAttr::Udp(PortsKey { dst: 9999, .. })))
    });
    assert_eq!(upcall.cmd, PacketCmd::Miss);
    assert_eq!(upcall.key.in_port(), Some(v1));
    assert_eq!(
        upcall.key.ethernet(),
        Some(EthernetKey {
            src: mac(1),
            dst: mac(2)
        })
    );
    assert_eq!(upcall.key.ether_type(), Some(0x0800));
    let ipv4 = upcall.key.iter().find_map(|k| match k {
        KeyAttr::Ipv4(ip) => Some(*ip),
        _ => None,
    });
    let expected = Ipv4Key {
        src: Ipv4Addr::new(10, 9, 2, 1),
        dst: Ipv4Addr::new(10, 9, 2, 2),
        proto: 17,
        tos: 0,
        ttl: 64,
        frag: 0,
    };
    assert_eq!(ipv4, Some(expected));
    assert!(upcall.key.contains(&KeyAttr::Udp(PortsKey {
        src: 7777,
        dst: 9999
    })));
    // The key describes the packet that came with it.
    let frame = &upcall.packet;
    assert_eq!(&frame[0..6], &mac(2));
    assert_eq!(&frame[6..12], &mac(1));
    assert!(frame.ends_with(b"weft-upcall"));

    // Execute: the datapath delivers the packet we hand back.
    let key = vec![KeyAttr::InPort(v1)];
    odp.execute(dp, frame, key, vec![Action::Output(v2)])
        .unwrap();
    let (payload, from) = receiver.join().unwrap().unwrap();
    assert_eq!(payload, b"weft-upcall");
    assert_eq!(from.to_string(), "10.9.2.1:7777");

    // Queued misses can be dropped unread, and the socket reads whole
    // upcalls after that.
    c1.in_thread(|| {
        let socket = UdpSocket::bind("10.9.2.1:7779").unwrap();
        for _ in 0..5 {
            socket.send_to(b"stale", "10.9.2.2:9999").unwrap();
        }
    })
    .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while upcalls.queued_bytes().unwrap() < 5 * 60 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = upcalls.queued_bytes().unwrap();
    assert!(queued >= 5 * 60, "{queued} bytes queued for 5 misses");
    let mut dropped = 0;
    while dropped < 5 && Instant::now() < until {
        dropped += upcalls.discard(3).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        dropped >= 5,
        "only {dropped} of 5 queued misses were dropped"
    );
    c1.in_thread(|| {
        let socket = UdpSocket::bind("10.9.2.1:7780").unwrap();
        socket.send_to(b"fresh", "10.9.2.2:9999").unwrap();
    })
    .unwrap();
    let fresh = wait_upcall(&upcalls, |u| u.packet.ends_with(b"fresh"));
    assert_eq!(fresh.cmd, PacketCmd::Miss);
    assert!(fresh.key.contains(&KeyAttr::Udp(PortsKey {
        src: 7780,
        dst: 9999
    })));

    // A batch goes in one datagram and each request is answered on its
    // own, in order: the second put of the same flow fails alone.
    let c2_socket = c2
        .in_thread(|| UdpSocket::bind("10.9.2.2:9999").unwrap())
        .unwrap();
    c2_socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (key, mask) = from_port(v1);
    let to_c2 = Flow::new(key, Some(mask), vec![Action::Output(v2)]);
    let mut batch = Batch::default();
    batch.put_flow(dp, &to_c2, PutMode::Create);
    batch.put_flow(dp, &to_c2, PutMode::Create);
    let key = vec![KeyAttr::InPort(v1)];
    batch.execute(dp, &fresh.packet, key, vec![Action::Output(v2)]);
    let results = odp.send_batch(batch).unwrap();
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(Error::AlreadyExists { .. })),
        "{results:?}"
    );
    assert!(results[2].is_ok(), "{results:?}");
    assert_eq!(odp.flow(dp, &to_c2.key).unwrap().actions, to_c2.actions);
    let mut buf = [0u8; 64];
    let (n, _) = c2_socket.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"fresh");

    // A pass of the router's flow table deletes a step of flows in
    // batches: every one of a full batch answered, in order, a flow that
    // is not there on its own.
    let by_source = |i: u8| {
        let ethernet = |src| {
            KeyAttr::Ethernet(EthernetKey {
                src,
                dst: [0x02, 0, 0, 0, 0, 0xfe],
            })
        };
        let key = vec![KeyAttr::InPort(v2), ethernet([0x02, 0, 0, 0, 1, i])];
        let mask = vec![KeyAttr::InPort(u32::MAX), ethernet([0xff; 6])];
        Flow::new(key, Some(mask), vec![Action::Output(v1)])
    };
    let flows: Vec<Flow> = (0..64).map(by_source).collect();
    let before = odp.flows(dp).unwrap().len();
    let mut puts = Batch::default();
    for flow in &flows {
        puts.put_flow(dp, flow, PutMode::Create);
    }
    assert!(odp.send_batch(puts).unwrap().iter().all(Result::is_ok));
    assert_eq!(odp.flows(dp).unwrap().len(), before + 64);
    let mut deletes = Batch::default();
    for flow in flows.iter().skip(1) {
        deletes.delete_flow(dp, &flow.key);
    }
    deletes.delete_flow(dp, &by_source(200).key);
    let results = odp.send_batch(deletes).unwrap();
    assert_eq!(results.len(), 64);
    assert!(results[..63].iter().all(Result::is_ok), "{results:?}");
    assert!(
        matches!(results[63], Err(Error::NotFound { .. })),
        "{results:?}"
    );
    assert_eq!(
        odp.flows(dp).unwrap().len(),
        before + 1,
        "the one not deleted stays"
    );
    odp.delete_flow(dp, &flows[0].key).unwrap();

    // A userspace action hands packets up with our cookie.
    let (key, mask) = from_port(v1);
    let cookie = b"cookie42".to_vec();
    let flow = Flow::new(
        key,
        Some(mask),
        vec![Action::userspace(upcalls.port_id(), Some(cookie.clone()))],
    );
    odp.put_flow(dp, &flow, PutMode::CreateOrModify).unwrap();
    c1.in_thread(|| {
        let socket = UdpSocket::bind("10.9.2.1:7778").unwrap();
        socket.send_to(b"again", "10.9.2.2:9999").unwrap();
    })
    .unwrap();
    // The flow matches everything from c1, so c1's own IPv6 neighbour
    // discovery may come up through it first: pick our datagram by content.
    let action = wait_upcall(&upcalls, |u| u.packet.ends_with(b"again"));
    assert_eq!(action.cmd, PacketCmd::Action);
    assert_eq!(action.userdata, Some(cookie));
}

#[test]
fn kernel_errors_are_told_apart() {
    let tb = Testbed::create_owned("odp_errors", Spec::hosts(1)).unwrap();
    let h1 = tb.host(1);
    let _capture = capture(&tb, &h1, "errors");
    let mut odp = client_in(&h1);
    let dp = odp.create_datapath("errs", 0, 0).unwrap();
    let again = odp.create_datapath("errs", 0, 0).unwrap_err();
    assert!(matches!(again, Error::AlreadyExists { .. }), "{again}");
    let missing = odp.datapath("nosuch").unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
    let bad = weft_odp::VportMessage::get(dp.ifindex, Some("nosuch"));
    let err = odp.request(&bad, 0, false, "vport nosuch").unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    // A vxlan port without its UDP port option is invalid.
    let mut no_port =
        weft_odp::VportMessage::create(dp.ifindex, "vx0", VportKind::Vxlan { dst_port: 1 }, &[0]);
    no_port
        .attrs
        .retain(|a| !matches!(a, weft_odp::VportAttr::Options(_)));
    let err = odp.request(&no_port, 0, false, "vport vx0").unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");

    // Without CAP_NET_ADMIN the kernel refuses changes, and we say so;
    // looking things up needs no privilege.
    let probe = testbed::workspace_bin("weft-odp-probe").unwrap();
    let as_nobody = |op: &str| {
        let out = h1
            .command([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ])
            .arg(&probe)
            .arg(op)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(as_nobody("create-datapath").starts_with("create-datapath: PermissionDenied"));
    assert_eq!(as_nobody("list-datapaths"), "list-datapaths: ok\n");
    odp.delete_datapath(dp.ifindex).unwrap();
}
