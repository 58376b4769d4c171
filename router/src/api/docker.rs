//! Docker's remote network driver and IPAM driver, served on
//! `/run/docker/plugins/weft.sock`, where dockerd discovers plugins.
//!
//! Docker keeps the state (networks, endpoints, their addresses and MACs);
//! weft keeps none beyond IPAM's own, where an endpoint's address is owned
//! by its MAC. A restart of either side leaves running containers as they
//! were: their veths stay on the bridge, their addresses stay held.

use std::{collections::BTreeMap, net::Ipv4Addr};

use hyper::body::Bytes;
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Api;
use crate::netdev::{
    HostNetwork,
    attach::{Attachment, host_interface},
};

/// Where dockerd looks for plugin sockets.
pub const SOCKET: &str = "/run/docker/plugins/weft.sock";

/// IPAM owners of addresses Docker asked for start with this.
pub const OWNER_PREFIX: &str = "docker:";
/// Docker asks a network's gateway address of IPAM: it is the host's own
/// gateway on the bridge in that pool, exposed on demand.
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
/// How an endpoint is known in the attachment registry (`weft ps`).
fn endpoint_key(endpoint: &str) -> String {
    format!("docker:{endpoint}")
}
/// With `RequiresMACAddress`, Docker names the endpoint's MAC here.
const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";

/// A failure as Docker's plugin client reads it.
pub struct DockerError(pub String);

impl<E: std::fmt::Display> From<E> for DockerError {
    fn from(e: E) -> DockerError {
        DockerError(e.to_string())
    }
}

type Answer = Result<Value, DockerError>;

/// What Docker hears when the router task is gone.
fn stopping<E>(_: E) -> DockerError {
    DockerError("weft: the router is stopping".into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolRequest {
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(default, rename = "V6")]
    v6: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressRequest {
    #[serde(rename = "PoolID")]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    options: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointRequest {
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    /// The network (Join), to find the container's name in.
    #[serde(default, rename = "NetworkID")]
    network_id: String,
    /// The container's network namespace (Join).
    #[serde(default)]
    sandbox_key: String,
    /// What Docker's IPAM gave the endpoint (CreateEndpoint).
    #[serde(default)]
    interface: Option<EndpointInterface>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointInterface {
    #[serde(default)]
    address: String,
    #[serde(default)]
    mac_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NetworkRequest {
    #[serde(default, rename = "IPv4Data")]
    ipv4_data: Vec<PoolData>,
    #[serde(default, rename = "IPv6Data")]
    ipv6_data: Vec<PoolData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolData {
    #[serde(default)]
    pool: String,
}

/// An API refusal as Docker hears it: its text.
fn refused(response: hyper::Response<http_body_util::Full<Bytes>>) -> DockerError {
    let text = response
        .into_body()
        .into_inner()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    DockerError(format!("weft: {text}"))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DockerError> {
    serde_json::from_slice(body).map_err(|e| DockerError(format!("weft: bad request: {e}")))
}

/// The container side of an endpoint's veth until Docker moves it into
/// the container and renames it.
/// How long after Join a container's name is looked for.
const DOCKER_NAMES_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

/// The name and aliases of the container on `network` whose endpoint is
/// `endpoint`, from dockerd (`docker network inspect`); `None` until
/// dockerd lists it.
/// What dockerd says of the container behind an endpoint: its name and
/// network aliases (for DNS) and its labels (for network policy).
struct DockerFacts {
    names: Vec<String>,
    labels: BTreeMap<String, String>,
}

/// The container label that puts a Docker container in a policy
/// namespace (`default` without it).
pub const NAMESPACE_LABEL: &str = "weft.namespace";

async fn docker_facts(host: &str, network: &str, endpoint: &str) -> Option<DockerFacts> {
    let out = tokio::process::Command::new("docker")
        .args([
            "-H",
            host,
            "network",
            "inspect",
            network,
            "--format",
            "{{json .Containers}}",
        ])
        .output()
        .await
        .ok()?;
    let containers: Value = serde_json::from_slice(&out.stdout).ok()?;
    let (id, container) = containers
        .as_object()?
        .iter()
        .find(|(_, c)| c["EndpointID"].as_str() == Some(endpoint))?;
    let mut names = vec![container["Name"].as_str()?.to_string()];
    // Aliases given with --network-alias, from the container's side.
    let out = tokio::process::Command::new("docker")
        .args([
            "-H",
            host,
            "inspect",
            id,
            "--format",
            r#"{"networks": {{json .NetworkSettings.Networks}}, "labels": {{json .Config.Labels}}}"#,
        ])
        .output()
        .await
        .ok()?;
    let inspected: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let labels = inspected["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    if let Value::Object(networks) = &inspected["networks"] {
        for n in networks
            .values()
            .filter(|n| n["NetworkID"].as_str() == Some(network))
        {
            for alias in n["Aliases"].as_array().into_iter().flatten() {
                if let Some(alias) = alias.as_str()
                    && !id.starts_with(alias)
                    && !names.iter().any(|known| known == alias)
                {
                    names.push(alias.to_string());
                }
            }
        }
    }
    Some(DockerFacts { names, labels })
}

/// The endpoint record of a Docker container: its namespace from
/// [`NAMESPACE_LABEL`], and those of its labels that are valid
/// Kubernetes labels (others cannot be selected anyway, and are said).
fn endpoint_of_docker(
    addr: Ipv4Addr,
    labels: &BTreeMap<String, String>,
) -> crate::policy::EndpointBody {
    let mut body = crate::policy::EndpointBody::new(Some(addr));
    if let Some(ns) = labels.get(NAMESPACE_LABEL)
        && weft_policy::selector::check_value(ns, NAMESPACE_LABEL).is_ok()
        && !ns.is_empty()
    {
        body.namespace = ns.clone();
    }
    for (k, v) in labels {
        let valid = weft_policy::selector::check_key(k, "label").is_ok()
            && weft_policy::selector::check_value(v, "label").is_ok();
        if valid {
            body.labels.insert(k.clone(), v.clone());
        } else {
            tracing::debug!(label = %k, "a Docker label that is not a valid Kubernetes label; policies cannot select it");
        }
    }
    body
}

fn container_side(endpoint: &str) -> String {
    host_interface(&format!("docker:{endpoint}")).replacen("vweft", "vwefc", 1)
}

fn bridge_side(endpoint: &str) -> String {
    host_interface(&format!("docker:{endpoint}"))
}

/// Docker's pool ID for a subnet and the part of it to allocate from
/// (`--ip-range`).
fn pool_id(pool: Ipv4Net, sub: Option<Ipv4Net>) -> String {
    match sub {
        Some(s) => format!("weft:{pool}:{s}"),
        None => format!("weft:{pool}"),
    }
}

fn pool_of(id: &str) -> Result<(Ipv4Net, Option<Ipv4Net>), DockerError> {
    let unknown = || DockerError(format!("weft: unknown pool {id:?}"));
    let rest = id.strip_prefix("weft:").ok_or_else(unknown)?;
    let mut parts = rest.splitn(2, ':');
    let pool = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(unknown)?;
    let sub = match parts.next() {
        Some(s) => Some(s.parse().map_err(|_| unknown())?),
        None => None,
    };
    Ok((pool, sub))
}

impl Api {
    /// Answers a request of Docker's plugin protocol, or `None` if `path`
    /// is not one.
    pub(super) async fn docker(&self, path: &str, body: &Bytes) -> Option<Answer> {
        let answer = match path.strip_prefix('/')? {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                // Local: Docker needs no cluster store; the overlay itself
                // connects the hosts.
                Ok(json!({ "Scope": "local", "ConnectivityScope": "global" }))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(body).await,
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(body).await,
            "NetworkDriver.EndpointOperInfo" => Ok(json!({ "Value": {} })),
            "NetworkDriver.Join" => self.join(body).await,
            "NetworkDriver.Leave" => self.leave(body).await,
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(body).await,
            "NetworkDriver.DeleteNetwork"
            | "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "NetworkDriver.ProgramExternalConnectivity"
            | "NetworkDriver.RevokeExternalConnectivity" => Ok(json!({})),
            "IpamDriver.GetCapabilities" => Ok(json!({ "RequiresMACAddress": true })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": "weft",
                "GlobalDefaultAddressSpace": "weft",
            })),
            "IpamDriver.RequestPool" => self.request_pool(body).await,
            "IpamDriver.ReleasePool" => Ok(json!({})),
            "IpamDriver.RequestAddress" => self.request_address(body).await,
            "IpamDriver.ReleaseAddress" => self.release_address(body).await,
            _ => return None,
        };
        Some(answer)
    }

    fn host_network(&self) -> Result<&HostNetwork, DockerError> {
        self.network
            .as_deref()
            .ok_or_else(|| DockerError("weft: this router has no overlay network".into()))
    }

    async fn range(&self) -> Result<(Ipv4Net, Ipv4Net), DockerError> {
        let status = self.ipam_status().await.map_err(stopping)?;
        Ok((status.range, status.default_subnet))
    }

    async fn create_network(&self, body: &Bytes) -> Answer {
        let req: NetworkRequest = parse(body)?;
        if !req.ipv6_data.is_empty() {
            return Err(DockerError(
                "weft: IPv6 is not supported; create the network without --ipv6".into(),
            ));
        }
        let (range, _) = self.range().await?;
        for data in &req.ipv4_data {
            let pool: Ipv4Net = data.pool.parse()?;
            if !range.contains(&pool) {
                return Err(DockerError(format!(
                    "weft: subnet {pool} is outside weft's range {range}; use --ipam-driver weft, or a --subnet inside the range"
                )));
            }
        }
        Ok(json!({}))
    }

    async fn request_pool(&self, body: &Bytes) -> Answer {
        let req: PoolRequest = parse(body)?;
        if req.v6 {
            return Err(DockerError("weft: IPAM gives IPv4 addresses only".into()));
        }
        let (range, default) = self.range().await?;
        let (pool, sub) = match (req.pool.as_str(), req.sub_pool.as_str()) {
            ("", "") => (default, None),
            ("", _) => {
                return Err(DockerError("weft: an --ip-range needs a --subnet".into()));
            }
            (p, "") => (p.parse::<Ipv4Net>()?, None),
            (p, s) => (p.parse::<Ipv4Net>()?, Some(s.parse::<Ipv4Net>()?)),
        };
        let inner = sub.unwrap_or(pool);
        if !range.contains(&pool) || !pool.contains(&inner) {
            return Err(DockerError(format!(
                "weft: subnet {pool} (range {inner}) is outside weft's range {range}: pick one inside it, or start the routers with --ipalloc-range"
            )));
        }
        Ok(json!({ "PoolID": pool_id(pool, sub), "Pool": pool.to_string(), "Data": {} }))
    }

    async fn request_address(&self, body: &Bytes) -> Answer {
        let req: AddressRequest = parse(body)?;
        let (pool, sub) = pool_of(&req.pool_id)?;
        let option = |k: &str| req.options.as_ref().and_then(|o| o.get(k));
        let gateway = option("RequestAddressType").is_some_and(|t| t == GATEWAY_REQUEST);
        let wanted: Option<Ipv4Addr> = match req.address.as_str() {
            "" => None,
            a => Some(a.parse()?),
        };
        if gateway {
            let net = self
                .ensure_gateway(Some(sub.unwrap_or(pool)))
                .await
                .map_err(refused)?;
            let cidr = Ipv4Net::new(net.addr(), pool.prefix_len()).expect("a subnet's prefix");
            return Ok(json!({ "Address": cidr.to_string(), "Data": {} }));
        }
        // Keyed on what Docker keeps for the endpoint (its MAC), so that
        // asking again for an endpoint's address is recognised, and anyone
        // else asking for it is refused.
        let owner = match option(MAC_OPTION) {
            Some(mac) => format!("{OWNER_PREFIX}{mac}"),
            None => format!("{OWNER_PREFIX}{:016x}", rand::random::<u64>()),
        };
        let answer = self
            .ipam_allocate(owner.clone(), Some(sub.unwrap_or(pool)), wanted)
            .await
            .map_err(stopping)?;
        let addr = match answer {
            Ok(a) => a.addr,
            Err(weft_ipam::IpamError::AddressInUse { addr, holder }) if holder == owner => addr,
            Err(e) => return Err(DockerError(format!("weft: {e}"))),
        };
        let cidr = Ipv4Net::new(addr, pool.prefix_len()).expect("a subnet's prefix");
        Ok(json!({ "Address": cidr.to_string(), "Data": {} }))
    }

    /// The IPAM owner of `addr`, if Docker asked for it.
    async fn docker_owner(&self, addr: Ipv4Addr) -> Option<String> {
        let status = self.ipam_status().await.ok()?;
        status
            .containers
            .into_iter()
            .find(|(id, held)| id.starts_with(OWNER_PREFIX) && held.contains(&addr))
            .map(|(id, _)| id)
    }

    async fn release_address(&self, body: &Bytes) -> Answer {
        let req: AddressRequest = parse(body)?;
        let addr: Ipv4Addr = req.address.split('/').next().unwrap_or_default().parse()?;
        if let Some(owner) = self.docker_owner(addr).await {
            self.release(owner, Some(addr)).await.map_err(stopping)?;
        }
        Ok(json!({}))
    }

    /// Remembers the endpoint for `weft ps`: its address and MAC now, its
    /// container when it joins.
    async fn create_endpoint(&self, body: &Bytes) -> Answer {
        let req: EndpointRequest = parse(body)?;
        let network = self.host_network()?;
        let interface = req.interface.unwrap_or(EndpointInterface {
            address: String::new(),
            mac_address: String::new(),
        });
        let addresses = match interface.address.as_str() {
            "" => Vec::new(),
            a => vec![a.parse::<ipnet::IpNet>()?],
        };
        let attachment = Attachment {
            id: endpoint_key(&req.endpoint_id),
            target: String::new(),
            interface: bridge_side(&req.endpoint_id),
            container_interface: String::new(),
            owner: format!("{OWNER_PREFIX}{}", interface.mac_address),
            mac: interface.mac_address,
            addresses,
            gateway: None,
        };
        network.registry.lock().await.record(attachment)?;
        Ok(json!({}))
    }

    async fn delete_endpoint(&self, body: &Bytes) -> Answer {
        self.leave(body).await?;
        let req: EndpointRequest = parse(body)?;
        let network = self.host_network()?;
        let owner = network
            .registry
            .lock()
            .await
            .get(&endpoint_key(&req.endpoint_id))
            .map(|a| a.ipam_owner());
        if let (Some(owner), true) = (owner, self.names.is_some()) {
            self.remove_names(Some(owner), None, None)
                .await
                .map_err(stopping)?;
        }
        network
            .registry
            .lock()
            .await
            .forget(&endpoint_key(&req.endpoint_id))?;
        Ok(json!({}))
    }

    /// A veth pair: one end on the bridge, the other for Docker to move
    /// into the container; the host's gateway as its default route.
    async fn join(&self, body: &Bytes) -> Answer {
        let req: EndpointRequest = parse(body)?;
        let network = self.host_network()?;
        let key = endpoint_key(&req.endpoint_id);
        let address = network
            .registry
            .lock()
            .await
            .get(&key)
            .and_then(|a| a.addresses.first().copied());
        let gateway = match address {
            Some(ipnet::IpNet::V4(a)) => self.gateway_for(a.addr()).await,
            _ => None,
        };
        let (host, peer) = (
            bridge_side(&req.endpoint_id),
            container_side(&req.endpoint_id),
        );
        let netlink = &network.netlink;
        // Left over from a container that was killed along with dockerd.
        netlink.delete_named(&host).await?;
        netlink.add_veth(&host, &peer, network.mtu).await?;
        // The overlay MTU on both ends: Docker keeps what it is handed.
        let inner = netlink.require(&peer).await?;
        netlink.set_mtu_up(inner.index, network.mtu).await?;
        let link = netlink.require(&host).await?;
        netlink.set_mtu_up(link.index, network.mtu).await?;
        netlink.attach(link.index, network.bridge).await?;
        let mut registry = network.registry.lock().await;
        if let Some(mut a) = registry.get(&key).cloned() {
            a.target = req.sandbox_key.clone();
            a.gateway = gateway.map(|g| g.addr());
            if let (Some(ipnet::IpNet::V4(addr)), true) = (address, self.names.is_some()) {
                // Docker says the container's name only once it has
                // started; learnt in the background.
                tokio::spawn(self.clone().learn_docker_names(
                    req.network_id.clone(),
                    req.endpoint_id.clone(),
                    addr.addr(),
                    a.ipam_owner(),
                ));
            }
            registry.record(a)?;
        }
        let mut answer = json!({
            "InterfaceName": { "SrcName": peer, "DstPrefix": "eth" },
            // Multicast goes to the overlay too, as on a LAN.
            "StaticRoutes": [{ "Destination": "224.0.0.0/4", "RouteType": 1 }],
            // The host's gateway on the bridge is the way out; Docker's
            // own gateway bridge would add a second one.
            "DisableGatewayService": true,
        });
        if let Some(g) = gateway {
            answer["Gateway"] = json!(g.addr().to_string());
        }
        Ok(answer)
    }

    /// Registers the container behind `endpoint` under its name and its
    /// aliases on `network`, as dockerd tells them, once it does (within
    /// [`DOCKER_NAMES_WITHIN`]).
    async fn learn_docker_names(
        self,
        network: String,
        endpoint: String,
        addr: Ipv4Addr,
        owner: String,
    ) {
        let deadline = tokio::time::Instant::now() + DOCKER_NAMES_WITHIN;
        while tokio::time::Instant::now() < deadline {
            if let Some(facts) = docker_facts(&self.docker_host, &network, &endpoint).await {
                let body = endpoint_of_docker(addr, &facts.labels);
                self.set_endpoint(owner.clone(), Some(body)).await;
                let specs = match &self.names {
                    Some(service) => facts
                        .names
                        .iter()
                        .filter_map(|n| service.specs(std::slice::from_ref(n)).ok())
                        .flatten()
                        .collect(),
                    None => Vec::new(),
                };
                let _ = self.add_names(specs, addr, owner).await;
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        tracing::info!(%endpoint, "dockerd did not name the container of this endpoint; it has no name in weft's DNS");
    }

    async fn leave(&self, body: &Bytes) -> Answer {
        let req: EndpointRequest = parse(body)?;
        let netlink = &self.host_network()?.netlink;
        netlink.delete_named(&bridge_side(&req.endpoint_id)).await?;
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Api {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        Api {
            router: tx,
            network: None,
            token: "t".into(),
            names: None,
            docker_host: "unix:///nonexistent".into(),
            policy: None,
            http: None,
        }
    }

    #[tokio::test]
    async fn docker_learns_what_the_plugin_implements() {
        let api = api();
        let v = api
            .docker("/Plugin.Activate", &Bytes::new())
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(v["Implements"], json!(["NetworkDriver", "IpamDriver"]));
        let v = api
            .docker("/NetworkDriver.GetCapabilities", &Bytes::new())
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(v["Scope"], "local");
        assert!(api.docker("/status", &Bytes::new()).await.is_none());
        // Joining needs the overlay; without it the error says so.
        let join = Bytes::from(r#"{"EndpointID": "e1", "NetworkID": "n1", "SandboxKey": "/x"}"#);
        let Some(Err(DockerError(e))) = api.docker("/NetworkDriver.Join", &join).await else {
            panic!("join without an overlay must fail");
        };
        assert!(e.contains("no overlay network"), "{e}");
    }

    #[test]
    fn endpoint_interface_names_fit_and_differ() {
        let (host, peer) = (bridge_side("0123abcd"), container_side("0123abcd"));
        assert!(host.len() <= 15 && peer.len() <= 15, "{host} {peer}");
        assert_ne!(host, peer);
        assert_eq!(host, bridge_side("0123abcd"));
        let net: Ipv4Net = "10.40.0.0/16".parse().unwrap();
        let sub: Ipv4Net = "10.40.8.0/24".parse().unwrap();
        assert_eq!(pool_of(&pool_id(net, None)).ok(), Some((net, None)));
        assert_eq!(
            pool_of(&pool_id(net, Some(sub))).ok(),
            Some((net, Some(sub)))
        );
        assert!(pool_of("bogus").is_err());
    }
}
