#![no_main]
//! Any gossip payload on the hosts channel: an error or a merge, never a
//! panic; and what merged is what the router then reports.

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_router::{
    hosts::Hosts,
    identity::PeerName,
    mesh::Channel,
};

fuzz_target!(|data: &[u8]| {
    let mut hosts = Hosts::new(PeerName::from_u64(1), 10);
    let now = Instant::now();
    if hosts.on_gossip(now, PeerName::from_u64(2), data).is_ok() {
        // Whatever merged can be gossiped on, and read back the same.
        let full = hosts.full_state().expect("a full state");
        let mut other = Hosts::new(PeerName::from_u64(3), 10);
        other.on_gossip(now, PeerName::from_u64(1), &full).expect("our own state reads back");
    }
});
