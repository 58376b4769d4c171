//! What each router tells the mesh about its connections, on the `links`
//! gossip channel: per peer, the overlay its data takes (or none), the
//! MTU, whether it is encrypted and why it is on that path. Topology
//! gossip says only whether a connection carries data; this lets any
//! router show the whole mesh as its own connections are shown (the web
//! page's graph, `weft status peers`).
//!
//! One record per router, the newest winning, forgotten some time after
//! its router left ([`crate::mesh::per_router`]). Pure.

use serde::{Deserialize, Serialize};

use crate::{
    api::report::ConnectionReport,
    identity::PeerName,
    mesh::{
        channel::Shared,
        per_router::{PerRouter, RouterRecord},
    },
};

/// The mesh channel link records travel on.
pub const CHANNEL: &str = "links";

/// Bounds on what a peer may make us hold: links per router (more than
/// any connection limit), and the length of the words in them.
const MAX_LINKS: usize = 1024;
const MAX_OVERLAY: usize = 32;
const MAX_REASON: usize = 512;

/// One connection of a router, as it sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub peer: PeerName,
    /// `fastdp`, `userspace`, ...; none: no data path of its own.
    pub overlay: Option<String>,
    pub mtu: Option<u32>,
    pub encrypted: Option<bool>,
    pub reason: Option<String>,
}

/// One router's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub version: u64,
    pub links: Vec<Link>,
}

impl RouterRecord for LinkRecord {
    const WHAT: &'static str = "link records";

    fn version(&self) -> u64 {
        self.version
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    fn within_bounds(&self) -> bool {
        self.links.len() <= MAX_LINKS
            && self.links.iter().all(|l| {
                l.overlay.as_ref().is_none_or(|o| o.len() <= MAX_OVERLAY)
                    && l.reason.as_ref().is_none_or(|r| r.len() <= MAX_REASON)
            })
    }
}

/// Every router's links, as this router knows them.
pub type Links = PerRouter<LinkRecord>;

/// The channel as the router shares it between the mesh and its own task.
pub type LinksHandle = Shared<Links>;

fn clip(text: &str, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Our links, from our connections as the report shows them: those to a
/// named peer, one per peer, within the bounds a peer would hold us to.
pub fn from_connections(connections: &[ConnectionReport]) -> LinkRecord {
    let mut links: Vec<Link> = connections
        .iter()
        .filter(|c| matches!(c.state.as_str(), "established" | "connected"))
        .filter_map(|c| {
            let peer: PeerName = c.peer.as_ref()?.parse().ok()?;
            Some(Link {
                peer,
                overlay: c.overlay.as_ref().map(|o| clip(o, MAX_OVERLAY)),
                mtu: c.mtu,
                encrypted: c.encrypted,
                reason: c.reason.as_ref().map(|r| clip(r, MAX_REASON)),
            })
        })
        .collect();
    links.sort_by_key(|l| l.peer);
    links.dedup_by_key(|l| l.peer);
    links.truncate(MAX_LINKS);
    LinkRecord { version: 0, links }
}

impl Links {
    /// What `router` says of its connection to `peer`.
    pub fn link(&self, router: PeerName, peer: PeerName) -> Option<&Link> {
        self.get(router)?.links.iter().find(|l| l.peer == peer)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::mesh::{Channel, Outgoing};

    fn name(n: u64) -> PeerName {
        PeerName::from_u64(n)
    }

    fn connection(peer: Option<PeerName>, state: &str, overlay: Option<&str>) -> ConnectionReport {
        ConnectionReport {
            peer: peer.map(|p| p.to_string()),
            nickname: None,
            address: "192.0.2.2:6783".into(),
            outbound: true,
            state: state.into(),
            overlay: overlay.map(str::to_string),
            encrypted: Some(false),
            mtu: Some(1437),
            reason: Some("no-datapath".into()),
            advice: None,
        }
    }

    #[test]
    fn our_connections_become_our_links_and_spread() {
        let now = Instant::now();
        let record = from_connections(&[
            connection(Some(name(3)), "connected", None),
            connection(Some(name(2)), "established", Some("userspace")),
            // Not a peer's connection (yet): no link.
            connection(None, "connecting", None),
            connection(Some(name(4)), "failed", None),
        ]);
        let peers: Vec<PeerName> = record.links.iter().map(|l| l.peer).collect();
        assert_eq!(peers, [name(2), name(3)]);
        let (mut a, mut b) = (Links::new(name(1), 10), Links::new(name(2), 10));
        assert!(a.publish(record.clone()));
        assert!(!a.publish(record.clone()), "the same links again: no news");
        while let Some(Outgoing::Gossip(p)) = a.poll_outgoing() {
            b.on_gossip(now, name(1), &p).unwrap();
        }
        let seen = b.link(name(1), name(2)).unwrap();
        assert_eq!(seen.overlay.as_deref(), Some("userspace"));
        assert_eq!(seen.mtu, Some(1437));
        assert_eq!(b.link(name(1), name(3)).unwrap().overlay, None);
        assert!(b.link(name(1), name(4)).is_none());
    }

    #[test]
    fn long_words_are_clipped_and_oversized_gossip_refused() {
        let mut long = connection(Some(name(2)), "connected", Some(&"x".repeat(100)));
        long.reason = Some("é".repeat(400));
        let record = from_connections(&[long]);
        assert!(record.within_bounds());
        assert_eq!(record.links[0].overlay.as_ref().unwrap().len(), MAX_OVERLAY);
        let mut huge = record.clone();
        huge.links[0].reason = Some("r".repeat(MAX_REASON + 1));
        let mut l = Links::new(name(1), 1);
        let payload = crate::mesh::per_router::encode(&vec![(name(2), huge)]);
        assert!(l.on_gossip(Instant::now(), name(2), &payload).is_err());
        assert!(l.on_gossip(Instant::now(), name(2), &[0xff; 3]).is_err());
        assert!(l.get(name(2)).is_none());
    }
}
