//! Names as the mesh keeps them: fully qualified, lower case, checked
//! once at registration (and again when they arrive from a peer), with
//! errors that say what is wrong.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The domain names live in unless told otherwise.
pub const DEFAULT_DOMAIN: &str = "weft.local.";

/// Why a name cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("{name:?} is {len} characters long; a DNS name has at most 253")]
    TooLong { name: String, len: usize },
    #[error("{name:?} has an empty label (two dots in a row, or a leading dot)")]
    EmptyLabel { name: String },
    #[error("the label {label:?} of {name:?} is {len} characters long; a label has at most 63")]
    LabelTooLong {
        name: String,
        label: String,
        len: usize,
    },
    #[error(
        "the label {label:?} of {name:?} has {ch:?}; a host name has only letters, digits and hyphens"
    )]
    BadCharacter {
        name: String,
        label: String,
        ch: char,
    },
    #[error("the label {label:?} of {name:?} starts or ends with a hyphen")]
    Hyphen { name: String, label: String },
    #[error(
        "{name:?} is outside the mesh's domain {domain}; give a single label (db), or a name ending in {domain}"
    )]
    OutsideDomain { name: String, domain: String },
    #[error("{name:?} is not in normal form (lower case, ending in a dot)")]
    NotNormal { name: String },
    #[error("{given:?}: the port after the colon must be a number from 1 to 65535 (db:5432)")]
    BadPort { given: String },
}

/// A fully qualified name: lower case, ending in a dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fqdn(String);

impl Fqdn {
    /// The root, `.`: the smallest name.
    pub fn root() -> Fqdn {
        Fqdn(".".into())
    }

    /// Checks and normalizes `text` (a trailing dot is added).
    pub fn parse(text: &str) -> Result<Fqdn, NameError> {
        let lower = text.trim().to_ascii_lowercase();
        if lower.is_empty() || lower == "." {
            return Err(NameError::Empty);
        }
        let full = if lower.ends_with('.') {
            lower
        } else {
            format!("{lower}.")
        };
        check(&full)?;
        Ok(Fqdn(full))
    }

    /// A name as a user gives it for the mesh: a single label goes into
    /// `domain`; a longer name must already be in it.
    pub fn in_domain(text: &str, domain: &Fqdn) -> Result<Fqdn, NameError> {
        let trimmed = text.trim().trim_end_matches('.');
        if !trimmed.is_empty() && !trimmed.contains('.') {
            return Fqdn::parse(&format!("{trimmed}.{}", domain.0));
        }
        let name = Fqdn::parse(text)?;
        if !name.is_within(domain) {
            return Err(NameError::OutsideDomain {
                name: text.trim().to_string(),
                domain: domain.0.clone(),
            });
        }
        Ok(name)
    }

    /// Whether this name is `domain` or below it.
    pub fn is_within(&self, domain: &Fqdn) -> bool {
        // Asked of every query: no allocation.
        match self.0.strip_suffix(domain.0.as_str()) {
            Some("") => true,
            Some(rest) => rest.ends_with('.') || domain.0 == ".",
            None => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Fqdn {
    type Error = NameError;

    fn try_from(text: String) -> Result<Fqdn, NameError> {
        // Exactly as stored: a peer's name that is not already normal is
        // refused, not repaired.
        if text == "." {
            return Ok(Fqdn::root());
        }
        let name = Fqdn::parse(&text)?;
        if name.0 != text {
            return Err(NameError::NotNormal { name: text });
        }
        Ok(name)
    }
}

impl From<Fqdn> for String {
    fn from(name: Fqdn) -> String {
        name.0
    }
}

/// Checks a lower-case name ending in a dot.
fn check(full: &str) -> Result<(), NameError> {
    let name = full.to_string();
    if full.len() > 254 {
        return Err(NameError::TooLong {
            len: full.len() - 1,
            name,
        });
    }
    for label in full[..full.len() - 1].split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel { name });
        }
        if label.len() > 63 {
            return Err(NameError::LabelTooLong {
                len: label.len(),
                label: label.into(),
                name,
            });
        }
        if let Some(ch) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadCharacter {
                label: label.into(),
                name,
                ch,
            });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::Hyphen {
                label: label.into(),
                name,
            });
        }
    }
    Ok(())
}

/// A name as `--name` gives it: `NAME` or `NAME:PORT`, the port being the
/// one whose listener makes an instance ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameSpec {
    pub name: Fqdn,
    pub port: Option<u16>,
}

impl NameSpec {
    pub fn parse(text: &str, domain: &Fqdn) -> Result<NameSpec, NameError> {
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| NameError::BadPort { given: text.into() })?;
                (name, Some(port))
            }
            None => (text, None),
        };
        Ok(NameSpec {
            name: Fqdn::in_domain(name, domain)?,
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Fqdn {
        Fqdn::parse(DEFAULT_DOMAIN).unwrap()
    }

    #[test]
    fn within_is_by_whole_labels() {
        let domain = Fqdn::parse("weft.local").unwrap();
        let within = |n: &str| Fqdn::parse(n).unwrap().is_within(&domain);
        assert!(within("weft.local."));
        assert!(within("db.weft.local."));
        assert!(within("a.b.weft.local."));
        assert!(!within("xweft.local."), "a label's tail is not the domain");
        assert!(!within("weft.local.example."));
        assert!(!within("local."));
        assert!(Fqdn::parse("db.example").unwrap().is_within(&Fqdn::root()));
    }

    #[test]
    fn names_are_normalized_into_the_domain() {
        let d = domain();
        assert_eq!(
            Fqdn::in_domain("DB", &d).unwrap().as_str(),
            "db.weft.local."
        );
        assert_eq!(
            Fqdn::in_domain("api.weft.local", &d).unwrap().as_str(),
            "api.weft.local."
        );
        assert_eq!(
            Fqdn::in_domain("v2.api.weft.local.", &d).unwrap().as_str(),
            "v2.api.weft.local."
        );
        assert!(matches!(
            Fqdn::in_domain("db.example.com", &d),
            Err(NameError::OutsideDomain { .. })
        ));
        assert!(Fqdn::in_domain("weft.local", &d).is_ok_and(|n| n == d));
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        let d = domain();
        let cases: [(&str, &str); 6] = [
            ("", "empty"),
            ("a..b.weft.local", "empty label"),
            ("under_score", "has '_'"),
            ("-db", "starts or ends with a hyphen"),
            (&"x".repeat(64), "at most 63"),
            ("db:0", "port after the colon"),
        ];
        for (given, says) in cases {
            let err = NameSpec::parse(given, &d).unwrap_err().to_string();
            assert!(err.contains(says), "{given:?}: {err}");
        }
        let long = format!("{}.weft.local", ["abcdefghij"; 23].join("."));
        let err = Fqdn::in_domain(&long, &d).unwrap_err();
        assert!(matches!(err, NameError::TooLong { .. }), "{err}");
    }

    #[test]
    fn a_port_makes_a_name_wait_for_its_listener() {
        let spec = NameSpec::parse("db:5432", &domain()).unwrap();
        assert_eq!(spec.name.as_str(), "db.weft.local.");
        assert_eq!(spec.port, Some(5432));
        assert_eq!(NameSpec::parse("db", &domain()).unwrap().port, None);
    }

    #[test]
    fn names_from_a_peer_must_already_be_normal() {
        assert!(Fqdn::try_from("db.weft.local.".to_string()).is_ok());
        assert!(Fqdn::try_from("DB.weft.local.".to_string()).is_err());
        assert!(Fqdn::try_from("db.weft.local".to_string()).is_err());
        assert!(Fqdn::try_from("a b.".to_string()).is_err());
    }
}
