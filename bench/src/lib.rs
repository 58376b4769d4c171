//! Shared pieces of weft's benchmarks: statistics over repeated runs,
//! pinning to one core, what a process costs, the rows every benchmark
//! prints, and the report that `scripts/bench` assembles from them.
//!
//! Every benchmark measures its baseline in the same run and reports the
//! ratio: the machines are shared and noisy, so an absolute number alone
//! says little.

use std::process::Command;

use serde::{Deserialize, Serialize};

pub mod report;
pub mod svg;

/// Median, minimum and maximum of repeated measurements.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} (min {:.3}, max {:.3})",
            self.median, self.min, self.max
        )
    }
}

impl Summary {
    /// `median (min–max)` with about three significant digits each, for
    /// tables.
    pub fn compact(&self) -> String {
        format!(
            "{} ({}–{})",
            short(self.median),
            short(self.min),
            short(self.max)
        )
    }
}

/// A number with about three significant digits, for labels and cells.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// One line of a benchmark's result, as JSON for the report and as a
/// markdown table row for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub benchmark: String,
    pub configuration: String,
    pub metric: String,
    pub unit: String,
    pub value: Summary,
    /// The same metric of the baseline, measured in the same run.
    pub baseline: Option<Summary>,
    pub ratio: Option<Summary>,
    pub target: Option<String>,
    pub note: String,
    /// Every measurement behind `value`, in round order.
    #[serde(default)]
    pub samples: Vec<f64>,
}

impl Row {
    /// A measurement with nothing to compare it to.
    pub fn new(
        benchmark: &str,
        configuration: &str,
        metric: &str,
        unit: &str,
        samples: &[f64],
    ) -> Row {
        Row {
            benchmark: benchmark.into(),
            configuration: configuration.into(),
            metric: metric.into(),
            unit: unit.into(),
            value: Summary::of(samples),
            baseline: None,
            ratio: None,
            target: None,
            note: String::new(),
            samples: samples.to_vec(),
        }
    }

    /// Compared with `baseline`, measured in the same run and described
    /// by `name`: each sample divided by the baseline's median.
    pub fn against(self, baseline: &[f64], name: &str) -> Row {
        let median = Summary::of(baseline).median;
        let ratios: Vec<f64> = self.samples.iter().map(|v| v / median).collect();
        self.with_baseline(baseline, ratios, name)
    }

    /// Compared with `baseline` measured round by round alongside (the
    /// same round index, the same moment or the same seed): samples are
    /// divided pairwise, so a round that was slow for both counts once.
    pub fn against_paired(self, baseline: &[f64], name: &str) -> Row {
        assert_eq!(
            self.samples.len(),
            baseline.len(),
            "paired baselines need one sample per round"
        );
        let ratios: Vec<f64> = self
            .samples
            .iter()
            .zip(baseline)
            .map(|(v, b)| v / b)
            .collect();
        self.with_baseline(baseline, ratios, name)
    }

    fn with_baseline(mut self, baseline: &[f64], ratios: Vec<f64>, name: &str) -> Row {
        self.baseline = Some(Summary::of(baseline));
        self.ratio = Some(Summary::of(&ratios));
        self.note = format!("baseline: {name}");
        self
    }

    pub fn with_target(mut self, target: &str) -> Row {
        self.target = Some(target.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        let note = note.into();
        self.note = if self.note.is_empty() {
            note
        } else {
            format!("{}; {note}", self.note)
        };
        self
    }

    pub fn markdown_header() -> &'static str {
        "| benchmark | configuration | metric | value | baseline | ratio | target | note |\n|---|---|---|---|---|---|---|---|"
    }

    pub fn markdown(&self) -> String {
        let opt = |s: &Option<Summary>| s.map(|s| s.compact()).unwrap_or_else(|| "-".into());
        format!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            self.benchmark,
            self.configuration,
            self.metric,
            self.unit,
            self.value.compact(),
            opt(&self.baseline),
            opt(&self.ratio),
            self.target.as_deref().unwrap_or("-"),
            self.note.replace('|', "\\|")
        )
    }
}

/// Prints `rows` as a markdown table and, when `json` is given, writes
/// them there as JSON lines (what the report of issue 10 collects).
pub fn emit(rows: &[Row], json: Option<&std::path::Path>) -> Result<(), String> {
    println!("{}", Row::markdown_header());
    for row in rows {
        println!("{}", row.markdown());
    }
    if let Some(path) = json {
        let lines: Vec<String> = rows
            .iter()
            .map(|r| serde_json::to_string(r).expect("rows serialize"))
            .collect();
        std::fs::write(path, lines.join("\n") + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// p50 and p99 rows of latencies timed in rounds, against a baseline
/// timed in the same rounds: each figure is the median over the rounds of
/// that round's percentile.
pub fn latency_rows(
    benchmark: &str,
    configuration: &str,
    unit: &str,
    rounds: &[Vec<f64>],
    (baseline, baseline_name): (&[Vec<f64>], &str),
) -> Vec<Row> {
    [("p50", 0.5), ("p99", 0.99)]
        .into_iter()
        .map(|(name, p)| {
            let per_round =
                |rounds: &[Vec<f64>]| rounds.iter().map(|s| percentile(s, p)).collect::<Vec<_>>();
            let row = Row::new(
                benchmark,
                configuration,
                &format!("latency {name}"),
                unit,
                &per_round(rounds),
            )
            .against_paired(&per_round(baseline), baseline_name);
            eprintln!(
                "{benchmark}, {configuration}, {name}: {} {unit}; {baseline_name}: {} {unit}",
                row.value.compact(),
                row.baseline.map(|b| b.compact()).unwrap_or_default()
            );
            row
        })
        .collect()
}

/// Reads rows written by [`emit`] (JSON lines).
pub fn read_rows(text: &str) -> Result<Vec<Row>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
        .collect()
}

/// CPU seconds (user + system) process `pid` has used so far; 0 once it
/// is gone.
pub fn cpu_seconds(pid: i32) -> f64 {
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
    // Counting from the state after the command: utime is 11, stime 12,
    // in clock ticks.
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / per_second
}

/// A memory figure of process `pid` from /proc/PID/status in KiB
/// (`VmRSS` now, `VmHWM` the peak); 0 once it is gone.
pub fn memory_kib(pid: i32, field: &str) -> f64 {
    kib_field(&format!("/proc/{pid}/status"), field)
}

/// A `Field:   N kB` line of a /proc file such as /proc/meminfo or
/// /proc/PID/status, in KiB; 0 when the file or the field is missing.
pub fn kib_field(path: &str, field: &str) -> f64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Restricts this process (and what it starts) to one CPU, so "one core"
/// means one core for us and for the baseline alike.
pub fn pin_to_cpu(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// The `p` quantile (0..=1) of `samples`, nearest rank.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Runs a command and returns its stdout, or an error naming the command.
pub fn output_of(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One qperf result: bandwidth in bytes/s or latency in microseconds.
pub fn qperf(
    client: &testbed::Netns,
    server: &str,
    test: &str,
    seconds: u32,
) -> Result<f64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_middle() {
        assert_eq!(
            Summary::of(&[3.0, 1.0, 2.0]),
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn ratios_pair_rounds_only_when_asked() {
        let paired =
            Row::new("b", "c", "m", "u", &[2.0, 4.0, 9.0]).against_paired(&[1.0, 4.0, 3.0], "base");
        assert_eq!(
            paired.ratio.unwrap(),
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(paired.note, "baseline: base");
        let by_median =
            Row::new("b", "c", "m", "u", &[2.0, 4.0, 9.0]).against(&[1.0, 4.0, 3.0], "base");
        assert_eq!(
            by_median.ratio.unwrap(),
            Summary {
                median: 4.0 / 3.0,
                min: 2.0 / 3.0,
                max: 3.0
            }
        );
        assert_eq!(by_median.with_note("more").note, "baseline: base; more");
    }

    #[test]
    #[should_panic(expected = "one sample per round")]
    fn pairing_needs_equal_rounds() {
        let _ = Row::new("b", "c", "m", "u", &[2.0, 4.0]).against_paired(&[1.0], "base");
    }

    #[test]
    fn rows_survive_json_lines() {
        let rows = vec![
            Row::new("b", "c", "m", "u", &[1.0, 2.0]).with_target(">= 1"),
            Row::new("b", "d", "m", "u", &[3.0]).against(&[1.5], "x"),
        ];
        let text: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert_eq!(read_rows(&text).unwrap(), rows);
        assert!(read_rows("{not json").is_err());
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let rss = memory_kib(me, "VmRSS");
        assert!(rss > 100.0);
        // The peak, read after: never below what was resident before.
        assert!(memory_kib(me, "VmHWM") >= rss);
        assert_eq!(memory_kib(i32::MAX, "VmRSS"), 0.0);
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {}
        assert!(cpu_seconds(me) > 0.0);
    }
}
