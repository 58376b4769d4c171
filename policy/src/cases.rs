//! The conformance cases (`policy/cases.yaml`): after the upstream
//! Kubernetes NetworkPolicy e2e suite's model tests, each a set of
//! policies and the truth tables they must give. Both the compiler's own
//! tests and the testbed's real traffic check against them.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::model::Protocol;

pub const CASES: &str = include_str!("../cases.yaml");
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// Named ports every model pod serves.
pub const NAMED_PORTS: [(&str, &str); 4] = [
    ("serve-80-tcp", "80/tcp"),
    ("serve-81-tcp", "81/tcp"),
    ("serve-80-udp", "80/udp"),
    ("serve-81-udp", "81/udp"),
];

#[derive(Clone, Debug, Deserialize)]
pub struct Case {
    pub title: String,
    policies: String,
    pub expect: Vec<Expectation>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Expectation {
    pub probes: Vec<String>,
    pub rules: Vec<String>,
}

/// One probe: a protocol and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub protocol: Protocol,
    pub port: u16,
}

impl Probe {
    pub fn parse(text: &str) -> Result<Probe, String> {
        let (proto, port) = text
            .split_once('/')
            .ok_or_else(|| format!("probe {text:?}: write tcp/80"))?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(format!("probe {text:?}: {other} is not tcp or udp")),
        };
        let port = port
            .parse()
            .map_err(|_| format!("probe {text:?}: bad port"))?;
        Ok(Probe { protocol, port })
    }
}

/// Who reaches whom: `[from][to]`, pods numbered x/a 0, x/b 1 ... z/c 8.
pub type Table = [[bool; 9]; 9];

/// A pod's number and its `ns/pod` name.
pub fn pods() -> impl Iterator<Item = (usize, String)> {
    (0..9).map(|i| (i, format!("{}/{}", NAMESPACES[i / 3], PODS[i % 3])))
}

fn matches(pattern: &str, pod: usize) -> Result<bool, String> {
    let (ns, name) = pattern.split_once('/').unwrap_or((pattern, "*"));
    let ok = |want: &str, have: &str| want == "*" || want == have;
    if !NAMESPACES.contains(&ns) && ns != "*" || !PODS.contains(&name) && name != "*" {
        return Err(format!(
            "{pattern:?} is not a pod of the model (x/a, y/*, *)"
        ));
    }
    Ok(ok(ns, NAMESPACES[pod / 3]) && ok(name, PODS[pod % 3]))
}

pub fn load() -> Result<Vec<Case>, String> {
    let cases: Vec<Case> = serde_saphyr::from_str(CASES).map_err(|e| format!("cases.yaml: {e}"))?;
    for case in &cases {
        for e in &case.expect {
            for p in &e.probes {
                Probe::parse(p).map_err(|m| format!("{}: {m}", case.title))?;
            }
            table_of(&e.rules).map_err(|m| format!("{}: {m}", case.title))?;
        }
    }
    Ok(cases)
}

/// The table `rules` give, starting from everyone reaching everyone.
pub fn table_of(rules: &[String]) -> Result<Table, String> {
    let mut table = [[true; 9]; 9];
    for rule in rules {
        let words: Vec<&str> = rule.split_whitespace().collect();
        let [from, "->", to, verdict] = words[..] else {
            return Err(format!("{rule:?}: write FROM -> TO allow|deny"));
        };
        let allow = match verdict {
            "allow" => true,
            "deny" => false,
            other => return Err(format!("{rule:?}: {other} is not allow or deny")),
        };
        for (f, row) in table.iter_mut().enumerate() {
            for (t, cell) in row.iter_mut().enumerate() {
                if matches(from, f)? && matches(to, t)? {
                    *cell = allow;
                }
            }
        }
    }
    for (i, row) in table.iter_mut().enumerate() {
        row[i] = true;
    }
    Ok(table)
}

impl Case {
    /// The policies, with `{{ns/pod}}` replaced by that pod's address.
    pub fn policies(&self, addr_of: impl Fn(usize) -> Ipv4Addr) -> String {
        let mut text = self.policies.clone();
        for (i, name) in pods() {
            text = text.replace(&format!("{{{{{name}}}}}"), &addr_of(i).to_string());
        }
        text
    }

    /// Every probe with the table it must give.
    pub fn expectations(&self) -> Vec<(Probe, Table)> {
        self.expect
            .iter()
            .flat_map(|e| {
                let table = table_of(&e.rules).expect("checked by load");
                e.probes
                    .iter()
                    .map(move |p| (Probe::parse(p).expect("checked by load"), table))
            })
            .collect()
    }
}

/// A table as the upstream suite prints one: a row per source, `.`
/// reached, `X` not.
pub fn render(table: &Table) -> String {
    let mut out = String::from("    ");
    for (_, name) in pods() {
        out.push_str(&format!("{name:>4}"));
    }
    out.push('\n');
    for (f, name) in pods() {
        out.push_str(&format!("{name:>4}"));
        for cell in &table[f] {
            out.push_str(if *cell { "   ." } else { "   X" });
        }
        out.push('\n');
    }
    out
}
