//! `/metrics` in the OpenMetrics text format, encoded by prometheus-client
//! (label escaping, `_total` suffixes and the `# EOF` line are its job).
//! The router's counters are read at scrape time into a registry made for
//! that scrape.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::daemon::router::Metrics;

/// The content type of what [`render`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: usize) {
    let g: Gauge = Gauge::default();
    g.set(value as i64);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauges(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, usize)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).set(value as i64);
    }
    registry.register(name, help, family);
}

fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Counter>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

pub fn render(m: &Metrics) -> String {
    let mut r = Registry::default();
    gauge(
        &mut r,
        "weft_peers",
        "Peers this router can reach, itself included",
        m.peers,
    );
    gauges(
        &mut r,
        "weft_connections",
        "This router's connections by state",
        m.connections_by_state
            .iter()
            .map(|(k, v)| (label("state", k), *v)),
    );
    gauges(
        &mut r,
        "weft_targets",
        "Addresses this router connects to, by state",
        m.targets_by_state
            .iter()
            .map(|(k, v)| (label("state", k), *v)),
    );
    counter(
        &mut r,
        "weft_connections_refused",
        "Connections this router refused after their handshake",
        m.refused_by_us,
    );
    counter(
        &mut r,
        "weft_connection_failures",
        "Connection attempts that failed before being established",
        m.failed_attempts,
    );
    counter(
        &mut r,
        "weft_control_messages_sent",
        "Control messages sent to peers",
        m.messages_sent,
    );
    counters(
        &mut r,
        "weft_control_messages_sent_by_kind",
        "Control messages sent, by kind (gossip, broadcast and unicast by channel)",
        m.sent_by_kind.iter().map(|(k, v)| (label("kind", k), *v)),
    );
    counter(
        &mut r,
        "weft_control_messages_received",
        "Control messages received from peers",
        m.messages_received,
    );
    gauges(
        &mut r,
        "weft_connection_overlays",
        "Connections by the data path they use, and for the userspace path the reason it is not the fast datapath",
        m.overlays.iter().map(|((overlay, reason), v)| {
            let mut labels = label("overlay", overlay);
            labels.push(("reason".into(), reason.to_string()));
            (labels, *v)
        }),
    );
    counters(
        &mut r,
        "weft_datapath",
        "The userspace data path's counters: frames from and to the bridge, datagrams and bytes, drops by reason, frames relayed for others",
        m.data.iter().map(|(k, v)| (label("counter", k), *v)),
    );
    counters(
        &mut r,
        "weft_fastdp",
        "The fast datapath's counters: misses planned and dropped over the upcall budget, flows installed, forwarded without a flow (table full), expired idle, evicted for room, flushes",
        m.fastdp.iter().map(|(k, v)| (label("counter", k), *v)),
    );
    if let Some(flows) = m.fastdp_flows {
        gauge(
            &mut r,
            "weft_fastdp_flows",
            "Flows in the kernel datapath's table",
            flows as usize,
        );
    }
    counters(
        &mut r,
        "weft_dns",
        "The DNS server's counters: queries; answered, nxdomain, forwarded and failed forwards, malformed; queries held for a ready instance (waits) and how they ended",
        m.dns.iter().map(|(k, v)| (label("counter", k), *v)),
    );
    gauge(
        &mut r,
        "weft_names",
        "Names with instances that answer, on every host of the mesh",
        m.names,
    );
    counters(
        &mut r,
        "weft_policy_allowed_packets",
        "Packets of new connections network policy let through, by policy",
        m.policy_allowed
            .iter()
            .map(|(policy, v)| (label("policy", policy), *v)),
    );
    counters(
        &mut r,
        "weft_policy_dropped_packets",
        "Packets network policy dropped, by this host's container and direction",
        m.policy_dropped.iter().map(|((container, direction), v)| {
            let mut labels = label("container", container);
            labels.push(("direction".into(), direction.to_string()));
            (labels, *v)
        }),
    );
    gauges(
        &mut r,
        "weft_conditioned_containers",
        "This host's conditioned containers, by what conditions them (kernel, conditioner)",
        m.conditioned.iter().map(|(by, n)| (label("by", by), *n)),
    );
    let conditioner_labels = |[container, rule, direction]: &[String; 3]| -> Labels {
        vec![
            ("container".into(), container.clone()),
            ("rule".into(), rule.clone()),
            ("direction".into(), direction.clone()),
        ]
    };
    type Pick = fn(&weft_condition::Counters) -> u64;
    let families: [(&str, &str, Pick); 6] = [
        (
            "weft_conditioner_packets",
            "Packets a conditioner took, by container, rule and direction",
            |c| c.packets,
        ),
        (
            "weft_conditioner_bytes",
            "IP bytes a conditioner took",
            |c| c.bytes,
        ),
        (
            "weft_conditioner_lost_packets",
            "Packets lost on purpose (the loss setting)",
            |c| c.lost,
        ),
        (
            "weft_conditioner_rate_dropped_packets",
            "Packets dropped by the rate: a full shaper queue or the policer",
            |c| c.rate_dropped,
        ),
        (
            "weft_conditioner_overflow_packets",
            "Packets dropped because the conditioner held all it may",
            |c| c.overflow,
        ),
        (
            "weft_conditioner_duplicated_packets",
            "Packets sent twice (the duplicate setting)",
            |c| c.duplicated,
        ),
    ];
    for (name, help, pick) in families {
        counters(
            &mut r,
            name,
            help,
            m.conditioner
                .iter()
                .map(|(l, c)| (conditioner_labels(l), pick(c))),
        );
    }
    let mut out = String::new();
    encode(&mut out, &r).expect("encoding into a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let mut m = Metrics {
            peers: 3,
            policy_allowed: vec![("x/web".into(), 5)],
            policy_dropped: vec![(("x/db".into(), "ingress"), 2)],
            ..Metrics::default()
        };
        m.connections_by_state.insert("established".into(), 2);
        let out = render(&m);
        assert!(
            out.contains("# TYPE weft_peers gauge\nweft_peers 3\n"),
            "{out}"
        );
        m.conditioned.insert("kernel".into(), 1);
        m.conditioner.push((
            ["web".into(), "dns".into(), "egress".into()],
            weft_condition::Counters {
                packets: 10,
                lost: 2,
                ..Default::default()
            },
        ));
        let out = render(&m);
        assert!(
            out.contains("weft_conditioned_containers{by=\"kernel\"} 1\n")
                && out.contains(
                    "weft_conditioner_lost_packets_total{container=\"web\",rule=\"dns\",direction=\"egress\"} 2\n"
                )
                && out.contains(
                    "weft_conditioner_packets_total{container=\"web\",rule=\"dns\",direction=\"egress\"} 10\n"
                ),
            "{out}"
        );
        m.data.insert("held_released", 4);
        m.dns = vec![("waits_answered", 2)];
        let out = render(&m);
        assert!(
            out.contains("weft_dns_total{counter=\"waits_answered\"} 2\n")
                && out.contains("weft_policy_allowed_packets_total{policy=\"x/web\"} 5\n")
                && out.contains(
                    "weft_policy_dropped_packets_total{container=\"x/db\",direction=\"ingress\"} 2\n"
                ),
            "{out}"
        );
        assert!(
            out.contains("weft_datapath_total{counter=\"held_released\"} 4\n"),
            "{out}"
        );
        assert!(
            !out.contains("weft_fastdp_flows"),
            "no datapath, no gauge: {out}"
        );
        m.fastdp = vec![("flows_evicted", 7)];
        m.fastdp_flows = Some(6144);
        let out = render(&m);
        assert!(
            out.contains("weft_fastdp_total{counter=\"flows_evicted\"} 7\n")
                && out.contains("weft_fastdp_flows 6144\n"),
            "{out}"
        );
        m.overlays.insert(("userspace", "vxlan-blocked"), 2);
        m.overlays.insert(("fastdp", ""), 1);
        let out = render(&m);
        assert!(
            out.contains(
                "weft_connection_overlays{overlay=\"userspace\",reason=\"vxlan-blocked\"} 2\n"
            ) && out.contains("weft_connection_overlays{overlay=\"fastdp\",reason=\"\"} 1\n"),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
        assert!(
            out.contains("weft_connections{state=\"established\"} 2\n"),
            "{out}"
        );
    }

    #[test]
    fn a_label_value_cannot_forge_a_line() {
        let mut m = Metrics::default();
        m.sent_by_kind
            .insert("gossip:x\"} 1\nweft_peers 999\n\\".into(), 1);
        let out = render(&m);
        assert!(!out.contains("\nweft_peers 999"), "{out}");
        assert!(
            out.contains(r#"{kind="gossip:x\"} 1\nweft_peers 999\n\\"} 1"#),
            "{out}"
        );
    }
}
