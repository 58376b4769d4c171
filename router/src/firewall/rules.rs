//! The nftables table weft wants, compiled from what it knows: a pure
//! function from [`Ruleset`] to the script `nft -f` applies in one
//! transaction.

use std::{collections::BTreeSet, fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;

/// The family and name of weft's own table; nothing weft writes lives
/// anywhere else.
pub const FAMILY: &str = "inet";
pub const TABLE: &str = "weft";

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

    /// The script that replaces weft's table whole: creating it first
    /// makes the delete valid when it is missing, and one `nft -f` run is
    /// one transaction, so no packet ever sees a half-written table.
    pub fn script(&self) -> String {
        let mut out = String::new();
        let table = format!("{FAMILY} {TABLE}");
        let _ = writeln!(out, "table {table} {{}}");
        let _ = writeln!(out, "delete table {table}");
        let _ = writeln!(out, "table {table} {{");
        set(&mut out, "exempt", "ipv4_addr", true, self.exempt().iter());
        set(
            &mut out,
            "mesh_hosts",
            "ipv4_addr",
            false,
            self.mesh_hosts.iter(),
        );
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

/// The script that removes weft's table, whether or not it exists.
pub fn removal() -> String {
    format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
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
        }
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
            ..ruleset()
        };
        let script = r.script();
        assert!(!script.contains("masquerade"), "{script}");
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
            "table inet weft {}\ndelete table inet weft\n",
            "creating first makes the delete valid when the table is gone"
        );
    }
}
