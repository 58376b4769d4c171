#![no_main]
//! Any datagram's header and routing fields, and any frame as a vxlan
//! heartbeat (what reaches the vxlan device's socket from the network):
//! never a panic, and what parses re-emits to bytes that parse the same.

use libfuzzer_sys::fuzz_target;
use weft_router::{
    overlay::heartbeat::Heartbeat,
    userspace::encap::{HEADER_LEN, Header, Routing},
};

fuzz_target!(|data: &[u8]| {
    if let Some(hb) = Heartbeat::parse(data) {
        let dst: [u8; 6] = data[..6].try_into().expect("a heartbeat has a header");
        assert_eq!(Heartbeat::parse(&hb.frame_to(dst, data.len())), Some(hb));
    }
    if let Ok(header) = Header::parse(data) {
        assert_eq!(Header::parse(&header.emit()), Ok(header));
        if let Ok(routing) = Routing::parse(header.kind, &data[HEADER_LEN..]) {
            let mut buf = [0u8; 16];
            let n = routing.emit(&mut buf);
            assert_eq!(Routing::parse(header.kind, &buf[..n]), Ok(routing));
        }
    }
});
