//! A container's conditions: a default link and flow rules, each with its
//! own conditions per direction; the first rule a packet matches decides,
//! the rest takes the default link (Synthetic Network's model, with
//! prefixes, IPv6 and SCTP added).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::packet::FlowKey;
use crate::qos::Qos;

/// A container has at most this many flow rules: each is a queue and a
/// set of counters in the router.
pub const MAX_FLOWS: usize = 64;
const MAX_LABEL: usize = 64;

/// Conditions in both directions. Ingress is traffic into the container,
/// egress what it sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Link {
    pub ingress: Qos,
    pub egress: Qos,
}

impl Link {
    pub fn is_clean(&self) -> bool {
        self.ingress.is_clean() && self.egress.is_clean()
    }
}

/// Which packets a rule takes: those exchanged with `remote` (an address
/// or prefix), of `protocol`, on the remote's `ports`. Absent parts match
/// anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowMatch {
    #[serde(with = "remote_form", skip_serializing_if = "Option::is_none")]
    pub remote: Option<IpNet>,
    #[serde(with = "protocol_form", skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(with = "ports_form", skip_serializing_if = "Option::is_none")]
    pub ports: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRule {
    pub label: String,
    #[serde(default)]
    pub flow: FlowMatch,
    #[serde(default)]
    pub link: Link,
}

/// Everything one container suffers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Conditions {
    pub default_link: Link,
    pub flows: Vec<FlowRule>,
}

/// A configuration refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// JSON read into `T`; a mistake is reported with the path of the field
/// (`flows[0].flow.ports`) and the parser's reason and place.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "(document)".to_string()
        } else {
            path
        };
        ConfigError::new(field, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| ConfigError::new("(document)", e.to_string()))?;
    Ok(value)
}

/// Protocols whose packets carry ports a rule can match.
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}

impl FlowMatch {
    pub fn matches(&self, key: &FlowKey) -> bool {
        self.remote.is_none_or(|net| net.contains(&key.remote))
            && self.protocol.is_none_or(|p| p == key.protocol)
            && self
                .ports
                .is_none_or(|(lo, hi)| key.port.is_some_and(|p| (lo..=hi).contains(&p)))
    }
}

impl Conditions {
    /// Reads weft's JSON form and checks it: the error names the field.
    pub fn from_json(text: &[u8]) -> Result<Conditions, ConfigError> {
        let c: Conditions = parse_json(text)?;
        c.validate()?;
        Ok(c)
    }

    /// True when nothing at all is done to the container's traffic.
    pub fn is_clean(&self) -> bool {
        self.default_link.is_clean() && self.flows.iter().all(|f| f.link.is_clean())
    }

    /// The rule `key`'s packets follow: `Some(i)` for `flows[i]`, `None`
    /// for the default link.
    pub fn classify(&self, key: Option<&FlowKey>) -> Option<usize> {
        let key = key?;
        self.flows.iter().position(|f| f.flow.matches(key))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let link = |l: &Link, path: &str| -> Result<(), ConfigError> {
            l.ingress
                .validate(&format!("{path}.ingress"))
                .and_then(|()| l.egress.validate(&format!("{path}.egress")))
                .map_err(|(field, reason)| ConfigError { field, reason })
        };
        link(&self.default_link, "default_link")?;
        if self.flows.len() > MAX_FLOWS {
            return Err(ConfigError::new(
                "flows",
                format!("{} rules; at most {MAX_FLOWS}", self.flows.len()),
            ));
        }
        for (i, f) in self.flows.iter().enumerate() {
            let path = format!("flows[{i}]");
            check_label(&f.label).map_err(|r| ConfigError::new(format!("{path}.label"), r))?;
            if let Some(j) = self.flows[..i].iter().position(|g| g.label == f.label) {
                return Err(ConfigError::new(
                    format!("{path}.label"),
                    format!("\"{}\" is already the label of flows[{j}]", f.label),
                ));
            }
            if let Some((lo, hi)) = f.flow.ports {
                if lo > hi {
                    return Err(ConfigError::new(
                        format!("{path}.flow.ports"),
                        format!("{lo}-{hi} is backwards"),
                    ));
                }
                if !f.flow.protocol.is_some_and(has_ports) {
                    return Err(ConfigError::new(
                        format!("{path}.flow.ports"),
                        "ports need the protocol tcp, udp or sctp",
                    ));
                }
            }
            link(&f.link, &format!("{path}.link"))?;
        }
        Ok(())
    }
}

fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.chars().count() > MAX_LABEL {
        return Err(format!("a label has 1 to {MAX_LABEL} characters"));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_alphanumeric() || *c == '_')) {
        return Err(format!(
            "{c:?} in \"{label}\": a label has letters, digits and _ only"
        ));
    }
    if label == "default" {
        return Err("\"default\" is the name of the default link".into());
    }
    Ok(())
}

/// `"10.0.0.0/8"`, `"10.0.0.1"` or `"fd00::/64"`.
mod remote_form {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<IpNet>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(net) if net.prefix_len() == net.max_prefix_len() => s.collect_str(&net.addr()),
            Some(net) => s.collect_str(net),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Some(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|a| Some(IpNet::from(a)))
            .map_err(|_| D::Error::custom(format!("{text:?} is not an address or a prefix")))
    }
}

/// `"tcp"`, `"udp"`, `"sctp"`, `"icmp"`, `"icmpv6"` or a number.
mod protocol_form {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error};

    const NAMES: [(&str, u8); 5] = [
        ("icmp", 1),
        ("tcp", 6),
        ("udp", 17),
        ("icmpv6", 58),
        ("sctp", 132),
    ];

    pub fn serialize<S: Serializer>(v: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
        match v.and_then(|p| NAMES.iter().find(|(_, n)| *n == p)) {
            Some((name, _)) => s.serialize_str(name),
            None => match v {
                Some(p) => s.serialize_u8(*p),
                None => s.serialize_none(),
            },
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Number(u8),
        Name(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
        match Form::deserialize(d)? {
            Form::Number(n) => Ok(Some(n)),
            Form::Name(name) => NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, p)| Some(*p))
                .ok_or_else(|| {
                    D::Error::custom(format!(
                        "{name:?} is not tcp, udp, sctp, icmp, icmpv6 or a protocol number"
                    ))
                }),
        }
    }
}

/// `80`, `"80"` or `"1000-2000"` (inclusive).
mod ports_form {
    use super::*;
    use serde::{Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &Option<(u16, u16)>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some((lo, hi)) if lo == hi => s.serialize_u16(*lo),
            Some((lo, hi)) => s.collect_str(&format_args!("{lo}-{hi}")),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Number(u16),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(u16, u16)>, D::Error> {
        let text = match Form::deserialize(d)? {
            Form::Number(p) => return Ok(Some((p, p))),
            Form::Text(t) => t,
        };
        let port = |s: &str| {
            s.trim().parse::<u16>().map_err(|_| {
                D::Error::custom(format!("{text:?} is not a port or a range like 1000-2000"))
            })
        };
        match text.split_once('-') {
            Some((lo, hi)) => Ok(Some((port(lo)?, port(hi)?))),
            None => port(&text).map(|p| Some((p, p))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(remote: &str, protocol: u8, port: Option<u16>) -> FlowKey {
        FlowKey {
            remote: remote.parse().unwrap(),
            protocol,
            port,
        }
    }

    #[test]
    fn the_first_matching_rule_wins_and_the_rest_takes_the_default() {
        let c = Conditions::from_json(
            br#"{"flows": [
                {"label": "dns", "flow": {"protocol": "udp", "ports": 53}},
                {"label": "lan", "flow": {"remote": "10.32.0.0/12"}},
                {"label": "web", "flow": {"protocol": 6, "ports": "80-443"}},
                {"label": "v6", "flow": {"remote": "fd00::1"}}
            ]}"#,
        )
        .unwrap();
        assert_eq!(c.classify(Some(&key("10.32.0.5", 17, Some(53)))), Some(0));
        assert_eq!(c.classify(Some(&key("10.32.0.5", 6, Some(80)))), Some(1));
        assert_eq!(c.classify(Some(&key("192.0.2.1", 6, Some(443)))), Some(2));
        assert_eq!(c.classify(Some(&key("192.0.2.1", 6, Some(444)))), None);
        assert_eq!(c.classify(Some(&key("192.0.2.1", 1, None))), None);
        assert_eq!(c.classify(Some(&key("fd00::1", 58, None))), Some(3));
        assert_eq!(c.classify(None), None, "not IP: the default link");
        // What was read is what is written.
        let again: Conditions = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_rules_are_refused_with_the_field() {
        let cases = [
            (
                r#"{"flows": [{"label": "a b"}]}"#,
                "flows[0].label",
                "letters",
            ),
            (
                r#"{"flows": [{"label": "default"}]}"#,
                "flows[0].label",
                "default link",
            ),
            (
                r#"{"flows": [{"label": "a"}, {"label": "a"}]}"#,
                "flows[1].label",
                "already",
            ),
            (
                r#"{"flows": [{"label": "a", "flow": {"ports": 80}}]}"#,
                "flows[0].flow.ports",
                "protocol",
            ),
            (
                r#"{"flows": [{"label": "a", "flow": {"protocol": "tcp", "ports": "9-1"}}]}"#,
                "flows[0].flow.ports",
                "backwards",
            ),
            (
                r#"{"flows": [{"label": "a", "flow": {"protocol": "gre"}}]}"#,
                "flows[0].flow.protocol",
                "not tcp",
            ),
            (
                r#"{"flows": [{"label": "a", "flow": {"remote": "10.0.0.300"}}]}"#,
                "flows[0].flow.remote",
                "not an address",
            ),
            (
                r#"{"default_link": {"egress": {"loss": 2}}}"#,
                "default_link.egress.loss",
                "fraction",
            ),
            (
                r#"{"flows": [{"label": "a", "link": {"ingress": {"jitter": -1}}}]}"#,
                "flows[0].link.ingress.jitter",
                "outside",
            ),
            (
                r#"{"default_link": {"sideways": {}}}"#,
                "default_link.sideways",
                "unknown field",
            ),
        ];
        for (json, field, why) in cases {
            let e = Conditions::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.reason.contains(why), "{json}: {e}");
        }
    }
}
