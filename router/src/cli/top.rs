//! `weft top`: flow top in the terminal, from `POST /flows` (which keeps
//! the router counting while we watch).

use std::{io::IsTerminal as _, time::Duration};

use anyhow::{Context, Result};

use super::{args::TopArgs, client};
use crate::flows::top::{ContainerFlows, FlowsReport, Traffic};

pub fn top(args: &TopArgs) -> Result<()> {
    let api = client(&args.dirs);
    let pause = Duration::from_secs_f64(args.interval);
    let read = || -> Result<FlowsReport> {
        let mut report: FlowsReport =
            serde_json::from_str(&api.post("/flows", "")?).context("the router's answer")?;
        if let Some(only) = &args.container {
            report.containers.retain(|c| &c.id == only);
            anyhow::ensure!(
                !report.containers.is_empty(),
                "no container {only} is attached here; `weft ps` lists them"
            );
        }
        Ok(report)
    };
    let mut report = read()?;
    if report.interval_ms.is_none() {
        // Rates need two readings.
        std::thread::sleep(pause);
        report = read()?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let live = !args.once && std::io::stdout().is_terminal();
    loop {
        let screen = render(&report, args.rows);
        if live {
            // Home and clear, then the whole screen at once: no flicker.
            print!("\x1b[H\x1b[2J{screen}");
        } else {
            print!("{screen}");
            return Ok(());
        }
        std::thread::sleep(pause);
        report = read()?;
    }
}

/// One screen of flow top.
pub fn render(report: &FlowsReport, rows: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let flows: usize = report
        .containers
        .iter()
        .flat_map(|c| &c.rules)
        .map(|r| r.flows.len() + r.omitted)
        .sum();
    let _ = writeln!(
        out,
        "weft top: {} container{}, {flows} flow{}, rates over {}{}",
        report.containers.len(),
        if report.containers.len() == 1 {
            ""
        } else {
            "s"
        },
        if flows == 1 { "" } else { "s" },
        report
            .interval_ms
            .map_or("(first reading)".to_string(), |ms| format!(
                "{:.1} s",
                ms as f64 / 1000.0
            )),
        if report.table_full {
            "  (table full: newer flows are not counted)"
        } else {
            ""
        }
    );
    if report.containers.is_empty() {
        out.push_str("no containers attached here (`weft attach`, CNI or Docker put them on)\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<46} {:>28} {:>28}",
        "CONTAINER / RULE / FLOW", "IN", "OUT"
    );
    for c in &report.containers {
        container(&mut out, c, rows);
    }
    out
}

fn container(out: &mut String, c: &ContainerFlows, rows: usize) {
    use std::fmt::Write as _;
    let addresses: Vec<String> = c.addresses.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        out,
        "{} {}{}",
        c.id,
        addresses.join(" "),
        if c.conditioned { "  (conditioned)" } else { "" }
    );
    for r in &c.rules {
        if r.flows.is_empty() && r.rule == crate::flows::top::DEFAULT_RULE && c.conditioned {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:<44} {:>28} {:>28}",
            format!("rule {}", r.rule),
            traffic(&r.inbound),
            traffic(&r.outbound)
        );
        for f in r.flows.iter().take(rows) {
            let local = f.local_port.map_or(String::new(), |p| format!(" :{p}"));
            let remote = match f.remote_port {
                Some(p) if f.remote.is_ipv6() => format!("[{}]:{p}", f.remote),
                Some(p) => format!("{}:{p}", f.remote),
                None => f.remote.to_string(),
            };
            let _ = writeln!(
                out,
                "    {:<42} {:>28} {:>28}",
                format!("{}{local} <> {remote}", protocol(f.protocol)),
                traffic(&f.inbound),
                traffic(&f.outbound)
            );
        }
        let more = r.flows.len().saturating_sub(rows) + r.omitted;
        if more > 0 {
            let _ = writeln!(out, "    ... {more} more");
        }
    }
}

fn protocol(n: u8) -> String {
    match n {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => format!("proto {n}"),
    }
}

/// `9.63 Mbit/s 830/s 12 MB`: rate, packets per second, bytes so far.
fn traffic(t: &Traffic) -> String {
    if t.packets == 0 {
        return "-".into();
    }
    format!(
        "{} {:.0}/s {}",
        scaled(t.bits_per_second, "bit/s"),
        t.packets_per_second,
        scaled(t.bytes as f64, "B")
    )
}

fn scaled(v: f64, unit: &str) -> String {
    let (v, prefix) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    // Three figures, as people read rates.
    match v {
        _ if prefix.is_empty() || v >= 100.0 => format!("{v:.0} {prefix}{unit}"),
        _ if v >= 10.0 => format!("{v:.1} {prefix}{unit}"),
        _ => format!("{v:.2} {prefix}{unit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::top::{Flow, RuleFlows};

    #[test]
    fn a_screen_shows_each_container_its_rules_and_its_busiest_flows() {
        let t = |bps: f64, packets: u64| Traffic {
            packets,
            bytes: packets * 1000,
            bits_per_second: bps,
            packets_per_second: bps / 8000.0,
        };
        let flow = |port: u16, bps: f64| Flow {
            remote: "10.40.0.9".parse().unwrap(),
            protocol: 17,
            local_port: Some(5000),
            remote_port: Some(port),
            inbound: Traffic::default(),
            outbound: t(bps, 10),
        };
        let report = FlowsReport {
            counting: true,
            interval_ms: Some(1000),
            table_full: false,
            containers: vec![ContainerFlows {
                id: "h1c1".into(),
                addresses: vec!["10.32.0.2".parse().unwrap()],
                conditioned: true,
                rules: vec![
                    RuleFlows {
                        rule: "video".into(),
                        inbound: Traffic::default(),
                        outbound: t(9_630_000.0, 30),
                        flows: vec![
                            flow(6000, 9_000_000.0),
                            flow(6001, 500_000.0),
                            flow(6002, 130_000.0),
                        ],
                        omitted: 4,
                    },
                    RuleFlows {
                        rule: "default".into(),
                        inbound: Traffic::default(),
                        outbound: Traffic::default(),
                        flows: vec![],
                        omitted: 0,
                    },
                ],
            }],
        };
        let screen = render(&report, 2);
        assert!(
            screen.starts_with("weft top: 1 container, 7 flows, rates over 1.0 s\n"),
            "{screen}"
        );
        assert!(screen.contains("h1c1 10.32.0.2  (conditioned)"), "{screen}");
        assert!(screen.contains("rule video"), "{screen}");
        assert!(screen.contains("udp :5000 <> 10.40.0.9:6000"), "{screen}");
        assert!(screen.contains("9.00 Mbit/s 1125/s 10.0 kB"), "{screen}");
        assert!(
            !screen.contains("10.40.0.9:6002"),
            "rows beyond --rows are summed: {screen}"
        );
        assert!(screen.contains("... 5 more"), "{screen}");
        assert!(
            !screen.contains("rule default"),
            "an empty default of a conditioned container is left out: {screen}"
        );
    }
}
