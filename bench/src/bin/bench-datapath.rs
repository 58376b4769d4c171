//! Container-to-container performance over weft's userspace data path,
//! clear and encrypted, against plain veth between the same two container
//! namespaces, all measured in the same run with qperf; with the routers'
//! CPU use during the bandwidth test.

use std::time::{Duration, Instant};

use bench::{Row, Summary};
use clap::Parser;
use testbed::{Netns, Spec, Testbed, WeftHost, eventually};

#[derive(Parser)]
#[command(about = "qperf over the userspace data path against plain veth")]
struct Args {
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

fn launch(tb: &Testbed, extra: &[&str]) -> Result<Vec<WeftHost>, String> {
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
    eventually("the data path", Duration::from_secs(15), || {
        let report = routers[0].report().map_err(|e| e.to_string())?;
        if report["connections"][0]["overlay"] == "userspace" {
            Ok(())
        } else {
            Err(report.to_string())
        }
    });
    Ok(routers)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tb = Testbed::create_owned("benchdp", Spec::hosts(2).containers(1))
        .map_err(|e| e.to_string())?;
    let (c1, c2) = (tb.container(1, 1), tb.container(2, 1));
    // The limit: the same two container namespaces joined by one veth.
    c1.ip([
        "link",
        "add",
        "direct",
        "type",
        "veth",
        "peer",
        "name",
        "direct",
        "netns",
        c2.name(),
    ])
    .map_err(|e| e.to_string())?;
    for (ns, addr) in [(&c1, "10.99.0.1/24"), (&c2, "10.99.0.2/24")] {
        ns.ip(["addr", "add", addr, "dev", "direct"])
            .map_err(|e| e.to_string())?;
        ns.ip(["link", "set", "dev", "direct", "up"])
            .map_err(|e| e.to_string())?;
    }
    let _qperf = tb
        .spawn(&c2, "qperf", ["qperf"])
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));

    let plain = measure(&tb, "10.99.0.2", &[], &args)?;
    eprintln!("plain veth: {:?} B/s, {:?} us", plain.bw, plain.lat);
    let mut rows = Vec::new();
    let row = |config: &str,
               metric: &str,
               unit: &str,
               value: &[f64],
               base: &[f64],
               target: Option<&str>| {
        let ratio: Vec<f64> = value.iter().zip(base).map(|(v, b)| v / b).collect();
        Row {
            benchmark: "userspace".into(),
            configuration: config.into(),
            metric: metric.into(),
            unit: unit.into(),
            value: Summary::of(value),
            baseline: Some(Summary::of(base)),
            ratio: Some(Summary::of(&ratio)),
            target: target.map(String::from),
            note: "baseline: plain veth between the same container namespaces".into(),
        }
    };
    for (name, extra, bw_target) in [
        ("weft userspace, clear", vec![], ">= 0.3"),
        (
            "weft userspace, encrypted",
            vec!["--password", "bench-secret"],
            ">= 0.2",
        ),
    ] {
        let routers = launch(&tb, &extra)?;
        let refs: Vec<&WeftHost> = routers.iter().collect();
        let m = measure(&tb, "10.32.0.2", &refs, &args)?;
        eprintln!("{name}: {:?} B/s, {:?} us, {:?} cores", m.bw, m.lat, m.cpu);
        let gb = |v: &[f64]| v.iter().map(|x| x / 1e9).collect::<Vec<_>>();
        rows.push(row(
            name,
            "qperf tcp_bw",
            "GB/s",
            &gb(&m.bw),
            &gb(&plain.bw),
            Some(bw_target),
        ));
        rows.push(row(
            name,
            "qperf udp_lat",
            "us",
            &m.lat,
            &plain.lat,
            Some("<= 3"),
        ));
        rows.push(Row {
            benchmark: "userspace".into(),
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
    println!("{}", Row::markdown_header());
    for row in &rows {
        println!("{}", row.markdown());
    }
    if let Some(path) = args.json {
        let lines: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).expect("rows serialize"))
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
