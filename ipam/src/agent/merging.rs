//! Gossip and messages: merging rings and records from peers, the
//! consensus that divides the range, and what goes out.

use super::*;

impl Ipam {
    pub(super) fn broadcast(&mut self, message: Message) {
        let env = self.envelope(message);
        self.out.push_back(Outgoing::Broadcast(env.encode()));
    }

    pub(super) fn unicast(&mut self, to: Peer, message: Message) {
        let env = self.envelope(message);
        self.out.push_back(Outgoing::Unicast(to, env.encode()));
    }

    pub(super) fn envelope(&self, message: Message) -> Envelope {
        Envelope {
            cluster: self.ring.as_ref().map(|r| r.cluster.id),
            message,
        }
    }

    pub(super) fn paxos_out(&mut self) {
        while let Some((dest, msg)) = self.paxos.poll() {
            match dest {
                Destination::Everyone => self.broadcast(Message::Paxos(msg)),
                Destination::Peer(p) => self.unicast(p, Message::Paxos(msg)),
            }
        }
    }

    pub(super) fn adopt_chosen(&mut self, now: Instant) {
        if let Some(value) = self.paxos.take_chosen()
            && self.ring.is_none()
        {
            tracing::info!(cluster = format_args!("{:016x}", value.cluster), seeds = ?value.seeds, "consensus reached: dividing the range");
            let ring = Ring::divide(value.cluster, self.layout, &value.seeds);
            self.install(now, ring);
        }
    }

    /// A ring arrived (consensus, seed, or from a peer): it is ours now.
    pub(super) fn install(&mut self, now: Instant, ring: Ring) {
        self.changed_blocks.clear();
        self.confirmed.clear();
        self.activating.clear();
        let me = self.config.me;
        for b in ring.blocks_of(me) {
            let s = ring.block(b);
            if s.active {
                // Ours and active in a ring we just received: the mesh
                // already knows; confirm it again before use.
                self.activating.insert(
                    b,
                    Activation {
                        version: s.version,
                        acks: [me].into(),
                        resend: now,
                    },
                );
            }
        }
        self.ring = Some(ring);
        self.paxos.finish();
        self.conflict = None;
        self.dirty = true;
        self.record_changed = true;
        let full = self.full_gossip();
        self.out.push_back(Outgoing::Gossip(full.encode()));
        self.again = true;
    }

    pub(super) fn full_gossip(&self) -> Gossip {
        let mut records: Vec<(Peer, Record)> = self
            .records
            .iter()
            .filter(|(p, _)| **p != self.config.me)
            .map(|(p, r)| (*p, r.clone()))
            .collect();
        records.push((self.config.me, self.my_record()));
        Gossip {
            cluster: self.ring.as_ref().map(|r| r.cluster.clone()),
            in_use: self.in_use(),
            full: true,
            blocks: self.ring.as_ref().map(Ring::runs).unwrap_or_default(),
            records,
        }
    }

    /// Everything we know, for anti-entropy and new neighbors.
    pub fn full_state(&self) -> Option<Vec<u8>> {
        self.ring.as_ref().map(|_| self.full_gossip().encode())
    }

    /// Queues gossip of what changed since the last flush.
    pub(super) fn flush(&mut self) {
        self.paxos_out();
        let Some(ring) = &self.ring else {
            return;
        };
        if self.changed_blocks.is_empty() && !self.record_changed {
            return;
        }
        if self.record_changed {
            self.my_version += 1;
            self.dirty = true;
        }
        let blocks = ring.runs_of(std::mem::take(&mut self.changed_blocks));
        let records = if self.record_changed {
            vec![(self.config.me, self.my_record())]
        } else {
            Vec::new()
        };
        self.record_changed = false;
        let g = Gossip {
            cluster: Some(ring.cluster.clone()),
            in_use: self.in_use(),
            full: false,
            blocks,
            records,
        };
        self.out.push_back(Outgoing::Gossip(g.encode()));
    }

    /// A neighbor's gossip; returns what was news, to pass on.
    pub fn on_gossip(
        &mut self,
        now: Instant,
        from: Peer,
        bytes: &[u8],
    ) -> Result<Option<Vec<u8>>, IpamError> {
        let g = Gossip::decode(bytes)?;
        let news = self.merge(now, from, g)?;
        self.progress(now);
        self.flush();
        Ok(news.map(|g| g.encode()))
    }

    /// Merges gossip or a state message; returns the news.
    pub(super) fn merge(
        &mut self,
        now: Instant,
        from: Peer,
        g: Gossip,
    ) -> Result<Option<Gossip>, IpamError> {
        let Some(cluster) = g.cluster.clone() else {
            return Ok(None);
        };
        let ours = self.ring.as_ref().map(|r| r.cluster.clone());
        match ours {
            Some(c) if c == cluster => {}
            Some(c) if c.id == cluster.id => {
                return Err(IpamError::Malformed(format!(
                    "cluster {:016x} with another layout or seeds",
                    c.id
                )));
            }
            _ => {
                if !self.should_adopt(from, &cluster, g.in_use) {
                    return Ok(None);
                }
                if !g.full {
                    self.unicast(from, Message::StateRequest);
                    return Ok(None);
                }
                let ring = Ring::from_runs(cluster.clone(), &g.blocks)?;
                if self.ring.is_some() {
                    tracing::warn!(peer = %from, cluster = format_args!("{:016x}", cluster.id), "joining the peer's IPAM cluster: ours had no address in use");
                    self.records.clear();
                    self.held_elsewhere.clear();
                } else {
                    tracing::info!(peer = %from, cluster = format_args!("{:016x}", cluster.id), "joined the IPAM cluster");
                }
                self.merge_records(&g.records)?;
                self.install(now, ring);
                return Ok(Some(self.full_gossip()));
            }
        }
        let ring = self.ring.as_mut().expect("matched above");
        let changed = ring.merge(&g.blocks)?;
        let me = self.config.me;
        for b in &changed {
            let s = ring.block(*b);
            let lost = !(s.owner == me && s.active)
                && (self.confirmed.remove(b) || self.activating.remove(b).is_some());
            if lost {
                tracing::warn!(block = b, owner = %s.owner, "lost a block to a newer state");
            }
        }
        let news_blocks = ring.runs_of(changed.iter().copied());
        let news_records = self.merge_records(&g.records)?;
        if !changed.is_empty() || !news_records.is_empty() {
            self.dirty = true;
        }
        if news_blocks.is_empty() && news_records.is_empty() {
            return Ok(None);
        }
        Ok(Some(Gossip {
            cluster: Some(cluster),
            in_use: self.in_use(),
            full: false,
            blocks: news_blocks,
            records: news_records,
        }))
    }

    /// Whether to give up our ring (or lack of one) for `theirs`.
    pub(super) fn should_adopt(
        &mut self,
        from: Peer,
        theirs: &Cluster,
        their_in_use: bool,
    ) -> bool {
        if theirs.layout != self.layout {
            let text = format!(
                "peer {from} allocates from {}, this router from {}: give both the same --ipalloc-range",
                theirs.layout.range, self.layout.range
            );
            if self.conflict.as_deref() != Some(&text) {
                tracing::error!("{text}");
            }
            self.conflict = Some(text);
            return false;
        }
        let Some((ours, in_use)) = self.summary() else {
            return true;
        };
        let adopt = !in_use && (their_in_use || theirs.id < ours);
        if !adopt && in_use && their_in_use {
            let text = conflict_text(&from.to_string(), ours, theirs.id);
            if self.conflict.as_deref() != Some(&text) {
                tracing::error!("{text}");
            }
            self.conflict = Some(text);
        }
        if !adopt && !their_in_use {
            // They will take ours: help them.
            let full = self.full_gossip();
            self.unicast(from, Message::State(full));
        }
        adopt
    }

    /// Takes newer records; answers a tombstone of our own.
    pub(super) fn merge_records(
        &mut self,
        records: &[(Peer, Record)],
    ) -> Result<Vec<(Peer, Record)>, IpamError> {
        let mut news = Vec::new();
        for (peer, record) in records {
            record.validate()?;
            if *peer == self.config.me {
                // Our own record coming back (anti-entropy, a neighbour
                // passing it on) at our version, unchanged, is no news:
                // taking it as news made a new version and a new wave of
                // gossip at every round, for ever.
                let newer = record.version > self.my_version
                    || (record.version == self.my_version && *record != self.my_record());
                if newer {
                    // An rmpeer of us, or our own past before a restart
                    // from an older snapshot: we are here, say so louder.
                    if record.removed {
                        tracing::warn!(
                            "this peer was removed with rmpeer elsewhere; re-asserting the addresses it holds"
                        );
                    }
                    self.my_version = record.version;
                    self.record_changed = true;
                }
                continue;
            }
            let newer = self
                .records
                .get(peer)
                .is_none_or(|r| record.version > r.version);
            if newer {
                if let Some(old) = self.records.insert(*peer, record.clone()) {
                    for a in old.held_set().unwrap_or_default() {
                        if self.held_elsewhere.get(&a) == Some(peer) {
                            self.held_elsewhere.remove(&a);
                        }
                    }
                }
                for a in record.held_set()? {
                    self.held_elsewhere.insert(a, *peer);
                }
                news.push((*peer, record.clone()));
            }
        }
        if !news.is_empty() {
            // A lent address the claimant now publishes needs no guard.
            let held = &self.held_elsewhere;
            self.lent.retain(|a, _| !held.contains_key(a));
        }
        Ok(news)
    }

    pub fn on_broadcast(
        &mut self,
        now: Instant,
        from: Peer,
        bytes: &[u8],
    ) -> Result<(), IpamError> {
        self.on_message(now, from, bytes)
    }

    pub fn on_unicast(&mut self, now: Instant, from: Peer, bytes: &[u8]) -> Result<(), IpamError> {
        self.on_message(now, from, bytes)
    }

    pub(super) fn on_message(
        &mut self,
        now: Instant,
        from: Peer,
        bytes: &[u8],
    ) -> Result<(), IpamError> {
        let env = Envelope::decode(bytes)?;
        let ours = self.ring.as_ref().map(|r| r.cluster.id);
        let result = match env.message {
            Message::Paxos(msg) => {
                match ours {
                    // Too late for a vote: send the ring itself.
                    Some(_) => {
                        let full = self.full_gossip();
                        self.unicast(from, Message::State(full));
                    }
                    None => {
                        self.paxos.on_message(now, from, msg);
                        self.paxos_out();
                        self.adopt_chosen(now);
                    }
                }
                Ok(())
            }
            Message::StateRequest => {
                if ours.is_some() {
                    let full = self.full_gossip();
                    self.unicast(from, Message::State(full));
                }
                Ok(())
            }
            Message::State(g) => self.merge(now, from, g).map(drop),
            _ if env.cluster.is_none() || env.cluster != ours => Ok(()),
            Message::Activate { block, state } => self.on_activate(from, block, state),
            Message::ActivateAck { block, version } => {
                if let Some(act) = self.activating.get_mut(&block)
                    && act.version == version
                {
                    act.acks.insert(from);
                }
                self.check_activation(block);
                Ok(())
            }
            Message::ActivateNack { block, state } => {
                let ring = self.ring.as_mut().expect("cluster matched");
                let run = Run {
                    start: block,
                    len: 1,
                    block: state,
                };
                let changed = ring.merge(&[run])?;
                let ours = state.owner == self.config.me && state.active;
                if !changed.is_empty() && !ours {
                    tracing::warn!(block, owner = %state.owner, "activation refused: the block has a newer state");
                    self.activating.remove(&block);
                    self.confirmed.remove(&block);
                    self.changed_blocks.insert(block);
                }
                Ok(())
            }
            Message::SpaceRequest { subnet } => {
                self.on_space_request(from, subnet);
                Ok(())
            }
            Message::SpaceGrant { blocks } => {
                let ring = self.ring.as_mut().expect("cluster matched");
                let changed = ring.merge(&blocks)?;
                tracing::debug!(from = %from, blocks = changed.len(), "space granted");
                self.changed_blocks.extend(changed);
                self.dirty = true;
                if self.space.as_ref().is_some_and(|s| s.donor == from) {
                    self.space = None;
                    self.refused_by.clear();
                }
                Ok(())
            }
            Message::SpaceDenied { subnet } => {
                if self.space.as_ref().is_some_and(|s| s.donor == from) {
                    self.space = None;
                    self.refused_by.insert(from);
                    self.ask_for_space(now, subnet);
                }
                Ok(())
            }
            Message::Claim { addr } => {
                self.on_claim(now, from, addr);
                Ok(())
            }
            Message::ClaimLent { addr } => {
                if let Some(p) = self.answer_claim(addr) {
                    self.hold(&p.owner, addr);
                    self.finish(p.op, Ok(allocation(addr, p.subnet)));
                }
                Ok(())
            }
            Message::ClaimGranted { addr, blocks } => {
                self.claims.remove(&addr);
                let ring = self.ring.as_mut().expect("cluster matched");
                let changed = ring.merge(&blocks)?;
                self.changed_blocks.extend(changed);
                self.dirty = true;
                Ok(())
            }
            Message::ClaimDenied { addr, reason } => {
                if let Some(p) = self.answer_claim(addr) {
                    self.finish(
                        p.op,
                        Err(IpamError::AddressInUse {
                            addr: Ipv4Addr::from(addr),
                            holder: reason,
                        }),
                    );
                }
                Ok(())
            }
        };
        self.progress(now);
        self.flush();
        result
    }
}
