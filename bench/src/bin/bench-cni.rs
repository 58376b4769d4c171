//! CNI ADD and DEL latency of weft's plugin against the reference `bridge`
//! plugin with `host-local` IPAM (containernetworking-plugins), measured
//! in the same run on the same simulated host: each of N container
//! namespaces gets an interface from each plugin, in alternation, then
//! loses both.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use clap::Parser;
use serde_json::json;
use testbed::{Spec, Testbed, workspace_bin};

#[derive(Parser)]
#[command(about = "CNI ADD/DEL latency p50/p99: weft-cni vs bridge + host-local")]
struct Args {
    /// Containers (network namespaces).
    #[arg(long, default_value_t = 200)]
    count: usize,
    /// Times every container is added and deleted; each round gives its
    /// own p50 and p99, of which the median is reported.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Where the reference plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_path: PathBuf,
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs a plugin once; returns the time from spawn to exit in ms.
fn invoke(
    plugin: &Path,
    cni_path: &Path,
    command: &str,
    netns: &str,
    id: &str,
    ifname: &str,
    conf: &str,
) -> Result<f64, String> {
    let t = Instant::now();
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", format!("/run/netns/{netns}"))
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", plugin.display()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(format!(
            "{} {command} {id}: {}{}",
            plugin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(ms)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let weft_cni = workspace_bin("weft-cni").map_err(|e| e.to_string())?;
    let bridge = args.cni_path.join("bridge");
    if !bridge.exists() {
        return Err(format!(
            "{} is missing: install containernetworking-plugins (scripts/install-deps does)",
            bridge.display()
        ));
    }
    let tb = Testbed::create_owned("benchcni", Spec::hosts(1)).map_err(|e| e.to_string())?;
    let h1 = tb.weft(1);
    h1.launch(&[]).map_err(|e| e.to_string())?;
    // Namespaces under the testbed's prefix, so destroying it removes them.
    let names: Vec<String> = (0..args.count)
        .map(|i| format!("tb-{}-p{i}", tb.name()))
        .collect();
    for n in &names {
        bench::output_of("ip", &["netns", "add", n])?;
    }
    let weft_conf = json!({
        "cniVersion": "1.0.0", "name": "benchweft", "type": "weft-cni",
        "socket": h1.run_dir.join("weft.sock"),
    })
    .to_string();
    let ref_conf = json!({
        "cniVersion": "1.0.0", "name": "benchref", "type": "bridge", "bridge": "cniref0",
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": "10.99.0.0/16" }]],
            "dataDir": tb.state_dir().join("host-local"),
        },
    })
    .to_string();
    let cni_path = args.cni_path.clone();
    // The plugins run in the simulated host, as a runtime there would
    // run them: the reference bridge is made there, not on this machine.
    let rounds = args.rounds;
    let samples = tb
        .host(1)
        .in_thread(move || -> Result<Vec<[Vec<f64>; 4]>, String> {
            let mut all = Vec::new();
            for _ in 0..rounds {
                let mut s: [Vec<f64>; 4] = Default::default();
                for (i, n) in names.iter().enumerate() {
                    let id = format!("c{i}");
                    s[0].push(invoke(
                        &weft_cni, &cni_path, "ADD", n, &id, "eth0", &weft_conf,
                    )?);
                    s[1].push(invoke(
                        &bridge, &cni_path, "ADD", n, &id, "eth1", &ref_conf,
                    )?);
                }
                for (i, n) in names.iter().enumerate() {
                    let id = format!("c{i}");
                    s[2].push(invoke(
                        &weft_cni, &cni_path, "DEL", n, &id, "eth0", &weft_conf,
                    )?);
                    s[3].push(invoke(
                        &bridge, &cni_path, "DEL", n, &id, "eth1", &ref_conf,
                    )?);
                }
                all.push(s);
            }
            Ok(all)
        })
        .map_err(|e| e.to_string())??;
    let ps = h1.run(&["ps"]).map_err(|e| e.to_string())?;
    tb.destroy().map_err(|e| e.to_string())?;
    // The router's own gateway (it exposes itself to serve CNI) stays.
    let left: Vec<&str> = ps
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("weft:expose "))
        .collect();
    if !left.is_empty() {
        return Err(format!("DEL left attachments behind: {left:?}"));
    }

    let set = |i: usize| samples.iter().map(|s| s[i].clone()).collect::<Vec<_>>();
    let mut rows = Vec::new();
    for (command, ours, reference) in [("ADD", 0, 1), ("DEL", 2, 3)] {
        rows.extend(
            bench::latency_rows(
                &format!("cni {command}"),
                "weft-cni",
                "ms",
                &set(ours),
                (&set(reference), "bridge + host-local"),
            )
            .into_iter()
            .map(|r| r.with_note(format!("{} containers per round", args.count))),
        );
    }
    bench::emit(&rows, args.json.as_deref())
}
