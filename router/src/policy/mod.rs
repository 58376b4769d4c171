//! Network policy on the router: the gossiped record set of policies and
//! endpoints ([`records`], pure), the requests that change it (carried out
//! on the router task, so the mesh sends the change at once), the file
//! that keeps it across a restart, and the step from records to what this
//! host enforces (compiled by `weft-policy`, written into weft's nftables
//! table by the firewall keeper).

pub mod cluster;
pub mod droplog;
pub mod records;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    time::Instant,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use weft_policy::{
    Endpoint, Inventory, Plan, Policy, Protocol,
    compile::compile,
    model::{DEFAULT_NAMESPACE, NamedPorts},
};

use self::records::{Entries, Key, Records};

/// What the endpoint record of a container says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointBody {
    pub addr: Option<Ipv4Addr>,
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Named ports: `http` -> `80/tcp`.
    #[serde(default)]
    pub ports: BTreeMap<String, String>,
}

impl EndpointBody {
    pub fn new(addr: Option<Ipv4Addr>) -> EndpointBody {
        EndpointBody {
            addr,
            namespace: DEFAULT_NAMESPACE.into(),
            ..Default::default()
        }
    }

    fn named_ports(&self) -> NamedPorts {
        self.ports
            .iter()
            .filter_map(|(name, spec)| Some((name.clone(), parse_port(spec).ok()?)))
            .collect()
    }
}

/// `80/tcp`, `53/udp`, `9000/sctp`, or `80` (TCP).
pub fn parse_port(text: &str) -> Result<(Protocol, u16), String> {
    let (number, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = parse_protocol(protocol)?;
    let number: u16 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{number:?} is not a port (1-65535)"))?;
    Ok((protocol, number))
}

/// `tcp`, `udp` or `sctp`, in any case.
pub fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        "sctp" => Ok(Protocol::Sctp),
        other => Err(format!("{other:?} is not tcp, udp or sctp")),
    }
}

/// What the API and the router's tasks ask of the records.
#[derive(Debug)]
pub enum PolicyRequest {
    /// Stores checked policies; answers, per id, whether it changed.
    Apply {
        objects: Vec<(NetworkPolicy, Policy)>,
        reply: oneshot::Sender<Vec<(String, bool)>>,
    },
    /// Removes policies by id; answers the ids that were not there.
    Delete {
        ids: Vec<String>,
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Sets (or, with `None`, removes) a container's endpoint record.
    Endpoint {
        owner: String,
        body: Option<EndpointBody>,
    },
    /// Sets a namespace's labels (none: removes them).
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
        reply: oneshot::Sender<bool>,
    },
    /// The Kubernetes view changed: compile again (the router does after
    /// every request).
    ClusterChanged,
    /// The containers attached here now, by owner: records of gone ones
    /// are removed, new ones get a record with no labels.
    Attached {
        now_attached: BTreeMap<String, Option<Ipv4Addr>>,
    },
}

impl PolicyRequest {
    pub fn apply(self, records: &mut Records, now: Instant) {
        let me = records.me();
        match self {
            PolicyRequest::Apply { objects, reply } => {
                let changed = objects
                    .into_iter()
                    .map(|(object, policy)| {
                        let body = serde_json::to_string(&object).expect("a policy serializes");
                        let id = policy.id();
                        let changed = records.set(now, Key::Policy(id.clone()), Some(body));
                        (id, changed)
                    })
                    .collect();
                let _ = reply.send(changed);
            }
            PolicyRequest::Delete { ids, reply } => {
                let missing = ids
                    .into_iter()
                    .filter(|id| !records.set(now, Key::Policy(id.clone()), None))
                    .collect();
                let _ = reply.send(missing);
            }
            PolicyRequest::Endpoint { owner, body } => {
                let body = body.map(|b| serde_json::to_string(&b).expect("an endpoint serializes"));
                records.set(now, Key::Endpoint(me, owner), body);
            }
            PolicyRequest::Namespace {
                name,
                labels,
                reply,
            } => {
                let body = (!labels.is_empty())
                    .then(|| serde_json::to_string(&labels).expect("labels serialize"));
                let _ = reply.send(records.set(now, Key::Namespace(name), body));
            }
            PolicyRequest::ClusterChanged => {}
            PolicyRequest::Attached { now_attached } => {
                let ours: BTreeSet<String> = records
                    .endpoints()
                    .into_iter()
                    .filter(|(origin, _, _)| *origin == me)
                    .map(|(_, owner, _)| owner.to_string())
                    .collect();
                for gone in ours.iter().filter(|o| !now_attached.contains_key(*o)) {
                    records.set(now, Key::Endpoint(me, gone.clone()), None);
                }
                for (owner, addr) in now_attached.into_iter().filter(|(o, _)| !ours.contains(o)) {
                    let body = serde_json::to_string(&EndpointBody::new(addr)).expect("serializes");
                    records.set(now, Key::Endpoint(me, owner), Some(body));
                }
            }
        }
    }
}

/// The policies and the mesh's endpoints as the compiler takes them;
/// records that do not read (from a newer router, say) are skipped and
/// said in `problems`.
pub struct Known {
    pub policies: Vec<Policy>,
    pub inventory: Inventory,
    /// Which endpoints are this router's.
    pub ours: BTreeSet<Ipv4Addr>,
    pub problems: Vec<String>,
}

impl Known {
    /// What is in force: the Kubernetes API server's view once it has
    /// listed everything, else the mesh's records.
    pub fn current(records: &Records, cluster: Option<&ClusterHandle>) -> Known {
        if let Some(cluster) = cluster {
            let view = cluster.lock().unwrap_or_else(|p| p.into_inner());
            if view.synced() {
                return view.known(&local_addresses(records));
            }
        }
        Known::of(records)
    }

    pub fn of(records: &Records) -> Known {
        let mut problems = Vec::new();
        let mut policies = Vec::new();
        for (id, value) in records.policies() {
            let body = value.body.as_deref().unwrap_or_default();
            match serde_json::from_str::<NetworkPolicy>(body)
                .map_err(|e| e.to_string())
                .and_then(|o| Policy::from_k8s(&o).map_err(|e| e.to_string()))
            {
                Ok(p) => policies.push(p),
                Err(e) => problems.push(format!("policy {id} is not in force: {e}")),
            }
        }
        let mut inventory = Inventory::default();
        for (name, body) in records.namespaces() {
            match serde_json::from_str(body) {
                Ok(labels) => {
                    inventory.namespaces.insert(name.to_string(), labels);
                }
                Err(_) => problems.push(format!("the labels of namespace {name} do not read")),
            }
        }
        let mut ours = BTreeSet::new();
        for (origin, owner, body) in records.endpoints() {
            let Ok(body) = serde_json::from_str::<EndpointBody>(body) else {
                problems.push(format!("the labels of {owner} do not read"));
                continue;
            };
            let Some(addr) = body.addr else { continue };
            if origin == records.me() {
                ours.insert(addr);
            }
            inventory.endpoints.push(Endpoint {
                name: endpoint_name(owner, &body),
                addr,
                namespace: body.namespace.clone(),
                labels: body.labels.clone(),
                ports: body.named_ports(),
            });
        }
        Known {
            policies,
            inventory,
            ours,
            problems,
        }
    }

    /// What this host enforces: its own containers.
    pub fn plan_here(&self) -> Plan {
        compile(&self.policies, &self.inventory, |e| {
            self.ours.contains(&e.addr)
        })
    }

    /// What the whole mesh enforces, for `weft policy check`.
    pub fn plan_everywhere(&self) -> Plan {
        compile(&self.policies, &self.inventory, |_| true)
    }

    /// An address, or a container by its name (`namespace/name` or owner).
    pub fn resolve(&self, text: &str) -> Option<Ipv4Addr> {
        text.parse().ok().or_else(|| {
            self.inventory
                .endpoints
                .iter()
                .find(|e| e.name == text || e.name.ends_with(&format!("/{text}")))
                .map(|e| e.addr)
        })
    }
}

/// The addresses of the containers this router attached (its own
/// endpoint records).
fn local_addresses(records: &Records) -> BTreeSet<Ipv4Addr> {
    records
        .endpoints()
        .into_iter()
        .filter(|(origin, _, _)| *origin == records.me())
        .filter_map(|(_, _, body)| serde_json::from_str::<EndpointBody>(body).ok()?.addr)
        .collect()
}

/// The Kubernetes view, shared by its watchers, the router and the API.
pub type ClusterHandle = std::sync::Arc<std::sync::Mutex<cluster::ClusterView>>;

/// How status names a container: `namespace/name` from a runtime's owner
/// id (`attach:NAME`, CNI and Docker ids stay as they are).
fn endpoint_name(owner: &str, body: &EndpointBody) -> String {
    let short = owner.strip_prefix("attach:").unwrap_or(owner);
    format!("{}/{short}", body.namespace)
}

/// The records kept on disk.
#[derive(Serialize, Deserialize)]
pub struct Stored {
    pub clock: u64,
    pub entries: Entries,
}

impl Stored {
    pub fn of(records: &Records) -> Stored {
        let (clock, entries) = records.snapshot();
        Stored { clock, entries }
    }

    pub fn load(path: &Path) -> anyhow::Result<Option<Stored>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the policies in {} are unreadable ({e}); move the file aside to start with none on this host (the mesh's other hosts still have them)",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("policies serialize");
        crate::state_file::replace(path, &json)
    }
}

/// Turns br_netfilter's IPv4 hook on in this namespace: containers on one
/// host talk across the bridge, and only so do their frames meet the inet
/// hooks and connection tracking that policy needs.
pub fn bridge_calls_iptables() -> std::io::Result<()> {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if !Path::new(path).exists() {
        // Not loaded yet; as kube-proxy does, load it.
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(path, "1"),
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!("{path}: {e} (load br_netfilter: modprobe br_netfilter)"),
        )),
    }
}
