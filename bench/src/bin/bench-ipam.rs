//! IPAM allocation latency through the router's API, on two simulated
//! hosts: when the router owns free space (no network round trip), and
//! when it must first ask a peer for space (a space request and an
//! activation acknowledged by the peer). The baseline, measured in the
//! same run, is an IPAM request that changes nothing (release of an
//! unknown id): the API's own round trip.

use std::{path::Path, time::Instant};

use bench::{Row, Summary, percentile};
use clap::Parser;
use testbed::{Spec, Testbed, WeftHost};
use weft_router::cli::client::Client;

#[derive(Parser)]
#[command(about = "IPAM allocation latency p50/p99: owning space vs asking a peer")]
struct Args {
    /// Allocations per measurement.
    #[arg(long, default_value_t = 200)]
    count: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
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
            Client::new(socket.to_path_buf())
                .post(&path, &body)
                .map_err(|e| format!("{path} {body}: {e}"))?;
            Ok(t.elapsed().as_secs_f64() * 1e6)
        })
        .collect()
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
    Client::new(socket(&h1))
        .post("/ipam/allocate", r#"{"id":"warm"}"#)
        .map_err(|e| e.to_string())?;
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
    eprintln!(
        "baseline p50 {:.0} µs; owning p50 {:.0} µs p99 {:.0} µs; asking p50 {:.0} µs p99 {:.0} µs",
        percentile(&baseline, 0.5),
        percentile(&owning, 0.5),
        percentile(&owning, 0.99),
        percentile(&asking, 0.5),
        percentile(&asking, 0.99)
    );
    bench::emit(&rows, args.json.as_deref())
}
