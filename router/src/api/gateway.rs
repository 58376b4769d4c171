//! `POST /expose` and `POST /hide`: the host's gateway addresses on the
//! bridge, held in IPAM by [`gateway::OWNER`] when they are in the range.
//! Also the gateway a runtime's container needs, exposed on demand.

use std::net::Ipv4Addr;

use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes};
use ipnet::Ipv4Net;
use serde::Deserialize;

use super::{Api, json_of, parse, text};
use crate::{
    daemon::router::Request,
    netdev::{
        self, HostNetwork,
        gateway::{Gateway, OWNER},
    },
};

type Answer<T> = Result<T, Response<Full<Bytes>>>;

#[derive(Deserialize)]
struct AddressesBody {
    #[serde(default)]
    addresses: Vec<String>,
}

fn bad(message: String) -> Response<Full<Bytes>> {
    text(StatusCode::BAD_REQUEST, message + "\n")
}

fn failed(e: impl std::fmt::Display) -> Response<Full<Bytes>> {
    text(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n"))
}

fn parse_nets(addresses: &[String]) -> Result<Vec<Ipv4Net>, String> {
    addresses
        .iter()
        .map(|a| {
            a.parse::<Ipv4Net>().map_err(|_| {
                format!("{a:?} is not an IPv4 address with a prefix length, like 10.32.0.1/12")
            })
        })
        .collect()
}

impl Api {
    pub(super) async fn network(&self) -> Answer<&HostNetwork> {
        self.network
            .as_deref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))
    }

    pub(super) async fn expose(&self, body: &Bytes) -> Answer<Response<Full<Bytes>>> {
        let b: AddressesBody = parse(body, r#"{"addresses": ["10.32.0.1/12"]}"#).map_err(bad)?;
        let wanted = parse_nets(&b.addresses).map_err(bad)?;
        let network = self.network().await?;
        let mut gateway = network.gateway.lock().await;
        if wanted.is_empty() {
            if gateway.addresses().is_empty() {
                self.expose_one(network, &mut gateway, None, None).await?;
            }
        } else {
            // All or nothing: what this request added goes again if a
            // later address fails.
            let mut added = Vec::new();
            for net in wanted {
                if gateway.addresses().contains(&net) {
                    continue;
                }
                match self
                    .expose_one(network, &mut gateway, Some(net), None)
                    .await
                {
                    Ok(net) => added.push(net),
                    Err(e) => {
                        for net in added {
                            let _ = self.hide_one(network, &mut gateway, net).await;
                        }
                        self.gateway_changed(gateway.addresses()).await?;
                        return Err(e);
                    }
                }
            }
        }
        self.gateway_changed(gateway.addresses()).await?;
        Ok(json_of(&gateway.addresses()))
    }

    pub(super) async fn hide(&self, body: &Bytes) -> Answer<Response<Full<Bytes>>> {
        let b: AddressesBody = parse(body, r#"{"addresses": []}"#).map_err(bad)?;
        let wanted = parse_nets(&b.addresses).map_err(bad)?;
        let network = self.network().await?;
        let mut gateway = network.gateway.lock().await;
        let hidden: Vec<Ipv4Net> = if wanted.is_empty() {
            gateway.addresses().to_vec()
        } else {
            if let Some(missing) = wanted.iter().find(|n| !gateway.addresses().contains(n)) {
                return Err(text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "{missing} is not exposed; `weft status` shows the gateway ({})\n",
                        if gateway.addresses().is_empty() {
                            "none".to_string()
                        } else {
                            gateway
                                .addresses()
                                .iter()
                                .map(|g| g.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                ));
            }
            wanted
        };
        let outcome = self.hide_all(network, &mut gateway, &hidden).await;
        // The mesh and firewall learn what really changed, even when one
        // address could not be taken off.
        self.gateway_changed(gateway.addresses()).await?;
        outcome?;
        Ok(json_of(&hidden))
    }

    /// The gateway a container of `subnet` uses, exposing the host first
    /// if it has none there (a runtime's containers need one).
    pub(super) async fn ensure_gateway(&self, subnet: Option<Ipv4Net>) -> Answer<Ipv4Net> {
        let network = self.network().await?;
        let mut gateway = network.gateway.lock().await;
        let have = match subnet {
            Some(s) => gateway.in_subnet(s),
            None => gateway.addresses().first().copied(),
        };
        if let Some(g) = have {
            return Ok(g);
        }
        let net = self.expose_one(network, &mut gateway, None, subnet).await?;
        tracing::info!(gateway = %net, "exposed this host: containers of a runtime need a gateway");
        self.gateway_changed(gateway.addresses()).await?;
        Ok(net)
    }

    /// The host's gateway for a container at `addr`, if it has one.
    pub(super) async fn gateway_for(&self, addr: Ipv4Addr) -> Option<Ipv4Net> {
        let network = self.network.as_deref()?;
        network.gateway.lock().await.for_container(addr)
    }

    /// One address on the bridge: `net` (claimed in IPAM when it is in the
    /// range, checked against the host's routes when not), or one IPAM
    /// gives from `subnet`.
    async fn expose_one(
        &self,
        network: &HostNetwork,
        gateway: &mut Gateway,
        net: Option<Ipv4Net>,
        subnet: Option<Ipv4Net>,
    ) -> Answer<Ipv4Net> {
        let range = self.ipam_status().await?.range;
        let (net, held) = match net {
            None => (
                self.allocate(OWNER.into(), subnet, None).await?.cidr(),
                true,
            ),
            Some(net) if range.contains(&net.addr()) => {
                match self
                    .ipam_allocate(OWNER.into(), Some(net.trunc()), Some(net.addr()))
                    .await?
                {
                    Ok(_) => {}
                    Err(weft_ipam::IpamError::AddressInUse { holder, .. }) if holder == OWNER => {}
                    Err(e) => {
                        return Err(text(
                            super::ipam_error_status(&e),
                            format!("cannot expose {net}: {e}\n"),
                        ));
                    }
                }
                (net, true)
            }
            Some(net) => {
                let problem = netdev::collision(&network.netlink, net, "address")
                    .await
                    .map_err(failed)?;
                if let Some(problem) = problem {
                    return Err(text(StatusCode::CONFLICT, problem + "\n"));
                }
                (net, false)
            }
        };
        if let Err(e) = gateway.add(&network.netlink, net).await {
            if held {
                self.release(OWNER.into(), Some(net.addr())).await?;
            }
            return Err(failed(e));
        }
        Ok(net)
    }

    /// Takes `net` off the bridge, then gives it back to IPAM.
    async fn hide_one(
        &self,
        network: &HostNetwork,
        gateway: &mut Gateway,
        net: Ipv4Net,
    ) -> Answer<()> {
        gateway
            .remove(&network.netlink, net)
            .await
            .map_err(failed)?;
        self.release(OWNER.into(), Some(net.addr())).await?;
        Ok(())
    }

    /// Takes every container of this host off the network and gives up
    /// its gateway, releasing their addresses (`weft ipam reset --detach`).
    pub(super) async fn detach_all(
        &self,
        network: &HostNetwork,
        registry: &mut crate::netdev::attach::Registry,
    ) -> Answer<()> {
        for a in registry.list() {
            match registry.detach(&network.netlink, &a.id, &[]).await {
                Ok(_) | Err(crate::netdev::attach::AttachError::NotAttached(_)) => {}
                Err(e) => return Err(failed(e)),
            }
            self.release(a.ipam_owner(), None).await?;
        }
        let mut gateway = network.gateway.lock().await;
        let all = gateway.addresses().to_vec();
        let outcome = self.hide_all(network, &mut gateway, &all).await;
        self.gateway_changed(gateway.addresses()).await?;
        outcome
    }

    async fn hide_all(
        &self,
        network: &HostNetwork,
        gateway: &mut Gateway,
        nets: &[Ipv4Net],
    ) -> Answer<()> {
        for net in nets {
            self.hide_one(network, gateway, *net).await?;
        }
        Ok(())
    }

    /// Tells the router, which tells the mesh and the firewall.
    async fn gateway_changed(&self, addresses: &[Ipv4Net]) -> Answer<()> {
        let addresses = addresses.to_vec();
        self.ask(|done| Request::Gateway { addresses, done }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_must_carry_a_prefix() {
        assert!(parse_nets(&["10.32.0.1/12".into()]).is_ok());
        assert!(parse_nets(&["10.32.0.1".into()]).is_err());
        assert!(parse_nets(&["fe80::1/64".into()]).is_err());
    }
}
