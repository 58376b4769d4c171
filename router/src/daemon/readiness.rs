//! Watching our instances that declared a port (`--name db:5432`): every
//! [`EVERY`], whether something listens on it inside the container's
//! namespace; a change goes to the router task, which gossips it, so that
//! queries held on every host are answered as soon as the server listens.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::router::Request;
use crate::{
    names::{NamesRequest, ready::ports_listening_in, records::NamesHandle},
    netdev::{HostNetwork, target::Target},
};

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
