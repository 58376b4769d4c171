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

mod activation;
mod allocation;
mod lending;
mod merging;
mod reclaim;
mod snapshot;
mod status;

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
/// A claim in a block whose owner is not reachable waits this long (from
/// when we first saw the owner unreachable, and from our start) before
/// failing: a mesh being formed reports its peers late.
const OWNER_PATIENCE: Duration = Duration::from_secs(10);
/// An address lent in our block is protected until the claimant's record
/// (which then holds it) has had time to arrive.
const LEND_PROTECTION: Duration = Duration::from_secs(60);
/// Blocks given per space request at most.
const MAX_GRANT: usize = 256;

/// One peer's agent: the ring as it knows it, its holdings and requests.
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
    /// When this agent was made or restored (see [`OWNER_PATIENCE`]).
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

    fn finish(&mut self, op: OpId, result: Result<Allocation, IpamError>) {
        self.done.push(Done { op, result });
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
            .chain(self.claims_give_up_at())
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
mod tests;
