#![no_main]
//! The frame decoder under any stream cut any way: the frames that come out
//! do not depend on how the bytes arrived.

use libfuzzer_sys::fuzz_target;
use weft_crypto::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let decode = |chunk: usize| {
        let mut d = FrameDecoder::new(4096);
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            d.push(piece);
            loop {
                match d.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(_) => return (frames, true),
                }
            }
        }
        (frames, false)
    };
    assert_eq!(decode(step), decode(stream.len().max(1)));
});
