#![no_main]
//! Any record payload as a control message: never a panic, and what decodes
//! survives an encode/decode round trip unchanged.

use libfuzzer_sys::fuzz_target;
use weft_router::mesh::ControlMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = ControlMessage::decode(data) {
        assert_eq!(ControlMessage::decode(&message.encode()), Ok(message));
    }
});
