//! Shared pieces of weft's benchmarks: statistics over repeated runs,
//! pinning to one core, and the report rows every benchmark prints.
//!
//! Every benchmark measures its baseline in the same run and reports the
//! ratio: the machines are shared and noisy, so an absolute number alone
//! says little.

use std::process::Command;

use serde::Serialize;

/// Median, minimum and maximum of repeated measurements.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
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
        let median = if sorted.len() % 2 == 0 {
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

/// One line of a benchmark's result, as JSON for the report and as a
/// markdown table row for people.
#[derive(Clone, Debug, Serialize)]
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
}

impl Row {
    pub fn markdown_header() -> &'static str {
        "| benchmark | configuration | metric | value | baseline | ratio | target |\n|---|---|---|---|---|---|---|"
    }

    pub fn markdown(&self) -> String {
        let opt = |s: &Option<Summary>| s.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
        format!(
            "| {} | {} | {} ({}) | {} | {} | {} | {} |",
            self.benchmark,
            self.configuration,
            self.metric,
            self.unit,
            self.value,
            opt(&self.baseline),
            opt(&self.ratio),
            self.target.as_deref().unwrap_or("-")
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
}
