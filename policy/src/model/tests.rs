use super::*;

fn parse_one(text: &str) -> Result<Policy, PolicyError> {
    parse_documents(text).map(|mut v| v.remove(0).1)
}

const DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
"#;

#[test]
fn defaults_are_made_explicit() {
    let p = parse_one(DENY_ALL).unwrap();
    assert_eq!(p.id(), "x/deny-all");
    assert_eq!(p.pods, Selector::everything());
    assert_eq!(
        p.ingress,
        Some(vec![]),
        "every policy isolates ingress by default"
    );
    assert_eq!(p.egress, None, "egress only with an egress section");

    let p = parse_one(
        r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"name":"e"},
            "spec":{"podSelector":{"matchLabels":{"pod":"a"}},
                    "egress":[{"ports":[{"port":53,"protocol":"UDP"},{"port":"dns-tcp"}]}]}}"#,
    )
    .unwrap();
    assert_eq!(p.namespace, DEFAULT_NAMESPACE);
    assert_eq!(p.ingress, Some(vec![]));
    let egress = p.egress.unwrap();
    assert_eq!(egress[0].peers, vec![], "no peers: everyone");
    assert_eq!(
        egress[0].ports,
        vec![
            Port {
                protocol: Protocol::Udp,
                port: PortRef::Range(53, 53)
            },
            Port {
                protocol: Protocol::Tcp,
                port: PortRef::Named("dns-tcp".into())
            },
        ]
    );

    let p = parse_one(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-egress, namespace: "y"}
spec:
  podSelector: {}
  policyTypes: [Egress]
  ingress: [{}]
"#,
    )
    .unwrap();
    assert_eq!(p.ingress, None, "policyTypes decides");
    assert_eq!(p.egress, Some(vec![]));
}

#[test]
fn peers_ports_and_blocks() {
    let p = parse_one(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: mixed, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: c}}
    - ipBlock: {cidr: 10.0.0.1/8, except: [10.1.0.0/16]}
    ports:
    - {port: 80, endPort: 90}
    - {protocol: SCTP}
"#,
    )
    .unwrap();
    let rule = &p.ingress.unwrap()[0];
    assert_eq!(
        rule.peers[0],
        Peer::Pods {
            namespaces: Namespaces::Own,
            pods: Selector::labels(&[("pod", "b")])
        }
    );
    assert_eq!(
        rule.peers[1],
        Peer::Pods {
            namespaces: Namespaces::Matching(Selector::labels(&[("ns", "y")])),
            pods: Selector::labels(&[("pod", "c")])
        }
    );
    assert_eq!(
        rule.peers[2],
        Peer::Block {
            cidr: Some("10.0.0.0/8".parse().unwrap()),
            except: vec!["10.1.0.0/16".parse().unwrap()]
        },
        "host bits are dropped, as the API server does"
    );
    assert_eq!(rule.ports[0].port, PortRef::Range(80, 90));
    assert_eq!(
        rule.ports[1],
        Port {
            protocol: Protocol::Sctp,
            port: PortRef::All
        }
    );
}

#[test]
fn bad_policies_are_refused_with_the_field_and_the_reason() {
    let cases = [
        (
            "spec:\n  policyTypes: [Sideways]",
            "spec.policyTypes[0]",
            "neither Ingress nor Egress",
        ),
        (
            "spec:\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n      podSelector: {}",
            "spec.ingress[0].from[0].ipBlock",
            "may not also",
        ),
        (
            "spec:\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "inside the cidr",
        ),
        (
            "spec:\n  ingress:\n  - from:\n    - ipBlock: {cidr: ten}",
            "spec.ingress[0].from[0].ipBlock.cidr",
            "not a CIDR",
        ),
        (
            "spec:\n  egress:\n  - to:\n    - {}",
            "spec.egress[0].to[0]",
            "needs a podSelector",
        ),
        (
            "spec:\n  egress:\n  - ports:\n    - {port: 0}",
            "spec.egress[0].ports[0].port",
            "not a port",
        ),
        (
            "spec:\n  egress:\n  - ports:\n    - {port: 90, endPort: 80}",
            "spec.egress[0].ports[0].endPort",
            "below port",
        ),
        (
            "spec:\n  egress:\n  - ports:\n    - {port: http, endPort: 80}",
            "spec.egress[0].ports[0].endPort",
            "numeric",
        ),
        (
            "spec:\n  egress:\n  - ports:\n    - {port: HTTP}",
            "spec.egress[0].ports[0].port",
            "not a port name",
        ),
        (
            "spec:\n  egress:\n  - ports:\n    - {port: \"80\"}",
            "spec.egress[0].ports[0].port",
            "as a string",
        ),
        (
            "spec:\n  egress:\n  - ports:\n    - {protocol: ICMP}",
            "spec.egress[0].ports[0].protocol",
            "not TCP",
        ),
    ];
    for (spec, field, reason) in cases {
        let text = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\n{spec}\n"
        );
        let e = parse_one(&text).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(reason), "{field}: {e}");
    }
    let e = parse_one("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a networking.k8s.io/v1 NetworkPolicy"),
        "{e}"
    );
    let e = parse_one("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata.name"), "{e}");
    let e = parse_one("{ not: [yaml").unwrap_err().to_string();
    assert!(e.contains("neither JSON nor YAML"), "{e}");
}

#[test]
fn several_documents_and_lists_are_read_and_one_bad_one_refuses_all() {
    let two = format!("{DENY_ALL}---\n{}", DENY_ALL.replace("deny-all", "other"));
    let read = parse_documents(&two).unwrap();
    assert_eq!(
        read.iter().map(|(_, p)| p.id()).collect::<Vec<_>>(),
        ["x/deny-all", "x/other"]
    );
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"a"}},
        {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"b"}}]}"#;
    assert_eq!(parse_documents(list).unwrap().len(), 2);
    let bad = format!(
        "{DENY_ALL}---\n{}",
        DENY_ALL.replace("podSelector: {}", "policyTypes: [Up]")
    );
    let e = parse_documents(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with("document 1:") && e.contains("policyTypes"),
        "{e}"
    );
    assert!(parse_documents("").is_err());
}
