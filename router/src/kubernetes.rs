//! Peer discovery on Kubernetes: which routers to connect to, from the API
//! server's node list, and whose IPAM space to take back once their node
//! has left the cluster.
//!
//! It owns reading the node list (`GET /api/v1/nodes`, as the pod's
//! service account, through kube-rs) and the decisions drawn from it. The
//! decisions ([`parse_nodes`], [`peer_addresses`], [`departed`], [`plan`])
//! are pure, so the tests run them on recorded API server answers;
//! [`InCluster`] is the only part that does I/O. Acting on a [`Plan`]
//! (connecting, removing peers from IPAM) is the router's business, not
//! this module's.

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{LengthLimitError, Limited};
use k8s_openapi::api::core::v1 as k8s;
use kube::{
    Api, Config,
    api::ListParams,
    client::{ClientBuilder, ConfigExt, DynBody},
    config::AuthInfo,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde::Deserialize;

use crate::identity::MAX_NICKNAME;

/// Where the kubelet mounts the pod's service account token and the
/// cluster's CA certificate.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Bounds connecting and each page's request and answer, so that a hung
/// API server delays discovery by one interval instead of stopping it for
/// good.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Nodes per page: a 5000-node cluster's list in one answer is tens of
/// megabytes (every node lists its images), which the API server and we
/// would both have to hold at once.
const PAGE_SIZE: u32 = 500;
/// Far above any real page of PAGE_SIZE nodes; a body larger than this is
/// not a node list, and reading it to the end would only cost memory.
const MAX_PAGE_BYTES: usize = 64 << 20;
/// 5000 nodes (Kubernetes' supported maximum) is 10 pages; a server that
/// keeps handing out continue tokens past this is looping.
const MAX_PAGES: usize = 1000;

/// What went wrong talking to the API server, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "not running in a Kubernetes pod: {0} is unset; drop --kubernetes and give peer addresses instead (weft router HOST...)"
    )]
    NotInPod(&'static str),
    #[error(
        "KUBERNETES_SERVICE_PORT={0:?} is not a port number; the kubelet sets it from the `kubernetes` Service in the default namespace: check that Service"
    )]
    BadPort(String),
    #[error(
        "cannot read the service account's {}: {source}; the pod needs its service account mounted: deploy/kubernetes/weft.yaml runs it as ServiceAccount weft (do not set automountServiceAccountToken: false)",
        path.display()
    )]
    ServiceAccount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the service account's {} is empty; delete the weft pod so that the kubelet mounts a fresh token",
        path.display()
    )]
    EmptyToken { path: PathBuf },
    #[error(
        "the service account token cannot be sent in an HTTP header (it holds a line break or another control character); delete the weft pod so that the kubelet mounts a fresh token"
    )]
    BadToken,
    #[error(
        "the API server's CA certificate (ca.crt of the service account) is unusable: {0}; the kubelet copies it from the kube-root-ca.crt ConfigMap: check that ConfigMap"
    )]
    Ca(String),
    #[error(
        "the API server refused ({message}); apply the ClusterRole and ClusterRoleBinding from deploy/kubernetes/weft.yaml: kubectl apply -f deploy/kubernetes/weft.yaml"
    )]
    Forbidden { message: String },
    #[error(
        "the API server did not accept the service account token ({message}); apply deploy/kubernetes/weft.yaml (it creates the ServiceAccount weft), then delete the weft pod so that it starts with a fresh token"
    )]
    Unauthorized { message: String },
    #[error(
        "the API server answered {code} {reason}: {message}; check its health with kubectl get --raw /readyz"
    )]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "the answer to GET /api/v1/nodes is not a NodeList ({0}); check that the API server address points at kube-apiserver, not at a proxy or another service"
    )]
    NotNodeList(String),
    #[error(
        "cannot reach the API server at {base}: {detail}; check that this node reaches the `kubernetes` Service (is kube-proxy running here? does a NetworkPolicy block it?)"
    )]
    Unreachable { base: String, detail: String },
}

/// A node of the cluster, as far as discovery cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Its first IPv4 InternalIP, else its first IPv4 ExternalIP: the
    /// address its router listens on (hostNetwork).
    pub internal_ip: Option<Ipv4Addr>,
    /// The Ready condition is "True". Discovery does not filter on it: a
    /// node is NotReady until its CNI plugin is installed, which is weft
    /// itself, and a NotReady node's router may well be up; connecting to
    /// a dead one only costs retries.
    pub ready: bool,
}

/// A peer that owns IPAM space, as `weft status ipam` lists it. Pass only
/// peers not already removed, or their removal is asked for again and again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownPeer {
    /// Its peer name (02:00:00:00:00:01), which `IpamRequest::RemovePeer`
    /// takes.
    pub name: String,
    pub nickname: String,
    pub reachable: bool,
}

/// What to do after one look at the node list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every other node's address: the whole set, so that a node that left
    /// is dropped when it is given as a replacement (`Request::Connect`
    /// with `replace`).
    pub connect: Vec<String>,
    /// Peer names whose space to take over (`IpamRequest::RemovePeer`).
    pub reclaim: Vec<String>,
}

/// The nodes in a `/api/v1/nodes` answer, or the API server's reason for
/// refusing (a `Status` object) as an error.
pub fn parse_nodes(body: &[u8]) -> Result<Vec<Node>, KubeError> {
    interpret(200, body)
}

/// The addresses of every node but `me` (this router's own node, from
/// NODE_NAME), sorted and without duplicates.
pub fn peer_addresses(nodes: &[Node], me: Option<&str>) -> Vec<String> {
    let mut addrs: Vec<Ipv4Addr> = nodes
        .iter()
        .filter(|n| Some(n.name.as_str()) != me)
        .filter_map(|n| n.internal_ip)
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs.iter().map(Ipv4Addr::to_string).collect()
}

/// The peers whose IPAM space should be taken back: their node is no
/// longer in the cluster and they cannot be reached. Sorted.
///
/// A reachable peer is never reclaimed, whatever the node list says: its
/// addresses are in use, and taking them would hand them out twice. Both
/// conditions together make a mistake need two failures at once.
///
/// This assumes every router of the mesh runs on a node of this cluster
/// (weft's nickname is the host name, which with hostNetwork is the node's
/// name): a router outside the cluster that is down for a moment would
/// lose its space.
pub fn departed(ipam_peers: &[KnownPeer], nodes: &[Node]) -> Vec<String> {
    // An empty node list is far more likely a broken answer (an API server
    // restored from an empty etcd, a proxy, a bug) than every node gone at
    // once, and acting on it would strip every unreachable peer at once.
    // The running router's own node is always in a true list, so a true
    // list is never empty.
    if nodes.is_empty() {
        return Vec::new();
    }
    let mut gone: Vec<String> = ipam_peers
        .iter()
        .filter(|p| !p.reachable)
        .filter(|p| !nodes.iter().any(|n| same_host(&p.nickname, &n.name)))
        .map(|p| p.name.clone())
        .collect();
    gone.sort_unstable();
    gone.dedup();
    gone
}

/// One reconcile step: whom to connect to and whose space to reclaim.
pub fn plan(nodes: &[Node], me: Option<&str>, known: &[KnownPeer]) -> Plan {
    Plan {
        connect: peer_addresses(nodes, me),
        reclaim: departed(known, nodes),
    }
}

/// Whether a router's nickname names this node. Generous on purpose, since
/// a false match only keeps space that `weft rmpeer` can still take, while
/// a miss takes a live router's space: the kubelet lowercases the host
/// name into the node name, weft cuts nicknames at MAX_NICKNAME characters,
/// and on clouds one side may be the FQDN and the other the short name.
fn same_host(nickname: &str, node: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .take(MAX_NICKNAME)
            .collect::<String>()
            .to_lowercase()
    };
    // An address's first label (10 of 10.0.1.12) names nothing.
    let short = |s: &str| -> String {
        if s.parse::<IpAddr>().is_ok() {
            return s.to_owned();
        }
        s.split('.').next().unwrap_or(s).to_owned()
    };
    let (a, b) = (norm(nickname), norm(node));
    a == b || short(&a) == short(&b)
}

/// The API server of the cluster this pod runs in, reached as the pod's
/// service account.
#[derive(Clone)]
pub struct InCluster {
    base: String,
    token: Token,
    ca_pem: Vec<u8>,
    /// The service account's ca.crt, which kube-rs reads again to follow a
    /// rotated CA; `None` for [`InCluster::new`].
    ca_file: Option<PathBuf>,
    /// [`MAX_PAGE_BYTES`], smaller in tests.
    max_page_bytes: usize,
}

/// Where the bearer token comes from.
#[derive(Clone)]
enum Token {
    /// Given once ([`InCluster::new`]).
    Fixed(String),
    /// The service account's token file. The kubelet rotates projected
    /// tokens, and an old one is eventually refused: every list builds its
    /// client anew, which reads the file then (and a client kept longer,
    /// such as a watcher's, re-reads it every minute).
    File(PathBuf),
    /// None: a plain-HTTP API server such as `kubectl proxy`, which
    /// authenticates for us.
    None,
}

impl Token {
    /// Who we are to the API server, for kube-rs. A token file is read
    /// here too, so that an unusable token is said with what to do about it
    /// before any request.
    fn auth_info(&self) -> Result<AuthInfo, KubeError> {
        let mut auth = AuthInfo::default();
        match self {
            Token::None => {}
            Token::Fixed(token) => auth.token = Some(sendable(token.trim())?.into()),
            Token::File(path) => {
                let read =
                    std::fs::read_to_string(path).map_err(|source| KubeError::ServiceAccount {
                        path: path.clone(),
                        source,
                    })?;
                let token = read.trim();
                if token.is_empty() {
                    return Err(KubeError::EmptyToken { path: path.clone() });
                }
                let token = sendable(token)?;
                if token.len() == read.len() {
                    // kube-rs reads the file itself: when a list's client
                    // is made, and every minute for a client kept longer.
                    auth.token_file = Some(path.to_string_lossy().into_owned());
                } else {
                    // kube-rs would send the white space around the token
                    // as part of it (the kubelet writes none).
                    auth.token = Some(token.into());
                }
            }
        }
        Ok(auth)
    }
}

/// `token`, if an HTTP header can carry it: kube-rs panics on a given
/// token that it cannot.
fn sendable(token: &str) -> Result<String, KubeError> {
    hyper::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map(|_| token.to_owned())
        .map_err(|_| KubeError::BadToken)
}

impl fmt::Debug for InCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: never in a log line.
        let token_file = match &self.token {
            Token::File(path) => Some(path),
            Token::Fixed(_) | Token::None => None,
        };
        f.debug_struct("InCluster")
            .field("base", &self.base)
            .field("token_file", &token_file)
            .finish_non_exhaustive()
    }
}

impl InCluster {
    /// An API server at `base` (`https://10.96.0.1:443`; `http://` for
    /// `kubectl proxy`, where `ca_pem` goes unused), with a fixed token.
    pub fn new(base: impl Into<String>, token: impl Into<String>, ca_pem: Vec<u8>) -> InCluster {
        InCluster {
            base: base.into().trim_end_matches('/').to_owned(),
            token: Token::Fixed(token.into()),
            ca_pem,
            ca_file: None,
            max_page_bytes: MAX_PAGE_BYTES,
        }
    }

    /// The API server as a pod sees it: the `kubernetes` Service's address
    /// from the environment and the mounted service account.
    pub fn from_env() -> Result<InCluster, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        InCluster::from_parts(
            host.as_deref(),
            port.as_deref(),
            Path::new(SERVICE_ACCOUNT_DIR),
        )
    }

    /// [`InCluster::from_env`] with the environment's values given, and
    /// the service account's files in `account_dir`.
    pub fn from_parts(
        host: Option<&str>,
        port: Option<&str>,
        account_dir: &Path,
    ) -> Result<InCluster, KubeError> {
        let host = set(host).ok_or(KubeError::NotInPod("KUBERNETES_SERVICE_HOST"))?;
        let port = set(port).ok_or(KubeError::NotInPod("KUBERNETES_SERVICE_PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| KubeError::BadPort(port.to_owned()))?;
        let base = if host.parse::<Ipv6Addr>().is_ok() {
            format!("https://[{host}]:{port}")
        } else {
            format!("https://{host}:{port}")
        };
        InCluster::with_account(base, account_dir)
    }

    /// The API server at `url` (`--kubernetes-api`): over https as the
    /// service account in `account_dir`; over plain http (`kubectl proxy`
    /// on this node) with no credential of ours.
    pub fn at(url: &str, account_dir: &Path) -> Result<InCluster, KubeError> {
        let base = url.trim().trim_end_matches('/').to_owned();
        if base.starts_with("http://") {
            return Ok(InCluster {
                base,
                token: Token::None,
                ca_pem: Vec::new(),
                ca_file: None,
                max_page_bytes: MAX_PAGE_BYTES,
            });
        }
        if !base.starts_with("https://") {
            return Err(KubeError::Unreachable {
                base,
                detail:
                    "not an http:// or https:// URL; give the API server like https://10.96.0.1:443"
                        .into(),
            });
        }
        InCluster::with_account(base, account_dir)
    }

    /// `base` reached as the service account whose files are in
    /// `account_dir`.
    fn with_account(base: String, account_dir: &Path) -> Result<InCluster, KubeError> {
        let token = Token::File(account_dir.join("token"));
        token.auth_info()?;
        let ca_path = account_dir.join("ca.crt");
        let ca_pem = std::fs::read(&ca_path).map_err(|source| KubeError::ServiceAccount {
            path: ca_path.clone(),
            source,
        })?;
        let cluster = InCluster {
            base,
            token,
            ca_pem,
            ca_file: Some(ca_path),
            max_page_bytes: MAX_PAGE_BYTES,
        };
        // A bad CA is found now, at start, not at the first list: the TLS
        // setup that every list's client makes, made once here.
        cluster
            .config()?
            .rustls_client_config()
            .map_err(|e| cluster.error(e))?;
        Ok(cluster)
    }

    /// A client kept for watches: kube-rs re-reads a token file every
    /// minute, and each answer's body is bounded as a list's is (a watch
    /// cut at the bound resumes from its last resource version).
    pub fn watch_client(&self) -> Result<kube::Client, KubeError> {
        self.client()
    }

    /// A watcher's error, said with what to do.
    pub fn watch_error(&self, e: kube::runtime::watcher::Error) -> String {
        use kube::runtime::watcher::Error as W;
        match e {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => {
                self.error(e).to_string()
            }
            W::WatchError(status) => status_error(status.code, *status).to_string(),
            other => chain(&other),
        }
    }

    /// Every node of the cluster (all pages).
    pub async fn list_nodes(&self) -> Result<Vec<Node>, KubeError> {
        let api: Api<k8s::Node> = Api::all(self.client()?);
        let mut params = ListParams::default().limit(PAGE_SIZE);
        let mut nodes = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = tokio::time::timeout(TIMEOUT, api.list(&params))
                .await
                .map_err(|_| self.unreachable(format!("no answer within {TIMEOUT:?}")))?
                .map_err(|e| self.error(e))?;
            nodes.extend(page.items.iter().map(Node::from));
            match page.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(nodes),
            }
        }
        Err(KubeError::NotNodeList(format!(
            "still more after {MAX_PAGES} pages"
        )))
    }

    /// kube-rs' configuration for this API server, made by hand rather than
    /// inferred: no kubeconfig and no debugging overrides from the
    /// environment may send the token elsewhere.
    fn config(&self) -> Result<Config, KubeError> {
        let url = self
            .base
            .parse()
            .map_err(|e| self.unreachable(format!("not a URL: {e}")))?;
        let mut config = Config::new(url);
        // Always set, for http too: with no roots given, kube-rs trusts the
        // platform's store, which must never vouch for a cluster's API
        // server. The CA file, when there is one, replaces these roots in
        // verification and is read again to follow a rotated CA.
        config.root_cert = Some(if self.base.starts_with("https:") {
            ca_certificates(&self.ca_pem)?
        } else {
            Vec::new()
        });
        config.root_cert_file = self.ca_file.clone();
        config.connect_timeout = Some(TIMEOUT);
        config.write_timeout = Some(TIMEOUT);
        // Each page's whole request is bounded in list_nodes instead: a read
        // timeout here would also cut the long-lived answers of watches.
        config.read_timeout = None;
        // A refused or failed list is tried again at the next interval, and
        // its error says why; retrying here would hide that behind a timeout.
        config.default_retry = false;
        config.auth_info = self.token.auth_info()?;
        Ok(config)
    }

    /// A client for one list. Every answer's body is cut at
    /// `max_page_bytes`: kube-rs itself reads a body whole, whatever its size.
    /// No redirects: kube-rs follows none, so the token goes to the API
    /// server and nowhere else.
    fn client(&self) -> Result<kube::Client, KubeError> {
        let limit = self.max_page_bytes;
        let cut =
            tower::util::MapResponseLayer::new(move |answer: hyper::Response<Box<DynBody>>| {
                answer.map(|body| Box::new(Limited::new(body, limit)) as Box<DynBody>)
            });
        let builder = ClientBuilder::try_from(self.config()?).map_err(|e| self.error(e))?;
        Ok(builder.with_layer(&cut).build())
    }

    fn unreachable(&self, detail: String) -> KubeError {
        KubeError::Unreachable {
            base: self.base.clone(),
            detail,
        }
    }

    /// kube-rs' error as ours, which says what to do.
    fn error(&self, e: kube::Error) -> KubeError {
        if caused_by::<LengthLimitError>(&e) {
            return KubeError::NotNodeList(format!(
                "a page of more than {} bytes",
                self.max_page_bytes
            ));
        }
        match e {
            kube::Error::Api(status) => {
                let status = *status;
                // kube-rs makes a Status of a body that is not one (a
                // proxy's error page), with this reason and the whole body
                // as its message; the HTTP status says more than the body.
                if status.reason == NOT_A_STATUS {
                    KubeError::Api {
                        code: status.code,
                        reason: String::new(),
                        message: status.message.trim().chars().take(200).collect(),
                    }
                } else {
                    status_error(status.code, status)
                }
            }
            kube::Error::SerdeError(e) => {
                KubeError::NotNodeList(format!("a malformed NodeList: {e}"))
            }
            kube::Error::FromUtf8(e) => KubeError::NotNodeList(format!("not UTF-8: {e}")),
            kube::Error::RustlsTls(e) => KubeError::Ca(chain(&e)),
            kube::Error::Auth(e) => match &self.token {
                Token::File(path) => KubeError::ServiceAccount {
                    path: path.clone(),
                    source: std::io::Error::other(chain(&e)),
                },
                Token::Fixed(_) | Token::None => self.unreachable(chain(&e)),
            },
            // Connecting, TLS (an untrusted server certificate), HTTP.
            e => self.unreachable(chain(&e)),
        }
    }
}

/// kube-rs' `Status::reason` for an error answer whose body is not a
/// Status (kube-client's `handle_api_errors`).
const NOT_A_STATUS: &str = "Failed to parse error data";

/// An error and all its causes, `a: b: c`; a cause already spelled out in
/// the text before it is not repeated.
fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

/// Whether `T` is `e` or among its causes.
fn caused_by<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(cause) = next {
        if cause.is::<T>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// An environment variable's value, empty counting as unset.
fn set(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// The certificates of the cluster's CA, in DER, as kube-rs takes them.
fn ca_certificates(ca_pem: &[u8]) -> Result<Vec<Vec<u8>>, KubeError> {
    let certificates = CertificateDer::pem_slice_iter(ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KubeError::Ca(format!("not PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(KubeError::Ca("it holds no certificate".into()));
    }
    Ok(certificates)
}

/// One recorded page of the API server's answer, with its HTTP status
/// `code`, read as [`InCluster::list_nodes`] reads a live one through
/// kube-rs (the same [`Node`] conversion, the same errors).
fn interpret(code: u16, body: &[u8]) -> Result<Vec<Node>, KubeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(refused_or(
            code,
            body,
            KubeError::NotNodeList("the body is empty".into()),
        ));
    }
    let kind = match serde_json::from_slice::<Kind>(body) {
        Ok(k) => k.kind,
        Err(e) => {
            return Err(refused_or(
                code,
                body,
                KubeError::NotNodeList(format!("not JSON: {e}")),
            ));
        }
    };
    match kind.as_deref() {
        Some("Status") => {
            let status: kube::core::Status = serde_json::from_slice(body)
                .map_err(|e| KubeError::NotNodeList(format!("a malformed Status: {e}")))?;
            Err(status_error(code, status))
        }
        Some("NodeList") if (200..300).contains(&code) => {
            let list: k8s_openapi::List<k8s::Node> = serde_json::from_slice(body)
                .map_err(|e| KubeError::NotNodeList(format!("a malformed NodeList: {e}")))?;
            Ok(list.items.iter().map(Node::from).collect())
        }
        other => Err(refused_or(
            code,
            body,
            KubeError::NotNodeList(match other {
                Some(k) => format!("kind {k}"),
                None => "no kind".into(),
            }),
        )),
    }
}

/// For a failed request whose body is not a Status (a proxy's error page),
/// the HTTP status says more than the body's shape.
fn refused_or(code: u16, body: &[u8], otherwise: KubeError) -> KubeError {
    if (200..300).contains(&code) {
        return otherwise;
    }
    let text = String::from_utf8_lossy(body);
    KubeError::Api {
        code,
        reason: String::new(),
        message: text.trim().chars().take(200).collect(),
    }
}

/// A Status answer as an error; its own code if it has one, else the HTTP
/// status `http_code`.
fn status_error(http_code: u16, s: kube::core::Status) -> KubeError {
    let code = if s.code == 0 { http_code } else { s.code };
    let message = s.message;
    match code {
        401 => KubeError::Unauthorized { message },
        403 => KubeError::Forbidden { message },
        _ => KubeError::Api {
            code,
            reason: s.reason,
            message,
        },
    }
}

impl From<&k8s::Node> for Node {
    fn from(o: &k8s::Node) -> Node {
        let status = o.status.as_ref();
        let addresses = status
            .and_then(|s| s.addresses.as_deref())
            .unwrap_or_default();
        let ipv4 = |kind: &str| {
            addresses
                .iter()
                .filter(|a| a.type_ == kind)
                .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
        };
        Node {
            name: o.metadata.name.clone().unwrap_or_default(),
            internal_ip: ipv4("InternalIP").or_else(|| ipv4("ExternalIP")),
            ready: status
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
        }
    }
}

/// Only an answer's kind; serde skips the rest.
#[derive(Deserialize)]
struct Kind {
    kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::TcpListener,
        sync::Arc,
        thread,
    };

    use super::*;

    const NODES_3: &[u8] = include_bytes!("../tests/fixtures/kubernetes/nodes-3.json");
    const NODES_LATER: &[u8] = include_bytes!("../tests/fixtures/kubernetes/nodes-later.json");
    const NODES_EXTERNAL_IP: &[u8] =
        include_bytes!("../tests/fixtures/kubernetes/nodes-external-ip.json");
    const NODES_PAGE_1: &[u8] = include_bytes!("../tests/fixtures/kubernetes/nodes-page-1.json");
    const NODES_PAGE_2: &[u8] = include_bytes!("../tests/fixtures/kubernetes/nodes-page-2.json");
    const NODES_EMPTY: &[u8] = include_bytes!("../tests/fixtures/kubernetes/nodes-empty.json");
    const FORBIDDEN: &[u8] = include_bytes!("../tests/fixtures/kubernetes/forbidden.json");
    const UNAUTHORIZED: &[u8] = include_bytes!("../tests/fixtures/kubernetes/unauthorized.json");
    const GARBLED: &[u8] = include_bytes!("../tests/fixtures/kubernetes/garbled.json");

    // A throwaway CA and a server certificate from it for 127.0.0.1, made
    // with openssl for these tests only (valid 2020 to 2100); OTHER_CA_PEM
    // did not sign it.
    const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBXjCCAQSgAwIBAgICEAAwCgYIKoZIzj0EAwIwFTETMBEGA1UEAwwKa3ViZXJu\n\
ZXRlczAgFw0yMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowFTETMBEGA1UE\n\
AwwKa3ViZXJuZXRlczBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABHe8tdRxmEl0\n\
CfObLYMTgadt5N6Nmx3C0QwibuTrpzbfurltEvDROnMoSgAmJNFdvav42aqpSG92\n\
oNcR4L6bbsSjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgGGMB0G\n\
A1UdDgQWBBSNzedxZpKmBqhV+FZze2r44a73zzAKBggqhkjOPQQDAgNIADBFAiEA\n\
yHKDve5Fx/+8KOEwsiip7nZRlzkXvYKIe7eOUqoJzFUCIDyhL9rlcO5SEID1DPcY\n\
EGVOrLnLAkgFoqfgi1uG/RiH\n\
-----END CERTIFICATE-----\n\
";
    const SERVER_CERT_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBvTCCAWOgAwIBAgICEAEwCgYIKoZIzj0EAwIwFTETMBEGA1UEAwwKa3ViZXJu\n\
ZXRlczAgFw0yMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowGTEXMBUGA1UE\n\
AwwOa3ViZS1hcGlzZXJ2ZXIwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR7zVSd\n\
IXK8qE9pt/eINEbevRnSquPV8W8RwoLY0l9MkdIryychq7xgxRKRH0Jq6A0ctAJE\n\
7EsmbLY8Cwlqr9oyo4GcMIGZMAkGA1UdEwQCMAAwDgYDVR0PAQH/BAQDAgeAMBMG\n\
A1UdJQQMMAoGCCsGAQUFBwMBMCcGA1UdEQQgMB6HBH8AAAGCFmt1YmVybmV0ZXMu\n\
ZGVmYXVsdC5zdmMwHwYDVR0jBBgwFoAUjc3ncWaSpgaoVfhWc3tq+OGu988wHQYD\n\
VR0OBBYEFLmlze7tHW0w7I46h/yPscjMSK0QMAoGCCqGSM49BAMCA0gAMEUCID1P\n\
5w8HqynrJ7TUGjlie8KuXs28twjLqbxuSMb4sasjAiEAwM5TvCPF+zvdnXCxwMK7\n\
Kt9XNETcRcB5zaPuAsvCex8=\n\
-----END CERTIFICATE-----\n\
";
    const SERVER_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggs1bEVhkUZQi3aVn\n\
Iw1njidReYIE8Ga9d4hHtwLyH9qhRANCAAR7zVSdIXK8qE9pt/eINEbevRnSquPV\n\
8W8RwoLY0l9MkdIryychq7xgxRKRH0Jq6A0ctAJE7EsmbLY8Cwlqr9oy\n\
-----END PRIVATE KEY-----\n\
";
    const OTHER_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBWjCCAQCgAwIBAgICEAIwCgYIKoZIzj0EAwIwEzERMA8GA1UEAwwIb3RoZXIt\n\
Y2EwIBcNMjAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBMxETAPBgNVBAMM\n\
CG90aGVyLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEssFvdSPn8l/jo7Uk\n\
sszAzqCRO4wC5AKf0TNP91sfuGxnhaCLHGRxk3QUfMkw11Z+CzqqTS+qDXkqQg7X\n\
h2YcTqNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAYYwHQYDVR0O\n\
BBYEFNhDeNPy3Jd32JWDVvjkfo9AzlWCMAoGCCqGSM49BAMCA0gAMEUCIQC8q1XT\n\
G4cn9UbZPeVKIYgT2y1+z8RqfSLVg7aHS5WY7AIgMpb4ImabF3MY6rrejxlPPTzF\n\
tJpVojCqWOoRPZPsy34=\n\
-----END CERTIFICATE-----\n\
";

    fn node(name: &str, ip: [u8; 4], ready: bool) -> Node {
        Node {
            name: name.into(),
            internal_ip: Some(Ipv4Addr::from(ip)),
            ready,
        }
    }

    fn peer(name: &str, nickname: &str, reachable: bool) -> KnownPeer {
        KnownPeer {
            name: name.into(),
            nickname: nickname.into(),
            reachable,
        }
    }

    #[test]
    fn parses_a_three_node_cluster() {
        let nodes = parse_nodes(NODES_3).unwrap();
        assert_eq!(
            nodes,
            vec![
                node("k8s-cp-1", [10, 0, 1, 10], true),
                node("k8s-worker-1", [10, 0, 1, 11], true),
                node("k8s-worker-2", [10, 0, 1, 12], true),
            ]
        );
    }

    #[test]
    fn parses_a_later_list_with_a_node_gone_and_one_not_ready() {
        let nodes = parse_nodes(NODES_LATER).unwrap();
        assert_eq!(
            nodes,
            vec![
                node("k8s-cp-1", [10, 0, 1, 10], true),
                node("k8s-worker-1", [10, 0, 1, 11], false),
                node("k8s-worker-3", [10, 0, 1, 13], true),
            ]
        );
    }

    #[test]
    fn falls_back_to_the_external_ip_and_skips_ipv6() {
        let nodes = parse_nodes(NODES_EXTERNAL_IP).unwrap();
        assert_eq!(
            nodes,
            vec![
                node("edge-1", [198, 51, 100, 23], true),
                node("ds-1", [10, 0, 2, 21], true),
            ]
        );
    }

    #[test]
    fn an_empty_list_is_an_empty_list() {
        assert_eq!(parse_nodes(NODES_EMPTY).unwrap(), vec![]);
    }

    #[test]
    fn forbidden_says_to_apply_the_cluster_role() {
        let err = parse_nodes(FORBIDDEN).unwrap_err();
        assert!(matches!(err, KubeError::Forbidden { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(
                r#"User "system:serviceaccount:kube-system:weft" cannot list resource "nodes""#
            ),
            "{text}"
        );
        assert!(
            text.contains("ClusterRole and ClusterRoleBinding from deploy/kubernetes/weft.yaml"),
            "{text}"
        );
    }

    #[test]
    fn unauthorized_points_at_the_service_account() {
        let err = parse_nodes(UNAUTHORIZED).unwrap_err();
        assert!(matches!(err, KubeError::Unauthorized { .. }), "{err:?}");
        assert!(err.to_string().contains("ServiceAccount weft"), "{err}");
    }

    #[test]
    fn garbled_and_empty_bodies_are_errors_not_empty_lists() {
        for body in [
            GARBLED,
            b"",
            b"  \n",
            b"<html>502 Bad Gateway</html>",
            b"{}",
        ] {
            let err = parse_nodes(body).unwrap_err();
            assert!(matches!(err, KubeError::NotNodeList(_)), "{err:?}");
            assert!(err.to_string().contains("not a NodeList"), "{err}");
        }
        let err = parse_nodes(b"").unwrap_err();
        assert!(err.to_string().contains("the body is empty"), "{err}");
        // A proxy's error page: the HTTP status is what matters.
        let err = interpret(502, b"<html>502 Bad Gateway</html>")
            .err()
            .unwrap();
        assert!(matches!(err, KubeError::Api { code: 502, .. }), "{err:?}");
    }

    #[test]
    fn each_page_is_a_node_list() {
        // Following the continue token is list_nodes' (see
        // lists_every_page_over_tls_with_the_current_token).
        assert_eq!(parse_nodes(NODES_PAGE_1).unwrap().len(), 2);
        assert_eq!(
            parse_nodes(NODES_PAGE_2).unwrap(),
            vec![node("k8s-worker-2", [10, 0, 1, 12], true)]
        );
    }

    #[test]
    fn peer_addresses_exclude_me_and_are_sorted() {
        let nodes = parse_nodes(NODES_3).unwrap();
        assert_eq!(
            peer_addresses(&nodes, Some("k8s-worker-1")),
            vec!["10.0.1.10", "10.0.1.12"]
        );
        assert_eq!(
            peer_addresses(&nodes, None),
            vec!["10.0.1.10", "10.0.1.11", "10.0.1.12"]
        );
        // Numeric order, duplicates once, nodes without an address skipped.
        let mut odd = vec![
            node("a", [10, 0, 0, 10], true),
            node("b", [10, 0, 0, 9], true),
            node("c", [10, 0, 0, 9], true),
        ];
        odd.push(Node {
            name: "d".into(),
            internal_ip: None,
            ready: true,
        });
        assert_eq!(peer_addresses(&odd, None), vec!["10.0.0.9", "10.0.0.10"]);
    }

    #[test]
    fn not_ready_nodes_are_still_peers() {
        let nodes = parse_nodes(NODES_LATER).unwrap();
        assert_eq!(
            peer_addresses(&nodes, Some("k8s-cp-1")),
            vec!["10.0.1.11", "10.0.1.13"]
        );
    }

    #[test]
    fn departed_needs_gone_and_unreachable() {
        let nodes = parse_nodes(NODES_LATER).unwrap();
        let known = [
            peer("02:00:00:00:00:01", "k8s-cp-1", true),
            // NotReady but still listed: kept, reachable or not.
            peer("02:00:00:00:00:02", "k8s-worker-1", false),
            // Gone from the list and unreachable: reclaimed.
            peer("02:00:00:00:00:03", "k8s-worker-2", false),
            // Gone from the list but still answering: kept.
            peer("02:00:00:00:00:04", "old-node", true),
            peer("02:00:00:00:00:05", "k8s-worker-3", true),
        ];
        assert_eq!(departed(&known, &nodes), vec!["02:00:00:00:00:03"]);
    }

    #[test]
    fn an_empty_node_list_reclaims_nothing() {
        let nodes = parse_nodes(NODES_EMPTY).unwrap();
        let known = [peer("02:00:00:00:00:03", "k8s-worker-2", false)];
        assert_eq!(departed(&known, &nodes), Vec::<String>::new());
    }

    #[test]
    fn nicknames_match_node_names_generously() {
        let nodes = [
            node("ip-10-0-1-5.ec2.internal", [10, 0, 1, 5], true),
            node("worker-7", [10, 0, 1, 7], true),
            node(&"n".repeat(80), [10, 0, 1, 8], true),
        ];
        let known = [
            // Short host name against the cloud's FQDN node name.
            peer("02:00:00:00:00:05", "ip-10-0-1-5", false),
            // The kubelet lowercases the host name.
            peer("02:00:00:00:00:07", "Worker-7", false),
            // weft cuts nicknames at MAX_NICKNAME characters.
            peer("02:00:00:00:00:08", &"n".repeat(MAX_NICKNAME), false),
            peer("02:00:00:00:00:09", "worker-9", false),
        ];
        assert_eq!(departed(&known, &nodes), vec!["02:00:00:00:00:09"]);
        // Addresses as names: 10.0.1.9 is not 10.0.1.5's host.
        assert!(!same_host("10.0.1.9", "10.0.1.5"));
    }

    #[test]
    fn plan_connects_to_the_others_and_reclaims_the_departed() {
        let before = parse_nodes(NODES_3).unwrap();
        let known = [
            peer("02:00:00:00:00:01", "k8s-cp-1", true),
            peer("02:00:00:00:00:02", "k8s-worker-1", true),
            peer("02:00:00:00:00:03", "k8s-worker-2", true),
        ];
        assert_eq!(
            plan(&before, Some("k8s-cp-1"), &known),
            Plan {
                connect: vec!["10.0.1.11".into(), "10.0.1.12".into()],
                reclaim: vec![],
            }
        );
        let after = parse_nodes(NODES_LATER).unwrap();
        let known = [
            peer("02:00:00:00:00:01", "k8s-cp-1", true),
            peer("02:00:00:00:00:02", "k8s-worker-1", false),
            peer("02:00:00:00:00:03", "k8s-worker-2", false),
        ];
        assert_eq!(
            plan(&after, Some("k8s-cp-1"), &known),
            Plan {
                connect: vec!["10.0.1.11".into(), "10.0.1.13".into()],
                reclaim: vec!["02:00:00:00:00:03".into()],
            }
        );
    }

    #[test]
    fn from_parts_says_when_this_is_not_a_pod() {
        let dir = Path::new("/nonexistent");
        let err = InCluster::from_parts(None, Some("443"), dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST is unset; drop --kubernetes and give peer addresses instead (weft router HOST...)"
        );
        let err = InCluster::from_parts(Some(""), Some("443"), dir).unwrap_err();
        assert!(matches!(
            err,
            KubeError::NotInPod("KUBERNETES_SERVICE_HOST")
        ));
        let err = InCluster::from_parts(Some("10.96.0.1"), None, dir).unwrap_err();
        assert!(matches!(
            err,
            KubeError::NotInPod("KUBERNETES_SERVICE_PORT")
        ));
        let err = InCluster::from_parts(Some("10.96.0.1"), Some("https"), dir).unwrap_err();
        assert!(matches!(err, KubeError::BadPort(_)), "{err:?}");
        let err = InCluster::from_parts(Some("10.96.0.1"), Some("443"), dir).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the service account's /nonexistent/token"),
            "{err}"
        );
    }

    /// A service account directory under the system's temporary directory,
    /// removed when dropped.
    struct AccountDir(PathBuf);

    impl AccountDir {
        fn new(test: &str, token: &str, ca: &str) -> AccountDir {
            let dir =
                std::env::temp_dir().join(format!("weft-kubernetes-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("token"), token).unwrap();
            std::fs::write(dir.join("ca.crt"), ca).unwrap();
            AccountDir(dir)
        }
    }

    impl Drop for AccountDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn from_parts_checks_the_ca_and_brackets_ipv6() {
        let bad = AccountDir::new("bad-ca", "tok", "not a certificate\n");
        let err = InCluster::from_parts(Some("10.96.0.1"), Some("443"), &bad.0).unwrap_err();
        assert!(matches!(err, KubeError::Ca(_)), "{err:?}");
        let empty = AccountDir::new("empty-token", "\n", CA_PEM);
        let err = InCluster::from_parts(Some("10.96.0.1"), Some("443"), &empty.0).unwrap_err();
        assert!(matches!(err, KubeError::EmptyToken { .. }), "{err:?}");
        let good = AccountDir::new("ipv6", "tok\n", CA_PEM);
        let k = InCluster::from_parts(Some("fd00:10:96::1"), Some("443"), &good.0).unwrap();
        assert_eq!(k.base, "https://[fd00:10:96::1]:443");
        assert!(
            matches!(&k.token, Token::File(path) if *path == good.0.join("token")),
            "{k:?}"
        );
        assert!(
            !format!("{k:?}").contains("tok\""),
            "the token leaks: {k:?}"
        );
    }

    /// Answers one request per entry of `answers` on 127.0.0.1, over TLS
    /// with the test CA's server certificate if `tls`; yields the request
    /// heads it read.
    fn serve(
        tls: bool,
        answers: Vec<(u16, &'static [u8])>,
    ) -> (u16, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = tls.then(|| {
            let cert = CertificateDer::from_pem_slice(SERVER_CERT_PEM.as_bytes()).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(SERVER_KEY_PEM.as_bytes())
                .unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(vec![cert], key)
                    .unwrap(),
            )
        });
        let server = thread::spawn(move || {
            let mut heads = Vec::new();
            for (code, body) in answers {
                let Ok((tcp, _)) = listener.accept() else {
                    break;
                };
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut stream: Box<dyn ReadWrite> = match &config {
                    Some(c) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(c.clone()).unwrap(),
                        tcp,
                    )),
                    None => Box::new(tcp),
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        // The client gave up (a refused certificate).
                        _ => return heads,
                    }
                }
                heads.push(String::from_utf8(head).unwrap());
                let answer = format!(
                    "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
                let _ = stream.write_all(body);
                let _ = stream.flush();
            }
            heads
        });
        (port, server)
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    /// The value of header `name` in a request head, whatever the case of
    /// its name (hyper sends names in lower case).
    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, value) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// A request head's first line without its empty query parameters:
    /// kube-rs asks for `/api/v1/nodes?&limit=500`, which the API server
    /// reads as `?limit=500`.
    fn request_line(head: &str) -> String {
        let line = head.split("\r\n").next().unwrap_or_default();
        let Some((path, rest)) = line.split_once('?') else {
            return line.to_owned();
        };
        let (query, version) = rest.split_once(' ').unwrap_or((rest, ""));
        let query: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        format!("{path}?{} {version}", query.join("&"))
    }

    #[tokio::test]
    async fn lists_every_page_over_tls_with_the_current_token() {
        let (port, server) = serve(
            true,
            vec![(200, NODES_PAGE_1), (200, NODES_PAGE_2), (200, NODES_EMPTY)],
        );
        let account = AccountDir::new("pages", "first-token", CA_PEM);
        let port = port.to_string();
        let k = InCluster::from_parts(Some("127.0.0.1"), Some(&port), &account.0).unwrap();
        let nodes = k.list_nodes().await.unwrap();
        assert_eq!(
            nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["k8s-cp-1", "k8s-worker-1", "k8s-worker-2"]
        );
        // The kubelet rotated the token: the next list sends the new one
        // (and not the white space after it).
        std::fs::write(account.0.join("token"), "second-token\n").unwrap();
        assert_eq!(k.list_nodes().await.unwrap(), vec![]);
        let heads = server.join().unwrap();
        assert_eq!(heads.len(), 3);
        assert_eq!(
            request_line(&heads[0]),
            "GET /api/v1/nodes?limit=500 HTTP/1.1"
        );
        assert_eq!(
            header(&heads[0], "authorization"),
            Some("Bearer first-token"),
            "{}",
            heads[0]
        );
        assert_eq!(
            request_line(&heads[1]),
            "GET /api/v1/nodes?limit=500&continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NDgyMzMsInN0YXJ0IjoiazhzLXdvcmtlci0xXHUwMDAwIn0 HTTP/1.1"
        );
        // The next list starts again from the first page.
        assert_eq!(
            request_line(&heads[2]),
            "GET /api/v1/nodes?limit=500 HTTP/1.1"
        );
        assert_eq!(
            header(&heads[2], "authorization"),
            Some("Bearer second-token"),
            "{}",
            heads[2]
        );
    }

    #[tokio::test]
    async fn a_refusal_over_tls_is_the_status_error() {
        let (port, server) = serve(true, vec![(403, FORBIDDEN)]);
        let k = InCluster::new(format!("https://127.0.0.1:{port}/"), "t", CA_PEM.into());
        let err = k.list_nodes().await.unwrap_err();
        assert!(matches!(err, KubeError::Forbidden { .. }), "{err:?}");
        assert!(
            err.to_string().contains(r#"cannot list resource "nodes""#),
            "{err}"
        );
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_server_the_ca_did_not_sign_is_not_trusted() {
        let (port, _server) = serve(true, vec![(200, NODES_3)]);
        let k = InCluster::new(
            format!("https://127.0.0.1:{port}"),
            "t",
            OTHER_CA_PEM.into(),
        );
        let err = k.list_nodes().await.unwrap_err();
        assert!(matches!(err, KubeError::Unreachable { .. }), "{err:?}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[tokio::test]
    async fn plain_http_for_kubectl_proxy() {
        let (port, server) = serve(false, vec![(502, b"<html>Bad Gateway</html>")]);
        let k = InCluster::new(format!("http://127.0.0.1:{port}"), "t", Vec::new());
        let err = k.list_nodes().await.unwrap_err();
        let KubeError::Api {
            code: 502,
            reason,
            message,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(
            (reason.as_str(), message.as_str()),
            ("", "<html>Bad Gateway</html>")
        );
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_page_past_the_bound_is_not_read_to_the_end() {
        let (port, server) = serve(false, vec![(200, NODES_3)]);
        let mut k = InCluster::new(format!("http://127.0.0.1:{port}"), "t", Vec::new());
        k.max_page_bytes = 1000;
        let err = k.list_nodes().await.unwrap_err();
        assert!(matches!(err, KubeError::NotNodeList(_)), "{err:?}");
        assert!(err.to_string().contains("more than 1000 bytes"), "{err}");
        server.join().unwrap();
    }

    #[tokio::test]
    async fn an_emptied_token_file_is_said_before_asking() {
        let account = AccountDir::new("emptied", "tok", CA_PEM);
        let k = InCluster::from_parts(Some("127.0.0.1"), Some("1"), &account.0).unwrap();
        std::fs::write(account.0.join("token"), "").unwrap();
        let err = k.list_nodes().await.unwrap_err();
        assert!(matches!(err, KubeError::EmptyToken { .. }), "{err:?}");
        // A token that no header can carry is refused here, not sent.
        std::fs::write(account.0.join("token"), "tok\nen").unwrap();
        let err = k.list_nodes().await.unwrap_err();
        assert!(matches!(err, KubeError::BadToken), "{err:?}");
        let k = InCluster::new("http://127.0.0.1:1", "t\u{7}", Vec::new());
        let err = k.list_nodes().await.unwrap_err();
        assert!(matches!(err, KubeError::BadToken), "{err:?}");
    }
}
