//! What `weft status ipam` shows: the ring per peer, free counts, and who
//! owns space but cannot be reached. The router lays it out.

use std::{collections::BTreeMap, net::Ipv4Addr};

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
