//! The host's system tools weft runs (`nft`, `tc`): found where Debian
//! puts them, else wherever PATH finds them, so a router started without
//! /usr/sbin in its PATH still finds them.

use std::path::Path;

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
