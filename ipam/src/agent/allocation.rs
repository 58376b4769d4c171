//! Handing out, claiming, adopting and releasing addresses, and the
//! requests that wait for space.

use super::*;

impl Ipam {
    /// An address for container `owner` in `subnet` (the default subnet
    /// when none). Asking again for the same owner and subnet gives the
    /// same address. The result comes through [`Ipam::take_done`].
    pub fn allocate(&mut self, now: Instant, owner: &str, subnet: Option<Ipv4Net>) -> OpId {
        let subnet = self.subnet(subnet);
        self.request(now, owner, subnet, Want::Any)
    }

    /// The given address for container `owner`.
    pub fn claim(
        &mut self,
        now: Instant,
        owner: &str,
        addr: Ipv4Addr,
        subnet: Option<Ipv4Net>,
    ) -> OpId {
        let checked = self.subnet(subnet).and_then(|s| {
            if s.contains(&addr) {
                Ok(s)
            } else {
                Err(IpamError::AddressOutside { addr, range: s })
            }
        });
        self.request(now, owner, checked, Want::Addr(u32::from(addr)))
    }

    /// Queues a request in `subnet` (or fails it at once with the reason
    /// the subnet was refused) and moves what can move.
    fn request(
        &mut self,
        now: Instant,
        owner: &str,
        subnet: Result<Ipv4Net, IpamError>,
        want: Want,
    ) -> OpId {
        let op = self.op();
        match subnet {
            Err(e) => self.finish(op, Err(e)),
            Ok(subnet) => {
                self.pending.push(Pending {
                    op,
                    owner: owner.to_string(),
                    subnet,
                    want,
                    deadline: now + self.config.request_timeout,
                });
                self.progress(now);
            }
        }
        self.flush();
        op
    }

    /// Records that `owner` holds `addr` without asking anyone: for a
    /// state rebuilt from what the host's containers really use (the
    /// stored state was lost) and for settling an interface whose holding
    /// went missing. The address is on the wire already; publishing it
    /// keeps every router from handing it out. Refused outside the range,
    /// and when another owner is known to hold it.
    pub fn adopt(&mut self, owner: &str, addr: Ipv4Addr) -> Result<(), IpamError> {
        let range = self.layout.range;
        if !range.contains(&addr) {
            return Err(IpamError::AddressOutside { addr, range });
        }
        let a = u32::from(addr);
        if self.handles.get(owner).is_some_and(|h| h.contains(&a)) {
            return Ok(());
        }
        if let Some(holder) = self.holder_of(a) {
            return Err(IpamError::AddressInUse { addr, holder });
        }
        self.hold(owner, a);
        tracing::info!(owner, %addr, "adopted an address a container on this host uses");
        Ok(())
    }

    /// Gives back the addresses of `owner` (all of them, or one). Returns
    /// what was released.
    pub fn release(&mut self, now: Instant, owner: &str, addr: Option<Ipv4Addr>) -> Vec<Ipv4Addr> {
        let mut released = Vec::new();
        if let Some(held) = self.handles.get_mut(owner) {
            match addr {
                Some(a) => {
                    if held.remove(&u32::from(a)) {
                        released.push(a);
                    }
                }
                None => released.extend(std::mem::take(held).into_iter().map(Ipv4Addr::from)),
            }
            if held.is_empty() {
                self.handles.remove(owner);
            }
        }
        if !released.is_empty() {
            for a in &released {
                self.held_here.remove(&u32::from(*a));
            }
            self.record_changed = true;
            self.dirty = true;
            tracing::debug!(owner, addresses = ?released, "released");
        }
        self.maintain(now);
        self.flush();
        released
    }

    /// The addresses of a container.
    pub fn lookup(&self, owner: &str) -> Vec<Allocation> {
        let Some(held) = self.handles.get(owner) else {
            return Vec::new();
        };
        held.iter()
            .map(|a| {
                let addr = Ipv4Addr::from(*a);
                let subnet = if self.config.default_subnet.contains(&addr) {
                    self.config.default_subnet
                } else {
                    self.layout.range
                };
                Allocation { addr, subnet }
            })
            .collect()
    }

    /// A peer answered our claim on `addr`: the claim is settled, and the
    /// request waiting for that address (if any) is taken to be finished.
    pub(super) fn answer_claim(&mut self, addr: u32) -> Option<Pending> {
        self.claims.remove(&addr);
        let i = self
            .pending
            .iter()
            .position(|p| matches!(p.want, Want::Addr(a) if a == addr))?;
        Some(self.pending.remove(i))
    }

    /// Our record, as the mesh sees it.
    pub(super) fn my_record(&self) -> Record {
        Record {
            version: self.my_version,
            nickname: self.config.nickname.clone(),
            held: Record::runs(&self.held_here),
            removed: false,
        }
    }

    pub(super) fn rebuild_held(&mut self) {
        self.held_elsewhere.clear();
        for (peer, record) in &self.records {
            if *peer == self.config.me {
                continue;
            }
            if let Ok(set) = record.held_set() {
                for a in set {
                    self.held_elsewhere.insert(a, *peer);
                }
            }
        }
    }

    /// Any address in use in the cluster we know of.
    pub(super) fn in_use(&self) -> bool {
        !self.held_here.is_empty() || !self.held_elsewhere.is_empty()
    }

    pub(super) fn holder_of(&self, a: u32) -> Option<String> {
        if self.held_here.contains(&a)
            && let Some((owner, _)) = self.handles.iter().find(|(_, h)| h.contains(&a))
        {
            return Some(format!("container {owner} on this host"));
        }
        if let Some(p) = self.held_elsewhere.get(&a) {
            let nick = self
                .records
                .get(p)
                .map(|r| r.nickname.as_str())
                .unwrap_or("");
            return Some(format!("peer {p} ({nick})"));
        }
        self.lent
            .contains_key(&a)
            .then(|| "a peer it was just lent to".to_string())
    }

    pub(super) fn taken(&self, a: u32) -> bool {
        self.held_elsewhere.contains_key(&a)
            || self.lent.contains_key(&a)
            || self.held_here.contains(&a)
    }

    /// Addresses of block `b` that `subnet` allows.
    pub(super) fn addresses(&self, b: u32, subnet: Ipv4Net) -> std::ops::RangeInclusive<u32> {
        let start = self.layout.block_start(b);
        let end = start + (self.layout.block_size() - 1);
        let (first, last) = host_range(subnet);
        start.max(first)..=end.min(last)
    }

    pub(super) fn free_in(&self, b: u32, subnet: Ipv4Net) -> u32 {
        self.addresses(b, subnet)
            .filter(|a| !self.taken(*a))
            .count() as u32
    }

    pub(super) fn lowest_free(&self, subnet: Ipv4Net) -> Option<u32> {
        let blocks = self.layout.blocks_in(subnet);
        self.confirmed
            .range(blocks.start..blocks.end)
            .find_map(|b| self.addresses(*b, subnet).find(|a| !self.taken(*a)))
    }

    pub(super) fn hold(&mut self, owner: &str, a: u32) {
        self.handles.entry(owner.to_string()).or_default().insert(a);
        self.held_here.insert(a);
        self.record_changed = true;
        self.dirty = true;
    }

    /// Moves every waiting request as far as it goes now.
    pub(super) fn progress(&mut self, now: Instant) {
        loop {
            self.again = false;
            self.progress_once(now);
            if !self.again {
                return;
            }
        }
    }

    pub(super) fn progress_once(&mut self, now: Instant) {
        if self.conflict.is_some() && self.ring.is_none() {
            return;
        }
        if self.ring.is_none() {
            if !self.pending.is_empty() {
                let cluster = self.random();
                self.paxos.want(now, cluster);
                self.paxos_out();
                self.adopt_chosen(now);
            }
            if self.ring.is_none() {
                return;
            }
        }
        let mut still = Vec::new();
        let mut need_space: Option<Ipv4Net> = None;
        for p in std::mem::take(&mut self.pending) {
            if let Some(a) = self
                .handles
                .get(&p.owner)
                .and_then(|h| h.iter().find(|a| p.subnet.contains(&Ipv4Addr::from(**a))))
                .copied()
                .filter(|a| {
                    matches!(p.want, Want::Any) || matches!(p.want, Want::Addr(w) if w == *a)
                })
            {
                self.finish(p.op, Ok(allocation(a, p.subnet)));
                continue;
            }
            match p.want {
                Want::Any => match self.lowest_free(p.subnet) {
                    Some(a) => {
                        self.hold(&p.owner, a);
                        tracing::debug!(owner = %p.owner, addr = %Ipv4Addr::from(a), "allocated");
                        self.finish(p.op, Ok(allocation(a, p.subnet)));
                    }
                    None => {
                        if !self.activate_one(now, p.subnet) {
                            need_space.get_or_insert(p.subnet);
                        }
                        still.push(p);
                    }
                },
                Want::Addr(a) => match self.try_claim(now, &p, a) {
                    Some(result) => self.finish(p.op, result),
                    None => still.push(p),
                },
            }
        }
        self.pending = still;
        if let Some(subnet) = need_space
            && self.space.is_none()
        {
            self.ask_for_space(now, subnet);
        }
    }

    /// A claim's next step: done (Some) or waiting (None).
    pub(super) fn try_claim(
        &mut self,
        now: Instant,
        p: &Pending,
        a: u32,
    ) -> Option<Result<Allocation, IpamError>> {
        let addr = Ipv4Addr::from(a);
        if let Some(holder) = self.holder_of(a) {
            return Some(Err(IpamError::AddressInUse { addr, holder }));
        }
        let b = self.layout.block_of(addr)?;
        let me = self.config.me;
        let state = self.ring.as_ref()?.block(b);
        if state.owner == me {
            if self.confirmed.contains(&b) {
                self.hold(&p.owner, a);
                return Some(Ok(allocation(a, p.subnet)));
            }
            if !self.activating.contains_key(&b) {
                self.start_activation(now, b);
            }
            return None;
        }
        if !self.reachable.contains(&state.owner) {
            // The mesh reports reachability after the gossip that brought
            // the ring, and a router may take long to start: fail only an
            // owner we have seen unreachable for a while.
            let since = *self.unreachable_since.entry(state.owner).or_insert(now);
            if now < since.max(self.started) + OWNER_PATIENCE {
                return None;
            }
            return Some(Err(IpamError::NoSpace {
                subnet: p.subnet,
                detail: format!(
                    "{addr} belongs to peer {}, which is unreachable",
                    state.owner
                ),
            }));
        }
        let asked = self
            .claims
            .get(&a)
            .is_some_and(|(to, at)| *to == state.owner && now < *at + RESEND * 3);
        if !asked {
            self.claims.insert(a, (state.owner, now));
            self.unicast(state.owner, Message::Claim { addr: a });
        }
        None
    }

    /// When waiting claims stop waiting for their unreachable owners.
    pub(super) fn claims_give_up_at(&self) -> impl Iterator<Item = Instant> + '_ {
        self.pending.iter().filter_map(|p| {
            let Want::Addr(a) = p.want else { return None };
            let b = self.layout.block_of(Ipv4Addr::from(a))?;
            let owner = self.ring.as_ref()?.block(b).owner;
            let since = self.unreachable_since.get(&owner)?;
            Some(*since.max(&self.started) + OWNER_PATIENCE)
        })
    }

    /// Fails the allocations waiting for space in `subnet`.
    pub(super) fn fail_waiting(&mut self, subnet: Ipv4Net, detail: &str) {
        if self.activating_in(subnet) {
            return;
        }
        let (failed, still): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| matches!(p.want, Want::Any) && p.subnet == subnet);
        self.pending = still;
        for p in failed {
            self.finish(
                p.op,
                Err(IpamError::NoSpace {
                    subnet,
                    detail: detail.to_string(),
                }),
            );
        }
        self.refused_by.clear();
    }

    /// What a request is stuck on, for its timeout error.
    pub(super) fn waiting_for(&self, p: &Pending) -> String {
        if self.ring.is_none() {
            return match &self.config.init {
                Init::Observer => "waiting for the IPAM ring from a peer (this router is an observer: connect it to a mesh that allocates)".into(),
                Init::Consensus(n) => format!(
                    "waiting for IPAM consensus among {n} initial peers ({} needed; {} reachable): launch the others, or check --ipalloc-init",
                    n / 2 + 1,
                    self.reachable.len().max(1)
                ),
                Init::Seed(_) => "waiting for the IPAM ring".into(),
            };
        }
        if let Some(c) = &self.conflict {
            return format!("waiting while {c}");
        }
        if !self.refused_by.is_empty() || self.space_retry.is_some() {
            return format!(
                "waiting for space in {}: the reachable peers with unused space had none to spare (asked again every {} s)",
                p.subnet,
                (RESEND * 2).as_secs()
            );
        }
        format!(
            "waiting for space in {} from other peers (a majority of the peers owning space must be reachable)",
            p.subnet
        )
    }
}
