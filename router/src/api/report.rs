//! The router's state as `weft report` prints it (JSON) and as the
//! `weft status` tables show it. Field names are part of the interface:
//! scripts read them.

use serde::{Deserialize, Serialize};

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
                ]);
            }
        }
        table(&["PEER", "NICKNAME", "CONNECTION", "TO", "STATE"], &rows)
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
                format!("nftables tables {}, {what}{restored}", f.table)
            }
        }
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
