//! Conditioning's cost on the host kernel, two containers on one weft
//! host:
//!
//! - qperf tcp_bw and udp_lat from a conditioned container whose traffic
//!   meets no condition (a flow rule for an address it never talks to
//!   keeps it on the conditioner; the default link is clean), against the
//!   same pair unconditioned (alternating rounds) and against a plain veth
//!   joining the two containers (the limit). Synthetic Network's published
//!   3.3 Gbit/s per desktop core is the context;
//! - 64-byte UDP packets per second (iperf3, received), conditioned
//!   against not;
//! - the conditioner alone, in memory on one core: 64-byte frames through
//!   flow classification, `push` and `poll` with no conditions and with
//!   latency, jitter and loss (every packet then waits in the heap).

use std::time::{Duration, Instant};

use clap::Parser;
use testbed::{Netns, Spec, Testbed, WeftHost};
use weft_condition::{Conditioner, Conditions, Direction, FlowKey, Qos, conditioner::Pushed};

#[derive(Parser)]
#[command(
    about = "Conditioning: qperf through a conditioner with nothing to do against plain veth; 64-byte packets per second"
)]
struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per qperf and iperf3 test.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Frames through the in-memory conditioner per round.
    #[arg(long, default_value_t = 2_000_000)]
    frames: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Synthetic Network's published throughput, per desktop core.
const SYNTHETIC_NETWORK_BPS: f64 = 3.3e9;

/// A rule for an address the benchmark never talks to: the container is
/// conditioned, its traffic meets no condition.
const IDLE_RULE: &str = r#"{"flows": [{"label": "elsewhere", "flow": {"remote": "192.0.2.1"}, "link": {"egress": {"latency": 1}}}]}"#;

fn conditioned(router: &WeftHost, c: &Netns, rule: Option<&std::path::Path>) -> Result<(), String> {
    let args = match rule {
        Some(file) => vec![
            "condition",
            c.name(),
            "--file",
            file.to_str().ok_or("path")?,
        ],
        None => vec!["condition", c.name(), "--clear"],
    };
    router.run(&args).map(drop).map_err(|e| e.to_string())
}

/// Received 64-byte frames per second (iperf3 UDP, 22-byte payloads).
fn small_packets(client: &Netns, server: &str, seconds: u32) -> Result<f64, String> {
    let t = seconds.to_string();
    let out = client
        .run([
            "iperf3", "-c", server, "-u", "-b", "0", "-l", "22", "-t", &t, "-J",
        ])
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let sum = &v["end"]["sum"];
    let (sent, lost) = (sum["packets"].as_f64(), sum["lost_packets"].as_f64());
    match (sent, lost) {
        (Some(s), Some(l)) => Ok((s - l) / f64::from(seconds)),
        _ => Err(format!("no packet counts in iperf3's answer: {sum}")),
    }
}

/// A 64-byte UDP frame from 10.32.0.1:5000 to 10.32.0.2:6000.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&50u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 32, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 32, 0, 2]);
    ip[20..22].copy_from_slice(&5000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&6000u16.to_be_bytes());
    f
}

/// Frames per second through a conditioner on this core, each frame a
/// fresh allocation as on the router's port.
fn conditioner_pps(conditions: Conditions, frames: usize) -> f64 {
    let mut c: Conditioner<Vec<u8>> = Conditioner::new(Direction::Egress, conditions, 7);
    let template = frame();
    let t0 = Instant::now();
    // Time as the port would see it at about 1 Mpps.
    let step = Duration::from_nanos(1000);
    let mut now = t0;
    let mut passed = 0usize;
    let started = Instant::now();
    for _ in 0..frames {
        now += step;
        let f = template.clone();
        let key = FlowKey::of_frame(&f, Direction::Egress);
        if let Pushed::Pass(p) = c.push(now, f, 50, key.as_ref()) {
            passed += std::hint::black_box(p).len();
        }
        while let Some(p) = c.poll(now) {
            passed += std::hint::black_box(p).len();
        }
    }
    std::hint::black_box(passed);
    frames as f64 / started.elapsed().as_secs_f64()
}

fn main() -> Result<(), String> {
    let args = Args::parse();

    // In memory first: nothing else runs then.
    let busy = Conditions {
        default_link: weft_condition::Link {
            egress: Qos {
                latency: 1.0,
                jitter: 1.0,
                loss: 0.01,
                ..Qos::default()
            },
            ..Default::default()
        },
        ..Conditions::default()
    };
    let (mut clean_pps, mut busy_pps) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}: the conditioner in memory", args.rounds);
        clean_pps.push(conditioner_pps(Conditions::default(), args.frames));
        busy_pps.push(conditioner_pps(busy.clone(), args.frames));
    }

    let tb = Testbed::create_owned("benchcond", Spec::hosts(1).containers(2))
        .map_err(|e| e.to_string())?;
    let routers = tb.weft_mesh(1, &[]).map_err(|e| e.to_string())?;
    let router = &routers[0];
    let (client, server) = (tb.container(1, 1), tb.container(1, 2));
    let out = router
        .run(&["attach", server.name()])
        .map_err(|e| e.to_string())?;
    let server_addr = out
        .trim()
        .split('/')
        .next()
        .map(str::to_string)
        .ok_or(format!("attach printed {out:?}"))?;
    let rule = tb.state_dir().join("idle-rule.json");
    std::fs::write(&rule, IDLE_RULE).map_err(|e| e.to_string())?;
    // The limit: a veth joining the two containers directly.
    client
        .ip([
            "link",
            "add",
            "direct",
            "type",
            "veth",
            "peer",
            "name",
            "direct",
            "netns",
            server.name(),
        ])
        .map_err(|e| e.to_string())?;
    for (ns, a) in [(&client, "10.99.0.1/24"), (&server, "10.99.0.2/24")] {
        ns.ip(["addr", "add", a, "dev", "direct"])
            .map_err(|e| e.to_string())?;
        ns.ip(["link", "set", "dev", "direct", "up"])
            .map_err(|e| e.to_string())?;
    }
    let _qperf = tb
        .spawn(&server, "qperf", ["qperf"])
        .map_err(|e| e.to_string())?;
    let _iperf = tb
        .spawn(&server, "iperf3", ["iperf3", "-s"])
        .map_err(|e| e.to_string())?;
    testbed::eventually(
        "the server answers over weft",
        Duration::from_secs(30),
        || bench::qperf(&client, &server_addr, "udp_lat", 1).map(drop),
    );

    let s = args.seconds;
    let (mut veth_bw, mut bw, mut lat, mut pps) = (
        Vec::new(),
        (Vec::new(), Vec::new()),
        (Vec::new(), Vec::new()),
        (Vec::new(), Vec::new()),
    );
    for round in 1..=args.rounds {
        eprintln!(
            "round {round}/{}: plain veth, unconditioned, conditioned with nothing to do",
            args.rounds
        );
        veth_bw.push(bench::qperf(&client, "10.99.0.2", "tcp_bw", s)?);
        for on in [false, true] {
            conditioned(router, &client, on.then_some(rule.as_path()))?;
            let (b, l, p) = if on {
                (&mut bw.1, &mut lat.1, &mut pps.1)
            } else {
                (&mut bw.0, &mut lat.0, &mut pps.0)
            };
            b.push(bench::qperf(&client, &server_addr, "tcp_bw", s)?);
            l.push(bench::qperf(&client, &server_addr, "udp_lat", s)?);
            p.push(small_packets(&client, &server_addr, s)?);
        }
        conditioned(router, &client, None)?;
    }
    drop(routers);
    tb.destroy().map_err(|e| e.to_string())?;

    let what = "conditioned, no condition met";
    let unconditioned = "the same pair unconditioned, same run";
    let note = format!("{s} s per test; two containers on one host");
    let sn =
        bw.1.iter()
            .map(|b| b * 8.0 / SYNTHETIC_NETWORK_BPS)
            .collect::<Vec<_>>();
    let rows = vec![
        bench::Row::new("condition", what, "tcp_bw", "bytes/s", &bw.1)
            .against(&veth_bw, "plain veth joining the two containers")
            .with_target(">= 0.5")
            .with_note(format!(
                "{note}; {:.2}x Synthetic Network's published 3.3 Gbit/s per core",
                bench::Summary::of(&sn).median
            )),
        bench::Row::new("condition", what, "tcp_bw", "bytes/s", &bw.1)
            .against_paired(&bw.0, unconditioned)
            .with_note(&note),
        bench::Row::new("condition", what, "udp_lat", "µs", &lat.1)
            .against_paired(&lat.0, unconditioned)
            .with_note(&note),
        bench::Row::new(
            "condition",
            what,
            "64-byte UDP received",
            "packets/s",
            &pps.1,
        )
        .against_paired(&pps.0, unconditioned)
        .with_note(format!("{note}; iperf3 -u -b 0 -l 22")),
        bench::Row::new(
            "condition",
            "conditioner in memory, no conditions",
            "64-byte frames",
            "frames/s",
            &clean_pps,
        )
        .with_note(format!(
            "one core; classify, push, poll; {} frames per round",
            args.frames
        )),
        bench::Row::new(
            "condition",
            "conditioner in memory, 1 ms latency, 1 ms jitter, 1% loss",
            "64-byte frames",
            "frames/s",
            &busy_pps,
        )
        .against(&clean_pps, "the conditioner with no conditions")
        .with_note("every frame waits in the heap"),
    ];
    bench::emit(&rows, args.json.as_deref())
}
