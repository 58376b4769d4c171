//! IPAM allocation latency through the router's API, on two simulated
//! hosts: when the router owns free space (no network round trip), and
//! when it must first ask a peer for space (a space request and an
//! activation acknowledged by the peer). The baseline, measured in the
//! same run, is an IPAM request that changes nothing (release of an
//! unknown id): the API's own round trip.

use std::{path::Path, time::Instant};

use clap::Parser;
use testbed::{Spec, Testbed, WeftHost};
use weft_api::Client;

#[derive(Parser)]
#[command(about = "IPAM allocation latency p50/p99: owning space vs asking a peer")]
struct Args {
    /// Allocations per measurement.
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Repetitions of each measurement (at most 8: each round asks for
    /// space in its own /16 of the range); medians of the rounds' p50
    /// and p99 are reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    rounds: u8,
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
    let (mut baseline, mut owning, mut asking) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        baseline.push(time(&socket(&h1), n, |_| {
            ("/ipam/release".into(), r#"{"id":"nobody"}"#.into())
        })?);
        owning.push(time(&socket(&h1), n, |i| {
            (
                "/ipam/allocate".into(),
                format!(r#"{{"id":"own{round}-{i}"}}"#),
            )
        })?);
        // Each in a /24 where h2 owns nothing yet (h1 owns the whole
        // range): every allocation asks h1 for space first.
        asking.push(time(&socket(&h2), n.min(256), |i| {
            (
                "/ipam/allocate".into(),
                format!(
                    r#"{{"id":"ask{round}-{i}","subnet":"10.{}.{i}.0/24"}}"#,
                    40 + round
                ),
            )
        })?);
    }
    tb.destroy().map_err(|e| e.to_string())?;

    let mut rows = Vec::new();
    for (name, samples) in [("owning space", &owning), ("asking a peer", &asking)] {
        rows.extend(
            bench::latency_rows(
                "ipam allocate",
                name,
                "µs",
                samples,
                (&baseline, "a no-op IPAM request"),
            )
            .into_iter()
            .map(|r| r.with_note(format!("{} requests per round", samples[0].len()))),
        );
    }
    bench::emit(&rows, args.json.as_deref())
}
