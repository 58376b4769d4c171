//! The router's network devices: the `weft` bridge that containers plug
//! into, the TAP port through which the userspace data path sees the
//! bridge, and the veth pairs of attached containers.

pub mod attach;
pub mod netlink;
pub mod tap;
pub mod target;

use std::net::SocketAddr;

pub use netlink::{Link, Netlink, NetlinkError};
pub use tap::Tap;

/// The bridge containers are attached to.
pub const BRIDGE: &str = "weft";
/// The router's port on the bridge.
pub const TAP: &str = "weft-tap";
/// The interface a container gets.
pub const CONTAINER_IF: &str = "weft0";
/// Below this no IPv4 host has to accept packets; an underlay this small
/// leaves no room for an overlay.
pub const MIN_MTU: u32 = 576;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(
        "cannot create the TAP device {name}: {cause} (is /dev/net/tun there, and are we root?)"
    )]
    Tap { name: String, cause: std::io::Error },
    #[error(
        "no interface with an address to carry the overlay (and no route to a peer): give a peer address, or --mtu"
    )]
    NoUnderlay,
}

/// The host's overlay devices, shared with the API for attaching.
pub struct HostNetwork {
    pub netlink: Netlink,
    /// Index of the bridge.
    pub bridge: u32,
    /// The overlay MTU.
    pub mtu: u32,
    pub registry: tokio::sync::Mutex<attach::Registry>,
}

/// The interface traffic to other hosts leaves from, and its MTU: the
/// route to the first peer, else the default route, else the addressed
/// interface with the smallest MTU.
pub async fn underlay(netlink: &Netlink, peers: &[SocketAddr]) -> Result<Link, NetdevError> {
    let links = netlink.links().await?;
    let by_index = |i: u32| links.iter().find(|l| l.index == i).cloned();
    for dest in peers
        .iter()
        .map(|p| p.ip())
        .chain(["1.1.1.1".parse().expect("an address")])
    {
        if let Some(link) = netlink
            .route_link(dest)
            .await
            .ok()
            .flatten()
            .and_then(by_index)
        {
            return Ok(link);
        }
    }
    // No route to go by: the interfaces with an address that are not
    // ours or enslaved. With several, the smallest MTU is the one that
    // never black-holes; heartbeats then verify it per connection.
    let mut candidates = Vec::new();
    for link in links.iter().filter(|l| {
        l.name != "lo"
            && !l.name.starts_with("weft")
            && !l.name.starts_with(attach::HOST_PREFIX)
            && l.controller.is_none()
    }) {
        if !netlink.addresses(link.index).await?.is_empty() {
            candidates.push(link.clone());
        }
    }
    let chosen = candidates
        .iter()
        .min_by_key(|l| l.mtu)
        .cloned()
        .ok_or(NetdevError::NoUnderlay)?;
    if candidates.len() > 1 {
        let names: Vec<&str> = candidates.iter().map(|l| l.name.as_str()).collect();
        tracing::info!(
            candidates = ?names,
            chosen = %chosen.name,
            mtu = chosen.mtu,
            "no route to a peer or default route: the underlay MTU is the smallest of the addressed interfaces"
        );
    }
    Ok(chosen)
}

/// The TAP's own MTU: the largest a TAP takes (65535 less its Ethernet header), so the bridge hands every
/// frame to the router, which answers frames too big for their path with
/// "fragmentation needed" instead of the bridge dropping them silently
/// (as it would for a container whose MTU predates a change of ours).
const TAP_MTU: u32 = 65521;

/// Creates (or adopts) the bridge with the overlay MTU and opens a fresh
/// TAP. Without a fast datapath the TAP is the bridge's way out of the
/// host; with one, the datapath owns the TAP and its internal port joins
/// the bridge instead ([`crate::fastdp`]).
pub async fn setup(netlink: &Netlink, mtu: u32, fastdp: bool) -> Result<(Link, Tap), NetdevError> {
    let bridge = netlink.ensure_bridge(BRIDGE, mtu).await?;
    let tap = Tap::open(TAP).map_err(|cause| NetdevError::Tap {
        name: TAP.into(),
        cause,
    })?;
    let link = netlink
        .link(TAP)
        .await?
        .ok_or_else(|| NetlinkError::NoSuchLink(TAP.into()))?;
    netlink.set_mtu_up(link.index, TAP_MTU).await?;
    if !fastdp {
        netlink.attach(link.index, bridge.index).await?;
    }
    Ok((bridge, tap))
}

/// Falls back to the TAP on the bridge (the datapath could not be set up
/// after all).
pub async fn tap_on_bridge(netlink: &Netlink, bridge: u32) -> Result<(), NetdevError> {
    let tap = netlink.require(TAP).await?;
    netlink.attach(tap.index, bridge).await?;
    Ok(())
}
