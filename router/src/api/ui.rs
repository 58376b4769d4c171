//! The web page (`weft ui`): the mesh at a glance and its controls,
//! served by the router from files built into the binary, with nothing
//! fetched from anywhere else. The page reads the API as any client does
//! (`/report`, `/containers`, `/ipam`, `/flows`) and changes it only with
//! the token, which reaches it in the address's fragment (never sent to
//! a server, and taken out of the address bar at once).
//!
//! `GET /containers` is here too: this host's containers with what the
//! page shows of each (addresses, names, labels, the policies that
//! select them, conditions).

use std::{collections::BTreeMap, net::IpAddr};

use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes, header};
use serde::Serialize;
use weft_condition::Conditions;

use super::{Api, json_of, text};

type Answer = Result<Response<Full<Bytes>>, Response<Full<Bytes>>>;

/// The page's files: path, type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/ui",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "/ui/util.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/util.js"),
    ),
    (
        "/ui/graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/graph.js"),
    ),
    (
        "/ui/controls.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/controls.js"),
    ),
    (
        "/ui/style.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/style.css"),
    ),
];

/// What every answer over TCP carries, the page's above all: scripts,
/// styles and requests from this origin only, no frames, no forms, no
/// caching, no sniffing.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// One of the page's files, if `path` names one.
pub fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let (_, kind, body) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    Some(
        Response::builder()
            .header(header::CONTENT_TYPE, *kind)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("valid response"),
    )
}

/// The policies that isolate a container, per direction; `None`: that
/// direction is not isolated.
#[derive(Serialize, Default)]
struct Isolation {
    ingress: Option<Vec<String>>,
    egress: Option<Vec<String>>,
}

/// One local container as the page shows it.
#[derive(Serialize)]
struct ContainerView {
    id: String,
    addresses: Vec<String>,
    mac: String,
    names: Vec<String>,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    policy: Isolation,
    conditions: Conditions,
    /// `kernel` or `conditioner`; none when clean.
    conditioned_by: Option<&'static str>,
}

impl Api {
    /// The address the page opens at, with the token in its fragment;
    /// asked over the unix socket only (the token is root's).
    pub(super) fn ui_url(&self) -> Response<Full<Bytes>> {
        let Some(addr) = self.http else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "this router serves no TCP API (--http-addr)\n",
            );
        };
        let host = match addr.ip() {
            ip if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            ip => ip,
        };
        let at = std::net::SocketAddr::new(host, addr.port());
        text(
            StatusCode::OK,
            format!("http://{at}/ui#token={}\n", self.token),
        )
    }

    /// `GET /containers`.
    pub(super) async fn containers(&self) -> Answer {
        let network = self
            .network
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))?;
        let attachments = network.registry.lock().await.list();
        // Conditions only: the page polls, and a port's counters take a
        // round trip to its thread.
        let mut conditioned = network.conditioning.stored().await;
        let (endpoints, plan) = match &self.policy {
            Some(access) => {
                let records = access.records.lock();
                let endpoints: Vec<crate::policy::EndpointBody> = records
                    .endpoints()
                    .into_iter()
                    .filter_map(|(_, _, body)| serde_json::from_str(body).ok())
                    .collect();
                let plan = access
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .plan
                    .clone();
                (endpoints, plan)
            }
            None => Default::default(),
        };
        let mut views = Vec::with_capacity(attachments.len());
        for a in attachments {
            let v4: Vec<std::net::Ipv4Addr> = a
                .addresses
                .iter()
                .filter_map(|n| match n.addr() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
                .collect();
            let names = match &self.names {
                Some(service) => {
                    let names = service.names.lock();
                    v4.iter()
                        .flat_map(|addr| names.reverse(*addr))
                        .map(|n| n.to_string().trim_end_matches('.').to_string())
                        .collect()
                }
                None => Vec::new(),
            };
            let endpoint = endpoints
                .iter()
                .find(|e| e.addr.is_some_and(|addr| v4.contains(&addr)));
            let mut policy = Isolation::default();
            if let Some(pod) = plan.pods.iter().find(|p| v4.contains(&p.endpoint.addr)) {
                policy.ingress = pod.ingress.as_ref().map(|d| d.isolated_by.clone());
                policy.egress = pod.egress.as_ref().map(|d| d.isolated_by.clone());
            }
            let (conditions, conditioned_by) = conditioned
                .remove(&a.id)
                .map_or((Conditions::default(), None), |(c, by)| (c, Some(by)));
            views.push(ContainerView {
                addresses: a.addresses.iter().map(|n| n.to_string()).collect(),
                mac: a.mac.clone(),
                names,
                namespace: endpoint.map(|e| e.namespace.clone()),
                labels: endpoint.map(|e| e.labels.clone()).unwrap_or_default(),
                policy,
                conditions,
                conditioned_by,
                id: a.id,
            });
        }
        Ok(json_of(&views))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_s_files_are_built_in_and_refer_only_to_each_other() {
        let page = ASSETS[0].2;
        for (path, _, body) in ASSETS {
            assert!(asset(path).is_some());
            assert!(!body.is_empty(), "{path}");
            // Nothing from elsewhere: no scheme-qualified or protocol-
            // relative references (SVG's namespace is a name, never
            // fetched), no inline code or handlers the policy forbids.
            let body = body.replace("'http://www.w3.org/2000/svg'", "");
            for bad in [
                "http://",
                "https://",
                "src=\"//",
                "href=\"//",
                " onclick=",
                " onload=",
                "<script>",
                "import(",
            ] {
                assert!(!body.contains(bad), "{path} contains {bad:?}");
            }
        }
        for (path, _, _) in &ASSETS[1..] {
            let name = path.trim_start_matches("/ui/");
            let referred = page.contains(&format!("/ui/{name}"))
                || ASSETS
                    .iter()
                    .any(|(_, _, b)| b.contains(&format!("./{name}")));
            assert!(referred, "{path} is served but nothing loads it");
        }
        assert!(asset("/ui/../Cargo.toml").is_none());
    }
}
