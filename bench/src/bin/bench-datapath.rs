//! Container-to-container performance over weft's data paths against
//! plain veth between the same two container namespaces (and, for context,
//! against routing without an overlay and the kernel's vxlan device), all
//! measured in the same run with qperf, with the routers' CPU use during the bandwidth
//! test: the userspace path clear and encrypted, and with `--fastdp` (in
//! the kernel VM: `scripts/bench-fastdp`) the fast datapath too.

use std::time::{Duration, Instant};

use bench::{Row, Summary};
use clap::Parser;
use testbed::{Netns, Spec, Testbed, WeftHost, eventually};

#[derive(Parser)]
#[command(about = "qperf over weft's data paths against plain veth")]
struct Args {
    /// Also measure the fast datapath (needs the openvswitch module: run
    /// it in the kernel VM with scripts/bench-fastdp).
    #[arg(long)]
    fastdp: bool,
    /// Seconds per qperf test.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Repetitions of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One qperf result: bandwidth in bytes/s or latency in microseconds.
fn qperf(client: &Netns, server: &str, test: &str, seconds: u32) -> Result<f64, String> {
    let out = client
        .run(["qperf", "-t", &seconds.to_string(), "-v", server, test])
        .map_err(|e| e.to_string())?;
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("bw") || l.trim_start().starts_with("latency"))
        .ok_or_else(|| format!("no result in qperf output: {out}"))?;
    let mut words = line.split('=').nth(1).ok_or("no value")?.split_whitespace();
    let value: f64 = words
        .next()
        .ok_or("no number")?
        .parse()
        .map_err(|_| "bad number")?;
    let unit = words.next().unwrap_or("");
    Ok(match unit {
        "GB/sec" => value * 1e9,
        "MB/sec" => value * 1e6,
        "KB/sec" => value * 1e3,
        "bytes/sec" => value,
        "us" => value,
        "ms" => value * 1e3,
        "sec" => value * 1e6,
        "ns" => value / 1e3,
        other => return Err(format!("unknown qperf unit {other:?} in {line}")),
    })
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields after the command: state is 0, utime 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

struct Measured {
    bw: Vec<f64>,
    lat: Vec<f64>,
    cpu: Vec<f64>,
}

fn measure(
    tb: &Testbed,
    server: &str,
    routers: &[&WeftHost],
    args: &Args,
) -> Result<Measured, String> {
    let client = tb.container(1, 1);
    let mut m = Measured {
        bw: Vec::new(),
        lat: Vec::new(),
        cpu: Vec::new(),
    };
    for _ in 0..args.rounds {
        let pids: Vec<i32> = routers.iter().filter_map(|r| r.pid()).collect();
        let before: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        let started = Instant::now();
        m.bw.push(qperf(&client, server, "tcp_bw", args.seconds)?);
        let wall = started.elapsed().as_secs_f64();
        let after: f64 = pids.iter().map(|p| cpu_seconds(*p)).sum();
        m.cpu.push((after - before) / wall);
        m.lat.push(qperf(&client, server, "udp_lat", args.seconds)?);
    }
    Ok(m)
}

/// Starts both routers and waits until their connection carries data on
/// `overlay`.
fn launch(tb: &Testbed, extra: &[&str], overlay: &str) -> Result<Vec<WeftHost>, String> {
    let mut routers = Vec::new();
    for h in 1..=2 {
        let weft = tb.weft(h);
        let _ = weft.run(&["reset"]);
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
    eventually("the data path", Duration::from_secs(30), || {
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
        ip(
            &host,
            &format!("link add rt type veth peer name rt0 netns {}", c.name()),
        )?;
        ip(&host, &format!("addr add 10.97.{h}.1/24 dev rt"))?;
        ip(&host, "link set dev rt up")?;
        ip(&c, &format!("addr add 10.97.{h}.2/24 dev rt0"))?;
        ip(&c, "link set dev rt0 up")?;
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
        ip(
            &host,
            &format!("link add kvh type veth peer name kv0 netns {}", c.name()),
        )?;
        ip(&host, "link set dev kvh master kvbr up")?;
        ip(&c, &format!("addr add 10.98.0.{h}/24 dev kv0"))?;
        ip(&c, &format!("link set dev kv0 mtu {vxlan_mtu} up"))?;
    }
    Ok(())
}

fn gb(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x / 1e9).collect()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tb = Testbed::create_owned("benchdp", Spec::hosts(2).containers(1))
        .map_err(|e| e.to_string())?;
    reference_paths(&tb)?;
    let _qperf = tb
        .spawn(&tb.container(2, 1), "qperf", ["qperf"])
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));

    let plain = measure(&tb, "10.99.0.2", &[], &args)?;
    eprintln!("plain veth: {:?} B/s, {:?} us", plain.bw, plain.lat);
    let routed = measure(&tb, "10.97.2.2", &[], &args)?;
    eprintln!("routed veth: {:?} B/s, {:?} us", routed.bw, routed.lat);
    let kvxlan = measure(&tb, "10.98.0.2", &[], &args)?;
    eprintln!("kernel vxlan: {:?} B/s, {:?} us", kvxlan.bw, kvxlan.lat);
    let row = |config: &str,
               metric: &str,
               unit: &str,
               value: &[f64],
               (base, base_name): (&[f64], &str),
               target: Option<&str>| {
        let ratio: Vec<f64> = value.iter().zip(base).map(|(v, b)| v / b).collect();
        Row {
            benchmark: "datapath".into(),
            configuration: config.into(),
            metric: metric.into(),
            unit: unit.into(),
            value: Summary::of(value),
            baseline: Some(Summary::of(base)),
            ratio: Some(Summary::of(&ratio)),
            target: target.map(String::from),
            note: format!("baseline: {base_name}"),
        }
    };
    const PLAIN: &str = "plain veth joining the two containers";
    const KVXLAN: &str = "the kernel vxlan device on a bridge, same hosts";
    let mut rows = Vec::new();
    for (name, m) in [
        ("routed veth over the underlay, no overlay", &routed),
        ("kernel vxlan device", &kvxlan),
    ] {
        rows.push(row(
            name,
            "qperf tcp_bw",
            "GB/s",
            &gb(&m.bw),
            (&gb(&plain.bw), PLAIN),
            None,
        ));
        rows.push(row(
            name,
            "qperf udp_lat",
            "us",
            &m.lat,
            (&plain.lat, PLAIN),
            None,
        ));
    }
    let mut configs = vec![
        (
            "weft userspace, clear",
            vec!["--no-fastdp"],
            "userspace",
            ">= 0.3",
        ),
        (
            "weft userspace, encrypted",
            vec!["--no-fastdp", "--password", "bench-secret"],
            "userspace",
            ">= 0.2",
        ),
    ];
    if args.fastdp {
        configs.insert(0, ("weft fastdp", vec![], "fastdp", ">= 0.85"));
    }
    for (name, extra, overlay, bw_target) in configs {
        let routers = launch(&tb, &extra, overlay)?;
        let refs: Vec<&WeftHost> = routers.iter().collect();
        let m = measure(&tb, "10.32.0.2", &refs, &args)?;
        eprintln!("{name}: {:?} B/s, {:?} us, {:?} cores", m.bw, m.lat, m.cpu);
        rows.push(row(
            name,
            "qperf tcp_bw",
            "GB/s",
            &gb(&m.bw),
            (&gb(&plain.bw), PLAIN),
            Some(bw_target),
        ));
        if overlay == "fastdp" {
            rows.push(row(
                name,
                "qperf tcp_bw",
                "GB/s",
                &gb(&m.bw),
                (&gb(&kvxlan.bw), KVXLAN),
                None,
            ));
        }
        rows.push(row(
            name,
            "qperf udp_lat",
            "us",
            &m.lat,
            (&plain.lat, PLAIN),
            Some("<= 3"),
        ));
        rows.push(Row {
            benchmark: "datapath".into(),
            configuration: name.into(),
            metric: "routers' CPU during tcp_bw (both)".into(),
            unit: "cores".into(),
            value: Summary::of(&m.cpu),
            baseline: None,
            ratio: None,
            target: None,
            note: "user+system time of both weft processes over the test's wall time".into(),
        });
        for r in &routers {
            let _ = r.run(&["stop"]);
        }
    }
    bench::emit(&rows, args.json.as_deref())
}
