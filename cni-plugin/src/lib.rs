//! The CNI plugin: the container runtime's door into weft.
//!
//! This crate owns the CNI contract (commands, JSON in on stdin, a result or
//! a CNI error on stdout, logs on stderr only) and the translation of CNI
//! requests into calls to the local weft router's API.
//!
//! It must not keep state of its own or allocate addresses itself: the router
//! is the only owner of IPAM and of the bridge, so a plugin invocation that
//! dies halfway can always be retried.
