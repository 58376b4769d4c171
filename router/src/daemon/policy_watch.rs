//! Watching the Kubernetes API server's pods, namespaces and
//! NetworkPolicies into the cluster view, and waking the router to compile
//! when what is in force changed (see [`crate::policy::cluster`] for the
//! decisions). Errors are logged, rate-limited, and change nothing: the
//! last rules stay in force while the API server is away.

use std::{
    fmt::Debug,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::router::Request;
use crate::{
    kubernetes::{InCluster, KubeError},
    policy::{
        ClusterHandle, PolicyRequest,
        cluster::{ClusterView, PodFacts, PolicyFacts, Table, key_of, namespace_labels},
    },
};

/// At most one line per kind this often while the API server fails.
const SAY_EVERY: Duration = Duration::from_secs(60);

/// Starts the three watchers.
pub fn spawn(
    cluster: &InCluster,
    view: ClusterHandle,
    requests: mpsc::Sender<Request>,
) -> Result<(), KubeError> {
    let client = cluster.watch_client()?;
    let cluster = Arc::new(cluster.clone());
    let watch = |kind| Watch {
        kind,
        cluster: cluster.clone(),
        view: view.clone(),
        requests: requests.clone(),
    };
    tokio::spawn(watch("pods").run(
        Api::<Pod>::all(client.clone()),
        |v| &mut v.pods,
        |pod, _| PodFacts::of(pod),
    ));
    tokio::spawn(watch("namespaces").run(
        Api::<Namespace>::all(client.clone()),
        |v| &mut v.namespaces,
        |ns, _| namespace_labels(ns),
    ));
    tokio::spawn(watch("networkpolicies").run(
        Api::<NetworkPolicy>::all(client),
        |v| &mut v.policies,
        PolicyFacts::of,
    ));
    Ok(())
}

/// One kind's watcher.
struct Watch {
    kind: &'static str,
    cluster: Arc<InCluster>,
    view: ClusterHandle,
    requests: mpsc::Sender<Request>,
}

impl Watch {
    /// Feeds `api`'s events, each object made a `T` by `convert` (given
    /// what the table holds under its key), into `table` of the view.
    async fn run<K, T>(
        self,
        api: Api<K>,
        table: fn(&mut ClusterView) -> &mut Table<T>,
        convert: fn(&K, Option<&T>) -> T,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
        T: PartialEq,
    {
        // kube-rs relists when a watch's resource version has expired and
        // backs off (up to a few minutes) while the server fails.
        let mut events =
            std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
        let mut said: Option<Instant> = None;
        while let Some(next) = events.next().await {
            match next {
                Ok(event) => {
                    if self.take(event, table, convert) {
                        // A full queue means the router turns anyway, and
                        // it compiles after every turn.
                        let _ = self
                            .requests
                            .try_send(Request::Policy(PolicyRequest::ClusterChanged));
                    }
                }
                Err(e) => {
                    if said.is_none_or(|t| t.elapsed() >= SAY_EVERY) {
                        said = Some(Instant::now());
                        tracing::warn!(
                            kind = self.kind,
                            error = %self.cluster.watch_error(e),
                            "cannot watch the Kubernetes API server; the last policy rules stay in force"
                        );
                    }
                }
            }
        }
    }

    /// Whether `event` changed what is in force.
    fn take<K: Resource, T: PartialEq>(
        &self,
        event: Event<K>,
        table: fn(&mut ClusterView) -> &mut Table<T>,
        convert: fn(&K, Option<&T>) -> T,
    ) -> bool {
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        let t = table(&mut view);
        let keyed = |o: &K| {
            let meta = o.meta();
            let key = key_of(meta.namespace.as_deref(), meta.name.as_deref());
            let item = convert(o, t.get(&key));
            (key, item)
        };
        let event = match event {
            Event::Init => Event::Init,
            Event::InitDone => Event::InitDone,
            Event::InitApply(o) => Event::InitApply(keyed(&o)),
            Event::Apply(o) => Event::Apply(keyed(&o)),
            Event::Delete(o) => Event::Delete(keyed(&o)),
        };
        let changed = t.on(event);
        view.changed(changed) && view.synced()
    }
}
