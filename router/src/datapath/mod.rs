pub mod encap;
pub mod engine;
pub mod forwarding;
pub mod icmp;
pub mod offload;
pub mod packet;
pub mod socket;
pub mod udp_path;
