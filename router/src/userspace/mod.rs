//! The userspace overlay (`userspace` in `weft status`): frames between
//! the bridge's TAP port and the peers' routers over UDP, sealed when the
//! mesh has a password, with its own MTU discovery and fragmentation.

pub mod encap;
pub mod engine;
pub mod forwarding;
pub mod fragment;
pub mod icmp;
pub mod offload;
pub mod packet;
pub mod socket;
pub mod switch;
pub mod udp_path;
