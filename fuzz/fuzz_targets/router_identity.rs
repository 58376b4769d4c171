#![no_main]
//! Any hello identity: never a panic, and what decodes round-trips.

use libfuzzer_sys::fuzz_target;
use weft_router::identity::PeerIdentity;

fuzz_target!(|data: &[u8]| {
    if let Ok(identity) = PeerIdentity::decode(data) {
        assert_eq!(PeerIdentity::decode(&identity.encode()), Ok(identity));
    }
});
