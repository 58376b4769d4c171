//! The mesh's DNS against dnsmasq (Debian's), on a 5-host testbed:
//!
//! - query throughput (dnsperf) and one-at-a-time latency p50/p99 for local
//!   names, from a container of host 1, against weft's server on host 1's
//!   gateway and dnsmasq on host 1's own address serving the same records
//!   with the same TTL, measured in alternation in each round;
//! - time from a registration on host 1 to an answer from the DNS server of
//!   every one of the 5 hosts (each asked every millisecond);
//! - memory per 10,000 names: the growth of the router's resident set when
//!   they are registered on it, and of a peer's that learns them by gossip,
//!   against the growth of dnsmasq's with the same records in its hosts file.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use clap::Parser;
use rand::seq::IndexedRandom as _;
use serde_json::json;
use testbed::{Background, Netns, Spec, Testbed, WeftHost};
use weft_api::Client;

#[derive(Parser)]
#[command(
    about = "DNS: throughput and latency against dnsmasq, registration to answer on 5 hosts, memory per 10,000 names"
)]
struct Args {
    /// Rounds of each measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each dnsperf run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Names both servers answer in the throughput and latency runs.
    #[arg(long, default_value_t = 100)]
    names: usize,
    /// Queries, one at a time, per latency run.
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Registrations timed to an answer on every host.
    #[arg(long, default_value_t = 10)]
    registrations: usize,
    /// Names registered for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    memory_names: usize,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

const HOSTS: usize = 5;
const DOMAIN: &str = "weft.local";

/// The address the benchmark's name `i` stands for (a documentation-free
/// test range, so nothing answers it).
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8)
}

/// A DNS query for the A record of `name`, recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + name.len() + 6);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Whether `reply` answers query `id` with no error and an answer.
fn answered(reply: &[u8], id: u16) -> bool {
    reply.len() >= 12
        && reply[..2] == id.to_be_bytes()
        && reply[2] & 0x80 != 0
        && reply[3] & 0x0f == 0
        && u16::from_be_bytes([reply[6], reply[7]]) >= 1
}

/// Asks `server` for `name` from `socket` and waits up to `wait` for the
/// answer; `Ok(true)` when it names an address.
fn ask(socket: &UdpSocket, server: SocketAddr, id: u16, name: &str) -> std::io::Result<bool> {
    socket.send_to(&query(id, name), server)?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        if from == server && buf[..2] == id.to_be_bytes() {
            return Ok(answered(&buf[..n], id));
        }
    }
}

/// Microseconds of each of `count` queries asked one at a time from
/// `from`, for names drawn from `names`.
fn latencies(
    from: &Netns,
    server: SocketAddr,
    names: &[String],
    count: usize,
) -> Result<Vec<f64>, String> {
    let names = names.to_vec();
    from.in_thread(move || -> Result<Vec<f64>, String> {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        let mut rng = rand::rng();
        (0..count)
            .map(|i| {
                let name = names.choose(&mut rng).expect("names");
                let t = Instant::now();
                match ask(&socket, server, i as u16, name) {
                    Ok(true) => Ok(t.elapsed().as_secs_f64() * 1e6),
                    Ok(false) => Err(format!("{server} has no address for {name}")),
                    Err(e) => Err(format!("{server} did not answer {name}: {e}")),
                }
            })
            .collect()
    })
    .map_err(|e| e.to_string())?
}

/// What one dnsperf run measured.
struct Load {
    /// Queries answered per second.
    rate: f64,
    /// The server's CPU time per answered query, in microseconds.
    cpu_us: f64,
}

/// dnsperf against `server` (process `pid`) from `from`, with the queries
/// in `file`; a run that lost more than 1% is an error.
fn dnsperf(
    from: &Netns,
    server: Ipv4Addr,
    pid: i32,
    file: &Path,
    seconds: u32,
) -> Result<Load, String> {
    let cpu = bench::cpu_seconds(pid);
    let out = from
        .run([
            "dnsperf",
            "-s",
            &server.to_string(),
            "-d",
            &file.display().to_string(),
            "-l",
            &seconds.to_string(),
            "-q",
            "64",
        ])
        .map_err(|e| format!("dnsperf (apt-get install dnsperf): {e}"))?;
    let field = |label: &str| -> Option<&str> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(str::trim)
    };
    let qps: f64 = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no rate in dnsperf's output: {out}"))?;
    let lost: f64 = field("Queries lost:")
        .and_then(|v| v.split('(').nth(1)?.split('%').next()?.parse().ok())
        .unwrap_or(100.0);
    if lost > 1.0 {
        return Err(format!("{server} lost {lost}% of dnsperf's queries: {out}"));
    }
    let completed: f64 = field("Queries completed:")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no count in dnsperf's output: {out}"))?;
    Ok(Load {
        rate: qps,
        cpu_us: (bench::cpu_seconds(pid) - cpu) * 1e6 / completed.max(1.0),
    })
}

/// dnsmasq in `ns` on `addr`, answering the first `count` names (and only
/// them: nothing is forwarded) with weft's TTL.
fn dnsmasq(ns: &Netns, addr: Ipv4Addr, count: usize, dir: &Path) -> Result<Background, String> {
    let hosts = dir.join(format!("hosts-{count}"));
    let mut text = String::new();
    for i in 0..count {
        let _ = writeln!(text, "{} name{i}.{DOMAIN}", address(i));
    }
    std::fs::write(&hosts, text).map_err(|e| e.to_string())?;
    let child = ns
        .spawn(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                &format!("--addn-hosts={}", hosts.display()),
                &format!("--local=/{DOMAIN}/"),
                &format!("--listen-address={addr}"),
                "--bind-interfaces",
                "--local-ttl=1",
                "--user=root",
                "--group=root",
                "--pid-file=",
            ],
            &dir.join(format!("dnsmasq-{count}.log")),
        )
        .map_err(|e| format!("dnsmasq (apt-get install dnsmasq-base): {e}"))?;
    // Up once it answers; its resident set is then what the records cost.
    let server = SocketAddr::from((addr, 53));
    let name = format!("name0.{DOMAIN}");
    testbed::eventually("dnsmasq to answer", Duration::from_secs(10), || {
        ns.in_thread({
            let name = name.clone();
            move || {
                let s = UdpSocket::bind("0.0.0.0:0").ok()?;
                s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
                ask(&s, server, 1, &name).ok()
            }
        })
        .ok()
        .flatten()
        .map(|_| ())
        .ok_or_else(|| "no answer yet".to_string())
    });
    Ok(child)
}

fn add_name(on: &WeftHost, name: &str, addr: Ipv4Addr) -> Result<(), String> {
    Client::new(on.run_dir.join("weft.sock"))
        .post(
            "/dns/add",
            &json!({"address": addr, "names": [name]}).to_string(),
        )
        .map(|_| ())
        .map_err(|e| format!("dns-add {name}: {e}"))
}

/// Milliseconds from registering `name` on `routers[0]` until the DNS
/// server of every host answers it.
fn registration_to_answer(
    routers: &[WeftHost],
    gateways: &[Ipv4Addr],
    name: &str,
    addr: Ipv4Addr,
) -> Result<f64, String> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(routers.len() + 1));
    let fqdn = format!("{name}.{DOMAIN}");
    let askers = routers
        .iter()
        .zip(gateways)
        .map(|(r, gw)| {
            let (barrier, fqdn, server) = (barrier.clone(), fqdn.clone(), (*gw, 53).into());
            r.netns
                .spawn_thread(move || -> Result<Instant, String> {
                    let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_millis(20)))
                        .map_err(|e| e.to_string())?;
                    barrier.wait();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    for id in 0u16.. {
                        if matches!(ask(&s, server, id, &fqdn), Ok(true)) {
                            return Ok(Instant::now());
                        }
                        if Instant::now() > deadline {
                            return Err(format!("{server} never answered {fqdn}"));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    unreachable!("u16 ids outlast the deadline")
                })
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    barrier.wait();
    let t0 = Instant::now();
    add_name(&routers[0], name, addr)?;
    let mut last = t0;
    for asker in askers {
        let at = asker
            .join()
            .map_err(|_| "an asking thread panicked".to_string())?
            .map_err(|e| e.to_string())??;
        last = last.max(at);
    }
    Ok((last - t0).as_secs_f64() * 1e3)
}

fn rss(pid: i32) -> f64 {
    bench::memory_kib(pid, "VmRSS")
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tb = Testbed::create_owned("benchdns", Spec::hosts(HOSTS).containers(1))
        .map_err(|e| e.to_string())?;
    let (routers, gateways, _) = tb
        .exposed_mesh(HOSTS, &["--resolv-conf", "/dev/null"], "userspace")
        .map_err(|e| e.to_string())?;
    let dir = tb.state_dir().join("dns");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let host1 = tb.host(1);
    let client = tb.container(1, 1);
    let own = tb.host_addr(1);

    eprintln!("registering {} names on host 1", args.names);
    let names: Vec<String> = (0..args.names)
        .map(|i| format!("name{i}.{DOMAIN}"))
        .collect();
    for i in 0..args.names {
        add_name(&routers[0], &format!("name{i}"), address(i))?;
    }
    let mut file = String::new();
    let mut rng = rand::rng();
    for _ in 0..10_000 {
        let _ = writeln!(file, "{} A", names.choose(&mut rng).expect("names"));
    }
    let queries = dir.join("queries.txt");
    std::fs::write(&queries, file).map_err(|e| e.to_string())?;
    let served = dnsmasq(&host1, own, args.names, &dir)?;
    let weft = SocketAddr::from((gateways[0], 53));
    let theirs = SocketAddr::from((own, 53));

    let weft_pid = routers[0].pid().ok_or("host 1's router has no pid")?;
    let (mut weft_load, mut dnsmasq_load) = (Vec::new(), Vec::new());
    let (mut weft_lat, mut dnsmasq_lat) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}: dnsperf and latency", args.rounds);
        weft_load.push(dnsperf(
            &client,
            gateways[0],
            weft_pid,
            &queries,
            args.seconds,
        )?);
        dnsmasq_load.push(dnsperf(
            &client,
            own,
            served.pid() as i32,
            &queries,
            args.seconds,
        )?);
        weft_lat.push(latencies(&client, weft, &names, args.queries)?);
        dnsmasq_lat.push(latencies(&client, theirs, &names, args.queries)?);
    }
    drop(served);

    eprintln!(
        "{} registrations on a {HOSTS}-host mesh",
        args.registrations
    );
    let spread = (0..args.registrations)
        .map(|k| {
            registration_to_answer(
                &routers,
                &gateways,
                &format!("fresh{k}"),
                address(60_000 + k),
            )
        })
        .collect::<Result<Vec<f64>, String>>()?;

    eprintln!("memory: {} names on host 1", args.memory_names);
    let pids: Vec<i32> = routers[..2]
        .iter()
        .map(|r| r.pid().ok_or("a router has no pid".to_string()))
        .collect::<Result<_, _>>()?;
    let before: Vec<f64> = pids.iter().map(|p| rss(*p)).collect();
    let t = Instant::now();
    for i in 0..args.memory_names {
        add_name(&routers[0], &format!("mem{i}"), address(i))?;
        if i % 2000 == 1999 {
            eprintln!("  {} names in {:.0} s", i + 1, t.elapsed().as_secs_f64());
        }
    }
    let last = format!("mem{}", args.memory_names - 1);
    testbed::eventually("host 2 to learn them", Duration::from_secs(60), || {
        let found = routers[1].run(&["dns-lookup", &last]).unwrap_or_default();
        (!found.trim().is_empty())
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    std::thread::sleep(Duration::from_secs(1));
    let per = |kib: f64| kib * 10_000.0 / args.memory_names as f64;
    let grown: Vec<f64> = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| per(rss(*p) - b))
        .collect();
    let empty = dnsmasq(&host1, own, 0, &dir)?;
    let empty_rss = rss(empty.pid() as i32);
    drop(empty);
    let full = dnsmasq(&host1, own, args.memory_names, &dir)?;
    let dnsmasq_grown = per(rss(full.pid() as i32) - empty_rss);
    drop(full);
    tb.destroy().map_err(|e| e.to_string())?;

    let same = "dnsmasq, same records and TTL, same host";
    let of = |loads: &[Load], f: fn(&Load) -> f64| loads.iter().map(f).collect::<Vec<_>>();
    let load = format!(
        "dnsperf {} s, 64 in flight, {} names",
        args.seconds, args.names
    );
    let mut rows = vec![
        bench::Row::new(
            "dns",
            "weft, local names",
            "throughput",
            "q/s",
            &of(&weft_load, |l| l.rate),
        )
        .against_paired(&of(&dnsmasq_load, |l| l.rate), same)
        .with_target(">= 1")
        .with_note(&load),
        bench::Row::new(
            "dns",
            "weft, local names",
            "server CPU per query",
            "µs",
            &of(&weft_load, |l| l.cpu_us),
        )
        .against_paired(&of(&dnsmasq_load, |l| l.cpu_us), same)
        .with_note(format!("{load}; the whole router's CPU time")),
    ];
    rows.extend(
        bench::latency_rows(
            "dns",
            "weft, local names",
            "µs",
            &weft_lat,
            (&dnsmasq_lat, same),
        )
        .into_iter()
        .map(|r| r.with_note(format!("{} queries one at a time", args.queries))),
    );
    rows.push(
        bench::Row::new(
            "dns",
            &format!("registration on 1 of {HOSTS} hosts"),
            "answer on every host",
            "ms",
            &spread,
        )
        .with_target("<= 1000")
        .with_note(format!(
            "{} registrations; every host's server asked every 1 ms",
            args.registrations
        )),
    );
    for (who, kib) in [
        ("weft, registering router", grown[0]),
        ("weft, peer learning by gossip", grown[1]),
    ] {
        rows.push(
            bench::Row::new("dns", who, "memory per 10,000 names", "KiB", &[kib])
                .against(
                    &[dnsmasq_grown],
                    "dnsmasq with the same names in its hosts file",
                )
                .with_note(format!(
                    "resident set growth, measured once with {} names",
                    args.memory_names
                )),
        );
    }
    bench::emit(&rows, args.json.as_deref())
}
