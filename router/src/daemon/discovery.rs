//! Acting on Kubernetes' node list: peers to connect to at start and every
//! minute after, and the IPAM space of nodes deleted from the cluster
//! taken back (see [`crate::kubernetes`] for the decisions).

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use super::router::{Request, ask};
use crate::ipam::IpamRequest;
use crate::kubernetes::{InCluster, KnownPeer, SERVICE_ACCOUNT_DIR, plan};

/// How often the node list is read again.
const INTERVAL: Duration = Duration::from_secs(60);

/// The peers to start with: every other node. Read before IPAM starts, so
/// that its first division waits for all of them (consensus = nodes).
/// `api` is `--kubernetes-api` (else the in-cluster API server); `me` this
/// router's node.
pub async fn initial(api: Option<&str>, me: Option<&str>) -> Result<(InCluster, Vec<String>)> {
    let cluster = match api {
        Some(url) => InCluster::at(url, std::path::Path::new(SERVICE_ACCOUNT_DIR))?,
        None => InCluster::from_env()?,
    };
    let nodes = cluster
        .list_nodes()
        .await
        .context("cannot read the node list to find peers")?;
    let peers = crate::kubernetes::peer_addresses(&nodes, me);
    tracing::info!(nodes = nodes.len(), peers = ?peers, "Kubernetes nodes");
    Ok((cluster, peers))
}

/// Every [`INTERVAL`]: connect to nodes that joined, reclaim the space of
/// nodes that left. Failures are logged and tried again next time.
pub async fn run(cluster: InCluster, me: Option<String>, requests: mpsc::Sender<Request>) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        let nodes = match cluster.list_nodes().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the Kubernetes node list");
                continue;
            }
        };
        let Some(status) = ask(&requests, |r| Request::Ipam(IpamRequest::Status(r))).await else {
            return;
        };
        let known: Vec<KnownPeer> = status
            .peers
            .iter()
            .filter(|p| !p.removed && p.peer != status.me)
            .map(|p| KnownPeer {
                name: p.peer.to_string(),
                nickname: p.nickname.clone(),
                reachable: p.reachable,
            })
            .collect();
        let plan = plan(&nodes, me.as_deref(), &known);
        let mut peers = Vec::new();
        for address in &plan.connect {
            match crate::api::resolve_peer(address).await {
                Ok(a) => peers.push((address.clone(), a)),
                Err(e) => tracing::warn!(error = %e, "skipping a node"),
            }
        }
        ask(&requests, |done| Request::Connect {
            peers,
            replace: false,
            done,
        })
        .await;
        for peer in plan.reclaim {
            let outcome = ask(&requests, |reply| {
                Request::Ipam(IpamRequest::RemovePeer {
                    peer: peer.clone(),
                    reply,
                })
            })
            .await;
            match outcome {
                Some(Ok(said)) => {
                    tracing::info!(%peer, %said, "took back the space of a deleted node")
                }
                Some(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "cannot take back the space of a deleted node")
                }
                None => return,
            }
        }
    }
}
