//! Links, addresses and routes through rtnetlink, in this router's
//! namespace or a container's.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    os::fd::AsRawFd,
};

use futures_util::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use netlink_packet_route::{
    AddressFamily,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourState},
};
use netlink_packet_route::{
    link::{InfoBridge, InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot enter the network namespace: {0}")]
    Namespace(String),
    #[error("{what}: {cause}")]
    Request {
        what: String,
        cause: rtnetlink::Error,
    },
    #[error("no interface named {0}")]
    NoSuchLink(String),
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// What we need to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<[u8; 6]>,
    pub controller: Option<u32>,
}

/// One forwarding entry of a bridge port: the bridge's own (`device`
/// false) or the port device's (a vxlan device's, with its remote).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: [u8; 6],
    pub device: bool,
    pub remote: Option<Ipv4Addr>,
    /// Added as static (not learnt, not the port's own address).
    pub static_: bool,
    /// Clock ticks (1/100 s) since the entry last sent a frame.
    pub idle_ticks: Option<u32>,
}

fn link_of(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        controller: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) if a.len() == 6 => link.mac = a.as_slice().try_into().ok(),
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            _ => {}
        }
    }
    link
}

/// A vxlan device to make as a port of a bridge.
#[derive(Clone, Copy, Debug)]
pub struct VxlanPort<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// Its UDP port.
    pub port: u16,
    pub mtu: u32,
    /// The bridge's interface index.
    pub bridge: u32,
}

/// A netlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |cause| NetlinkError::Request { what, cause }
}

impl Netlink {
    /// A connection in the namespace this process runs in.
    pub fn here() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection in the namespace `netns` (an open namespace file): the
    /// socket is opened on a thread of its own that enters the namespace
    /// and then ends, so no thread that runs anything else is ever left
    /// inside a container (a socket keeps the namespace it was made in).
    pub async fn inside(netns: &File) -> Result<Netlink> {
        let fd = netns.try_clone().map_err(NetlinkError::Socket)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The socket registers with the runtime's reactor as it opens.
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("weft-netns".into())
            .spawn(move || {
                let _entered = runtime.enter();
                let opened = nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetlinkError::Namespace(e.to_string()))
                    .and_then(|()| rtnetlink::new_connection().map_err(NetlinkError::Socket));
                let _ = tx.send(opened);
            })
            .map_err(NetlinkError::Socket)?;
        let (conn, handle, _) = rx
            .await
            .map_err(|e| NetlinkError::Namespace(e.to_string()))??;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(link_of)),
            // The kernel answers ENODEV for a name it does not know.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(request(format!("look up {name}"))(e)),
        }
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(msg) = links.try_next().await.map_err(request("list links"))? {
            out.push(link_of(&msg));
        }
        Ok(out)
    }

    /// The link named `name`, which must exist.
    pub async fn require(&self, name: &str) -> Result<Link> {
        self.link(name)
            .await?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
    }

    /// Creates bridge `name` if missing; sets its MTU and MAC and brings
    /// it up.
    pub async fn ensure_bridge(&self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<Link> {
        if self.link(name).await?.is_none() {
            self.handle
                .link()
                .add(LinkBridge::new(name).mtu(mtu).build())
                .execute()
                .await
                .map_err(request(format!("create bridge {name}")))?;
        }
        let link = self.require(name).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .mtu(mtu)
                    .address(mac.to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(request(format!("set MTU {mtu} and MAC of bridge {name}")))?;
        self.require(name).await
    }

    pub async fn set_mtu_up(&self, index: u32, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
            .execute()
            .await
            .map_err(request(format!("set MTU {mtu} on link {index}")))
    }

    /// Plugs link `index` into bridge `bridge` and brings it up.
    pub async fn attach(&self, index: u32, bridge: u32) -> Result<()> {
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(request(format!("attach link {index} to the bridge")))
    }

    /// Takes link `index` off its bridge; it stays up.
    pub async fn release(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).nocontroller().build())
            .execute()
            .await
            .map_err(request(format!("take link {index} off the bridge")))
    }

    /// Turns hairpin on or off for bridge port `index`: whether the
    /// bridge may send a frame back out of the port it came in by.
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<()> {
        self.handle
            .link()
            .set_port(LinkBridgePort::new(index).hairpin(on).build())
            .execute()
            .await
            .map_err(request(format!("set hairpin on bridge port {index}")))
    }

    /// Creates a veth pair: `name` here, `peer` created directly inside
    /// `peer_netns` (it never exists in our namespace).
    pub async fn add_veth_into(
        &self,
        name: &str,
        peer: &str,
        peer_netns: &File,
        mtu: u32,
    ) -> Result<()> {
        let peer_msg = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(peer_netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(name, peer)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(request(format!("create veth {name}")))
    }

    /// Creates a veth pair in this namespace.
    pub async fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).mtu(mtu).build())
            .execute()
            .await
            .map_err(request(format!("create veth {name}")))
    }

    pub async fn delete(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(request(format!("delete link {index}")))
    }

    /// Deletes link `name` if there is one; says whether there was.
    pub async fn delete_named(&self, name: &str) -> Result<bool> {
        match self.link(name).await? {
            Some(link) => self.delete(link.index).await.map(|()| true),
            None => Ok(false),
        }
    }

    pub async fn add_address(&self, index: u32, net: IpNet) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, net.addr(), net.prefix_len())
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            other => other.map_err(request(format!("add address {net}"))),
        }
    }

    pub async fn delete_address(&self, index: u32, net: IpNet) -> Result<()> {
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(request("list addresses"))? {
            let matches = msg.header.prefix_len == net.prefix_len()
                && msg.attributes.iter().any(|a| {
                    matches!(a, netlink_packet_route::address::AddressAttribute::Address(ip) if *ip == net.addr())
                });
            if matches {
                return self
                    .handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(request(format!("delete address {net}")));
            }
        }
        Ok(())
    }

    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(msg) = addrs.try_next().await.map_err(request("list addresses"))? {
            for a in &msg.attributes {
                if let netlink_packet_route::address::AddressAttribute::Address(ip) = a
                    && let Ok(net) = IpNet::new(*ip, msg.header.prefix_len)
                {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Adds a route to `dest` out of link `index`; an existing one is fine.
    pub async fn add_route(&self, dest: Ipv4Addr, prefix: u8, index: u32) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest, prefix)
            .output_interface(index)
            .build();
        match self.handle.route().add(route).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            other => other.map_err(request(format!("add route {dest}/{prefix}"))),
        }
    }

    /// Adds a route to `dest` via `gateway` out of link `index`; `onlink`
    /// when the gateway is outside the link's own subnets. An existing
    /// route is fine.
    pub async fn add_gateway_route(
        &self,
        dest: Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
        onlink: bool,
    ) -> Result<()> {
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .gateway(gateway)
            .output_interface(index);
        if onlink {
            route = route.onlink();
        }
        match self.handle.route().add(route.build()).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            other => other.map_err(request(format!("add route {dest} via {gateway}"))),
        }
    }

    /// The IPv4 routes of the main table: destination, and the link they
    /// leave from (if any).
    pub async fn routes_v4(&self) -> Result<Vec<(Ipv4Net, Option<u32>)>> {
        let query = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(libc::RT_TABLE_MAIN as u32)
            .build();
        let mut routes = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(msg) = routes.try_next().await.map_err(request("list routes"))? {
            if msg.header.table != libc::RT_TABLE_MAIN {
                continue;
            }
            let mut dest = Ipv4Addr::UNSPECIFIED;
            let mut oif = None;
            for attr in &msg.attributes {
                match attr {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = *a,
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if let Ok(net) = Ipv4Net::new(dest, msg.header.destination_prefix_length) {
                out.push((net, oif));
            }
        }
        Ok(out)
    }

    /// Lets the bridge's IPv4 frames through the host's IP hooks (the
    /// bridge's own `nf_call_iptables`, not the machine-wide sysctl), so
    /// connection tracking sees the replies of NATed connections (service
    /// addresses) that cross the bridge.
    pub async fn bridge_nf_call_iptables(&self, bridge: &Link) -> Result<()> {
        // By index only: a name in the message is a rename, which kernels
        // before 6.2 refuse for a device that is up (EBUSY), same name or not.
        let msg = LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge)
            .index(bridge.index)
            .append_info_data(InfoBridge::NfCallIpTables(true))
            .build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(request(format!("set nf_call_iptables on {}", bridge.name)))
    }

    /// Creates vxlan device `name` (VNI `vni`, UDP `port`, no learning, no
    /// multicast group: it sends only where a forwarding entry says) as a
    /// port of `bridge` that the bridge never floods to and learns nothing
    /// from, and brings it up only then (up first, the bridge could learn
    /// from what peers send in between). On failure nothing is left.
    pub async fn add_vxlan_port(&self, spec: &VxlanPort<'_>) -> Result<Link> {
        let link = self.add_vxlan_port_down(spec).await?;
        if let Err(e) = self.set_mtu_up(link.index, spec.mtu).await {
            let _ = self.delete(link.index).await;
            return Err(e);
        }
        Ok(link)
    }

    /// [`Netlink::add_vxlan_port`] without bringing the device up: a down
    /// port carries nothing, but the bridge still counts the headroom it
    /// asks for. On failure nothing is left.
    pub async fn add_vxlan_port_down(&self, spec: &VxlanPort<'_>) -> Result<Link> {
        let VxlanPort {
            name,
            vni,
            port,
            mtu,
            bridge,
        } = *spec;
        self.handle
            .link()
            .add(
                LinkVxlan::new(name, vni)
                    .port(port)
                    .learning(false)
                    .udp_csum(true)
                    .mtu(mtu)
                    .controller(bridge)
                    .build(),
            )
            .execute()
            .await
            .map_err(request(format!("create vxlan device {name} on UDP {port}")))?;
        let link = self.require(name).await?;
        let flags = self
            .handle
            .link()
            .set_port(
                LinkBridgePort::new(link.index)
                    .learning(false)
                    .flood(false)
                    .mcast_flood(false)
                    .bcast_flood(false)
                    .build(),
            )
            .execute()
            .await
            .map_err(request(format!("set {name}'s bridge port flags")));
        if let Err(e) = flags {
            let _ = self.delete(link.index).await;
            return Err(e);
        }
        Ok(link)
    }

    /// The forwarding entries of bridge port or vxlan device `index`.
    pub async fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut out = Vec::new();
        let mut dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(msg) = dump
            .try_next()
            .await
            .map_err(request("list forwarding entries"))?
        {
            if msg.header.ifindex != index {
                continue;
            }
            let mut entry = FdbEntry {
                mac: [0; 6],
                device: msg.header.flags.contains(NeighbourFlags::Own),
                remote: None,
                static_: msg.header.state == NeighbourState::Noarp,
                idle_ticks: None,
            };
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::LinkLayerAddress(a) => mac = a.as_slice().try_into().ok(),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                        entry.remote = Some(*ip)
                    }
                    // A bridge-family dump carries the address as bytes.
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        entry.remote = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    NeighbourAttribute::CacheInfo(c) => entry.idle_ticks = Some(c.used),
                    _ => {}
                }
            }
            if let Some(mac) = mac {
                entry.mac = mac;
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Vxlan device `index` sends frames for `mac` to `remote` (replacing
    /// where it sent them before).
    pub async fn fdb_to_remote(&self, index: u32, mac: [u8; 6], remote: Ipv4Addr) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(remote))
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "point {} at {remote}",
                super::attach::mac_string(mac)
            )))
    }

    /// The bridge sends frames for `mac` to its port `index`, and learning
    /// elsewhere never moves it (static and sticky).
    pub async fn fdb_to_port(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(index, &mac)
            .flags(NeighbourFlags::Controller | NeighbourFlags::Sticky)
            .state(NeighbourState::Noarp)
            .replace()
            .execute()
            .await
            .map_err(request(format!(
                "send {} to port {index}",
                super::attach::mac_string(mac)
            )))
    }

    /// Deletes `mac`'s entry of the device (`device`) or of the bridge on
    /// port `index`.
    pub async fn fdb_delete(&self, index: u32, mac: [u8; 6], device: bool) -> Result<()> {
        let mut msg = netlink_packet_route::neighbour::NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = index;
        msg.header.flags = if device {
            NeighbourFlags::Own
        } else {
            NeighbourFlags::Controller
        };
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        match self.handle.neighbours().del(msg).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
            other => other.map_err(request(format!(
                "delete {}",
                super::attach::mac_string(mac)
            ))),
        }
    }

    /// The link the kernel would send to `dest` from.
    pub async fn route_link(&self, dest: IpAddr) -> Result<Option<u32>> {
        let IpAddr::V4(v4) = dest else {
            return Ok(None);
        };
        let query: RouteMessage = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .build();
        let mut routes = self.handle.route().get(query).execute();
        while let Some(msg) = routes
            .try_next()
            .await
            .map_err(request(format!("route to {dest}")))?
        {
            if let Some(index) = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }) {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }
}
