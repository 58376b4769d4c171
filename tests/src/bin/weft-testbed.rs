//! `weft-testbed`: simulated hosts in network namespaces, by hand.
//! `scripts/testbed` builds and runs this.

use std::{
    io::Read,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Command, ExitCode, ExitStatus},
    sync::atomic::{AtomicBool, Ordering},
};

use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction, signal};
use testbed::{Block, Spec, Testbed};

/// Simulated hosts for weft: network namespaces joined by an underlay bridge.
///
/// Hosts are namespaces `tb-NAME-h1`, `tb-NAME-h2`, ... with address
/// 192.0.2.N/24 on `eth0` (198.51.100.N/24 behind a hop); containers are
/// empty namespaces `tb-NAME-hNcM`; the underlay is `tb-NAME-net`.
#[derive(Parser)]
#[command(name = "weft-testbed", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a testbed that stays until `destroy`.
    Create {
        /// Testbed name: letters, digits, underscores.
        name: String,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Create a throwaway testbed, run COMMAND on this machine with
    /// WEFT_TESTBED set to its name, then remove the testbed (also on Ctrl-C).
    Run {
        #[command(flatten)]
        spec: SpecArgs,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove testbeds: their namespaces, processes, rules and state.
    Destroy {
        /// Testbeds to remove.
        #[arg(required_unless_present = "all")]
        names: Vec<String>,
        /// Remove every testbed on this machine.
        #[arg(long)]
        all: bool,
    },
    /// List the testbeds on this machine.
    List {
        /// Only those no running process owns: made by hand, or left
        /// behind by a test that is gone.
        #[arg(long)]
        unowned: bool,
    },
    /// Show a testbed's nodes, addresses and blocks.
    Show { name: String },
    /// Run a command inside a node (net, rt, hN, hNcM); exits with its status.
    Exec {
        name: String,
        node: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Start a command in the background inside a node, logging to the
    /// testbed's state directory.
    Start {
        name: String,
        node: String,
        /// Name for this process, used by `stop` and `logs`.
        label: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Stop a process started with `start`.
    Stop {
        name: String,
        node: String,
        label: String,
    },
    /// Print the output of a process started with `start`.
    Logs {
        name: String,
        node: String,
        label: String,
    },
    /// Drop traffic between two hosts (both directions) in the underlay.
    Block {
        name: String,
        /// A host: N or hN.
        a: String,
        /// The other host.
        b: String,
        /// Drop only UDP to this destination port.
        #[arg(long, conflicts_with = "all")]
        udp_port: Option<u16>,
        /// Drop all IPv4 traffic, not only UDP.
        #[arg(long)]
        all: bool,
    },
    /// Remove every block between two hosts.
    Unblock { name: String, a: String, b: String },
    /// Remove testbeds whose test process died, and stray namespaces.
    Gc,
    /// Wait for standard input to close, then remove the testbed. Started by
    /// the test library so a test killed outright still cleans up.
    #[command(hide = true)]
    Reap { name: String },
}

#[derive(Args)]
struct SpecArgs {
    /// Number of hosts.
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Container namespaces per host.
    #[arg(long, default_value_t = 0)]
    containers: usize,
    /// MTU of every host's underlay link.
    #[arg(long)]
    mtu: Option<u32>,
    /// MTU of one host's link, as HOST=MTU; repeatable.
    #[arg(long = "host-mtu", value_parser = parse_host_mtu)]
    host_mtu: Vec<(usize, u32)>,
    /// Put a router between hosts 1..=K and the rest.
    #[arg(long, requires = "hop_mtu")]
    hop_after: Option<usize>,
    /// MTU of the router's link into the second group.
    #[arg(long, requires = "hop_after")]
    hop_mtu: Option<u32>,
    /// Add `out`, a host of the world outside the mesh (192.0.2.253).
    #[arg(long)]
    outside: bool,
}

impl SpecArgs {
    fn spec(&self) -> Spec {
        let mut spec = Spec::hosts(self.hosts).containers(self.containers);
        spec.mtu = self.mtu;
        spec.host_mtu.extend(self.host_mtu.iter().copied());
        if let (Some(after), Some(mtu)) = (self.hop_after, self.hop_mtu) {
            spec = spec.hop(after, mtu);
        }
        if self.outside {
            spec = spec.with_outside();
        }
        spec
    }
}

fn parse_host_mtu(s: &str) -> Result<(usize, u32), String> {
    let (host, mtu) = s.split_once('=').ok_or("expected HOST=MTU, e.g. 2=1400")?;
    Ok((
        parse_host(host)?,
        mtu.parse().map_err(|_| format!("bad MTU {mtu:?}"))?,
    ))
}

fn parse_host(s: &str) -> Result<usize, String> {
    s.trim_start_matches('h')
        .parse()
        .map_err(|_| format!("{s:?} is not a host (N or hN)"))
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft-testbed: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(cmd: Cmd) -> Res<ExitCode> {
    match cmd {
        Cmd::Create { name, spec } => {
            let tb = Testbed::create_persistent(&name, spec.spec())?;
            print!("{}", describe(&tb));
        }
        Cmd::Run { spec, command } => return run_throwaway(spec.spec(), &command),
        Cmd::Destroy { names, all } => {
            let names = if all { testbed::list() } else { names };
            for name in names {
                testbed::destroy(&name)?;
                println!("destroyed {name}");
            }
        }
        Cmd::List { unowned } => testbed::list()
            .iter()
            .filter(|name| !unowned || !testbed::owned_by_a_live_process(name))
            .for_each(|name| println!("{name}")),
        Cmd::Show { name } => print!("{}", describe(&Testbed::open(&name)?)),
        Cmd::Exec {
            name,
            node,
            command,
        } => {
            let ns = Testbed::open(&name)?.node(&node)?;
            let status = ns.command(&command).status()?;
            return Ok(exit_code(status));
        }
        Cmd::Start {
            name,
            node,
            label,
            command,
        } => {
            let tb = Testbed::open(&name)?;
            let ns = tb.node(&node)?;
            let pid = tb.start_detached(&ns, &label, &command)?;
            println!(
                "started {label} on {node} (pid {pid}); log: {}",
                tb.log_path(&ns, &label).display()
            );
        }
        Cmd::Stop { name, node, label } => {
            let tb = Testbed::open(&name)?;
            if !tb.stop_detached(&tb.node(&node)?, &label)? {
                eprintln!("{label} was not running on {node}");
            }
        }
        Cmd::Logs { name, node, label } => {
            let tb = Testbed::open(&name)?;
            let path = tb.log_path(&tb.node(&node)?, &label);
            print!(
                "{}",
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?
            );
        }
        Cmd::Block {
            name,
            a,
            b,
            udp_port,
            all,
        } => {
            let what = match (udp_port, all) {
                (Some(port), _) => Block::UdpPort(port),
                (None, true) => Block::All,
                (None, false) => Block::AllUdp,
            };
            Testbed::open(&name)?.block(parse_host(&a)?, parse_host(&b)?, what)?;
        }
        Cmd::Unblock { name, a, b } => {
            Testbed::open(&name)?.unblock(parse_host(&a)?, parse_host(&b)?)?;
        }
        Cmd::Gc => {
            for name in testbed::gc()? {
                println!("removed {name}");
            }
        }
        Cmd::Reap { name } => {
            // Ctrl-C in the terminal or a closing terminal must not stop the
            // reaper before it has done its job.
            for sig in [Signal::SIGINT, Signal::SIGHUP] {
                // SAFETY: SIG_IGN installs no handler code.
                unsafe { signal(sig, SigHandler::SigIgn) }?;
            }
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            testbed::destroy(&name)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Set by SIGINT while `run` is in charge; see [`run_throwaway`].
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn run_throwaway(spec: Spec, command: &[String]) -> Res<ExitCode> {
    // Ctrl-C reaches the command too (same process group); we only note it,
    // so we stay alive to remove the testbed. A handler, unlike SIG_IGN, is
    // reset by exec, so the command gets the default behaviour.
    let action = SigAction::new(
        SigHandler::Handler(note_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic.
    unsafe { sigaction(Signal::SIGINT, &action) }?;
    let tb = Testbed::create_owned("run", spec)?;
    eprint!("{}", describe(&tb));
    if INTERRUPTED.load(Ordering::SeqCst) {
        tb.destroy()?;
        return Ok(ExitCode::from(128 + Signal::SIGINT as u8));
    }
    let mut child = Command::new(&command[0]);
    child.args(&command[1..]).env("WEFT_TESTBED", tb.name());
    // SAFETY: prctl is async-signal-safe. The command dies with us rather
    // than outlive the testbed it works on.
    unsafe {
        child.pre_exec(|| Ok(nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?));
    }
    let mut child = child.spawn().map_err(|e| format!("{}: {e}", command[0]))?;
    let status = child.wait()?;
    tb.destroy()?;
    Ok(exit_code(status))
}

fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(sig)) => ExitCode::from(128 + sig as u8),
        _ => ExitCode::FAILURE,
    }
}

fn describe(tb: &Testbed) -> String {
    let spec = tb.spec();
    let mut out = format!("testbed {}\n", tb.name());
    out += &format!("  {:<6} {}\n", "net", tb.underlay().name());
    if let Some(hop) = spec.hop {
        let (a, b) = spec.router_addrs();
        out += &format!(
            "  {:<6} {}  {a} | {b} (mtu {} towards hosts {}..={})\n",
            "rt",
            tb.node("rt")
                .map(|n| n.name().to_string())
                .unwrap_or_default(),
            hop.mtu,
            hop.last_of_first_group + 1,
            spec.hosts
        );
    }
    if spec.outside {
        out += &format!(
            "  {:<6} {}  {} (outside the mesh)
",
            "out",
            tb.outside().name(),
            spec.outside_addr()
        );
    }
    for host in 1..=spec.hosts {
        let mtu = spec
            .link_mtu(host)
            .map(|m| format!(" mtu {m}"))
            .unwrap_or_default();
        out += &format!(
            "  h{host:<5} {}  {}{mtu}\n",
            tb.host(host).name(),
            tb.host_addr(host)
        );
        for c in 1..=spec.containers_per_host {
            out += &format!(
                "  {:<6} {}\n",
                format!("h{host}c{c}"),
                tb.container(host, c).name()
            );
        }
    }
    for rule in tb.blocks() {
        out += &format!("  block h{} <-> h{}: {:?}\n", rule.a, rule.b, rule.what);
    }
    out
}
