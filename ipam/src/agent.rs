//! One peer's IPAM: allocation, space moving between peers, ring merging,
//! reclaim and cluster identity, as a state machine with no I/O.
//!
//! Safety rests on three rules, which the simulation test checks:
//! - A peer hands out addresses only from blocks it owns, that are active,
//!   and whose activation a majority of the ring's members acknowledged
//!   ("confirmed"). So a peer cut off in a minority can use what it had,
//!   but cannot start using more.
//! - Only a block's owner changes it, except a reclaim of a departed
//!   owner's *inactive* blocks, which needs a majority of members
//!   reachable. An inactive block holds no addresses, and a departed
//!   owner in the minority cannot have activated it since. When an
//!   owner's write and a reclaim race to the same version, the active
//!   state wins everywhere.
//! - Every peer publishes the addresses it holds in its record, and nobody
//!   allocates an address any record holds, whatever the ring says.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    IpamError, Peer,
    layout::{Layout, host_range},
    message::{Envelope, Gossip, Message},
    paxos::{Acceptor, Destination, Paxos},
    record::Record,
    ring::{Block, Cluster, Ring, Run},
    status::{PeerStatus, Status},
};

/// How the first division of the range is agreed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Init {
    /// Paxos among this many initial peers (each launched with the same N).
    Consensus(usize),
    /// These peers divide the range without a vote: every peer given the
    /// same list builds the same ring.
    Seed(Vec<Peer>),
    /// Never divides the range: waits for a ring from the mesh.
    Observer,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub me: Peer,
    pub nickname: String,
    pub range: Ipv4Net,
    /// Where `allocate` takes addresses when no subnet is given.
    pub default_subnet: Ipv4Net,
    pub init: Init,
    /// Reclaim the inactive space of members unreachable this long.
    pub reclaim_after: Option<Duration>,
    /// How long a request may wait (for consensus, space, a claim).
    pub request_timeout: Duration,
    pub seed: u64,
}

impl Config {
    pub fn new(me: Peer, range: Ipv4Net) -> Config {
        Config {
            me,
            nickname: String::new(),
            range,
            default_subnet: range,
            init: Init::Consensus(1),
            reclaim_after: None,
            request_timeout: Duration::from_secs(30),
            seed: me.0,
        }
    }
}

pub type OpId = u64;

/// An address and the subnet it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub addr: Ipv4Addr,
    pub subnet: Ipv4Net,
}

impl Allocation {
    /// The address with its subnet's prefix, as an interface takes it.
    pub fn cidr(&self) -> Ipv4Net {
        Ipv4Net::new(self.addr, self.subnet.prefix_len()).expect("prefix of a subnet")
    }
}

/// A finished request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub op: OpId,
    pub result: Result<Allocation, IpamError>,
}

/// What the agent wants sent over the mesh's `ipam` channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Gossip(Vec<u8>),
    Broadcast(Vec<u8>),
    Unicast(Peer, Vec<u8>),
}

#[derive(Clone, Debug)]
enum Want {
    Any,
    Addr(u32),
}

#[derive(Clone, Debug)]
struct Pending {
    op: OpId,
    owner: String,
    subnet: Ipv4Net,
    want: Want,
    deadline: Instant,
}

#[derive(Clone, Debug)]
struct Activation {
    version: u32,
    acks: BTreeSet<Peer>,
    resend: Instant,
}

#[derive(Clone, Debug)]
struct SpaceAsk {
    donor: Peer,
    subnet: Ipv4Net,
    resend: Instant,
    /// How many times in a row this donor left the request unanswered.
    unanswered: u32,
}

/// A donor that leaves this many requests in a row unanswered counts as
/// having said no, so that another peer is asked (and it is asked again
/// when everyone has been).
const UNANSWERED_LIMIT: u32 = 3;

/// Keep at least this many free addresses ready in confirmed blocks, so
/// that allocations do not wait for an activation.
const SPARE: u32 = 8;
/// Unanswered activations and space requests are sent again after this.
const RESEND: Duration = Duration::from_secs(1);
/// After a start, the mesh is still being found: a claim in a block whose
/// owner is not reachable yet waits this long for it instead of failing.
const STARTUP_GRACE: Duration = Duration::from_secs(10);
/// An address lent in our block is protected until the claimant's record
/// (which then holds it) has had time to arrive.
const LEND_PROTECTION: Duration = Duration::from_secs(60);
/// Blocks given per space request at most.
const MAX_GRANT: usize = 256;

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

pub struct Ipam {
    config: Config,
    layout: Layout,
    ring: Option<Ring>,
    /// Other peers' records (ours is built from `handles`).
    records: BTreeMap<Peer, Record>,
    my_version: u64,
    /// Addresses per container id.
    handles: BTreeMap<String, BTreeSet<u32>>,
    /// Addresses other records hold, and who holds them.
    held_elsewhere: BTreeMap<u32, Peer>,
    /// Every address in `handles`.
    held_here: BTreeSet<u32>,
    confirmed: BTreeSet<u32>,
    activating: BTreeMap<u32, Activation>,
    lent: BTreeMap<u32, Instant>,
    pending: Vec<Pending>,
    space: Option<SpaceAsk>,
    /// Donors that said no since our last grant.
    refused_by: BTreeSet<Peer>,
    /// When to ask again peers that all refused space.
    space_retry: Option<Instant>,
    claims: BTreeMap<u32, (Peer, Instant)>,
    reachable: BTreeSet<Peer>,
    unreachable_since: BTreeMap<Peer, Instant>,
    paxos: Paxos,
    conflict: Option<String>,
    next_op: OpId,
    rng: u64,
    changed_blocks: BTreeSet<u32>,
    record_changed: bool,
    out: VecDeque<Outgoing>,
    done: Vec<Done>,
    dirty: bool,
    /// When this agent was made or restored (see [`STARTUP_GRACE`]).
    started: Instant,
    /// Something happened during [`Ipam::progress`] that lets waiting
    /// requests move again.
    again: bool,
}

impl Ipam {
    pub fn new(config: Config, now: Instant) -> Result<Ipam, IpamError> {
        let layout = Layout::new(config.range)?;
        layout.check_subnet(config.default_subnet)?;
        let (quorum, elector) = match &config.init {
            Init::Consensus(n) => (n / 2 + 1, true),
            Init::Seed(_) | Init::Observer => (1, false),
        };
        let mut ipam = Ipam {
            paxos: Paxos::new(config.me, quorum, elector, Acceptor::default()),
            rng: config.seed | 1,
            layout,
            ring: None,
            records: BTreeMap::new(),
            my_version: 1,
            handles: BTreeMap::new(),
            held_elsewhere: BTreeMap::new(),
            held_here: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            activating: BTreeMap::new(),
            lent: BTreeMap::new(),
            pending: Vec::new(),
            space: None,
            refused_by: BTreeSet::new(),
            space_retry: None,
            claims: BTreeMap::new(),
            reachable: BTreeSet::new(),
            unreachable_since: BTreeMap::new(),
            conflict: None,
            next_op: 0,
            changed_blocks: BTreeSet::new(),
            record_changed: true,
            out: VecDeque::new(),
            done: Vec::new(),
            dirty: true,
            again: false,
            started: now,
            config,
        };
        if let Init::Seed(seeds) = &ipam.config.init {
            if seeds.is_empty() {
                return Err(IpamError::Malformed("seed= needs at least one peer".into()));
            }
            let id = seed_cluster_id(seeds, ipam.layout.range);
            ipam.ring = Some(Ring::divide(id, ipam.layout, seeds));
        }
        Ok(ipam)
    }

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

    pub fn me(&self) -> Peer {
        self.config.me
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn ring(&self) -> Option<&Ring> {
        self.ring.as_ref()
    }

    /// Cluster id and whether it has addresses in use: what a router tells
    /// a peer when they connect.
    pub fn summary(&self) -> Option<(u64, bool)> {
        self.ring.as_ref().map(|r| (r.cluster.id, self.in_use()))
    }

    /// Whether a peer with this summary may join our mesh; the error says
    /// why not and what to do.
    pub fn compatible(&self, peer: &str, theirs: Option<(u64, bool)>) -> Result<(), IpamError> {
        match (self.summary(), theirs) {
            (Some((ours, true)), Some((other, true))) if ours != other => {
                Err(IpamError::ClusterConflict(conflict_text(peer, ours, other)))
            }
            _ => Ok(()),
        }
    }

    /// Peer and addresses (as numbers) held per container id.
    pub fn handles(&self) -> &BTreeMap<String, BTreeSet<u32>> {
        &self.handles
    }

    pub fn take_done(&mut self) -> Vec<Done> {
        std::mem::take(&mut self.done)
    }

    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    fn op(&mut self) -> OpId {
        self.next_op += 1;
        self.next_op
    }

    fn random(&mut self) -> u64 {
        // SplitMix64: enough to spread retries and make cluster ids.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn subnet(&self, subnet: Option<Ipv4Net>) -> Result<Ipv4Net, IpamError> {
        let subnet = subnet.unwrap_or(self.config.default_subnet).trunc();
        self.layout.check_subnet(subnet)?;
        Ok(subnet)
    }

    /// An address for container `owner` in `subnet` (the default subnet
    /// when none). Asking again for the same owner and subnet gives the
    /// same address. The result comes through [`Ipam::take_done`].
    pub fn allocate(&mut self, now: Instant, owner: &str, subnet: Option<Ipv4Net>) -> OpId {
        let op = self.op();
        match self.subnet(subnet) {
            Err(e) => self.finish(op, Err(e)),
            Ok(subnet) => {
                self.pending.push(Pending {
                    op,
                    owner: owner.to_string(),
                    subnet,
                    want: Want::Any,
                    deadline: now + self.config.request_timeout,
                });
                self.progress(now);
            }
        }
        self.flush();
        op
    }

    /// The given address for container `owner`.
    pub fn claim(
        &mut self,
        now: Instant,
        owner: &str,
        addr: Ipv4Addr,
        subnet: Option<Ipv4Net>,
    ) -> OpId {
        let op = self.op();
        let checked = self.subnet(subnet).and_then(|s| {
            if s.contains(&addr) {
                Ok(s)
            } else {
                Err(IpamError::AddressOutside { addr, range: s })
            }
        });
        match checked {
            Err(e) => self.finish(op, Err(e)),
            Ok(subnet) => {
                self.pending.push(Pending {
                    op,
                    owner: owner.to_string(),
                    subnet,
                    want: Want::Addr(u32::from(addr)),
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
    fn answer_claim(&mut self, addr: u32) -> Option<Pending> {
        self.claims.remove(&addr);
        let i = self
            .pending
            .iter()
            .position(|p| matches!(p.want, Want::Addr(a) if a == addr))?;
        Some(self.pending.remove(i))
    }

    fn finish(&mut self, op: OpId, result: Result<Allocation, IpamError>) {
        self.done.push(Done { op, result });
    }

    /// Our record, as the mesh sees it.
    fn my_record(&self) -> Record {
        Record {
            version: self.my_version,
            nickname: self.config.nickname.clone(),
            held: Record::runs(&self.held_here),
            removed: false,
        }
    }

    fn rebuild_held(&mut self) {
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
    fn in_use(&self) -> bool {
        !self.held_here.is_empty() || !self.held_elsewhere.is_empty()
    }

    fn holder_of(&self, a: u32) -> Option<String> {
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

    fn taken(&self, a: u32) -> bool {
        self.held_elsewhere.contains_key(&a)
            || self.lent.contains_key(&a)
            || self.held_here.contains(&a)
    }

    /// Addresses of block `b` that `subnet` allows.
    fn addresses(&self, b: u32, subnet: Ipv4Net) -> std::ops::RangeInclusive<u32> {
        let start = self.layout.block_start(b);
        let end = start + (self.layout.block_size() - 1);
        let (first, last) = host_range(subnet);
        start.max(first)..=end.min(last)
    }

    fn free_in(&self, b: u32, subnet: Ipv4Net) -> u32 {
        self.addresses(b, subnet)
            .filter(|a| !self.taken(*a))
            .count() as u32
    }

    fn lowest_free(&self, subnet: Ipv4Net) -> Option<u32> {
        let blocks = self.layout.blocks_in(subnet);
        self.confirmed
            .range(blocks.start..blocks.end)
            .find_map(|b| self.addresses(*b, subnet).find(|a| !self.taken(*a)))
    }

    fn hold(&mut self, owner: &str, a: u32) {
        self.handles.entry(owner.to_string()).or_default().insert(a);
        self.held_here.insert(a);
        self.record_changed = true;
        self.dirty = true;
    }

    /// Moves every waiting request as far as it goes now.
    fn progress(&mut self, now: Instant) {
        loop {
            self.again = false;
            self.progress_once(now);
            if !self.again {
                return;
            }
        }
    }

    fn progress_once(&mut self, now: Instant) {
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
    fn try_claim(
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
            if now < self.started + STARTUP_GRACE {
                // Just started: the owner may only not be found yet.
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

    /// Starts activating one of our inactive blocks in `subnet`, unless
    /// one is on its way; false when we have none.
    fn activate_one(&mut self, now: Instant, subnet: Ipv4Net) -> bool {
        let blocks = self.layout.blocks_in(subnet);
        if self
            .activating
            .range(blocks.start..blocks.end)
            .next()
            .is_some()
        {
            return true;
        }
        let me = self.config.me;
        let Some(ring) = &self.ring else {
            return false;
        };
        let candidate = ring
            .blocks_of(me)
            .filter(|b| blocks.contains(b))
            .find(|b| !ring.block(*b).active && self.free_in(*b, subnet) > 0);
        match candidate {
            Some(b) => {
                self.start_activation(now, b);
                true
            }
            None => false,
        }
    }

    fn start_activation(&mut self, now: Instant, b: u32) {
        let me = self.config.me;
        let Some(ring) = &mut self.ring else {
            return;
        };
        let state = ring.bump(b, me, true);
        self.changed_blocks.insert(b);
        self.dirty = true;
        self.activating.insert(
            b,
            Activation {
                version: state.version,
                acks: [me].into(),
                resend: now + RESEND,
            },
        );
        self.broadcast(Message::Activate { block: b, state });
        self.check_activation(b);
    }

    fn majority(&self, count: usize) -> bool {
        let members = self.ring.as_ref().map_or(1, |r| r.members().len());
        count * 2 > members
    }

    fn check_activation(&mut self, b: u32) {
        let Some(act) = self.activating.get(&b) else {
            return;
        };
        if self.majority(act.acks.len()) {
            self.activating.remove(&b);
            self.confirmed.insert(b);
            self.dirty = true;
            tracing::debug!(block = b, "block activated");
            self.again = true;
        }
    }

    /// Asks the member with the most inactive space in `subnet` for some.
    fn ask_for_space(&mut self, now: Instant, subnet: Ipv4Net) {
        let Some(ring) = &self.ring else {
            return;
        };
        let blocks = self.layout.blocks_in(subnet);
        let mut spare: BTreeMap<Peer, u32> = BTreeMap::new();
        let mut anywhere = 0;
        for b in blocks {
            let s = ring.block(b);
            if !s.active && s.owner != self.config.me {
                anywhere += 1;
                if self.reachable.contains(&s.owner) {
                    *spare.entry(s.owner).or_default() += 1;
                }
            }
        }
        let asked = !self.refused_by.is_empty();
        let donor = spare
            .into_iter()
            .filter(|(p, _)| !self.refused_by.contains(p))
            .max_by_key(|(p, n)| (*n, std::cmp::Reverse(*p)))
            .map(|(p, _)| p);
        match donor {
            Some(donor) => {
                tracing::debug!(%donor, %subnet, "asking for space");
                self.space = Some(SpaceAsk {
                    donor,
                    subnet,
                    resend: now + RESEND * 2,
                    unanswered: 0,
                });
                self.unicast(donor, Message::SpaceRequest { subnet });
            }
            None if anywhere == 0 => {
                self.fail_waiting(
                    subnet,
                    "every address of it is in use or held ready by a peer",
                );
            }
            // Everyone we know of said no, but what we know may be behind
            // (space moves between peers all the time): ask again a little
            // later, until the request's own deadline.
            None if asked => {
                self.space_retry = Some(now + RESEND * 2);
            }
            // The space is with peers we cannot reach (yet): wait for them
            // until the request times out.
            None => {}
        }
    }

    /// Fails the allocations waiting for space in `subnet`.
    fn fail_waiting(&mut self, subnet: Ipv4Net, detail: &str) {
        let blocks = self.layout.blocks_in(subnet);
        if self
            .activating
            .range(blocks.start..blocks.end)
            .next()
            .is_some()
        {
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

    fn broadcast(&mut self, message: Message) {
        let env = self.envelope(message);
        self.out.push_back(Outgoing::Broadcast(env.encode()));
    }

    fn unicast(&mut self, to: Peer, message: Message) {
        let env = self.envelope(message);
        self.out.push_back(Outgoing::Unicast(to, env.encode()));
    }

    fn envelope(&self, message: Message) -> Envelope {
        Envelope {
            cluster: self.ring.as_ref().map(|r| r.cluster.id),
            message,
        }
    }

    fn paxos_out(&mut self) {
        while let Some((dest, msg)) = self.paxos.poll() {
            match dest {
                Destination::Everyone => self.broadcast(Message::Paxos(msg)),
                Destination::Peer(p) => self.unicast(p, Message::Paxos(msg)),
            }
        }
    }

    fn adopt_chosen(&mut self, now: Instant) {
        if let Some(value) = self.paxos.take_chosen()
            && self.ring.is_none()
        {
            tracing::info!(cluster = format_args!("{:016x}", value.cluster), seeds = ?value.seeds, "consensus reached: dividing the range");
            let ring = Ring::divide(value.cluster, self.layout, &value.seeds);
            self.install(now, ring);
        }
    }

    /// A ring arrived (consensus, seed, or from a peer): it is ours now.
    fn install(&mut self, now: Instant, ring: Ring) {
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

    fn full_gossip(&self) -> Gossip {
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
    fn flush(&mut self) {
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
    fn merge(&mut self, now: Instant, from: Peer, g: Gossip) -> Result<Option<Gossip>, IpamError> {
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
    fn should_adopt(&mut self, from: Peer, theirs: &Cluster, their_in_use: bool) -> bool {
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
    fn merge_records(
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

    fn on_message(&mut self, now: Instant, from: Peer, bytes: &[u8]) -> Result<(), IpamError> {
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

    fn on_activate(&mut self, from: Peer, b: u32, state: Block) -> Result<(), IpamError> {
        let ring = self.ring.as_mut().expect("cluster matched");
        if b >= ring.len() || state.owner != from || !state.active {
            return Err(IpamError::Malformed(format!("activation of block {b}")));
        }
        let cur = ring.block(b);
        let ok = if state == cur {
            true
        } else if state.supersedes(&cur) {
            // Never let an activation displace another owner's active
            // block: that owner may hand out its addresses.
            !(cur.active && cur.owner != from)
        } else {
            false
        };
        if ok {
            if state != cur {
                ring.set(b, state);
                self.changed_blocks.insert(b);
                self.dirty = true;
                if self.confirmed.remove(&b) || self.activating.remove(&b).is_some() {
                    tracing::warn!(block = b, owner = %from, "lost a block to an activation");
                }
            }
            self.unicast(
                from,
                Message::ActivateAck {
                    block: b,
                    version: state.version,
                },
            );
        } else {
            self.unicast(
                from,
                Message::ActivateNack {
                    block: b,
                    state: cur,
                },
            );
        }
        Ok(())
    }

    fn on_space_request(&mut self, from: Peer, subnet: Ipv4Net) {
        let me = self.config.me;
        let Some(ring) = &self.ring else {
            return;
        };
        let blocks = self.layout.blocks_in(subnet);
        let mine: Vec<u32> = ring
            .blocks_of(me)
            .filter(|b| blocks.contains(b) && !ring.block(*b).active)
            .filter(|b| !self.activating.contains_key(b))
            .filter(|b| self.addresses(*b, subnet).all(|a| !self.taken(a)))
            .collect();
        if mine.is_empty() {
            self.unicast(from, Message::SpaceDenied { subnet });
            return;
        }
        // Half of what we have, from the top: our own allocations come
        // from the bottom, so what we keep stays in one piece.
        let give = mine.len().div_ceil(2).min(MAX_GRANT);
        let given: Vec<u32> = mine[mine.len() - give..].to_vec();
        let ring = self.ring.as_mut().expect("checked above");
        for b in &given {
            ring.bump(*b, from, false);
        }
        self.changed_blocks.extend(given.iter().copied());
        self.dirty = true;
        let runs = ring.runs_of(given.iter().copied());
        tracing::debug!(to = %from, blocks = given.len(), "gave space");
        self.unicast(from, Message::SpaceGrant { blocks: runs });
    }

    fn on_claim(&mut self, now: Instant, from: Peer, a: u32) {
        let addr = Ipv4Addr::from(a);
        let me = self.config.me;
        let deny = |reason: String| Message::ClaimDenied { addr: a, reason };
        let Some(b) = self.layout.block_of(addr) else {
            self.unicast(from, deny(format!("{addr} is outside the range")));
            return;
        };
        let state = self.ring.as_ref().expect("cluster matched").block(b);
        if state.owner != me {
            self.unicast(
                from,
                deny(format!("{addr} belongs to peer {}", state.owner)),
            );
            return;
        }
        if let Some(holder) = self.holder_of(a) {
            self.unicast(from, deny(holder));
            return;
        }
        let empty = self.addresses(b, self.layout.range).all(|x| !self.taken(x));
        if !state.active && empty && !self.activating.contains_key(&b) {
            let ring = self.ring.as_mut().expect("cluster matched");
            ring.bump(b, from, false);
            self.changed_blocks.insert(b);
            self.dirty = true;
            let runs = ring.runs_of([b]);
            self.unicast(
                from,
                Message::ClaimGranted {
                    addr: a,
                    blocks: runs,
                },
            );
        } else {
            self.lent.insert(a, now);
            self.dirty = true;
            self.unicast(from, Message::ClaimLent { addr: a });
        }
    }

    /// The set of reachable peers changed (the mesh's view).
    pub fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<Peer>) {
        self.reachable = reachable.clone();
        self.reachable.insert(self.config.me);
        if let Some(ring) = &self.ring {
            for p in ring.members() {
                if self.reachable.contains(&p) {
                    self.unreachable_since.remove(&p);
                } else {
                    self.unreachable_since.entry(p).or_insert(now);
                }
            }
        }
        self.progress(now);
        self.flush();
    }

    /// When [`Ipam::tick`] is due.
    pub fn next_timeout(&self) -> Option<Instant> {
        let acts = self.activating.values().map(|a| a.resend);
        let pend = self.pending.iter().map(|p| p.deadline);
        let space = self.space.iter().map(|s| s.resend);
        acts.chain(pend)
            .chain(space)
            .chain(self.space_retry)
            .chain(self.paxos.deadline())
            .min()
    }

    /// Time passes: resends, timeouts, upkeep and reclaim.
    pub fn tick(&mut self, now: Instant) {
        let jitter = self.random() % 1000;
        self.paxos.tick(now, jitter);
        self.paxos_out();
        let due: Vec<(u32, u32)> = self
            .activating
            .iter()
            .filter(|(_, a)| now >= a.resend)
            .map(|(b, a)| (*b, a.version))
            .collect();
        for (b, version) in due {
            let me = self.config.me;
            if let Some(a) = self.activating.get_mut(&b) {
                a.resend = now + RESEND;
            }
            self.broadcast(Message::Activate {
                block: b,
                state: Block {
                    owner: me,
                    version,
                    active: true,
                },
            });
            self.check_activation(b);
        }
        if let Some(s) = &self.space {
            // No answer yet is no refusal (a busy donor, a lost message):
            // ask again.
            if now >= s.resend {
                let (subnet, donor, unanswered) = (s.subnet, s.donor, s.unanswered + 1);
                self.space = None;
                if unanswered >= UNANSWERED_LIMIT {
                    tracing::debug!(%donor, %subnet, "no answer for space: asking another peer");
                    self.refused_by.insert(donor);
                }
                self.ask_for_space(now, subnet);
                if let Some(s) = self.space.as_mut().filter(|s| s.donor == donor) {
                    s.unanswered = unanswered;
                }
            }
        }
        if self.space_retry.is_some_and(|at| now >= at) {
            self.space_retry = None;
            self.refused_by.clear();
        }
        let (expired, still): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now >= p.deadline);
        self.pending = still;
        for p in expired {
            let what = self.waiting_for(&p);
            let secs = self.config.request_timeout.as_secs();
            self.finish(p.op, Err(IpamError::Timeout { secs, what }));
        }
        self.lent.retain(|_, at| now < *at + LEND_PROTECTION);
        self.maintain(now);
        self.reclaim(now);
        self.progress(now);
        self.flush();
    }

    /// What a request is stuck on, for its timeout error.
    fn waiting_for(&self, p: &Pending) -> String {
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

    /// Keeps a few addresses ready, and gives back what is idle.
    fn maintain(&mut self, now: Instant) {
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
    fn reclaim(&mut self, now: Instant) {
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

fn allocation(a: u32, subnet: Ipv4Net) -> Allocation {
    Allocation {
        addr: Ipv4Addr::from(a),
        subnet,
    }
}

fn conflict_text(peer: &str, ours: u64, theirs: u64) -> String {
    format!(
        "peer {peer} belongs to IPAM cluster {theirs:016x}, this router to {ours:016x}, and both have addresses in use: the meshes were formed apart and their address allocations could collide. Keep them apart, or run `weft ipam reset --detach` on the routers of one side (their containers are taken off the network and must be attached again to get new addresses)"
    )
}

/// The cluster id of a seeded ring: the same on every peer given the same
/// seeds and range (FNV-1a over both).
fn seed_cluster_id(seeds: &[Peer], range: Ipv4Net) -> u64 {
    let mut seeds = seeds.to_vec();
    seeds.sort();
    seeds.dedup();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = seeds
        .iter()
        .flat_map(|p| p.0.to_be_bytes())
        .chain(u32::from(range.network()).to_be_bytes())
        .chain([range.prefix_len()]);
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn agent(me: u64, init: Init, now: Instant) -> Ipam {
        let mut c = Config::new(Peer(me), net("10.32.0.0/12"));
        c.init = init;
        Ipam::new(c, now).unwrap()
    }

    /// Delivers everything between the agents (all reachable) until quiet.
    fn exchange(agents: &mut [&mut Ipam], now: Instant) {
        let all: BTreeSet<Peer> = agents.iter().map(|a| a.me()).collect();
        for a in agents.iter_mut() {
            let others = all.iter().filter(|p| **p != a.me()).copied().collect();
            if a.reachable.len() != all.len() {
                a.on_peers_changed(now, &others);
            }
        }
        loop {
            let mut moved = false;
            for i in 0..agents.len() {
                while let Some(o) = agents[i].poll_outgoing() {
                    moved = true;
                    let from = agents[i].me();
                    for (j, to) in agents.iter_mut().enumerate() {
                        if i == j {
                            continue;
                        }
                        match &o {
                            Outgoing::Gossip(b) => drop(to.on_gossip(now, from, b).unwrap()),
                            Outgoing::Broadcast(b) => to.on_broadcast(now, from, b).unwrap(),
                            Outgoing::Unicast(p, b) if *p == to.me() => {
                                to.on_unicast(now, from, b).unwrap()
                            }
                            Outgoing::Unicast(..) => {}
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn one(a: &mut Ipam) -> Result<Allocation, IpamError> {
        let mut done = a.take_done();
        assert_eq!(done.len(), 1, "{done:?}");
        done.remove(0).result
    }

    /// Gossip as the mesh carries it: each agent tells its neighbours, and
    /// what was news to one goes on to its other neighbours. Returns how
    /// many messages were delivered before all fell quiet (or `cap`).
    fn gossip_along(
        agents: &mut [Ipam],
        links: &[(usize, usize)],
        now: Instant,
        cap: usize,
    ) -> usize {
        deliver(agents, links, now, cap, false)
    }

    /// [`gossip_along`], optionally with gossip overtaking the rest.
    fn deliver(
        agents: &mut [Ipam],
        links: &[(usize, usize)],
        now: Instant,
        cap: usize,
        slow_unicasts: bool,
    ) -> usize {
        let neighbours = |i: usize| -> Vec<usize> {
            links
                .iter()
                .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
                .collect()
        };
        // (from, to, is gossip, bytes); broadcasts and unicasts go straight
        // to their routers (the mesh routes them; they do not echo).
        let mut queue: VecDeque<(usize, usize, bool, Vec<u8>)> = VecDeque::new();
        let mut delivered = 0;
        loop {
            for i in 0..agents.len() {
                while let Some(o) = agents[i].poll_outgoing() {
                    match o {
                        Outgoing::Gossip(b) => {
                            for n in neighbours(i) {
                                queue.push_back((i, n, true, b.clone()));
                            }
                        }
                        Outgoing::Broadcast(b) => {
                            for n in (0..agents.len()).filter(|n| *n != i) {
                                queue.push_back((i, n, false, b.clone()));
                            }
                        }
                        Outgoing::Unicast(p, b) => {
                            if let Some(n) = agents.iter().position(|a| a.me() == p) {
                                queue.push_back((i, n, false, b));
                            }
                        }
                    }
                }
            }
            // Gossip overtakes unicasts and broadcasts, as it may on a
            // busy mesh: a router hears of a grant before its recipient.
            let next = match queue.iter().position(|(_, _, g, _)| *g) {
                Some(i) if slow_unicasts => queue.remove(i),
                _ => queue.pop_front(),
            };
            let Some((from, to, gossip, bytes)) = next else {
                return delivered;
            };
            delivered += 1;
            if delivered >= cap {
                return delivered;
            }
            let sender = agents[from].me();
            if !gossip {
                agents[to].on_unicast(now, sender, &bytes).unwrap();
                continue;
            }
            if let Some(news) = agents[to].on_gossip(now, sender, &bytes).unwrap() {
                for n in neighbours(to).into_iter().filter(|n| *n != from) {
                    queue.push_back((to, n, true, news.clone()));
                }
            }
        }
    }

    #[test]
    fn many_routers_asking_at_once_all_get_space() {
        // One router owns the whole range; forty others attach a container
        // each at the same moment, and their requests for space cross
        // grants they have not heard of yet.
        let now = Instant::now();
        let n = 40u64;
        let mut agents: Vec<Ipam> = (1..=n)
            .map(|me| agent(me, Init::Seed(vec![Peer(1)]), now))
            .collect();
        let all: BTreeSet<Peer> = (1..=n).map(Peer).collect();
        for a in agents.iter_mut() {
            let others = all.iter().filter(|p| **p != a.me()).copied().collect();
            a.on_peers_changed(now, &others);
        }
        // Everyone connected to everyone, as a mesh with discovery is.
        let links: Vec<(usize, usize)> = (0..n as usize)
            .flat_map(|a| (a + 1..n as usize).map(move |b| (a, b)))
            .collect();
        gossip_along(&mut agents, &links, now, 1_000_000);
        for (i, a) in agents.iter_mut().enumerate().skip(1) {
            a.allocate(now, &format!("c{i}"), None);
        }
        // The owner is busy: no answer within the 2 s a request waits
        // before it is asked again. That is no refusal.
        let mut t = now + Duration::from_secs(3);
        for a in agents.iter_mut().skip(1) {
            a.tick(t);
        }
        let mut results = Vec::new();
        for _ in 0..40 {
            deliver(&mut agents, &links, t, 1_000_000, true);
            for a in agents.iter_mut() {
                results.extend(a.take_done().into_iter().map(|d| d.result));
            }
            if results.len() == n as usize - 1 {
                break;
            }
            t += Duration::from_millis(500);
            for a in agents.iter_mut() {
                a.tick(t);
            }
        }
        let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} failed: {failed:?}",
            failed.len(),
            results.len()
        );
        assert_eq!(results.len(), n as usize - 1);
    }

    #[test]
    fn gossip_dies_down_after_one_allocation() {
        // A ring of routers: every record comes back round to its owner.
        let now = Instant::now();
        let n = 10;
        let seeds: Vec<Peer> = (1..=n as u64).map(Peer).collect();
        let mut agents: Vec<Ipam> = (1..=n as u64)
            .map(|me| agent(me, Init::Seed(seeds.clone()), now))
            .collect();
        let links: Vec<(usize, usize)> = (0..n).map(|i| (i, (i + 1) % n)).collect();
        for a in agents.iter_mut() {
            let others = seeds.iter().filter(|p| **p != a.me()).copied().collect();
            a.on_peers_changed(now, &others);
        }
        gossip_along(&mut agents, &links, now, 100_000);
        agents[0].allocate(now, "c1", None);
        let after = gossip_along(&mut agents, &links, now, 100_000);
        assert!(agents[0].take_done()[0].result.is_ok());
        assert!(after < 200, "{after} messages after one allocation");
        // Then the mesh's anti-entropy: each router sends its whole state
        // to its neighbours, over and over. Every router's copy of the
        // allocating router's record is as new as its own, so this must
        // cause nothing more (the old merge took its own record, echoed
        // back at the same version, as news: a new version, a new wave,
        // every round, for ever).
        let mut caused = Vec::new();
        for _round in 0..5 {
            let mut news = 0;
            for i in 0..n {
                let full = agents[i].full_state().unwrap();
                let from = agents[i].me();
                for &(a, b) in &links {
                    let to = if a == i {
                        b
                    } else if b == i {
                        a
                    } else {
                        continue;
                    };
                    if agents[to].on_gossip(now, from, &full).unwrap().is_some() {
                        news += 1;
                    }
                }
            }
            news += gossip_along(&mut agents, &links, now, 100_000);
            caused.push(news);
        }
        assert_eq!(caused, vec![0; 5], "anti-entropy keeps the gossip going");
    }

    #[test]
    fn adopted_addresses_are_never_handed_out_here_or_by_a_peer() {
        let now = Instant::now();
        // A router whose state was lost, rebuilt from its containers.
        let mut a = agent(1, Init::Consensus(2), now);
        a.adopt("attach:web", Ipv4Addr::new(10, 32, 0, 1)).unwrap();
        a.adopt("attach:web", Ipv4Addr::new(10, 32, 0, 1)).unwrap();
        assert!(matches!(
            a.adopt("attach:db", Ipv4Addr::new(10, 32, 0, 1)),
            Err(IpamError::AddressInUse { .. })
        ));
        assert!(matches!(
            a.adopt("attach:db", Ipv4Addr::new(192, 0, 2, 1)),
            Err(IpamError::AddressOutside { .. })
        ));
        let mut b = agent(2, Init::Consensus(2), now);
        exchange(&mut [&mut a, &mut b], now);
        // Whoever owns the block, the adopted address is taken.
        for agent in [&mut a, &mut b] {
            agent.claim(now, "other", Ipv4Addr::new(10, 32, 0, 1), None);
            exchange(&mut [], now);
        }
        exchange(&mut [&mut a, &mut b], now);
        for agent in [&mut a, &mut b] {
            let done = agent.take_done();
            assert!(
                done.iter()
                    .all(|d| matches!(d.result, Err(IpamError::AddressInUse { .. }))),
                "{done:?}"
            );
        }
        let mut handed = BTreeSet::new();
        for i in 0..40 {
            a.allocate(now, &format!("a{i}"), None);
            b.allocate(now, &format!("b{i}"), None);
            exchange(&mut [&mut a, &mut b], now);
            for agent in [&mut a, &mut b] {
                for d in agent.take_done() {
                    handed.insert(d.result.unwrap().addr);
                }
            }
        }
        assert_eq!(handed.len(), 80);
        assert!(!handed.contains(&Ipv4Addr::new(10, 32, 0, 1)), "{handed:?}");
    }

    #[test]
    fn a_lone_peer_allocates_at_once_and_idempotently() {
        let now = Instant::now();
        let mut a = agent(1, Init::Consensus(1), now);
        a.allocate(now, "c1", None);
        let first = one(&mut a).unwrap();
        assert_eq!(first.cidr(), net("10.32.0.1/12"));
        a.allocate(now, "c1", None);
        assert_eq!(one(&mut a).unwrap(), first, "same container, same address");
        a.allocate(now, "c2", None);
        assert_eq!(one(&mut a).unwrap().addr, Ipv4Addr::new(10, 32, 0, 2));
        assert_eq!(a.release(now, "c1", None), vec![first.addr]);
        a.allocate(now, "c3", Some(net("10.32.5.0/24")));
        assert_eq!(one(&mut a).unwrap().cidr(), net("10.32.5.1/24"));
        a.allocate(now, "c4", Some(net("10.99.0.0/24")));
        assert!(matches!(one(&mut a), Err(IpamError::SubnetOutside { .. })));
    }

    #[test]
    fn claims_and_space_move_between_peers() {
        let now = Instant::now();
        let mut a = agent(1, Init::Seed(vec![Peer(1), Peer(2)]), now);
        let mut b = agent(2, Init::Seed(vec![Peer(1), Peer(2)]), now);
        let mut c = agent(3, Init::Observer, now);
        exchange(&mut [&mut a, &mut b, &mut c], now);
        // The observer owns nothing: its first allocation asks for space.
        c.allocate(now, "x", None);
        exchange(&mut [&mut a, &mut b, &mut c], now);
        let x = one(&mut c).unwrap();
        assert_eq!(
            c.ring()
                .unwrap()
                .block(c.layout().block_of(x.addr).unwrap())
                .owner,
            Peer(3)
        );
        // An address in another peer's block: the owner gives or lends it.
        let wanted = Ipv4Addr::new(10, 47, 255, 7);
        a.claim(now, "y", wanted, None);
        exchange(&mut [&mut a, &mut b, &mut c], now);
        assert_eq!(one(&mut a).unwrap().addr, wanted);
        // Nobody else may have it now.
        b.claim(now, "z", wanted, None);
        exchange(&mut [&mut a, &mut b, &mut c], now);
        assert!(matches!(one(&mut b), Err(IpamError::AddressInUse { .. })));
        let st = a.status(now);
        assert_eq!(st.peers.iter().map(|p| p.held).sum::<u64>(), 2, "{st:?}");
        assert!(st.peers.iter().any(|p| p.peer == st.me));
    }

    #[test]
    fn a_donor_that_never_answers_is_passed_over() {
        let t0 = Instant::now();
        let seeds = Init::Seed(vec![Peer(1), Peer(2)]);
        let mut a = agent(1, seeds.clone(), t0);
        let mut b = agent(2, seeds, t0);
        let mut c = agent(3, Init::Observer, t0);
        exchange(&mut [&mut a, &mut b, &mut c], t0);
        c.allocate(t0, "x", None);
        // a (reachable, as much space as b) is asked first and never
        // answers: everything c sends is lost.
        let mut asked = Vec::new();
        let mut now = t0;
        for _ in 0..UNANSWERED_LIMIT {
            while let Some(o) = c.poll_outgoing() {
                if let Outgoing::Unicast(to, _) = o {
                    asked.push(to);
                }
            }
            now += RESEND * 2;
            c.tick(now);
        }
        assert_eq!(asked, vec![Peer(1); UNANSWERED_LIMIT as usize]);
        // Now b is asked, and gives.
        exchange(&mut [&mut b, &mut c], now);
        let x = one(&mut c).unwrap();
        let block = c.layout().block_of(x.addr).unwrap();
        assert_eq!(c.ring().unwrap().block(block).owner, Peer(3));
    }

    #[test]
    fn meshes_formed_apart_refuse_each_other_unless_one_is_unused() {
        let now = Instant::now();
        let mut a = agent(1, Init::Consensus(1), now);
        let mut b = agent(2, Init::Consensus(1), now);
        a.allocate(now, "a", None);
        b.allocate(now, "b", None);
        one(&mut a).unwrap();
        one(&mut b).unwrap();
        let err = a.compatible("peer-b", b.summary()).unwrap_err().to_string();
        assert!(err.contains("weft ipam reset"), "{err}");
        exchange(&mut [&mut a, &mut b], now);
        assert!(a.status(now).state.starts_with("conflict"));
        assert_ne!(a.summary(), b.summary(), "neither ring was overwritten");
        // After a reset, b joins a's cluster.
        b.reset(now);
        assert!(a.compatible("b", b.summary()).is_ok());
        exchange(&mut [&mut a, &mut b], now);
        assert_eq!(a.summary().unwrap().0, b.summary().unwrap().0);
        b.allocate(now, "b", None);
        exchange(&mut [&mut a, &mut b], now);
        assert_ne!(one(&mut b).unwrap().addr, Ipv4Addr::new(10, 32, 0, 1));
    }

    #[test]
    fn snapshots_restore_and_refuse_another_peer_or_range() {
        let now = Instant::now();
        let mut a = agent(1, Init::Consensus(1), now);
        a.allocate(now, "c1", None);
        let got = one(&mut a).unwrap();
        assert!(a.dirty());
        let snap = a.snapshot();
        let mut back = Ipam::restore(a.config.clone(), now, &snap).unwrap();
        assert_eq!(back.lookup("c1"), vec![got]);
        back.allocate(now, "c2", None);
        assert_ne!(one(&mut back).unwrap().addr, got.addr);
        let mut other = a.config.clone();
        other.me = Peer(2);
        let e = Ipam::restore(other, now, &snap).err().unwrap();
        assert!(matches!(e, IpamError::StateMismatch(_)), "{e}");
        let mut other = a.config.clone();
        other.range = net("10.0.0.0/16");
        other.default_subnet = other.range;
        assert!(Ipam::restore(other, now, &snap).is_err());
        assert!(Ipam::restore(a.config.clone(), now, &snap[..snap.len() / 2]).is_err());
    }

    #[test]
    fn rmpeer_takes_a_departed_peers_space_but_never_a_reachable_one() {
        let now = Instant::now();
        let seeds = Init::Seed(vec![Peer(1), Peer(2)]);
        let mut a = agent(1, seeds.clone(), now);
        let mut b = agent(2, seeds, now);
        exchange(&mut [&mut a, &mut b], now);
        assert!(matches!(
            a.remove_peer(now, Peer(2)),
            Err(IpamError::PeerReachable(_))
        ));
        assert!(matches!(
            a.remove_peer(now, Peer(1)),
            Err(IpamError::CannotRemoveSelf)
        ));
        a.on_peers_changed(now, &BTreeSet::new());
        assert_eq!(a.remove_peer(now, Peer(2)).unwrap(), 8192);
        assert_eq!(a.ring().unwrap().members(), [Peer(1)].into());
        assert!(matches!(
            a.remove_peer(now, Peer(9)),
            Err(IpamError::UnknownPeer(_))
        ));
    }

    #[test]
    fn automatic_reclaim_waits_for_the_grace_period_and_a_majority() {
        let now = Instant::now();
        let seeds = Init::Seed(vec![Peer(1), Peer(2), Peer(3)]);
        let mut ps: Vec<Ipam> = (1..=3).map(|i| agent(i, seeds.clone(), now)).collect();
        for p in &mut ps {
            p.config.reclaim_after = Some(Duration::from_secs(60));
        }
        let [a, b, c] = &mut ps[..] else {
            unreachable!()
        };
        exchange(&mut [a, b, c], now);
        // Peer 3 is gone; 1 and 2 are a majority of 3.
        let two: BTreeSet<Peer> = [Peer(1), Peer(2)].into();
        a.on_peers_changed(now, &two);
        b.on_peers_changed(now, &two);
        a.tick(now + Duration::from_secs(30));
        assert_eq!(
            a.ring().unwrap().members().len(),
            3,
            "not before the grace period"
        );
        b.tick(now + Duration::from_secs(61));
        assert_eq!(
            b.ring().unwrap().members().len(),
            3,
            "only the lowest-named reclaims"
        );
        a.tick(now + Duration::from_secs(61));
        assert_eq!(a.ring().unwrap().members(), two);
        // A peer alone (1 of 3) never reclaims.
        let mut lone = agent(3, Init::Seed(vec![Peer(1), Peer(2), Peer(3)]), now);
        lone.config.reclaim_after = Some(Duration::from_secs(1));
        lone.on_peers_changed(now, &BTreeSet::new());
        lone.tick(now + Duration::from_secs(100));
        assert_eq!(lone.ring().unwrap().members().len(), 3);
    }
}
