#![no_main]
//! Frames from a peer go through the coalescer, super-frames from the TAP
//! through segmentation: whatever the bytes, no panic, coalescing loses no
//! payload byte, and a super-frame counts as the segments it is cut into.

use libfuzzer_sys::fuzz_target;
use weft_router::userspace::offload::{Coalescer, VNET_HDR_LEN, VnetHdr, segment, segments};

fuzz_target!(|data: &[u8]| {
    if data.len() > VNET_HDR_LEN {
        let hdr = VnetHdr::parse(data).expect("long enough");
        let mut frame = data[VNET_HDR_LEN..].to_vec();
        // What a conditioned port counts a super-frame as is what cutting
        // it gives.
        let counted = segments(&hdr, &frame);
        let mut cut = (0u64, 0usize);
        let ok = segment(&hdr, &mut frame, &mut Vec::new(), |s| {
            cut.0 += 1;
            cut.1 += s.len().saturating_sub(14);
        });
        if let (Ok(()), Some(counted)) = (ok, counted) {
            assert_eq!(counted, cut, "counted as it is cut");
        }
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
