#![no_main]
//! Any bytes as IPAM gossip, broadcasts, unicasts and stored state, given
//! to an agent that has a ring and addresses: errors, never a panic.

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_ipam::{Config, Init, Ipam, Peer};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut config = Config::new(Peer(1), "10.32.0.0/22".parse().unwrap());
    config.init = Init::Seed(vec![Peer(1), Peer(2)]);
    let mut ipam = Ipam::new(config.clone(), now).unwrap();
    ipam.allocate(now, "c", None);
    let _ = ipam.on_gossip(now, Peer(2), data);
    let _ = ipam.on_broadcast(now, Peer(2), data);
    let _ = ipam.on_unicast(now, Peer(2), data);
    let _ = Ipam::restore(config, now, data);
    ipam.tick(now);
    let _ = ipam.status(now);
});
