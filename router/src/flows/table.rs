//! The nftables table that counts flows while someone watches: what it
//! is (a pure script) and what its listing says (a pure parser).
//!
//! `bridge weft_flows` hooks the bridge's forward, input and output, so
//! it sees every frame between a container and anything else, whichever
//! data path carries it on (both meet the container at the bridge). Each
//! frame updates one element of a dynamic set keyed by its addresses,
//! protocol and ports, and the element's counter counts it; an element
//! idle for [`IDLE_TIMEOUT_S`] leaves the set by itself, and a full set
//! simply stops adding (the frame passes, uncounted).

use std::{fmt::Write as _, net::IpAddr};

use serde::Deserialize;

pub const FAMILY: &str = "bridge";
pub const TABLE: &str = "weft_flows";
/// Elements per set: flows beyond this many are not counted.
pub const SET_SIZE: usize = 65_536;
/// A flow unseen this long leaves the set.
pub const IDLE_TIMEOUT_S: u32 = 120;

/// One set per address family, and for each, protocols with ports and
/// the rest (whose first bytes are no ports: ICMP's would count every
/// checksum as a flow of its own).
const SETS: [(&str, &str, &str, bool); 4] = [
    ("v4", "ipv4_addr", "ip", true),
    ("v4_other", "ipv4_addr", "ip", false),
    ("v6", "ipv6_addr", "ip6", true),
    ("v6_other", "ipv6_addr", "ip6", false),
];

/// The script that (re)creates the table, empty, in one transaction.
pub fn script() -> String {
    let mut out = removal();
    let _ = writeln!(out, "table {FAMILY} {TABLE} {{");
    for (name, addr, _, ports) in SETS {
        let key = if ports {
            format!("{addr} . {addr} . inet_proto . inet_service . inet_service")
        } else {
            format!("{addr} . {addr} . inet_proto")
        };
        let _ = writeln!(
            out,
            "\tset {name} {{\n\t\ttype {key}\n\t\tsize {SET_SIZE}\n\t\tflags dynamic,timeout\n\t\ttimeout {IDLE_TIMEOUT_S}s\n\t\tcounter\n\t}}"
        );
    }
    for hook in ["forward", "input", "output"] {
        // First of all bridge hooks, so a frame policy drops later is
        // still seen: top shows what containers send, not what arrives.
        let _ = writeln!(
            out,
            "\tchain {hook} {{\n\t\ttype filter hook {hook} priority -300; policy accept;"
        );
        for (name, _, ip, ports) in SETS {
            let (when, key) = if ports {
                ("", "meta l4proto . th sport . th dport")
            } else {
                ("!= ", "meta l4proto")
            };
            let _ = writeln!(
                out,
                "\t\tmeta l4proto {when}{{ tcp, udp, sctp }} update @{name} {{ {ip} saddr . {ip} daddr . {key} }}"
            );
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// Removes the table; valid whether or not it exists.
pub fn removal() -> String {
    format!("table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n")
}

/// What one element of a set has counted: one direction of one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sample {
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: u8,
    /// Source and destination ports, for TCP, UDP and SCTP.
    pub ports: Option<(u16, u16)>,
    pub packets: u64,
    pub bytes: u64,
}

impl Sample {
    /// The element this is a count of, without the count.
    pub fn key(&self) -> (IpAddr, IpAddr, u8, Option<(u16, u16)>) {
        (self.source, self.destination, self.protocol, self.ports)
    }
}

/// What a listing held: the samples, and whether a set was full (flows
/// beyond it are not counted).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub samples: Vec<Sample>,
    pub full: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("nft's listing of {TABLE} is not what weft wrote: {0}")]
pub struct ListingError(String);

#[derive(Deserialize)]
struct Document {
    nftables: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    set: Option<Set>,
}

#[derive(Deserialize)]
struct Set {
    #[serde(default)]
    elem: Vec<Element>,
}

#[derive(Deserialize)]
struct Element {
    elem: ElementBody,
}

#[derive(Deserialize)]
struct ElementBody {
    val: Concat,
    #[serde(default)]
    counter: Option<Counter>,
}

#[derive(Deserialize)]
struct Concat {
    concat: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Counter {
    packets: u64,
    bytes: u64,
}

/// Reads `nft -j -p list table bridge weft_flows` (`-p`: protocols as
/// numbers).
pub fn parse(json: &[u8]) -> Result<Listing, ListingError> {
    let doc: Document =
        serde_json::from_slice(json).map_err(|e| ListingError(format!("not its JSON: {e}")))?;
    let mut listing = Listing::default();
    for set in doc.nftables.into_iter().filter_map(|i| i.set) {
        listing.full |= set.elem.len() >= SET_SIZE;
        for Element { elem } in set.elem {
            listing.samples.push(sample(elem)?);
        }
    }
    Ok(listing)
}

fn sample(body: ElementBody) -> Result<Sample, ListingError> {
    let bad = || ListingError(format!("an element {:?}", body.val.concat));
    let address = |v: &serde_json::Value| v.as_str()?.parse::<IpAddr>().ok();
    let number = |v: &serde_json::Value, max: u64| v.as_u64().filter(|n| *n <= max);
    let key = &body.val.concat;
    let (source, destination, protocol) = match key.as_slice() {
        [s, d, p, ..] => (
            address(s).ok_or_else(bad)?,
            address(d).ok_or_else(bad)?,
            number(p, 255).ok_or_else(bad)? as u8,
        ),
        _ => return Err(bad()),
    };
    let ports = match key.as_slice() {
        [_, _, _] => None,
        [_, _, _, s, d] => Some((
            number(s, 65_535).ok_or_else(bad)? as u16,
            number(d, 65_535).ok_or_else(bad)? as u16,
        )),
        _ => return Err(bad()),
    };
    let counter = body.counter.as_ref().ok_or_else(bad)?;
    Ok(Sample {
        source,
        destination,
        protocol,
        ports,
        packets: counter.packets,
        bytes: counter.bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nft 1.0.6 printed for a table with a UDP stream, ICMP and an
    /// IPv6 neighbour solicitation in it (trimmed to one set's metadata).
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "bridge", "name": "weft_flows", "handle": 1}}, {"set": {"family": "bridge", "name": "v4", "table": "weft_flows", "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service", "inet_service"], "handle": 1, "size": 65536, "flags": ["timeout"], "timeout": 120, "elem": [{"elem": {"val": {"concat": ["10.9.0.1", "10.9.0.2", 17, 54180, 5201]}, "expires": 119, "counter": {"packets": 1250, "bytes": 1284004}}}], "stmt": [{"counter": null}]}}, {"set": {"family": "bridge", "name": "v4_other", "table": "weft_flows", "type": ["ipv4_addr", "ipv4_addr", "inet_proto"], "handle": 2, "size": 65536, "flags": ["timeout"], "timeout": 120, "elem": [{"elem": {"val": {"concat": ["10.9.0.2", "10.9.0.1", 1]}, "expires": 118, "counter": {"packets": 3, "bytes": 252}}}], "stmt": [{"counter": null}]}}, {"set": {"family": "bridge", "name": "v6_other", "table": "weft_flows", "type": ["ipv6_addr", "ipv6_addr", "inet_proto"], "handle": 3, "size": 65536, "flags": ["timeout"], "timeout": 120, "stmt": [{"counter": null}]}}, {"chain": {"family": "bridge", "table": "weft_flows", "name": "forward", "handle": 5}}]}"#;

    #[test]
    fn a_listing_reads_as_the_flows_it_counted() {
        let listing = parse(LISTING.as_bytes()).unwrap();
        assert!(!listing.full);
        assert_eq!(
            listing.samples,
            vec![
                Sample {
                    source: "10.9.0.1".parse().unwrap(),
                    destination: "10.9.0.2".parse().unwrap(),
                    protocol: 17,
                    ports: Some((54180, 5201)),
                    packets: 1250,
                    bytes: 1_284_004,
                },
                Sample {
                    source: "10.9.0.2".parse().unwrap(),
                    destination: "10.9.0.1".parse().unwrap(),
                    protocol: 1,
                    ports: None,
                    packets: 3,
                    bytes: 252,
                },
            ]
        );
    }

    #[test]
    fn a_listing_weft_did_not_write_is_refused_with_what_was_wrong() {
        for bad in [
            "",
            "{}",
            r#"{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["10.9.0.1", "x", 17, 1, 2]}, "counter": {"packets": 1, "bytes": 1}}}]}}]}"#,
            r#"{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["10.9.0.1", "10.9.0.2", 300]}, "counter": {"packets": 1, "bytes": 1}}}]}}]}"#,
            r#"{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["10.9.0.1", "10.9.0.2", 6, 1]}, "counter": {"packets": 1, "bytes": 1}}}]}}]}"#,
            r#"{"nftables": [{"set": {"elem": [{"elem": {"val": {"concat": ["10.9.0.1", "10.9.0.2", 6]}}}]}}]}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_script_counts_at_every_bridge_hook_and_replaces_the_table_whole() {
        let s = script();
        assert!(s.starts_with(&removal()), "{s}");
        for hook in ["forward", "input", "output"] {
            assert!(s.contains(&format!(
                "type filter hook {hook} priority -300; policy accept;"
            )));
        }
        assert_eq!(s.matches("update @").count(), 12, "{s}");
        assert!(s.contains(
            "meta l4proto { tcp, udp, sctp } update @v6 { ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport }"
        ));
        assert!(s.contains("meta l4proto != { tcp, udp, sctp } update @v4_other { ip saddr . ip daddr . meta l4proto }"));
    }
}
