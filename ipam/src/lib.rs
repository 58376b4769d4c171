//! Address allocation for containers without an external store.
//!
//! This crate owns the ring: how the address range is divided among peers,
//! how space moves between them, how their views merge, and which cluster a
//! ring belongs to.
//!
//! It does no I/O and reads no clock: messages come in as bytes, time comes
//! in as an argument, and it returns the bytes to gossip and the actions to
//! take. Persistence and networking belong to the router.
