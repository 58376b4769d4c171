//! The CNI commands, each a few calls to the router's API behind the
//! [`Router`] trait (tested against a fake router in memory).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::{
    config::{Command, Env, NEWEST, NetConf, SUPPORTED_VERSIONS},
    error::{CniError, code},
    result::{self, Attached},
};

/// The router's API, as the plugin needs it.
pub trait Router {
    fn get(&self, path: &str) -> Result<String, RouterError>;
    fn post(&self, path: &str, body: &Value) -> Result<String, RouterError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Nothing answers on the socket.
    #[error("{0}")]
    Down(String),
    #[error("the router answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{0}")]
    Other(String),
}

impl RouterError {
    /// The CNI error for a failed call: "try again later" for what time
    /// may mend (router down or busy, IPAM waiting for peers).
    fn cni(self, doing: &str) -> CniError {
        let c = match &self {
            RouterError::Down(_) => code::TRY_AGAIN_LATER,
            RouterError::Refused { status: 503, .. } => code::TRY_AGAIN_LATER,
            RouterError::Refused { status: 404, .. } => code::UNKNOWN_CONTAINER,
            RouterError::Refused { status: 400, .. } => code::INVALID_CONFIG,
            _ => code::IO_FAILURE,
        };
        let details = match &self {
            RouterError::Down(why) => format!(
                "{why}; start it with `weft launch`, or point \"socket\" in the CNI configuration at its API socket"
            ),
            other => other.to_string(),
        };
        CniError::new(c, format!("weft-cni cannot {doing}"), details)
    }
}

/// Runs one command. `Ok(Some(json))` is printed on stdout; errors carry
/// the version to print them in.
pub fn run<R: Router>(
    env: &Env,
    stdin: &[u8],
    connect: impl FnOnce(&NetConf) -> R,
) -> Result<Option<String>, (CniError, String)> {
    // The version to answer in: the runtime's if we speak it, else our
    // newest (never an unsupported one echoed back as if it were fine).
    let fallback = || {
        serde_json::from_slice::<Value>(stdin)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
            .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
            .unwrap_or_else(|| NEWEST.to_string())
    };
    if env.command == Command::Version {
        let version = fallback();
        return Ok(Some(
            json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS }).to_string(),
        ));
    }
    let conf = NetConf::parse(stdin).map_err(|e| (e, fallback()))?;
    let version = fallback();
    let outcome = conf
        .check_version(env.command)
        .and_then(|()| command(env, &conf, &connect(&conf)));
    outcome.map_err(|e| (e, version))
}

/// The attachment's name in the router: its IPAM owner and registry key.
/// CNI identifies an attachment by network, container and interface.
pub fn attachment_id(network: &str, container: &str, ifname: &str) -> String {
    format!("cni:{network}:{container}:{ifname}")
}

fn command(env: &Env, conf: &NetConf, router: &impl Router) -> Result<Option<String>, CniError> {
    let json_of = |text: String, doing: &str| -> Result<Value, CniError> {
        serde_json::from_str(&text).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                format!("weft-cni cannot {doing}"),
                format!("the router's answer is not JSON: {e}"),
            )
        })
    };
    let id = || -> Result<String, CniError> {
        let container = env.require("CNI_CONTAINERID", &env.container_id)?;
        let ifname = env.require("CNI_IFNAME", &env.ifname)?;
        Ok(attachment_id(&conf.name, container, ifname))
    };
    match env.command {
        Command::Version => unreachable!("answered before reading the configuration"),
        Command::Add => {
            let id = id()?;
            let netns = env.require_netns()?;
            let doing = "attach the container";
            let body = json!({
                "target": netns,
                "id": id,
                "interface": env.ifname,
                "subnet": conf.subnet,
                "claim": conf.runtime_config.static_ipv4()?,
                // A pod needs its host (services, DNS): the router exposes
                // itself if it has no gateway yet.
                "expose": true,
                // Registered where it is a valid name; a runtime's naming
                // rules are not DNS's, and a name must not fail the ADD.
                "runtime_names": env.pod_name.iter().collect::<Vec<_>>(),
                // Network policy's: the pod's namespace and labels.
                "namespace": env.pod_namespace,
                "labels": conf.labels(),
            });
            let answer = router.post("/attach", &body).map_err(|e| e.cni(doing))?;
            let a = attached(&json_of(answer, doing)?)?;
            Ok(Some(result::build(conf, netns, &a).to_string()))
        }
        Command::Del => {
            let body = json!({ "id": id()?, "missing_ok": true });
            router
                .post("/detach", &body)
                .map_err(|e| e.cni("detach the container"))?;
            Ok(None)
        }
        Command::Check => {
            let doing = "check the container";
            let ifname = env.require("CNI_IFNAME", &env.ifname)?;
            let netns = env.require_netns()?;
            let prev = conf.prev_result.as_ref().ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "CHECK needs prevResult",
                    "the runtime must pass the result of ADD",
                )
            })?;
            let netns = netns.display().to_string();
            if !result::has_interface(prev, ifname, &netns) {
                return Err(CniError::new(
                    code::ATTACHMENT_BROKEN,
                    "the attachment is broken",
                    format!("prevResult lists no interface {ifname} in {netns}"),
                ));
            }
            let answer = router
                .post("/attach/check", &json!({ "id": id()? }))
                .map_err(|e| match e {
                    RouterError::Refused { status: 422, body } => {
                        CniError::new(code::ATTACHMENT_BROKEN, "the attachment is broken", body)
                    }
                    e => e.cni(doing),
                })?;
            let a = attached(&json_of(answer, doing)?)?;
            let expected = result::addresses_of(prev, ifname, &netns);
            if let Some(missing) = expected.iter().find(|x| !a.addresses.contains(x)) {
                return Err(CniError::new(
                    code::ATTACHMENT_BROKEN,
                    "the attachment is broken",
                    format!("{ifname} does not have {missing}, which ADD gave it"),
                ));
            }
            Ok(None)
        }
        Command::Status => {
            let doing = "reach the weft router";
            let unavailable = |e: RouterError| {
                let mut e = e.cni(doing);
                e.code = code::NOT_AVAILABLE;
                e
            };
            let ipam = json_of(router.get("/ipam").map_err(unavailable)?, doing)?;
            // Free addresses anywhere in the mesh (this router asks its
            // peers for space); none at all and ADD cannot succeed. Before
            // the range is first divided there is nothing to count yet.
            let peers = ipam["peers"].as_array().cloned().unwrap_or_default();
            let free: u64 = peers.iter().filter_map(|p| p["free"].as_u64()).sum();
            if ipam["state"] == "ready" && free == 0 {
                return Err(CniError::new(
                    code::NO_ADDRESSES,
                    "weft's IPAM has no free addresses",
                    format!(
                        "every address of {} is in use; release some, or widen --ipalloc-range on every router",
                        ipam["range"].as_str().unwrap_or("the range")
                    ),
                ));
            }
            Ok(None)
        }
        Command::Gc => {
            let doing = "collect garbage";
            let prefix = attachment_id(&conf.name, "", "");
            let prefix = prefix.trim_end_matches(':');
            let valid: BTreeSet<String> = conf
                .valid_attachments
                .iter()
                .flatten()
                .map(|v| attachment_id(&conf.name, &v.container_id, &v.ifname))
                .collect();
            let mut known = BTreeSet::new();
            let ps = json_of(router.get("/ps").map_err(|e| e.cni(doing))?, doing)?;
            known.extend(
                ps.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["id"].as_str().map(str::to_string)),
            );
            let ipam = json_of(router.get("/ipam").map_err(|e| e.cni(doing))?, doing)?;
            known.extend(
                ipam["containers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k.clone()),
            );
            // Remove as much as possible, then report what failed.
            let mut failed = Vec::new();
            for stale in known
                .iter()
                .filter(|k| k.starts_with(prefix) && k[prefix.len()..].starts_with(':'))
                .filter(|k| !valid.contains(*k))
            {
                if let Err(e) = router.post("/detach", &json!({ "id": stale, "missing_ok": true }))
                {
                    failed.push(e.cni(doing));
                }
            }
            match failed.len() {
                0 => Ok(None),
                n => {
                    let mut first = failed.swap_remove(0);
                    if n > 1 {
                        first.details = format!("{} (and {} more)", first.details, n - 1);
                    }
                    Err(first)
                }
            }
        }
    }
}

/// Reads the router's attachment.
fn attached(a: &Value) -> Result<Attached, CniError> {
    let field = |k: &str| a[k].as_str().unwrap_or_default().to_string();
    let addresses = a["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str()?.parse().ok())
        .collect();
    let out = Attached {
        host_interface: field("interface"),
        container_interface: field("container_interface"),
        mac: field("mac"),
        addresses,
        gateway: a["gateway"].as_str().and_then(|g| g.parse().ok()),
        dns: a.get("dns").filter(|d| d.is_object()).cloned(),
    };
    if out.host_interface.is_empty() || out.container_interface.is_empty() {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            "the router's answer lacks the interfaces",
            a.to_string(),
        ));
    }
    Ok(out)
}
