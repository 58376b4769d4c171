//! What `weft status ipam` shows.

use super::*;

impl Ipam {
    pub fn status(&self, now: Instant) -> Status {
        let me = self.config.me;
        let mut peers: BTreeMap<Peer, PeerStatus> = BTreeMap::new();
        let size = u64::from(self.layout.block_size());
        if let Some(ring) = &self.ring {
            for (peer, h) in ring.holdings() {
                let e = peers.entry(peer).or_default();
                e.blocks = h.blocks;
                e.active_blocks = h.active;
                e.addresses = u64::from(h.blocks) * size;
            }
        }
        let mut in_use_by_owner: BTreeMap<Peer, u64> = BTreeMap::new();
        if let Some(ring) = &self.ring {
            let held = self
                .held_elsewhere
                .keys()
                .copied()
                .chain(self.held_here.iter().copied());
            for a in held {
                if let Some(b) = self.layout.block_of(Ipv4Addr::from(a)) {
                    *in_use_by_owner.entry(ring.block(b).owner).or_default() += 1;
                }
            }
        }
        for (peer, e) in &mut peers {
            e.peer = *peer;
            e.in_use_in_blocks = in_use_by_owner.get(peer).copied().unwrap_or(0);
            e.free = e.addresses.saturating_sub(e.in_use_in_blocks);
        }
        for (peer, r) in &self.records {
            let e = peers.entry(*peer).or_default();
            e.peer = *peer;
            e.nickname = r.nickname.clone();
            e.held = r.held_set().map(|s| s.len() as u64).unwrap_or(0);
            e.removed = r.removed;
        }
        let mine = peers.entry(me).or_default();
        mine.peer = me;
        mine.nickname = self.config.nickname.clone();
        mine.held = self.handles.values().map(|h| h.len() as u64).sum();
        for (peer, e) in &mut peers {
            e.reachable = *peer == me || self.reachable.contains(peer);
            e.unreachable_secs = self
                .unreachable_since
                .get(peer)
                .filter(|_| !e.reachable)
                .map(|t| now.saturating_duration_since(*t).as_secs());
        }
        let state = if let Some(c) = &self.conflict {
            format!("conflict: {c}")
        } else if self.ring.is_some() {
            "ready".to_string()
        } else {
            match &self.config.init {
                Init::Observer => "observer: waiting for a ring from the mesh".into(),
                Init::Consensus(n) if self.paxos.proposing() => {
                    format!("awaiting consensus among {n} initial peers")
                }
                Init::Consensus(n) => format!(
                    "idle: the range is divided among {n} initial peers on the first allocation"
                ),
                Init::Seed(_) => "waiting for the ring".into(),
            }
        };
        Status {
            me,
            range: self.layout.range,
            default_subnet: self.config.default_subnet,
            cluster: self.ring.as_ref().map(|r| format!("{:016x}", r.cluster.id)),
            block_size: self.layout.block_size(),
            state,
            pending: self.pending.len(),
            peers: peers.into_values().collect(),
            containers: self
                .handles
                .iter()
                .map(|(k, v)| (k.clone(), v.iter().map(|a| Ipv4Addr::from(*a)).collect()))
                .collect(),
        }
    }
}
