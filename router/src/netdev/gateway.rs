//! The host's gateway on the overlay (`weft expose`): its addresses on the
//! `weft` bridge, through which containers reach the host and, routed
//! and masqueraded, the world. Kept in the data directory and put back
//! on the bridge when the router restarts.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;

use super::{BRIDGE, Netlink, NetlinkError};

/// The IPAM owner of the host's gateway addresses.
pub const OWNER: &str = "weft:expose";

/// Where IPv4 forwarding is switched, for the namespace the router runs in.
const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error(
        "cannot switch on IPv4 forwarding ({0}); containers could reach this host but not beyond it"
    )]
    Forwarding(std::io::Error),
}

/// The addresses the host has on the bridge, as persisted.
#[derive(Debug)]
pub struct Gateway {
    path: PathBuf,
    addresses: Vec<Ipv4Net>,
}

impl Gateway {
    /// Reads the persisted addresses; a damaged file is an error, never
    /// a silent "not exposed".
    pub fn load(path: PathBuf) -> Result<Gateway, GatewayError> {
        let addresses = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| GatewayError::File {
                path: path.clone(),
                reason: format!("{e}; fix it, or remove it and run `weft expose` again"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(GatewayError::File {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok(Gateway { path, addresses })
    }

    /// Writes the file whole and renames it into place: a crash leaves the
    /// old list or the new one.
    fn save(&self, addresses: &[Ipv4Net]) -> Result<(), GatewayError> {
        let fail = |e: std::io::Error| GatewayError::File {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let text = serde_json::to_string_pretty(addresses).expect("addresses serialize");
        crate::state_file::replace(&self.path, text.as_bytes()).map_err(fail)
    }

    pub fn addresses(&self) -> &[Ipv4Net] {
        &self.addresses
    }

    /// The gateway for a container at `addr`: one on its subnet, else
    /// (reached through an on-link route) the first.
    pub fn for_container(&self, addr: Ipv4Addr) -> Option<Ipv4Net> {
        self.addresses
            .iter()
            .find(|g| g.contains(&addr))
            .or(self.addresses.first())
            .copied()
    }

    /// A gateway address inside `subnet`, if the host has one.
    pub fn in_subnet(&self, subnet: Ipv4Net) -> Option<Ipv4Net> {
        self.addresses
            .iter()
            .find(|g| subnet.contains(&g.addr()))
            .copied()
    }

    /// Puts the persisted addresses back on the bridge (a restart, or a
    /// bridge someone deleted and the router made again).
    pub async fn restore(&self, netlink: &Netlink) -> Result<(), GatewayError> {
        if self.addresses.is_empty() {
            return Ok(());
        }
        let bridge = prepare_host(netlink).await?;
        for net in &self.addresses {
            netlink.add_address(bridge, (*net).into()).await?;
        }
        Ok(())
    }

    /// Adds `net` to the bridge and to the file; if the file cannot be
    /// written the address comes off the bridge again.
    pub async fn add(&mut self, netlink: &Netlink, net: Ipv4Net) -> Result<(), GatewayError> {
        if self.addresses.contains(&net) {
            return Ok(());
        }
        let bridge = prepare_host(netlink).await?;
        netlink.add_address(bridge, net.into()).await?;
        let mut next = self.addresses.clone();
        next.push(net);
        if let Err(e) = self.save(&next) {
            let _ = netlink.delete_address(bridge, net.into()).await;
            return Err(e);
        }
        self.addresses = next;
        Ok(())
    }

    /// Takes `net` off the bridge and out of the file.
    pub async fn remove(&mut self, netlink: &Netlink, net: Ipv4Net) -> Result<(), GatewayError> {
        let next: Vec<Ipv4Net> = self
            .addresses
            .iter()
            .copied()
            .filter(|a| *a != net)
            .collect();
        self.save(&next)?;
        self.addresses = next;
        let bridge = netlink.require(BRIDGE).await?;
        netlink.delete_address(bridge.index, net.into()).await?;
        Ok(())
    }
}

/// What a gateway needs of the host: IPv4 forwarding (containers' traffic
/// is routed through it), and the bridge's frames passed through the IP
/// hooks so that the replies of NATed connections (service addresses)
/// crossing the bridge are translated back. Returns the bridge's index.
async fn prepare_host(netlink: &Netlink) -> Result<u32, GatewayError> {
    // Where br_netfilter is a module (Debian's kernel), the bridge's
    // nf_call_iptables does nothing until it is loaded.
    if !Path::new("/proc/sys/net/bridge").exists()
        && let Err(why) = crate::sbin::modprobe(&["br_netfilter"]).await
    {
        tracing::warn!(
            %why,
            "br_netfilter is not loaded and cannot be: replies from service addresses (kube-proxy's NAT) across hosts will not be translated back"
        );
    }
    let bridge = netlink.require(BRIDGE).await?;
    netlink.bridge_nf_call_iptables(&bridge).await?;
    let on = std::fs::read_to_string(FORWARDING).is_ok_and(|v| v.trim() == "1");
    if !on {
        std::fs::write(FORWARDING, "1\n").map_err(GatewayError::Forwarding)?;
        tracing::info!("IPv4 forwarding switched on: containers reach the world through this host");
    }
    Ok(bridge.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-gw-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_damaged_file_is_an_error_and_a_missing_one_is_empty() {
        let d = dir("load");
        let path = d.join("gateway.json");
        assert!(Gateway::load(path.clone()).unwrap().addresses().is_empty());
        std::fs::write(&path, "[\"10.32.0.1/12\"").unwrap();
        let e = Gateway::load(path.clone()).unwrap_err().to_string();
        assert!(e.contains("weft expose"), "{e}");
        std::fs::write(&path, "[\"10.32.0.1/12\"]").unwrap();
        let g = Gateway::load(path).unwrap();
        assert_eq!(g.addresses(), &["10.32.0.1/12".parse::<Ipv4Net>().unwrap()]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_container_gets_the_gateway_of_its_subnet() {
        let g = Gateway {
            path: PathBuf::new(),
            addresses: vec![
                "10.32.0.1/12".parse().unwrap(),
                "10.50.0.1/24".parse().unwrap(),
            ],
        };
        let gw = |a: &str| {
            g.for_container(a.parse().unwrap())
                .unwrap()
                .addr()
                .to_string()
        };
        assert_eq!(gw("10.50.0.9"), "10.50.0.1");
        assert_eq!(gw("10.33.0.9"), "10.32.0.1");
        assert_eq!(
            gw("192.168.1.5"),
            "10.32.0.1",
            "elsewhere: the first, on-link"
        );
        assert_eq!(
            g.in_subnet("10.50.0.0/16".parse().unwrap())
                .unwrap()
                .to_string(),
            "10.50.0.1/24"
        );
        assert_eq!(g.in_subnet("10.60.0.0/16".parse().unwrap()), None);
    }
}
