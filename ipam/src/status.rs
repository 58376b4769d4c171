//! What `weft status ipam` shows: the ring per peer, free counts, and who
//! owns space but cannot be reached.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::Peer;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub peer: Peer,
    pub nickname: String,
    pub blocks: u32,
    pub active_blocks: u32,
    /// Addresses in its blocks.
    pub addresses: u64,
    /// Of those, held by anyone.
    pub in_use_in_blocks: u64,
    pub free: u64,
    /// Addresses its record says it holds (wherever they are).
    pub held: u64,
    pub reachable: bool,
    pub unreachable_secs: Option<u64>,
    /// Removed with rmpeer.
    pub removed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub me: Peer,
    pub range: Ipv4Net,
    pub default_subnet: Ipv4Net,
    pub cluster: Option<String>,
    pub block_size: u32,
    pub state: String,
    /// Requests waiting.
    pub pending: usize,
    pub peers: Vec<PeerStatus>,
    /// This peer's containers and their addresses.
    pub containers: BTreeMap<String, Vec<Ipv4Addr>>,
}

impl Status {
    /// The table `weft status ipam` prints.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let cluster = self.cluster.as_deref().unwrap_or("none yet");
        let _ = writeln!(
            s,
            "range {}  default subnet {}  cluster {cluster}  blocks of {}",
            self.range, self.default_subnet, self.block_size
        );
        let _ = writeln!(s, "state: {}", self.state);
        if self.pending > 0 {
            let _ = writeln!(s, "requests waiting: {}", self.pending);
        }
        let rows: Vec<[String; 7]> = self
            .peers
            .iter()
            .map(|p| {
                let name = if p.peer == self.me {
                    format!("{} (this)", p.peer)
                } else {
                    p.peer.to_string()
                };
                let share = if self.range.hosts().count() > 0 {
                    let total = 1u64 << (32 - self.range.prefix_len());
                    format!("{:.1}%", p.addresses as f64 * 100.0 / total as f64)
                } else {
                    String::new()
                };
                let reach = match (p.removed, p.reachable, p.unreachable_secs) {
                    (true, _, _) => "removed".to_string(),
                    (_, true, _) => "reachable".to_string(),
                    (_, false, Some(s)) => format!("UNREACHABLE {s}s"),
                    (_, false, None) => "UNREACHABLE".to_string(),
                };
                [
                    name,
                    p.nickname.clone(),
                    format!("{} ({} active)", p.blocks, p.active_blocks),
                    share,
                    p.free.to_string(),
                    p.held.to_string(),
                    reach,
                ]
            })
            .collect();
        let header = [
            "PEER", "NICKNAME", "BLOCKS", "SHARE", "FREE", "HOLDS", "STATE",
        ]
        .map(String::from);
        let mut widths = header.clone().map(|h| h.len());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        for r in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(s, "{}", line.join("  ").trim_end());
        }
        let stranded: Vec<&PeerStatus> = self
            .peers
            .iter()
            .filter(|p| !p.reachable && !p.removed && p.blocks > 0)
            .collect();
        for p in stranded {
            let _ = writeln!(
                s,
                "peer {} ({}) owns {} blocks but is unreachable: if it is gone for good, run `weft rmpeer {}`",
                p.peer, p.nickname, p.blocks, p.peer
            );
        }
        s
    }
}
