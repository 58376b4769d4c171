//! The weft router's API as its clients see it: `weft`, `weft-cni`, the
//! tests and the benchmarks. Small on purpose, so that a client such as
//! the CNI plugin links this and not the router.

#![forbid(unsafe_code)]

pub mod client;

pub use client::{Client, ClientError};
