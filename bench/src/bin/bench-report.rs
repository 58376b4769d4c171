//! Assembles the dated report of a `scripts/bench` run: reads the steps
//! it recorded and the rows each step's benchmark emitted, writes
//! `DATE.md` and `DATE-throughput.svg` under the results directory, and
//! quotes the headline in the README between its `bench:latest` markers.

use std::path::{Path, PathBuf};

use bench::report::{self, Run, Section, Step};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Write the markdown report and plot of a scripts/bench run")]
struct Args {
    /// The run's directory: steps.jsonl and one NAME.jsonl per step.
    #[arg(long)]
    dir: PathBuf,
    /// Where the dated report goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// The report's date (YYYY-MM-DD), also its file name.
    #[arg(long)]
    date: String,
    /// The commit measured.
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// How long the whole run took, in seconds.
    #[arg(long, default_value_t = 0.0)]
    seconds: f64,
    /// A README to quote the headline in (between `<!-- bench:latest -->`
    /// and `<!-- /bench:latest -->`).
    #[arg(long)]
    readme: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// CPU model, cores, memory and kernel of this machine, in one line.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = bench::kib_field("/proc/meminfo", "MemTotal") / 1024.0 / 1024.0;
    let kernel = bench::output_of("uname", &["-r"]).unwrap_or_default();
    format!(
        "{model}, {cores} cores, {memory_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let steps_text = read(&args.dir.join("steps.jsonl"))?;
    let mut sections = Vec::new();
    for line in steps_text.lines().filter(|l| !l.trim().is_empty()) {
        let step: Step =
            serde_json::from_str(line).map_err(|e| format!("steps.jsonl: {e}: {line}"))?;
        let rows_file = args.dir.join(format!("{}.jsonl", step.name));
        let rows = if rows_file.exists() {
            bench::read_rows(&read(&rows_file)?)?
        } else {
            Vec::new()
        };
        sections.push(Section { step, rows });
    }
    let run = Run {
        date: args.date.clone(),
        commit: args.commit.clone(),
        machine: machine(),
        seconds: args.seconds,
    };
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let plot_name = format!("{}-throughput.svg", args.date);
    let report_path = args.out.join(format!("{}.md", args.date));
    let plot_path = args.out.join(&plot_name);
    write(&plot_path, &report::plot(&sections))?;
    write(&report_path, &report::markdown(&run, &sections, &plot_name))?;
    println!("report: {}", report_path.display());
    println!("plot:   {}", plot_path.display());
    if let Some(readme) = &args.readme {
        let block = report::readme_block(
            &run,
            &sections,
            &report_path.display().to_string(),
            &plot_path.display().to_string(),
        );
        let text = report::splice(&read(readme)?, &block)?;
        write(readme, &text)?;
        println!("quoted in {}", readme.display());
    }
    let missing: Vec<&str> = sections
        .iter()
        .filter(|s| s.step.failed())
        .map(|s| s.step.name.as_str())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "steps that did not finish (the report says why): {}",
            missing.join(", ")
        );
    }
    Ok(())
}
