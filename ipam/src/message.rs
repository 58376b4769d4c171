//! What IPAM agents say to each other over the mesh's `ipam` channel.

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    IpamError, Peer,
    paxos::PaxosMessage,
    record::Record,
    ring::{Block, Cluster, Run},
};

/// Ring and records, whole (for a new neighbor and anti-entropy) or the
/// part that just changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    pub cluster: Option<Cluster>,
    /// Whether the sender's cluster has any address in use: when two
    /// clusters meet, one with none yields to the other.
    pub in_use: bool,
    /// `blocks` covers the whole ring.
    pub full: bool,
    pub blocks: Vec<Run>,
    pub records: Vec<(Peer, Record)>,
}

impl Gossip {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("gossip serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Gossip, IpamError> {
        postcard::from_bytes(bytes).map_err(|e| IpamError::Malformed(format!("ipam gossip: {e}")))
    }
}

/// Broadcasts and unicasts, tagged with the sender's cluster so that a
/// request meant for another cluster's ring is never acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub cluster: Option<u64>,
    pub message: Message,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Paxos(PaxosMessage),
    /// Asks for the whole state (we have no ring, or a delta we cannot
    /// place).
    StateRequest,
    State(Gossip),
    /// The owner activates a block; the receiver stores it and confirms.
    Activate {
        block: u32,
        state: Block,
    },
    ActivateAck {
        block: u32,
        version: u32,
    },
    /// The receiver knows a newer state of the block.
    ActivateNack {
        block: u32,
        state: Block,
    },
    /// A peer out of space asks for blocks in `subnet`.
    SpaceRequest {
        subnet: Ipv4Net,
    },
    SpaceGrant {
        blocks: Vec<Run>,
    },
    SpaceDenied {
        subnet: Ipv4Net,
    },
    /// A peer wants a given address in a block the receiver owns.
    Claim {
        addr: u32,
    },
    /// The address is the claimant's to hold; the block stays the owner's.
    ClaimLent {
        addr: u32,
    },
    /// The whole (unused) block is the claimant's now.
    ClaimGranted {
        addr: u32,
        blocks: Vec<Run>,
    },
    ClaimDenied {
        addr: u32,
        reason: String,
    },
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("ipam messages serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, IpamError> {
        postcard::from_bytes(bytes).map_err(|e| IpamError::Malformed(format!("ipam message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{layout::Layout, paxos::Ballot};

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let layout = Layout::new("10.32.0.0/12".parse().unwrap()).unwrap();
        let g = Gossip {
            cluster: Some(Cluster {
                id: 7,
                layout,
                seeds: vec![Peer(1)],
            }),
            in_use: true,
            full: false,
            blocks: vec![Run {
                start: 3,
                len: 2,
                block: Block {
                    owner: Peer(1),
                    version: 4,
                    active: true,
                },
            }],
            records: vec![(Peer(1), Record::default())],
        };
        assert_eq!(Gossip::decode(&g.encode()).unwrap(), g);
        for message in [
            Message::Paxos(PaxosMessage::Prepare(Ballot::default())),
            Message::State(g),
            Message::Claim { addr: 9 },
            Message::SpaceRequest {
                subnet: "10.32.0.0/12".parse().unwrap(),
            },
        ] {
            let e = Envelope {
                cluster: Some(7),
                message,
            };
            assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        }
        assert!(Envelope::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(Gossip::decode(&[]).is_err());
    }
}
