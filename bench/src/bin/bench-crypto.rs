//! Seal+open throughput of the userspace data path's packet sealing, on one
//! core, as a ratio to `openssl speed -evp chacha20-poly1305` at 1024
//! bytes measured in the same run on the same core.
//!
//! Each packet of a batch of 64 is sealed and then opened, as a sender and
//! a receiver would; throughput counts the bytes each of the two operations
//! processes, which is what `openssl speed` counts for its one operation.
//! The openssl figure is its bulk rate (no per-message nonce or tag); its
//! per-message AEAD rate at our packet size is reported beside it.

use std::time::{Duration, Instant};

use bench::{Row, output_of, pin_to_cpu};
use clap::Parser;
use weft_crypto::{Opener, RekeyPolicy, Sealer, SecretKey, datagram::OVERHEAD};

#[derive(Parser)]
#[command(about = "Packet sealing throughput against openssl, on one core")]
struct Args {
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 1400)]
    packet: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Measurements of each side; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Write the result rows as JSON lines to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const BATCH: usize = 64;

/// GB/s through seal and open of `packet`-byte payloads for `duration`.
fn weft_rate(packet: usize, duration: Duration) -> f64 {
    let now = Instant::now();
    let key = SecretKey::from_bytes([0x42; 32]);
    let mut sealer = Sealer::new(key.clone(), now, RekeyPolicy::default());
    let mut opener = Opener::new(key, RekeyPolicy::default());
    let mut packets: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| vec![i as u8; packet + OVERHEAD])
        .collect();
    let mut results = vec![Ok(0..0); BATCH];
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < duration {
        sealer
            .seal_batch(now, b"", &mut packets)
            .expect("room for header and tag");
        opener.open_batch(now, b"", &mut packets, &mut results);
        assert!(results.iter().all(Result::is_ok), "a packet failed to open");
        bytes += 2 * (BATCH * packet) as u64;
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// GB/s that `openssl speed` reports for ChaCha20-Poly1305 at `bytes`.
fn openssl_rate(bytes: usize, seconds: u64, aead: bool) -> Result<f64, String> {
    let (size, secs) = (bytes.to_string(), seconds.to_string());
    let mut args = vec![
        "speed",
        "-evp",
        "chacha20-poly1305",
        "-bytes",
        &size,
        "-seconds",
        &secs,
    ];
    if aead {
        args.push("-aead");
    }
    let out = output_of("openssl", &args)?;
    // The last line: "ChaCha20-Poly1305  3896877.06k" (1000s of bytes/s).
    let figure = out
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().last())
        .and_then(|f| f.strip_suffix('k'))
        .and_then(|f| f.parse::<f64>().ok())
        .ok_or_else(|| format!("unexpected openssl output: {out}"))?;
    Ok(figure * 1000.0 / 1e9)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    pin_to_cpu(0).map_err(|e| format!("pin to CPU 0: {e}"))?;
    let duration = Duration::from_secs(args.seconds);
    let (mut ours, mut bulk, mut aead) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        // Alternate so drifting machine load hits both sides alike.
        bulk.push(openssl_rate(1024, args.seconds, false)?);
        ours.push(weft_rate(args.packet, duration));
        aead.push(openssl_rate(args.packet, args.seconds, true)?);
        eprintln!(
            "round {round}: weft {:.2} GB/s, openssl bulk@1024 {:.2} GB/s, openssl aead@{} {:.2} GB/s",
            ours[round - 1],
            bulk[round - 1],
            args.packet,
            aead[round - 1]
        );
    }
    let config = format!(
        "seal+open {}-byte packets, batch {BATCH}, 1 core, {}",
        args.packet,
        weft_crypto::aead_implementation()
    );
    let throughput = |metric: &str| Row::new("crypto", &config, metric, "GB/s", &ours);
    let rows = [
        throughput("throughput vs openssl speed -evp chacha20-poly1305 @1024")
            .against_paired(
                &bulk,
                "openssl bulk rate at 1024 bytes: no per-message nonce or tag",
            )
            .with_target(">= 0.8"),
        throughput(&format!(
            "throughput vs openssl speed -aead @{}",
            args.packet
        ))
        .against_paired(
            &aead,
            "openssl at the same packet size, per-message AEAD on both sides",
        ),
    ];
    bench::emit(&rows, args.json.as_deref())
}
