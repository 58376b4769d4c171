//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use crate::daemon::router::Metrics;

/// A label value as the text format wants it: backslash, quote and
/// newline escaped, so no value can forge another line.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        writeln!(out, "# HELP {name} {help}").unwrap();
        writeln!(out, "# TYPE {name} {kind}").unwrap();
        for (labels, value) in samples {
            writeln!(out, "{name}{labels} {value}").unwrap();
        }
    };
    let labelled = |label: &str, counts: &std::collections::BTreeMap<String, usize>| {
        counts
            .iter()
            .map(|(k, v)| (format!("{{{label}=\"{}\"}}", escaped(k)), *v as f64))
            .collect::<Vec<_>>()
    };
    gauge(
        "weft_peers",
        "Peers this router can reach, itself included.",
        "gauge",
        vec![(String::new(), m.peers as f64)],
    );
    gauge(
        "weft_connections",
        "This router's connections by state.",
        "gauge",
        labelled("state", &m.connections_by_state),
    );
    gauge(
        "weft_targets",
        "Addresses this router connects to, by state.",
        "gauge",
        labelled("state", &m.targets_by_state),
    );
    gauge(
        "weft_connections_refused_total",
        "Connections this router refused after their handshake.",
        "counter",
        vec![(String::new(), m.refused_by_us as f64)],
    );
    gauge(
        "weft_connection_failures_total",
        "Connection attempts that failed before being established.",
        "counter",
        vec![(String::new(), m.failed_attempts as f64)],
    );
    gauge(
        "weft_control_messages_sent_total",
        "Control messages sent to peers.",
        "counter",
        vec![(String::new(), m.messages_sent as f64)],
    );
    gauge(
        "weft_control_messages_sent_by_kind_total",
        "Control messages sent, by kind (gossip, broadcast and unicast by channel).",
        "counter",
        m.sent_by_kind
            .iter()
            .map(|(k, v)| (format!("{{kind=\"{}\"}}", escaped(k)), *v as f64))
            .collect(),
    );
    gauge(
        "weft_control_messages_received_total",
        "Control messages received from peers.",
        "counter",
        vec![(String::new(), m.messages_received as f64)],
    );
    gauge(
        "weft_connection_overlays",
        "Connections by the data path they use, and for the userspace path the reason it is not the fast datapath.",
        "gauge",
        m.overlays
            .iter()
            .map(|(k, v)| {
                let (overlay, reason) = k.split_once(':').unwrap_or((k, ""));
                (
                    format!(
                        "{{overlay=\"{}\",reason=\"{}\"}}",
                        escaped(overlay),
                        escaped(reason)
                    ),
                    *v as f64,
                )
            })
            .collect(),
    );
    gauge(
        "weft_datapath_total",
        "The userspace data path's counters: frames from and to the bridge, datagrams and bytes, drops by reason, frames relayed for others.",
        "counter",
        m.data
            .iter()
            .map(|(k, v)| (format!("{{counter=\"{}\"}}", escaped(k)), *v as f64))
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let mut m = Metrics {
            peers: 3,
            ..Metrics::default()
        };
        m.connections_by_state.insert("established".into(), 2);
        let out = render(&m);
        assert!(
            out.contains("# TYPE weft_peers gauge\nweft_peers 3\n"),
            "{out}"
        );
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
