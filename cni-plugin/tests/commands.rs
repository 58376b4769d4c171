//! The CNI commands against a router in memory: what the plugin asks the
//! router, and what it tells the runtime.

use std::{cell::RefCell, collections::BTreeMap};

use serde_json::{Value, json};
use weft_cni::{CniError, Command, Env, Router, RouterError, run};

/// A router that answers from a table and records every call.
#[derive(Default)]
struct Fake {
    answers: BTreeMap<String, Result<String, (u16, String)>>,
    down: bool,
    calls: RefCell<Vec<(String, Value)>>,
}

impl Fake {
    fn answer(mut self, path: &str, body: Value) -> Fake {
        self.answers.insert(path.into(), Ok(body.to_string()));
        self
    }
    fn refuse(mut self, path: &str, status: u16, body: &str) -> Fake {
        self.answers.insert(path.into(), Err((status, body.into())));
        self
    }
    fn call(&self, path: &str, body: Value) -> Result<String, RouterError> {
        self.calls.borrow_mut().push((path.into(), body));
        if self.down {
            return Err(RouterError::Down(
                "no weft router at /run/weft/weft.sock".into(),
            ));
        }
        match self.answers.get(path) {
            Some(Ok(text)) => Ok(text.clone()),
            Some(Err((status, body))) => Err(RouterError::Refused {
                status: *status,
                body: body.clone(),
            }),
            None => Ok("{}".into()),
        }
    }
}

impl Router for &Fake {
    fn get(&self, path: &str) -> Result<String, RouterError> {
        self.call(path, Value::Null)
    }
    fn post(&self, path: &str, body: &Value) -> Result<String, RouterError> {
        self.call(path, body.clone())
    }
}

fn env(command: Command) -> Env {
    Env {
        command,
        container_id: Some("c0ffee".into()),
        netns: Some("/run/netns/cni-1234".into()),
        ifname: Some("eth0".into()),
        pod_name: Some("web-1".into()),
        pod_namespace: Some("shop".into()),
    }
}

fn conf(version: &str, extra: Value) -> Vec<u8> {
    let mut c = json!({ "cniVersion": version, "name": "weftnet", "type": "weft" });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c.to_string().into_bytes()
}

fn attachment() -> Value {
    json!({
        "id": "cni:weftnet:c0ffee:eth0",
        "target": "/run/netns/cni-1234",
        "interface": "vweft12345678",
        "container_interface": "eth0",
        "mac": "02:11:22:33:44:55",
        "addresses": ["10.32.0.7/12"],
    })
}

fn ok(fake: &Fake, command: Command, stdin: &[u8]) -> Option<Value> {
    run(&env(command), stdin, |_| fake)
        .unwrap_or_else(|(e, _)| panic!("{command:?} failed: {e}"))
        .map(|out| serde_json::from_str(&out).unwrap())
}

fn fails(fake: &Fake, command: Command, stdin: &[u8]) -> (CniError, Value) {
    let (e, version) = run(&env(command), stdin, |_| fake).expect_err("an error");
    let printed: Value = serde_json::from_str(&e.to_json(&version)).unwrap();
    (e, printed)
}

#[test]
fn add_attaches_through_the_router_and_reports_the_container_interface() {
    let fake = Fake::default().answer("/attach", attachment());
    let out = ok(&fake, Command::Add, &conf("1.0.0", json!({}))).unwrap();
    let calls = fake.calls.borrow();
    assert_eq!(calls[0].0, "/attach");
    assert_eq!(calls[0].1["id"], "cni:weftnet:c0ffee:eth0");
    assert_eq!(calls[0].1["target"], "/run/netns/cni-1234");
    assert_eq!(calls[0].1["interface"], "eth0");
    assert_eq!(out["cniVersion"], "1.0.0");
    assert_eq!(out["interfaces"][1]["name"], "eth0");
    assert_eq!(out["interfaces"][1]["sandbox"], "/run/netns/cni-1234");
    assert_eq!(out["interfaces"][1]["mac"], "02:11:22:33:44:55");
    assert_eq!(
        out["ips"],
        json!([{ "address": "10.32.0.7/12", "interface": 1 }])
    );
}

#[test]
fn add_registers_the_containers_name_and_reports_the_routers_dns() {
    let mut attached = attachment();
    attached["dns"] = json!({ "nameservers": ["10.32.0.1"], "search": ["weft.local"] });
    let fake = Fake::default().answer("/attach", attached);
    let out = ok(&fake, Command::Add, &conf("1.0.0", json!({}))).unwrap();
    assert_eq!(fake.calls.borrow()[0].1["runtime_names"], json!(["web-1"]));
    assert_eq!(
        out["dns"],
        json!({ "nameservers": ["10.32.0.1"], "search": ["weft.local"] })
    );
    // The configuration's own DNS wins.
    let mine = json!({ "nameservers": ["192.0.2.53"] });
    let fake = Fake::default().answer("/attach", attachment());
    let out = ok(&fake, Command::Add, &conf("1.0.0", json!({ "dns": mine }))).unwrap();
    assert_eq!(out["dns"], mine);
}

#[test]
fn add_gives_the_pods_namespace_and_the_configurations_labels() {
    let fake = Fake::default().answer("/attach", attachment());
    let labels = json!({ "cni": { "labels": [
        { "key": "app", "value": "db" }, { "key": "tier", "value": "back" }
    ] } });
    ok(
        &fake,
        Command::Add,
        &conf("1.1.0", json!({ "args": labels })),
    )
    .unwrap();
    let asked = &fake.calls.borrow()[0].1;
    assert_eq!(asked["namespace"], "shop");
    assert_eq!(asked["labels"], json!(["app=db", "tier=back"]));
    // No labels, no namespace: the router's defaults (default, none).
    let fake = Fake::default().answer("/attach", attachment());
    let mut bare = env(Command::Add);
    bare.pod_namespace = None;
    run(&bare, &conf("1.1.0", json!({})), |_| &fake)
        .unwrap_or_else(|(e, _)| panic!("ADD failed: {e}"));
    let asked = &fake.calls.borrow()[0].1;
    assert_eq!(asked["namespace"], Value::Null);
    assert_eq!(asked["labels"], json!([]));
}

#[test]
fn cni_args_give_the_pod_name() {
    use weft_cni::config::cni_arg;
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=abc";
    assert_eq!(cni_arg(args, "K8S_POD_NAME").as_deref(), Some("web-1"));
    assert_eq!(cni_arg(args, "NOPE"), None);
    assert_eq!(cni_arg("K8S_POD_NAME=", "K8S_POD_NAME"), None);
}

#[test]
fn add_asks_for_a_gateway_and_reports_it_with_a_default_route() {
    let mut attached = attachment();
    attached["gateway"] = json!("10.32.0.1");
    let fake = Fake::default().answer("/attach", attached);
    let out = ok(&fake, Command::Add, &conf("1.1.0", json!({}))).unwrap();
    assert_eq!(
        fake.calls.borrow()[0].1["expose"],
        true,
        "a pod needs its host: the router exposes itself if it must"
    );
    assert_eq!(out["ips"][0]["gateway"], "10.32.0.1");
    let routes = out["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({ "dst": "0.0.0.0/0", "gw": "10.32.0.1" })),
        "{routes:?}"
    );
    assert!(
        routes.contains(&json!({ "dst": "224.0.0.0/4" })),
        "{routes:?}"
    );
    assert_eq!(
        routes.len(),
        2,
        "the gateway is on the container's subnet: {routes:?}"
    );

    // A gateway off the container's subnet gets a link route first.
    let mut attached = attachment();
    attached["addresses"] = json!(["10.32.64.7/24"]);
    attached["gateway"] = json!("10.32.0.1");
    let fake = Fake::default().answer("/attach", attached);
    let out = ok(&fake, Command::Add, &conf("1.1.0", json!({}))).unwrap();
    let routes = out["routes"].as_array().unwrap();
    assert!(
        routes.contains(&json!({ "dst": "10.32.0.1/32" })),
        "{routes:?}"
    );

    // No gateway (an old router): no default route is claimed.
    let fake = Fake::default().answer("/attach", attachment());
    let out = ok(&fake, Command::Add, &conf("1.1.0", json!({}))).unwrap();
    assert!(out["ips"][0].get("gateway").is_none(), "{out}");
    assert_eq!(out["routes"], json!([{ "dst": "224.0.0.0/4" }]));
}

#[test]
fn the_ips_capability_claims_a_static_address() {
    let fake = Fake::default().answer("/attach", attachment());
    let stdin = conf(
        "1.1.0",
        json!({ "runtimeConfig": { "ips": ["fd00::5/64", "10.32.5.5/12"] } }),
    );
    ok(&fake, Command::Add, &stdin);
    assert_eq!(fake.calls.borrow()[0].1["claim"], "10.32.5.5");
    // Without a prefix, as podman passes it.
    let fake = Fake::default().answer("/attach", attachment());
    let stdin = conf(
        "1.1.0",
        json!({ "runtimeConfig": { "ips": ["10.32.5.6"] } }),
    );
    ok(&fake, Command::Add, &stdin);
    assert_eq!(fake.calls.borrow()[0].1["claim"], "10.32.5.6");
    // None asked: none claimed.
    let fake = Fake::default().answer("/attach", attachment());
    ok(&fake, Command::Add, &conf("1.1.0", json!({})));
    assert_eq!(fake.calls.borrow()[0].1["claim"], Value::Null);
    // Garbage is the runtime's error to hear, and nothing is attached.
    let fake = Fake::default().answer("/attach", attachment());
    let stdin = conf(
        "1.1.0",
        json!({ "runtimeConfig": { "ips": ["ten.32.5.5"] } }),
    );
    let (e, printed) = fails(&fake, Command::Add, &stdin);
    assert!(e.to_string().contains("ten.32.5.5"), "{e}");
    assert_eq!(printed["code"], 7);
    assert!(fake.calls.borrow().is_empty());
}

#[test]
fn add_appends_to_the_previous_result_of_the_chain() {
    let prev = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{ "name": "lo", "sandbox": "/run/netns/cni-1234" }],
        "ips": [{ "version": "4", "address": "127.0.0.1/8", "interface": 0 }],
        "dns": { "nameservers": ["10.96.0.10"] },
    });
    let fake = Fake::default().answer("/attach", attachment());
    let stdin = conf(
        "0.4.0",
        json!({ "prevResult": prev, "subnet": "10.32.64.0/18" }),
    );
    let out = ok(&fake, Command::Add, &stdin).unwrap();
    assert_eq!(fake.calls.borrow()[0].1["subnet"], "10.32.64.0/18");
    assert_eq!(out["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(out["interfaces"][0]["name"], "lo");
    assert_eq!(out["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(
        out["ips"][1],
        json!({ "address": "10.32.0.7/12", "interface": 2, "version": "4" })
    );
    assert_eq!(out["dns"]["nameservers"][0], "10.96.0.10");
}

#[test]
fn a_router_that_is_down_means_try_again_later() {
    let fake = Fake {
        down: true,
        ..Fake::default()
    };
    for command in [Command::Add, Command::Del] {
        let (e, printed) = fails(&fake, command, &conf("1.0.0", json!({})));
        assert_eq!(e.code, 11, "{command:?}");
        assert_eq!(printed["code"], 11);
        assert_eq!(printed["cniVersion"], "1.0.0");
        assert!(e.details.contains("weft launch"), "{}", e.details);
    }
    let (e, _) = fails(&fake, Command::Status, &conf("1.1.0", json!({})));
    assert_eq!(e.code, 50);
}

#[test]
fn status_says_when_the_range_is_used_up() {
    let full = json!({ "state": "ready", "range": "10.32.0.0/12",
        "peers": [{ "free": 0 }, { "free": 0 }] });
    let fake = Fake::default().answer("/ipam", full);
    let (e, _) = fails(&fake, Command::Status, &conf("1.1.0", json!({})));
    assert_eq!(e.code, 51);
    assert!(e.details.contains("10.32.0.0/12"), "{}", e.details);
    let room = json!({ "state": "ready", "peers": [{ "free": 0 }, { "free": 12 }] });
    let fake = Fake::default().answer("/ipam", room);
    assert_eq!(ok(&fake, Command::Status, &conf("1.1.0", json!({}))), None);
    // Before the first division nothing is free yet, and that is fine.
    let fresh =
        json!({ "state": "awaiting consensus among 3 initial peers", "peers": [{ "free": 0 }] });
    let fake = Fake::default().answer("/ipam", fresh);
    assert_eq!(ok(&fake, Command::Status, &conf("1.1.0", json!({}))), None);
}

#[test]
fn ipam_out_of_space_is_try_again_later_and_a_bad_netns_unknown_container() {
    let fake = Fake::default().refuse("/attach", 503, "no free addresses in 10.32.0.0/12");
    let (e, _) = fails(&fake, Command::Add, &conf("1.0.0", json!({})));
    assert_eq!(e.code, 11);
    let fake = Fake::default().refuse("/attach", 404, "no such namespace");
    let (e, _) = fails(&fake, Command::Add, &conf("1.0.0", json!({})));
    assert_eq!(e.code, 3);
}

#[test]
fn del_is_idempotent_and_needs_no_namespace() {
    let fake = Fake::default();
    let mut env = env(Command::Del);
    env.netns = None;
    for _ in 0..2 {
        let out = run(&env, &conf("1.0.0", json!({})), |_| &fake).unwrap();
        assert_eq!(out, None);
    }
    let calls = fake.calls.borrow();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].1,
        json!({ "id": "cni:weftnet:c0ffee:eth0", "missing_ok": true })
    );
}

#[test]
fn check_compares_the_previous_result_with_the_container() {
    let prev = |addr: &str| {
        json!({ "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "vweft1" }, { "name": "eth0", "sandbox": "/run/netns/cni-1234" }],
            "ips": [{ "address": addr, "interface": 1 }],
        }})
    };
    let fake = Fake::default().answer("/attach/check", attachment());
    assert_eq!(
        ok(&fake, Command::Check, &conf("1.0.0", prev("10.32.0.7/12"))),
        None
    );
    let (e, _) = fails(&fake, Command::Check, &conf("1.0.0", prev("10.32.0.9/12")));
    assert_eq!(e.code, 100);
    assert!(e.details.contains("10.32.0.9/12"), "{}", e.details);
    let fake = Fake::default().refuse("/attach/check", 422, "eth0 lost its address");
    let (e, _) = fails(&fake, Command::Check, &conf("1.0.0", prev("10.32.0.7/12")));
    assert_eq!(e.code, 100);
    // prevResult without weft's interface in this container.
    let other_netns = json!({ "prevResult": {
        "cniVersion": "1.0.0",
        "interfaces": [{ "name": "eth0", "sandbox": "/run/netns/elsewhere" }],
        "ips": [{ "address": "10.32.0.7/12", "interface": 0 }],
    }});
    let (e, _) = fails(&fake, Command::Check, &conf("1.0.0", other_netns));
    assert_eq!(e.code, 100);
    assert!(e.details.contains("no interface eth0"), "{}", e.details);
    let fake = Fake::default().refuse("/attach/check", 404, "not attached");
    let (e, _) = fails(&fake, Command::Check, &conf("1.0.0", prev("10.32.0.7/12")));
    assert_eq!(e.code, 3);
}

#[test]
fn gc_removes_only_this_networks_attachments_the_runtime_no_longer_has() {
    let fake = Fake::default()
        .answer(
            "/ps",
            json!([
                { "id": "cni:weftnet:keep:eth0" },
                { "id": "cni:weftnet:gone:eth0" },
                { "id": "cni:weftnet2:gone:eth0" },
                { "id": "tb-h1c1" },
            ]),
        )
        .answer(
            "/ipam",
            json!({ "containers": {
                "cni:weftnet:keep:eth0": ["10.32.0.1"],
                "cni:weftnet:leaked:eth0": ["10.32.0.2"],
                "attach:tb-h1c1": ["10.32.0.3"],
            }}),
        );
    let valid =
        json!({ "cni.dev/valid-attachments": [{ "containerID": "keep", "ifname": "eth0" }] });
    assert_eq!(ok(&fake, Command::Gc, &conf("1.1.0", valid)), None);
    let detached: Vec<Value> = fake
        .calls
        .borrow()
        .iter()
        .filter(|(p, _)| p == "/detach")
        .map(|(_, b)| b["id"].clone())
        .collect();
    assert_eq!(
        detached,
        vec![
            json!("cni:weftnet:gone:eth0"),
            json!("cni:weftnet:leaked:eth0")
        ]
    );
}

#[test]
fn gc_goes_on_after_a_failure_and_reports_it() {
    let fake = Fake::default()
        .answer(
            "/ps",
            json!([{ "id": "cni:weftnet:a:eth0" }, { "id": "cni:weftnet:b:eth0" }]),
        )
        .answer("/ipam", json!({ "containers": {} }))
        .refuse("/detach", 500, "netlink: busy");
    let (e, _) = fails(&fake, Command::Gc, &conf("1.1.0", json!({})));
    assert!(e.details.contains("and 1 more"), "{}", e.details);
    let tried = fake
        .calls
        .borrow()
        .iter()
        .filter(|(p, _)| p == "/detach")
        .count();
    assert_eq!(tried, 2, "both stale attachments tried");
}

#[test]
fn versions_are_negotiated() {
    let fake = Fake::default();
    let out = ok(&fake, Command::Version, br#"{"cniVersion": "0.4.0"}"#).unwrap();
    assert_eq!(out["cniVersion"], "0.4.0");
    assert!(
        out["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.1.0"))
    );
    let (e, printed) = fails(&fake, Command::Add, &conf("2.0.0", json!({})));
    assert_eq!(e.code, 1);
    assert_eq!(
        printed["cniVersion"], "1.1.0",
        "an unsupported version is not echoed back as if spoken"
    );
    let out = ok(&fake, Command::Version, br#"{"cniVersion": "9.9.9"}"#).unwrap();
    assert_eq!(out["cniVersion"], "1.1.0");
    let (e, _) = fails(&fake, Command::Gc, &conf("1.0.0", json!({})));
    assert_eq!(e.code, 1, "GC is CNI 1.1");
    let (e, _) = fails(&fake, Command::Check, &conf("0.3.1", json!({})));
    assert_eq!(e.code, 1, "CHECK is CNI 0.4");
    assert!(
        fake.calls.borrow().is_empty(),
        "refused before asking the router"
    );
}

#[test]
fn bad_configuration_and_environment_are_told_apart() {
    let fake = Fake::default();
    let (e, _) = fails(&fake, Command::Add, b"{not json");
    assert_eq!(e.code, 6);
    let ipam = json!({ "ipam": { "type": "host-local" } });
    let (e, _) = fails(&fake, Command::Add, &conf("1.0.0", ipam));
    assert_eq!(e.code, 2);
    assert!(e.msg.contains("ipam.type = \"host-local\""), "{}", e.msg);
    assert!(e.details.contains("remove the \"ipam\" section"));
    let mut no_netns = env(Command::Add);
    no_netns.netns = None;
    let (e, _) = run(&no_netns, &conf("1.0.0", json!({})), |_| &fake).unwrap_err();
    assert_eq!(e.code, 4);
    let e = Env::from_vars(|_| None).unwrap_err();
    assert_eq!(e.code, 4);
    let e = Env::from_vars(|k| (k == "CNI_COMMAND").then(|| "FROB".into())).unwrap_err();
    assert!(e.msg.contains("FROB"));
    for bad in ["an-interface-name-too-long", "eth/0", "eth 0", "..", "a:b"] {
        let e = Env::from_vars(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_IFNAME" => Some(bad.into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(e.code, 4, "{bad:?}: {e}");
    }
}
