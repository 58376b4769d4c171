//! Cryptography for weft's control connections and userspace data path.
//!
//! This crate owns the authenticated key exchange between two routers, the
//! record layer of the TCP control stream and the sealing of data packets
//! sent over UDP, including replay protection and rekeying.
//!
//! It must stay pure: no sockets, no threads and no clock (time comes in as
//! an argument), so every property can be tested in memory and fuzzed.
