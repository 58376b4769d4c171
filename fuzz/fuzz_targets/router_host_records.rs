#![no_main]
//! Any gossip payload on the hosts and links channels (one kind of
//! channel, two kinds of record): an error or a merge, never a panic; and
//! what merged is what the router then gossips on.

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_router::{
    hosts::Hosts,
    identity::PeerName,
    links::Links,
    mesh::Channel,
};

fn round_trip<C: Channel>(new: impl Fn(PeerName) -> C, data: &[u8]) {
    let mut channel = new(PeerName::from_u64(1));
    let now = Instant::now();
    if channel.on_gossip(now, PeerName::from_u64(2), data).is_ok() {
        // Whatever merged can be gossiped on, and read back the same.
        let full = channel.full_state().expect("a full state");
        let mut other = new(PeerName::from_u64(3));
        other
            .on_gossip(now, PeerName::from_u64(1), &full)
            .expect("our own state reads back");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip(|me| Hosts::new(me, 10), data);
    round_trip(|me| Links::new(me, 10), data);
});
