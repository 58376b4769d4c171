use super::*;

/// A pod as the API server returns it (trimmed of fields policy ignores).
fn pod(namespace: &str, name: &str, ip: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                     "resourceVersion": "101", "labels": labels},
        "spec": {
            "nodeName": "k8s-worker-1",
            "containers": [
                {"name": "server", "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                 "ports": [{"name": "serve-80-tcp", "containerPort": 80, "protocol": "TCP"},
                           {"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"},
                           {"containerPort": 8080}]},
                {"name": "sidecar", "image": "busybox",
                 "ports": [{"name": "metrics", "containerPort": 9090}]}
            ]
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    }))
    .unwrap()
}

fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
        "spec": spec
    }))
    .unwrap()
}

fn pod_event(event: Event<&Pod>) -> Event<(String, PodFacts)> {
    let facts = |p: &Pod| {
        let f = PodFacts::of(p);
        (f.key(), f)
    };
    match event {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::InitApply(p) => Event::InitApply(facts(p)),
        Event::Apply(p) => Event::Apply(facts(p)),
        Event::Delete(p) => Event::Delete(facts(p)),
    }
}

fn addrs(known: &Known) -> Vec<Ipv4Addr> {
    known.inventory.endpoints.iter().map(|e| e.addr).collect()
}

#[test]
fn a_pod_reads_as_address_labels_and_every_named_port() {
    let p = pod("x", "a", "10.32.0.5", serde_json::json!({"pod": "a"}));
    let facts = PodFacts::of(&p);
    assert_eq!(facts.key(), "x/a");
    assert_eq!(facts.addr, Some(Ipv4Addr::new(10, 32, 0, 5)));
    assert_eq!(facts.labels.get("pod").map(String::as_str), Some("a"));
    let ports: Vec<(String, (weft_policy::Protocol, u16))> = facts.ports.into_iter().collect();
    assert_eq!(
        ports,
        vec![
            ("metrics".into(), (weft_policy::Protocol::Tcp, 9090)),
            ("serve-80-tcp".into(), (weft_policy::Protocol::Tcp, 80)),
            ("serve-81-udp".into(), (weft_policy::Protocol::Udp, 81)),
        ]
    );
}

#[test]
fn host_network_and_finished_pods_have_no_address_of_their_own() {
    let mut p = pod("x", "a", "10.32.0.5", serde_json::json!({}));
    p.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(PodFacts::of(&p).addr, None);
    for phase in ["Succeeded", "Failed"] {
        let mut p = pod("x", "a", "10.32.0.5", serde_json::json!({}));
        p.status.as_mut().unwrap().phase = Some(phase.into());
        assert_eq!(PodFacts::of(&p).addr, None, "{phase}");
    }
    // Pending, before the kubelet reports an address.
    let mut p = pod("x", "a", "10.32.0.5", serde_json::json!({}));
    p.status = None;
    assert_eq!(PodFacts::of(&p).addr, None);
    // IPv6 first in a dual-stack pod: the IPv4 one is found.
    let mut p = pod("x", "a", "fd00::5", serde_json::json!({}));
    p.status.as_mut().unwrap().pod_ips = Some(vec![
        serde_json::from_value(serde_json::json!({"ip": "fd00::5"})).unwrap(),
        serde_json::from_value(serde_json::json!({"ip": "10.32.0.6"})).unwrap(),
    ]);
    assert_eq!(PodFacts::of(&p).addr, Some(Ipv4Addr::new(10, 32, 0, 6)));
}

#[test]
fn nothing_is_enforced_from_the_cluster_before_every_kind_is_listed() {
    let mut view = ClusterView::default();
    let a = pod("x", "a", "10.32.0.5", serde_json::json!({}));
    assert!(!view.pods.on(pod_event(Event::Init)));
    assert!(!view.pods.on(pod_event(Event::InitApply(&a))));
    assert!(view.pods.on(pod_event(Event::InitDone)));
    assert!(!view.synced());
    assert!(view.namespaces.on(Event::InitDone));
    assert!(!view.synced());
    // An empty list is a list: the cluster has no policies.
    assert!(!view.policies.on(Event::Init));
    assert!(view.policies.on(Event::InitDone));
    assert!(view.synced());
}

#[test]
fn a_relist_replaces_the_pods_at_its_end_never_half_way() {
    let mut view = ClusterView::default();
    let (a, b, c) = (
        pod("x", "a", "10.32.0.5", serde_json::json!({})),
        pod("x", "b", "10.32.0.6", serde_json::json!({})),
        pod("x", "c", "10.32.0.7", serde_json::json!({})),
    );
    for e in [
        Event::Init,
        Event::InitApply(&a),
        Event::InitApply(&b),
        Event::InitDone,
    ] {
        view.pods.on(pod_event(e));
    }
    assert_eq!(view.pods.len(), 2);
    // The watch broke and its resource version expired: a relist, in which
    // b has gone and c has come.
    view.pods.on(pod_event(Event::Init));
    assert_eq!(
        view.pods.len(),
        2,
        "the old list stays while the new one arrives"
    );
    view.pods.on(pod_event(Event::InitApply(&a)));
    assert!(view.pods.get("x/b").is_some());
    view.pods.on(pod_event(Event::InitApply(&c)));
    assert!(view.pods.on(pod_event(Event::InitDone)));
    assert!(view.pods.get("x/b").is_none());
    assert!(view.pods.get("x/c").is_some());
    // The same list again changes nothing.
    for e in [Event::Init, Event::InitApply(&a), Event::InitApply(&c)] {
        view.pods.on(pod_event(e));
    }
    assert!(!view.pods.on(pod_event(Event::InitDone)));
}

#[test]
fn applies_and_deletes_change_the_view_once() {
    let mut view = ClusterView::default();
    view.pods.on(pod_event(Event::InitDone));
    let a = pod("x", "a", "10.32.0.5", serde_json::json!({"pod": "a"}));
    assert!(view.pods.on(pod_event(Event::Apply(&a))));
    assert!(
        !view.pods.on(pod_event(Event::Apply(&a))),
        "a resync of the same pod"
    );
    let mut relabelled = a.clone();
    relabelled.metadata.labels = Some([("pod".to_string(), "z".to_string())].into());
    assert!(view.pods.on(pod_event(Event::Apply(&relabelled))));
    assert!(view.pods.on(pod_event(Event::Delete(&relabelled))));
    assert!(!view.pods.on(pod_event(Event::Delete(&relabelled))));
    assert!(view.pods.is_empty());
}

#[test]
fn a_policy_that_stops_reading_keeps_its_last_good_version() {
    let good = policy("x", "deny", serde_json::json!({"podSelector": {}}));
    let bad = policy(
        "x",
        "deny",
        serde_json::json!({"podSelector": {"matchExpressions": [{"key": "pod", "operator": "Near"}]}}),
    );
    let first = PolicyFacts::of(&good, None);
    assert!(first.in_force.is_some() && first.problem.is_none());
    let second = PolicyFacts::of(&bad, Some(&first));
    assert_eq!(second.in_force, first.in_force);
    let problem = second.problem.clone().unwrap();
    assert!(
        problem.contains("spec.podSelector.matchExpressions[0].operator"),
        "{problem}"
    );
    let never_good = PolicyFacts::of(&bad, None);
    assert_eq!(never_good.in_force, None);

    let mut view = ClusterView::default();
    view.pods.on(Event::InitDone);
    view.namespaces.on(Event::InitDone);
    view.policies.on(Event::InitDone);
    view.policies.on(Event::Apply(("x/deny".into(), second)));
    view.policies
        .on(Event::Apply(("x/other".into(), never_good)));
    let known = view.known(&BTreeSet::new());
    assert_eq!(known.policies.len(), 1);
    assert_eq!(known.policies[0].id(), "x/deny");
    assert_eq!(known.problems.len(), 2, "{:?}", known.problems);
    assert!(
        known.problems[0].contains("the previous one stays in force"),
        "{:?}",
        known.problems
    );
    assert!(
        known.problems[1].contains("policy x/other is not in force"),
        "{:?}",
        known.problems
    );
}

#[test]
fn ours_are_the_pods_at_this_routers_addresses() {
    let mut view = ClusterView::default();
    let (a, b) = (
        pod("x", "a", "10.32.0.5", serde_json::json!({"pod": "a"})),
        pod("y", "b", "10.40.0.1", serde_json::json!({"pod": "b"})),
    );
    view.pods.on(pod_event(Event::Apply(&a)));
    view.pods.on(pod_event(Event::Apply(&b)));
    view.namespaces.on(Event::Apply((
        "y".into(),
        [("ns".to_string(), "y".to_string())].into(),
    )));
    let local: BTreeSet<Ipv4Addr> =
        [Ipv4Addr::new(10, 32, 0, 5), Ipv4Addr::new(10, 32, 0, 9)].into();
    let known = view.known(&local);
    assert_eq!(known.ours, [Ipv4Addr::new(10, 32, 0, 5)].into());
    assert_eq!(
        addrs(&known),
        [Ipv4Addr::new(10, 32, 0, 5), Ipv4Addr::new(10, 40, 0, 1)]
    );
    assert_eq!(known.inventory.endpoints[1].name, "y/b");
    assert_eq!(
        known
            .inventory
            .namespace_labels("y")
            .get("ns")
            .map(String::as_str),
        Some("y")
    );
}

#[test]
fn the_compiled_plan_isolates_what_the_cluster_policy_selects() {
    let mut view = ClusterView::default();
    let (a, b) = (
        pod("x", "a", "10.32.0.5", serde_json::json!({"pod": "a"})),
        pod("x", "b", "10.32.0.6", serde_json::json!({"pod": "b"})),
    );
    view.pods.on(pod_event(Event::Apply(&a)));
    view.pods.on(pod_event(Event::Apply(&b)));
    let deny_a = policy(
        "x",
        "deny-a",
        serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}}),
    );
    view.policies.on(Event::Apply((
        "x/deny-a".into(),
        PolicyFacts::of(&deny_a, None),
    )));
    let known = view.known(&[Ipv4Addr::new(10, 32, 0, 5), Ipv4Addr::new(10, 32, 0, 6)].into());
    let verdict = |from: [u8; 4], to: [u8; 4]| {
        known
            .plan_everywhere()
            .verdict(from.into(), to.into(), weft_policy::Protocol::Tcp, 80)
            .allowed
    };
    assert!(!verdict([10, 32, 0, 6], [10, 32, 0, 5]));
    assert!(verdict([10, 32, 0, 5], [10, 32, 0, 6]));
}
