//! From policies and the mesh's endpoints to the allow lists of the
//! containers one host enforces for: which directions each is isolated in,
//! and what each direction allows (peer addresses and blocks, protocols and
//! port ranges), with every selector and named port resolved.
//!
//! Kubernetes' rules, all of them here: a pod is isolated in a direction
//! only while some policy of its namespace selects it for that direction;
//! what is allowed is the union of every such policy's rules (policies
//! add, never subtract); an empty peer list is everyone, an empty port
//! list every port; a named port is the destination container's.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

use crate::{
    model::{NamedPorts, Namespaces, Peer, Policy, PortRef, Protocol, Rule, in_block},
    selector::Labels,
};

/// The label every namespace carries with its own name (Kubernetes sets
/// it; weft does the same for namespaces it only knows by name).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A container of the mesh, on this host or another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// How status names it: `namespace/name`, or the container id.
    pub name: String,
    pub addr: Ipv4Addr,
    pub namespace: String,
    pub labels: Labels,
    pub ports: NamedPorts,
}

/// What the compiler knows of the mesh.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub endpoints: Vec<Endpoint>,
    /// Namespaces' labels, where known (Kubernetes); any other namespace
    /// has only [`NAMESPACE_NAME_LABEL`].
    pub namespaces: BTreeMap<String, Labels>,
}

impl Inventory {
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self.namespaces.get(namespace).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.into(), namespace.into());
        labels
    }
}

/// Whose traffic an allow entry admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peers {
    Any,
    Some {
        addrs: BTreeSet<Ipv4Addr>,
        blocks: Vec<(Ipv4Net, Vec<Ipv4Net>)>,
    },
}

/// Which traffic of theirs: `None` in a protocol's entry is every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    Any,
    Some(BTreeMap<Protocol, Option<BTreeSet<(u16, u16)>>>),
}

/// One allowed (peers, ports) pair and the policy it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    pub policy: String,
    pub peers: Peers,
    pub ports: Ports,
}

/// One direction of one container: isolated by these policies, allowing
/// this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub isolated_by: Vec<String>,
    pub allows: Vec<Allow>,
}

/// A container this host enforces for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRules {
    pub endpoint: Endpoint,
    /// `None`: not isolated.
    pub ingress: Option<Direction>,
    pub egress: Option<Direction>,
}

/// What one host enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Containers isolated in at least one direction, by address.
    pub pods: Vec<PodRules>,
    /// Every policy's id, in order (the nft counters' numbering).
    pub policies: Vec<String>,
}

/// Compiles `policies` for the endpoints `enforce` picks.
pub fn compile(
    policies: &[Policy],
    inventory: &Inventory,
    enforce: impl Fn(&Endpoint) -> bool,
) -> Plan {
    let mut pods = Vec::new();
    for endpoint in inventory.endpoints.iter().filter(|e| enforce(e)) {
        let selecting: Vec<&Policy> = policies
            .iter()
            .filter(|p| p.namespace == endpoint.namespace && p.pods.matches(&endpoint.labels))
            .collect();
        let direction = |rules_of: fn(&Policy) -> Option<&Vec<Rule>>, ingress: bool| {
            let isolating: Vec<&Policy> = selecting
                .iter()
                .copied()
                .filter(|p| rules_of(p).is_some())
                .collect();
            if isolating.is_empty() {
                return None;
            }
            let mut allows = Vec::new();
            for p in &isolating {
                for rule in rules_of(p).into_iter().flatten() {
                    allows.extend(allows_of(p, rule, endpoint, inventory, ingress));
                }
            }
            Some(Direction {
                isolated_by: isolating.iter().map(|p| p.id()).collect(),
                allows,
            })
        };
        let ingress = direction(|p| p.ingress.as_ref(), true);
        let egress = direction(|p| p.egress.as_ref(), false);
        if ingress.is_some() || egress.is_some() {
            pods.push(PodRules {
                endpoint: endpoint.clone(),
                ingress,
                egress,
            });
        }
    }
    pods.sort_by_key(|p| p.endpoint.addr);
    pods.dedup_by_key(|p| p.endpoint.addr);
    let mut ids: Vec<String> = policies.iter().map(Policy::id).collect();
    ids.sort();
    ids.dedup();
    Plan {
        pods,
        policies: ids,
    }
}

/// The endpoints a peer entry of `policy` picks.
fn peer_pods<'a>(policy: &Policy, peer: &Peer, inventory: &'a Inventory) -> Vec<&'a Endpoint> {
    let Peer::Pods { namespaces, pods } = peer else {
        return Vec::new();
    };
    inventory
        .endpoints
        .iter()
        .filter(|e| match namespaces {
            Namespaces::Own => e.namespace == policy.namespace,
            Namespaces::Matching(s) => s.matches(&inventory.namespace_labels(&e.namespace)),
        })
        .filter(|e| pods.matches(&e.labels))
        .collect()
}

/// The ports of `rule` on a destination with named ports `named`.
fn ports_on(rule: &Rule, named: Option<&NamedPorts>) -> Option<Ports> {
    if rule.ports.is_empty() {
        return Some(Ports::Any);
    }
    let mut out: BTreeMap<Protocol, Option<BTreeSet<(u16, u16)>>> = BTreeMap::new();
    for port in &rule.ports {
        let range = match &port.port {
            PortRef::All => {
                out.insert(port.protocol, None);
                continue;
            }
            PortRef::Range(a, b) => (*a, *b),
            PortRef::Named(name) => match named.and_then(|n| n.get(name)) {
                Some((protocol, number)) if *protocol == port.protocol => (*number, *number),
                _ => continue,
            },
        };
        // A protocol already open on every port stays so.
        if let Some(ranges) = out
            .entry(port.protocol)
            .or_insert_with(|| Some(BTreeSet::new()))
        {
            ranges.insert(range);
        }
    }
    (!out.is_empty()).then_some(Ports::Some(out))
}

fn allows_of(
    policy: &Policy,
    rule: &Rule,
    endpoint: &Endpoint,
    inventory: &Inventory,
    ingress: bool,
) -> Vec<Allow> {
    let allow = |peers, ports| Allow {
        policy: policy.id(),
        peers,
        ports,
    };
    let named = rule
        .ports
        .iter()
        .any(|p| matches!(p.port, PortRef::Named(_)));
    let blocks: Vec<(Ipv4Net, Vec<Ipv4Net>)> = rule
        .peers
        .iter()
        .filter_map(|p| match p {
            Peer::Block {
                cidr: Some(c),
                except,
            } => Some((*c, except.clone())),
            _ => None,
        })
        .collect();
    let pods: BTreeSet<&Endpoint> = rule
        .peers
        .iter()
        .flat_map(|p| peer_pods(policy, p, inventory))
        .collect();
    // Ingress: the named ports are this container's own, one answer for
    // every peer. Egress: each destination's, so destinations are grouped
    // by what the names resolve to on them.
    if ingress || !named {
        let here = ingress.then_some(&endpoint.ports);
        let Some(ports) = ports_on(rule, here) else {
            return Vec::new();
        };
        if rule.peers.is_empty() {
            return vec![allow(Peers::Any, ports)];
        }
        let addrs: BTreeSet<Ipv4Addr> = pods.iter().map(|e| e.addr).collect();
        if addrs.is_empty() && blocks.is_empty() {
            return Vec::new();
        }
        return vec![allow(Peers::Some { addrs, blocks }, ports)];
    }
    let mut out = Vec::new();
    // Blocks (and, with no peers, every address) get the numbered ports.
    let numbered = Rule {
        peers: Vec::new(),
        ports: rule
            .ports
            .iter()
            .filter(|p| !matches!(p.port, PortRef::Named(_)))
            .cloned()
            .collect(),
    };
    let destinations: Vec<&Endpoint> = if rule.peers.is_empty() {
        inventory.endpoints.iter().collect()
    } else {
        pods.into_iter().collect()
    };
    if !numbered.ports.is_empty() {
        let peers = if rule.peers.is_empty() {
            Some(Peers::Any)
        } else {
            let addrs: BTreeSet<Ipv4Addr> = destinations.iter().map(|e| e.addr).collect();
            (!addrs.is_empty() || !blocks.is_empty()).then(|| Peers::Some {
                addrs,
                blocks: blocks.clone(),
            })
        };
        if let (Some(peers), Some(ports)) = (peers, ports_on(&numbered, None)) {
            out.push(allow(peers, ports));
        }
    }
    let mut by_ports: BTreeMap<String, (Ports, BTreeSet<Ipv4Addr>)> = BTreeMap::new();
    let only_named = Rule {
        peers: Vec::new(),
        ports: rule
            .ports
            .iter()
            .filter(|p| matches!(p.port, PortRef::Named(_)))
            .cloned()
            .collect(),
    };
    for e in destinations {
        if let Some(ports) = ports_on(&only_named, Some(&e.ports)) {
            by_ports
                .entry(format!("{ports:?}"))
                .or_insert_with(|| (ports, BTreeSet::new()))
                .1
                .insert(e.addr);
        }
    }
    for (_, (ports, addrs)) in by_ports {
        out.push(allow(
            Peers::Some {
                addrs,
                blocks: Vec::new(),
            },
            ports,
        ));
    }
    out
}

impl PartialOrd for Endpoint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Endpoint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.addr, &self.name).cmp(&(other.addr, &other.name))
    }
}

impl Peers {
    pub fn admits(&self, addr: Ipv4Addr) -> bool {
        match self {
            Peers::Any => true,
            Peers::Some { addrs, blocks } => {
                addrs.contains(&addr) || blocks.iter().any(|(c, e)| in_block(addr, c, e))
            }
        }
    }
}

impl Ports {
    pub fn admits(&self, protocol: Protocol, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Some(by) => match by.get(&protocol) {
                None => false,
                Some(None) => true,
                Some(Some(ranges)) => ranges.iter().any(|(a, b)| (*a..=*b).contains(&port)),
            },
        }
    }
}

/// Whether a new connection would be allowed, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reasons: Vec<String>,
}

impl Plan {
    fn pod(&self, addr: Ipv4Addr) -> Option<&PodRules> {
        self.pods
            .binary_search_by_key(&addr, |p| p.endpoint.addr)
            .ok()
            .map(|i| &self.pods[i])
    }

    /// Would a new connection from `from` to `to` on `protocol`/`port` be
    /// let through, by the egress rules of `from` and the ingress rules of
    /// `to` (each only where this plan enforces for it)?
    pub fn verdict(&self, from: Ipv4Addr, to: Ipv4Addr, protocol: Protocol, port: u16) -> Verdict {
        let mut reasons = Vec::new();
        let mut allowed = true;
        let mut check = |pod: Option<&PodRules>, egress: bool| {
            let Some(pod) = pod else { return };
            let (direction, peer, what) = if egress {
                (&pod.egress, to, "egress")
            } else {
                (&pod.ingress, from, "ingress")
            };
            let name = &pod.endpoint.name;
            let Some(d) = direction else {
                reasons.push(format!(
                    "{what} of {name}: not isolated (no policy selects it for {what})"
                ));
                return;
            };
            let by: Vec<&str> = d
                .allows
                .iter()
                .filter(|a| a.peers.admits(peer) && a.ports.admits(protocol, port))
                .map(|a| a.policy.as_str())
                .collect();
            if by.is_empty() {
                allowed = false;
                reasons.push(format!(
                    "{what} of {name}: isolated by {}, and no rule of theirs allows {peer} on {}/{port}",
                    d.isolated_by.join(", "),
                    protocol.nft()
                ));
            } else {
                let mut by = by;
                by.dedup();
                reasons.push(format!("{what} of {name}: allowed by {}", by.join(", ")));
            }
        };
        check(self.pod(from), true);
        check(self.pod(to), false);
        if reasons.is_empty() {
            reasons.push(format!("neither {from} nor {to} is isolated here"));
        }
        Verdict { allowed, reasons }
    }
}

#[cfg(test)]
mod tests;
