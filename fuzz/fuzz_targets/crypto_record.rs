#![no_main]
//! Any bytes as a control stream: frames are cut, records opened, and
//! nothing panics (forgeries are refused).

use libfuzzer_sys::fuzz_target;
use weft_crypto::{FrameDecoder, RecordReceiver, record::MAX_FRAME};

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut receiver = RecordReceiver::plain();
    decoder.push(data);
    while let Ok(Some(frame)) = decoder.next_frame() {
        let _ = receiver.open(frame);
    }
    let _ = decoder.finish();
});
