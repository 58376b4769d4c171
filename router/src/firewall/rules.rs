//! The nftables tables weft wants, compiled from what it knows: a pure
//! function from [`Ruleset`] to the script `nft -f` applies in one
//! transaction.
//!
//! Two tables, both named `weft`:
//! - `inet weft` masquerades containers' traffic leaving the range, and
//!   turns the DNS queries its containers send to the host's resolvers to
//!   the router's own server (see [`DnsCapture`]);
//! - `bridge weft` guards the overlay port's hairpin (which the keeper turns
//!   on only while this table is in place). A reply of a NATed
//!   connection (a node port, say) arrives from the overlay for the host,
//!   and the bridge's netfilter hooks translate it back to a container on
//!   another host, which is out of the very port it came in. Only frames
//!   that came in addressed to the host may leave that way, and they leave
//!   with the host's MAC (they are routed, not bridged); every other
//!   reflection (broadcasts above all) is dropped, or the router would
//!   learn remote containers as local.

use std::{collections::BTreeSet, fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;

/// The family and name of weft's own tables; nothing weft writes lives
/// anywhere else.
pub const FAMILY: &str = "inet";
pub const BRIDGE_FAMILY: &str = "bridge";
pub const TABLE: &str = "weft";

/// The packet mark bit that says "came from the overlay addressed to the
/// host"; ORed in, so other users of the mark keep theirs.
pub const HOST_BOUND_MARK: u32 = 0x0010_0000;

/// Multicast stays on the overlay, as on a LAN: never translated.
const MULTICAST: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4);

/// Everything the table is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The containers' range (`--ipalloc-range`).
    pub range: Ipv4Net,
    /// Whether traffic leaving the range is translated at all.
    pub masquerade: bool,
    /// Destinations never translated (`--masquerade-exclude`).
    pub exclude: Vec<Ipv4Net>,
    /// Addresses of other mesh hosts that answer containers' own
    /// addresses through their gateway: containers reach them untranslated.
    pub mesh_hosts: BTreeSet<Ipv4Addr>,
    /// The bridge's MAC (fixed, see [`crate::netdev::bridge_mac`]).
    pub bridge_mac: [u8; 6],
    /// The bridge ports that lead to the overlay (the TAP, the datapath's
    /// internal port).
    pub overlay_ports: Vec<String>,
    /// Where containers' DNS queries to the host's resolvers go, while the
    /// router serves DNS.
    pub dns: Option<DnsCapture>,
    /// Network policy's chains for this host's containers
    /// (`weft_policy::nft::render`), in the same table and transaction.
    pub policy: String,
    /// While the vxlan device runs: only its peers may send to its port.
    pub vxlan: Option<VxlanGuard>,
}

/// The kernel's vxlan device hands whatever arrives on its UDP port to the
/// bridge, from any sender (the fast datapath's flows and the userspace
/// path's sessions check where data comes from; the device does not): so
/// datagrams to that port from anyone but the peers it sends to are
/// dropped before they reach it. And vxlan heartbeats count only coming
/// out of the device: the bridge drops their EtherType from every other
/// port, so a container cannot fake a peer's answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanGuard {
    pub port: u16,
    pub peers: BTreeSet<Ipv4Addr>,
}

/// Containers' queries to the host's resolvers, answered by the router's
/// DNS server instead, which answers the mesh's names and passes every
/// other query on to those same resolvers. This is how a Docker container
/// resolves the mesh's names with no flags: dockerd gives it an embedded
/// resolver that knows only its own host's containers and forwards the
/// rest, from the container, to the host's resolvers. A container told to
/// use another server keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCapture {
    /// The router's DNS server (the gateway's address, port 53).
    pub server: Ipv4Addr,
    /// The host's resolvers, as containers are given them.
    pub resolvers: BTreeSet<Ipv4Addr>,
}

impl Ruleset {
    /// The destinations whose traffic keeps its container source: the
    /// range itself, multicast and the user's exclusions, merged so that
    /// nft's interval set takes them.
    pub fn exempt(&self) -> Vec<Ipv4Net> {
        let mut all = vec![self.range, MULTICAST];
        all.extend(self.exclude.iter().copied());
        Ipv4Net::aggregate(&all)
    }

    /// The kernel modules the script needs loaded beyond what the table
    /// without policy needs (and loads at start): the policy chains'.
    pub fn kernel_modules(&self) -> &'static [&'static str] {
        if self.policy.is_empty() {
            &[]
        } else {
            weft_policy::nft::KERNEL_MODULES
        }
    }

    /// The capture as `weft status` says it, when there is one.
    pub fn dns_capture_line(&self) -> Option<String> {
        let dns = self.dns.as_ref().filter(|d| !d.resolvers.is_empty())?;
        let from: Vec<String> = dns.resolvers.iter().map(|a| a.to_string()).collect();
        Some(format!("{} -> {}", from.join(", "), dns.server))
    }

    /// The script that replaces weft's tables whole: creating each first
    /// makes its delete valid when it is missing, and one `nft -f` run is
    /// one transaction, so no packet ever sees a half-written table.
    pub fn script(&self) -> String {
        let mut out = String::new();
        for family in [FAMILY, BRIDGE_FAMILY] {
            let _ = writeln!(out, "table {family} {TABLE} {{}}");
            let _ = writeln!(out, "delete table {family} {TABLE}");
        }
        let _ = writeln!(out, "table {FAMILY} {TABLE} {{");
        set(&mut out, "exempt", "ipv4_addr", true, self.exempt().iter());
        set(
            &mut out,
            "mesh_hosts",
            "ipv4_addr",
            false,
            self.mesh_hosts.iter(),
        );
        if let Some(dns) = self.dns.as_ref().filter(|d| !d.resolvers.is_empty()) {
            set(
                &mut out,
                "host_resolvers",
                "ipv4_addr",
                false,
                dns.resolvers.iter(),
            );
            out.push_str("\tchain prerouting {\n");
            out.push_str("\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
            let _ = writeln!(
                out,
                "\t\tip saddr {} ip daddr @host_resolvers meta l4proto {{ tcp, udp }} th dport 53 dnat ip to {}",
                self.range, dns.server
            );
            out.push_str("\t}\n");
        }
        if let Some(guard) = &self.vxlan {
            set(
                &mut out,
                "vxlan_peers",
                "ipv4_addr",
                false,
                guard.peers.iter(),
            );
            out.push_str("\tchain vxlan_input {\n");
            out.push_str("\t\ttype filter hook input priority filter; policy accept;\n");
            let _ = writeln!(
                out,
                "\t\tudp dport {} ip saddr != @vxlan_peers drop",
                guard.port
            );
            out.push_str("\t}\n");
            // vxlan between hosts is never translated and needs no state:
            // untracked, it skips a connection-tracking lookup per packet
            // (the frames inside are still tracked on the bridge).
            // Only between this host and its peers: a container's own
            // flows to that port (bridged through the IP hooks too) keep
            // their tracking, for masquerade and policy.
            for (chain, hook, peer) in [
                ("vxlan_untracked_in", "prerouting", "saddr"),
                ("vxlan_untracked_out", "output", "daddr"),
            ] {
                let _ = writeln!(out, "\tchain {chain} {{");
                let _ = writeln!(
                    out,
                    "\t\ttype filter hook {hook} priority raw; policy accept;"
                );
                let _ = writeln!(
                    out,
                    "\t\tip {peer} @vxlan_peers udp dport {} notrack",
                    guard.port
                );
                out.push_str("\t}\n");
            }
        }
        out.push_str(&self.policy);
        out.push_str("\tchain postrouting {\n");
        out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
        if self.masquerade {
            let _ = writeln!(
                out,
                "\t\tip saddr {} ip daddr != @exempt ip daddr != @mesh_hosts masquerade",
                self.range
            );
        }
        out.push_str("\t}\n}\n");
        let mac = crate::netdev::attach::mac_string(self.bridge_mac);
        let ports = format!(
            "{{ {} }}",
            self.overlay_ports
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mark = format!("0x{HOST_BOUND_MARK:08x}");
        let _ = writeln!(out, "table {BRIDGE_FAMILY} {TABLE} {{");
        // Before the bridge's netfilter hooks (priority 0) translate the
        // frame, while its destination still says where it was going.
        out.push_str("\tchain prerouting {\n");
        out.push_str("\t\ttype filter hook prerouting priority -300; policy accept;\n");
        if self.vxlan.is_some() {
            // Also inside a VLAN tag, which the host strips before its
            // socket sees the frame.
            for kind in ["ether", "vlan"] {
                let _ = writeln!(
                    out,
                    "\t\tiifname != \"{}\" {kind} type 0x{:04x} drop",
                    crate::vxlan_device::DEVICE,
                    crate::overlay::heartbeat::ETHERTYPE,
                );
            }
        }
        let _ = writeln!(
            out,
            "\t\tiifname {ports} ether daddr {mac} meta mark set meta mark | {mark}"
        );
        out.push_str("\t}\n");
        // Before br_netfilter (priority 0), which takes IP frames off to
        // the IP hooks and resumes the bridge's after its own priority:
        // a chain beside it at 0 may never see them.
        out.push_str("\tchain forward {\n");
        out.push_str("\t\ttype filter hook forward priority -200; policy accept;\n");
        let _ = writeln!(
            out,
            "\t\tiifname {ports} oifname {ports} meta mark & {mark} == {mark} ether saddr set {mac} accept"
        );
        let _ = writeln!(out, "\t\tiifname {ports} oifname {ports} drop");
        out.push_str("\t}\n}\n");
        out
    }
}

fn set<T: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    interval: bool,
    elements: impl Iterator<Item = T>,
) {
    let _ = writeln!(out, "\tset {name} {{");
    let _ = writeln!(out, "\t\ttype {kind}");
    if interval {
        out.push_str("\t\tflags interval\n");
    }
    let elements: Vec<String> = elements.map(|e| e.to_string()).collect();
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(", "));
    }
    out.push_str("\t}\n");
}

/// The script that removes weft's tables, whether or not they exist.
pub fn removal() -> String {
    [FAMILY, BRIDGE_FAMILY]
        .iter()
        .map(|family| format!("table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset() -> Ruleset {
        Ruleset {
            range: "10.32.0.0/12".parse().unwrap(),
            masquerade: true,
            exclude: vec![
                "172.16.0.0/12".parse().unwrap(),
                // Inside the range already: merged away, or nft refuses
                // the overlapping interval.
                "10.40.0.0/16".parse().unwrap(),
            ],
            mesh_hosts: ["192.0.2.2".parse().unwrap(), "192.0.2.1".parse().unwrap()].into(),
            bridge_mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            overlay_ports: vec!["weft-tap".into(), "weft-dp".into()],
            dns: Some(DnsCapture {
                server: "10.32.0.1".parse().unwrap(),
                resolvers: ["192.0.2.53".parse().unwrap()].into(),
            }),
            policy: String::new(),
            vxlan: Some(VxlanGuard {
                port: 6784,
                peers: ["192.0.2.3".parse().unwrap()].into(),
            }),
        }
    }

    #[test]
    fn policy_chains_want_their_modules_loaded_first() {
        let mut r = ruleset();
        assert!(r.kernel_modules().is_empty(), "no policy, nothing to load");
        r.policy = "\tchain egress_0 {\n\t}\n".into();
        assert_eq!(r.kernel_modules(), weft_policy::nft::KERNEL_MODULES);
    }

    /// The exact bytes weft writes, so a change to the table is a
    /// decision (the golden file is committed beside this module).
    #[test]
    fn the_script_is_pinned() {
        assert_eq!(
            ruleset().script(),
            include_str!("golden/masquerade.nft"),
            "the nftables script changed; if on purpose, update router/src/firewall/golden/masquerade.nft"
        );
    }

    #[test]
    fn without_masquerade_the_chain_is_empty_and_empty_sets_have_no_elements() {
        let r = Ruleset {
            masquerade: false,
            exclude: vec![],
            mesh_hosts: BTreeSet::new(),
            dns: None,
            vxlan: None,
            ..ruleset()
        };
        let script = r.script();
        assert!(!script.contains("vxlan"), "no device, no guard: {script}");
        assert!(!script.contains(" masquerade"), "{script}");
        assert!(
            !script.contains("dnat"),
            "no DNS served, none captured: {script}"
        );
        assert!(!script.contains("elements = {  }"), "{script}");
        let mesh = script.split("set mesh_hosts").nth(1).unwrap();
        let mesh = mesh.split("\t}").next().unwrap();
        assert!(!mesh.contains("elements"), "{mesh}");
    }

    #[test]
    fn exemptions_are_merged_and_keep_the_range_and_multicast() {
        let r = ruleset();
        let exempt = r.exempt();
        assert!(exempt.contains(&r.range));
        assert!(exempt.contains(&MULTICAST));
        assert!(exempt.contains(&"172.16.0.0/12".parse().unwrap()));
        assert_eq!(exempt.len(), 3, "{exempt:?}");
    }

    #[test]
    fn the_removal_works_on_a_missing_table() {
        assert_eq!(
            removal(),
            "table inet weft {}\ndelete table inet weft\ntable bridge weft {}\ndelete table bridge weft\n",
            "creating first makes the delete valid when the table is gone"
        );
    }
}
