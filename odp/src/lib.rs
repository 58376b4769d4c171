//! The kernel's Open vSwitch datapath (ODP), spoken over generic netlink.
//!
//! This crate owns the four generic netlink families `ovs_datapath`,
//! `ovs_vport`, `ovs_flow` and `ovs_packet`: their message types (parsed from
//! and emitted to bytes, separately from any socket) and a client that sends
//! them to the kernel.
//!
//! It must not make policy: which flows to install, when to fall back to the
//! userspace path, or what a missing module means for the mesh is decided by
//! the router. It reports kernel errors precisely enough for the router to
//! decide.
