//! IPAM allocation latency through the router's API, on two simulated
//! hosts: when the router owns free space (no network round trip), and
//! when it must first ask a peer for space (a space request and an
//! activation acknowledged by the peer). The baseline, measured in the
//! same run, is an IPAM request that changes nothing (release of an
//! unknown id): the API's own round trip.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Instant,
};

use bench::{Row, Summary};
use clap::Parser;
use testbed::{Spec, Testbed, WeftHost};

#[derive(Parser)]
#[command(about = "IPAM allocation latency p50/p99: owning space vs asking a peer")]
struct Args {
    /// Allocations per measurement.
    #[arg(long, default_value_t = 200)]
    count: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// One HTTP request over the router's API socket; the status line must be
/// 200.
fn post(socket: &Path, path: &str, body: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: weft\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("{path} {body}: {answer}"));
    }
    Ok(answer)
}

/// Latencies in microseconds of `count` requests made by `make(i)`.
fn time(
    socket: &Path,
    count: usize,
    make: impl Fn(usize) -> (String, String),
) -> Result<Vec<f64>, String> {
    (0..count)
        .map(|i| {
            let (path, body) = make(i);
            let t = Instant::now();
            post(socket, &path, &body)?;
            Ok(t.elapsed().as_secs_f64() * 1e6)
        })
        .collect()
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tb = Testbed::create_owned("benchipam", Spec::hosts(2)).map_err(|e| e.to_string())?;
    let (n1, n2) = ("02:00:00:00:00:01", "02:00:00:00:00:02");
    let seed = format!("seed={n1}");
    let h1 = tb.weft(1);
    let h2 = tb.weft(2);
    let first = tb.host_addr(1).to_string();
    h1.launch(&["--name", n1, "--ipalloc-init", &seed])
        .map_err(|e| e.to_string())?;
    h2.launch(&["--name", n2, "--ipalloc-init", &seed, &first])
        .map_err(|e| e.to_string())?;
    let socket = |w: &WeftHost| w.run_dir.join("weft.sock");
    // Warm up: h1 activates its first blocks, h2 gets the ring.
    post(&socket(&h1), "/ipam/allocate", r#"{"id":"warm"}"#)?;
    testbed::eventually(
        "h2 to have the ring",
        std::time::Duration::from_secs(20),
        || {
            let v = h2.run(&["ipam", "show"]).map_err(|e| e.to_string())?;
            v.contains("\"cluster\": \"").then_some(()).ok_or(v)
        },
    );
    let n = args.count;
    let baseline = time(&socket(&h1), n, |_| {
        ("/ipam/release".into(), r#"{"id":"nobody"}"#.into())
    })?;
    let owning = time(&socket(&h1), n, |i| {
        ("/ipam/allocate".into(), format!(r#"{{"id":"own{i}"}}"#))
    })?;
    // Each in a /24 where h2 owns nothing yet (h1 owns the whole range):
    // every allocation asks h1 for space first.
    let asking = time(&socket(&h2), n.min(250), |i| {
        (
            "/ipam/allocate".into(),
            format!(r#"{{"id":"ask{i}","subnet":"10.40.{i}.0/24"}}"#),
        )
    })?;
    tb.destroy().map_err(|e| e.to_string())?;

    let mut rows = Vec::new();
    let base = Summary::of(&[percentile(&baseline, 0.5)]);
    for (name, samples) in [("owning space", &owning), ("asking a peer", &asking)] {
        for (metric, p) in [("p50", 0.5), ("p99", 0.99)] {
            let v = percentile(samples, p);
            let b = percentile(&baseline, p);
            rows.push(Row {
                benchmark: "ipam allocate".into(),
                configuration: name.into(),
                metric: format!("latency {metric}"),
                unit: "µs".into(),
                value: Summary::of(&[v]),
                baseline: Some(Summary::of(&[b])),
                ratio: Some(Summary::of(&[v / b])),
                target: None,
                note: format!("{} requests; baseline: a no-op IPAM request", samples.len()),
            });
        }
    }
    println!("{}", Row::markdown_header());
    for r in &rows {
        println!("{}", r.markdown());
    }
    eprintln!(
        "baseline p50 {:.0} µs; owning p50 {:.0} µs p99 {:.0} µs; asking p50 {:.0} µs p99 {:.0} µs",
        base.median,
        percentile(&owning, 0.5),
        percentile(&owning, 0.99),
        percentile(&asking, 0.5),
        percentile(&asking, 0.99)
    );
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
