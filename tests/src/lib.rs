//! A testbed of simulated hosts, each a network namespace on this machine.
//!
//! It owns everything weft's integration tests need from the kernel besides
//! weft itself: hosts joined by an underlay bridge (optionally through a
//! router hop with a smaller MTU), container namespaces for weft to attach,
//! commands and background processes inside them, nftables blocks between
//! hosts, and cleanup that also happens after a panic, a kill or Ctrl-C.
//!
//! It must never touch the namespace it was started in: every interface,
//! route and nftables rule it makes lives inside a namespace it created, so
//! removing those namespaces removes everything. Traffic goes only to
//! addresses inside them.
//!
//! ```no_run
//! use testbed::{Block, Spec, Testbed};
//! let mut tb = Testbed::create_owned("example", Spec::hosts(3)).unwrap();
//! let h2 = tb.host_addr(2).to_string();
//! tb.host(1).run(["ping", "-c1", "-W1", h2.as_str()]).unwrap();
//! tb.block(1, 2, Block::AllUdp).unwrap();
//! // dropping `tb` removes every namespace, process and rule it made
//! ```

mod bins;
mod block;
mod churn;
mod error;
pub mod kube_api;
mod netns;
pub mod netpol;
mod probe;
mod process;
pub mod runtime;
mod spec;
mod state;
mod testbed;
mod weft;

pub use bins::workspace_bin;
pub use block::{Block, BlockRule};
pub use churn::MacChurn;
pub use error::Error;
pub use netns::Netns;
pub use probe::{capture, ping, tcp_seen_source, tcp_transfer, udp_probe};
pub use process::Background;
pub use runtime::{Dockerd, Podman, busybox_tar};
pub use spec::{Hop, Node, Spec};
pub use testbed::{Testbed, destroy, gc, list, owned_by_a_live_process};
pub use weft::{WeftHost, container_addr, eventually, kube_proxy_rules, pings};

pub type Result<T, E = Error> = std::result::Result<T, E>;
