//! Network policy's cost and speed on the host kernel, with 300 containers
//! on three simulated hosts known to every router:
//!
//! - qperf tcp_bw and udp_lat between a container on host 1 and one on
//!   host 2 while 100 policies select the server (one of them allows the
//!   client), against the same with no policy, in alternating rounds;
//! - the time from `POST /policy/apply` of an allow rule on host 1 until
//!   it is enforced on every host: on each host a prober tries a
//!   connection to an isolated container of the same host every
//!   millisecond, and the round's figure is the last host's first success.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use testbed::{Netns, Spec, Testbed, WeftHost};
use weft_api::Client;

#[derive(Parser)]
#[command(
    about = "Network policy: qperf under 100 policies against none; policy change to enforcement on every host"
)]
struct Args {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per qperf test.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Containers in the mesh (a third per host).
    #[arg(long, default_value_t = 300)]
    pods: usize,
    /// Policy changes timed.
    #[arg(long, default_value_t = 20)]
    changes: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Five: the testbed holds at most 64 containers per host.
const HOSTS: usize = 5;

fn socket(r: &WeftHost) -> std::path::PathBuf {
    r.run_dir.join("weft.sock")
}

fn apply(r: &WeftHost, yaml: &str) -> Result<(), String> {
    Client::new(socket(r))
        .post("/policy/apply", yaml)
        .map(|_| ())
        .map_err(|e| format!("policy apply: {e}"))
}

fn delete(r: &WeftHost, names: &[String]) -> Result<(), String> {
    let body = serde_json::json!({ "names": names }).to_string();
    Client::new(socket(r))
        .post("/policy/delete", &body)
        .map(|_| ())
        .map_err(|e| format!("policy delete: {e}"))
}

/// Waits until every router lists `count` policies.
fn settled(routers: &[WeftHost], count: usize) {
    for r in routers {
        testbed::eventually("the policies everywhere", Duration::from_secs(30), || {
            let n = r.policy_ids().map_err(|e| e.to_string())?.len();
            (n == count).then_some(()).ok_or(format!("{n} listed"))
        });
    }
    // Compiled and written right after the records change; a moment for
    // the table.
    std::thread::sleep(Duration::from_millis(500));
}

fn policy(name: &str, selector: &str, from: &str, ports: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: bench}}\nspec:\n  podSelector: {{matchLabels: {{{selector}}}}}\n  ingress:\n  - from: [{from}]\n{ports}"
    )
}

/// Milliseconds from the change until every prober connected (or, with
/// `until_denied`, until every prober's try failed).
fn time_change(
    probers: &[(Netns, Ipv4Addr)],
    change: impl FnOnce() -> Result<(), String>,
    until_denied: bool,
) -> Result<f64, String> {
    let barrier = Arc::new(Barrier::new(probers.len() + 1));
    let handles = probers
        .iter()
        .map(|(ns, target)| {
            let (barrier, at) = (barrier.clone(), SocketAddr::from((*target, 80)));
            ns.spawn_thread(move || {
                barrier.wait();
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    let ok = TcpStream::connect_timeout(&at, Duration::from_millis(5)).is_ok();
                    if ok != until_denied {
                        return Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                None
            })
            .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    barrier.wait();
    let t0 = Instant::now();
    change()?;
    let mut last = t0;
    for h in handles {
        let at = h
            .join()
            .map_err(|_| "a prober panicked".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("a host never enforced the change")?;
        last = last.max(at);
    }
    Ok((last - t0).as_secs_f64() * 1e3)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let per_host = args.pods.div_ceil(HOSTS).max(3);
    let tb = Testbed::create_owned("benchpol", Spec::hosts(HOSTS).containers(per_host))
        .map_err(|e| e.to_string())?;
    let routers = tb
        .connected_mesh(HOSTS, &["--resolv-conf", "/dev/null"], "userspace")
        .map_err(|e| e.to_string())?;
    eprintln!("attaching {} containers", per_host * HOSTS);
    // Container 1: qperf client (host 1) and server (host 2); 2: the
    // isolated target of each host; 3: its prober; the rest fill.
    let mut addr = vec![vec![Ipv4Addr::UNSPECIFIED; per_host + 1]; HOSTS + 1];
    for (h, on_host) in addr.iter_mut().enumerate().skip(1) {
        for (c, slot) in on_host.iter_mut().enumerate().skip(1) {
            let role = match (h, c) {
                (1, 1) => "client".to_string(),
                (2, 1) => "server".to_string(),
                (_, 2) => "target".to_string(),
                (_, 3) => "prober".to_string(),
                _ => "filler".to_string(),
            };
            let ns = tb.container(h, c);
            let label = format!("role={role}");
            let out = routers[h - 1]
                .run(&[
                    "attach",
                    "--namespace",
                    "bench",
                    "--label",
                    &label,
                    ns.name(),
                ])
                .map_err(|e| e.to_string())?;
            *slot = out
                .trim()
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or(format!("attach printed {out:?}"))?;
        }
    }

    // Part 1: the data path under 100 policies.
    let (client, server) = (tb.container(1, 1), tb.container(2, 1));
    let _qperf = tb
        .spawn(&server, "qperf", ["qperf"])
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let mut hundred = String::new();
    let mut names = Vec::new();
    for i in 0..99 {
        let name = format!("p{i}");
        let from = format!(
            "{{ipBlock: {{cidr: 198.18.{}.{}/32}}}}",
            i / 250,
            i % 250 + 1
        );
        let _ = writeln!(
            hundred,
            "{}\n---",
            policy(
                &name,
                "role: server",
                &from,
                &format!("    ports: [{{port: {}}}]\n", 1000 + i)
            )
        );
        names.push(format!("bench/{name}"));
    }
    hundred.push_str(&policy(
        "p99",
        "role: server",
        "{podSelector: {matchLabels: {role: client}}}",
        "",
    ));
    names.push("bench/p99".into());
    let server_addr = addr[2][1].to_string();
    let (mut bw, mut lat) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for round in 1..=args.rounds {
        eprintln!(
            "round {round}/{}: qperf with none, then with 100 policies",
            args.rounds
        );
        bw.0.push(bench::qperf(&client, &server_addr, "tcp_bw", args.seconds)?);
        lat.0.push(bench::qperf(
            &client,
            &server_addr,
            "udp_lat",
            args.seconds,
        )?);
        apply(&routers[0], &hundred)?;
        settled(&routers, 100);
        bw.1.push(bench::qperf(&client, &server_addr, "tcp_bw", args.seconds)?);
        lat.1.push(bench::qperf(
            &client,
            &server_addr,
            "udp_lat",
            args.seconds,
        )?);
        delete(&routers[0], &names)?;
        settled(&routers, 0);
    }

    // Part 2: a change to enforcement on every host.
    let stop = Arc::new(AtomicBool::new(false));
    for h in 1..=HOSTS {
        testbed::netpol::tcp_acceptor(
            &tb.container(h, 2),
            80,
            stop.clone(),
            Duration::from_micros(200),
        )
        .map_err(|e| e.to_string())?;
    }
    let probers: Vec<(Netns, Ipv4Addr)> = (1..=HOSTS)
        .map(|h| (tb.container(h, 3), addr[h][2]))
        .collect();
    apply(
        &routers[0],
        &policy(
            "isolate",
            "role: target",
            "{ipBlock: {cidr: 198.18.255.255/32}}",
            "",
        ),
    )?;
    settled(&routers, 1);
    let allow = policy(
        "allow",
        "role: target",
        "{podSelector: {matchLabels: {role: prober}}}",
        "",
    );
    let mut spread = Vec::new();
    for n in 1..=args.changes {
        let took = time_change(&probers, || apply(&routers[0], &allow), false)?;
        eprintln!(
            "change {n}/{}: enforced everywhere in {took:.1} ms",
            args.changes
        );
        spread.push(took);
        time_change(
            &probers,
            || delete(&routers[0], &["bench/allow".to_string()]),
            true,
        )?;
    }
    stop.store(true, Ordering::Relaxed);
    tb.destroy().map_err(|e| e.to_string())?;

    let none = "no policy, same containers, same run";
    let note = format!("{} s per test, alternating rounds", args.seconds);
    let mut rows = vec![
        bench::Row::new(
            "policy",
            "100 policies on the server",
            "tcp_bw",
            "bytes/s",
            &bw.1,
        )
        .against_paired(&bw.0, none)
        .with_target(">= 0.95")
        .with_note(&note),
        bench::Row::new(
            "policy",
            "100 policies on the server",
            "udp_lat",
            "µs",
            &lat.1,
        )
        .against_paired(&lat.0, none)
        .with_target("<= 1.05")
        .with_note(&note),
    ];
    for (metric, p) in [("p50", 0.5), ("p99", 0.99)] {
        let mut row = bench::Row::new(
            "policy",
            &format!("{} containers on {HOSTS} hosts", per_host * HOSTS),
            &format!("change to enforcement on every host, {metric}"),
            "ms",
            &[bench::percentile(&spread, p)],
        )
        .with_note(format!(
            "{} changes; each host probed every 1 ms",
            args.changes
        ));
        if metric == "p99" {
            row = row.with_target("<= 1000");
        }
        rows.push(row);
    }
    bench::emit(&rows, args.json.as_deref())
}
