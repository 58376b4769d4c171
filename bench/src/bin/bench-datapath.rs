//! Container-to-container performance over weft's data paths against
//! plain veth between the same two container namespaces, all measured in
//! the same run: qperf tcp_bw, tcp_lat and udp_lat and iperf3 with one and
//! four streams, with the routers' CPU and memory. For context it also
//! measures routing without an overlay and the kernel's own vxlan device.
//! In the kernel VM (`scripts/bench-fastdp`, `scripts/bench`) it measures
//! the fast datapath too, and on request (`--configs odp-direct`) the least
//! an Open vSwitch datapath pays without a bridge in front, beside it.

use std::time::{Duration, Instant};

use bench::{
    Row,
    report::{
        DATAPATH_HOST, DATAPATH_VM, IPERF_1, IPERF_4, ROUTER_CPU, ROUTER_MEMORY, TCP_BW, TCP_LAT,
        UDP_LAT,
    },
};
use clap::{Parser, ValueEnum};
use serde_json::Value;
use testbed::{Netns, Spec, Testbed, WeftHost, eventually};

/// The paths between container 1 of host 1 and container 1 of host 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Config {
    /// A veth joining the two containers directly: the limit.
    Plain,
    /// A veth into each container, routed by the hosts over the underlay.
    Routed,
    /// The kernel's vxlan device on a bridge in each host.
    KernelVxlan,
    /// weft's userspace path without encryption.
    Userspace,
    /// weft's userspace path with a password.
    Encrypted,
    /// weft's fast datapath (needs the openvswitch module).
    Fastdp,
    /// weft's kernel vxlan device path (where there is no openvswitch).
    VxlanDevice,
    /// The least any Open vSwitch datapath design pays (needs the
    /// openvswitch module): each container's veth a port of a datapath,
    /// one flow each way, no bridge in front. Measured beside the fast
    /// datapath, whose extra cost over it is then the bridge's hop.
    OdpDirect,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Plain => "plain veth",
            Config::Routed => "routed veth, no overlay",
            Config::KernelVxlan => "kernel vxlan device",
            Config::Userspace => "weft userspace, clear",
            Config::Encrypted => "weft userspace, encrypted",
            Config::Fastdp => "weft fastdp",
            Config::VxlanDevice => "weft vxlan device",
            Config::OdpDirect => "Open vSwitch datapath, containers on it",
        }
    }

    /// The address of container 2 on this path.
    fn server(self) -> &'static str {
        match self {
            Config::Plain => "10.99.0.2",
            Config::Routed => "10.97.2.2",
            Config::KernelVxlan => "10.98.0.2",
            Config::OdpDirect => "10.95.0.2",
            _ => "10.32.0.2",
        }
    }

    /// weft's flags, the overlay its connection must settle on, and the
    /// throughput target against plain veth.
    fn weft(self) -> Option<(&'static [&'static str], &'static str, &'static str)> {
        match self {
            Config::Userspace => Some((&["--no-fastdp"], "userspace", ">= 0.3")),
            Config::Encrypted => Some((
                &["--no-fastdp", "--password", "bench-secret"],
                "userspace",
                ">= 0.2",
            )),
            Config::Fastdp => Some((&[], "fastdp", ">= 0.85")),
            Config::VxlanDevice => Some((&["--overlay", "vxlan"], "vxlan", ">= 0.6")),
            _ => None,
        }
    }
}

#[derive(Parser)]
#[command(about = "qperf and iperf3 over weft's data paths against plain veth")]
struct Args {
    /// Paths to measure (plain veth, the baseline, always is).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "routed,kernel-vxlan,vxlan-device,userspace,encrypted"
    )]
    configs: Vec<Config>,
    /// Also measure the fast datapath (as `--configs` plus fastdp).
    #[arg(long)]
    fastdp: bool,
    /// Seconds per qperf or iperf3 test.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Repetitions of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Profile each udp_lat measurement into this directory, one file per
    /// configuration and round (see --profile-mode), and beside each weft
    /// measurement the datapath's own counters and flows (`weft dp show`,
    /// `weft dp flows`)
    #[arg(long)]
    profile: Option<std::path::PathBuf>,
    /// How --profile looks: `record`, stacks sampled by `perf record -a
    /// -g` (on the host: the emulated VM's guest takes a handful of
    /// samples a second); `count`, kernel events counted by `perf stat
    /// -a` (packets queued and received, allocations, softirqs, wakeups),
    /// which works in the VM too
    #[arg(long, value_enum, default_value_t = ProfileMode::Record)]
    profile_mode: ProfileMode,
}

/// iperf3's received throughput in bytes/s with `streams` parallel TCP
/// streams.
fn iperf3(client: &Netns, server: &str, streams: u32, seconds: u32) -> Result<f64, String> {
    let out = client
        .run([
            "iperf3",
            "-c",
            server,
            "-J",
            "-t",
            &seconds.to_string(),
            "-P",
            &streams.to_string(),
        ])
        .map_err(|e| e.to_string())?;
    let report: Value =
        serde_json::from_str(&out).map_err(|e| format!("iperf3 -J output: {e}: {out}"))?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bits| bits / 8.0)
        .ok_or_else(|| format!("no end.sum_received in iperf3's report: {out}"))
}

/// What `--profile` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProfileMode {
    /// Sampled stacks (`perf record -a -g`), `<name>.data`.
    Record,
    /// Counted kernel events (`perf stat -a`), `<name>.txt`.
    Count,
}

/// The events `--profile-mode count` counts: per round trip, they tell
/// how many times a packet was queued to a device or a CPU's backlog,
/// received, allocated, and how often a CPU was woken.
const COUNTED_EVENTS: &str = "cpu-clock,context-switches,net:net_dev_queue,net:netif_rx,\
net:netif_receive_skb,kmem:kmalloc,kmem:kmem_cache_alloc,irq:softirq_raise,sched:sched_wakeup";

/// Samples of one configuration, one per round, by metric.
#[derive(Default)]
struct Measured {
    tcp_bw: Vec<f64>,
    iperf_1: Vec<f64>,
    iperf_4: Vec<f64>,
    tcp_lat: Vec<f64>,
    udp_lat: Vec<f64>,
    /// Cores both routers used during the throughput tests.
    cpu: Vec<f64>,
    /// Resident memory of the larger router after the throughput tests, MiB.
    memory: Vec<f64>,
}

/// `rounds` rounds of each of `configs`, alternating round by round so
/// that drift in the machine's speed falls on every configuration alike.
/// `routers` are those running meanwhile, whose CPU and memory are
/// counted for weft's configurations.
fn measure(
    tb: &Testbed,
    configs: &[Config],
    routers: &[WeftHost],
    args: &Args,
) -> Result<Vec<Measured>, String> {
    let client = tb.container(1, 1);
    let pids: Vec<i32> = routers.iter().filter_map(|r| r.pid()).collect();
    let mut all: Vec<Measured> = configs.iter().map(|_| Measured::default()).collect();
    for round in 1..=args.rounds {
        for (&config, m) in configs.iter().zip(&mut all) {
            let server = config.server();
            let beside = !routers.is_empty() && config.weft().is_none();
            let cpu_before: f64 = pids.iter().map(|p| bench::cpu_seconds(*p)).sum();
            let started = Instant::now();
            m.tcp_bw
                .push(bench::qperf(&client, server, "tcp_bw", args.seconds)?);
            m.iperf_1.push(iperf3(&client, server, 1, args.seconds)?);
            m.iperf_4.push(iperf3(&client, server, 4, args.seconds)?);
            let wall = started.elapsed().as_secs_f64();
            let cpu_after: f64 = pids.iter().map(|p| bench::cpu_seconds(*p)).sum();
            m.cpu.push((cpu_after - cpu_before) / wall);
            // Right after four streams went through, while the routers'
            // buffers are at their fullest.
            let resident = pids
                .iter()
                .map(|p| bench::memory_kib(*p, "VmRSS"))
                .fold(0.0, f64::max);
            m.memory.push(resident / 1024.0);
            m.tcp_lat
                .push(bench::qperf(&client, server, "tcp_lat", args.seconds)?);
            let beside_name = if beside { "-beside-weft" } else { "" };
            let file_stem = config.name().replace(' ', "-");
            let profile =
                profile_machine(args, &format!("{file_stem}{beside_name}-{round}-udp_lat"))?;
            m.udp_lat
                .push(bench::qperf(&client, server, "udp_lat", args.seconds)?);
            if let Some(perf) = profile {
                finish_profile(perf)?;
                if let (Some(dir), Some(router)) = (&args.profile, routers.first())
                    && config.weft().is_some()
                {
                    datapath_counters(router, &dir.join(format!("{file_stem}-{round}-dp.txt")))?;
                }
            }
            eprintln!(
                "{}{}, round {round}: tcp_bw {:.2} GB/s, iperf3 {:.2}/{:.2} GB/s, tcp_lat {:.1} µs, udp_lat {:.1} µs",
                config.name(),
                if beside { BESIDE_WEFT } else { "" },
                m.tcp_bw[round - 1] / 1e9,
                m.iperf_1[round - 1] / 1e9,
                m.iperf_4[round - 1] / 1e9,
                m.tcp_lat[round - 1],
                m.udp_lat[round - 1]
            );
        }
    }
    Ok(all)
}

/// With `--profile DIR`, records the whole machine's kernel and user
/// stacks (`perf record -a -g`) into `DIR/<name>.data`, or counts its
/// kernel events into `DIR/<name>.txt`, while a measurement runs, so two
/// paths' per-packet costs can be compared. Returns the recorder to stop
/// afterwards.
fn profile_machine(args: &Args, name: &str) -> Result<Option<std::process::Child>, String> {
    let Some(dir) = &args.profile else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut perf = std::process::Command::new("perf");
    match args.profile_mode {
        ProfileMode::Record => perf
            .args([
                "record",
                "-a",
                "-g",
                "-q",
                "-F",
                "1000",
                "-e",
                "cpu-clock",
                "-o",
            ])
            .arg(dir.join(format!("{name}.data"))),
        ProfileMode::Count => perf
            .args(["stat", "-a", "-e", COUNTED_EVENTS, "-o"])
            .arg(dir.join(format!("{name}.txt"))),
    };
    let perf = perf
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("perf (install linux-perf): {e}"))?;
    // perf needs a moment before it records anything.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Some(perf))
}

/// With `--profile`, what the datapath itself counted (lookups, masks,
/// flows), from the first router, beside the machine's counts.
fn datapath_counters(router: &WeftHost, file: &std::path::Path) -> Result<(), String> {
    let mut out = String::new();
    for what in ["show", "flows"] {
        out += &router
            .run(&["dp", what])
            .map_err(|e| format!("weft dp {what}: {e}"))?;
    }
    std::fs::write(file, out).map_err(|e| format!("{}: {e}", file.display()))
}

/// Stops a `perf record` with SIGINT, which makes it write its file whole.
fn finish_profile(mut perf: std::process::Child) -> Result<(), String> {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(perf.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = perf.wait().map_err(|e| format!("perf: {e}"))?;
    // It ends itself with the signal once the file is written.
    use std::os::unix::process::ExitStatusExt;
    if status.success() || status.signal() == Some(nix::libc::SIGINT) {
        Ok(())
    } else {
        Err(format!("perf failed: {status}"))
    }
}

/// Starts both routers and waits until their connection carries data on
/// `overlay`.
fn launch(tb: &Testbed, extra: &[&str], overlay: &str) -> Result<Vec<WeftHost>, String> {
    let mut routers = Vec::new();
    for h in 1..=2 {
        let weft = tb.weft(h);
        let _ = weft.run(&["reset", "--detach"]);
        let first = tb.host_addr(1).to_string();
        let mut a = extra.to_vec();
        if h == 2 {
            a.push(&first);
        }
        weft.launch(&a).map_err(|e| e.to_string())?;
        let cidr = format!("10.32.0.{h}/12");
        weft.run(&["attach", &cidr, tb.container(h, 1).name()])
            .map_err(|e| e.to_string())?;
        routers.push(weft);
    }
    eventually("the data path", Duration::from_secs(60), || {
        routers[0].overlays(overlay, 1)
    });
    Ok(routers)
}

/// Runs `ip ARGS` in `ns`.
fn ip(ns: &Netns, args: &str) -> Result<(), String> {
    ns.ip(args.split_whitespace())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The reference paths between container 1 of hosts 1 and 2, next to
/// weft's: a veth joining the two containers directly (10.99.0.0/24: the
/// limit, no underlay at all); a veth into each container routed by the
/// hosts over the underlay (10.97.H.0/24: what any cross-host network
/// pays before it adds an overlay); and the kernel's own vxlan device on a
/// bridge in each host (10.98.0.0/24: a reference overlay).
fn reference_paths(tb: &Testbed) -> Result<(), String> {
    let (c1, c2) = (tb.container(1, 1), tb.container(2, 1));
    ip(
        &c1,
        &format!(
            "link add direct type veth peer name direct netns {}",
            c2.name()
        ),
    )?;
    for (ns, addr) in [(&c1, "10.99.0.1/24"), (&c2, "10.99.0.2/24")] {
        ip(ns, &format!("addr add {addr} dev direct"))?;
        ip(ns, "link set dev direct up")?;
    }
    for h in 1..=2usize {
        let other = 3 - h;
        let (host, c) = (tb.host(h), tb.container(h, 1));
        let (remote, vxlan_mtu) = (tb.host_addr(other), 1450);
        // Routed: the host forwards between its veth and the underlay.
        veth_into(&host, &c, ("rt", "rt0"), &format!("10.97.{h}.2/24"), 1500)?;
        ip(&host, &format!("addr add 10.97.{h}.1/24 dev rt"))?;
        ip(&host, "link set dev rt up")?;
        ip(&c, &format!("route add 10.97.{other}.0/24 via 10.97.{h}.1"))?;
        ip(&host, &format!("route add 10.97.{other}.0/24 via {remote}"))?;
        host.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .map_err(|e| e.to_string())?;
        // Kernel vxlan: bridge kvbr with the vxlan device and a veth.
        ip(&host, "link add kvbr type bridge")?;
        ip(&host, "link set dev kvbr up")?;
        ip(
            &host,
            &format!("link add kvx type vxlan id 42 remote {remote} dstport 4789 dev eth0"),
        )?;
        ip(&host, "link set dev kvx master kvbr up")?;
        veth_into(
            &host,
            &c,
            ("kvh", "kv0"),
            &format!("10.98.0.{h}/24"),
            vxlan_mtu,
        )?;
        ip(&host, "link set dev kvh master kvbr up")?;
    }
    Ok(())
}

/// A veth pair from `host` into container `c`: `names.1` inside, with
/// `addr` and `mtu`, up; `names.0` stays in the host for the caller to
/// place.
fn veth_into(
    host: &Netns,
    c: &Netns,
    names: (&str, &str),
    addr: &str,
    mtu: u32,
) -> Result<(), String> {
    let (outer, inner) = names;
    ip(
        host,
        &format!(
            "link add {outer} type veth peer name {inner} netns {}",
            c.name()
        ),
    )?;
    ip(c, &format!("addr add {addr} dev {inner}"))?;
    ip(c, &format!("link set dev {inner} mtu {mtu} up"))
}

/// The datapath of [`Config::OdpDirect`] in each host, and its vxlan port
/// (beside weft's and the kernel device's own UDP ports).
const DIRECT_DATAPATH: &str = "bench-odp";
const DIRECT_VXLAN: &str = "bench-odp-vx";
const DIRECT_UDP_PORT: u16 = 4790;
const DIRECT_VNI: u64 = 43;

/// [`Config::OdpDirect`] between container 1 of hosts 1 and 2
/// (10.95.0.0/24): in each host a datapath whose ports are the
/// container's veth and a vxlan port, and two flows that match every frame
/// by its port alone: from the veth into the tunnel to the other host, and
/// from the tunnel with that id and sender to the veth. No upcalls (a miss
/// is dropped); the datapath goes with the host's namespace.
fn odp_direct_path(tb: &Testbed) -> Result<(), String> {
    use weft_odp::{
        Action, Client, Flow, KeyAttr, PutMode, TunnelAttr, TunnelKey, VportKind, flow::EthernetKey,
    };
    for h in 1..=2usize {
        let (host, c) = (tb.host(h), tb.container(h, 1));
        veth_into(&host, &c, ("odh", "od0"), &format!("10.95.0.{h}/24"), 1450)?;
        ip(&host, "link set dev odh up")?;
        let (local, remote) = (tb.host_addr(h), tb.host_addr(3 - h));
        let made = host.in_thread(move || -> Result<(), weft_odp::Error> {
            let mut odp = Client::connect()?;
            let dp = odp.create_datapath(DIRECT_DATAPATH, 0, 0)?.ifindex;
            let veth = odp
                .create_vport(dp, "odh", VportKind::Netdev, &[0])?
                .port_no;
            let tunnel = VportKind::Vxlan {
                dst_port: DIRECT_UDP_PORT,
            };
            let vxlan = odp.create_vport(dp, DIRECT_VXLAN, tunnel, &[0])?.port_no;
            let any_frame = KeyAttr::Ethernet(EthernetKey::default());
            let out = Flow::new(
                vec![KeyAttr::InPort(veth), any_frame.clone()],
                Some(vec![KeyAttr::InPort(u32::MAX), any_frame.clone()]),
                vec![
                    Action::set_tunnel(&TunnelKey {
                        id: DIRECT_VNI,
                        src: local,
                        dst: remote,
                        tos: 0,
                        ttl: 64,
                        dont_fragment: true,
                        csum: false,
                    }),
                    Action::Output(vxlan),
                ],
            );
            odp.put_flow(dp, &out, PutMode::Create)?;
            let from_peer = vec![
                TunnelAttr::Id(DIRECT_VNI),
                TunnelAttr::Ipv4Src(remote),
                TunnelAttr::Ipv4Dst(local),
                TunnelAttr::Ttl(64),
            ];
            let exact = vec![
                TunnelAttr::Id(u64::MAX),
                TunnelAttr::Ipv4Src(std::net::Ipv4Addr::BROADCAST),
                TunnelAttr::Ipv4Dst(std::net::Ipv4Addr::BROADCAST),
            ];
            let back = Flow::new(
                vec![
                    KeyAttr::Tunnel(from_peer),
                    KeyAttr::InPort(vxlan),
                    any_frame.clone(),
                ],
                Some(vec![
                    KeyAttr::Tunnel(exact),
                    KeyAttr::InPort(u32::MAX),
                    any_frame,
                ]),
                vec![Action::Output(veth)],
            );
            odp.put_flow(dp, &back, PutMode::Create)?;
            Ok(())
        });
        made.map_err(|e| e.to_string())?
            .map_err(|e| format!("host {h}'s datapath for containers on it: {e}"))?;
    }
    Ok(())
}

fn gb(bytes_per_second: &[f64]) -> Vec<f64> {
    bytes_per_second.iter().map(|x| x / 1e9).collect()
}

/// The rows of one configuration: each metric against plain veth's median
/// (plain veth itself without a ratio), and for weft the routers' CPU and
/// memory.
fn rows(benchmark: &str, config: Config, m: &Measured, plain: &Measured) -> Vec<Row> {
    let weft = config.weft();
    let mut rows = Vec::new();
    for (metric, unit, ours, base) in [
        (TCP_BW, "GB/s", gb(&m.tcp_bw), gb(&plain.tcp_bw)),
        (IPERF_1, "GB/s", gb(&m.iperf_1), gb(&plain.iperf_1)),
        (IPERF_4, "GB/s", gb(&m.iperf_4), gb(&plain.iperf_4)),
        (TCP_LAT, "µs", m.tcp_lat.clone(), plain.tcp_lat.clone()),
        (UDP_LAT, "µs", m.udp_lat.clone(), plain.udp_lat.clone()),
    ] {
        let mut row = Row::new(benchmark, config.name(), metric, unit, &ours);
        if config != Config::Plain {
            row = row.against(&base, "plain veth joining the two containers");
            match (weft, metric) {
                (Some((_, _, target)), TCP_BW) => row = row.with_target(target),
                (Some(_), UDP_LAT) => row = row.with_target("<= 3"),
                _ => {}
            }
        }
        rows.push(row);
    }
    if weft.is_some() {
        rows.push(
            Row::new(benchmark, config.name(), ROUTER_CPU, "cores", &m.cpu)
                .with_note("user+system time of both router processes over the throughput tests' wall time; work the kernel does (all of fastdp's forwarding, softirq) is not counted"),
        );
        rows.push(
            Row::new(benchmark, config.name(), ROUTER_MEMORY, "MiB", &m.memory)
                .with_note("resident set (VmRSS) of the larger of the two routers, right after the throughput tests"),
        );
    }
    rows
}

/// weft's kernel path `config` against the kernel's vxlan device alone
/// in the hosts and beside weft (measured round by round with it, so
/// paired), the target applying to the latter: the same host, the same
/// firewall, only the path differs.
fn against_kernel_vxlan(
    benchmark: &str,
    config: Config,
    m: &Measured,
    alone: &Measured,
    beside: &Measured,
) -> Vec<Row> {
    let name = config.name();
    let beside_name =
        "the kernel vxlan device beside weft (same hosts, same netfilter, paired rounds)";
    let mut lat = Row::new(benchmark, name, UDP_LAT, "µs", &m.udp_lat)
        .against_paired(&beside.udp_lat, beside_name);
    if config == Config::Fastdp {
        lat = lat.with_target("<= 1.1");
    }
    let mut rows = vec![
        Row::new(benchmark, name, TCP_BW, "GB/s", &gb(&m.tcp_bw)).against(
            &gb(&alone.tcp_bw),
            "the kernel vxlan device alone in the hosts (no firewall, no connection tracking)",
        ),
        Row::new(benchmark, name, TCP_BW, "GB/s", &gb(&m.tcp_bw))
            .against_paired(&gb(&beside.tcp_bw), beside_name)
            .with_target(">= 0.95"),
        lat,
    ];
    let kernel = format!("{}{BESIDE_WEFT}", Config::KernelVxlan.name());
    rows.push(
        Row::new(benchmark, &kernel, TCP_BW, "GB/s", &gb(&beside.tcp_bw)).against(
            &gb(&alone.tcp_bw),
            "the kernel vxlan device alone in the hosts",
        ),
    );
    rows
}

/// The least an Open vSwitch datapath costs ([`Config::OdpDirect`])
/// against the kernel's vxlan device beside weft, and weft's fast datapath
/// against that least, round by round: where fastdp's cost over the
/// kernel device lies, in the datapath or in the bridge in front of it.
fn against_odp_direct(
    benchmark: &str,
    fastdp: &Measured,
    direct: &Measured,
    kernel_beside: Option<&Measured>,
) -> Vec<Row> {
    // tcp_bw and udp_lat of `name`'s `m` against `base`, round by round.
    let paired = |name: &str, m: &Measured, base: &Measured, base_name: &str| {
        [
            Row::new(benchmark, name, TCP_BW, "GB/s", &gb(&m.tcp_bw))
                .against_paired(&gb(&base.tcp_bw), base_name),
            Row::new(benchmark, name, UDP_LAT, "µs", &m.udp_lat)
                .against_paired(&base.udp_lat, base_name),
        ]
    };
    let mut rows = Vec::new();
    if let Some(kernel) = kernel_beside {
        rows.extend(paired(
            Config::OdpDirect.name(),
            direct,
            kernel,
            "the kernel vxlan device beside weft (paired rounds)",
        ));
    }
    rows.extend(paired(
        Config::Fastdp.name(),
        fastdp,
        direct,
        "the Open vSwitch datapath with containers on it (paired rounds)",
    ));
    rows
}

/// How a measurement of the kernel's vxlan device with weft running is
/// named.
const BESIDE_WEFT: &str = ", beside weft";

fn main() -> Result<(), String> {
    let mut args = Args::parse();
    if args.fastdp && !args.configs.contains(&Config::Fastdp) {
        args.configs.insert(0, Config::Fastdp);
    }
    args.configs.retain(|c| *c != Config::Plain);
    // The kernel vxlan device alone comes first: weft's kernel paths are
    // compared with it (`--fastdp` puts the fast datapath in front).
    args.configs.sort_by_key(|c| *c != Config::KernelVxlan);
    // vm-run sets WEFT_IN_VM: there everything runs emulated, and its
    // numbers must not be mistaken for the host's.
    let benchmark = if std::env::var_os("WEFT_IN_VM").is_some() {
        DATAPATH_VM
    } else {
        DATAPATH_HOST
    };
    let tb = Testbed::create_owned("benchdp", Spec::hosts(2).containers(1))
        .map_err(|e| e.to_string())?;
    reference_paths(&tb)?;
    let server = tb.container(2, 1);
    let _qperf = tb
        .spawn(&server, "qperf", ["qperf"])
        .map_err(|e| e.to_string())?;
    let _iperf3 = tb
        .spawn(&server, "iperf3", ["iperf3", "-s"])
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));

    let plain = measure(&tb, &[Config::Plain], &[], &args)?.remove(0);
    let mut all = rows(benchmark, Config::Plain, &plain, &plain);
    let mut kernel_vxlan: Option<Measured> = None;
    let compare = args.configs.contains(&Config::KernelVxlan);
    let direct = args.configs.contains(&Config::OdpDirect);
    if direct {
        odp_direct_path(&tb)?;
    }
    // Beside the fast datapath when both are asked for.
    if args.configs.contains(&Config::Fastdp) {
        args.configs.retain(|c| *c != Config::OdpDirect);
    }
    for &config in &args.configs {
        let routers = match config.weft() {
            Some((flags, overlay, _)) => launch(&tb, flags, overlay)?,
            None => Vec::new(),
        };
        // weft's kernel paths are measured against the kernel's vxlan
        // device twice: alone in the hosts (what encapsulation costs in a
        // namespace with no firewall at all) and beside weft's routers,
        // where the hosts' netfilter is what weft needs (its masquerade
        // turns connection tracking on, and the bridges hand their frames
        // to it) and what any host with Docker or kube-proxy has.
        let beside = compare && matches!(config, Config::Fastdp | Config::VxlanDevice);
        let mut configs = vec![config];
        if beside {
            configs.push(Config::KernelVxlan);
        }
        if direct && config == Config::Fastdp {
            configs.push(Config::OdpDirect);
        }
        let mut measured = measure(&tb, &configs, &routers, &args)?.into_iter();
        let m = measured.next().expect("one measurement per configuration");
        let kernel_beside = if beside { measured.next() } else { None };
        for r in &routers {
            let _ = r.run(&["stop"]);
        }
        all.extend(rows(benchmark, config, &m, &plain));
        if config == Config::KernelVxlan {
            kernel_vxlan = Some(m);
            continue;
        }
        if let (Some(alone), Some(next)) = (&kernel_vxlan, &kernel_beside) {
            all.extend(against_kernel_vxlan(benchmark, config, &m, alone, next));
        }
        if let Some(on_it) = measured.next() {
            all.extend(rows(benchmark, Config::OdpDirect, &on_it, &plain));
            all.extend(against_odp_direct(
                benchmark,
                &m,
                &on_it,
                kernel_beside.as_ref(),
            ));
        }
    }
    bench::emit(&all, args.json.as_deref())
}
