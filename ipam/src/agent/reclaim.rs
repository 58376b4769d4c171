//! Taking space back: from members gone long enough (automatically),
//! from a peer named by hand (rmpeer), and a reset that forgets all.

use super::*;

impl Ipam {
    /// Keeps a few addresses ready, and gives back what is idle.
    pub(super) fn maintain(&mut self, now: Instant) {
        let Some(ring) = &self.ring else {
            return;
        };
        let subnet = self.config.default_subnet;
        let blocks = self.layout.blocks_in(subnet);
        let free: u32 = self
            .confirmed
            .range(blocks.start..blocks.end)
            .map(|b| self.free_in(*b, subnet))
            .sum();
        if free < SPARE && ring.blocks_of(self.config.me).next().is_some() {
            self.activate_one(now, subnet);
        }
        // An empty block beyond what the spare needs goes back to
        // inactive: it can then be given away or reclaimed.
        let size = self.layout.block_size();
        if free >= size + SPARE {
            let empty = self.confirmed.iter().rev().copied().find(|b| {
                self.addresses(*b, self.layout.range)
                    .all(|a| !self.taken(a))
            });
            if let Some(b) = empty {
                let me = self.config.me;
                let ring = self.ring.as_mut().expect("checked above");
                ring.bump(b, me, false);
                self.confirmed.remove(&b);
                self.changed_blocks.insert(b);
                self.dirty = true;
            }
        }
    }

    /// Takes the inactive blocks of members gone longer than the grace
    /// period, when a majority of members is reachable and we are the
    /// lowest-named of them (so only one peer does it).
    pub(super) fn reclaim(&mut self, now: Instant) {
        let (Some(grace), Some(ring)) = (self.config.reclaim_after, &self.ring) else {
            return;
        };
        let members = ring.members();
        let reachable: Vec<Peer> = members
            .iter()
            .filter(|p| self.reachable.contains(p))
            .copied()
            .collect();
        if !self.majority(reachable.len()) || reachable.first() != Some(&self.config.me) {
            return;
        }
        let gone: Vec<Peer> = members
            .iter()
            .filter(|p| {
                self.unreachable_since
                    .get(p)
                    .is_some_and(|since| now >= *since + grace && now >= self.started + grace)
            })
            .copied()
            .collect();
        let me = self.config.me;
        for peer in gone {
            let ring = self.ring.as_mut().expect("checked above");
            let taken: Vec<u32> = ring
                .blocks_of(peer)
                .filter(|b| !ring.block(*b).active)
                .collect();
            for b in &taken {
                ring.bump(*b, me, false);
            }
            if !taken.is_empty() {
                tracing::warn!(%peer, blocks = taken.len(), "reclaimed the unused space of a peer gone longer than the grace period");
                self.changed_blocks.extend(taken);
                self.dirty = true;
            }
        }
    }

    /// `weft rmpeer`: takes over all space of a departed peer and forgets
    /// its addresses. Returns the number of blocks taken.
    pub fn remove_peer(&mut self, now: Instant, peer: Peer) -> Result<u32, IpamError> {
        if peer == self.config.me {
            return Err(IpamError::CannotRemoveSelf);
        }
        if self.reachable.contains(&peer) {
            return Err(IpamError::PeerReachable(peer.to_string()));
        }
        let me = self.config.me;
        let ring = self
            .ring
            .as_mut()
            .ok_or_else(|| IpamError::UnknownPeer(peer.to_string()))?;
        let taken: Vec<u32> = ring.blocks_of(peer).collect();
        let known = self.records.contains_key(&peer);
        if taken.is_empty() && !known {
            return Err(IpamError::UnknownPeer(peer.to_string()));
        }
        for b in &taken {
            ring.bump(*b, me, false);
        }
        let old = self.records.get(&peer).cloned().unwrap_or_default();
        let tomb = Record {
            version: old.version + 1,
            nickname: old.nickname,
            held: Vec::new(),
            removed: true,
        };
        self.records.insert(peer, tomb.clone());
        self.rebuild_held();
        tracing::warn!(%peer, blocks = taken.len(), "removed peer: its space is ours now");
        self.changed_blocks.extend(taken.iter().copied());
        self.dirty = true;
        let ring = self.ring.as_ref().expect("checked above");
        let g = Gossip {
            cluster: Some(ring.cluster.clone()),
            in_use: self.in_use(),
            full: false,
            blocks: ring.runs_of(std::mem::take(&mut self.changed_blocks)),
            records: vec![(peer, tomb)],
        };
        self.out.push_back(Outgoing::Gossip(g.encode()));
        self.progress(now);
        self.flush();
        Ok(taken.len() as u32)
    }

    /// `weft ipam reset`: forgets the ring, our addresses included, so
    /// that this peer can join another cluster.
    pub fn reset(&mut self, now: Instant) {
        tracing::warn!("IPAM reset: forgetting the ring and every address this peer held");
        self.ring = None;
        self.records.clear();
        self.held_elsewhere.clear();
        self.handles.clear();
        self.held_here.clear();
        self.confirmed.clear();
        self.activating.clear();
        self.lent.clear();
        self.claims.clear();
        self.space = None;
        self.conflict = None;
        self.my_version += 1;
        let quorum = self.paxos.quorum();
        let elector = matches!(self.config.init, Init::Consensus(_));
        self.paxos = Paxos::new(self.config.me, quorum, elector, Acceptor::default());
        self.paxos.dirty = true;
        self.dirty = true;
        for p in std::mem::take(&mut self.pending) {
            self.finish(
                p.op,
                Err(IpamError::NoSpace {
                    subnet: p.subnet,
                    detail: "IPAM was reset".into(),
                }),
            );
        }
        // Whoever has a ring, send it: we join the mesh's cluster.
        self.broadcast(Message::StateRequest);
        self.progress(now);
    }
}
