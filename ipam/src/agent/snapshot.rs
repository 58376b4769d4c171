//! The agent's state on disk: written after every change, read at start.

use super::*;

/// What the router stores: enough to restart without losing an address
/// or a promise.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    me: Peer,
    range: Ipv4Net,
    cluster: Option<Cluster>,
    blocks: Vec<Run>,
    records: Vec<(Peer, Record)>,
    my_version: u64,
    handles: BTreeMap<String, BTreeSet<u32>>,
    confirmed: BTreeSet<u32>,
    acceptor: Acceptor,
}

const SNAPSHOT_FORMAT: u32 = 1;

impl Ipam {
    /// Restarts from a stored snapshot.
    pub fn restore(config: Config, now: Instant, bytes: &[u8]) -> Result<Ipam, IpamError> {
        let s: Snapshot = postcard::from_bytes(bytes)
            .map_err(|e| IpamError::Malformed(format!("stored IPAM state: {e}")))?;
        if s.format != SNAPSHOT_FORMAT {
            return Err(IpamError::StateMismatch(format!(
                "format {} (this weft reads {SNAPSHOT_FORMAT})",
                s.format
            )));
        }
        if s.me != config.me {
            return Err(IpamError::StateMismatch(format!(
                "it belongs to peer {}, this router is {}; use that peer's --name or another --data-dir",
                s.me, config.me
            )));
        }
        if s.range.trunc() != config.range.trunc() {
            return Err(IpamError::StateMismatch(format!(
                "it was made for --ipalloc-range {}, this router was given {}; launch with {} or run `weft reset --detach` to start over (takes this host's containers off the network and forgets their addresses)",
                s.range, config.range, s.range
            )));
        }
        let mut ipam = Ipam::new(config, now)?;
        ipam.ring = match s.cluster {
            Some(cluster) => Some(Ring::from_runs(cluster, &s.blocks)?),
            None => ipam.ring.take(),
        };
        ipam.records = s.records.into_iter().collect();
        ipam.my_version = s.my_version;
        ipam.handles = s.handles;
        ipam.held_here = ipam.handles.values().flatten().copied().collect();
        ipam.confirmed = s.confirmed;
        ipam.paxos = Paxos::new(
            ipam.config.me,
            ipam.paxos.quorum(),
            matches!(ipam.config.init, Init::Consensus(_)),
            s.acceptor,
        );
        ipam.rebuild_held();
        // Blocks we had begun to activate: finish the job.
        if let Some(ring) = &ipam.ring {
            let me = ipam.config.me;
            let unconfirmed: Vec<(u32, u32)> = ring
                .blocks_of(me)
                .map(|b| (b, ring.block(b)))
                .filter(|(b, s)| s.active && !ipam.confirmed.contains(b))
                .map(|(b, s)| (b, s.version))
                .collect();
            for (b, version) in unconfirmed {
                ipam.activating.insert(
                    b,
                    Activation {
                        version,
                        acks: [me].into(),
                        resend: now,
                    },
                );
            }
            ipam.confirmed.retain(|b| {
                let s = ring.block(*b);
                s.owner == me && s.active
            });
        }
        ipam.dirty = false;
        Ok(ipam)
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let s = Snapshot {
            format: SNAPSHOT_FORMAT,
            me: self.config.me,
            range: self.layout.range,
            cluster: self.ring.as_ref().map(|r| r.cluster.clone()),
            blocks: self.ring.as_ref().map(Ring::runs).unwrap_or_default(),
            records: self.records.iter().map(|(p, r)| (*p, r.clone())).collect(),
            my_version: self.my_version,
            handles: self.handles.clone(),
            confirmed: self.confirmed.clone(),
            acceptor: self.paxos.acceptor.clone(),
        };
        postcard::to_allocvec(&s).expect("snapshots serialize")
    }

    /// Whether state changed since the last [`Ipam::saved`]: store a
    /// snapshot before sending anything or answering anyone.
    pub fn dirty(&self) -> bool {
        self.dirty || self.paxos.dirty
    }

    pub fn saved(&mut self) {
        self.dirty = false;
        self.paxos.dirty = false;
    }
}
