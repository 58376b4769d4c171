//! `weft reset`: stop the router and forget its state, without forgetting
//! an address a container still uses, and remove what weft made in the
//! kernel (its tables, the bridge, leftover veths, the datapath).

use anyhow::{Context as _, Result, bail};

use weft_api::ClientError;

use super::args::DirArgs;
use crate::{
    daemon::paths::Paths,
    netdev::{self, Netlink, attach::Attachment},
};

/// What is attached here: the router's list if it runs, else the data
/// directory's, checked against the kernel.
async fn attached(dirs: &DirArgs, netlink: &Netlink) -> Result<(Vec<Attachment>, bool)> {
    match super::client(dirs).get("/ps") {
        Ok(body) => Ok((
            serde_json::from_str(&body).context("the router's /ps is not a list")?,
            true,
        )),
        Err(ClientError::NotRunning(_)) => {
            let path = Paths::new(dirs).data_dir.join("attachments.json");
            let mut registry = netdev::attach::Registry::load(path)?;
            registry.prune(netlink).await?;
            Ok((registry.list(), false))
        }
        Err(e) => Err(e.into()),
    }
}

/// The refusal: who is attached, and what to do.
fn refusal(attached: &[Attachment]) -> String {
    let list: Vec<String> = attached
        .iter()
        .map(|a| {
            let addrs: Vec<String> = a.addresses.iter().map(|n| n.to_string()).collect();
            format!("{} ({})", a.id, addrs.join(" "))
        })
        .collect();
    format!(
        "{} container(s) are attached here: {}. Resetting would forget their addresses and IPAM could hand them out again. Detach them first (weft detach, podman rm, docker rm), or run `weft reset --detach` to take them off the network first",
        attached.len(),
        list.join(", ")
    )
}

pub fn run(dirs: &DirArgs, detach: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(reset(dirs, detach))
}

async fn reset(dirs: &DirArgs, detach: bool) -> Result<()> {
    let netlink = Netlink::here().context("cannot talk to the kernel over netlink")?;
    let (attached, running) = attached(dirs, &netlink).await?;
    if !attached.is_empty() {
        if !detach {
            bail!("{}", refusal(&attached));
        }
        for a in &attached {
            if running {
                let body = serde_json::json!({ "id": a.id, "missing_ok": true });
                super::post(dirs, "/detach", &body)?;
            } else {
                netlink.delete_named(&a.interface).await?;
            }
            println!("detached {}", a.id);
        }
    }
    super::stop(dirs)?;
    let paths = Paths::new(dirs);
    for file in paths.state_files().into_iter().chain([paths.log_file()]) {
        match std::fs::remove_file(&file) {
            Ok(()) => println!("removed {}", file.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    }
    crate::firewall::remove()
        .await
        .context("cannot remove weft's nftables tables")?;
    crate::flows::FlowTop::clear()
        .await
        .context("cannot remove flow top's nftables table")?;
    println!("removed nftables tables {}", crate::firewall::tables());
    remove_devices(&netlink).await
}

/// The bridge, container ends left behind, the vxlan device and the fast
/// datapath: what a router made in the kernel and leaves when it stops.
async fn remove_devices(netlink: &Netlink) -> Result<()> {
    for link in netlink.links().await? {
        let ours = link.name == netdev::BRIDGE
            || link.name == netdev::TAP
            || link.name == crate::vxlan_device::DEVICE
            || link.name == crate::fastdp::HEADROOM_PORT
            || link.name.starts_with(netdev::attach::HOST_PREFIX)
            || link.name.starts_with("vwefc");
        if ours {
            netlink.delete(link.index).await?;
            println!("removed device {}", link.name);
        }
    }
    if let Ok(mut odp) = weft_odp::Client::connect()
        && let Ok(dp) = odp.datapath(crate::fastdp::DATAPATH)
    {
        odp.delete_datapath(dp.ifindex)
            .context("cannot remove the fast datapath")?;
        println!("removed datapath {}", crate::fastdp::DATAPATH);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_lists_who_is_attached_and_says_what_to_do() {
        let a = Attachment {
            id: "web".into(),
            target: "web".into(),
            interface: "vweft00000000".into(),
            container_interface: "weft0".into(),
            mac: String::new(),
            addresses: vec!["10.32.0.5/12".parse().unwrap()],
            gateway: None,
            owner: String::new(),
        };
        let text = refusal(&[a]);
        assert!(text.contains("web (10.32.0.5/12)"), "{text}");
        assert!(text.contains("weft reset --detach"), "{text}");
    }
}
