//! Attaching containers: a veth pair with one end on the bridge and the
//! other, `weft0`, in the container with its addresses; and the registry of
//! what is attached, kept in the data directory so `weft ps` survives a
//! router restart.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use super::{CONTAINER_IF, Netlink, NetlinkError, target::Target};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// What the attachment is known by: the target for `weft attach`, the
    /// runtime's id for CNI (also the IPAM owner then). Filled from the
    /// registry's key when loading older files.
    #[serde(default)]
    pub id: String,
    /// What the user named: namespace, path, pid or container.
    pub target: String,
    /// The veth end on the bridge.
    pub interface: String,
    /// The container's end, `weft0` unless the runtime asked for a name.
    #[serde(default = "default_container_if")]
    pub container_interface: String,
    /// The MAC of the container's `weft0`.
    pub mac: String,
    pub addresses: Vec<IpNet>,
    /// The host's gateway, the container's default route, when the host
    /// has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Who holds the addresses in IPAM (`attach:TARGET`, the CNI id,
    /// `docker:MAC`); older files lack it ([`Attachment::ipam_owner`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

impl Attachment {
    /// The first IPv4 address: what policy knows the container by.
    pub fn first_ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|n| match n {
            IpNet::V4(v4) => Some(v4.addr()),
            IpNet::V6(_) => None,
        })
    }

    /// The IPAM owner of this attachment's addresses.
    pub fn ipam_owner(&self) -> String {
        if !self.owner.is_empty() {
            self.owner.clone()
        } else if self.id.starts_with("cni:") {
            self.id.clone()
        } else {
            format!("attach:{}", self.id)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Target(#[from] super::target::TargetError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0} is not attached")]
    NotAttached(String),
    #[error("{id}: {problem}")]
    Broken { id: String, problem: String },
    #[error("attachment registry {path}: {reason}")]
    Registry { path: PathBuf, reason: String },
}

fn default_container_if() -> String {
    CONTAINER_IF.to_string()
}

/// Addresses worth showing: not the IPv6 link-local one every interface
/// gets.
fn global(addresses: Vec<IpNet>) -> Vec<IpNet> {
    addresses
        .into_iter()
        .filter(|a| !matches!(a, IpNet::V6(v6) if v6.addr().segments()[0] & 0xffc0 == 0xfe80))
        .collect()
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How the bridge-side ends of containers' interfaces are named.
pub const HOST_PREFIX: &str = "vweft";

/// The bridge-side name for a target: stable, so re-attaching finds it.
pub fn host_interface(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{HOST_PREFIX}{hex}")
}

/// How to plug a container in.
#[derive(Clone, Debug)]
pub struct Plug {
    /// The registry key; names the bridge end.
    pub id: String,
    /// The container's interface.
    pub interface: String,
    /// The default route's gateway, if the host has one.
    pub gateway: Option<Ipv4Addr>,
    /// The IPAM owner of its addresses.
    pub owner: String,
}

/// Every attached container, persisted as JSON.
pub struct Registry {
    path: PathBuf,
    entries: BTreeMap<String, Attachment>,
}

impl Registry {
    /// Loads the registry; a corrupt file is an error, not a silent reset.
    pub fn load(path: PathBuf) -> Result<Registry, AttachError> {
        let mut entries: BTreeMap<String, Attachment> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| AttachError::Registry {
                path: path.clone(),
                reason: format!("{e}; fix or remove it"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(AttachError::Registry {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        for (key, a) in entries.iter_mut() {
            a.id.clone_from(key);
        }
        Ok(Registry { path, entries })
    }

    fn save(&self) -> Result<(), AttachError> {
        let fail = |reason: String| AttachError::Registry {
            path: self.path.clone(),
            reason,
        };
        let text = serde_json::to_string_pretty(&self.entries).expect("attachments serialize");
        crate::state_file::replace(&self.path, text.as_bytes()).map_err(|e| fail(e.to_string()))
    }

    pub fn list(&self) -> Vec<Attachment> {
        self.entries.values().cloned().collect()
    }

    /// Every IPv4 address attached containers use, with its IPAM owner.
    pub fn in_use(&self) -> Vec<(String, Ipv4Addr)> {
        self.entries
            .values()
            .flat_map(|a| {
                let owner = a.ipam_owner();
                a.addresses.iter().filter_map(move |n| match n {
                    IpNet::V4(v4) => Some((owner.clone(), v4.addr())),
                    IpNet::V6(_) => None,
                })
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<&Attachment> {
        self.entries.get(id)
    }

    /// Keeps what a runtime made itself (a Docker endpoint), for `weft ps`.
    pub fn record(&mut self, attachment: Attachment) -> Result<(), AttachError> {
        self.entries.insert(attachment.id.clone(), attachment);
        self.save()
    }

    /// Forgets what [`Registry::record`] kept.
    pub fn forget(&mut self, id: &str) -> Result<(), AttachError> {
        if self.entries.remove(id).is_some() {
            self.save()?;
        }
        Ok(())
    }

    /// Forgets containers whose veth is gone (the container stopped).
    pub async fn prune(&mut self, netlink: &Netlink) -> Result<(), AttachError> {
        let mut gone = Vec::new();
        // A Docker endpoint that has not joined yet has no veth: keep it.
        for (key, a) in self.entries.iter().filter(|(_, a)| !a.target.is_empty()) {
            if netlink.link(&a.interface).await?.is_none() {
                gone.push(key.clone());
            }
        }
        if !gone.is_empty() {
            for key in gone {
                self.entries.remove(&key);
            }
            self.save()?;
        }
        Ok(())
    }

    /// Gives every attached container the overlay MTU, which changes when
    /// the router restarts with or without a password, or another --mtu.
    pub async fn set_mtu(&self, netlink: &Netlink, mtu: u32) {
        // A Docker endpoint's container end is Docker's to name and set.
        for a in self
            .entries
            .values()
            .filter(|a| !a.container_interface.is_empty())
        {
            let result = async {
                let target = Target::parse(&a.target)?;
                let inside = Netlink::inside(&target.open()?).await?;
                if let Some(c) = inside.link(&a.container_interface).await?
                    && c.mtu != mtu
                {
                    inside.set_mtu_up(c.index, mtu).await?;
                }
                if let Some(h) = netlink.link(&a.interface).await? {
                    netlink.set_mtu_up(h.index, mtu).await?;
                }
                Ok::<(), AttachError>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(target = %a.target, error = %e, "cannot update the MTU of an attached container");
            }
        }
    }

    /// Attaches `target` to the bridge with `addresses` (added to any it
    /// has already), as `plug` says. All or nothing: the attachment is on
    /// disk before anything is made (a router killed from there on finds it
    /// at its next start and settles it: no interface, it is forgotten and
    /// its address released; an interface, it is kept), and any failure
    /// takes away what this call made before the error is returned, so the
    /// caller may release the address.
    pub async fn attach(
        &mut self,
        netlink: &Netlink,
        bridge: u32,
        mtu: u32,
        target: &Target,
        plug: &Plug,
        addresses: &[IpNet],
    ) -> Result<Attachment, AttachError> {
        let netns = target.open()?;
        let inside = Netlink::inside(&netns).await?;
        let host_if = host_interface(&plug.id);
        let existed = inside.link(&plug.interface).await?.is_some();
        let previous = self.entries.get(&plug.id).cloned();
        let mut intent = previous.clone().unwrap_or_else(|| Attachment {
            id: plug.id.clone(),
            target: target.key(),
            interface: host_if.clone(),
            container_interface: plug.interface.clone(),
            mac: String::new(),
            addresses: Vec::new(),
            gateway: plug.gateway,
            owner: plug.owner.clone(),
        });
        let added: Vec<IpNet> = addresses
            .iter()
            .filter(|a| !intent.addresses.contains(a))
            .copied()
            .collect();
        intent.addresses.extend(added.iter().copied());
        self.put(&plug.id, Some(intent))?;
        let made = self
            .plumb(
                netlink, bridge, mtu, &netns, &inside, target, plug, existed, addresses,
            )
            .await;
        let failure = match made {
            Ok(attachment) => match self.put(&plug.id, Some(attachment.clone())) {
                Ok(()) => return Ok(attachment),
                Err(e) => e,
            },
            Err(e) => e,
        };
        // Undo what this call made, then forget it.
        if existed {
            if let Some(container) = inside.link(&plug.interface).await.ok().flatten() {
                for net in &added {
                    let _ = inside.delete_address(container.index, *net).await;
                }
            }
        } else {
            let _ = netlink.delete_named(&host_if).await;
        }
        if let Err(e) = self.put(&plug.id, previous) {
            tracing::warn!(id = %plug.id, error = %e, "cannot take back a failed attachment's entry; the next start settles it");
        }
        Err(failure)
    }

    /// Sets (or, with `None`, removes) the entry for `id` and saves; if the
    /// file cannot be written the entry stays as it was.
    fn put(&mut self, id: &str, entry: Option<Attachment>) -> Result<(), AttachError> {
        let before = match entry {
            Some(a) => self.entries.insert(id.to_string(), a),
            None => self.entries.remove(id),
        };
        self.save().inspect_err(|_| match before {
            Some(a) => {
                self.entries.insert(id.to_string(), a);
            }
            None => {
                self.entries.remove(id);
            }
        })
    }

    /// Makes the veth pair and gives the container its addresses and
    /// routes.
    #[allow(clippy::too_many_arguments)]
    async fn plumb(
        &self,
        netlink: &Netlink,
        bridge: u32,
        mtu: u32,
        netns: &std::fs::File,
        inside: &Netlink,
        target: &Target,
        plug: &Plug,
        existed: bool,
        addresses: &[IpNet],
    ) -> Result<Attachment, AttachError> {
        let host_if = host_interface(&plug.id);
        let name = plug.interface.as_str();
        if !existed {
            netlink.delete_named(&host_if).await?;
            netlink.add_veth_into(&host_if, name, netns, mtu).await?;
        }
        let host = netlink.require(&host_if).await?;
        netlink.set_mtu_up(host.index, mtu).await?;
        netlink.attach(host.index, bridge).await?;
        let container = inside.require(name).await?;
        inside.set_mtu_up(container.index, mtu).await?;
        for net in addresses {
            inside.add_address(container.index, *net).await?;
        }
        // Multicast goes to the overlay too, as on a LAN.
        inside
            .add_route(Ipv4Addr::new(224, 0, 0, 0), 4, container.index)
            .await?;
        if let Some(gateway) = plug.gateway {
            // The range stays on-link (the overlay); everything else goes
            // to the host. A gateway outside the container's own subnets
            // gets a link route first, so the default route can use it.
            let on_link = addresses.iter().any(|a| a.contains(&IpAddr::V4(gateway)));
            if !on_link {
                inside.add_route(gateway, 32, container.index).await?;
            }
            let everything = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);
            inside
                .add_gateway_route(everything, gateway, container.index, false)
                .await?;
        }
        Ok(Attachment {
            id: plug.id.clone(),
            target: target.key(),
            interface: host_if,
            container_interface: name.to_string(),
            mac: container.mac.map(mac_string).unwrap_or_default(),
            addresses: global(inside.addresses(container.index).await?),
            gateway: plug.gateway,
            owner: plug.owner.clone(),
        })
    }

    /// Whether the container already has an interface `name` (CNI must
    /// refuse to add one of the same name).
    pub async fn interface_exists(target: &Target, name: &str) -> Result<bool, AttachError> {
        let inside = Netlink::inside(&target.open()?).await?;
        Ok(inside.link(name).await?.is_some())
    }

    /// Confirms that attachment `id` is whole: its bridge end is there and
    /// on the bridge, and inside the container its interface is up with
    /// every address it was given.
    pub async fn check(
        &self,
        netlink: &Netlink,
        bridge: u32,
        id: &str,
    ) -> Result<Attachment, AttachError> {
        let a = self
            .entries
            .get(id)
            .ok_or_else(|| AttachError::NotAttached(id.to_string()))?;
        let broken = |problem: String| AttachError::Broken {
            id: id.to_string(),
            problem,
        };
        let host = netlink
            .link(&a.interface)
            .await?
            .ok_or_else(|| broken(format!("its bridge end {} is gone", a.interface)))?;
        if host.controller != Some(bridge) {
            return Err(broken(format!("{} is not on the bridge", a.interface)));
        }
        let inside = Netlink::inside(&Target::parse(&a.target)?.open()?).await?;
        let container = inside.link(&a.container_interface).await?.ok_or_else(|| {
            broken(format!(
                "the container has no interface {}",
                a.container_interface
            ))
        })?;
        let have = global(inside.addresses(container.index).await?);
        if let Some(missing) = a.addresses.iter().find(|x| !have.contains(x)) {
            return Err(broken(format!(
                "{} lost its address {missing}",
                a.container_interface
            )));
        }
        Ok(a.clone())
    }

    /// Removes `addresses` from the container, or with none given the
    /// whole interface.
    pub async fn detach(
        &mut self,
        netlink: &Netlink,
        key: &str,
        addresses: &[IpNet],
    ) -> Result<Option<Attachment>, AttachError> {
        let key = key.to_string();
        let interface = self
            .entries
            .get(&key)
            .map(|a| a.interface.clone())
            .unwrap_or_else(|| host_interface(&key));
        let Some(host) = netlink.link(&interface).await? else {
            self.entries.remove(&key);
            self.save()?;
            return Err(AttachError::NotAttached(key));
        };
        if addresses.is_empty() {
            netlink.delete(host.index).await?;
            self.entries.remove(&key);
            self.save()?;
            return Ok(None);
        }
        let Some(entry) = self.entries.get(&key) else {
            return Err(AttachError::NotAttached(key));
        };
        let inside = Netlink::inside(&Target::parse(&entry.target)?.open()?).await?;
        let container = inside
            .link(&entry.container_interface)
            .await?
            .ok_or_else(|| AttachError::NotAttached(key.clone()))?;
        for net in addresses {
            inside.delete_address(container.index, *net).await?;
        }
        let remaining = global(inside.addresses(container.index).await?);
        let entry = self.entries.get_mut(&key).map(|a| {
            a.addresses = remaining;
            a.clone()
        });
        self.save()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_names_fit_and_are_stable() {
        let name = host_interface("tb-x-h1c1");
        assert_eq!(name, host_interface("tb-x-h1c1"));
        assert_ne!(name, host_interface("tb-x-h1c2"));
        assert!(name.len() < 16, "{name}");
    }

    #[test]
    fn a_corrupt_registry_is_an_error() {
        let dir = std::env::temp_dir().join(format!("weft-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("attachments.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = Registry::load(path.clone()).err().unwrap().to_string();
        assert!(err.contains("fix or remove it"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
