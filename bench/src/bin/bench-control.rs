//! The control plane's reaction times on two simulated hosts, each
//! measured several times: from `weft launch` to a router that answers
//! and to one with a container attached; from `weft connect` to the first
//! datagram between containers on the two hosts; and with the fast
//! datapath (in the kernel VM), from vxlan being blocked to the
//! connection reporting `vxlan-blocked` on the userspace path, and from
//! the block being lifted to fastdp again; and from two routers launched
//! together, a container attached on each, to the first ping between the
//! containers answered (and how long after the data path came up: a
//! container's first ARP request, sent before there is any path, must
//! not cost the kernel's one-second retry).
//!
//! There is no baseline to measure these against in the same run; the
//! fallback and upgrade rows carry the design's promises (5 s, 30 s) as
//! their targets.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bench::Row;
use clap::Parser;
use serde_json::Value;
use testbed::{Block, Spec, Testbed, WeftHost, container_addr};
use weft_api::Client;

#[derive(Parser)]
#[command(about = "launch, connect, fallback and upgrade times of weft's control plane")]
struct Args {
    /// Repetitions of each measurement; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Run with the fast datapath and also time fallback and upgrade
    /// (needs the openvswitch module: the kernel VM).
    #[arg(long)]
    fastdp: bool,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// How long anything here may take before the round counts as failed.
const PATIENCE: Duration = Duration::from_secs(60);
const PROBE_PORT: u16 = 7007;

/// One of the router's connections in its report, as JSON. Asked on the
/// API socket rather than through `weft report` (testbed's
/// `WeftHost::connection_to`): polled every 20 ms, a process start per
/// poll would blur the times measured, in the emulated VM most of all.
fn connection(router: &WeftHost, peer: &str) -> Option<Value> {
    let body = Client::new(router.run_dir.join("weft.sock"))
        .get("/report")
        .ok()?;
    let report: Value = serde_json::from_str(&body).ok()?;
    report["connections"]
        .as_array()?
        .iter()
        .find(|c| c["nickname"] == peer)
        .cloned()
}

/// Polls until `router`'s connection to `peer` is on `overlay` (with
/// `reason`, when given); returns when it first was seen so.
fn wait_for_overlay(
    router: &WeftHost,
    peer: &str,
    overlay: &str,
    reason: Option<&str>,
) -> Result<Instant, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let c = connection(router, peer);
        if let Some(c) = &c
            && c["overlay"] == overlay
            && reason.is_none_or(|r| c["reason"] == r)
        {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "h{} -> {peer} not on {overlay} {reason:?} after {PATIENCE:?}: {c:?}",
                router.host
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a datagram every 5 ms from container 2 to container 1 until one
/// arrives; returns when it did. Static neighbour entries on both sides
/// keep ARP's one-second retries out of the measurement, so what is timed
/// is weft alone.
struct Probe {
    receiver: std::thread::JoinHandle<testbed::Result<Result<Instant, String>>>,
    stop: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<testbed::Result<()>>,
}

impl Probe {
    fn start(tb: &Testbed) -> Result<Probe, String> {
        let (c1, c2) = (tb.container(1, 1), tb.container(2, 1));
        for (from, to, to_host) in [(&c1, &c2, 2), (&c2, &c1, 1)] {
            let addr = container_addr(to_host).to_string();
            from.ip([
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &to.mac("weft0").map_err(|e| e.to_string())?,
                "dev",
                "weft0",
                "nud",
                "permanent",
            ])
            .map_err(|e| e.to_string())?;
        }
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = c1
            .spawn_thread(move || -> Result<Instant, String> {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PROBE_PORT))
                    .map_err(|e| format!("bind the probe receiver: {e}"))?;
                socket
                    .set_read_timeout(Some(PATIENCE))
                    .map_err(|e| e.to_string())?;
                let _ = ready_tx.send(());
                let mut buf = [0u8; 16];
                socket
                    .recv(&mut buf)
                    .map_err(|e| format!("no probe arrived: {e}"))?;
                Ok(Instant::now())
            })
            .map_err(|e| e.to_string())?;
        ready_rx
            .recv()
            .map_err(|_| "the probe receiver did not start")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sender = c2
            .spawn_thread(move || {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
                let deadline = Instant::now() + PATIENCE;
                while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let _ = socket.send_to(b"probe", (container_addr(1), PROBE_PORT));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Probe {
            receiver,
            stop,
            sender,
        })
    }

    fn arrived(self) -> Result<Instant, String> {
        let got = self
            .receiver
            .join()
            .map_err(|_| "probe receiver panicked")?;
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sender.join();
        got.map_err(|e| e.to_string())?
    }
}

/// An IPAM range that does not hold the containers' addresses.
const OUTSIDE_IPAM: &str = "10.48.0.0/12";

#[derive(Default)]
struct Times {
    launch_to_api: Vec<f64>,
    launch_to_attached: Vec<f64>,
    connect_to_traffic: Vec<f64>,
    fallback: Vec<f64>,
    upgrade: Vec<f64>,
    launch_to_reply: Vec<f64>,
    path_to_reply: Vec<f64>,
}

/// Both routers launched at once and a container attached on each, with
/// nothing in the containers' neighbour tables; then the first ping. Returns
/// ms from the first launch to the reply, and from h1's data path to h2
/// being usable to the reply.
fn first_reply(tb: &Testbed, routers: &[WeftHost]) -> Result<(f64, f64), String> {
    for r in routers {
        let _ = r.run(&["stop"]);
    }
    for h in 1..=2 {
        let _ = tb.container(h, 1).ip(["neigh", "flush", "all"]);
    }
    let started = Instant::now();
    for (h, r) in routers.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        let mut args = vec!["--ipalloc-range", OUTSIDE_IPAM];
        let first = tb.host_addr(1).to_string();
        if h == 2 {
            args.push(&first);
        }
        r.launch(&args).map_err(|e| e.to_string())?;
        let cidr = format!("{}/12", container_addr(h));
        r.run(&["attach", &cidr, tb.container(h, 1).name()])
            .map_err(|e| e.to_string())?;
    }
    // When h1's data path to h2 became usable, watched beside the ping.
    let h1 = routers[0].clone();
    let watcher = std::thread::spawn(move || -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if h1
                .connection_to("h2")
                .is_ok_and(|c| c["state"] == "established")
            {
                return Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    });
    let to = container_addr(2).to_string();
    let answered = tb
        .container(1, 1)
        .succeeds(["ping", "-c", "1", "-W", "10", &to])
        .map_err(|e| e.to_string())?;
    let replied = Instant::now();
    if !answered {
        return Err("the first ping was not answered within 10 s".into());
    }
    let up = watcher
        .join()
        .map_err(|_| "the watcher panicked")?
        .ok_or("h1's data path to h2 never came up")?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok((
        ms(replied - started),
        ms(replied.saturating_duration_since(up)),
    ))
}

fn round(tb: &mut Testbed, args: &Args, times: &mut Times) -> Result<(), String> {
    let routers = [tb.weft(1), tb.weft(2)];
    for r in &routers {
        let _ = r.run(&["reset", "--detach"]);
    }
    for (h, r) in routers.iter().enumerate().map(|(i, r)| (i + 1, r)) {
        let started = Instant::now();
        // The containers' addresses are outside IPAM's range: the two
        // routers start apart, and IPAM claims would make two clusters
        // that refuse each other. This measures the control plane alone.
        r.launch(&["--ipalloc-range", OUTSIDE_IPAM])
            .map_err(|e| e.to_string())?;
        let answering = started.elapsed();
        let cidr = format!("{}/12", container_addr(h));
        r.run(&["attach", &cidr, tb.container(h, 1).name()])
            .map_err(|e| e.to_string())?;
        if h == 1 {
            times.launch_to_api.push(answering.as_secs_f64() * 1e3);
            times
                .launch_to_attached
                .push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let probe = Probe::start(tb)?;
    let connect = Instant::now();
    routers[1]
        .run(&["connect", &tb.host_addr(1).to_string()])
        .map_err(|e| e.to_string())?;
    let arrived = probe.arrived()?;
    times
        .connect_to_traffic
        .push((arrived - connect).as_secs_f64() * 1e3);

    if args.fastdp {
        wait_for_overlay(&routers[0], "h2", "fastdp", None)?;
        tb.block(1, 2, Block::UdpPort(6784))
            .map_err(|e| e.to_string())?;
        let blocked = Instant::now();
        let seen = wait_for_overlay(&routers[0], "h2", "userspace", Some("vxlan-blocked"))?;
        times.fallback.push((seen - blocked).as_secs_f64());
        tb.unblock(1, 2).map_err(|e| e.to_string())?;
        let healed = Instant::now();
        let seen = wait_for_overlay(&routers[0], "h2", "fastdp", None)?;
        times.upgrade.push((seen - healed).as_secs_f64());
    }
    if !args.fastdp {
        let (launch, path) = first_reply(tb, &routers)?;
        times.launch_to_reply.push(launch);
        times.path_to_reply.push(path);
    }
    for r in &routers {
        let _ = r.run(&["stop"]);
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut tb = Testbed::create_owned("benchctl", Spec::hosts(2).containers(1))
        .map_err(|e| e.to_string())?;
    let mut times = Times::default();
    for n in 1..=args.rounds {
        round(&mut tb, &args, &mut times)?;
        eprintln!(
            "round {n}: launch {:.0} ms (attached {:.0} ms), connect to traffic {:.0} ms{}",
            times.launch_to_api[n - 1],
            times.launch_to_attached[n - 1],
            times.connect_to_traffic[n - 1],
            if args.fastdp {
                format!(
                    ", fallback {:.2} s, upgrade {:.2} s",
                    times.fallback[n - 1],
                    times.upgrade[n - 1]
                )
            } else {
                String::new()
            }
        );
    }
    let config = if args.fastdp {
        "kernel VM, fast datapath (emulated, TCG)"
    } else {
        "host kernel (no openvswitch), userspace path"
    };
    let mut rows = vec![
        Row::new(
            "control",
            config,
            "launch to router answering",
            "ms",
            &times.launch_to_api,
        )
        .with_note("`weft launch` until it returns: the router's API answers"),
        Row::new(
            "control",
            config,
            "launch to first container attached",
            "ms",
            &times.launch_to_attached,
        )
        .with_note("`weft launch` then `weft attach` until both return"),
        Row::new(
            "control",
            config,
            "connect to traffic",
            "ms",
            &times.connect_to_traffic,
        )
        .with_note("`weft connect` on h2 until a datagram sent every 5 ms from h2's container reaches h1's"),
    ];
    if !args.fastdp {
        rows.push(
            Row::new(
                "control",
                config,
                "launch both routers to the first ping answered",
                "ms",
                &times.launch_to_reply,
            )
            .with_note("two `weft launch` and `weft attach`, then `ping -c1` between the containers, no neighbour entries"),
        );
        rows.push(
            Row::new(
                "control",
                config,
                "first ping answered after the data path came up",
                "ms",
                &times.path_to_reply,
            )
            .with_target("<= 200")
            .with_note("frames sent before any path exists are held and sent when one does, instead of waiting for the kernel's ARP retry a second later"),
        );
    }
    if args.fastdp {
        rows.push(
            Row::new(
                "control",
                config,
                "fallback: vxlan blocked to `vxlan-blocked` reported",
                "s",
                &times.fallback,
            )
            .with_target("<= 5")
            .with_note("the design's promise: three missed heartbeats, within 5 s"),
        );
        rows.push(
            Row::new(
                "control",
                config,
                "upgrade: block lifted to fastdp again",
                "s",
                &times.upgrade,
            )
            .with_target("<= 30")
            .with_note("the design's promise: back on fastdp within 30 s of the path healing"),
        );
    }
    bench::emit(&rows, args.json.as_deref())
}
