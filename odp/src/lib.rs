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
//!
//! Layout: [`message`] is the envelope shared by all families, [`nla`] the
//! attribute encoding; [`datapath`], [`vport`], [`flow`] and [`packet`] one
//! family each, with their attributes and request constructors; [`client`],
//! [`upcall`] and [`changes`] the sockets.

pub mod changes;
pub mod client;
pub mod codec;
pub mod datapath;
mod error;
pub mod flow;
pub mod message;
pub mod nla;
pub mod packet;
pub mod upcall;
pub mod vport;

pub use changes::ChangeSocket;
pub use client::{Batch, Client, FamilyIds};
pub use datapath::{
    Datapath, DatapathAttr, DatapathFamily, DatapathMessage, DatapathStats, MegaflowStats, features,
};
pub use error::{DecodeError, Error};
pub use flow::{
    Action, Flow, FlowAttr, FlowFamily, FlowMessage, FlowStats, KeyAttr, KeyFields, PutMode,
    TunnelAttr, TunnelKey,
};
pub use message::{Family, Message, ObjectCmd};
pub use packet::{PacketAttr, PacketCmd, PacketFamily, PacketMessage, Upcall};
pub use upcall::UpcallSocket;
pub use vport::{Vport, VportAttr, VportFamily, VportKind, VportMessage, VportStats, VportType};
