//! The HTTP API, on a unix socket in the run directory (what the command
//! line uses) and on a TCP address (127.0.0.1:6784 by default).
//!
//! | method and path        | answer                                     |
//! |------------------------|--------------------------------------------|
//! | `GET /status`          | summary, text                              |
//! | `GET /status/peers`    | table of peers and their connections       |
//! | `GET /status/connections` | table of this router's connections      |
//! | `GET /status/targets`  | table of addresses this router connects to |
//! | `GET /report`          | everything, JSON ([`report::Report`])      |
//! | `POST /connect`        | `{"peers": ["host:port"], "replace": false}` |
//! | `POST /forget`         | `{"peers": ["host:port"]}`                 |
//! | `GET /metrics`         | Prometheus text format                     |
//! | `POST /attach`         | `{"target": "ns", "addresses": ["10.32.0.5/12"], "names": ["db:5432"]}`; with `"id"`, `"interface"`, `"subnet"` for CNI |
//! | `POST /detach`         | `{"target": "ns", "addresses": []}` (none: all) |
//! | `POST /attach/check`   | `{"id": "..."}`: is the attachment whole?  |
//! | `GET /ps`              | attached containers, JSON                  |
//! | `GET /dp`, `/dp/flows` | the kernel fast datapath, text             |
//! | `POST /ipam/allocate`  | `{"id": "c1", "subnet": null, "address": null}` → `{"address": "10.32.0.1/12"}` |
//! | `POST /ipam/release`   | `{"id": "c1", "address": null}` (none: all) |
//! | `GET /status/ipam`, `/ipam` | IPAM per peer, text or JSON          |
//! | `POST /ipam/rmpeer`    | `{"peer": "NAME or nickname"}`             |
//! | `POST /ipam/reset`     | `{"force": false}`                         |
//! | `POST /expose`         | `{"addresses": []}` (none: one from IPAM); the host's gateway |
//! | `POST /hide`           | `{"addresses": []}` (none: all)            |
//! | `POST /dns/add`        | `{"address": "10.32.0.5", "names": ["db"]}` |
//! | `POST /dns/remove`     | `{"address": "10.32.0.5", "names": []}` (none: all of it) |
//! | `POST /dns/lookup`     | `{"name": "db"}`: the addresses, text       |
//! | `GET /dns/args`        | `--dns ADDR --dns-search DOMAIN`, text      |
//! | `GET /status/dns`      | the names and the DNS server, text          |
//! | `GET`/`POST /qos/<container>` | Synthetic Network's JSON, verbatim |
//! | `GET`/`POST`/`DELETE /conditions/<container>` | weft's form; `GET /conditions`: all, with counters |
//! | `GET /ui` (and `/ui/*.js`, `/ui/style.css`) | the web page (`weft ui`) |
//! | `GET /ui/url` | the page's address with the token; unix socket only |
//! | `GET /containers` | this host's containers: addresses, names, labels, policies, conditions, JSON |
//! | `GET /flows` | flow top: per-flow counts and rates of local containers, by rule |
//! | `POST /flows` | the same, and counting on for another minute (flow top's reader) |
//! | `POST`/`DELETE /synthetic/<container>` | `{"port": 0, "ui": null}`: a loopback port answering Synthetic Network's own API for it; `GET /synthetic`: the open ones |
//! | `POST /stop`           | stops the router                           |

pub mod access;
mod condition;
pub mod docker;
pub mod gateway;
pub mod metrics;
mod names;
pub mod policy;
pub mod report;
mod synthetic;
mod ui;

use std::{convert::Infallible, net::SocketAddr, path::Path};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, Request as HttpRequest, Response, StatusCode,
    body::{Bytes, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::{
    net::{TcpListener, UnixListener},
    sync::{mpsc, oneshot},
};

use self::access::Door;
use crate::{
    daemon::router::Request,
    ipam::IpamRequest,
    netdev::{HostNetwork, target::Target},
};

/// The largest request body accepted: peer lists are short.
const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send a request's head (also while a
/// kept-alive connection idles) and its body.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections at once per listener.
const MAX_CONNECTIONS: usize = 128;

/// What the API serves from: a line to the router task, and the host's
/// overlay devices for attaching containers.
#[derive(Clone)]
pub struct Api {
    router: mpsc::Sender<Request>,
    network: Option<std::sync::Arc<HostNetwork>>,
    /// What a change over TCP must carry ([`access`]).
    token: std::sync::Arc<str>,
    names: Option<std::sync::Arc<crate::names::NameService>>,
    /// dockerd's API, for Docker containers' names.
    docker_host: std::sync::Arc<str>,
    policy: Option<policy::PolicyAccess>,
    /// Where the TCP API listens, for the page's address (`weft ui`).
    http: Option<SocketAddr>,
}

#[derive(Deserialize)]
struct AttachBody {
    /// The container's namespace; not needed to detach by `id`.
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    /// The runtime's name for the attachment, also its IPAM owner (CNI);
    /// without it the target names it and owns `attach:TARGET`.
    #[serde(default)]
    id: Option<String>,
    /// The container's interface (`weft0` by default).
    #[serde(default)]
    interface: Option<String>,
    /// Names the container answers to (`NAME` or `NAME:PORT`).
    #[serde(default)]
    names: Vec<String>,
    /// Network policy: the container's namespace (`default`), labels
    /// (`KEY=VALUE`) and named ports (`NAME=PORT[/PROTOCOL]`).
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    /// Names a runtime gives (a pod's or container's name): registered
    /// where they are valid DNS names, skipped where not, never a failure.
    #[serde(default)]
    runtime_names: Vec<String>,
    /// Where in the range to allocate, when no address is given.
    #[serde(default)]
    subnet: Option<ipnet::Ipv4Net>,
    /// Detaching what is not attached succeeds (CNI DEL is idempotent).
    #[serde(default)]
    missing_ok: bool,
    /// This address from IPAM (CNI's `ips`), instead of any.
    #[serde(default)]
    claim: Option<std::net::Ipv4Addr>,
    /// Expose the host if it has no gateway yet: the container needs one
    /// (a runtime's containers do).
    #[serde(default)]
    expose: bool,
}

impl AttachBody {
    /// The registry key and the IPAM owner.
    fn ids(&self) -> Result<(String, String), String> {
        match (&self.id, &self.target) {
            (Some(id), _) => Ok((id.clone(), id.clone())),
            (None, Some(t)) => Ok((t.clone(), format!("attach:{t}"))),
            (None, None) => Err("give a \"target\" or an \"id\"".into()),
        }
    }
}

#[derive(Deserialize)]
struct AllocateBody {
    id: String,
    #[serde(default)]
    subnet: Option<ipnet::Ipv4Net>,
    #[serde(default)]
    address: Option<std::net::Ipv4Addr>,
}

#[derive(Deserialize)]
struct ReleaseBody {
    id: String,
    #[serde(default)]
    address: Option<std::net::Ipv4Addr>,
}

#[derive(Deserialize)]
struct PeerBody {
    peer: String,
}

#[derive(Deserialize)]
struct ResetBody {
    /// Take the host's containers off the network and give up its
    /// gateway first.
    #[serde(default)]
    detach: bool,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("expected {shape}: {e}\n"))
}

/// The HTTP status for an IPAM error: the caller's fault, a conflict, or
/// "try again later".
fn ipam_error_status(e: &weft_ipam::IpamError) -> StatusCode {
    use weft_ipam::IpamError as E;
    match e {
        E::AddressInUse { .. } | E::ClusterConflict(_) => StatusCode::CONFLICT,
        E::NoSpace { .. } | E::Timeout { .. } | E::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

#[derive(Deserialize)]
struct PeersBody {
    peers: Vec<String>,
    #[serde(default)]
    replace: bool,
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())))
        .expect("valid response")
}

fn json(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn json_of<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    json(serde_json::to_string(value).expect("answers serialize") + "\n")
}

/// How `host` or `host:port` is written, before any lookup: a mistake
/// in it is named (an out-of-range port is not "Name or service not
/// known").
pub fn peer_syntax(peer: &str) -> Result<(String, u16), String> {
    if let Ok(address) = peer.parse::<SocketAddr>() {
        return Ok((address.ip().to_string(), address.port()));
    }
    let (host, port) = match peer.rsplit_once(':') {
        // An IPv6 address without brackets has colons of its own.
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse::<u32>().map_err(|_| {
                format!("peer {peer:?}: {p:?} is not a port number (host, or host:port)")
            })?;
            if !(1..=65535).contains(&port) {
                return Err(format!(
                    "peer {peer:?}: port {port} is out of range (1-65535)"
                ));
            }
            (h, port as u16)
        }
        _ => (peer, 6783),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "peer {peer:?}: {host:?} is not a host name or address"
        ));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Resolves `host` or `host:port` (port 6783 by default).
pub async fn resolve_peer(peer: &str) -> Result<SocketAddr, String> {
    let (host, port) = peer_syntax(peer)?;
    tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve peer {peer:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("peer {peer:?} resolves to no address"))
}

impl Api {
    pub fn new(
        router: mpsc::Sender<Request>,
        network: std::sync::Arc<HostNetwork>,
        token: String,
        names: std::sync::Arc<crate::names::NameService>,
        docker_host: String,
        policy: policy::PolicyAccess,
    ) -> Api {
        Api {
            router,
            network: Some(network),
            token: token.into(),
            names: Some(names),
            docker_host: docker_host.into(),
            policy: Some(policy),
            http: None,
        }
    }

    /// Tells the API where its TCP listener is, for the page's address.
    pub fn with_http(mut self, addr: SocketAddr) -> Api {
        self.http = Some(addr);
        self
    }

    async fn attach(
        &self,
        path: &str,
        body: &Bytes,
    ) -> Result<Response<Full<Bytes>>, Response<Full<Bytes>>> {
        use crate::netdev::attach::{AttachError, Plug};
        let bad = |msg: String| text(StatusCode::BAD_REQUEST, msg + "\n");
        let network = self
            .network
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))?;
        let body: AttachBody = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "expected {{\"target\": ..., \"addresses\": [...]}}: {e}"
            ))
        })?;
        let (key, owner) = body.ids().map_err(bad)?;
        // Names are checked before anything is done: a bad one changes
        // nothing.
        let mut names = match &self.names {
            Some(service) => service.specs(&body.names).map_err(|e| bad(e.to_string()))?,
            None if body.names.is_empty() => Vec::new(),
            None => return Err(bad("this router keeps no names".into())),
        };
        if let Some(service) = &self.names {
            for given in &body.runtime_names {
                match service.specs(std::slice::from_ref(given)) {
                    Ok(specs) => names.extend(specs.into_iter().filter(|s| s.port.is_none())),
                    Err(e) => {
                        tracing::info!(name = %given, reason = %e, "a runtime's name is not a DNS name; not registered")
                    }
                }
            }
        }
        // So are the labels.
        let endpoint = policy::endpoint_of(body.namespace.as_deref(), &body.labels, &body.ports)
            .map_err(bad)?;
        let mut addresses = Vec::new();
        for a in &body.addresses {
            let net: ipnet::IpNet = a.parse().map_err(|_| {
                bad(format!(
                    "{a:?} is not an address with a prefix length, like 10.32.0.5/12"
                ))
            })?;
            addresses.push(net);
        }
        let mut registry = network.registry.lock().await;
        let failed = |e: AttachError| {
            let status = match e {
                AttachError::NotAttached(_) | AttachError::Target(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            text(status, format!("{e}\n"))
        };
        match path {
            "/attach" => {
                let target = body
                    .target
                    .as_deref()
                    .ok_or_else(|| bad("give the container's \"target\"".into()))?;
                let target = Target::parse(target).map_err(|e| bad(e.to_string()))?;
                let interface = body
                    .interface
                    .clone()
                    .unwrap_or_else(|| crate::netdev::CONTAINER_IF.into());
                // A runtime's attachment is new by definition; `weft attach`
                // may add addresses to an existing one.
                if body.id.is_some()
                    && crate::netdev::attach::Registry::interface_exists(&target, &interface)
                        .await
                        .map_err(failed)?
                {
                    return Err(text(
                        StatusCode::CONFLICT,
                        format!("the container already has an interface {interface}\n"),
                    ));
                }
                if body.expose {
                    self.ensure_gateway(None).await?;
                }
                // What this call holds in IPAM for the owner: the given
                // addresses in the range, claimed (refused if anyone else
                // holds one), or one allocated. A failure further on gives
                // back exactly these, after the interface is gone.
                let status = self.ipam_status().await?;
                let already: Vec<std::net::Ipv4Addr> =
                    status.containers.get(&owner).cloned().unwrap_or_default();
                let mut held_now = Vec::new();
                let outcome = self
                    .hold_addresses(network, &status.range, &owner, &addresses, &mut held_now)
                    .await;
                if let Err(refused) = outcome {
                    for a in held_now.iter().filter(|a| !already.contains(a)) {
                        self.release(owner.clone(), Some(*a)).await?;
                    }
                    return Err(refused);
                }
                if addresses.is_empty() {
                    let got = self
                        .allocate(owner.clone(), body.subnet, body.claim)
                        .await?;
                    held_now.push(got.addr);
                    addresses.push(ipnet::IpNet::V4(got.cidr()));
                }
                let fresh: Vec<std::net::Ipv4Addr> = held_now
                    .into_iter()
                    .filter(|a| !already.contains(a))
                    .collect();
                let first_v4 = addresses.iter().find_map(|a| match a {
                    ipnet::IpNet::V4(v4) => Some(v4.addr()),
                    ipnet::IpNet::V6(_) => None,
                });
                let gateway = match first_v4 {
                    Some(a) => self.gateway_for(a).await.map(|g| g.addr()),
                    None => None,
                };
                let plug = Plug {
                    id: key,
                    interface,
                    gateway,
                    owner: owner.clone(),
                };
                let attached = registry
                    .attach(
                        &network.netlink,
                        network.bridge,
                        network.mtu,
                        &target,
                        &plug,
                        &addresses,
                    )
                    .await;
                match attached {
                    Ok(a) => {
                        let addr = a.first_ipv4();
                        self.set_endpoint(
                            owner.clone(),
                            Some(crate::policy::EndpointBody {
                                addr,
                                ..endpoint.clone()
                            }),
                        )
                        .await;
                        if !names.is_empty() {
                            for addr in a.addresses.iter().filter_map(|n| match n {
                                ipnet::IpNet::V4(v4) => Some(v4.addr()),
                                ipnet::IpNet::V6(_) => None,
                            }) {
                                self.add_names(names.clone(), addr, owner.clone()).await?;
                            }
                        }
                        let mut answer = serde_json::to_value(&a).expect("attachments serialize");
                        // Where the container resolves the mesh's names:
                        // its gateway, when this router serves DNS there
                        // (a runtime writes it into the resolv.conf).
                        if let (Some(service), Some(gateway)) = (&self.names, a.gateway)
                            && service.enabled
                        {
                            let domain = service.domain().as_str().trim_end_matches('.');
                            answer["dns"] = serde_json::json!({
                                "nameservers": [gateway.to_string()],
                                "search": [domain],
                            });
                        }
                        Ok(json_of(&answer))
                    }
                    Err(e) => {
                        // The interface is gone (attach undoes itself):
                        // only now may the addresses go back.
                        for a in fresh {
                            self.release(owner.clone(), Some(a)).await?;
                        }
                        Err(failed(e))
                    }
                }
            }
            "/attach/check" => registry
                .check(&network.netlink, network.bridge, &key)
                .await
                .map(|a| json_of(&a))
                .map_err(failed),
            _ => {
                let detached = registry.detach(&network.netlink, &key, &addresses).await;
                let a = match detached {
                    Ok(a) => a,
                    Err(AttachError::NotAttached(_)) if body.missing_ok => None,
                    Err(e) => return Err(failed(e)),
                };
                if addresses.is_empty() {
                    self.set_endpoint(owner.clone(), None).await;
                    network.conditioning.forget(&key).await;
                }
                if self.names.is_some() {
                    if addresses.is_empty() {
                        self.remove_names(Some(owner.clone()), None, None).await?;
                    }
                    for net in &addresses {
                        if let std::net::IpAddr::V4(v4) = net.addr() {
                            self.remove_names(Some(owner.clone()), Some(v4), None)
                                .await?;
                        }
                    }
                }
                let mut released = Vec::new();
                if addresses.is_empty() {
                    released = self.release(owner, None).await?;
                } else {
                    for net in &addresses {
                        if let std::net::IpAddr::V4(v4) = net.addr() {
                            released.extend(self.release(owner.clone(), Some(v4)).await?);
                        }
                    }
                }
                // What was taken away: the interface (when all of it
                // went), the addresses given back, and what is left.
                Ok(json_of(&serde_json::json!({
                    "id": key,
                    "interface_removed": addresses.is_empty(),
                    "released": released,
                    "remaining": a,
                })))
            }
        }
    }

    /// Holds `addresses` (given by the user) for `owner`: those in
    /// `range` are claimed in IPAM, the others must not collide with the
    /// host's own network. What was held goes into `held`, also when a
    /// later address is refused.
    async fn hold_addresses(
        &self,
        network: &HostNetwork,
        range: &ipnet::Ipv4Net,
        owner: &str,
        addresses: &[ipnet::IpNet],
        held: &mut Vec<std::net::Ipv4Addr>,
    ) -> Result<(), Response<Full<Bytes>>> {
        for net in addresses {
            let ipnet::IpNet::V4(v4) = net else { continue };
            if range.contains(&v4.addr()) {
                let answer = self
                    .ipam_allocate(owner.to_string(), Some(v4.trunc()), Some(v4.addr()))
                    .await?;
                match answer {
                    Ok(_) => held.push(v4.addr()),
                    Err(e) => {
                        return Err(text(
                            ipam_error_status(&e),
                            format!("cannot attach with {v4}: {e}\n"),
                        ));
                    }
                }
                continue;
            }
            // Outside the range: it must not shadow the host's network.
            let problem = crate::netdev::collision(&network.netlink, *v4, "address")
                .await
                .map_err(|e| text(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")))?;
            if let Some(problem) = problem {
                return Err(text(StatusCode::CONFLICT, problem + "\n"));
            }
        }
        Ok(())
    }

    async fn allocate(
        &self,
        id: String,
        subnet: Option<ipnet::Ipv4Net>,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<weft_ipam::Allocation, Response<Full<Bytes>>> {
        self.ipam_allocate(id, subnet, address)
            .await?
            .map_err(|e| text(ipam_error_status(&e), format!("{e}\n")))
    }

    /// IPAM's own answer, for callers that tell its errors apart.
    async fn ipam_allocate(
        &self,
        id: String,
        subnet: Option<ipnet::Ipv4Net>,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<Result<weft_ipam::Allocation, weft_ipam::IpamError>, Response<Full<Bytes>>> {
        self.ask(|reply| {
            Request::Ipam(IpamRequest::Allocate {
                id,
                subnet,
                address,
                reply,
            })
        })
        .await
    }

    async fn release(
        &self,
        id: String,
        address: Option<std::net::Ipv4Addr>,
    ) -> Result<Vec<std::net::Ipv4Addr>, Response<Full<Bytes>>> {
        self.ask(|reply| Request::Ipam(IpamRequest::Release { id, address, reply }))
            .await
    }

    async fn ipam(
        &self,
        path: &str,
        body: &Bytes,
    ) -> Result<Response<Full<Bytes>>, Response<Full<Bytes>>> {
        let bad = |e: String| text(StatusCode::BAD_REQUEST, e);
        let outcome = |r: Result<String, String>| match r {
            Ok(t) => text(StatusCode::OK, t),
            Err(e) => text(StatusCode::CONFLICT, e + "\n"),
        };
        Ok(match path {
            "/ipam/allocate" => {
                let b: AllocateBody =
                    parse(body, r#"{"id": ..., "subnet": ..., "address": ...}"#).map_err(bad)?;
                let got = self.allocate(b.id, b.subnet, b.address).await?;
                json(serde_json::json!({ "address": got.cidr().to_string() }).to_string() + "\n")
            }
            "/ipam/release" => {
                let b: ReleaseBody = parse(body, r#"{"id": ..., "address": ...}"#).map_err(bad)?;
                let released = self.release(b.id, b.address).await?;
                json(serde_json::json!({ "released": released }).to_string() + "\n")
            }
            "/ipam/rmpeer" => {
                let b: PeerBody = parse(body, r#"{"peer": ...}"#).map_err(bad)?;
                outcome(
                    self.ask(|reply| {
                        Request::Ipam(IpamRequest::RemovePeer {
                            peer: b.peer,
                            reply,
                        })
                    })
                    .await?,
                )
            }
            _ => {
                let b: ResetBody = parse(body, r#"{"detach": false}"#).map_err(bad)?;
                // Held throughout, so nothing attaches between the
                // detaching and the reset.
                let network = self.network().await?;
                let mut registry = network.registry.lock().await;
                if b.detach {
                    self.detach_all(network, &mut registry).await?;
                }
                let answer = self
                    .ask(|reply| {
                        Request::Ipam(IpamRequest::Reset {
                            forget_unattached: b.detach,
                            reply,
                        })
                    })
                    .await?;
                drop(registry);
                outcome(answer)
            }
        })
    }

    async fn ps(&self) -> Result<Response<Full<Bytes>>, Response<Full<Bytes>>> {
        let Some(network) = &self.network else {
            return Ok(json("[]\n".into()));
        };
        let mut registry = network.registry.lock().await;
        let _ = registry.prune(&network.netlink).await;
        Ok(json(
            serde_json::to_string_pretty(&registry.list()).expect("attachments serialize") + "\n",
        ))
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, Response<Full<Bytes>>> {
        crate::daemon::router::ask(&self.router, make)
            .await
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "the router is stopping\n"))
    }

    /// The router's report, with what the API holds of the name service.
    async fn report(&self) -> Result<report::Report, Response<Full<Bytes>>> {
        let mut report = self.ask(Request::Report).await?;
        if let Some(service) = &self.names {
            report.dns = service.report();
        }
        if let Some(network) = &self.network {
            report.conditioned = network.conditioning.by().await;
        }
        Ok(report)
    }

    async fn ipam_status(&self) -> Result<weft_ipam::Status, Response<Full<Bytes>>> {
        self.ask(|reply| Request::Ipam(IpamRequest::Status(reply)))
            .await
    }

    /// Answers one request as the unix socket would; callable without a
    /// socket, which is how the routes are tested.
    pub async fn handle(&self, method: Method, path: &str, body: Bytes) -> Response<Full<Bytes>> {
        match self.route(Door::Unix, method, path, body).await {
            Ok(response) | Err(response) => response,
        }
    }

    async fn route(
        &self,
        door: Door,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>, Response<Full<Bytes>>> {
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if method == Method::POST
            && door == Door::Docker
            && let Some(answer) = self.docker(path, &body).await
        {
            let (status, value) = match answer {
                Ok(v) => (StatusCode::OK, v),
                Err(docker::DockerError(e)) => {
                    tracing::warn!(path, error = %e, "Docker plugin request refused");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({ "Err": e }),
                    )
                }
            };
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/vnd.docker.plugins.v1.2+json")
                .body(Full::new(Bytes::from(value.to_string())))
                .expect("valid response"));
        }
        Ok(match (method, path) {
            (Method::GET, "/status" | "") => text(StatusCode::OK, self.report().await?.summary()),
            (Method::GET, "/status/peers") => text(
                StatusCode::OK,
                self.ask(Request::Report).await?.peers_table(),
            ),
            (Method::GET, "/status/connections") => text(
                StatusCode::OK,
                self.ask(Request::Report).await?.connections_table(),
            ),
            (Method::GET, "/status/targets") => text(
                StatusCode::OK,
                self.ask(Request::Report).await?.targets_table(),
            ),
            (Method::GET, "/report") => {
                let report = self.report().await?;
                json(serde_json::to_string_pretty(&report).expect("reports serialize") + "\n")
            }
            (Method::GET, "/metrics") => {
                let mut m = self.ask(Request::Metrics).await?;
                if let Some(service) = &self.names {
                    m.dns = service.counters.snapshot();
                    m.names = service.names.lock().name_count();
                }
                self.policy_metrics(&mut m).await;
                self.condition_metrics(&mut m).await;
                let body = metrics::render(&m);
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", metrics::CONTENT_TYPE)
                    .body(Full::new(Bytes::from(body)))
                    .expect("valid response")
            }
            (Method::POST, "/connect" | "/forget") => {
                let body: PeersBody = serde_json::from_slice(&body).map_err(|e| {
                    text(
                        StatusCode::BAD_REQUEST,
                        format!("expected {{\"peers\": [\"host:port\", ...]}}: {e}\n"),
                    )
                })?;
                let mut peers = Vec::new();
                for peer in &body.peers {
                    let address = resolve_peer(peer)
                        .await
                        .map_err(|e| text(StatusCode::BAD_REQUEST, e + "\n"))?;
                    peers.push((peer.clone(), address));
                }
                if path == "/connect" {
                    let replace = body.replace;
                    self.ask(|done| Request::Connect {
                        peers,
                        replace,
                        done,
                    })
                    .await?;
                } else {
                    self.ask(|done| Request::Forget { peers, done }).await?;
                }
                text(StatusCode::OK, "")
            }
            (Method::POST, "/attach" | "/detach" | "/attach/check") => {
                return self.attach(path, &body).await;
            }
            (Method::GET, "/ps") => return self.ps().await,
            (Method::POST, "/dns/add" | "/dns/remove" | "/dns/lookup") => {
                return self.dns(path, &body).await;
            }
            (Method::GET, "/dns/args") => return self.dns_args().await,
            (
                Method::POST,
                "/policy/apply" | "/policy/delete" | "/policy/check" | "/policy/namespace",
            ) => {
                return self.policy(path, &body).await;
            }
            (m @ (Method::GET | Method::POST), p) if p.starts_with("/qos/") => {
                return self
                    .conditions(&m, condition::Form::Synthetic, &p[5..], &body)
                    .await;
            }
            (m @ (Method::GET | Method::POST | Method::DELETE), p)
                if p == "/conditions" || p.starts_with("/conditions/") =>
            {
                let id = p
                    .strip_prefix("/conditions")
                    .unwrap_or("")
                    .trim_start_matches('/');
                return self.conditions(&m, condition::Form::Weft, id, &body).await;
            }
            (m @ (Method::GET | Method::POST | Method::DELETE), p)
                if p == "/synthetic" || p.starts_with("/synthetic/") =>
            {
                let id = p
                    .strip_prefix("/synthetic")
                    .unwrap_or("")
                    .trim_start_matches('/');
                return self.synthetic_door(&m, id, &body).await;
            }
            (Method::GET, "/ui/url") if door == Door::Unix => self.ui_url(),
            (Method::GET, p) if p == "/ui" || p.starts_with("/ui/") => ui::asset(p)
                .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("no {p}; the page is /ui\n")))?,
            (Method::GET, "/containers") => return self.containers().await,
            (m @ (Method::GET | Method::POST), "/flows") => {
                return self.flows(m == Method::POST).await;
            }
            (Method::GET, "/policy/list") => return self.policy_list().await,
            (Method::GET, "/status/policy") => return self.policy_status().await,
            (Method::GET, "/status/dns") => return self.dns_status().await,
            (Method::POST, "/ipam/allocate" | "/ipam/release" | "/ipam/rmpeer" | "/ipam/reset") => {
                return self.ipam(path, &body).await;
            }
            (Method::GET, "/status/ipam" | "/ipam") => {
                let status = self.ipam_status().await?;
                if path == "/ipam" {
                    json(serde_json::to_string_pretty(&status).expect("status serializes") + "\n")
                } else {
                    text(StatusCode::OK, crate::ipam::status_text(&status))
                }
            }
            (Method::GET, "/dp" | "/dp/flows") => {
                let flows = path == "/dp/flows";
                let shown = tokio::task::spawn_blocking(move || {
                    if flows {
                        crate::fastdp::show::flows()
                    } else {
                        crate::fastdp::show::datapath()
                    }
                })
                .await
                .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))?;
                match shown {
                    Ok(out) => text(StatusCode::OK, out),
                    Err(e) => text(
                        StatusCode::NOT_FOUND,
                        format!("no fast datapath here: {e}; weft status connections says why\n"),
                    ),
                }
            }
            (Method::POST, "/expose") => return self.expose(&body).await,
            (Method::POST, "/hide") => return self.hide(&body).await,
            (Method::POST, "/stop") => {
                let _ = self.router.send(Request::Stop).await;
                text(StatusCode::OK, "stopping\n")
            }
            (method, path) => text(
                StatusCode::NOT_FOUND,
                format!(
                    "no {method} {path}; see `weft --help` or GET /status, /report, /metrics\n"
                ),
            ),
        })
    }

    async fn serve_http(
        self,
        door: Door,
        req: HttpRequest<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let (parts, body) = req.into_parts();
        let body = match self.admit(door, &parts, body).await {
            Ok(body) => body,
            Err(answer) => return Ok(answer),
        };
        let path = parts.uri.path();
        let answer = match self.route(door, parts.method, path, body).await {
            Ok(response) | Err(response) => response,
        };
        Ok(answer)
    }

    /// What every listener does before routing a request: the door's
    /// access rules, then the body, whole and in time. A refusal is the
    /// answer.
    async fn admit(
        &self,
        door: Door,
        parts: &hyper::http::request::Parts,
        body: Incoming,
    ) -> Result<Bytes, Response<Full<Bytes>>> {
        access::check(
            door,
            &parts.method,
            parts.uri.path(),
            &parts.headers,
            &self.token,
        )
        .map_err(|refusal| text(refusal.status, refusal.message + "\n"))?;
        collect(body).await
    }

    /// Answers a request, with the page's security headers on TCP.
    async fn serve_http_guarded(
        self,
        door: Door,
        req: HttpRequest<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let mut answer = self.serve_http(door, req).await?;
        if door == Door::Tcp {
            let headers = answer.headers_mut();
            for (name, value) in ui::SECURITY_HEADERS {
                headers.insert(*name, hyper::header::HeaderValue::from_static(value));
            }
        }
        Ok(answer)
    }

    /// Serves on every listener until the process ends: TCP, the unix
    /// socket, and Docker's plugin socket if given. Each has its own
    /// limit of connections at once; past it a new one is closed at once
    /// (and counted, said once a minute at most).
    pub async fn serve(self, tcp: TcpListener, unix: UnixListener, docker: Option<UnixListener>) {
        let docker_accept = async |d: &Option<UnixListener>| match d {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        };
        let limit = |n| std::sync::Arc::new(tokio::sync::Semaphore::new(n));
        let (tcp_limit, unix_limit, docker_limit) = (
            limit(MAX_CONNECTIONS),
            limit(MAX_CONNECTIONS),
            limit(MAX_CONNECTIONS),
        );
        let mut turned_away =
            crate::daemon::throttle::Summary::new(std::time::Duration::from_secs(60));
        loop {
            let (door, limit, accepted) = tokio::select! {
                Ok((stream, _)) = tcp.accept() => (Door::Tcp, &tcp_limit, Stream::Tcp(stream)),
                Ok((stream, _)) = unix.accept() => (Door::Unix, &unix_limit, Stream::Unix(stream)),
                Ok((stream, _)) = docker_accept(&docker) => (Door::Docker, &docker_limit, Stream::Unix(stream)),
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                if let Some(n) = turned_away.count(std::time::Instant::now()) {
                    tracing::warn!(door = ?door, turned_away = n, limit = MAX_CONNECTIONS, "API connections over the limit closed");
                }
                continue;
            };
            let api = self.clone();
            let handler = move |req| api.clone().serve_http_guarded(door, req);
            match accepted {
                Stream::Tcp(s) => serve_connection(s, permit, handler),
                Stream::Unix(s) => serve_connection(s, permit, handler),
            }
        }
    }
}

/// A request's body, whole, within [`MAX_BODY`] and [`READ_TIMEOUT`].
async fn collect(body: Incoming) -> Result<Bytes, Response<Full<Bytes>>> {
    let collected = tokio::time::timeout(
        READ_TIMEOUT,
        http_body_util::Limited::new(body, MAX_BODY).collect(),
    )
    .await;
    match collected {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )),
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time\n",
        )),
    }
}

/// Serves one connection with `handler`, holding `permit` (a place under
/// its listener's connection limit) until it ends. A client that sends no
/// complete request head within [`READ_TIMEOUT`] (idle or slow) is cut
/// off.
fn serve_connection<S, H, F>(stream: S, permit: tokio::sync::OwnedSemaphorePermit, handler: H)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(HttpRequest<Incoming>) -> F + Send + 'static,
    F: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        let _ = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service_fn(handler))
            .await;
        drop(permit);
    });
}

/// An accepted connection, before it is served.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Binds the unix socket, replacing a stale one from a crashed router;
/// only its owner (root) may connect, since it may change anything.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::{report::*, *};

    #[test]
    fn a_peer_that_is_written_wrong_says_what_is_wrong() {
        assert_eq!(peer_syntax("192.0.2.2"), Ok(("192.0.2.2".into(), 6783)));
        assert_eq!(
            peer_syntax("192.0.2.2:7000"),
            Ok(("192.0.2.2".into(), 7000))
        );
        assert_eq!(peer_syntax("h1.example"), Ok(("h1.example".into(), 6783)));
        assert_eq!(peer_syntax("[fd00::1]:7000"), Ok(("fd00::1".into(), 7000)));
        let e = peer_syntax("192.0.2.2:99999").unwrap_err();
        assert!(e.contains("port 99999 is out of range"), "{e}");
        let e = peer_syntax("h1:http").unwrap_err();
        assert!(e.contains("not a port number"), "{e}");
        assert!(peer_syntax(":7000").is_err());
    }

    fn canned() -> Report {
        Report {
            router: RouterInfo {
                name: "02:00:00:00:00:01".into(),
                nickname: "h1".into(),
                uid: 7,
                version: crate::VERSION.into(),
                protocol: "weft 2..2".into(),
                port: 6783,
                encryption: true,
                discovery: true,
                conn_limit: 100,
                uptime_seconds: 3,
            },
            peers: vec![PeerReport {
                name: "02:00:00:00:00:01".into(),
                nickname: "h1".into(),
                uid: 7,
                connections: vec![],
            }],
            connections: vec![ConnectionReport {
                peer: None,
                nickname: None,
                address: "192.0.2.9:6783".into(),
                outbound: true,
                state: "retrying".into(),
                overlay: None,
                encrypted: None,
                mtu: None,
                reason: Some("connect: connection refused".into()),
                advice: None,
            }],
            targets: vec![],
            host: HostReport::default(),
            dns: Default::default(),
            conditioned: [("conditioner".to_string(), 2), ("kernel".to_string(), 1)].into(),
        }
    }

    #[test]
    fn the_summary_says_how_many_containers_are_conditioned_and_by_what() {
        let summary = canned().summary();
        assert!(
            summary.contains(
                "Conditioning: 3 containers (2 by the conditioner, 1 by the kernel); `weft top` shows their flows"
            ),
            "{summary}"
        );
        let mut none = canned();
        none.conditioned.clear();
        assert!(!none.summary().contains("Conditioning"));
    }

    /// An API whose router task answers from a canned report and records
    /// what it was asked to connect to.
    fn api() -> (Api, tokio::task::JoinHandle<Vec<SocketAddr>>) {
        let (tx, mut rx) = mpsc::channel(8);
        let router = tokio::spawn(async move {
            let mut connected = Vec::new();
            while let Some(request) = rx.recv().await {
                match request {
                    Request::Report(reply) => {
                        let _ = reply.send(canned());
                    }
                    Request::Connect { peers, done, .. } => {
                        connected.extend(peers.into_iter().map(|(_, a)| a));
                        let _ = done.send(());
                    }
                    Request::Stop => break,
                    _ => {}
                }
            }
            connected
        });
        (
            Api {
                router: tx,
                network: None,
                token: "t".into(),
                names: None,
                docker_host: "unix:///nonexistent".into(),
                policy: None,
                http: None,
            },
            router,
        )
    }

    async fn body(response: Response<Full<Bytes>>) -> (StatusCode, String) {
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_answer_without_a_socket() {
        let (api, router) = api();
        let (status, text) = body(api.handle(Method::GET, "/status", Bytes::new()).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("Encryption: enabled"), "{text}");
        assert!(
            text.contains("Attention"),
            "a failing connection is flagged: {text}"
        );
        let (_, text) = body(api.handle(Method::GET, "/report", Bytes::new()).await).await;
        let report: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(report, canned());
        let (_, text) = body(
            api.handle(Method::GET, "/status/connections", Bytes::new())
                .await,
        )
        .await;
        assert!(text.contains("connect: connection refused"), "{text}");

        let connect = Bytes::from(r#"{"peers": ["192.0.2.5", "192.0.2.6:7000"]}"#);
        let (status, _) = body(api.handle(Method::POST, "/connect", connect).await).await;
        assert_eq!(status, StatusCode::OK);
        let (status, text) = body(
            api.handle(Method::POST, "/connect", Bytes::from("peers=x"))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains("expected"), "{text}");
        let (status, _) = body(api.handle(Method::GET, "/nonsense", Bytes::new()).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = body(api.handle(Method::POST, "/stop", Bytes::new()).await).await;
        assert_eq!(status, StatusCode::OK);
        let connected = router.await.unwrap();
        assert_eq!(
            connected,
            vec![
                "192.0.2.5:6783".parse().unwrap(),
                "192.0.2.6:7000".parse().unwrap()
            ]
        );
    }
}
