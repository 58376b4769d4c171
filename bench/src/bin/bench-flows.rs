//! The fast datapath's flow table under churn, in the kernel VM
//! (`scripts/bench-flows`): one container sends frames from 20,000 source
//! MACs (simulated containers) to a container on the other host, each
//! pair in turn, so the 8,192 flows the table may hold (`--max-flows`)
//! never cover them and misses never stop. Meanwhile an established TCP
//! transfer (iperf3) between two real containers is measured against the
//! same transfer without the churn, and against the same transfer while
//! the same sender sends as fast from one MAC pair, which has a flow: the
//! frames cost the emulated CPUs as much, only the misses are gone, so
//! that ratio is what the misses and the flow table cost. Both of those
//! phases count host 1's table the same way, from a thread of this
//! process. Round by round in the same run, with how many misses the
//! routers planned per second, what the kernel lost, the largest table
//! seen and how many flows were evicted.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bench::Row;
use clap::Parser;
use testbed::{MacChurn, Netns, Spec, Testbed, WeftHost, eventually};
use weft_router::fastdp::DATAPATH;

const BENCHMARK: &str = "flow table in the kernel VM";
const CONFIG: &str = "weft fastdp, 20,000 MAC pairs churning";
#[derive(Parser)]
#[command(
    about = "the fast datapath's flow table under a churn of MAC pairs, with an established transfer measured alongside"
)]
struct Args {
    /// Distinct source MACs sending to the other host's container.
    #[arg(long, default_value_t = 20_000)]
    pairs: u32,
    /// Frames per second over all pairs. The emulated VM sends about
    /// 8,000 from one pair with a flow, more than that only when misses
    /// are dropped cheaply: at a rate neither phase reaches, the churn
    /// would send more frames than the one pair it is compared with.
    #[arg(long, default_value_t = 8_000)]
    rate: u32,
    /// The routers' flow table bound (`weft launch --fastdp-max-flows`):
    /// below the number of flows the routers plan during a round (a few
    /// thousand under emulation), the table sheds flows while the
    /// transfer is measured.
    #[arg(long, default_value_t = 8192)]
    max_flows: u32,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Rounds, each a run without churn and one with.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// iperf3's received throughput in bits/s, and the sender's
/// retransmissions (segments the path lost or delayed past their timer).
fn iperf3(client: &Netns, server: &str, seconds: u32) -> Result<(f64, u64), String> {
    let out = client
        .run(["iperf3", "-c", server, "-J", "-t", &seconds.to_string()])
        .map_err(|e| e.to_string())?;
    let report: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("iperf3 -J output: {e}: {out}"))?;
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("no end.sum_received in iperf3's report: {out}"))?;
    let retransmits = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    Ok((bps, retransmits))
}

/// The kernel's count of upcalls it lost (its queue to the router full),
/// from `weft dp show`.
fn kernel_lost(router: &WeftHost) -> Result<u64, String> {
    let out = router.run(&["dp", "show"]).map_err(|e| e.to_string())?;
    out.split(", ")
        .find_map(|part| part.strip_suffix(" lost"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no lost count in `weft dp show`: {out}"))
}

/// CPU time spent so far, in seconds: by the routers (user and system)
/// and by the whole VM's kernel (system, irq and softirq, which includes
/// the routers' own system time and the kernel's miss path). The
/// difference between two phases says where the misses' cost goes.
#[derive(Clone, Copy)]
struct Cpu {
    routers: f64,
    kernel: f64,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf takes no pointers.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of a process, in seconds (proc(5) fields 14 and 15).
fn process_cpu(pid: i32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces: count fields after its ')', where
    // field 3 (the state) comes first.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(14 - 3), tick(15 - 3)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / ticks_per_second()),
        _ => Err(format!("unreadable /proc/{pid}/stat: {stat}")),
    }
}

/// The whole machine's system, irq and softirq time, in seconds.
fn kernel_cpu() -> Result<f64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    match (ticks.get(2), ticks.get(5), ticks.get(6)) {
        (Some(system), Some(irq), Some(softirq)) => {
            Ok((system + irq + softirq) as f64 / ticks_per_second())
        }
        _ => Err(format!("unreadable /proc/stat: {stat}")),
    }
}

fn cpu(routers: &[WeftHost]) -> Result<Cpu, String> {
    let mut spent = 0.0;
    for r in routers {
        let pid = r.pid().ok_or("a router has no pid file")?;
        spent += process_cpu(pid)?;
    }
    Ok(Cpu {
        routers: spent,
        kernel: kernel_cpu()?,
    })
}

/// CPUs busy between two readings `wall` seconds apart.
fn busy(before: Cpu, after: Cpu, wall: f64) -> Cpu {
    Cpu {
        routers: (after.routers - before.routers) / wall,
        kernel: (after.kernel - before.kernel) / wall,
    }
}

/// The counters of both routers summed.
fn sum(routers: &[WeftHost], f: impl Fn(&WeftHost) -> Result<u64, String>) -> Result<u64, String> {
    routers.iter().map(f).sum()
}

/// How often the table is counted: a generic netlink request from a
/// thread in host 1's namespace, a few syscalls (a `weft dp show` would
/// start a process, which costs the emulated CPUs as much as a few
/// hundred frames, and only in the phase that watched).
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The largest flow count host 1's kernel reports while a transfer runs.
struct TableWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Result<u64, String>, testbed::Error>>,
}

impl TableWatch {
    fn start(host: &Netns) -> Result<TableWatch, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = host
            .spawn_thread(move || {
                let mut client = weft_odp::Client::connect().map_err(|e| e.to_string())?;
                let mut most = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    let dp = client
                        .datapath(DATAPATH)
                        .map_err(|e| format!("datapath {DATAPATH}: {e}"))?;
                    most = most.max(dp.stats.flows);
                    std::thread::sleep(WATCH_EVERY);
                }
                Ok(most)
            })
            .map_err(|e| e.to_string())?;
        Ok(TableWatch { stop, thread })
    }

    fn stop(self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the table watcher panicked".to_string())?
            .map_err(|e| e.to_string())?
    }
}

/// What both routers and the client saw, for a transfer that failed.
fn diagnose(routers: &[WeftHost], client: &Netns) -> String {
    let mut out = String::new();
    for (h, r) in routers.iter().enumerate() {
        let show = r.run(&["dp", "show"]).unwrap_or_else(|e| e.to_string());
        let metrics = r.fastdp_metrics().unwrap_or_default().join("\n");
        out += &format!("host {}: {show}\n{metrics}\n{}\n", h + 1, r.log_tail(20));
    }
    for argv in [
        &["ip", "neigh"][..],
        &["ping", "-c", "5", "-i", "1", "10.32.0.2"],
    ] {
        out += &format!(
            "client: {}: {}\n",
            argv.join(" "),
            client.run(argv).unwrap_or_else(|e| e.to_string())
        );
    }
    out
}

#[derive(Default)]
struct Churned {
    /// The transfer's bits/s.
    transfer: Vec<f64>,
    misses_per_s: Vec<f64>,
    over_budget_per_s: Vec<f64>,
    lost_per_s: Vec<f64>,
    evicted_per_s: Vec<f64>,
    most_flows: Vec<f64>,
    sent_per_s: Vec<f64>,
    flushes: Vec<f64>,
    cpu: Vec<Cpu>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tb = Testbed::create_owned("benchfl", Spec::hosts(2).containers(1))
        .map_err(|e| e.to_string())?;
    let mut routers = Vec::new();
    for h in 1..=2 {
        let weft = tb.weft(h);
        let first = tb.host_addr(1).to_string();
        let max_flows = args.max_flows.to_string();
        let mut launch = vec!["--fastdp-max-flows", &max_flows];
        if h == 2 {
            launch.push(&first);
        }
        weft.launch(&launch).map_err(|e| e.to_string())?;
        weft.run(&[
            "attach",
            &format!("10.32.0.{h}/12"),
            tb.container(h, 1).name(),
        ])
        .map_err(|e| e.to_string())?;
        routers.push(weft);
    }
    eventually("the fast datapath", Duration::from_secs(90), || {
        routers[0].overlays("fastdp", 1)
    });
    let (client, server) = (tb.container(1, 1), tb.container(2, 1));
    let _iperf3 = tb
        .spawn(&server, "iperf3", ["iperf3", "-s"])
        .map_err(|e| e.to_string())?;
    let dst = server.mac("weft0").map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));

    let mut quiet = Vec::new();
    let mut steady = Vec::new();
    let mut steady_sent = Vec::new();
    let mut steady_cpu = Vec::new();
    let mut churned = Churned::default();
    for round in 1..=args.rounds {
        let transfer = |phase: &str| {
            iperf3(&client, "10.32.0.2", args.seconds).map_err(|e| {
                format!(
                    "round {round}, {phase}: {e}\n{}",
                    diagnose(&routers, &client)
                )
            })
        };
        let (bps, quiet_rtx) = transfer("quiet")?;
        quiet.push(bps);
        let cpu0 = cpu(&routers)?;
        let one_pair =
            MacChurn::start(&client, "weft0", &dst, 1, args.rate).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_secs(3));
        let started = Instant::now();
        // Watched as the churn's table is, so both transfers share the
        // watcher's cost.
        let watch = TableWatch::start(&tb.host(1))?;
        let steady_transfer = transfer("one pair");
        watch.stop()?;
        let (bps, steady_rtx) = steady_transfer?;
        steady.push(bps);
        let sent = one_pair.stop().map_err(|e| e.to_string())?;
        let wall = started.elapsed().as_secs_f64() + 3.0;
        steady_sent.push(sent as f64 / wall);
        steady_cpu.push(busy(cpu0, cpu(&routers)?, wall));

        // A fastdp counter summed over the routers, read before and after.
        let total = |name: &'static str| {
            sum(&routers, |r| {
                r.fastdp_total(name).map_err(|e| e.to_string())
            })
        };
        let (misses0, over0, evicted0, flushes0) = (
            total("misses")?,
            total("misses_over_budget")?,
            total("flows_evicted")?,
            total("flushes")?,
        );
        let lost0 = sum(&routers, kernel_lost)?;
        let cpu0 = cpu(&routers)?;
        let churn = MacChurn::start(&client, "weft0", &dst, args.pairs, args.rate)
            .map_err(|e| e.to_string())?;
        // Let the table fill before the transfer is measured.
        std::thread::sleep(Duration::from_secs(3));
        let started = Instant::now();
        let watch = TableWatch::start(&tb.host(1))?;
        let churn_transfer = transfer("churn");
        let most = watch.stop()?;
        let sent = churn.stop().map_err(|e| e.to_string())?;
        let wall = started.elapsed().as_secs_f64() + 3.0;
        churned.cpu.push(busy(cpu0, cpu(&routers)?, wall));
        let per_s = |now: u64, then: u64| (now - then) as f64 / wall;
        let (bps, churn_rtx) = churn_transfer?;
        churned.transfer.push(bps);
        churned.misses_per_s.push(per_s(total("misses")?, misses0));
        churned
            .over_budget_per_s
            .push(per_s(total("misses_over_budget")?, over0));
        churned
            .evicted_per_s
            .push(per_s(total("flows_evicted")?, evicted0));
        churned.flushes.push((total("flushes")? - flushes0) as f64);
        churned
            .lost_per_s
            .push(per_s(sum(&routers, kernel_lost)?, lost0));
        churned.most_flows.push(most as f64);
        churned.sent_per_s.push(sent as f64 / wall);
        eprintln!(
            "round {round}: transfer {:.0} Mbit/s quiet, {:.0} beside {:.0} frames/s from one pair, {:.0} with churn; {:.0} frames/s sent, {:.0} misses/s planned, {:.0}/s over budget, {:.0}/s lost by the kernel, {:.0} flows evicted/s, at most {most} flows on host 1; CPUs busy: routers {:.2} with churn ({:.2} beside one pair), kernel {:.2} ({:.2}); retransmitted segments: {quiet_rtx} quiet, {steady_rtx} beside one pair, {churn_rtx} with churn",
            quiet[round - 1] / 1e6,
            steady[round - 1] / 1e6,
            steady_sent[round - 1],
            churned.transfer[round - 1] / 1e6,
            churned.sent_per_s[round - 1],
            churned.misses_per_s[round - 1],
            churned.over_budget_per_s[round - 1],
            churned.lost_per_s[round - 1],
            churned.evicted_per_s[round - 1],
            churned.cpu[round - 1].routers,
            steady_cpu[round - 1].routers,
            churned.cpu[round - 1].kernel,
            steady_cpu[round - 1].kernel,
        );
        // The churn's last frames drain before the next quiet run.
        std::thread::sleep(Duration::from_secs(2));
    }
    let mbit = |v: &[f64]| v.iter().map(|x| x / 1e6).collect::<Vec<_>>();
    let transfer = || {
        Row::new(
            BENCHMARK,
            CONFIG,
            "iperf3, 1 stream, during churn",
            "Mbit/s",
            &mbit(&churned.transfer),
        )
    };
    let cpu_row = |what: &str, of: fn(&Cpu) -> f64, note: &str| {
        let churn: Vec<f64> = churned.cpu.iter().map(of).collect();
        let one_pair: Vec<f64> = steady_cpu.iter().map(of).collect();
        Row::new(BENCHMARK, CONFIG, what, "CPUs", &churn)
            .against_paired(&one_pair, "the same while one MAC pair sends as fast")
            .with_note(note)
    };
    let rows = vec![
        cpu_row(
            "CPU used by both routers",
            |c| c.routers,
            "user and system time of the two weft processes",
        ),
        cpu_row(
            "CPU used by the kernel",
            |c| c.kernel,
            "system, irq and softirq time of the whole VM (the routers' system time included)",
        ),
        transfer().against_paired(&mbit(&quiet), "the same transfer without churn, same round"),
        transfer()
            .against_paired(
                &mbit(&steady),
                "the same transfer while as many frames a second come from one MAC pair (a flow, no misses), same round",
            )
            .with_target(">= 0.8"),
        Row::new(
            BENCHMARK,
            "weft fastdp, one MAC pair sending as fast",
            "frames sent",
            "1/s",
            &steady_sent,
        ),
        Row::new(
            BENCHMARK,
            CONFIG,
            "misses planned, both routers",
            "1/s",
            &churned.misses_per_s,
        )
        .with_note(
            "upcalls the routers installed a flow for (or forwarded without one, the table full)",
        ),
        Row::new(
            BENCHMARK,
            CONFIG,
            "misses over the upcall budget",
            "1/s",
            &churned.over_budget_per_s,
        ),
        Row::new(
            BENCHMARK,
            CONFIG,
            "upcalls lost by the kernel",
            "1/s",
            &churned.lost_per_s,
        )
        .with_note("the kernel's count: its queue to the router was full"),
        Row::new(
            BENCHMARK,
            CONFIG,
            "flows evicted for room",
            "1/s",
            &churned.evicted_per_s,
        ),
        Row::new(
            BENCHMARK,
            CONFIG,
            "most flows in host 1's table",
            "flows",
            &churned.most_flows,
        )
        .with_target(&format!("<= {}", args.max_flows)),
        Row::new(BENCHMARK, CONFIG, "flushes", "count", &churned.flushes).with_note(
            "the whole table emptied (routes or overlay choices changed); the bound never flushes",
        ),
        Row::new(
            BENCHMARK,
            CONFIG,
            "churn frames sent",
            "1/s",
            &churned.sent_per_s,
        ),
    ];
    bench::emit(&rows, args.json.as_deref())
}
