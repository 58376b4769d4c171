#![no_main]
//! Any gossip payload on the names channel: an error or a merge, never a
//! panic, and our full state reads back; any bytes as a DNS query: an
//! answer no larger than the client takes over UDP, or nothing, never a
//! panic.

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_router::{
    identity::PeerName,
    mesh::Channel,
    names::{
        name::Fqdn,
        records::Names,
        responder::{self, CLASSIC_UDP, MAX_UDP, Outcome, Transport, Zone},
    },
};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut names = Names::new(PeerName::from_u64(1), 10);
    names.on_peers_changed(now, &[PeerName::from_u64(2)].into());
    if names.on_gossip(now, PeerName::from_u64(2), data).is_ok() {
        let full = names.full_state().expect("a full state");
        let mut other = Names::new(PeerName::from_u64(3), 10);
        other
            .on_gossip(now, PeerName::from_u64(1), &full)
            .expect("our own state reads back");
    }
    let zone = Zone {
        domain: Fqdn::parse("weft.local.").unwrap(),
        ttl: 1,
    };
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
    for (transport, waited) in [(Transport::Udp, false), (Transport::Tcp, true)] {
        match responder::respond(&zone, &names, data, transport, waited, &mut rng) {
            Outcome::Reply(answer) if transport == Transport::Udp => {
                assert!(answer.len() <= MAX_UDP.max(CLASSIC_UDP), "{} bytes", answer.len());
            }
            _ => {}
        }
    }
    let _ = responder::server_failure(data);
});
