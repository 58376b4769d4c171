use std::process::ExitCode;

use clap::Parser;
use weft_router::{
    cli::{
        self,
        args::{Cli, Command, DpWhat},
    },
    daemon,
};

fn run(command: Command, argv: &[String]) -> anyhow::Result<()> {
    match command {
        Command::Launch(args) => cli::launch(&args, argv),
        Command::Router(args) => daemon::run(args),
        Command::Stop(dirs) => {
            if !cli::stop(&dirs)? {
                eprintln!(
                    "no weft router is running with run directory {}",
                    dirs.run_dir.display()
                );
            }
            Ok(())
        }
        Command::Reset { detach, dirs } => cli::reset::run(&dirs, detach),
        Command::Status { what, dirs } => {
            print!("{}", cli::get(&dirs, what.map_or("/status", |w| w.path()))?);
            Ok(())
        }
        Command::Report(dirs) => {
            print!("{}", cli::get(&dirs, "/report")?);
            Ok(())
        }
        Command::Connect {
            peers,
            replace,
            dirs,
        } => cli::peers(&dirs, "/connect", &peers, replace),
        Command::Forget { peers, dirs } => cli::peers(&dirs, "/forget", &peers, false),
        Command::Version(dirs) => cli::version(&dirs),
        Command::Attach {
            args,
            names,
            namespace,
            labels,
            ports,
            dirs,
        } => {
            let extra = serde_json::json!({
                "names": names, "namespace": namespace, "labels": labels, "ports": ports,
            });
            cli::attach(&dirs, "/attach", &args, extra)
        }
        Command::Detach { args, dirs } => {
            cli::attach(&dirs, "/detach", &args, serde_json::json!({}))
        }
        Command::Policy { what, dirs } => cli::policy(&dirs, what),
        Command::DnsAdd {
            address,
            names,
            dirs,
        } => {
            let body = serde_json::json!({ "address": address, "names": names });
            print!("{}", cli::post(&dirs, "/dns/add", &body)?);
            Ok(())
        }
        Command::DnsRemove {
            address,
            names,
            dirs,
        } => {
            let body = serde_json::json!({ "address": address, "names": names });
            print!("{}", cli::post(&dirs, "/dns/remove", &body)?);
            Ok(())
        }
        Command::DnsLookup { name, dirs } => {
            let body = serde_json::json!({ "name": name });
            print!("{}", cli::post(&dirs, "/dns/lookup", &body)?);
            Ok(())
        }
        Command::DnsArgs(dirs) => {
            print!("{}", cli::get(&dirs, "/dns/args")?);
            Ok(())
        }
        Command::Ps(dirs) => cli::ps(&dirs),
        Command::Expose { addresses, dirs } => cli::gateway(&dirs, "/expose", &addresses),
        Command::Hide { addresses, dirs } => cli::gateway(&dirs, "/hide", &addresses),
        Command::Dp { what, dirs } => {
            let path = match what {
                DpWhat::Show => "/dp",
                DpWhat::Flows => "/dp/flows",
            };
            print!("{}", cli::get(&dirs, path)?);
            Ok(())
        }
        Command::Rmpeer { peer, dirs } => {
            let body = serde_json::json!({ "peer": peer });
            print!("{}", cli::post(&dirs, "/ipam/rmpeer", &body)?);
            Ok(())
        }
        Command::Ipam { what, dirs } => cli::ipam(&dirs, what),
        Command::SetupCni(args) => cli::setup_cni::run(&args),
        Command::Condition(args) => cli::condition(&args),
        Command::Top(args) => cli::top(&args),
        Command::Synthetic(args) => cli::synthetic(&args),
        Command::Ui { read_only, dirs } => cli::ui(&dirs, read_only),
    }
}

/// Commands that take something away: a typo is never pointed at them.
const DESTRUCTIVE: [&str; 8] = [
    "reset",
    "rmpeer",
    "stop",
    "forget",
    "hide",
    "detach",
    "release",
    "dns-remove",
];

/// clap's error, without a "did you mean" that names a destructive
/// command (`weft prime` suggested `rmpeer`).
fn without_destructive_suggestion(e: clap::Error) -> clap::Error {
    use clap::{
        CommandFactory,
        error::{ContextKind, ContextValue, ErrorKind},
    };
    let suggests_destructive = matches!(
        e.get(ContextKind::SuggestedSubcommand),
        Some(ContextValue::Strings(s)) if s.iter().any(|s| DESTRUCTIVE.contains(&s.as_str()))
    ) || matches!(
        e.get(ContextKind::SuggestedSubcommand),
        Some(ContextValue::String(s)) if DESTRUCTIVE.contains(&s.as_str())
    );
    if e.kind() != ErrorKind::InvalidSubcommand || !suggests_destructive {
        return e;
    }
    let mut plain = clap::Error::new(ErrorKind::InvalidSubcommand).with_cmd(&Cli::command());
    if let Some(typed) = e.get(ContextKind::InvalidSubcommand) {
        plain.insert(ContextKind::InvalidSubcommand, typed.clone());
    }
    if let Some(usage) = e.get(ContextKind::Usage) {
        plain.insert(ContextKind::Usage, usage.clone());
    }
    plain
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cli = Cli::try_parse().unwrap_or_else(|e| without_destructive_suggestion(e).exit());
    match run(cli.command, &argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::FAILURE
        }
    }
}
