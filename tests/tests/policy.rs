//! Network policy with real traffic between containers on three hosts:
//! `weft policy apply -f` with a default deny cuts a cross-host
//! connection, an allow rule brings it back for the peers it names and no
//! others, `weft policy check` says why, a bad policy changes nothing,
//! and weft's table deleted under the router comes back with the rules.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use testbed::{Netns, Spec, Testbed, WeftHost, eventually};

const NO_UPSTREAM: [&str; 2] = ["--resolv-conf", "/dev/null"];

/// A TCP listener in a container that accepts until dropped.
struct Server(Arc<AtomicBool>);

impl Server {
    fn start(ns: &Netns, port: u16) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        testbed::netpol::tcp_acceptor(ns, port, stop.clone(), Duration::from_millis(5)).unwrap();
        Server(stop)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Whether a new TCP connection from `from` to `to:port` is made.
fn connects(from: &Netns, to: Ipv4Addr, port: u16) -> bool {
    from.in_thread(move || {
        TcpStream::connect_timeout(&SocketAddr::from((to, port)), Duration::from_millis(800))
            .is_ok()
    })
    .unwrap()
}

fn attach(on: &WeftHost, container: &Netns, namespace: &str, labels: &[&str]) -> Ipv4Addr {
    let mut args = vec!["attach", "--namespace", namespace];
    for l in labels {
        args.extend(["--label", l]);
    }
    args.push(container.name());
    on.run(&args)
        .unwrap()
        .trim()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn apply(on: &WeftHost, dir: &std::path::Path, name: &str, yaml: &str) -> Result<String, String> {
    let file = dir.join(name);
    std::fs::write(&file, yaml).unwrap();
    on.run(&["policy", "apply", "-f", file.to_str().unwrap()])
        .map_err(|e| e.to_string())
}

const DENY_X: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: x}
spec:
  podSelector: {}
";

const ALLOW_CLIENTS: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: x}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: client}}
    ports:
    - {port: 80}
";

#[test]
fn a_default_deny_cuts_across_hosts_and_an_allow_rule_restores_exactly_its_peers() {
    let tb = Testbed::create_owned("policy", Spec::hosts(3).containers(2)).unwrap();
    let (routers, _, _) = tb.exposed_mesh(3, &NO_UPSTREAM, "userspace").unwrap();
    let dir = tb.state_dir().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    let (server_ns, client_ns, other_ns) =
        (tb.container(1, 2), tb.container(2, 2), tb.container(3, 2));
    let server = attach(&routers[0], &server_ns, "x", &["app=server"]);
    let _client = attach(&routers[1], &client_ns, "x", &["app=client"]);
    let _other = attach(&routers[2], &other_ns, "y", &["app=client"]);
    let _listening = Server::start(&server_ns, 80);
    let _listening81 = Server::start(&server_ns, 81);
    assert!(connects(&client_ns, server, 80), "no policy: open");
    assert!(connects(&other_ns, server, 80));

    // Applied on host 3, enforced on host 1 for its container.
    let out = apply(&routers[2], &dir, "deny.yaml", DENY_X).unwrap();
    assert_eq!(out, "x/deny configured\n");
    eventually("the deny to cut x/client", Duration::from_secs(10), || {
        (!connects(&client_ns, server, 80))
            .then_some(())
            .ok_or_else(|| "still connects".to_string())
    });
    assert!(!connects(&other_ns, server, 80));

    let out = apply(&routers[1], &dir, "allow.yaml", ALLOW_CLIENTS).unwrap();
    assert_eq!(out, "x/allow-clients configured\n");
    eventually(
        "the allow to let x/client in",
        Duration::from_secs(10),
        || {
            connects(&client_ns, server, 80)
                .then_some(())
                .ok_or_else(|| "cut".to_string())
        },
    );
    assert!(!connects(&client_ns, server, 81), "port 81 is not allowed");
    assert!(!connects(&other_ns, server, 80), "y's client is not in x");

    // The explanation, from any host.
    // Containers by NAMESPACE/NAME, NAME being the attach target.
    let (client_name, server_name) = (
        format!("x/{}", client_ns.name()),
        format!("x/{}", server_ns.name()),
    );
    let check = routers[2]
        .run(&["policy", "check", &client_name, &server_name, "80"])
        .unwrap();
    assert!(check.starts_with("allowed"), "{check}");
    assert!(check.contains("allowed by x/allow-clients"), "{check}");
    let other_name = format!("y/{}", other_ns.name());
    let denied = routers[0].command(&[
        "policy",
        "check",
        &other_name,
        &server.to_string(),
        "80/tcp",
    ]);
    let denied = denied.unwrap();
    assert!(!denied.status.success());
    let said = String::from_utf8_lossy(&denied.stdout);
    assert!(
        said.starts_with("denied") && said.contains("isolated by x/allow-clients, x/deny"),
        "{said}"
    );

    // A bad policy is refused with its field, and the rules stay.
    let bad = apply(
        &routers[0],
        &dir,
        "bad.yaml",
        &ALLOW_CLIENTS.replace("{port: 80}", "{port: 80, endPort: 70}"),
    )
    .unwrap_err();
    assert!(bad.contains("spec.ingress[0].ports[0].endPort"), "{bad}");
    assert!(connects(&client_ns, server, 80) && !connects(&other_ns, server, 80));

    // Status on the server's host: what applies, and what it dropped.
    let status = routers[0].run(&["status", "policy"]).unwrap();
    assert!(status.contains(&server_name), "{status}");
    assert!(
        status.contains("ingress: isolated by x/allow-clients, x/deny"),
        "{status}"
    );
    let dropped: u64 = status
        .lines()
        .find(|l| l.contains("ingress: isolated"))
        .and_then(|l| {
            l.rsplit("; ")
                .next()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(dropped > 0, "{status}");
    let metrics = routers[0].metrics().unwrap();
    let count = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
    };
    assert!(
        count("weft_policy_allowed_packets_total{policy=\"x/allow-clients\"}") > 0,
        "{metrics}"
    );
    assert!(
        count(&format!(
            "weft_policy_dropped_packets_total{{container=\"{server_name}\",direction=\"ingress\"}}"
        )) > 0,
        "{metrics}"
    );
    // Each drop told in the server host's log, with the container, the
    // peer and what isolates it.
    let other_addr = _other.to_string();
    eventually("the drop in the log", Duration::from_secs(10), || {
        let log = routers[0].log();
        log.lines()
            .any(|l| {
                l.contains("policy dropped a connection")
                    && l.contains(&format!(
                        "ingress of {server_name}: {other_addr} tcp/80 dropped"
                    ))
                    && l.contains("isolated by x/allow-clients, x/deny")
            })
            .then_some(())
            .ok_or_else(|| "not logged".to_string())
    });
    let list = routers[1].run(&["policy", "list"]).unwrap();
    assert!(
        list.contains("x/allow-clients") && list.contains("x/deny"),
        "{list}"
    );

    // weft's table deleted under the router: back, with the rules.
    tb.host(1)
        .run(["nft", "delete", "table", "inet", "weft"])
        .unwrap();
    eventually("the table to come back", Duration::from_secs(15), || {
        tb.host(1)
            .run(["nft", "list", "chain", "inet", "weft", "policy_forward"])
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    assert!(
        !connects(&other_ns, server, 80),
        "still enforced after the repair"
    );
    assert!(connects(&client_ns, server, 80));

    // Deleted: open again.
    let out = routers[0]
        .run(&["policy", "delete", "x/deny", "x/allow-clients"])
        .unwrap();
    assert_eq!(out, "x/deny deleted\nx/allow-clients deleted\n");
    eventually(
        "the policies to go everywhere",
        Duration::from_secs(10),
        || {
            connects(&other_ns, server, 80)
                .then_some(())
                .ok_or_else(|| "still cut".to_string())
        },
    );
    let missing = routers[0].command(&["policy", "delete", "x/deny"]).unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no policy x/deny"));
    tb.destroy().unwrap();
}

/// Every conformance case of `policy/cases.yaml` (after the upstream
/// suite's model tests), with TCP and UDP traffic between the nine pods
/// on three hosts, on the userspace path.
#[test]
fn conformance_cases_hold_with_real_traffic_on_the_userspace_path() {
    let tb = Testbed::create_owned("netpol", Spec::hosts(3).containers(3)).unwrap();
    let mut model = testbed::netpol::Model::start(&tb, &NO_UPSTREAM, "userspace").unwrap();
    let failed = model.check_all();
    drop(model);
    tb.destroy().unwrap();
    testbed::netpol::assert_all_held(&failed);
}

/// The same cases with Kubernetes as the source: every router watches a
/// stand-in API server (list and watch of real Pod, Namespace and
/// NetworkPolicy objects) instead of taking `weft policy apply`, the pods
/// attached with no labels as the CNI plugin attaches them. Then the API
/// server goes away: the last case's rules stay in force, neither opened
/// nor closed.
#[test]
fn conformance_cases_hold_with_policies_from_the_kubernetes_api() {
    let tb = Testbed::create_owned("netpol-k8s", Spec::hosts(3).containers(3)).unwrap();
    let mut model =
        testbed::netpol::Model::start_from(&tb, &NO_UPSTREAM, "userspace", true).unwrap();
    let failed = model.check_all();
    // Policies are the API server's business here.
    let refused = apply(&model.routers[0], &tb.state_dir(), "local.yaml", DENY_X).unwrap_err();
    assert!(refused.contains("kubectl apply"), "{refused}");
    let cases = weft_policy::cases::load().unwrap();
    let last = cases.last().unwrap();
    let ids = model.routers[0].policy_ids().unwrap();
    assert!(
        !ids.is_empty(),
        "the last case has policies: {}",
        last.title
    );
    model.api_server_gone();
    // Long enough for every watch to fail and be retried.
    std::thread::sleep(Duration::from_secs(5));
    for r in &model.routers {
        assert_eq!(r.policy_ids().unwrap(), ids, "h{}", r.host);
    }
    let kept = model.verify(last);
    drop(model);
    tb.destroy().unwrap();
    testbed::netpol::assert_all_held(&failed);
    kept.unwrap();
}
