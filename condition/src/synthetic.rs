//! Synthetic Network's JSON, field for field (`rush/src/synthetic_network.rs`
//! in daily-co/synthetic-network), so its JavaScript client and web UI drive
//! weft by changing only the base URL. Every field is required, as there;
//! unknown fields are ignored, as there. Unlike there, a configuration that
//! is out of range is refused with the field and the reason rather than
//! clamped or silently ignored.
//!
//! Its `ip` is an IPv4 address in network byte order read as a
//! little-endian integer (10.0.0.1 is 16777226), 0 for any address; its
//! `protocol` 0 is any; ports count only for TCP and UDP. Its rate is a
//! number always: weft's "no limit" is written as [`MAX_RATE`], and a rate
//! at or above it reads back as no limit. A rate of 0 passes nothing, as
//! there.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::qos::{MAX_RATE, Qos, RateMode};
use crate::rules::{Conditions, ConfigError, FlowMatch, FlowRule, Link, parse_json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticNetwork {
    pub default_link: SyntheticLink,
    pub flows: Vec<SyntheticFlow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticLink {
    pub ingress: SyntheticQos,
    pub egress: SyntheticQos,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticQos {
    pub rate: u64,
    pub loss: f64,
    pub latency: u64,
    pub jitter: u64,
    pub jitter_strength: f64,
    pub reorder_packets: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticFlow {
    pub label: String,
    pub flow: SyntheticMatch,
    pub link: SyntheticLink,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyntheticMatch {
    pub ip: u32,
    pub protocol: u8,
    pub port_min: u16,
    pub port_max: u16,
}

impl SyntheticNetwork {
    /// Reads and checks Synthetic Network's JSON, as weft's conditions.
    pub fn parse(text: &[u8]) -> Result<Conditions, ConfigError> {
        let sn: SyntheticNetwork = parse_json(text)?;
        let conditions = sn.to_conditions();
        conditions.validate()?;
        Ok(conditions)
    }

    pub fn to_conditions(&self) -> Conditions {
        Conditions {
            default_link: self.default_link.to_link(),
            flows: self
                .flows
                .iter()
                .map(|f| FlowRule {
                    label: f.label.clone(),
                    flow: f.flow.to_match(),
                    link: f.link.to_link(),
                })
                .collect(),
        }
    }

    /// Synthetic Network's form of `c`, or the field it has no way to say.
    pub fn from_conditions(c: &Conditions) -> Result<SyntheticNetwork, ConfigError> {
        Ok(SyntheticNetwork {
            default_link: SyntheticLink::from_link(&c.default_link, "default_link")?,
            flows: c
                .flows
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let path = format!("flows[{i}]");
                    Ok(SyntheticFlow {
                        label: f.label.clone(),
                        flow: SyntheticMatch::from_match(&f.flow, &format!("{path}.flow"))?,
                        link: SyntheticLink::from_link(&f.link, &format!("{path}.link"))?,
                    })
                })
                .collect::<Result<_, ConfigError>>()?,
        })
    }
}

impl SyntheticLink {
    fn to_link(&self) -> Link {
        Link {
            ingress: self.ingress.to_qos(),
            egress: self.egress.to_qos(),
        }
    }

    fn from_link(l: &Link, path: &str) -> Result<SyntheticLink, ConfigError> {
        Ok(SyntheticLink {
            ingress: SyntheticQos::from_qos(&l.ingress, &format!("{path}.ingress"))?,
            egress: SyntheticQos::from_qos(&l.egress, &format!("{path}.egress"))?,
        })
    }
}

impl SyntheticQos {
    fn to_qos(&self) -> Qos {
        Qos {
            rate: (self.rate < MAX_RATE).then_some(self.rate),
            loss: self.loss,
            latency: self.latency as f64,
            jitter: self.jitter as f64,
            jitter_strength: self.jitter_strength,
            reorder: self.reorder_packets,
            ..Qos::default()
        }
    }

    fn from_qos(q: &Qos, path: &str) -> Result<SyntheticQos, ConfigError> {
        let unsaid = |field: &str| {
            ConfigError::new(
                format!("{path}.{field}"),
                "Synthetic Network's JSON cannot say this; read and write weft's form instead",
            )
        };
        if q.rate_mode != RateMode::Shape {
            return Err(unsaid("rate_mode"));
        }
        if q.queue_limit.is_some() {
            return Err(unsaid("queue_limit"));
        }
        if q.loss_burst.is_some() {
            return Err(unsaid("loss_burst"));
        }
        if q.duplicate != 0.0 {
            return Err(unsaid("duplicate"));
        }
        let whole_ms = |v: f64, field: &str| {
            if v.fract() == 0.0 {
                Ok(v as u64)
            } else {
                Err(unsaid(field))
            }
        };
        Ok(SyntheticQos {
            rate: q.rate.unwrap_or(MAX_RATE),
            loss: q.loss,
            latency: whole_ms(q.latency, "latency")?,
            jitter: whole_ms(q.jitter, "jitter")?,
            jitter_strength: q.jitter_strength,
            reorder_packets: q.reorder,
        })
    }
}

impl SyntheticMatch {
    fn to_match(&self) -> FlowMatch {
        let remote =
            (self.ip != 0).then(|| IpNet::V4(Ipv4Net::from(Ipv4Addr::from(self.ip.to_le_bytes()))));
        let protocol = (self.protocol != 0).then_some(self.protocol);
        let (lo, hi) = (
            self.port_min.min(self.port_max),
            self.port_min.max(self.port_max),
        );
        // There, ports narrow only TCP and UDP flows.
        let ports =
            (matches!(protocol, Some(6 | 17)) && (lo, hi) != (0, u16::MAX)).then_some((lo, hi));
        FlowMatch {
            remote,
            protocol,
            ports,
        }
    }

    fn from_match(m: &FlowMatch, path: &str) -> Result<SyntheticMatch, ConfigError> {
        let ip = match m.remote {
            None => 0,
            Some(IpNet::V4(net)) if net.prefix_len() == 32 => {
                u32::from_le_bytes(net.addr().octets())
            }
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{path}.remote"),
                    "Synthetic Network's JSON has single IPv4 addresses only; \
                     read and write weft's form instead",
                ));
            }
        };
        let (port_min, port_max) = match (m.protocol, m.ports) {
            (Some(6 | 17), Some(range)) => range,
            (_, None) => (0, u16::MAX),
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    format!("{path}.ports"),
                    "Synthetic Network's JSON has ports for TCP and UDP only",
                ));
            }
        };
        Ok(SyntheticMatch {
            ip,
            protocol: m.protocol.unwrap_or(0),
            port_min,
            port_max,
        })
    }
}

/// The example in Synthetic Network's README, as it is printed there:
/// 10 Mbit/s both ways, 2% loss out.
pub const README_EXAMPLE: &str = r#"{
  "default_link": {
    "ingress": {
      "rate": 10000000,
      "loss": 0,
      "latency": 0,
      "jitter": 0,
      "jitter_strength": 0,
      "reorder_packets": false
    },
    "egress": {
      "rate": 10000000,
      "loss": 0.02,
      "latency": 0,
      "jitter": 0,
      "jitter_strength": 0,
      "reorder_packets": false
    }
  },
  "flows": []
}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_is_accepted_as_is_and_written_back_the_same() {
        let c = SyntheticNetwork::parse(README_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(c.default_link.ingress.rate, Some(10_000_000));
        assert_eq!(c.default_link.egress.loss, 0.02);
        assert!(c.flows.is_empty());
        let back = SyntheticNetwork::from_conditions(&c).unwrap();
        let original: SyntheticNetwork = serde_json::from_str(README_EXAMPLE).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn addresses_protocols_and_ports_mean_what_they_mean_there() {
        assert_eq!(
            u32::from_le_bytes([10, 0, 0, 1]),
            16777226,
            "the encoding there"
        );
        let text = r#"{"default_link": {"ingress": {"rate": 0, "loss": 0, "latency": 0, "jitter": 0, "jitter_strength": 0, "reorder_packets": false},
                                        "egress": {"rate": 1000000000000, "loss": 0, "latency": 5, "jitter": 0, "jitter_strength": 0, "reorder_packets": true}},
            "flows": [
              {"label": "http", "flow": {"ip": 16777226, "protocol": 6, "port_min": 80, "port_max": 80},
               "link": {"ingress": {"rate": 100000000, "loss": 0, "latency": 0, "jitter": 0, "jitter_strength": 0, "reorder_packets": false},
                        "egress": {"rate": 100000000, "loss": 0, "latency": 0, "jitter": 0, "jitter_strength": 0, "reorder_packets": false}}},
              {"label": "icmp_any", "flow": {"ip": 0, "protocol": 1, "port_min": 5, "port_max": 9},
               "link": {"ingress": {"rate": 1, "loss": 0, "latency": 0, "jitter": 0, "jitter_strength": 0, "reorder_packets": false},
                        "egress": {"rate": 1, "loss": 0, "latency": 0, "jitter": 0, "jitter_strength": 0, "reorder_packets": false}}}
            ], "ignored": true}"#;
        let c = SyntheticNetwork::parse(text.as_bytes()).unwrap();
        assert_eq!(c.default_link.ingress.rate, Some(0), "0 passes nothing");
        assert_eq!(c.default_link.egress.rate, None, "at the cap: no limit");
        assert!(c.default_link.egress.reorder);
        let http = &c.flows[0].flow;
        assert_eq!(http.remote, Some("10.0.0.1/32".parse().unwrap()));
        assert_eq!((http.protocol, http.ports), (Some(6), Some((80, 80))));
        let icmp = &c.flows[1].flow;
        assert_eq!(
            (icmp.remote, icmp.protocol, icmp.ports),
            (None, Some(1), None)
        );
        // Written back: the same meaning (ICMP's ignored ports become the
        // full range).
        let back = SyntheticNetwork::from_conditions(&c).unwrap();
        assert_eq!(back.to_conditions(), c);
        assert_eq!(back.flows[0].flow.ip, 16777226);
    }

    #[test]
    fn out_of_range_is_refused_and_what_it_cannot_say_is_named() {
        let bad = README_EXAMPLE.replace("\"loss\": 0.02", "\"loss\": 1.02");
        let e = SyntheticNetwork::parse(bad.as_bytes()).unwrap_err();
        assert_eq!(e.field, "default_link.egress.loss", "{e}");
        let missing = README_EXAMPLE.replace(
            "\"reorder_packets\": false\n    },\n    \"egress\"",
            "\"x\": 1\n    },\n    \"egress\"",
        );
        let e = SyntheticNetwork::parse(missing.as_bytes()).unwrap_err();
        assert_eq!(e.field, "default_link.ingress", "{e}");
        assert!(e.reason.contains("reorder_packets"), "{e}");

        let mut c = SyntheticNetwork::parse(README_EXAMPLE.as_bytes()).unwrap();
        c.default_link.ingress.loss_burst = Some(3.0);
        let e = SyntheticNetwork::from_conditions(&c).unwrap_err();
        assert_eq!(e.field, "default_link.ingress.loss_burst");
        c.default_link.ingress.loss_burst = None;
        c.flows.push(FlowRule {
            label: "lan".into(),
            flow: FlowMatch {
                remote: Some(IpNet::V4(
                    Ipv4Net::new(Ipv4Addr::new(10, 32, 0, 0), 12).unwrap(),
                )),
                ..FlowMatch::default()
            },
            link: Link::default(),
        });
        let e = SyntheticNetwork::from_conditions(&c).unwrap_err();
        assert_eq!(e.field, "flows[0].flow.remote");
    }
}
