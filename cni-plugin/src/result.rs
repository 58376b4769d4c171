//! The result of ADD: what weft made, appended to what earlier plugins
//! of the chain made (`prevResult`), in the configuration's version.

use std::path::Path;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::config::{NetConf, version_key};

/// What the router reports about an attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub host_interface: String,
    pub container_interface: String,
    pub mac: String,
    pub addresses: Vec<IpNet>,
    /// The host's gateway, the container's default route.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// The router's DNS for the container (`nameservers`, `search`), when
    /// it serves names.
    pub dns: Option<Value>,
}

/// The result for `conf`, with weft's interfaces after any the chain
/// reported before.
pub fn build(conf: &NetConf, netns: &Path, a: &Attached) -> Value {
    let mut result = conf
        .prev_result
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    result["cniVersion"] = json!(conf.cni_version);
    let interfaces = list(&mut result, "interfaces");
    interfaces.push(json!({ "name": a.host_interface }));
    let index = interfaces.len();
    interfaces.push(json!({
        "name": a.container_interface,
        "mac": a.mac,
        "sandbox": netns.display().to_string(),
    }));
    let legacy = version_key(&conf.cni_version) < version_key("1.0.0");
    let ips = list(&mut result, "ips");
    for net in &a.addresses {
        let mut ip = json!({ "address": net.to_string(), "interface": index });
        if legacy {
            ip["version"] = json!(if net.addr().is_ipv4() { "4" } else { "6" });
        }
        if let (Some(gw), true) = (a.gateway, net.addr().is_ipv4()) {
            ip["gateway"] = json!(gw.to_string());
        }
        ips.push(ip);
    }
    // The routes weft adds, so the runtime knows of them: multicast to the
    // overlay, and everything else to the host's gateway (the range stays
    // on-link).
    let routes = list(&mut result, "routes");
    routes.push(json!({ "dst": "224.0.0.0/4" }));
    if let Some(gw) = a.gateway {
        let on_link = a
            .addresses
            .iter()
            .any(|n| n.contains(&std::net::IpAddr::V4(gw)));
        if !on_link {
            routes.push(json!({ "dst": format!("{gw}/32") }));
        }
        routes.push(json!({ "dst": "0.0.0.0/0", "gw": gw.to_string() }));
    }
    // The configuration's own DNS first, then the router's, so that the
    // runtime points the container's resolver at the mesh's names.
    if let Some(dns) = conf.dns.as_ref().or(a.dns.as_ref()) {
        result["dns"] = dns.clone();
    } else if result.get("dns").is_none() {
        result["dns"] = json!({});
    }
    result
}

fn list<'a>(result: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !result[key].is_array() {
        result[key] = json!([]);
    }
    result[key].as_array_mut().expect("an array")
}

/// The indices of `prev`'s interfaces named `ifname` in sandbox `netns`.
fn container_interfaces(prev: &Value, ifname: &str, netns: &str) -> Vec<usize> {
    prev["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, i)| i["name"] == ifname && i["sandbox"] == netns)
        .map(|(n, _)| n)
        .collect()
}

/// Whether `prev` lists interface `ifname` in the container `netns`.
pub fn has_interface(prev: &Value, ifname: &str, netns: &str) -> bool {
    !container_interfaces(prev, ifname, netns).is_empty()
}

/// The addresses `prev` says interface `ifname` in `netns` has.
pub fn addresses_of(prev: &Value, ifname: &str, netns: &str) -> Vec<IpNet> {
    let ours = container_interfaces(prev, ifname, netns);
    prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ip| {
            ip["interface"]
                .as_u64()
                .is_some_and(|n| ours.contains(&(n as usize)))
        })
        .filter_map(|ip| ip["address"].as_str()?.parse().ok())
        .collect()
}
