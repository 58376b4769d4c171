//! The `weft` command line. Every command but `router` talks to a running
//! router through its API; `launch` starts one.

pub mod args;
mod condition;
pub use condition::condition;
mod top;
pub use top::top;
mod synthetic;
pub use synthetic::synthetic;

/// `weft ui`: the page's address, from the router (the unix socket is
/// root's, and so is the token the address carries).
pub fn ui(dirs: &DirArgs, read_only: bool) -> Result<()> {
    let url = client(dirs).get("/ui/url")?;
    let url = url.trim();
    if read_only {
        println!("{}", url.split('#').next().unwrap_or(url));
    } else {
        println!("{url}");
        eprintln!(
            "Open it in a browser on this host (or through an SSH tunnel to its port). The address carries the API token: share it only with who may change the mesh; `weft ui --read-only` gives one that only shows."
        );
    }
    Ok(())
}
pub mod reset;
pub mod setup_cni;

use std::{
    io::{Read, Seek, SeekFrom},
    os::unix::process::CommandExt,
    process::{Command as Process, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use weft_api::{Client, ClientError};

use crate::{
    api::report::Report,
    cli::args::{DirArgs, IpamWhat, RouterArgs},
    daemon::paths::{Paths, read_pid},
};

/// How long `weft launch` waits for the router's API before giving up.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn client(dirs: &DirArgs) -> Client {
    Client::new(Paths::new(dirs).socket())
}

/// The last `lines` lines written to `path` from `from` (this run's), or
/// the error line, if the run ended with one: that is what says why.
fn tail(path: &std::path::Path, from: u64, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(from.max(len.saturating_sub(8192))));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `weft launch`: starts `weft router` with the same arguments in the
/// background, then waits until its API answers or it dies, and says why.
pub fn launch(args: &RouterArgs, argv: &[String]) -> Result<()> {
    let paths = Paths::new(&args.dirs);
    let api = client(&args.dirs);
    if let Ok(body) = api.get("/report") {
        let report: Report =
            serde_json::from_str(&body).context("reading the running router's report")?;
        bail!(
            "a weft router is already running here: {} ({}); stop it with `weft stop`",
            report.router.name,
            report.router.nickname
        );
    }
    std::fs::create_dir_all(&paths.run_dir).with_context(|| {
        format!(
            "cannot create the run directory {} (run as root?)",
            paths.run_dir.display()
        )
    })?;
    // Appended to: the last words of a router that crashed stay.
    let log = crate::daemon::logfile::open(&paths.log_file(), crate::daemon::logfile::CAP)
        .with_context(|| format!("cannot open {}", paths.log_file().display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut router_argv = without_password(&argv[1..]);
    let at = router_argv
        .iter()
        .position(|a| a == "launch")
        .context("no launch subcommand")?;
    router_argv[at] = "router".into();
    if router_argv.len() != argv.len() - 1 {
        eprintln!(
            "weft: a password on the command line shows in the process list while this command runs; prefer --password-file or WEFT_PASSWORD (the router gets it from its environment, never from its arguments)"
        );
    }
    let exe = std::env::current_exe().context("cannot find the weft binary")?;
    let mut command = Process::new(exe);
    // The environment of a root process is root's to read; its arguments
    // are everyone's.
    if let Some(password) = &args.password {
        command.env("WEFT_PASSWORD", password);
    }
    command
        .env(crate::daemon::logfile::ENV, paths.log_file())
        .args(&router_argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the router from our
    // terminal and session so it outlives this command.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().context("cannot start the router")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the router exited ({status}) before it was ready:\n{}",
                tail(&paths.log_file(), log_start, 5)
            );
        }
        if let Ok(body) = api.get("/report") {
            let report: Report = serde_json::from_str(&body)?;
            println!(
                "weft router {} ({}) started, pid {}; log {}",
                report.router.name,
                report.router.nickname,
                child.id(),
                paths.log_file().display()
            );
            return Ok(());
        }
        if started.elapsed() > LAUNCH_TIMEOUT {
            let _ = child.kill();
            bail!(
                "the router did not answer within {LAUNCH_TIMEOUT:?}; its log says:\n{}",
                tail(&paths.log_file(), log_start, 5)
            );
        }
        // A router answers within tens of milliseconds; polling finely
        // returns to the user (and to scripts) as soon as it does.
        thread::sleep(Duration::from_millis(5));
    }
}

/// The arguments without `--password VALUE` or `--password=VALUE`.
fn without_password(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in argv {
        if skip {
            skip = false;
        } else if a == "--password" {
            skip = true;
        } else if !a.starts_with("--password=") {
            out.push(a.clone());
        }
    }
    out
}

fn alive(pid: i32) -> bool {
    crate::daemon::paths::process_running(pid)
}

/// `weft stop`: asks the router to stop (or signals it if its API does not
/// answer) and waits until it is gone. Stopping a stopped router is fine.
pub fn stop(dirs: &DirArgs) -> Result<bool> {
    let paths = Paths::new(dirs);
    let pid = read_pid(&paths.pid_file()).filter(|&p| alive(p));
    match client(dirs).post("/stop", "") {
        Ok(_) => {}
        Err(ClientError::NotRunning(_)) => match pid {
            Some(pid) => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .with_context(|| format!("cannot signal the router (pid {pid})"))?;
            }
            None => return Ok(false),
        },
        Err(e) => return Err(e.into()),
    }
    let Some(pid) = pid else { return Ok(true) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("the router (pid {pid}) did not stop within {STOP_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// Sends peers to `/connect` or `/forget`.
pub fn peers(dirs: &DirArgs, path: &str, peers: &[String], replace: bool) -> Result<()> {
    let body = serde_json::json!({ "peers": peers, "replace": replace });
    client(dirs).post(path, &body.to_string())?;
    Ok(())
}

pub fn get(dirs: &DirArgs, path: &str) -> Result<String> {
    Ok(client(dirs).get(path)?)
}

pub fn post(dirs: &DirArgs, path: &str, body: &serde_json::Value) -> Result<String> {
    Ok(client(dirs).post(path, &body.to_string())?)
}

/// `weft ipam ...`: prints the address (allocate, claim) or what was
/// released.
pub fn ipam(dirs: &DirArgs, what: IpamWhat) -> Result<()> {
    let (path, body) = match what {
        IpamWhat::Show => {
            print!("{}", get(dirs, "/ipam")?);
            return Ok(());
        }
        IpamWhat::Allocate { id, subnet } => (
            "/ipam/allocate",
            serde_json::json!({ "id": id, "subnet": subnet }),
        ),
        IpamWhat::Claim {
            id,
            address,
            subnet,
        } => (
            "/ipam/allocate",
            serde_json::json!({ "id": id, "address": address, "subnet": subnet }),
        ),
        IpamWhat::Release { id, address } => (
            "/ipam/release",
            serde_json::json!({ "id": id, "address": address }),
        ),
        IpamWhat::Reset { detach, force } => {
            if force {
                bail!(
                    "--force is gone: it let IPAM hand out addresses containers still use. Use --detach to take this host's containers off the network first"
                );
            }
            ("/ipam/reset", serde_json::json!({ "detach": detach }))
        }
    };
    let answer = post(dirs, path, &body)?;
    match serde_json::from_str::<serde_json::Value>(&answer) {
        Ok(v) if v["address"].is_string() => println!("{}", v["address"].as_str().unwrap_or("")),
        Ok(v) if v["released"].is_array() => {
            for a in v["released"].as_array().into_iter().flatten() {
                println!("{}", a.as_str().unwrap_or_default());
            }
        }
        _ => print!("{answer}"),
    }
    Ok(())
}

pub fn version(dirs: &DirArgs) -> Result<()> {
    println!("weft {}", crate::VERSION);
    if let Ok(body) = client(dirs).get("/report") {
        let report: Report = serde_json::from_str(&body)?;
        println!(
            "router {} (running, {})",
            report.router.version, report.router.name
        );
    }
    Ok(())
}

/// `weft attach ADDR/CIDR... TARGET` and `weft detach [ADDR/CIDR...] TARGET`.
pub fn attach(
    dirs: &DirArgs,
    path: &str,
    args: &[String],
    mut extra: serde_json::Value,
) -> Result<()> {
    let (target, addresses) = args.split_last().context("no target given")?;
    extra["target"] = serde_json::json!(target);
    extra["addresses"] = serde_json::json!(addresses);
    let body = extra;
    let answer = client(dirs).post(path, &body.to_string())?;
    // Attach prints the container's addresses, detach those it gave back.
    let key = if path == "/attach" {
        "addresses"
    } else {
        "released"
    };
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .with_context(|| format!("the router's answer is not JSON: {answer}"))?;
    for a in answer[key].as_array().into_iter().flatten() {
        println!("{}", a.as_str().unwrap_or_default());
    }
    Ok(())
}

/// `weft policy ...`.
pub fn policy(dirs: &DirArgs, what: args::PolicyWhat) -> Result<()> {
    use args::PolicyWhat;
    match what {
        PolicyWhat::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            print!("{}", client(dirs).post("/policy/apply", &text)?);
        }
        PolicyWhat::List => print!("{}", client(dirs).get("/policy/list")?),
        PolicyWhat::Delete { names } => {
            let body = serde_json::json!({ "names": names });
            print!(
                "{}",
                client(dirs).post("/policy/delete", &body.to_string())?
            );
        }
        PolicyWhat::Namespace { name, labels } => {
            let body = serde_json::json!({ "name": name, "labels": labels });
            print!(
                "{}",
                client(dirs).post("/policy/namespace", &body.to_string())?
            );
        }
        PolicyWhat::Check { from, to, port } => {
            let (number, protocol) = port.split_once('/').unwrap_or((&port, "tcp"));
            let number: u16 = number
                .parse()
                .with_context(|| format!("{port:?}: give PORT or PORT/PROTOCOL, like 80/tcp"))?;
            let body =
                serde_json::json!({ "from": from, "to": to, "port": number, "protocol": protocol });
            let verdict = client(dirs).post("/policy/check", &body.to_string())?;
            print!("{verdict}");
            if !verdict.starts_with("allowed") {
                anyhow::bail!("the connection would be denied");
            }
        }
    }
    Ok(())
}

/// `weft expose` and `weft hide`: prints the addresses the host has (or
/// gave up) on the bridge.
pub fn gateway(dirs: &DirArgs, path: &str, addresses: &[String]) -> Result<()> {
    let body = serde_json::json!({ "addresses": addresses });
    let answer = client(dirs).post(path, &body.to_string())?;
    let list: Vec<String> = serde_json::from_str(&answer)
        .with_context(|| format!("the router's answer is not a list of addresses: {answer}"))?;
    for a in list {
        println!("{a}");
    }
    Ok(())
}

/// `weft ps`: name, MAC, addresses, a line per container; the host's
/// gateway first.
pub fn ps(dirs: &DirArgs) -> Result<()> {
    let list: Vec<serde_json::Value> = serde_json::from_str(&client(dirs).get("/ps")?)?;
    let report: Report = serde_json::from_str(&client(dirs).get("/report")?)?;
    if !report.host.gateway.is_empty() {
        println!(
            "{} - {}",
            crate::netdev::gateway::OWNER,
            report.host.gateway.join(" ")
        );
    }
    for a in list {
        let addrs: Vec<&str> = a["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str())
            .collect();
        println!(
            "{} {} {}",
            a["id"].as_str().or(a["target"].as_str()).unwrap_or("-"),
            a["mac"].as_str().filter(|m| !m.is_empty()).unwrap_or("-"),
            addrs.join(" ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_never_gets_the_password_in_its_arguments() {
        let argv: Vec<String> = [
            "launch",
            "--password",
            "s3cret",
            "--nickname",
            "h1",
            "--password=other",
            "192.0.2.1",
        ]
        .map(String::from)
        .to_vec();
        let out = without_password(&argv);
        assert_eq!(out, ["launch", "--nickname", "h1", "192.0.2.1"]);
        assert!(
            out.iter()
                .all(|a| !a.contains("s3cret") && !a.contains("other"))
        );
    }
}
