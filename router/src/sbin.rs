//! The host's system tools weft runs (`nft`, `tc`): found where Debian
//! puts them, else wherever PATH finds them, so a router started without
//! /usr/sbin in its PATH still finds them.

use std::{path::Path, process::Stdio, time::Duration};

/// A command for tool `name`, killed if its future is dropped.
pub fn command(name: &str) -> tokio::process::Command {
    let path = [format!("/usr/sbin/{name}"), format!("/sbin/{name}")]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| name.to_string());
    let mut command = tokio::process::Command::new(path);
    command.kill_on_drop(true);
    command
}

/// How long weft waits for modprobe: loading modules ahead only makes
/// what follows quicker or possible, and a hung modprobe must not hold
/// the caller back.
const MODPROBE_WAIT: Duration = Duration::from_secs(20);

/// Loads `modules` in one `modprobe -a`; the error says why not (a kernel
/// with them built in has nothing to load, and succeeds).
pub async fn modprobe(modules: &[&str]) -> Result<(), String> {
    let mut modprobe = command("modprobe");
    modprobe
        .arg("-a")
        .args(modules)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Dropped at the deadline, the command is killed (kill_on_drop).
    match tokio::time::timeout(MODPROBE_WAIT, modprobe.status()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("modprobe {}: {s}", modules.join(" "))),
        Ok(Err(e)) => Err(format!("cannot run modprobe: {e}")),
        Err(_) => Err(format!(
            "modprobe {} took over {MODPROBE_WAIT:?}",
            modules.join(" ")
        )),
    }
}
