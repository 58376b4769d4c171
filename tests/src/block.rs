use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::spec::Spec;

/// The nftables table the testbed owns in the underlay namespace. Blocks are
/// enforced on the bridges (family `bridge`), like a firewall between hosts:
/// neither host can bypass them, whatever sockets it uses.
pub(crate) const TABLE: &str = "bridge weft_testbed";

/// What to drop between two hosts, in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Block {
    /// Every UDP datagram.
    AllUdp,
    /// UDP datagrams to this destination port.
    UdpPort(u16),
    /// Every IPv4 packet.
    All,
}

/// One block between hosts `a` and `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRule {
    pub a: usize,
    pub b: usize,
    pub what: Block,
}

impl BlockRule {
    pub fn between(&self, x: usize, y: usize) -> bool {
        (self.a, self.b) == (x, y) || (self.a, self.b) == (y, x)
    }
}

/// The nft script that makes the underlay's table hold exactly `rules`.
///
/// It replaces the table in one transaction (create if missing, delete,
/// create again), so a failure never leaves half a ruleset; with no rules the
/// table is removed altogether.
pub(crate) fn ruleset(spec: &Spec, rules: &[BlockRule]) -> String {
    let mut script = format!("table {TABLE}\ndelete table {TABLE}\n");
    if rules.is_empty() {
        return script;
    }
    writeln!(script, "table {TABLE} {{").unwrap();
    writeln!(script, "  chain forward {{").unwrap();
    // Ahead of br_netfilter (priority 0): once any test has loaded it, a
    // chain at its priority is skipped for the IP frames it takes over,
    // and a block would let them through.
    writeln!(
        script,
        "    type filter hook forward priority -200; policy accept;"
    )
    .unwrap();
    for rule in rules {
        let (a, b) = (spec.host_addr(rule.a), spec.host_addr(rule.b));
        let matcher = match rule.what {
            Block::AllUdp => "meta l4proto udp ".to_string(),
            Block::UdpPort(port) => format!("udp dport {port} "),
            Block::All => String::new(),
        };
        for (src, dst) in [(a, b), (b, a)] {
            writeln!(script, "    ip saddr {src} ip daddr {dst} {matcher}drop").unwrap();
        }
    }
    script.push_str("  }\n}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rules_removes_the_table() {
        let script = ruleset(&Spec::hosts(2), &[]);
        assert_eq!(
            script,
            "table bridge weft_testbed\ndelete table bridge weft_testbed\n"
        );
    }

    #[test]
    fn each_rule_drops_both_directions() {
        let spec = Spec::hosts(3).hop(1, 1400);
        let rules = [
            BlockRule {
                a: 1,
                b: 2,
                what: Block::AllUdp,
            },
            BlockRule {
                a: 2,
                b: 3,
                what: Block::UdpPort(6784),
            },
            BlockRule {
                a: 1,
                b: 3,
                what: Block::All,
            },
        ];
        let script = ruleset(&spec, &rules);
        for line in [
            "ip saddr 192.0.2.1 ip daddr 198.51.100.2 meta l4proto udp drop",
            "ip saddr 198.51.100.2 ip daddr 192.0.2.1 meta l4proto udp drop",
            "ip saddr 198.51.100.2 ip daddr 198.51.100.3 udp dport 6784 drop",
            "ip saddr 198.51.100.3 ip daddr 198.51.100.2 udp dport 6784 drop",
            "ip saddr 192.0.2.1 ip daddr 198.51.100.3 drop",
            "ip saddr 198.51.100.3 ip daddr 192.0.2.1 drop",
        ] {
            assert!(script.contains(line), "missing {line:?} in\n{script}");
        }
        assert_eq!(script.matches(" drop").count(), 6);
    }

    #[test]
    fn between_ignores_order() {
        let rule = BlockRule {
            a: 1,
            b: 2,
            what: Block::All,
        };
        assert!(rule.between(2, 1) && rule.between(1, 2) && !rule.between(1, 3));
    }
}
