#![no_main]
//! nft's listing of the flow-counting table, whatever its bytes: parsed
//! without a panic, and what parses goes through flow top's arithmetic
//! twice (a second reading against the first).

use libfuzzer_sys::fuzz_target;
use weft_router::flows::{
    table,
    top::{Local, Top},
};

fuzz_target!(|data: &[u8]| {
    let Ok(listing) = table::parse(data) else {
        return;
    };
    let locals: Vec<Local> = listing
        .samples
        .iter()
        .take(4)
        .map(|s| Local {
            id: s.source.to_string(),
            addresses: vec![s.source],
            conditions: Default::default(),
        })
        .collect();
    let mut top = Top::default();
    let t0 = std::time::Instant::now();
    let first = top.observe(t0, &listing.samples, listing.full, &locals);
    let second = top.observe(
        t0 + std::time::Duration::from_millis(500),
        &listing.samples,
        listing.full,
        &locals,
    );
    assert_eq!(first.containers.len(), second.containers.len());
    for c in &second.containers {
        for r in &c.rules {
            assert!(r.inbound.bits_per_second == 0.0 && r.outbound.bits_per_second == 0.0);
        }
    }
});
