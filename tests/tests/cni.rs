//! The `weft-cni` binary against a real router, run the way a runtime runs
//! it: ADD, CHECK, a second ADD's chaining input, DEL twice, GC, STATUS,
//! and the error a runtime sees when the router is down.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::{Value, json};
use testbed::{Spec, Testbed, workspace_bin};

/// Runs the plugin; returns its exit success and stdout as JSON (or Null).
fn cni(command: &str, netns: &str, container: &str, conf: &Value) -> (bool, Value) {
    let mut child = Command::new(workspace_bin("weft-cni").unwrap())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), value)
}

#[test]
fn the_plugin_adds_checks_deletes_and_collects_garbage_through_the_router() {
    let tb = Testbed::create_owned("cni", Spec::hosts(1).containers(2)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "testnet", "type": "weft-cni",
        "socket": h1.run_dir.join("weft.sock"),
    });
    let (ns1, ns2) = (tb.container(1, 1), tb.container(1, 2));
    let path = |n: &testbed::Netns| n.path().display().to_string();

    let (ok, result) = cni("ADD", &path(&ns1), "c1", &conf);
    assert!(ok, "{result}");
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    let inside = ns1.ip(["-4", "-o", "addr", "show", "eth0"]).unwrap();
    assert!(inside.contains(&address), "{inside} has {address}");

    // CHECK with the result as prevResult, as a runtime sends it.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = result.clone();
    let (ok, out) = cni("CHECK", &path(&ns1), "c1", &with_prev);
    assert!(ok, "{out}");
    // The address removed behind weft's back: CHECK says so.
    ns1.ip(["addr", "del", &address, "dev", "eth0"]).unwrap();
    let (ok, out) = cni("CHECK", &path(&ns1), "c1", &with_prev);
    assert!(!ok);
    assert_eq!(out["code"], 100, "{out}");
    assert!(out["details"].as_str().unwrap().contains(&address), "{out}");

    // DEL twice: both succeed, the address is free again.
    for _ in 0..2 {
        let (ok, out) = cni("DEL", "", "c1", &conf);
        assert!(ok, "{out}");
    }
    assert!(
        h1.ipam_holdings()
            .unwrap()
            .keys()
            .all(|id| !id.contains(":c1:")),
        "{:?}",
        h1.ipam_holdings()
    );
    assert!(ns1.ip(["link", "show", "eth0"]).is_err(), "eth0 removed");

    // GC keeps what the runtime lists and removes the rest.
    assert!(cni("ADD", &path(&ns1), "c1", &conf).0);
    assert!(cni("ADD", &path(&ns2), "c2", &conf).0);
    // ADD again for an interface the container has: refused, nothing
    // allocated.
    let before = h1.ipam_holdings().unwrap().len();
    let (ok, out) = cni("ADD", &path(&ns2), "c2", &conf);
    assert!(!ok);
    assert!(
        out["details"]
            .as_str()
            .unwrap()
            .contains("already has an interface eth0"),
        "{out}"
    );
    assert_eq!(h1.ipam_holdings().unwrap().len(), before);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "c2", "ifname": "eth0" }]);
    let (ok, out) = cni("GC", "", "", &gc);
    assert!(ok, "{out}");
    let ids = h1.ipam_holdings().unwrap();
    assert!(ids.keys().any(|id| id.contains(":c2:")), "{ids:?}");
    assert!(ids.keys().all(|id| !id.contains(":c1:")), "{ids:?}");
    assert!(
        ns1.ip(["link", "show", "eth0"]).is_err(),
        "c1's eth0 collected"
    );

    // STATUS while up; with the router down, ADD is "try again later".
    assert!(cni("STATUS", "", "", &conf).0);
    h1.run(&["stop"]).unwrap();
    let (ok, out) = cni("STATUS", "", "", &conf);
    assert!(!ok);
    assert_eq!(out["code"], 50, "{out}");
    let (ok, out) = cni("ADD", &path(&ns1), "c3", &conf);
    assert!(!ok);
    assert_eq!(out["code"], 11, "{out}");
    assert!(
        out["details"].as_str().unwrap().contains("weft launch"),
        "{out}"
    );
    tb.destroy().unwrap();
}

#[test]
fn add_gives_the_hosts_gateway_and_claims_static_addresses() {
    let tb = Testbed::create_owned("cnigw", Spec::hosts(1).containers(3)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let conf = json!({
        "cniVersion": "1.1.0", "name": "gwnet", "type": "weft-cni",
        "socket": h1.run_dir.join("weft.sock"),
    });
    let path = |n: &testbed::Netns| n.path().display().to_string();
    let ns1 = tb.container(1, 1);

    // The router had no gateway: ADD exposed it, and the result says so.
    let (ok, result) = cni("ADD", &path(&ns1), "c1", &conf);
    assert!(ok, "{result}");
    let gateway = result["ips"][0]["gateway"].as_str().unwrap().to_string();
    assert!(
        result["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({ "dst": "0.0.0.0/0", "gw": gateway })),
        "{result}"
    );
    let routes = ns1.ip(["-4", "route"]).unwrap();
    assert!(
        routes.contains(&format!("default via {gateway}")),
        "{routes}"
    );
    assert!(
        testbed::pings(&ns1, gateway.parse().unwrap()),
        "the container reaches its host"
    );
    let status = h1.run(&["status"]).unwrap();
    assert!(status.contains(&format!("Gateway: {gateway}/")), "{status}");

    // A static address (the ips capability): claimed in IPAM for c2.
    let mut fixed = conf.clone();
    fixed["runtimeConfig"] = json!({ "ips": ["10.32.9.9"] });
    let (ok, result) = cni("ADD", &path(&tb.container(1, 2)), "c2", &fixed);
    assert!(ok, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.32.9.9/12");
    let held = h1.ipam_holdings().unwrap();
    assert_eq!(held["cni:gwnet:c2:eth0"], vec!["10.32.9.9".to_string()]);
    // Nobody else gets it: not another container, not `weft ipam claim`.
    let ns3 = tb.container(1, 3);
    let (ok, out) = cni("ADD", &path(&ns3), "c3", &fixed);
    assert!(!ok);
    assert!(
        out["details"].as_str().unwrap().contains("10.32.9.9"),
        "{out}"
    );
    assert!(
        ns3.ip(["link", "show", "eth0"]).is_err(),
        "nothing attached"
    );
    let claim = h1
        .command(&["ipam", "claim", "other", "10.32.9.9"])
        .unwrap();
    assert!(!claim.status.success());
    tb.destroy().unwrap();
}
