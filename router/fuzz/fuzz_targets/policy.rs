#![no_main]
//! Any gossip payload on the policy channel: an error or a merge, never a
//! panic, and our full state reads back; any bytes as an NFLOG message:
//! a drop or nothing, never a panic.

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use weft_router::{
    identity::PeerName,
    mesh::Channel,
    policy::{droplog, records::Records, Known},
};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut records = Records::new(PeerName::from_u64(1), 10);
    records.on_peers_changed(now, &[PeerName::from_u64(2)].into());
    if records.on_gossip(now, PeerName::from_u64(2), data).is_ok() {
        let full = records.full_state().expect("a full state");
        let mut other = Records::new(PeerName::from_u64(3), 10);
        other
            .on_gossip(now, PeerName::from_u64(1), &full)
            .expect("our own state reads back");
        // Whatever arrived, compiling it is safe.
        let _ = Known::of(&records).plan_here();
    }
    if let Some(d) = droplog::parse(data) {
        let _ = droplog::describe(&d, "x/a", &[]);
    }
});
