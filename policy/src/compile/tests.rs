//! The compiler against the upstream NetworkPolicy e2e suite's model:
//! namespaces x, y, z (label `ns`), pods a, b, c in each (label `pod`),
//! and each case's truth table of who reaches whom on a port.

use super::*;
use crate::model::parse_documents;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

fn addr(ns: usize, pod: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, ns as u8, pod as u8 + 1)
}

/// The model's nine pods; each serves port 80 named `serve-80-tcp` and
/// 81 named `serve-81-udp` (UDP), as the upstream pods do.
fn model() -> Inventory {
    let mut inventory = Inventory::default();
    for (n, ns) in NAMESPACES.iter().enumerate() {
        inventory
            .namespaces
            .insert(ns.to_string(), [("ns".to_string(), ns.to_string())].into());
        for (p, pod) in PODS.iter().enumerate() {
            inventory.endpoints.push(Endpoint {
                name: format!("{ns}/{pod}"),
                addr: addr(n, p),
                namespace: ns.to_string(),
                labels: [("pod".to_string(), pod.to_string())].into(),
                ports: [
                    ("serve-80-tcp".to_string(), (Protocol::Tcp, 80)),
                    ("serve-81-udp".to_string(), (Protocol::Udp, 81)),
                ]
                .into(),
            });
        }
    }
    inventory
}

fn policies(yaml: &str) -> Vec<Policy> {
    parse_documents(yaml)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Who reaches whom, as a table like the upstream suite prints: a row per
/// source, `.` allowed, `X` denied.
fn table(plan: &Plan, protocol: Protocol, port: u16) -> String {
    let mut out = String::new();
    for from in 0..9 {
        for to in 0..9 {
            let (f, t) = (addr(from / 3, from % 3), addr(to / 3, to % 3));
            let ok = f == t || plan.verdict(f, t, protocol, port).allowed;
            out.push(if ok { '.' } else { 'X' });
        }
        out.push('\n');
    }
    out
}

fn everywhere(yaml: &str) -> Plan {
    compile(&policies(yaml), &model(), |_| true)
}

/// A table from rows of "allowed from" and "allowed to" sets, for cases
/// that are easier to say than to draw.
fn expect(allowed: impl Fn(usize, usize) -> bool) -> String {
    let mut out = String::new();
    for from in 0..9 {
        for to in 0..9 {
            out.push(if from == to || allowed(from, to) {
                '.'
            } else {
                'X'
            });
        }
        out.push('\n');
    }
    out
}

// Pod indices: x/a 0, x/b 1, x/c 2, y/a 3, ... z/c 8.
const XA: usize = 0;
const XB: usize = 1;

#[test]
fn should_support_a_default_deny_ingress_policy() {
    let plan = everywhere(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-ingress, namespace: x}\nspec:\n  podSelector: {}\n",
    );
    assert_eq!(table(&plan, Protocol::Tcp, 80), expect(|_, to| to / 3 != 0));
    assert_eq!(table(&plan, Protocol::Udp, 81), expect(|_, to| to / 3 != 0));
}

#[test]
fn should_support_a_default_deny_all_policy() {
    let plan = everywhere(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| from / 3 != 0 && to / 3 != 0)
    );
}

#[test]
fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector()
{
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-a-allows-x-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| to != XA || from == XB)
    );
}

#[test]
fn should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces() {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-namespaces, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {}
"#,
    );
    assert_eq!(table(&plan, Protocol::Tcp, 80), expect(|_, _| true));
}

#[test]
fn should_enforce_policy_based_on_namespace_selector_with_match_expressions() {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: In, values: ["y"]}]
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| to != XA || from / 3 == 1)
    );
}

#[test]
fn should_enforce_policy_based_on_pod_selector_or_namespace_selector() {
    // Two peers: either matches.
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: ["x"]}]}
    - podSelector: {matchLabels: {pod: b}}
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| to != XA || from / 3 != 0 || from == XB)
    );
}

#[test]
fn should_enforce_policy_based_on_pod_selector_and_namespace_selector() {
    // One peer with both: both must match.
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: ["x"]}]}
      podSelector: {matchLabels: {pod: b}}
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| to != XA || (from / 3 != 0 && from % 3 == 1))
    );
}

#[test]
fn should_allow_ingress_access_on_one_named_port() {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: serve-80-tcp, protocol: TCP}]
"#,
    );
    assert_eq!(table(&plan, Protocol::Tcp, 80), expect(|_, _| true));
    assert_eq!(table(&plan, Protocol::Tcp, 81), expect(|_, to| to / 3 != 0));
    assert_eq!(
        table(&plan, Protocol::Udp, 80),
        expect(|_, to| to / 3 != 0),
        "a named TCP port is not UDP"
    );
}

#[test]
fn should_allow_egress_access_on_one_named_port() {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports: [{port: serve-81-udp, protocol: UDP}]
"#,
    );
    assert_eq!(table(&plan, Protocol::Udp, 81), expect(|_, _| true));
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, _| from / 3 != 0)
    );
}

#[test]
fn should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector()
 {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-y-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: a}}
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| from != XA || to == 3)
    );
}

#[test]
fn should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors() {
    // Two policies on x/a: the union of what each allows.
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-81, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
  ingress:
  - ports: [{port: 81}]
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|_, to| to / 3 != 0 || to == XA)
    );
    assert_eq!(table(&plan, Protocol::Tcp, 81), expect(|_, _| true));
    let v = plan.verdict(addr(1, 0), addr(0, 0), Protocol::Tcp, 80);
    assert!(v.allowed);
    assert_eq!(v.reasons, ["ingress of x/a: allowed by x/allow-80"]);
    let v = plan.verdict(addr(1, 0), addr(0, 1), Protocol::Tcp, 80);
    assert!(!v.allowed);
    assert_eq!(
        v.reasons,
        [
            "ingress of x/b: isolated by x/allow-81, and no rule of theirs allows 10.32.1.1 on tcp/80"
        ]
    );
}

#[test]
fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block() {
    // Egress of x/a to y's pods' /24 except y/a's /32.
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: block, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.32.1.0/24, except: [10.32.1.1/32]}
"#,
    );
    assert_eq!(
        table(&plan, Protocol::Tcp, 80),
        expect(|from, to| from != XA || (to / 3 == 1 && to != 3))
    );
}

#[test]
fn should_support_allow_all_ingress_and_end_port_ranges() {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80, endPort: 81, protocol: UDP}, {port: 79}]
"#,
    );
    for (protocol, port, open) in [
        (Protocol::Udp, 80, true),
        (Protocol::Udp, 81, true),
        (Protocol::Udp, 82, false),
        (Protocol::Tcp, 80, false),
        (Protocol::Tcp, 79, true),
        (Protocol::Sctp, 80, false),
    ] {
        assert_eq!(
            table(&plan, protocol, port),
            expect(|_, to| open || to / 3 != 0),
            "{protocol:?}/{port}"
        );
    }
}

#[test]
fn a_policy_that_selects_no_pod_isolates_nothing_and_others_namespaces_are_untouched() {
    let plan = everywhere(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nobody, namespace: x}
spec:
  podSelector: {matchLabels: {pod: nobody}}
"#,
    );
    assert!(
        plan.pods.is_empty(),
        "no policy selecting a pod: nothing blocked (weave#3761)"
    );
    assert_eq!(table(&plan, Protocol::Tcp, 80), expect(|_, _| true));
    let plan = compile(&[], &model(), |_| true);
    assert!(plan.pods.is_empty() && plan.policies.is_empty());
}

#[test]
fn a_host_enforces_only_for_its_own_containers() {
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: x}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n";
    let plan = compile(&policies(yaml), &model(), |e| e.addr == addr(0, 0));
    assert_eq!(plan.pods.len(), 1);
    assert_eq!(plan.pods[0].endpoint.name, "x/a");
    // x/b is not enforced here: its host does that.
    assert!(
        plan.verdict(addr(1, 0), addr(0, 1), Protocol::Tcp, 80)
            .allowed
    );
    assert!(
        !plan
            .verdict(addr(1, 0), addr(0, 0), Protocol::Tcp, 80)
            .allowed
    );
}

/// Every conformance case of `cases.yaml`, on the model, as the compiler
/// decides it: the same truth tables the testbed checks with traffic.
#[test]
fn every_conformance_case_gives_its_truth_tables() {
    let cases = crate::cases::load().unwrap();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut inventory = model();
    for e in &mut inventory.endpoints {
        e.ports.insert("serve-81-tcp".into(), (Protocol::Tcp, 81));
        e.ports.insert("serve-80-udp".into(), (Protocol::Udp, 80));
    }
    let mut failures = Vec::new();
    for case in &cases {
        let yaml = case.policies(|i| addr(i / 3, i % 3));
        let plan = compile(&policies(&yaml), &inventory, |_| true);
        for (probe, want) in case.expectations() {
            let mut got = [[false; 9]; 9];
            for (f, row) in got.iter_mut().enumerate() {
                for (t, cell) in row.iter_mut().enumerate() {
                    let (from, to) = (addr(f / 3, f % 3), addr(t / 3, t % 3));
                    *cell = f == t || plan.verdict(from, to, probe.protocol, probe.port).allowed;
                }
            }
            if got != want {
                failures.push(format!(
                    "{} ({probe:?})\nwant\n{}got\n{}",
                    case.title,
                    crate::cases::render(&want),
                    crate::cases::render(&got)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
