//! weft's network policy, with no I/O: Kubernetes `networking.k8s.io/v1`
//! NetworkPolicy objects read (JSON or YAML) and checked with the field and
//! the reason when they are wrong ([`model`]), label selectors
//! ([`selector`]), and the compiler from policies and the mesh's endpoints
//! to the allow lists of one host's containers ([`compile`]), rendered as
//! the nftables chains the router puts in its own table ([`nft`]).
//!
//! The compiler's plan also answers "would this connection be allowed,
//! and why" ([`compile::Plan::verdict`]), which is what `weft policy check`
//! says and what the tests compare real traffic with.

pub mod cases;
pub mod compile;
pub mod model;
pub mod nft;
pub mod selector;

pub use compile::{Endpoint, Inventory, Plan, Verdict};
pub use model::{Policy, PolicyError, Protocol};
pub use selector::{Labels, Selector};
