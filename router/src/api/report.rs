//! The router's state as `weft report` prints it (JSON) and as the
//! `weft status` tables show it. Field names are part of the interface:
//! scripts read them.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::{
    daemon::{
        connection::PROTOCOL,
        router::{Failure, HostSide, Settings},
    },
    mesh::{Mesh, Routes, Source, TargetState},
    overlay::{DataPaths, Overlay, PeerPath},
    userspace::encap,
};

/// What a report is made of: the router's state, borrowed for a moment.
pub struct RouterView<'a> {
    pub mesh: &'a Mesh,
    pub paths: &'a DataPaths,
    /// The routes the data planes were last given.
    pub routes: &'a Routes,
    pub settings: &'a Settings,
    pub failures: &'a VecDeque<Failure>,
    pub host: &'a HostSide,
    pub started: Instant,
}

/// Everything the API reports, taken at one moment.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub router: RouterInfo,
    /// Peers this router can reach, itself included.
    pub peers: Vec<PeerReport>,
    /// This router's connections: established ones, attempts in progress
    /// and recent failures, each failure with its reason.
    pub connections: Vec<ConnectionReport>,
    pub targets: Vec<TargetReport>,
    /// The host's side: its gateway and weft's firewall table.
    #[serde(default)]
    pub host: HostReport,
    /// The name service.
    #[serde(default)]
    pub dns: DnsReport,
    /// This host's conditioned containers, by what conditions them
    /// (`kernel`, `conditioner`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditioned: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DnsReport {
    pub enabled: bool,
    pub domain: String,
    /// Where DNS is served (address:53).
    pub serving: Vec<String>,
    /// Names with instances that answer, on every host.
    pub names: usize,
}

impl DnsReport {
    fn line(&self) -> String {
        if !self.enabled {
            return "off (--no-dns)".into();
        }
        let at = if self.serving.is_empty() {
            "not served yet: no gateway (weft expose)".to_string()
        } else {
            format!("served on {}", self.serving.join(", "))
        };
        format!("{} names in {}, {at}", self.names, self.domain)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HostReport {
    /// The host's addresses on the `weft` bridge (`weft expose`), which
    /// containers have as their default gateway.
    pub gateway: Vec<String>,
    pub firewall: crate::firewall::FirewallStatus,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RouterInfo {
    pub name: String,
    pub nickname: String,
    pub uid: u64,
    pub version: String,
    pub protocol: String,
    pub port: u16,
    pub encryption: bool,
    pub discovery: bool,
    pub conn_limit: usize,
    pub uptime_seconds: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    pub name: String,
    pub nickname: String,
    pub uid: u64,
    pub connections: Vec<PeerConnectionReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PeerConnectionReport {
    pub peer: String,
    pub nickname: String,
    pub address: String,
    pub outbound: bool,
    /// Whether the other end reports the connection too.
    pub established: bool,
    /// What the connection's owner says of its data path (the `links`
    /// channel), once it has said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConnectionReport {
    /// The peer's name, once known.
    pub peer: Option<String>,
    pub nickname: Option<String>,
    pub address: String,
    pub outbound: bool,
    /// `established`, `connecting`, `retrying` or `failed`.
    pub state: String,
    /// The data path carrying this connection's traffic, once data paths
    /// exist (`fastdp` or `userspace`).
    pub overlay: Option<String>,
    pub encrypted: Option<bool>,
    pub mtu: Option<u32>,
    /// Why the state is not the healthy one. For a connection on the
    /// userspace path this is the overlay reason code (`no-datapath`,
    /// `vxlan-blocked`, ...), stable for scripts and alerts.
    pub reason: Option<String>,
    /// What the operator can do about `reason`, when there is something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetReport {
    pub address: String,
    pub source: String,
    pub state: String,
    pub attempts: u32,
    /// Seconds until the next attempt, when one is scheduled.
    pub next_try_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// Lays out rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

impl Report {
    /// The summary `weft status` prints.
    pub fn summary(&self) -> String {
        let r = &self.router;
        let established = self
            .connections
            .iter()
            .filter(|c| c.state == "established")
            .count();
        let failing = self
            .connections
            .iter()
            .filter(|c| c.state != "established")
            .count();
        let edges: usize = self
            .peers
            .iter()
            .map(|p| p.connections.iter().filter(|c| c.established).count())
            .sum::<usize>()
            / 2;
        let on = |b: bool| if b { "enabled" } else { "disabled" };
        let mut rows = vec![
            ("Version", r.version.clone()),
            ("Protocol", r.protocol.clone()),
            ("Name", format!("{} ({})", r.name, r.nickname)),
            ("Encryption", on(r.encryption).to_string()),
            ("Peer discovery", on(r.discovery).to_string()),
            ("Targets", self.targets.len().to_string()),
            (
                "Connections",
                format!(
                    "{} ({established} established, {failing} not)",
                    self.connections.len()
                ),
            ),
            (
                "Peers",
                format!(
                    "{} (with {edges} established connections)",
                    self.peers.len()
                ),
            ),
        ];
        rows.push(("Gateway", self.host.gateway_line()));
        rows.push(("Firewall", self.host.firewall_line()));
        if !self.dns.domain.is_empty() {
            rows.push(("DNS", self.dns.line()));
        }
        if !self.conditioned.is_empty() {
            let all: usize = self.conditioned.values().sum();
            let by: Vec<String> = self
                .conditioned
                .iter()
                .map(|(by, n)| format!("{n} by the {by}"))
                .collect();
            rows.push((
                "Conditioning",
                format!(
                    "{all} container{} ({}); `weft top` shows their flows",
                    if all == 1 { "" } else { "s" },
                    by.join(", ")
                ),
            ));
        }
        if failing > 0 {
            rows.push((
                "Attention",
                "see `weft status connections` for why connections fail".into(),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:>width$}: {v}\n"))
            .collect()
    }

    pub fn peers_table(&self) -> String {
        let mut rows = Vec::new();
        for p in &self.peers {
            if p.connections.is_empty() {
                rows.push(vec![
                    p.name.clone(),
                    p.nickname.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ]);
            }
            for c in &p.connections {
                rows.push(vec![
                    p.name.clone(),
                    p.nickname.clone(),
                    format!("{} {}", if c.outbound { "->" } else { "<-" }, c.peer),
                    c.nickname.clone(),
                    if c.established {
                        "established"
                    } else {
                        "pending"
                    }
                    .into(),
                    // As the connection's owner tells the mesh.
                    or_dash(&c.overlay),
                ]);
            }
        }
        table(
            &["PEER", "NICKNAME", "CONNECTION", "TO", "STATE", "OVERLAY"],
            &rows,
        )
    }

    pub fn connections_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .connections
            .iter()
            .map(|c| {
                vec![
                    if c.outbound { "->" } else { "<-" }.into(),
                    c.address.clone(),
                    or_dash(&c.peer),
                    or_dash(&c.nickname),
                    c.state.clone(),
                    or_dash(&c.overlay),
                    c.encrypted
                        .map(|e| if e { "yes" } else { "no" }.to_string())
                        .unwrap_or("-".into()),
                    c.mtu.map(|m| m.to_string()).unwrap_or("-".into()),
                    or_dash(&c.reason),
                ]
            })
            .collect();
        let mut out = table(
            &[
                "DIR",
                "ADDRESS",
                "PEER",
                "NICKNAME",
                "STATE",
                "OVERLAY",
                "ENCRYPTED",
                "MTU",
                "REASON",
            ],
            &rows,
        );
        // Each reason's advice once, under the table, rather than a column
        // too wide to read.
        let advice: std::collections::BTreeMap<&str, &str> = self
            .connections
            .iter()
            .filter_map(|c| Some((c.reason.as_deref()?, c.advice.as_deref()?)))
            .collect();
        if !advice.is_empty() {
            out.push('\n');
            for (reason, advice) in advice {
                out.push_str(&format!("{reason}: {advice}\n"));
            }
        }
        out
    }

    pub fn targets_table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.address.clone(),
                    t.source.clone(),
                    t.state.clone(),
                    t.attempts.to_string(),
                    t.next_try_seconds
                        .map(|s| format!("{s:.1}s"))
                        .unwrap_or("-".into()),
                    or_dash(&t.last_error),
                ]
            })
            .collect();
        table(
            &[
                "ADDRESS",
                "SOURCE",
                "STATE",
                "ATTEMPTS",
                "NEXT TRY",
                "LAST ERROR",
            ],
            &rows,
        )
    }
}

impl HostReport {
    /// The gateway as `weft status` says it.
    fn gateway_line(&self) -> String {
        if self.gateway.is_empty() {
            "none: containers reach only the overlay (`weft expose` gives them this host and the world)".into()
        } else {
            format!(
                "{} on bridge {} (containers' default route)",
                self.gateway.join(", "),
                crate::netdev::BRIDGE
            )
        }
    }

    /// The firewall as `weft status` says it.
    fn firewall_line(&self) -> String {
        let f = &self.firewall;
        let what = if f.masquerade {
            let hosts = match f.mesh_hosts.len() {
                0 => String::new(),
                n => format!(" and {n} mesh host(s)"),
            };
            format!(
                "masquerading containers' traffic to all but {}{hosts}",
                f.exempt.join(", ")
            )
        } else {
            "no masquerading (--no-masquerade)".into()
        };
        match (&f.error, f.applied) {
            (Some(e), _) => format!("nftables tables {} NOT written: {e}", f.table),
            (None, false) => "nftables tables being written".into(),
            (None, true) => {
                let restored = match f.restored {
                    0 => String::new(),
                    n => format!("; restored {n} time(s) after others changed it"),
                };
                let dns = match &f.dns_capture {
                    Some(c) => format!("; containers' DNS to {c}"),
                    None => String::new(),
                };
                format!("nftables tables {}, {what}{dns}{restored}", f.table)
            }
        }
    }
}

/// A peer's nickname as the topology knows it (empty before it does).
fn nickname(mesh: &Mesh, name: crate::identity::PeerName) -> String {
    mesh.topology()
        .get(name)
        .map(|p| p.nickname.clone())
        .unwrap_or_default()
}

/// This router's connections to peers, with their data paths: what the
/// report lists first, and what our links tell the mesh.
pub fn connections(v: &RouterView<'_>) -> Vec<ConnectionReport> {
    let mesh = v.mesh;
    let nickname_of = |name| nickname(mesh, name);
    let overlay_mtu = v.settings.overlay_mtu;
    mesh.connections()
        .map(|c| {
            let state = v.paths.peer(c.peer.name);
            let report = state.and_then(|p| p.userspace.as_ref());
            let usable = state.is_some_and(PeerPath::usable);
            let overlay = state.map_or(Overlay::Userspace, PeerPath::overlay);
            // Carrying on a kernel path (the vxlan device only alongside a
            // usable userspace path, which carries its floods).
            let on_kernel = usable && overlay != Overlay::Userspace;
            let sealed = state.map_or(c.encrypted, |p| p.sealed);
            // On the userspace path, or on none: say why not a kernel path
            // (and, with no path at all, why not userspace either).
            // Without a data path of its own, the peer's traffic may
            // still go through another router: say which.
            let relay = (!usable)
                .then(|| v.routes.next_hop(c.peer.name))
                .flatten()
                .filter(|hop| *hop != c.peer.name)
                .map(|hop| format!("; traffic relayed through {}", nickname_of(hop)))
                .unwrap_or_default();
            let reason = match (state, report) {
                (None, _) => Some("waiting for the peer's data path offer".into()),
                (Some(s), _) if on_kernel || usable => s.reason().map(|r| r.as_str().to_string()),
                (Some(s), Some(r)) => Some(format!(
                    "{}; userspace path: {}",
                    s.reason().map_or(
                        if overlay == Overlay::Vxlan {
                            "the vxlan device passes heartbeats but needs the userspace path for broadcasts"
                        } else {
                            "kernel path down"
                        },
                        |r| r.as_str()
                    ),
                    r.reason
                        .clone()
                        .unwrap_or_else(|| "no heartbeats yet".into())
                )),
                (Some(_), None) => Some("waiting for the first heartbeats".into()),
            }
            .map(|r| r + &relay);
            let mtu = if on_kernel {
                Some(overlay_mtu)
            } else {
                report
                    .and_then(|r| r.path_mtu)
                    .map(|m| m.saturating_sub(encap::overhead(sealed)).min(overlay_mtu))
            };
            ConnectionReport {
                peer: Some(c.peer.name.to_string()),
                nickname: Some(c.peer.nickname.clone()),
                address: c.address.to_string(),
                outbound: c.outbound,
                state: if usable { "established" } else { "connected" }.into(),
                overlay: usable.then(|| overlay.to_string()),
                encrypted: Some(sealed && !on_kernel),
                mtu,
                reason,
                advice: state
                    .and_then(PeerPath::reason)
                    .map(|r| r.advice().to_string()),
            }
        })
        .collect()
}

pub fn build(v: &RouterView<'_>, now: Instant) -> Report {
    let mesh = v.mesh;
    let id = mesh.identity();
    let reachable = mesh.routes().reachable();
    let adjacency = mesh.routes().adjacency();
    let nickname_of = |name| nickname(mesh, name);
    let links = v.host.links.lock();
    let peers = mesh
        .topology()
        .peers()
        .filter(|p| reachable.contains(&p.name))
        .map(|p| PeerReport {
            name: p.name.to_string(),
            nickname: p.nickname.clone(),
            uid: p.uid,
            connections: p
                .connections
                .iter()
                .map(|c| {
                    let link = links.link(p.name, c.peer);
                    PeerConnectionReport {
                        peer: c.peer.to_string(),
                        nickname: nickname_of(c.peer),
                        address: c.address.to_string(),
                        outbound: c.outbound,
                        established: adjacency.get(&p.name).is_some_and(|a| a.contains(&c.peer)),
                        overlay: link.and_then(|l| l.overlay.clone()),
                        mtu: link.and_then(|l| l.mtu),
                        encrypted: link.and_then(|l| l.encrypted),
                        reason: link.and_then(|l| l.reason.clone()),
                    }
                })
                .collect(),
        })
        .collect();
    drop(links);
    let mut connections = connections(v);
    let connected: std::collections::BTreeSet<_> =
        mesh.connections().map(|c| c.peer.name).collect();
    for t in mesh.targets() {
        let covered = t.peer.is_some_and(|p| connected.contains(&p));
        if covered || t.state == TargetState::Connected {
            continue;
        }
        let state = match (t.state, &t.last_error) {
            (TargetState::Connecting, _) => "connecting",
            (TargetState::OurOwn, _) => "failed",
            (_, Some(_)) => "retrying",
            (_, None) => "connecting",
        };
        connections.push(ConnectionReport {
            peer: t.peer.map(|p| p.to_string()),
            nickname: t.peer.map(nickname_of).filter(|n| !n.is_empty()),
            address: t.address.to_string(),
            outbound: true,
            state: state.into(),
            overlay: None,
            encrypted: None,
            mtu: None,
            reason: t.last_error.clone(),
            advice: None,
        });
    }
    for f in v.failures {
        connections.push(ConnectionReport {
            peer: f.peer.as_ref().map(|p| p.name.to_string()),
            nickname: f.peer.as_ref().map(|p| p.nickname.clone()),
            address: f.remote.to_string(),
            outbound: false,
            state: "failed".into(),
            overlay: None,
            encrypted: None,
            mtu: None,
            reason: Some(format!(
                "{} ({:.0}s ago)",
                f.reason,
                now.duration_since(f.at).as_secs_f64()
            )),
            advice: None,
        });
    }
    let targets = mesh
        .targets()
        .map(|t| {
            let state = if t.peer.is_some_and(|p| connected.contains(&p)) {
                "connected"
            } else {
                match t.state {
                    TargetState::Waiting => "waiting",
                    TargetState::Connecting => "connecting",
                    TargetState::Connected => "connected",
                    TargetState::OurOwn => "our-own-address",
                }
            };
            TargetReport {
                address: t.address.to_string(),
                source: match t.source {
                    Source::CommandLine => "command-line",
                    Source::Api => "connect",
                    Source::Resumed => "resumed",
                    Source::Discovered => "discovered",
                }
                .into(),
                state: state.into(),
                attempts: t.attempts,
                next_try_seconds: (t.state == TargetState::Waiting && state == "waiting")
                    .then(|| t.next_try.saturating_duration_since(now).as_secs_f64()),
                last_error: t.last_error.clone(),
            }
        })
        .chain(
            v.settings
                .peers
                .unresolved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(name, error)| TargetReport {
                    address: name.clone(),
                    source: "command-line".into(),
                    state: "resolving".into(),
                    attempts: 0,
                    next_try_seconds: None,
                    last_error: Some(format!("{error} (trying again in the background)")),
                }),
        )
        .collect::<Vec<_>>();
    Report {
        router: RouterInfo {
            name: id.name.to_string(),
            nickname: id.nickname.clone(),
            uid: id.uid,
            version: crate::VERSION.into(),
            protocol: format!("weft {}..{}", PROTOCOL.0, PROTOCOL.1),
            port: v.settings.port,
            encryption: v.settings.encryption,
            discovery: v.settings.discovery,
            conn_limit: v.settings.conn_limit,
            uptime_seconds: now.duration_since(v.started).as_secs(),
        },
        peers,
        connections,
        targets,
        host: HostReport {
            gateway: v.host.gateway.iter().map(|g| g.to_string()).collect(),
            firewall: v.host.firewall.status(),
        },
        // Filled by the API, which holds the name service and the
        // conditioned containers.
        dns: DnsReport::default(),
        conditioned: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["A", "LONG HEADER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(out, "A          LONG HEADER\nwide cell  x\ny          z\n");
    }
}
