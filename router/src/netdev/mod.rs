//! The router's network devices: the `weft` bridge that containers plug
//! into, the TAP port through which the userspace data path sees the
//! bridge, and the veth pairs of attached containers.

pub mod attach;
pub mod collision;
pub mod gateway;
pub mod netlink;
pub mod packet;
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
    /// The host's addresses on the bridge; lock after `registry` when
    /// both are needed.
    pub gateway: tokio::sync::Mutex<gateway::Gateway>,
    /// Containers whose traffic passes through a conditioner.
    pub conditioning: crate::condition::Conditioning,
    /// Flow top's counting, while someone watches.
    pub flows: crate::flows::FlowTop,
}

/// Whether weft made this device: its addresses and routes are the
/// overlay's, not the host's.
pub fn is_weft_device(name: &str) -> bool {
    name.starts_with("weft") || name.starts_with("vwef")
}

/// The host's own IPv4 routes (main table) and addresses, each with its
/// device, leaving out weft's devices.
pub async fn host_networks(
    netlink: &Netlink,
) -> Result<(Vec<collision::HostNet>, Vec<collision::HostNet>), NetdevError> {
    let links = netlink.links().await?;
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map_or_else(|| format!("if{index}"), |l| l.name.clone())
    };
    let routes = netlink
        .routes_v4()
        .await?
        .into_iter()
        .map(|(net, oif)| collision::HostNet {
            net,
            device: oif.map_or_else(|| "-".to_string(), name_of),
        })
        .filter(|r| !is_weft_device(&r.device))
        .collect();
    let mut addresses = Vec::new();
    for link in links.iter().filter(|l| !is_weft_device(&l.name)) {
        for net in netlink.addresses(link.index).await? {
            if let ipnet::IpNet::V4(net) = net {
                addresses.push(collision::HostNet {
                    net,
                    device: link.name.clone(),
                });
            }
        }
    }
    Ok((routes, addresses))
}

/// Why `net` cannot be used here (it collides with the host's network),
/// or `None`; `what` names it in the message.
pub async fn collision(
    netlink: &Netlink,
    net: ipnet::Ipv4Net,
    what: &str,
) -> Result<Option<String>, NetdevError> {
    let (routes, addresses) = host_networks(netlink).await?;
    Ok(collision::check(net, what, &routes, &addresses))
}

/// The host's addresses that answer containers' own addresses when they
/// arrive from the underlay: not loopback, and not on a device whose
/// reverse-path filter is strict (it would drop them, since the way back
/// to the range is the bridge).
pub async fn direct_addresses(netlink: &Netlink) -> Result<Vec<std::net::Ipv4Addr>, NetdevError> {
    let rp_filter = |device: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{device}/rp_filter"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    let all = rp_filter("all");
    let (_, addresses) = host_networks(netlink).await?;
    Ok(addresses
        .into_iter()
        .filter(|a| !a.net.addr().is_loopback() && all.max(rp_filter(&a.device)) != 1)
        .map(|a| a.net.addr())
        .collect())
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

/// The bridge's MAC: fixed, and unique to this router on the overlay. A
/// bridge left to itself takes the lowest MAC of its ports, which changes
/// when the router's TAP is made again at a restart; containers would
/// then send to their gateway's old MAC until their ARP entry expires.
pub fn bridge_mac(peer: crate::identity::PeerName) -> [u8; 6] {
    let seed = [b"weft bridge ".as_slice(), &peer.octets()].concat();
    crate::identity::PeerName::derive(&seed).octets()
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
pub async fn setup(
    netlink: &Netlink,
    peer: crate::identity::PeerName,
    mtu: u32,
    fastdp: bool,
) -> Result<(Link, Tap), NetdevError> {
    let bridge = netlink.ensure_bridge(BRIDGE, mtu, bridge_mac(peer)).await?;
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
