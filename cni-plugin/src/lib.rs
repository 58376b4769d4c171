//! The CNI plugin: the container runtime's door into weft.
//!
//! This crate owns the CNI contract (commands from the environment, the
//! network configuration on stdin, a result or a CNI error on stdout, logs
//! on stderr only) and its translation into calls to the local router's
//! API.
//!
//! It keeps no state of its own and allocates nothing itself: the router
//! owns IPAM, the bridge and the registry of attachments, so an invocation
//! that dies halfway can always be retried, and DEL and GC can always
//! find what ADD made.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod plugin;
pub mod result;

pub use config::{Command, Env, NetConf};
pub use error::CniError;
pub use plugin::{Router, RouterError, run};
