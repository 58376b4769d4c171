//! The plumbing of `scripts/bench`, run the way the script runs it: a
//! benchmark binary writing its rows as JSON lines, and `bench-report`
//! turning a run directory into the report, the plot and the README
//! quote. The numbers themselves are checked by nothing here: benchmarks
//! are not timed tests.

use std::{path::PathBuf, process::Command};

use bench::{
    Row,
    report::{DATAPATH_HOST, TCP_BW},
};

/// A fresh directory under the target directory, removed first if a
/// previous run left it.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_rows(path: PathBuf, rows: &[Row]) {
    let text: String = rows
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

#[test]
fn report_from_a_run_directory_says_what_did_not_run() {
    let dir = scratch("report-run");
    let out = dir.join("results");
    let plain = [1.0, 1.2, 1.1];
    write_rows(
        dir.join("datapath.jsonl"),
        &[
            Row::new(DATAPATH_HOST, "plain veth", TCP_BW, "GB/s", &plain),
            Row::new(
                DATAPATH_HOST,
                "weft userspace, clear",
                TCP_BW,
                "GB/s",
                &[0.5, 0.6, 0.55],
            )
            .against(&plain, "plain veth"),
        ],
    );
    write_rows(
        dir.join("ipam.jsonl"),
        &[Row::new(
            "ipam allocate",
            "owning space",
            "latency p50",
            "µs",
            &[500.0, 510.0, 490.0],
        )],
    );
    std::fs::write(
        dir.join("steps.jsonl"),
        [
            r#"{"name":"datapath","title":"Data paths on the host","seconds":150,"status":"ok","reason":""}"#,
            r#"{"name":"datapath-vm","title":"Data paths in the VM","seconds":540,"status":"timeout","reason":"stopped after 540 s; last lines: booting"}"#,
            r#"{"name":"ipam","title":"IPAM","seconds":2,"status":"ok","reason":""}"#,
            r#"{"name":"control-vm","title":"Control in the VM","seconds":0,"status":"skipped","reason":"skipped: --no-vm"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let readme = dir.join("README.md");
    std::fs::write(
        &readme,
        "# x\n<!-- bench:latest -->\n<!-- /bench:latest -->\nend\n",
    )
    .unwrap();

    run(Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .args([
            "--date",
            "2026-01-02",
            "--commit",
            "abc",
            "--seconds",
            "700",
        ])
        .arg("--dir")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .arg("--readme")
        .arg(&readme));

    let report = std::fs::read_to_string(out.join("2026-01-02.md")).unwrap();
    assert!(report.contains("![Throughput by configuration](2026-01-02-throughput.svg)"));
    assert!(
        report.contains("| host | weft userspace, clear | 0.55 GB/s (0.50×) |"),
        "{report}"
    );
    assert!(
        report.contains(
            "| Data paths in the VM | not run | stopped after 540 s; last lines: booting |"
        ),
        "{report}"
    );
    assert!(report.contains("| ipam allocate | owning space | latency p50 (µs) | 500 (490–510) |"));
    assert!(report.contains("took 11m40s"), "{report}");
    assert!(report.contains("`control-vm`, 0 s, skipped."), "{report}");
    assert!(report.contains("| control-vm | not run (skipped) | skipped: --no-vm |"));
    let svg = std::fs::read_to_string(out.join("2026-01-02-throughput.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("weft userspace, clear"),
        "{svg}"
    );
    let quoted = std::fs::read_to_string(&readme).unwrap();
    assert!(
        quoted.starts_with("# x\n<!-- bench:latest -->\nLatest run, 2026-01-02"),
        "{quoted}"
    );
    assert!(
        quoted.contains("| ipam allocate | owning space | latency p50 | 500 (490–510) µs | - |")
    );
    assert!(quoted.ends_with("<!-- /bench:latest -->\nend\n"));
}

#[test]
fn report_refuses_a_run_without_steps() {
    let dir = scratch("report-empty");
    let out = Command::new(env!("CARGO_BIN_EXE_bench-report"))
        .args(["--date", "2026-01-02", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("steps.jsonl"));
}

/// bench-control on two simulated hosts: one round gives the five host
/// figures, each a plausible time.
#[test]
fn control_plane_bench_writes_its_rows() {
    let dir = scratch("control");
    let json = dir.join("control.jsonl");
    run(Command::new(env!("CARGO_BIN_EXE_bench-control"))
        .args(["--rounds", "1", "--json"])
        .arg(&json));
    let rows = bench::read_rows(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "launch to router answering",
            "launch to first container attached",
            "connect to traffic",
            "launch both routers to the first ping answered",
            "first ping answered after the data path came up",
        ]
    );
    for r in &rows {
        assert_eq!(r.unit, "ms");
        assert_eq!(r.samples.len(), 1);
        // A reply can come before the path is seen up (0 after it).
        assert!(r.value.median >= 0.0 && r.value.median < 30_000.0, "{r:?}");
    }
    assert!(rows[0].value.median > 0.0, "{rows:?}");
    assert!(rows[1].value.median >= rows[0].value.median, "{rows:?}");
    assert!(rows[3].value.median > 0.0, "{rows:?}");
}

/// bench-dns at its smallest: every figure there, each with the baseline
/// the issue names, and answers that really came (dnsperf lost nothing).
#[test]
fn dns_bench_writes_its_rows() {
    let dir = scratch("dns");
    let json = dir.join("dns.jsonl");
    run(Command::new(env!("CARGO_BIN_EXE_bench-dns"))
        .args(["--rounds", "1", "--seconds", "1", "--queries", "200"])
        .args(["--registrations", "2", "--memory-names", "500", "--json"])
        .arg(&json));
    let rows = bench::read_rows(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "throughput",
            "server CPU per query",
            "latency p50",
            "latency p99",
            "answer on every host",
            "memory per 10,000 names",
            "memory per 10,000 names",
        ]
    );
    for r in &rows[..4] {
        assert!(r.value.median > 0.0 && r.ratio.is_some(), "{r:?}");
        assert!(r.note.contains("dnsmasq"), "{r:?}");
    }
    assert!(rows[0].value.median > 1000.0, "{:?}", rows[0]);
    for t in rows.iter().filter_map(|r| r.target.as_deref()) {
        assert!(
            t.starts_with(">=") || t.starts_with("<="),
            "{t:?}: the report understands only >= X and <= X"
        );
    }
    assert!(
        rows[4].value.median > 0.0 && rows[4].value.median < 10_000.0,
        "{:?}",
        rows[4]
    );
}

/// bench-policy at its smallest: both figures, with their baselines and
/// targets in the form the report checks.
#[test]
fn policy_bench_writes_its_rows() {
    let dir = scratch("policy");
    let json = dir.join("policy.jsonl");
    run(Command::new(env!("CARGO_BIN_EXE_bench-policy"))
        .args([
            "--rounds",
            "1",
            "--seconds",
            "1",
            "--pods",
            "9",
            "--changes",
            "2",
            "--json",
        ])
        .arg(&json));
    let rows = bench::read_rows(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "tcp_bw",
            "udp_lat",
            "change to enforcement on every host, p50",
            "change to enforcement on every host, p99",
        ]
    );
    assert!(
        rows[..2]
            .iter()
            .all(|r| r.ratio.is_some() && r.value.median > 0.0),
        "{rows:?}"
    );
    assert!(
        rows[2].value.median > 0.0 && rows[3].value.median < 30_000.0,
        "{rows:?}"
    );
    for t in rows.iter().filter_map(|r| r.target.as_deref()) {
        assert!(t.starts_with(">=") || t.starts_with("<="), "{t:?}");
    }
}

/// bench-condition at its smallest: every figure, each measured, the
/// headline one with its baseline and target.
#[test]
fn condition_bench_writes_its_rows() {
    let dir = scratch("condition");
    let json = dir.join("condition.jsonl");
    run(Command::new(env!("CARGO_BIN_EXE_bench-condition"))
        .args([
            "--rounds",
            "1",
            "--seconds",
            "1",
            "--frames",
            "10000",
            "--json",
        ])
        .arg(&json));
    let rows = bench::read_rows(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(
        metrics,
        [
            "tcp_bw",
            "tcp_bw",
            "udp_lat",
            "64-byte UDP received",
            "64-byte frames",
            "64-byte frames"
        ]
    );
    assert!(rows.iter().all(|r| r.value.median > 0.0), "{rows:?}");
    assert_eq!(rows[0].target.as_deref(), Some(">= 0.5"));
    assert!(rows[0].ratio.is_some() && rows[0].note.contains("Synthetic Network"));
}
