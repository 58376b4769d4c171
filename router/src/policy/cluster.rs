//! What the Kubernetes API server says about policy: pods (address, labels,
//! named ports), namespaces (labels) and NetworkPolicies, kept from the
//! events of three kube-rs watchers and turned into what the compiler takes.
//!
//! Pure: the watcher task converts each object with [`PodFacts::of`],
//! [`namespace_labels`] or [`PolicyFacts::of`] and feeds the events in;
//! nothing here does I/O. Two rules keep enforcement steady while the API
//! server comes and goes: a relist is buffered and swapped in whole at its
//! end (never half a list, which would open or close everything for a
//! moment), and a policy that stops reading keeps its last good version.
//! An error from the API server reaches no method here, so the last view
//! stays in force until the server answers again.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use weft_policy::{Endpoint, Inventory, Labels, Policy, model::NamedPorts};

use super::{Known, parse_protocol};

/// The watchers' events, which the tables take.
pub use kube::runtime::watcher::Event;

/// One kind of object, by `namespace/name`.
#[derive(Debug)]
pub struct Table<T> {
    items: BTreeMap<String, T>,
    /// A relist in progress: replaces `items` when it is done.
    relist: Option<BTreeMap<String, T>>,
    /// A whole list has been seen.
    synced: bool,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<T: PartialEq> Table<T> {
    /// Takes one watcher event, the object already converted and keyed;
    /// says whether what is in force changed.
    pub fn on(&mut self, event: Event<(String, T)>) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply((key, item)) => {
                // An InitApply without Init (never from kube-rs) counts as
                // the start of a relist.
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, item);
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let changed = !self.synced || listed != self.items;
                self.items = listed;
                self.synced = true;
                changed
            }
            Event::Apply((key, item)) => {
                if self.items.get(&key) == Some(&item) {
                    return false;
                }
                self.items.insert(key, item);
                true
            }
            Event::Delete((key, _)) => self.items.remove(&key).is_some(),
        }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.items.get(key)
    }
}

/// `namespace/name` of an object (`name` for cluster-wide ones).
pub fn key_of(namespace: Option<&str>, name: Option<&str>) -> String {
    let name = name.unwrap_or_default();
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// A pod as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    /// Its IPv4 address while it can hold one: not for host-network pods
    /// (their address is the node's) nor for pods that have finished
    /// (Succeeded or Failed), whose address may already be another pod's.
    pub addr: Option<Ipv4Addr>,
    pub labels: Labels,
    pub ports: NamedPorts,
}

impl PodFacts {
    pub fn of(pod: &Pod) -> PodFacts {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let addr = status
            .and_then(|s| {
                // podIPs lists every family; podIP is its first.
                let listed = s.pod_ips.iter().flatten().map(|p| p.ip.as_str());
                s.pod_ip
                    .as_deref()
                    .into_iter()
                    .chain(listed)
                    .find_map(|ip| ip.parse().ok())
            })
            .filter(|_| !host_network && !finished);
        let mut ports = NamedPorts::new();
        for container in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for port in container.ports.iter().flatten() {
                let (Some(name), Ok(number)) = (&port.name, u16::try_from(port.container_port))
                else {
                    continue;
                };
                let protocol = parse_protocol(port.protocol.as_deref().unwrap_or("TCP"));
                if let Ok(protocol) = protocol {
                    // The first container to name a port wins, as the API
                    // server's validation keeps names unique within a pod.
                    ports.entry(name.clone()).or_insert((protocol, number));
                }
            }
        }
        PodFacts {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            addr,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A namespace's labels.
pub fn namespace_labels(namespace: &Namespace) -> Labels {
    namespace.metadata.labels.clone().unwrap_or_default()
}

/// A NetworkPolicy as policy sees it: the version in force and, if the
/// newest does not read, why.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyFacts {
    pub in_force: Option<Policy>,
    pub problem: Option<String>,
}

impl PolicyFacts {
    /// `object` checked, with `previous` (what the table holds under its
    /// key) kept in force if it does not read.
    pub fn of(object: &NetworkPolicy, previous: Option<&PolicyFacts>) -> PolicyFacts {
        match Policy::from_k8s(object) {
            Ok(policy) => PolicyFacts {
                in_force: Some(policy),
                problem: None,
            },
            Err(e) => PolicyFacts {
                in_force: previous.and_then(|p| p.in_force.clone()),
                problem: Some(e.to_string()),
            },
        }
    }
}

/// The three tables, and a count of changes to wake the router by.
#[derive(Debug, Default)]
pub struct ClusterView {
    pub pods: Table<PodFacts>,
    pub namespaces: Table<Labels>,
    pub policies: Table<PolicyFacts>,
    generation: u64,
}

impl ClusterView {
    /// Counts a change that `Table::on` reported.
    pub fn changed(&mut self, changed: bool) -> bool {
        if changed {
            self.generation += 1;
        }
        changed
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every kind listed once: until then the view says too little to
    /// enforce by (no policies yet would mean allow-all).
    pub fn synced(&self) -> bool {
        self.pods.synced() && self.namespaces.synced() && self.policies.synced()
    }

    /// What the compiler takes: every pod of the cluster with an address,
    /// and as this host's the ones at `local` (the addresses this router
    /// gave its containers), so no node name needs to be configured.
    pub fn known(&self, local: &BTreeSet<Ipv4Addr>) -> Known {
        let mut problems = Vec::new();
        let mut policies = Vec::new();
        for (id, facts) in &self.policies.items {
            match (&facts.in_force, &facts.problem) {
                (Some(p), None) => policies.push(p.clone()),
                (Some(p), Some(e)) => {
                    problems.push(format!(
                        "policy {id}: its newest version does not read ({e}); the previous one stays in force"
                    ));
                    policies.push(p.clone());
                }
                (None, Some(e)) => problems.push(format!("policy {id} is not in force: {e}")),
                (None, None) => {}
            }
        }
        let mut inventory = Inventory {
            namespaces: self
                .namespaces
                .items
                .iter()
                .map(|(name, labels)| (name.clone(), labels.clone()))
                .collect(),
            ..Inventory::default()
        };
        let mut ours = BTreeSet::new();
        for pod in self.pods.items.values() {
            let Some(addr) = pod.addr else { continue };
            if local.contains(&addr) {
                ours.insert(addr);
            }
            inventory.endpoints.push(Endpoint {
                name: pod.key(),
                addr,
                namespace: pod.namespace.clone(),
                labels: pod.labels.clone(),
                ports: pod.ports.clone(),
            });
        }
        Known {
            policies,
            inventory,
            ours,
            problems,
        }
    }
}

#[cfg(test)]
mod tests;
