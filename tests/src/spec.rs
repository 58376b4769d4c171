use std::{collections::BTreeMap, fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Hosts on this side of the hop (or all hosts without one) share this /24.
const SIDE_A: [u8; 3] = [192, 0, 2];
/// Hosts behind the router hop; a second documentation range (RFC 5737).
const SIDE_B: [u8; 3] = [198, 51, 100];
/// The router's last octet on both sides.
const ROUTER_OCTET: u8 = 254;
/// The outside host's last octet, on the first side.
const OUTSIDE_OCTET: u8 = 253;
pub(crate) const PREFIX_LEN: u8 = 24;
/// Host numbers become last octets, so they must stay below the router's.
const MAX_HOSTS: usize = 200;
const MAX_CONTAINERS: usize = 64;
/// The IPv4 minimum; anything smaller cannot carry an IP header and options.
const MIN_MTU: u32 = 576;
const MAX_MTU: u32 = 65535;

/// What to build: how many hosts and containers, and the underlay's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub hosts: usize,
    pub containers_per_host: usize,
    /// MTU of every host's underlay link; the kernel default (1500) if unset.
    pub mtu: Option<u32>,
    /// Per-host MTU, overriding `mtu` for that host's link.
    pub host_mtu: BTreeMap<usize, u32>,
    /// A router between two groups of hosts.
    pub hop: Option<Hop>,
    /// A host of "the world": on the underlay, running no weft.
    #[serde(default)]
    pub outside: bool,
}

/// A router splitting the hosts in two groups: hosts `1..=last_of_first_group`
/// on one bridge, the rest on another, with `mtu` on the router's link into
/// the second group. Traffic between the groups is routed, not bridged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub last_of_first_group: usize,
    pub mtu: u32,
}

/// A namespace of the testbed, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    /// The switch(es) joining the hosts: bridges `br0` (and `br1`).
    Underlay,
    /// The router of the hop, when there is one.
    Router,
    /// A host outside the mesh, when the spec asks for one.
    Outside,
    Host(usize),
    Container {
        host: usize,
        index: usize,
    },
}

impl Spec {
    /// `n` hosts, no containers, default MTU, one bridge.
    pub fn hosts(n: usize) -> Spec {
        Spec {
            hosts: n,
            containers_per_host: 0,
            mtu: None,
            host_mtu: BTreeMap::new(),
            hop: None,
            outside: false,
        }
    }

    /// Adds a host of the world outside the mesh ([`Spec::outside_addr`]).
    pub fn with_outside(mut self) -> Spec {
        self.outside = true;
        self
    }

    /// The outside host's address: on the first side's LAN, reached over
    /// the underlay by every host.
    pub fn outside_addr(&self) -> Ipv4Addr {
        let [a, b, c] = SIDE_A;
        Ipv4Addr::new(a, b, c, OUTSIDE_OCTET)
    }

    pub fn containers(mut self, per_host: usize) -> Spec {
        self.containers_per_host = per_host;
        self
    }

    pub fn mtu(mut self, mtu: u32) -> Spec {
        self.mtu = Some(mtu);
        self
    }

    pub fn host_mtu(mut self, host: usize, mtu: u32) -> Spec {
        self.host_mtu.insert(host, mtu);
        self
    }

    pub fn hop(mut self, last_of_first_group: usize, mtu: u32) -> Spec {
        self.hop = Some(Hop {
            last_of_first_group,
            mtu,
        });
        self
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Spec(msg));
        if self.hosts == 0 || self.hosts > MAX_HOSTS {
            return bad(format!("hosts must be 1..={MAX_HOSTS}, not {}", self.hosts));
        }
        if self.containers_per_host > MAX_CONTAINERS {
            return bad(format!(
                "containers per host must be at most {MAX_CONTAINERS}, not {}",
                self.containers_per_host
            ));
        }
        let mtus = self.mtu.iter().chain(self.host_mtu.values());
        let hop_mtu = self.hop.iter().map(|hop| &hop.mtu);
        if let Some(mtu) = mtus
            .chain(hop_mtu)
            .find(|m| !(MIN_MTU..=MAX_MTU).contains(*m))
        {
            return bad(format!("MTU {mtu} is outside {MIN_MTU}..={MAX_MTU}"));
        }
        if let Some(host) = self.host_mtu.keys().find(|h| !self.has_host(**h)) {
            return bad(format!(
                "MTU given for host {host}, but hosts are 1..={}",
                self.hosts
            ));
        }
        if let Some(hop) = self.hop
            && (hop.last_of_first_group == 0 || hop.last_of_first_group >= self.hosts)
        {
            return bad(format!(
                "the hop must leave hosts on both sides: the first group ends at host {}, hosts are 1..={}",
                hop.last_of_first_group, self.hosts
            ));
        }
        Ok(())
    }

    pub fn has_host(&self, host: usize) -> bool {
        (1..=self.hosts).contains(&host)
    }

    pub fn has_node(&self, node: Node) -> bool {
        match node {
            Node::Underlay => true,
            Node::Router => self.hop.is_some(),
            Node::Outside => self.outside,
            Node::Host(h) => self.has_host(h),
            Node::Container { host, index } => {
                self.has_host(host) && (1..=self.containers_per_host).contains(&index)
            }
        }
    }

    /// Every namespace of the testbed, in the order they are created.
    pub fn nodes(&self) -> Vec<Node> {
        let mut nodes = vec![Node::Underlay];
        if self.hop.is_some() {
            nodes.push(Node::Router);
        }
        if self.outside {
            nodes.push(Node::Outside);
        }
        for host in 1..=self.hosts {
            nodes.push(Node::Host(host));
            nodes.extend(
                (1..=self.containers_per_host).map(|index| Node::Container { host, index }),
            );
        }
        nodes
    }

    fn on_far_side(&self, host: usize) -> bool {
        self.hop.is_some_and(|hop| host > hop.last_of_first_group)
    }

    /// The bridge in the underlay namespace that the host's link plugs into.
    pub fn bridge_of(&self, host: usize) -> &'static str {
        if self.on_far_side(host) { "br1" } else { "br0" }
    }

    /// The host's underlay address: 192.0.2.N, or 198.51.100.N behind the hop.
    pub fn host_addr(&self, host: usize) -> Ipv4Addr {
        let [a, b, c] = if self.on_far_side(host) {
            SIDE_B
        } else {
            SIDE_A
        };
        Ipv4Addr::new(a, b, c, host as u8)
    }

    /// The router's address on the host's side, which hosts use as gateway.
    pub fn gateway_of(&self, host: usize) -> Option<Ipv4Addr> {
        self.hop.map(|_| {
            let [a, b, c] = if self.on_far_side(host) {
                SIDE_B
            } else {
                SIDE_A
            };
            Ipv4Addr::new(a, b, c, ROUTER_OCTET)
        })
    }

    pub fn router_addrs(&self) -> (Ipv4Addr, Ipv4Addr) {
        let [a, b, c] = SIDE_A;
        let [d, e, f] = SIDE_B;
        (
            Ipv4Addr::new(a, b, c, ROUTER_OCTET),
            Ipv4Addr::new(d, e, f, ROUTER_OCTET),
        )
    }

    pub fn link_mtu(&self, host: usize) -> Option<u32> {
        self.host_mtu.get(&host).copied().or(self.mtu)
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Underlay => write!(f, "net"),
            Node::Router => write!(f, "rt"),
            Node::Outside => write!(f, "out"),
            Node::Host(h) => write!(f, "h{h}"),
            Node::Container { host, index } => write!(f, "h{host}c{index}"),
        }
    }
}

impl FromStr for Node {
    type Err = String;

    fn from_str(s: &str) -> Result<Node, String> {
        let invalid = || format!("{s:?} is not a node name (net, rt, out, h<N>, h<N>c<M>)");
        let number = |digits: &str| digits.parse::<usize>().map_err(|_| invalid());
        match s {
            "net" => Ok(Node::Underlay),
            "rt" => Ok(Node::Router),
            "out" => Ok(Node::Outside),
            _ => {
                let rest = s.strip_prefix('h').ok_or_else(invalid)?;
                match rest.split_once('c') {
                    None => Ok(Node::Host(number(rest)?)),
                    Some((host, index)) => Ok(Node::Container {
                        host: number(host)?,
                        index: number(index)?,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_side_of_the_hop() {
        let spec = Spec::hosts(4).hop(2, 1400);
        spec.validate().unwrap();
        assert_eq!(spec.host_addr(2), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(spec.host_addr(3), Ipv4Addr::new(198, 51, 100, 3));
        assert_eq!(spec.bridge_of(2), "br0");
        assert_eq!(spec.bridge_of(3), "br1");
        assert_eq!(spec.gateway_of(3), Some(Ipv4Addr::new(198, 51, 100, 254)));
        assert_eq!(Spec::hosts(4).gateway_of(3), None);
    }

    #[test]
    fn nodes_list_every_namespace_once() {
        let nodes = Spec::hosts(2)
            .containers(2)
            .hop(1, 1400)
            .with_outside()
            .nodes();
        let names: Vec<String> = nodes.iter().map(Node::to_string).collect();
        assert_eq!(
            names,
            [
                "net", "rt", "out", "h1", "h1c1", "h1c2", "h2", "h2c1", "h2c2"
            ]
        );
        for node in nodes {
            assert_eq!(node.to_string().parse::<Node>(), Ok(node));
        }
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let cases = [
            (Spec::hosts(0), "hosts must be"),
            (Spec::hosts(201), "hosts must be"),
            (Spec::hosts(2).mtu(100), "MTU 100"),
            (Spec::hosts(2).host_mtu(3, 1500), "host 3"),
            (Spec::hosts(2).hop(2, 1400), "both sides"),
            (Spec::hosts(2).hop(1, 70000), "MTU 70000"),
        ];
        for (spec, expected) in cases {
            let err = spec.validate().unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn per_host_mtu_overrides_the_default() {
        let spec = Spec::hosts(3).mtu(9000).host_mtu(2, 1500);
        assert_eq!(spec.link_mtu(1), Some(9000));
        assert_eq!(spec.link_mtu(2), Some(1500));
        assert_eq!(Spec::hosts(1).link_mtu(1), None);
    }

    #[test]
    fn node_names_reject_garbage() {
        for bad in ["", "h", "hx", "h1c", "c1", "h1c1c1", "router"] {
            assert!(bad.parse::<Node>().is_err(), "{bad:?} parsed");
        }
    }
}
