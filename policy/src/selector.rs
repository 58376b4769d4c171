//! Label selectors, as Kubernetes defines them: `matchLabels` and
//! `matchExpressions` (In, NotIn, Exists, DoesNotExist), all of which must
//! hold; an empty selector selects everything.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::model::PolicyError;

/// A container's or namespace's labels.
pub type Labels = BTreeMap<String, String>;

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// Every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

impl Selector {
    /// Selects everything (`{}`).
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// Selects what carries all of `labels`.
    pub fn labels(labels: &[(&str, &str)]) -> Selector {
        Selector {
            requirements: labels
                .iter()
                .map(|(k, v)| Requirement::In(k.to_string(), [v.to_string()].into()))
                .collect(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            // NotIn holds for an object without the key, as Kubernetes has it.
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Checks a selector from the API at `field` (e.g.
    /// `spec.ingress[0].from[1].podSelector`).
    pub fn from_k8s(selector: &LabelSelector, field: &str) -> Result<Selector, PolicyError> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            check_key(k, &format!("{field}.matchLabels"))?;
            check_value(v, &format!("{field}.matchLabels.{k}"))?;
            requirements.push(Requirement::In(k.clone(), [v.clone()].into()));
        }
        for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            check_key(&e.key, &format!("{at}.key"))?;
            let values: BTreeSet<String> = e.values.iter().flatten().cloned().collect();
            for v in &values {
                check_value(v, &format!("{at}.values"))?;
            }
            let key = e.key.clone();
            let requirement = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(PolicyError::field(
                        format!("{at}.values"),
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(PolicyError::field(
                        format!("{at}.values"),
                        format!("operator {} takes no values", e.operator),
                    ));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(PolicyError::field(
                        format!("{at}.operator"),
                        format!("{other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            requirements.push(requirement);
        }
        Ok(Selector { requirements })
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of
/// at most 63 characters.
pub fn check_key(key: &str, field: &str) -> Result<(), PolicyError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty()
            || p.len() > 253
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
    {
        return Err(PolicyError::field(
            field,
            format!("the prefix of label key {key:?} is not a DNS subdomain"),
        ));
    }
    if name.is_empty() {
        return Err(PolicyError::field(
            field,
            format!("label key {key:?} has no name"),
        ));
    }
    check_name_part(name, field, "label key")
}

/// A label value: empty, or at most 63 characters of letters, digits,
/// `-`, `_` and `.`, beginning and ending with a letter or digit.
pub fn check_value(value: &str, field: &str) -> Result<(), PolicyError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value, field, "label value")
}

fn check_name_part(text: &str, field: &str, what: &str) -> Result<(), PolicyError> {
    let bytes = text.as_bytes();
    let ok = bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::field(
            field,
            format!(
                "{what} {text:?} must be at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn every_operator_as_kubernetes_defines_it() {
        let selector = Selector::from_k8s(
            &LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                match_expressions: Some(vec![
                    expr("tier", "In", &["a", "b"]),
                    expr("env", "NotIn", &["prod"]),
                    expr("team", "Exists", &[]),
                    expr("legacy", "DoesNotExist", &[]),
                ]),
            },
            "spec.podSelector",
        )
        .unwrap();
        let base = [("app", "web"), ("tier", "a"), ("team", "x")];
        assert!(selector.matches(&labels(&base)));
        assert!(
            selector.matches(&labels(&[
                ("app", "web"),
                ("tier", "b"),
                ("team", ""),
                ("env", "dev")
            ])),
            "NotIn of another value, Exists with an empty value"
        );
        for (change, why) in [
            (("app", "db"), "matchLabels"),
            (("tier", "c"), "In"),
            (("env", "prod"), "NotIn"),
            (("legacy", "1"), "DoesNotExist"),
        ] {
            let mut l = labels(&base);
            l.insert(change.0.into(), change.1.into());
            assert!(!selector.matches(&l), "{why}");
        }
        assert!(
            !selector.matches(&labels(&[("app", "web"), ("tier", "a")])),
            "Exists"
        );
        assert!(Selector::everything().matches(&Labels::new()));
    }

    #[test]
    fn bad_selectors_name_the_field_and_the_reason() {
        let bad = |e: LabelSelectorRequirement| {
            Selector::from_k8s(
                &LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![e]),
                },
                "spec.podSelector",
            )
            .unwrap_err()
            .to_string()
        };
        let e = bad(expr("a", "In", &[]));
        assert!(
            e.contains("spec.podSelector.matchExpressions[0].values") && e.contains("at least one"),
            "{e}"
        );
        let e = bad(expr("a", "Exists", &["x"]));
        assert!(e.contains("takes no values"), "{e}");
        let e = bad(expr("a", "Equals", &["x"]));
        assert!(e.contains(".operator") && e.contains("Equals"), "{e}");
        let e = bad(expr("bad key!", "Exists", &[]));
        assert!(e.contains(".key"), "{e}");
        assert!(check_key("example.com/app", "k").is_ok());
        assert!(check_key("Example.com/app", "k").is_err());
        assert!(check_value(&"x".repeat(64), "v").is_err());
        assert!(check_value("-x", "v").is_err());
    }
}
