//! The dated report `scripts/bench` writes from the rows each benchmark
//! emitted: a headline table of the data paths against plain veth, a
//! throughput plot, every row by step, and what could not run and why.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::{
    Row, short,
    svg::{Group, Panel, bar_chart},
};

/// Benchmark name of the data path rows measured on the host kernel.
pub const DATAPATH_HOST: &str = "datapath";
/// ... and in the kernel VM, where openvswitch exists but everything is
/// emulated (TCG), so only ratios within the VM mean something.
pub const DATAPATH_VM: &str = "datapath in the kernel VM";

pub const TCP_BW: &str = "qperf tcp_bw";
pub const IPERF_1: &str = "iperf3, 1 stream";
pub const IPERF_4: &str = "iperf3, 4 streams";
pub const TCP_LAT: &str = "qperf tcp_lat";
pub const UDP_LAT: &str = "qperf udp_lat";
pub const ROUTER_CPU: &str = "routers' CPU";
pub const ROUTER_MEMORY: &str = "router memory";

/// Throughput metrics, in the plot's series order.
pub const THROUGHPUT: [&str; 3] = [TCP_BW, IPERF_1, IPERF_4];
const HEADLINE: [&str; 7] = [
    TCP_BW,
    IPERF_1,
    IPERF_4,
    TCP_LAT,
    UDP_LAT,
    ROUTER_CPU,
    ROUTER_MEMORY,
];

/// One step of `scripts/bench`, as it recorded it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub title: String,
    pub seconds: f64,
    pub status: Status,
    /// Why it did not finish (the end of its log); empty when it did.
    #[serde(default)]
    pub reason: String,
}

/// How a step ended, as `scripts/bench` writes it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Timeout,
    /// Left out on request (`--no-vm`): not a failure of the run.
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Skipped => "skipped",
        }
    }
}

impl Step {
    pub fn ran(&self) -> bool {
        self.status == Status::Ok
    }

    /// Failed or timed out: what makes the run's exit status non-zero.
    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Failed | Status::Timeout)
    }
}

/// A step with the rows it produced.
pub struct Section {
    pub step: Step,
    pub rows: Vec<Row>,
}

/// What the report says about the run itself.
pub struct Run {
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub seconds: f64,
}

/// The whole report in markdown; `plot` is the SVG's file name, next to it.
pub fn markdown(run: &Run, sections: &[Section], plot: &str) -> String {
    let mut out = format!("# weft benchmarks, {}\n\n", run.date);
    let _ = writeln!(
        out,
        "`scripts/bench` at commit `{}` on {}; the whole run took {}.\n",
        run.commit,
        run.machine,
        duration(run.seconds)
    );
    out.push_str(
        "Every figure is the median of several rounds, with the minimum and maximum in \
         brackets (a figure measured once says so in its note). Ratios compare with \
         plain veth between the same two container namespaces, or with the baseline \
         the row's note names, measured in the same run: above 1 is faster for \
         throughput and slower for latency. Rows without a baseline (the control \
         plane's times) carry the design's promises as targets. The kernel VM \
         runs under emulation (qemu TCG, no KVM), so its absolute numbers are far \
         below the host's and only its ratios mean something.\n\n",
    );
    out.push_str("## Data paths\n\n");
    let _ = writeln!(out, "![Throughput by configuration]({plot})\n");
    out.push_str(&headline(sections));
    out.push_str("\n### Targets\n\n");
    out.push_str(&targets(sections));
    for section in sections {
        let step = &section.step;
        let _ = writeln!(
            out,
            "\n## {}\n\n`{}`, {}{}.\n",
            step.title,
            step.name,
            duration(step.seconds),
            match step.status {
                Status::Ok => "",
                Status::Skipped => ", skipped",
                Status::Failed | Status::Timeout => ", did not finish",
            }
        );
        out.push_str(&table(section));
    }
    out
}

/// The short version for the README: the headline table and one line
/// per figure of every other step, pointing at the full report.
pub fn readme_block(run: &Run, sections: &[Section], report: &str, plot: &str) -> String {
    let mut out = format!(
        "Latest run, {} (commit `{}`, {}): [full report]({report}), [plot]({plot}).\n\n",
        run.date, run.commit, run.machine
    );
    out.push_str(&headline(sections));
    out.push('\n');
    out.push_str(&targets(sections));
    out.push_str("\n| benchmark | configuration | metric | median (min–max) | ratio to baseline |\n|---|---|---|---|---|\n");
    for section in sections {
        if is_datapath_section(section) {
            continue;
        }
        for r in &section.rows {
            let ratio = r.ratio.map_or("-".to_string(), |ratio| {
                let baseline = r.note.split(';').next().unwrap_or("").trim();
                format!(
                    "{} ({})",
                    ratio.compact(),
                    baseline.trim_start_matches("baseline: ")
                )
            });
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} |",
                r.benchmark,
                r.configuration,
                r.metric,
                r.value.compact(),
                r.unit,
                ratio.replace('|', "\\|")
            );
        }
        if !section.step.ran() {
            let _ = writeln!(
                out,
                "| {} | not run | {} | - | - |",
                section.step.name,
                one_line(&section.step.reason)
            );
        }
    }
    out
}

/// Replaces what lies between the report markers in `readme`.
pub fn splice(readme: &str, block: &str) -> Result<String, String> {
    const BEGIN: &str = "<!-- bench:latest -->";
    const END: &str = "<!-- /bench:latest -->";
    let start = readme
        .find(BEGIN)
        .ok_or(format!("no {BEGIN} marker in the README"))?
        + BEGIN.len();
    let end = readme[start..]
        .find(END)
        .ok_or(format!("no {END} marker after {BEGIN} in the README"))?
        + start;
    Ok(format!(
        "{}\n{}\n{}",
        &readme[..start],
        block.trim_end(),
        &readme[end..]
    ))
}

/// Configurations of the data path benchmarks, in the order measured,
/// with a column per headline metric: the value and its ratio to the
/// baseline. A data path step that did not finish gets a row saying why.
pub fn headline(sections: &[Section]) -> String {
    let mut out = String::from("| where | configuration |");
    for metric in HEADLINE {
        let _ = write!(out, " {metric} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(HEADLINE.len()));
    out.push('\n');
    for section in sections {
        if !is_datapath_section(section) {
            continue;
        }
        if !section.step.ran() {
            let _ = writeln!(
                out,
                "| {} | not run | {} |{}",
                section.step.title,
                one_line(&section.step.reason),
                " |".repeat(HEADLINE.len() - 1)
            );
        }
        for (where_, config) in configurations(&section.rows) {
            let _ = write!(out, "| {} | {config} |", place(&where_));
            let has_router = section.rows.iter().any(|r| {
                r.benchmark == *where_
                    && r.configuration == config
                    && (r.metric == ROUTER_CPU || r.metric == ROUTER_MEMORY)
            });
            for metric in HEADLINE {
                let cell = section
                    .rows
                    .iter()
                    .find(|r| {
                        r.benchmark == *where_ && r.configuration == config && r.metric == metric
                    })
                    .map(|r| match r.ratio {
                        Some(ratio) => format!(
                            "{} {} ({:.2}×)",
                            short(r.value.median),
                            r.unit,
                            ratio.median
                        ),
                        None => format!("{} {}", short(r.value.median), r.unit),
                    })
                    .unwrap_or_else(|| {
                        if (metric == ROUTER_CPU || metric == ROUTER_MEMORY) && !has_router {
                            "no router".into()
                        } else {
                            "-".into()
                        }
                    });
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    out.push_str(
        "\nThe host kernel has no openvswitch: weft's fast datapath appears only in the \
         kernel VM rows, measured against plain veth in that VM.\n",
    );
    out
}

/// Every row with a target, and whether the run met it: the ratio's
/// median when the row has a baseline, else the value's.
pub fn targets(sections: &[Section]) -> String {
    let mut out = String::from(
        "| benchmark | configuration | metric | target | measured | |\n|---|---|---|---|---|---|\n",
    );
    for r in sections.iter().flat_map(|s| &s.rows) {
        let Some(target) = &r.target else { continue };
        let measured = r.ratio.unwrap_or(r.value).median;
        let verdict = match met(target, measured) {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "target not understood",
        };
        let what = if r.ratio.is_some() { "×" } else { "" };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {target}{what} | {}{what} | {verdict} |",
            r.benchmark,
            r.configuration,
            r.metric,
            short(measured)
        );
    }
    out
}

/// Whether `value` meets a target written `>= X` or `<= X`.
fn met(target: &str, value: f64) -> Option<bool> {
    let (op, number) = target.trim().split_at_checked(2)?;
    let bound: f64 = number.trim().parse().ok()?;
    match op {
        ">=" => Some(value >= bound),
        "<=" => Some(value <= bound),
        _ => None,
    }
}

/// The plot: throughput of each configuration, host and VM on their own
/// scales.
pub fn plot(sections: &[Section]) -> String {
    let mut panels = Vec::new();
    for (benchmark, title) in [
        (
            DATAPATH_HOST,
            "Host kernel: containers on two simulated hosts",
        ),
        (DATAPATH_VM, "Kernel VM with openvswitch (emulated, TCG)"),
    ] {
        let rows: Vec<&Row> = sections
            .iter()
            .flat_map(|s| &s.rows)
            .filter(|r| r.benchmark == benchmark)
            .collect();
        let groups: Vec<Group> = configurations(rows.iter().copied())
            .into_iter()
            .map(|(_, config)| Group {
                bars: THROUGHPUT
                    .iter()
                    .enumerate()
                    .filter_map(|(i, metric)| {
                        rows.iter()
                            .find(|r| r.configuration == config && r.metric == *metric)
                            .map(|r| (i, r.value))
                    })
                    .collect(),
                label: config,
            })
            .filter(|g| !g.bars.is_empty())
            .collect();
        if !groups.is_empty() {
            panels.push(Panel {
                title: title.into(),
                unit: "GB/s".into(),
                groups,
            });
        }
    }
    bar_chart(
        "weft: container-to-container throughput (median; line: min to max)",
        &THROUGHPUT,
        &panels,
    )
}

fn table(section: &Section) -> String {
    let mut out = String::from(Row::markdown_header());
    out.push('\n');
    for row in &section.rows {
        out.push_str(&row.markdown());
        out.push('\n');
    }
    if !section.step.ran() {
        let _ = writeln!(
            out,
            "| {} | not run ({}) | {} | - | - | - | - | - |",
            section.step.name,
            section.step.status.as_str(),
            one_line(&section.step.reason)
        );
    }
    out
}

/// Data path steps are named so, even when they produced no rows.
fn is_datapath_section(section: &Section) -> bool {
    section.step.name.starts_with("datapath")
        || section.rows.iter().any(|r| is_datapath(&r.benchmark))
}

fn is_datapath(benchmark: &str) -> bool {
    benchmark == DATAPATH_HOST || benchmark == DATAPATH_VM
}

fn place(benchmark: &str) -> &'static str {
    if benchmark == DATAPATH_VM {
        "kernel VM"
    } else {
        "host"
    }
}

/// (benchmark, configuration) of the data path rows, in order of first
/// appearance.
fn configurations<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for r in rows.into_iter().filter(|r| is_datapath(&r.benchmark)) {
        let key = (r.benchmark.clone(), r.configuration.clone());
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    seen
}

/// A log tail fit for a table cell.
fn one_line(reason: &str) -> String {
    let flat = reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .replace('|', "\\|");
    if flat.is_empty() {
        "no reason recorded".into()
    } else {
        flat
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, status: Status, reason: &str) -> Step {
        Step {
            name: name.into(),
            title: format!("Title of {name}"),
            seconds: 75.0,
            status,
            reason: reason.into(),
        }
    }

    fn datapath_rows(benchmark: &str, scale: f64) -> Vec<Row> {
        let plain = [4.0 * scale, 5.0 * scale, 6.0 * scale];
        let ours = [2.0 * scale, 2.0 * scale, 4.0 * scale];
        vec![
            Row::new(benchmark, "plain veth", TCP_BW, "GB/s", &plain),
            Row::new(benchmark, "weft userspace", TCP_BW, "GB/s", &ours)
                .against_paired(&plain, "plain veth"),
            Row::new(
                benchmark,
                "weft userspace",
                UDP_LAT,
                "µs",
                &[30.0, 31.0, 33.0],
            )
            .against_paired(&[10.0, 10.0, 10.0], "plain veth"),
            Row::new(
                benchmark,
                "weft userspace",
                ROUTER_CPU,
                "cores",
                &[0.9, 1.0, 1.1],
            ),
        ]
    }

    fn sections() -> Vec<Section> {
        vec![
            Section {
                step: step("datapath", Status::Ok, ""),
                rows: datapath_rows(DATAPATH_HOST, 1.0),
            },
            Section {
                step: step("datapath-vm", Status::Timeout, "booting\nVM | stuck\n"),
                rows: vec![],
            },
            Section {
                step: step("control", Status::Ok, ""),
                rows: vec![Row::new(
                    "control",
                    "host",
                    "launch to ready",
                    "ms",
                    &[120.0, 130.0, 125.0],
                )],
            },
        ]
    }

    fn run() -> Run {
        Run {
            date: "2026-11-22".into(),
            commit: "abc1234".into(),
            machine: "2 cores".into(),
            seconds: 754.0,
        }
    }

    #[test]
    fn headline_pivots_configurations_and_says_what_did_not_run() {
        let table = headline(&sections());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + 2 + 1 + 2, "{table}");
        assert!(lines[0].starts_with("| where | configuration | qperf tcp_bw |"));
        assert_eq!(
            lines[2],
            "| host | plain veth | 5.00 GB/s | - | - | - | - | no router | no router |"
        );
        assert_eq!(
            lines[3],
            "| host | weft userspace | 2.00 GB/s (0.50×) | - | - | - | 31.0 µs (3.10×) | 1.00 cores | - |"
        );
        assert_eq!(
            lines[4],
            "| Title of datapath-vm | not run | booting / VM \\| stuck | | | | | | |"
        );
    }

    #[test]
    fn targets_say_met_or_missed() {
        let mut s = sections();
        s[0].rows[1] = s[0].rows[1].clone().with_target(">= 0.4");
        s[0].rows[2] = s[0].rows[2].clone().with_target("<= 3");
        s[2].rows[0] = s[2].rows[0].clone().with_target("<= 100");
        let table = targets(&s);
        assert!(
            table.contains("| weft userspace | qperf tcp_bw | >= 0.4× | 0.50× | met |"),
            "{table}"
        );
        assert!(
            table.contains("| weft userspace | qperf udp_lat | <= 3× | 3.10× | **missed** |"),
            "{table}"
        );
        assert!(
            table.contains("| launch to ready | <= 100 | 125 | **missed** |"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + 3);
        assert_eq!(met("about 3", 1.0), None);
    }

    #[test]
    fn report_has_every_step_and_the_plot() {
        let md = markdown(&run(), &sections(), "2026-11-22-throughput.svg");
        assert!(md.starts_with("# weft benchmarks, 2026-11-22\n"));
        assert!(md.contains("commit `abc1234`") && md.contains("took 12m34s"));
        assert!(md.contains("![Throughput by configuration](2026-11-22-throughput.svg)"));
        for title in [
            "## Title of datapath\n",
            "## Title of datapath-vm\n",
            "## Title of control\n",
        ] {
            assert!(md.contains(title), "{title} missing:\n{md}");
        }
        assert!(
            md.contains("| datapath-vm | not run (timeout) | booting / VM \\| stuck |"),
            "{md}"
        );
        assert!(
            md.contains("| control | host | launch to ready (ms) | 125 (120–130) | - | - | - |  |")
        );
    }

    #[test]
    fn plot_gives_host_and_vm_their_own_panel() {
        let mut s = sections();
        s[1].rows = datapath_rows(DATAPATH_VM, 0.1);
        let svg = plot(&s);
        assert!(
            svg.contains("Host kernel") && svg.contains("Kernel VM"),
            "{svg}"
        );
        // Two groups (plain, userspace) in each panel, tcp_bw only.
        assert_eq!(svg.matches("<title>qperf tcp_bw: ").count(), 4, "{svg}");
        let only_host = plot(&sections());
        assert!(!only_host.contains("Kernel VM"));
    }

    #[test]
    fn readme_block_replaces_only_the_marked_part() {
        let readme = "intro\n<!-- bench:latest -->\nold\n<!-- /bench:latest -->\nrest\n";
        let block = readme_block(
            &run(),
            &sections(),
            "bench/results/x.md",
            "bench/results/x.svg",
        );
        let new = splice(readme, &block).unwrap();
        assert!(new.starts_with("intro\n<!-- bench:latest -->\nLatest run, 2026-11-22"));
        assert!(new.ends_with("<!-- /bench:latest -->\nrest\n"), "{new}");
        assert!(!new.contains("old"));
        assert!(
            new.contains("| control | host | launch to ready | 125 (120–130) ms | - |"),
            "{new}"
        );
        assert_eq!(
            new.matches("booting / VM").count(),
            1,
            "said once, in the headline: {new}"
        );
        assert!(
            new.contains("| weft userspace | 2.00 GB/s (0.50×) |"),
            "headline quoted: {new}"
        );
        assert_eq!(
            splice(&new, &block).unwrap(),
            new,
            "splicing again changes nothing"
        );
        assert!(splice("no markers", &block).is_err());
    }
}
