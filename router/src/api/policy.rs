//! The policy routes: `POST /policy/apply` (the documents as the body),
//! `/policy/delete`, `/policy/check`, `GET /policy/list` and
//! `/status/policy`; and checking the labels `weft attach` gives.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes};
use serde::Deserialize;
use weft_policy::{
    Protocol,
    compile::{Direction, Peers, Ports},
    model::{DEFAULT_NAMESPACE, check_port_name, parse_documents},
    selector::{check_key, check_value},
};

use super::{Api, text};
use crate::{
    daemon::router::{PolicyStatus, Request},
    policy::{
        ClusterHandle, EndpointBody, Known, PolicyRequest, parse_port, parse_protocol,
        records::PolicyRecords,
    },
};

type Answer<T> = Result<T, Response<Full<Bytes>>>;

/// What the API reads of policy.
#[derive(Clone)]
pub struct PolicyAccess {
    pub records: PolicyRecords,
    /// With `--kubernetes`, where policies and labels come from instead.
    pub cluster: Option<ClusterHandle>,
    pub status: Arc<Mutex<PolicyStatus>>,
}

#[derive(Deserialize)]
struct DeleteBody {
    names: Vec<String>,
}

#[derive(Deserialize)]
struct NamespaceBody {
    name: String,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
struct CheckBody {
    from: String,
    to: String,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

fn bad(message: impl Into<String>) -> Response<Full<Bytes>> {
    text(StatusCode::BAD_REQUEST, message.into() + "\n")
}

/// `NAME` (in the default namespace) or `NAMESPACE/NAME`.
fn policy_id(given: &str) -> String {
    if given.contains('/') {
        given.to_string()
    } else {
        format!("{DEFAULT_NAMESPACE}/{given}")
    }
}

/// The endpoint record `weft attach --namespace/--label/--port` asks for,
/// checked before anything is attached.
pub fn endpoint_of(
    namespace: Option<&str>,
    labels: &[String],
    ports: &[String],
) -> Result<EndpointBody, String> {
    let mut body = EndpointBody::new(None);
    if let Some(ns) = namespace {
        check_value(ns, "--namespace").map_err(|e| e.to_string())?;
        if ns.is_empty() {
            return Err("--namespace: give a name".into());
        }
        body.namespace = ns.to_string();
    }
    for label in labels {
        let (k, v) = label
            .split_once('=')
            .ok_or_else(|| format!("--label {label:?}: write it KEY=VALUE"))?;
        check_key(k, "--label").map_err(|e| e.to_string())?;
        check_value(v, "--label").map_err(|e| e.to_string())?;
        body.labels.insert(k.to_string(), v.to_string());
    }
    for port in ports {
        let (name, spec) = port.split_once('=').ok_or_else(|| {
            format!("--port {port:?}: write it NAME=PORT[/PROTOCOL], like http=80/tcp")
        })?;
        check_port_name(name, "--port").map_err(|e| e.to_string())?;
        parse_port(spec).map_err(|e| format!("--port {port:?}: {e}"))?;
        body.ports
            .insert(name.to_string(), spec.to_ascii_lowercase());
    }
    Ok(body)
}

impl Api {
    async fn policy_access(&self) -> Answer<&PolicyAccess> {
        self.policy
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no policy here\n"))
    }

    /// Sets the endpoint record of `owner` (or removes it).
    pub(super) async fn set_endpoint(&self, owner: String, body: Option<EndpointBody>) {
        let _ = self
            .router
            .send(Request::Policy(PolicyRequest::Endpoint { owner, body }))
            .await;
    }

    pub(super) async fn policy(&self, path: &str, body: &Bytes) -> Answer<Response<Full<Bytes>>> {
        let access = self.policy_access().await?.clone();
        if access.cluster.is_some() && path != "/policy/check" {
            return Err(text(
                StatusCode::CONFLICT,
                "this router takes NetworkPolicies and labels from the Kubernetes API server (--kubernetes): use kubectl apply -f FILE, kubectl delete networkpolicy NAME or kubectl label namespace NAME K=V\n",
            ));
        }
        match path {
            "/policy/apply" => {
                let text_in =
                    std::str::from_utf8(body).map_err(|_| bad("the documents are not UTF-8"))?;
                // All checked first: one bad document changes nothing.
                let objects = parse_documents(text_in).map_err(|e| bad(e.to_string()))?;
                let changed = self
                    .ask(|reply| Request::Policy(PolicyRequest::Apply { objects, reply }))
                    .await?;
                let lines: String = changed
                    .iter()
                    .map(|(id, changed)| {
                        format!(
                            "{id} {}\n",
                            if *changed { "configured" } else { "unchanged" }
                        )
                    })
                    .collect();
                Ok(text(StatusCode::OK, lines))
            }
            "/policy/delete" => {
                let b: DeleteBody = serde_json::from_slice(body)
                    .map_err(|e| bad(format!("expected {{\"names\": [\"ns/name\", ...]}}: {e}")))?;
                let ids: Vec<String> = b.names.iter().map(|n| policy_id(n)).collect();
                let missing = self
                    .ask(|reply| {
                        Request::Policy(PolicyRequest::Delete {
                            ids: ids.clone(),
                            reply,
                        })
                    })
                    .await?;
                if !missing.is_empty() {
                    return Err(text(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no policy {} (see weft policy list); the others given were deleted\n",
                            missing.join(", ")
                        ),
                    ));
                }
                Ok(text(
                    StatusCode::OK,
                    ids.iter()
                        .map(|i| format!("{i} deleted\n"))
                        .collect::<String>(),
                ))
            }
            "/policy/namespace" => {
                let b: NamespaceBody = serde_json::from_slice(body).map_err(|e| {
                    bad(format!(
                        "expected {{\"name\": \"ns\", \"labels\": [\"k=v\"]}}: {e}"
                    ))
                })?;
                // Checked as `weft attach` checks a container's.
                let checked = endpoint_of(Some(&b.name), &b.labels, &[]).map_err(bad)?;
                let name = b.name.clone();
                let changed = self
                    .ask(|reply| {
                        Request::Policy(PolicyRequest::Namespace {
                            name,
                            labels: checked.labels,
                            reply,
                        })
                    })
                    .await?;
                Ok(text(
                    StatusCode::OK,
                    format!(
                        "namespace {} {}\n",
                        b.name,
                        if changed { "labelled" } else { "unchanged" }
                    ),
                ))
            }
            "/policy/check" => {
                let b: CheckBody = serde_json::from_slice(body).map_err(|e| {
                    bad(format!(
                        "expected {{\"from\": ..., \"to\": ..., \"port\": 80, \"protocol\": \"tcp\"}}: {e}"
                    ))
                })?;
                let protocol =
                    parse_protocol(b.protocol.as_deref().unwrap_or("tcp")).map_err(bad)?;
                let known = Known::current(&access.records.lock(), access.cluster.as_ref());
                let unknown = |t: &str| {
                    bad(format!(
                        "{t:?} is neither an address nor a container the mesh knows (see weft status policy)"
                    ))
                };
                let from = known.resolve(&b.from).ok_or_else(|| unknown(&b.from))?;
                let to = known.resolve(&b.to).ok_or_else(|| unknown(&b.to))?;
                let verdict = known.plan_everywhere().verdict(from, to, protocol, b.port);
                let mut out = format!(
                    "{} {from} -> {to} {}/{}\n",
                    if verdict.allowed { "allowed" } else { "denied" },
                    protocol.nft(),
                    b.port
                );
                for r in &verdict.reasons {
                    out.push_str(&format!("  {r}\n"));
                }
                Ok(text(StatusCode::OK, out))
            }
            _ => Err(text(StatusCode::NOT_FOUND, "no such route\n")),
        }
    }

    pub(super) async fn policy_list(&self) -> Answer<Response<Full<Bytes>>> {
        let access = self.policy_access().await?;
        let known = Known::current(&access.records.lock(), access.cluster.as_ref());
        let everywhere = known.plan_everywhere();
        let mut out = format!(
            "{:<32} {:<9} {:<9} {}\n",
            "POLICY", "INGRESS", "EGRESS", "SELECTS"
        );
        for p in &known.policies {
            let id = p.id();
            let selects = everywhere
                .pods
                .iter()
                .filter(|pod| {
                    [&pod.ingress, &pod.egress]
                        .into_iter()
                        .flatten()
                        .any(|d| d.isolated_by.contains(&id))
                })
                .count();
            let rules = |r: &Option<Vec<weft_policy::model::Rule>>| match r {
                None => "-".to_string(),
                Some(r) => format!("{} rule(s)", r.len()),
            };
            out.push_str(&format!(
                "{id:<32} {:<9} {:<9} {selects} container(s)\n",
                rules(&p.ingress),
                rules(&p.egress)
            ));
        }
        for problem in &known.problems {
            out.push_str(&format!("! {problem}\n"));
        }
        Ok(text(StatusCode::OK, out))
    }

    /// The policy counters of weft's table, named by policy and container.
    pub(super) async fn policy_metrics(&self, m: &mut crate::daemon::router::Metrics) {
        let Some(access) = &self.policy else { return };
        let plan = access
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan
            .clone();
        if plan.pods.is_empty() {
            return;
        }
        let counts = crate::firewall::counters().await.unwrap_or_default();
        m.policy_allowed = plan
            .policies
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                Some((
                    id.clone(),
                    *counts.get(&weft_policy::nft::allow_counter(i))?,
                ))
            })
            .collect();
        for (i, pod) in plan.pods.iter().enumerate() {
            for (egress, direction) in [(false, "ingress"), (true, "egress")] {
                if let Some(n) = counts.get(&weft_policy::nft::drop_counter(i, egress)) {
                    m.policy_dropped
                        .push(((pod.endpoint.name.clone(), direction), *n));
                }
            }
        }
    }

    pub(super) async fn policy_status(&self) -> Answer<Response<Full<Bytes>>> {
        let access = self.policy_access().await?;
        let status = access
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let drops = crate::firewall::counters().await.unwrap_or_default();
        Ok(text(StatusCode::OK, status_text(&status, &drops)))
    }
}

/// `weft status policy`: what applies to each container of this host.
pub fn status_text(status: &PolicyStatus, counters: &BTreeMap<String, u64>) -> String {
    let mut out = format!(
        "{} policies, {} containers known in the mesh; {} of this host's isolated\n",
        status.policies,
        status.endpoints,
        status.plan.pods.len()
    );
    if let Some(e) = &status.bridge_error {
        out.push_str(&format!(
            "! NOT ENFORCED between this host's containers: {e}\n"
        ));
    }
    for p in &status.problems {
        out.push_str(&format!("! {p}\n"));
    }
    for (i, pod) in status.plan.pods.iter().enumerate() {
        out.push_str(&format!("{} {}\n", pod.endpoint.name, pod.endpoint.addr));
        for (egress, d) in [(false, &pod.ingress), (true, &pod.egress)] {
            let what = if egress { "egress" } else { "ingress" };
            let Some(d) = d else {
                out.push_str(&format!("  {what}: not isolated\n"));
                continue;
            };
            let dropped = counters
                .get(&weft_policy::nft::drop_counter(i, egress))
                .copied()
                .unwrap_or(0);
            out.push_str(&format!(
                "  {what}: isolated by {}; {} dropped\n",
                d.isolated_by.join(", "),
                dropped
            ));
            describe(&mut out, d);
        }
    }
    out
}

fn describe(out: &mut String, d: &Direction) {
    if d.allows.is_empty() {
        out.push_str("    allows nothing\n");
    }
    for a in &d.allows {
        let peers = match &a.peers {
            Peers::Any => "anyone".to_string(),
            Peers::Some { addrs, blocks } => {
                let mut parts: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                parts.extend(blocks.iter().map(|(c, e)| {
                    if e.is_empty() {
                        c.to_string()
                    } else {
                        let e: Vec<String> = e.iter().map(|n| n.to_string()).collect();
                        format!("{c} except {}", e.join(" "))
                    }
                }));
                parts.join(", ")
            }
        };
        let ports = match &a.ports {
            Ports::Any => "any port".to_string(),
            Ports::Some(by) => by
                .iter()
                .map(|(p, r): (&Protocol, _)| match r {
                    None => format!("{}/any", p.nft()),
                    Some(r) => r
                        .iter()
                        .map(|(a, b)| {
                            if a == b {
                                format!("{}/{a}", p.nft())
                            } else {
                                format!("{}/{a}-{b}", p.nft())
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                })
                .collect::<Vec<_>>()
                .join(" "),
        };
        out.push_str(&format!("    allows {peers} on {ports} ({})\n", a.policy));
    }
}
