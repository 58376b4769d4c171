//! The control plane at scale: gossip convergence of simulated meshes of
//! 100, 500 and 1000 routers (each given two random addresses), the
//! memory of a real router connected to 50 peers against an idle one
//! measured in the same run, and the control messages real meshes of 10,
//! 25 and 50 routers send after one attach against the same mesh at rest.

use std::time::{Duration, Instant};

use bench::{Row, Summary};
use clap::Parser;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use testbed::{Spec, Testbed, eventually};
use weft_router::mesh::sim::Network;

#[derive(Parser)]
#[command(about = "Gossip convergence and router memory")]
struct Args {
    /// Mesh sizes to simulate.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    sizes: Vec<usize>,
    /// Simulations per size (different seeds).
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    /// Peers of the router whose memory is measured (0 skips it).
    #[arg(long, default_value_t = 50)]
    memory_peers: usize,
    /// Sizes of real meshes whose control traffic after one attach is
    /// measured (none: skipped).
    #[arg(long, value_delimiter = ',', default_value = "10,25,50")]
    gossip_sizes: Vec<usize>,
    /// Seconds each control-traffic window lasts.
    #[arg(long, default_value_t = 10)]
    gossip_window: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

struct Convergence {
    simulated: Duration,
    messages_per_router: f64,
    bytes_per_router: f64,
    wall: Duration,
}

fn simulate(n: usize, seed: u64) -> Convergence {
    let wall = Instant::now();
    let mut net = Network::new(seed);
    for _ in 0..n {
        net.add_router(|c| c.discovery = false);
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    for r in 0..n {
        for _ in 0..2 {
            let other = rng.random_range(0..n);
            if other != r {
                net.add_target(r, other);
            }
        }
    }
    let simulated = net
        .run_until_converged(Duration::from_millis(10), Duration::from_secs(600))
        .unwrap_or_else(|| panic!("{n} routers did not converge"));
    let messages: u64 = net.routers.iter().map(|r| r.messages).sum();
    let bytes: u64 = net.routers.iter().map(|r| r.bytes).sum();
    Convergence {
        simulated,
        messages_per_router: messages as f64 / n as f64,
        bytes_per_router: bytes as f64 / n as f64,
        wall: wall.elapsed(),
    }
}

/// RSS of router h1 alone, then with `peers` routers connected to it.
fn memory(peers: usize) -> Result<(f64, f64), String> {
    let tb =
        Testbed::create_owned("benchmem", Spec::hosts(peers + 1)).map_err(|e| e.to_string())?;
    let h1 = tb.weft(1);
    h1.launch(&[]).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = h1.pid().ok_or("no pid for h1")?;
    let idle = bench::memory_kib(pid, "VmRSS");
    let first = tb.host_addr(1).to_string();
    for h in 2..=peers + 1 {
        tb.weft(h)
            .launch(&["--no-discovery", &first])
            .map_err(|e| e.to_string())?;
    }
    eventually("all peers connected to h1", Duration::from_secs(60), || {
        let report = h1.report().map_err(|e| e.to_string())?;
        let n = report["connections"].as_array().map_or(0, |c| c.len());
        if n == peers {
            Ok(())
        } else {
            Err(format!("{n} connections"))
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    Ok((idle, bench::memory_kib(pid, "VmRSS")))
}

/// Control messages per router per second of a mesh with nothing to say
/// but its periodic anti-entropy.
const QUIET: f64 = 2.0;

/// Control messages sent by all routers of the mesh so far.
fn messages_sent(routers: &[testbed::WeftHost]) -> Result<f64, String> {
    let mut total = 0.0;
    for r in routers {
        let metrics = r.metrics().map_err(|e| e.to_string())?;
        total += metrics
            .lines()
            .find_map(|l| l.strip_prefix("weft_control_messages_sent_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or("no weft_control_messages_sent_total")?;
    }
    Ok(total)
}

/// Control messages per router per second over `window`.
fn rate(routers: &[testbed::WeftHost], window: Duration) -> Result<f64, String> {
    let before = messages_sent(routers)?;
    std::thread::sleep(window);
    Ok((messages_sent(routers)? - before) / window.as_secs_f64() / routers.len() as f64)
}

/// A real mesh of `n` routers (each given host 1): the control messages
/// per router per second at rest, and in the windows after one attach.
fn gossip_after_attach(n: usize, window: Duration) -> Result<(f64, f64, f64), String> {
    let tb = Testbed::create_owned("benchgossip", Spec::hosts(n).containers(1))
        .map_err(|e| e.to_string())?;
    let first = tb.host_addr(1).to_string();
    let routers: Vec<testbed::WeftHost> = (1..=n).map(|h| tb.weft(h)).collect();
    for (i, r) in routers.iter().enumerate() {
        let peers: Vec<&str> = if i == 0 { vec![] } else { vec![first.as_str()] };
        r.launch(&peers).map_err(|e| e.to_string())?;
    }
    for r in &routers {
        eventually("a full mesh", Duration::from_secs(300), || {
            let report = r.report().map_err(|e| e.to_string())?;
            let up = report["connections"].as_array().map_or(0, |c| {
                c.iter().filter(|c| c["state"] == "established").count()
            });
            (up == n - 1)
                .then_some(())
                .ok_or(format!("{up} of {} up", n - 1))
        });
    }
    // IPAM's ring is made at the first allocation: make it, then let the
    // mesh settle (joining and dividing the range are a burst), so "at
    // rest" is a mesh that allocates and has nothing to say.
    routers[0]
        .run(&["ipam", "allocate", "warm-up"])
        .map_err(|e| e.to_string())?;
    let settled = Instant::now() + Duration::from_secs(120);
    while rate(&routers, Duration::from_secs(5))? > QUIET && Instant::now() < settled {}
    let rest = rate(&routers, window)?;
    routers[1]
        .run(&["attach", tb.container(2, 1).name()])
        .map_err(|e| e.to_string())?;
    let first_window = rate(&routers, window)?;
    let later = rate(&routers, window)?;
    Ok((rest, first_window, later))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut rows = Vec::new();
    let mut baseline: Option<Vec<f64>> = None;
    for &n in &args.sizes {
        let runs: Vec<Convergence> = (0..args.rounds)
            .map(|seed| simulate(n, 1000 + seed))
            .collect();
        let of = |f: fn(&Convergence) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let ms = of(|r| r.simulated.as_secs_f64() * 1000.0);
        let bytes = of(|r| r.bytes_per_router);
        let msgs = Summary::of(&of(|r| r.messages_per_router));
        let wall = Summary::of(&of(|r| r.wall.as_secs_f64()));
        eprintln!(
            "{n} routers: converged in {} ms simulated, {} bytes/router, {msgs} messages/router, {wall} s wall",
            Summary::of(&ms),
            Summary::of(&bytes)
        );
        let base = baseline.get_or_insert_with(|| ms.clone());
        rows.push(
            Row::new(
                "mesh",
                &format!("{n} simulated routers, 2 random links each, 1 ms latency"),
                "gossip convergence: time to identical full knowledge (simulated)",
                "ms",
                &ms,
            )
            .against_paired(base, &format!("{} routers, same seeds", args.sizes[0]))
            .with_note("convergence checked every 10 ms of simulated time"),
        );
        rows.push(
            Row::new(
                "mesh",
                &format!("{n} simulated routers"),
                "bytes sent per router until converged",
                "bytes",
                &bytes,
            )
            .with_note(format!("{:.0} messages per router", msgs.median)),
        );
    }
    if args.memory_peers > 0 {
        let (idle, busy) = memory(args.memory_peers)?;
        eprintln!(
            "router RSS: {idle} KiB alone, {busy} KiB with {} peers",
            args.memory_peers
        );
        rows.push(
            Row::new(
                "mesh",
                &format!("one router with {} connected peers", args.memory_peers),
                "resident memory",
                "MiB",
                &[busy / 1024.0],
            )
            .against(
                &[idle / 1024.0],
                "the same router before any peer connected",
            ),
        );
    }
    let window = Duration::from_secs(args.gossip_window);
    for &n in &args.gossip_sizes {
        let (rest, first, later) = gossip_after_attach(n, window)?;
        eprintln!(
            "{n} routers: {rest:.2} control messages/s per router at rest, {first:.2} in the {window:?} after one attach, {later:.2} in the next"
        );
        for (what, value) in [("the first", first), ("the next", later)] {
            rows.push(
                Row::new(
                    "mesh",
                    &format!("{n} real routers, one attach"),
                    &format!(
                        "control messages per router per second, {what} {}s after",
                        window.as_secs()
                    ),
                    "msg/s",
                    &[value],
                )
                .against(&[rest.max(0.01)], "the same mesh at rest, just before"),
            );
        }
    }
    bench::emit(&rows, args.json.as_deref())
}
