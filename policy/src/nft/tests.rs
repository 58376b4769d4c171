use super::*;
use crate::{
    compile::{Endpoint, Inventory, compile},
    model::parse_documents,
};

fn plan() -> Plan {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25, 192.0.2.0/28, 192.0.2.0/30]}
    ports: [{port: 80}, {port: 81, endPort: 90}, {port: 85}, {protocol: UDP}]
  egress:
  - to:
    - podSelector: {matchLabels: {app: nobody}}
  - ports: [{port: 53, protocol: UDP}]
"#;
    let policies: Vec<_> = parse_documents(yaml)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let endpoint = |name: &str, addr: [u8; 4], app: &str| Endpoint {
        name: name.into(),
        addr: addr.into(),
        namespace: "x".into(),
        labels: [("app".to_string(), app.to_string())].into(),
        ports: Default::default(),
    };
    let inventory = Inventory {
        endpoints: vec![
            endpoint("x/web", [10, 32, 0, 2], "web"),
            endpoint("x/client", [10, 32, 0, 3], "client"),
            endpoint("x/client2", [10, 33, 0, 3], "client"),
        ],
        namespaces: Default::default(),
    };
    compile(&policies, &inventory, |e| e.addr.octets()[1] == 32)
}

/// The exact text weft writes for a plan, so a change is a decision.
#[test]
fn the_rendering_is_pinned() {
    weft_golden::Golden::new(env!("CARGO_MANIFEST_DIR")).check_text("web-nft", &render(&plan()));
}

/// The modules loaded ahead are exactly those of the expressions the
/// rendering uses: one the renderer stops writing leaves the list, one
/// it starts writing must join it (or nf_tables replays the first
/// transaction for it).
#[test]
fn the_modules_loaded_ahead_are_those_the_rendering_uses() {
    let text = render(&plan());
    let by_expression = [
        ("ct state ", &["nft_ct"][..]),
        ("limit rate ", &["nft_limit"]),
        (" log prefix ", &["nft_log", "nfnetlink_log"]),
        ("counter name ", &["nft_objref"]),
    ];
    let mut used: Vec<&str> = by_expression
        .iter()
        .filter(|(expression, _)| text.contains(expression))
        .flat_map(|(_, modules)| modules.iter().copied())
        .collect();
    used.sort_unstable();
    let mut listed = KERNEL_MODULES.to_vec();
    listed.sort_unstable();
    assert_eq!(used, listed);
}

#[test]
fn nothing_isolated_renders_nothing() {
    assert_eq!(render(&Plan::default()), "");
}

#[test]
fn ranges_and_blocks_are_merged_so_nft_takes_them() {
    let text = render(&plan());
    assert!(text.contains("th dport { 80-90 }"), "{text}");
    assert!(
        text.contains("!= { 192.0.2.0/28, 192.0.2.128/25 }"),
        "{text}"
    );
    assert!(
        !text.contains("app: nobody") && !text.contains("{  }"),
        "an empty selector admits no one: {text}"
    );
}
