//! `weft setup-cni`: installs the CNI plugin and a network configuration
//! that runtimes (podman, containerd, CRI-O) pick up.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use super::args::DirArgs;

#[derive(Args, Debug, Clone)]
pub struct SetupCniArgs {
    /// Where the runtime looks for CNI plugins.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// Where the runtime looks for network configurations.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// The network's name, as runtimes show it (`podman --network NAME`).
    #[arg(long, default_value = "weft")]
    pub network_name: String,
    /// The configuration's cniVersion: 1.0.0 suits podman 4, containerd
    /// 1.6 and CRI-O; 1.1.0 adds STATUS and GC for runtimes that know it.
    #[arg(long, default_value = "1.0.0")]
    pub cni_version: String,
    /// Containers of this network get addresses from this subnet of the
    /// range (default: the router's default subnet).
    #[arg(long)]
    pub subnet: Option<ipnet::Ipv4Net>,
    /// Leave out the `portmap` plugin (published ports, hostPort).
    #[arg(long)]
    pub no_portmap: bool,
    /// The plugin to install; by default `weft-cni` next to this `weft`.
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    #[command(flatten)]
    pub dirs: DirArgs,
}

/// The conflist: weft first, then portmap, which the spec's chaining lets
/// publish ports on whatever address weft gave.
pub fn conflist(args: &SetupCniArgs) -> Value {
    let mut weft = json!({
        "type": "weft-cni",
        "socket": args.dirs.run_dir.join("weft.sock"),
        // Static addresses (`podman run --ip`), claimed in weft's IPAM.
        "capabilities": { "ips": true },
    });
    if let Some(subnet) = args.subnet {
        weft["subnet"] = json!(subnet);
    }
    let mut plugins = vec![weft];
    if !args.no_portmap {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true,
        }));
    }
    json!({
        "cniVersion": args.cni_version,
        "name": args.network_name,
        "plugins": plugins,
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// runtime never runs half a plugin (and a running one is not "busy").
fn install(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("a path with a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("weft-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

pub fn run(args: &SetupCniArgs) -> Result<()> {
    let plugin = match &args.plugin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("weft has no directory")?
            .join("weft-cni"),
    };
    let binary = std::fs::read(&plugin).with_context(|| {
        format!(
            "cannot read the plugin {} (build it with `cargo build -p weft-cni`, or give --plugin)",
            plugin.display()
        )
    })?;
    let installed = args.cni_bin_dir.join("weft-cni");
    install(&installed, &binary, 0o755)?;
    let conf = args
        .cni_conf_dir
        .join(format!("10-{}.conflist", args.network_name));
    let text = serde_json::to_string_pretty(&conflist(args))? + "\n";
    install(&conf, text.as_bytes(), 0o644)?;
    println!("installed {}", installed.display());
    println!("wrote {}", conf.display());
    if !args.no_portmap && !args.cni_bin_dir.join("portmap").exists() {
        eprintln!(
            "note: {} has no portmap plugin; install the reference plugins (Debian: containernetworking-plugins) or use --no-portmap",
            args.cni_bin_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SetupCniArgs,
    }

    #[test]
    fn the_conflist_names_the_router_socket_and_chains_portmap() {
        let w = Wrap::parse_from(["x", "--run-dir", "/tmp/r", "--subnet", "10.32.64.0/18"]);
        let c = conflist(&w.args);
        assert_eq!(c["name"], "weft");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["plugins"][0]["type"], "weft-cni");
        assert_eq!(c["plugins"][0]["socket"], "/tmp/r/weft.sock");
        assert_eq!(c["plugins"][0]["subnet"], "10.32.64.0/18");
        assert_eq!(c["plugins"][1]["type"], "portmap");
        let w = Wrap::parse_from(["x", "--no-portmap"]);
        assert_eq!(conflist(&w.args)["plugins"].as_array().unwrap().len(), 1);
    }
}
