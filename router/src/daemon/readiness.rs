//! Keeping our names true to our containers. Every [`EVERY`], whether
//! something listens on the port an instance declared (`--name
//! db:5432`) inside its container's namespace; a change goes to the router
//! task, which gossips it, so that queries held on every host are answered
//! as soon as the server listens. Every [`PRUNE_EVERY`], the names of
//! containers that are gone without a detach (their namespace or veth
//! deleted) leave too.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::router::Request;
use crate::{
    names::{EXTERN_OWNER, NamesRequest, ready::ports_listening_in, records::NamesHandle},
    netdev::{HostNetwork, target::Target},
    policy::PolicyRequest,
};

/// How often attachments whose interface is gone are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(2);

/// Every [`PRUNE_EVERY`]: forgets attachments whose veth is gone (and
/// their conditions), tells policy which containers are here, and removes
/// our names whose owner is no longer attached here.
pub async fn forget_departed(
    names: NamesHandle,
    network: Arc<HostNetwork>,
    requests: mpsc::Sender<Request>,
) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (now_attached, ids): (BTreeMap<String, Option<std::net::Ipv4Addr>>, Vec<String>) = {
            let mut registry = network.registry.lock().await;
            if let Err(e) = registry.prune(&network.netlink).await {
                tracing::debug!(error = %e, "cannot look for departed containers");
                continue;
            }
            let list = registry.list();
            (
                list.iter()
                    .map(|a| (a.ipam_owner(), a.first_ipv4()))
                    .collect(),
                list.into_iter().map(|a| a.id).collect(),
            )
        };
        // So do conditions, and the threads that apply them.
        network.conditioning.retain(&ids).await;
        let attached: std::collections::BTreeSet<String> = now_attached.keys().cloned().collect();
        // Policy's endpoints follow the containers however they came and
        // went (runtimes, Docker, a deleted namespace).
        let request = Request::Policy(PolicyRequest::Attached { now_attached });
        if requests.send(request).await.is_err() {
            return;
        }
        let owners = names.lock().own_owners();
        for owner in owners {
            if owner == EXTERN_OWNER || attached.contains(&owner) {
                continue;
            }
            tracing::info!(%owner, "its container is gone: its names leave");
            let (reply, _) = tokio::sync::oneshot::channel();
            let request = Request::Names(NamesRequest::Remove {
                owner: Some(owner),
                addr: None,
                name: None,
                reply,
            });
            if requests.send(request).await.is_err() {
                return;
            }
        }
    }
}

/// How often listeners are looked at: a server that starts listening is
/// seen within this, and its waiting clients hear of it right after.
const EVERY: Duration = Duration::from_millis(50);

pub async fn run(names: NamesHandle, network: Arc<HostNetwork>, requests: mpsc::Sender<Request>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let watched = names.lock().watched();
        if watched.is_empty() {
            continue;
        }
        // Where each owner's container is, from what is attached here.
        let targets: BTreeMap<String, String> = network
            .registry
            .lock()
            .await
            .list()
            .into_iter()
            .map(|a| (a.ipam_owner(), a.target))
            .collect();
        for (key, port, was_ready) in watched {
            let Some(target) = targets.get(&key.owner).cloned() else {
                continue;
            };
            let listening = tokio::task::spawn_blocking(move || {
                let netns = Target::parse(&target).ok()?.open().ok()?;
                ports_listening_in(&netns).ok()
            })
            .await
            .ok()
            .flatten();
            let Some(ports) = listening else { continue };
            let ready = ports.contains(&port);
            if ready != was_ready {
                let request = Request::Names(NamesRequest::Ready { key, ready });
                if requests.send(request).await.is_err() {
                    return;
                }
            }
        }
    }
}
