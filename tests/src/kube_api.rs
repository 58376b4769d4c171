//! A stand-in for the Kubernetes API server, as `kubectl proxy` shows it
//! on a node (plain HTTP on loopback): list and watch of the objects a test
//! puts, with resource versions and ADDED/MODIFIED/DELETED events, enough
//! for kube-rs' watchers and weft's node list. One store, served in as
//! many hosts as the test asks, so every router sees the same cluster.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{Netns, Result};

/// The collections served, with the kind of their lists.
pub const NODES: &str = "/api/v1/nodes";
pub const PODS: &str = "/api/v1/pods";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const NETWORK_POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";

/// Where the stand-in listens in each host.
pub const PORT: u16 = 8001;

/// A watch is closed after this long (the real server's timeoutSeconds,
/// shortened): kube-rs then watches again from its last version, which
/// the tests thereby exercise.
const WATCH_FOR: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Store {
    version: u64,
    /// By collection, then `namespace/name`.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (version, collection, type, object), oldest first.
    events: Vec<(u64, &'static str, &'static str, Value)>,
}

pub struct KubeApi {
    store: Arc<(Mutex<Store>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.store.1.notify_all();
    }
}

fn list_kind(collection: &str) -> &'static str {
    match collection {
        NODES => "NodeList",
        PODS => "PodList",
        NAMESPACES => "NamespaceList",
        _ => "NetworkPolicyList",
    }
}

fn key_of(object: &Value) -> String {
    let meta = &object["metadata"];
    let name = meta["name"].as_str().unwrap_or_default();
    match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

impl Default for KubeApi {
    fn default() -> Self {
        KubeApi::new()
    }
}

impl KubeApi {
    pub fn new() -> KubeApi {
        KubeApi {
            store: Default::default(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Serves the store on 127.0.0.1:[`PORT`] in `ns` until dropped.
    pub fn serve_in(&self, ns: &Netns) -> Result<()> {
        let (store, stop) = (self.store.clone(), self.stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        ns.spawn_thread(move || {
            let listener = TcpListener::bind(("127.0.0.1", PORT)).expect("bind the API stand-in");
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(());
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (store, stop) = (store.clone(), stop.clone());
                        std::thread::spawn(move || answer(conn, &store, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })?;
        rx.recv()
            .map_err(|_| crate::Error::ThreadPanicked(format!("API stand-in in {}", ns.name())))
    }

    /// Adds or replaces `object` (by namespace and name) in `collection`.
    pub fn put(&self, collection: &'static str, mut object: Value) {
        let (lock, wake) = &*self.store;
        let mut store = lock.lock().unwrap();
        store.version += 1;
        let version = store.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let key = key_of(&object);
        let kind = match store
            .objects
            .entry(collection)
            .or_default()
            .insert(key, object.clone())
        {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        store.events.push((version, collection, kind, object));
        wake.notify_all();
    }

    /// Deletes `namespace/name` (or `name`) from `collection`.
    pub fn delete(&self, collection: &'static str, key: &str) {
        let (lock, wake) = &*self.store;
        let mut store = lock.lock().unwrap();
        let Some(mut object) = store
            .objects
            .get_mut(collection)
            .and_then(|c| c.remove(key))
        else {
            return;
        };
        store.version += 1;
        let version = store.version;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        store.events.push((version, collection, "DELETED", object));
        wake.notify_all();
    }

    /// The keys of `collection`.
    pub fn keys(&self, collection: &'static str) -> Vec<String> {
        let store = self.store.0.lock().unwrap();
        store
            .objects
            .get(collection)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Answers one request: a list, or a watch held open for [`WATCH_FOR`].
fn answer(conn: TcpStream, store: &(Mutex<Store>, Condvar), stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn).take(16 << 10);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // The rest of the head: a GET has no body.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let Some(collection) = [NODES, PODS, NAMESPACES, NETWORK_POLICIES]
        .into_iter()
        .find(|c| *c == path)
    else {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("the server could not find the requested resource {path}"),
            "reason": "NotFound", "code": 404})
        .to_string();
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    };
    let (lock, wake) = store;
    if !matches!(params.get("watch"), Some(&"true") | Some(&"1")) {
        let body = {
            let store = lock.lock().unwrap();
            let items: Vec<&Value> = store
                .objects
                .get(collection)
                .map(|c| c.values().collect())
                .unwrap_or_default();
            json!({"kind": list_kind(collection), "apiVersion": "v1",
                "metadata": {"resourceVersion": store.version.to_string()}, "items": items})
            .to_string()
        };
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return;
    }
    let mut seen: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if out
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
        )
        .is_err()
    {
        return;
    }
    let until = Instant::now() + WATCH_FOR;
    let mut store = lock.lock().unwrap();
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        let mut lines = String::new();
        for (version, c, kind, object) in &store.events {
            if *version > seen && *c == collection {
                lines.push_str(&json!({"type": kind, "object": object}).to_string());
                lines.push('\n');
            }
        }
        seen = store.version;
        if !lines.is_empty() {
            drop(store);
            if out
                .write_all(lines.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return;
            }
            store = lock.lock().unwrap();
            continue;
        }
        store = wake
            .wait_timeout(store, Duration::from_millis(500))
            .unwrap()
            .0;
    }
}

/// A node as the API server lists it.
pub fn node(name: &str, addr: std::net::Ipv4Addr) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("node-{name}"),
                     "labels": {"kubernetes.io/hostname": name}},
        "status": {"addresses": [{"type": "InternalIP", "address": addr.to_string()},
                                 {"type": "Hostname", "address": name}],
                   "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// A namespace with `labels` (and the name label the API server adds).
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert("kubernetes.io/metadata.name".into(), name.into());
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": all},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

/// A running pod on `node` at `addr`, its one container serving `ports`
/// (name, number, protocol).
pub fn pod(
    namespace: &str,
    name: &str,
    node: &str,
    addr: std::net::Ipv4Addr,
    labels: &[(&str, &str)],
    ports: &[(&str, u16, &str)],
) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "containerPort": p, "protocol": proto}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("pod-{namespace}-{name}"),
                     "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "cont-80-tcp",
                 "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "ports": ports}]},
        "status": {"phase": "Running", "hostIP": "192.0.2.1", "podIP": addr.to_string(),
                   "podIPs": [{"ip": addr.to_string()}]}})
}
