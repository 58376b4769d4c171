//! A [`Plan`] as nftables chains, for the router's own `inet` table: one
//! transaction replaces the table whole, so a change never opens a window.
//!
//! Containers on one host talk across the bridge; the bridge hands IPv4
//! frames to the inet hooks (br_netfilter), which is where connection
//! tracking is, so "replies of an allowed connection" is `ct state
//! established`. A new connection passes the egress chain of its source
//! (if that container is here and isolated) and then the ingress chain of
//! its destination (likewise): an allowed egress returns, an allowed
//! ingress accepts, and each chain ends by counting and dropping. Traffic
//! from a container to its own host is checked for egress in `input`;
//! the host's own traffic to its containers is never stopped (kubelet's
//! probes come from there).
//!
//! Nothing a user wrote reaches the script but policy ids, which the model
//! checked to be DNS names, and they only appear in comments.

use std::fmt::Write as _;

use crate::{
    compile::{Allow, Direction, Peers, Plan, Ports},
    model::Protocol,
};

/// The NFLOG group drops are logged to (weft's port number, unlikely to
/// be another program's); the router reads it.
pub const LOG_GROUP: u16 = 6783;
/// Drops logged per second per container and direction, at most; the
/// rest are only counted.
pub const LOG_RATE: u32 = 10;

/// What a drop rule logs with: the direction (`in`, `out`) and the
/// container's address. Only addresses and fixed words: nothing a user
/// wrote reaches the kernel's log.
pub fn log_prefix(direction: &str, addr: std::net::Ipv4Addr) -> String {
    format!("weft-policy {direction} {addr} ")
}

/// The counter of drops of a direction of the plan's `index`th pod.
pub fn drop_counter(index: usize, egress: bool) -> String {
    format!("drop_{}_{index}", if egress { "out" } else { "in" })
}

/// The counter of connections a policy allowed.
pub fn allow_counter(policy_index: usize) -> String {
    format!("allow_{policy_index}")
}

/// The kernel modules behind the expressions [`render`] writes beyond
/// nf_tables' own: `ct state` (nft_ct), `limit` (nft_limit), `log ... group`
/// (nft_log, nfnetlink_log) and `counter name` (nft_objref). Where they are
/// modules, nf_tables loads each on first use by dropping the whole
/// transaction, loading it and starting again: five loads, five replays,
/// 14 s for the first policy in the emulated VM and 49 s with three
/// routers doing it at once, against under a second for one `modprobe -a`.
pub const KERNEL_MODULES: &[&str] = &[
    "nft_ct",
    "nft_limit",
    "nft_log",
    "nfnetlink_log",
    "nft_objref",
];

/// The chains, counters and hooks of `plan`; empty when nothing is
/// isolated (and then no packet is looked at).
pub fn render(plan: &Plan) -> String {
    if plan.pods.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    for (i, id) in plan.policies.iter().enumerate() {
        let _ = writeln!(
            out,
            "\tcounter {} {{\n\t\tcomment \"{id}\"\n\t}}",
            allow_counter(i)
        );
    }
    let mut egress_map = Vec::new();
    let mut ingress_map = Vec::new();
    for (i, pod) in plan.pods.iter().enumerate() {
        for (egress, direction) in [(true, &pod.egress), (false, &pod.ingress)] {
            let Some(direction) = direction else { continue };
            let chain = format!("{}_{i}", if egress { "egress" } else { "ingress" });
            let _ = writeln!(out, "\tcounter {} {{\n\t}}", drop_counter(i, egress));
            chain_of(&mut out, &chain, direction, egress, plan, i);
            let entry = format!("{} : jump {chain}", pod.endpoint.addr);
            if egress {
                egress_map.push(entry);
            } else {
                ingress_map.push(entry);
            }
        }
    }
    let vmap = |out: &mut String, field: &str, entries: &[String]| {
        if !entries.is_empty() {
            let _ = writeln!(out, "\t\tip {field} vmap {{ {} }}", entries.join(", "));
        }
    };
    out.push_str("\tchain policy_forward {\n");
    out.push_str("\t\ttype filter hook forward priority filter; policy accept;\n");
    out.push_str("\t\tct state established,related accept\n");
    vmap(&mut out, "saddr", &egress_map);
    vmap(&mut out, "daddr", &ingress_map);
    out.push_str("\t}\n");
    if !egress_map.is_empty() {
        out.push_str("\tchain policy_input {\n");
        out.push_str("\t\ttype filter hook input priority filter; policy accept;\n");
        out.push_str("\t\tct state established,related accept\n");
        vmap(&mut out, "saddr", &egress_map);
        out.push_str("\t}\n");
    }
    out
}

fn chain_of(out: &mut String, chain: &str, d: &Direction, egress: bool, plan: &Plan, pod: usize) {
    let _ = writeln!(out, "\tchain {chain} {{");
    let peer_field = if egress { "daddr" } else { "saddr" };
    let verdict = if egress { "return" } else { "accept" };
    for allow in &d.allows {
        let counter = plan
            .policies
            .binary_search(&allow.policy)
            .map(|i| format!(" counter name \"{}\"", allow_counter(i)))
            .unwrap_or_default();
        for peer in peer_clauses(allow, peer_field) {
            for port in port_clauses(&allow.ports) {
                let words: Vec<&str> = [peer.as_str(), port.as_str()]
                    .into_iter()
                    .filter(|w| !w.is_empty())
                    .collect();
                let _ = writeln!(out, "\t\t{}{counter} {verdict}", words.join(" "));
            }
        }
    }
    let addr = plan.pods[pod].endpoint.addr;
    let _ = writeln!(
        out,
        "\t\tlimit rate {LOG_RATE}/second burst {LOG_RATE} packets log prefix \"{}\" group {LOG_GROUP}",
        log_prefix(if egress { "out" } else { "in" }, addr)
    );
    let _ = writeln!(
        out,
        "\t\tcounter name \"{}\" drop\n\t}}",
        drop_counter(pod, egress)
    );
}

/// The address matches an allow entry stands for: none means it admits
/// no one (a selector that picks no container).
fn peer_clauses(allow: &Allow, field: &str) -> Vec<String> {
    match &allow.peers {
        Peers::Any => vec![String::new()],
        Peers::Some { addrs, blocks } => {
            let mut out = Vec::new();
            if !addrs.is_empty() {
                let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                out.push(format!("ip {field} {{ {} }}", list.join(", ")));
            }
            for (cidr, except) in blocks {
                let mut clause = format!("ip {field} {cidr}");
                if !except.is_empty() {
                    // Merged: nft refuses overlapping intervals in a set.
                    let list: Vec<String> = ipnet::Ipv4Net::aggregate(except)
                        .iter()
                        .map(|e| e.to_string())
                        .collect();
                    let _ = write!(clause, " ip {field} != {{ {} }}", list.join(", "));
                }
                out.push(clause);
            }
            out
        }
    }
}

fn port_clauses(ports: &Ports) -> Vec<String> {
    match ports {
        Ports::Any => vec![String::new()],
        Ports::Some(by) => by
            .iter()
            .map(|(protocol, ranges)| {
                let proto = format!("meta l4proto {}", Protocol::nft(*protocol));
                match ranges {
                    None => proto,
                    Some(ranges) => {
                        let list: Vec<String> = merged(ranges)
                            .iter()
                            .map(|(a, b)| {
                                if a == b {
                                    a.to_string()
                                } else {
                                    format!("{a}-{b}")
                                }
                            })
                            .collect();
                        format!("{proto} th dport {{ {} }}", list.join(", "))
                    }
                }
            })
            .collect(),
    }
}

/// Port ranges with overlapping and adjacent ones joined: nft refuses
/// overlapping intervals in a set.
fn merged(ranges: &std::collections::BTreeSet<(u16, u16)>) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &(a, b) in ranges {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
