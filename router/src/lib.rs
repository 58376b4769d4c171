//! The weft router: everything a host runs to be part of a weft mesh.
//!
//! It owns the daemon (control connections, gossip, topology, the HTTP API),
//! the choice of data path per connection (kernel fast datapath or the
//! encrypted userspace path) and the `weft` command line that drives it.
//!
//! It must not hold protocol state machines that do their own I/O: the
//! handshake lives in `weft-crypto`, the address ring in `weft-ipam` and the
//! kernel datapath wire format in `weft-odp`; the mesh logic here ([`mesh`])
//! is pure as well, and the runtime wires all of them to sockets, timers
//! and the kernel.

pub mod api;
pub mod cli;
pub mod condition;
pub mod daemon;
pub mod fastdp;
pub mod firewall;
pub mod flows;
#[cfg(test)]
mod formats;
pub mod hosts;
pub mod identity;
pub mod ipam;
pub mod kubernetes;
pub mod links;
pub mod liveness;
pub mod mesh;
pub mod names;
pub mod netdev;
pub mod overlay;
pub mod policy;
pub mod sbin;
pub mod state_file;
pub mod userspace;
pub mod vxlan_device;
pub mod worker;

/// The version reported by `weft version` and in `weft report`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
