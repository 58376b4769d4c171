//! Policies as weft holds them: a Kubernetes NetworkPolicy checked once,
//! with every default made explicit (which directions it isolates, TCP for
//! a port without a protocol, the policy's own namespace for a pod
//! selector without a namespace selector).

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::selector::Selector;

/// Why a policy was refused: the field, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
    #[error("document {index}: {reason}")]
    Document { index: usize, reason: String },
}

impl PolicyError {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> PolicyError {
        PolicyError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// As nftables names it.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A port of a rule: a number, a range, or a container port's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    /// Every port of the protocol.
    All,
    Range(u16, u16),
    Named(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub protocol: Protocol,
    pub port: PortRef,
}

/// Whose traffic a peer entry means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods the selector picks in the namespaces `namespaces` picks.
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    /// Addresses in `cidr` but none in `except` (IPv4; an IPv6 block
    /// matches nothing on weft's IPv4 network and is kept as `None`).
    Block {
        cidr: Option<Ipv4Net>,
        except: Vec<Ipv4Net>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    /// The policy's own.
    Own,
    Matching(Selector),
}

/// One ingress or egress rule: traffic from (to) any of `peers` on any of
/// `ports`; an empty list means all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<Port>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// The pods of `namespace` it applies to.
    pub pods: Selector,
    /// `None`: the policy does not isolate ingress; `Some(rules)`: it does,
    /// and allows what the rules say (nothing, for no rules).
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

/// The namespace of a policy that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

impl Policy {
    /// `namespace/name`, how the policy is named in status and logs.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Checks an API object and makes its defaults explicit.
    pub fn from_k8s(object: &NetworkPolicy) -> Result<Policy, PolicyError> {
        let meta = &object.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| PolicyError::field("metadata.name", "a policy needs a name"))?;
        check_dns_label(&name, "metadata.name", 253)?;
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        check_dns_label(&namespace, "metadata.namespace", 63)?;
        let spec = object.spec.clone().unwrap_or_default();
        let pods = match &spec.pod_selector {
            Some(s) => Selector::from_k8s(s, "spec.podSelector")?,
            None => Selector::everything(),
        };
        let (mut isolates_ingress, mut isolates_egress) = (true, spec.egress.is_some());
        if let Some(types) = &spec.policy_types {
            (isolates_ingress, isolates_egress) = (false, false);
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => isolates_ingress = true,
                    "Egress" => isolates_egress = true,
                    other => {
                        return Err(PolicyError::field(
                            format!("spec.policyTypes[{i}]"),
                            format!("{other:?} is neither Ingress nor Egress"),
                        ));
                    }
                }
            }
        }
        let ingress = rules(
            spec.ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_deref(), r.ports.as_deref())),
            "spec.ingress",
            "from",
        )?;
        let egress = rules(
            spec.egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_deref(), r.ports.as_deref())),
            "spec.egress",
            "to",
        )?;
        Ok(Policy {
            namespace,
            name,
            pods,
            ingress: isolates_ingress.then_some(ingress),
            egress: isolates_egress.then_some(egress),
        })
    }
}

/// The ingress or egress rules (`field`), each as its peers (under
/// `peers_field`: `from` or `to`) and ports.
fn rules<'a>(
    each: impl Iterator<
        Item = (
            Option<&'a [NetworkPolicyPeer]>,
            Option<&'a [NetworkPolicyPort]>,
        ),
    >,
    field: &str,
    peers_field: &str,
) -> Result<Vec<Rule>, PolicyError> {
    each.enumerate()
        .map(|(i, (peers, ports))| rule(peers, ports, &format!("{field}[{i}]"), peers_field))
        .collect()
}

fn rule(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    field: &str,
    peers_field: &str,
) -> Result<Rule, PolicyError> {
    let peers = peers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| peer(p, &format!("{field}.{peers_field}[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, p)| port(p, &format!("{field}.ports[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule { peers, ports })
}

fn peer(p: &NetworkPolicyPeer, field: &str) -> Result<Peer, PolicyError> {
    if let Some(block) = &p.ip_block {
        if p.pod_selector.is_some() || p.namespace_selector.is_some() {
            return Err(PolicyError::field(
                format!("{field}.ipBlock"),
                "an ipBlock peer may not also have a podSelector or namespaceSelector",
            ));
        }
        let net = |text: &str, at: &str| -> Result<IpNet, PolicyError> {
            text.parse::<IpNet>().map(|n| n.trunc()).map_err(|_| {
                PolicyError::field(at, format!("{text:?} is not a CIDR (like 10.0.0.0/8)"))
            })
        };
        let cidr = net(&block.cidr, &format!("{field}.ipBlock.cidr"))?;
        let mut except = Vec::new();
        for (i, e) in block.except.iter().flatten().enumerate() {
            let at = format!("{field}.ipBlock.except[{i}]");
            let e = net(e, &at)?;
            if !cidr.contains(&e) || e == cidr {
                return Err(PolicyError::field(
                    at,
                    format!("{e} must lie strictly inside the cidr {cidr}"),
                ));
            }
            if let IpNet::V4(e) = e {
                except.push(e);
            }
        }
        return Ok(Peer::Block {
            cidr: match cidr {
                IpNet::V4(v4) => Some(v4),
                IpNet::V6(_) => None,
            },
            except,
        });
    }
    if p.pod_selector.is_none() && p.namespace_selector.is_none() {
        return Err(PolicyError::field(
            field,
            "a peer needs a podSelector, a namespaceSelector or an ipBlock",
        ));
    }
    let pods = match &p.pod_selector {
        Some(s) => Selector::from_k8s(s, &format!("{field}.podSelector"))?,
        None => Selector::everything(),
    };
    let namespaces = match &p.namespace_selector {
        Some(s) => Namespaces::Matching(Selector::from_k8s(
            s,
            &format!("{field}.namespaceSelector"),
        )?),
        None => Namespaces::Own,
    };
    Ok(Peer::Pods { namespaces, pods })
}

fn port(p: &NetworkPolicyPort, field: &str) -> Result<Port, PolicyError> {
    let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        other => {
            return Err(PolicyError::field(
                format!("{field}.protocol"),
                format!("{other:?} is not TCP, UDP or SCTP"),
            ));
        }
    };
    let number = |n: i32, at: &str| -> Result<u16, PolicyError> {
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| PolicyError::field(at, format!("{n} is not a port (1-65535)")))
    };
    let port = match (&p.port, p.end_port) {
        (None, None) => PortRef::All,
        (None, Some(_)) => {
            return Err(PolicyError::field(
                format!("{field}.endPort"),
                "endPort needs a numeric port",
            ));
        }
        (Some(IntOrString::Int(n)), end) => {
            let from = number(*n, &format!("{field}.port"))?;
            let to = match end {
                Some(e) => number(e, &format!("{field}.endPort"))?,
                None => from,
            };
            if to < from {
                return Err(PolicyError::field(
                    format!("{field}.endPort"),
                    format!("{to} is below port {from}"),
                ));
            }
            PortRef::Range(from, to)
        }
        (Some(IntOrString::String(name)), None) => {
            if let Ok(n) = name.parse::<i32>() {
                return Err(PolicyError::field(
                    format!("{field}.port"),
                    format!("{n} is given as a string; write it as a number, or name a port"),
                ));
            }
            check_port_name(name, &format!("{field}.port"))?;
            PortRef::Named(name.clone())
        }
        (Some(IntOrString::String(_)), Some(_)) => {
            return Err(PolicyError::field(
                format!("{field}.endPort"),
                "endPort needs a numeric port, not a named one",
            ));
        }
    };
    Ok(Port { protocol, port })
}

/// An IANA service name, which a named container port is: at most 15
/// lowercase letters, digits and single hyphens, with a letter.
pub fn check_port_name(name: &str, field: &str) -> Result<(), PolicyError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(u8::is_ascii_lowercase)
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(PolicyError::field(
            field,
            format!(
                "{name:?} is not a port name (at most 15 lowercase letters, digits and single hyphens)"
            ),
        ))
    }
}

fn check_dns_label(text: &str, field: &str, max: usize) -> Result<(), PolicyError> {
    let b = text.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(PolicyError::field(
            field,
            format!(
                "{text:?} must be lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit"
            ),
        ))
    }
}

/// The most documents one `weft policy apply` takes, and the largest file.
pub const MAX_DOCUMENTS: usize = 1024;
pub const MAX_BYTES: usize = 4 << 20;

/// Reads NetworkPolicy objects from `text`: JSON (one object, or a
/// `List`), or YAML with any number of `---`-separated documents (each a
/// policy or a `List` of them). Every one is checked; one bad document
/// refuses them all, naming which.
pub fn parse_documents(text: &str) -> Result<Vec<(NetworkPolicy, Policy)>, PolicyError> {
    if text.len() > MAX_BYTES {
        return Err(PolicyError::Document {
            index: 0,
            reason: format!("larger than {MAX_BYTES} bytes"),
        });
    }
    let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => vec![v],
        Err(_) => serde_saphyr::from_multiple(text).map_err(|e| PolicyError::Document {
            index: 0,
            reason: format!("neither JSON nor YAML: {e}"),
        })?,
    };
    let mut objects = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let doc = |reason: String| PolicyError::Document { index, reason };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let items = if kind.ends_with("List") {
            match value.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                _ => return Err(doc(format!("a {kind} needs items"))),
            }
        } else if value.is_null() {
            continue;
        } else {
            vec![value]
        };
        for item in items {
            if objects.len() >= MAX_DOCUMENTS {
                return Err(doc(format!("more than {MAX_DOCUMENTS} policies")));
            }
            let object: NetworkPolicy = serde_json::from_value(item).map_err(|e| {
                let hint = if e.to_string().contains("boolean") {
                    " (YAML reads y, n, yes, no, on and off as booleans: quote them)"
                } else {
                    ""
                };
                doc(format!(
                    "not a networking.k8s.io/v1 NetworkPolicy: {e}{hint}"
                ))
            })?;
            let policy = Policy::from_k8s(&object).map_err(|e| doc(e.to_string()))?;
            objects.push((object, policy));
        }
    }
    if objects.is_empty() {
        return Err(PolicyError::Document {
            index: 0,
            reason: "no NetworkPolicy in it".into(),
        });
    }
    Ok(objects)
}

/// A container's named ports (`containerPort` with a `name`).
pub type NamedPorts = BTreeMap<String, (Protocol, u16)>;

/// Whether `addr` is in `cidr` and in none of `except`.
pub fn in_block(addr: Ipv4Addr, cidr: &Ipv4Net, except: &[Ipv4Net]) -> bool {
    cidr.contains(&addr) && !except.iter().any(|e| e.contains(&addr))
}

#[cfg(test)]
mod tests;
