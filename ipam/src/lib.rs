//! Address allocation for containers without an external store.
//!
//! This crate owns the ring: how the address range is divided among peers,
//! how space moves between them, how their views merge, which cluster a
//! ring belongs to, and which addresses each peer holds.
//!
//! It does no I/O and reads no clock: messages come in as bytes, time comes
//! in as an argument, and it returns the bytes to send and the results of
//! requests. Persistence and networking belong to the router, which must
//! store [`Ipam::snapshot`] whenever [`Ipam::dirty`] says so, before it
//! sends anything the agent queued.

#![forbid(unsafe_code)]

pub mod agent;
pub mod layout;
pub mod message;
pub mod paxos;
pub mod peer;
pub mod record;
pub mod ring;
pub mod status;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use agent::{Allocation, Config, Done, Init, Ipam, OpId, Outgoing};
pub use layout::Layout;
pub use peer::Peer;
pub use status::Status;

/// The default range: 10.32.0.0/12, like Weave Net's, so existing firewall
/// rules carry over.
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("the range {0} is too small: give at least a /30")]
    RangeTooSmall(Ipv4Net),
    #[error("subnet {subnet} is outside the allocation range {range}")]
    SubnetOutside { subnet: Ipv4Net, range: Ipv4Net },
    #[error("subnet {0} is too small to allocate from: give at least a /30")]
    SubnetTooSmall(Ipv4Net),
    #[error("address {addr} is outside the allocation range {range}")]
    AddressOutside { addr: Ipv4Addr, range: Ipv4Net },
    #[error("malformed IPAM data: {0}")]
    Malformed(String),
    #[error("no free address in {subnet}: {detail}")]
    NoSpace { subnet: Ipv4Net, detail: String },
    #[error("address {addr} is in use by {holder}")]
    AddressInUse { addr: Ipv4Addr, holder: String },
    #[error("gave up after {secs} s {what}")]
    Timeout { secs: u64, what: String },
    #[error("{0}")]
    ClusterConflict(String),
    #[error("the stored IPAM state does not fit this router: {0}")]
    StateMismatch(String),
    #[error("peer {0} is reachable: rmpeer is for peers that are gone; stop it first")]
    PeerReachable(String),
    #[error("a router cannot remove itself; run rmpeer on another peer")]
    CannotRemoveSelf,
    #[error("unknown peer {0}: it owns no space")]
    UnknownPeer(String),
    /// The router could not store the state, so the answer cannot be
    /// given: an address that is not on disk must not be used.
    #[error(
        "the IPAM state could not be stored ({0}); nothing was handed out: free space in the data directory and try again"
    )]
    NotStored(String),
}
