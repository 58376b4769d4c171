//! weft's network conditioning, with no I/O: what a container's traffic
//! should suffer, per direction and per flow ([`rules`], [`qos`]), the same
//! thing in Synthetic Network's JSON ([`synthetic`]), which flow a packet
//! belongs to ([`packet`]), and the conditioner that decides when each
//! packet leaves, or that it never does ([`conditioner`]); and which
//! conditions the kernel's own shapers keep instead ([`kernel`]).
//!
//! Time is passed in: the conditioner is driven by `push(now, ..)` and
//! `poll(now)`, so its accuracy is tested in memory, packet by packet,
//! and the router's edge only reads, waits and writes.

pub mod conditioner;
pub mod kernel;
pub mod loss;
pub mod packet;
pub mod qos;
pub mod rules;
pub mod shaper;
pub mod synthetic;

pub use conditioner::{Conditioner, Counters};
pub use packet::{Direction, FlowKey};
pub use qos::Qos;
pub use rules::{Conditions, ConfigError, FlowMatch, FlowRule, Link};
