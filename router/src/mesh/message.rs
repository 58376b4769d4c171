//! The messages routers exchange over control connections, one per record.

use serde::{Deserialize, Serialize};

use crate::{
    identity::PeerName,
    mesh::topology::{DigestEntry, PeerInfo},
};

/// A broadcast that has been forwarded this many times is dropped: trees
/// never get this deep, but views that disagree while the topology changes
/// must not let a message circle.
pub const MAX_BROADCAST_HOPS: u8 = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// Sent when a connection has been idle, to show it is alive.
    Heartbeat,
    /// The connection is refused after the handshake (name clash, limit,
    /// duplicate); the sender closes it next.
    Refuse { reason: String },
    /// Topology entries: changes as they happen, and the answer to a
    /// digest or request.
    Topology { entries: Vec<PeerInfo> },
    /// Anti-entropy: which entry versions the sender holds.
    Digest { entries: Vec<DigestEntry> },
    /// Entries the sender wants in full.
    Request { names: Vec<PeerName> },
    /// A subsystem's state for a neighbor to merge.
    Gossip { channel: String, payload: Vec<u8> },
    /// A subsystem's message for every router, along the source's tree.
    Broadcast {
        channel: String,
        source: PeerName,
        hops: u8,
        payload: Vec<u8>,
    },
    /// A subsystem's message for one router, forwarded hop by hop.
    Unicast {
        channel: String,
        source: PeerName,
        destination: PeerName,
        payload: Vec<u8>,
    },
    /// How to reach the sender's data path: its UDP port, the session id to
    /// put on datagrams for it, whether it wants them encrypted, and its
    /// vxlan port if it has a fast datapath.
    DataPath {
        udp_port: u16,
        session: u32,
        encrypt: bool,
        vxlan_port: Option<u16>,
    },
    /// What `DataPath` says, with the sender's kernel path: the vxlan port
    /// of its fast datapath or of its vxlan device, whichever it runs.
    /// (`DataPath` is what routers before the vxlan device sent.)
    DataPathOffer {
        udp_port: u16,
        session: u32,
        encrypt: bool,
        fastdp_port: Option<u16>,
        vxlan_device_port: Option<u16>,
    },
}

impl ControlMessage {
    /// What kind of message it is, with the channel for a subsystem's:
    /// `gossip:ipam`, `topology`...
    /// The message's kind for counting; `known` says whether a channel
    /// is one of ours, as a peer may send any channel name.
    pub fn kind(&self, known: impl Fn(&str) -> bool) -> String {
        let named = |c: &str| {
            if known(c) {
                c.to_string()
            } else {
                "other".into()
            }
        };
        match self {
            ControlMessage::Heartbeat => "heartbeat".into(),
            ControlMessage::Refuse { .. } => "refuse".into(),
            ControlMessage::Topology { .. } => "topology".into(),
            ControlMessage::Digest { .. } => "digest".into(),
            ControlMessage::Request { .. } => "request".into(),
            ControlMessage::Gossip { channel, .. } => format!("gossip:{}", named(channel)),
            ControlMessage::Broadcast { channel, .. } => format!("broadcast:{}", named(channel)),
            ControlMessage::Unicast { channel, .. } => format!("unicast:{}", named(channel)),
            ControlMessage::DataPath { .. } | ControlMessage::DataPathOffer { .. } => {
                "data-path".into()
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("control messages serialize")
    }

    /// Reads a message off the wire; anything malformed is an error.
    pub fn decode(bytes: &[u8]) -> Result<ControlMessage, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("malformed control message: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_channel_we_do_not_have_counts_as_other() {
        let gossip = |channel: &str| ControlMessage::Gossip {
            channel: channel.into(),
            payload: vec![],
        };
        let ours = |c: &str| c == "ipam";
        assert_eq!(gossip("ipam").kind(ours), "gossip:ipam");
        assert_eq!(gossip("made-up-by-a-peer").kind(ours), "gossip:other");
        assert_eq!(ControlMessage::Heartbeat.kind(ours), "heartbeat");
    }

    #[test]
    fn messages_round_trip() {
        let messages = [
            ControlMessage::Heartbeat,
            ControlMessage::Refuse {
                reason: "name clash".into(),
            },
            ControlMessage::Request {
                names: vec![PeerName::from_u64(7)],
            },
            ControlMessage::Broadcast {
                channel: "ipam".into(),
                source: PeerName::from_u64(1),
                hops: 3,
                payload: vec![1, 2, 3],
            },
        ];
        for m in messages {
            assert_eq!(ControlMessage::decode(&m.encode()), Ok(m));
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = ControlMessage::decode(&bytes);
        }
    }
}
