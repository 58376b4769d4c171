//! The mesh: which routers exist, how they are connected, and how to reach
//! each of them, kept up to date by gossip.
//!
//! [`Mesh`] is a state machine with no I/O: the router's runtime feeds it
//! [`Input`]s (connections made and lost, messages, time) and carries out
//! the [`Output`]s it asks for (connect, send, close). Everything here runs
//! the same in a simulated network of hundreds of routers (see [`sim`]).

pub mod channel;
pub mod departures;
pub mod maker;
pub mod message;
pub mod per_router;
pub mod routes;
/// A simulated network of routers, for tests and `bench-mesh` only: the
/// `sim` feature, which no production build enables.
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod topology;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::identity::{PeerIdentity, PeerName};
pub use channel::{Channel, Outgoing};
pub use maker::{Backoff, ConnectionMaker, Source, Target, TargetState};
pub use message::{ControlMessage, MAX_BROADCAST_HOPS};
pub use routes::Routes;
pub use topology::{ConnInfo, Merged, PeerInfo, Topology};

/// Identifies a connection within one router; the runtime assigns them.
pub type ConnId = u64;

#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub identity: PeerIdentity,
    /// The first version of our topology entry. Starting from the wall
    /// clock (in ms) makes a restarted router's entry newer than what its
    /// previous life left in the mesh.
    pub initial_version: u64,
    /// Most connections to keep (and to have in progress).
    pub conn_limit: usize,
    /// Connect to peers learnt from gossip, not only to those given.
    pub discovery: bool,
    /// Topology changes are batched for this long before they are sent.
    pub gossip_delay: Duration,
    /// How often to compare notes with a random neighbor.
    pub anti_entropy: Duration,
    /// How long an unreachable peer is kept before it is forgotten.
    pub unreachable_grace: Duration,
    pub backoff: Backoff,
    /// Seed of the randomness (jitter, neighbor choice): fixed in tests.
    pub seed: u64,
}

impl MeshConfig {
    pub fn new(identity: PeerIdentity, initial_version: u64, seed: u64) -> MeshConfig {
        MeshConfig {
            identity,
            initial_version,
            conn_limit: 100,
            discovery: true,
            gossip_delay: Duration::from_millis(50),
            anti_entropy: Duration::from_secs(10),
            unreachable_grace: Duration::from_secs(10),
            backoff: Backoff::default(),
            seed,
        }
    }
}

/// Something that happened, for the mesh to act on.
#[derive(Clone, Debug)]
pub enum Input {
    /// A connection finished its handshake; the mesh accepts or refuses it.
    Connected {
        conn: ConnId,
        peer: PeerIdentity,
        /// The peer's address for others to connect to.
        address: SocketAddr,
        outbound: bool,
        /// The target it was made for, if outbound.
        target: Option<SocketAddr>,
        encrypted: bool,
    },
    /// An outbound attempt failed before the mesh saw it.
    ConnectFailed {
        target: SocketAddr,
        peer: Option<PeerName>,
        reason: String,
        /// The peer answered and said no (wrong password, ...).
        refused: bool,
    },
    Closed {
        conn: ConnId,
        reason: String,
    },
    Received {
        conn: ConnId,
        message: ControlMessage,
    },
    AddTarget {
        address: SocketAddr,
        source: Source,
    },
    /// The data path of the connection to `peer` started or stopped
    /// carrying data.
    DataPath {
        peer: PeerName,
        usable: bool,
    },
    Forget {
        address: SocketAddr,
    },
    /// Time passed; see [`Mesh::next_timeout`].
    Tick,
}

/// Something for the runtime to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Connect {
        target: SocketAddr,
    },
    Send {
        conn: ConnId,
        message: ControlMessage,
    },
    /// Close a connection; with a refusal the peer hears the reason first.
    Close {
        conn: ConnId,
        reason: String,
        refuse: bool,
    },
}

/// An established, accepted connection.
#[derive(Clone, Debug)]
pub struct Connection {
    pub id: ConnId,
    pub peer: PeerIdentity,
    pub address: SocketAddr,
    pub outbound: bool,
    pub target: Option<SocketAddr>,
    pub encrypted: bool,
    pub since: Instant,
    /// Whether its data path carries data.
    pub usable: bool,
}

/// Message counts, for metrics and the simulation's report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Messages sent by kind (and channel), for `/metrics`: what a storm
    /// is made of.
    pub sent_by_kind: BTreeMap<String, u64>,
    /// Connections we refused.
    pub refused: u64,
}

pub struct Mesh {
    config: MeshConfig,
    rng: SmallRng,
    topology: Topology,
    routes: Routes,
    /// Routes over connections that carry data, for frames; shared with
    /// the data path, replaced (never changed) when recomputed.
    data_routes: std::sync::Arc<Routes>,
    routes_stale: bool,
    /// Route recomputation is batched like gossip: at most once per
    /// gossip delay, unless a message needs routes now.
    refresh_routes_at: Option<Instant>,
    conns: BTreeMap<ConnId, Connection>,
    by_peer: BTreeMap<PeerName, ConnId>,
    maker: ConnectionMaker,
    /// Entries changed since the last flush, and the neighbor each came
    /// from (it need not hear it back).
    dirty: BTreeMap<PeerName, Option<PeerName>>,
    flush_at: Option<Instant>,
    next_anti_entropy: Instant,
    channels: BTreeMap<String, Box<dyn Channel>>,
    outputs: VecDeque<Output>,
    stats: Stats,
    now: Instant,
}

impl Mesh {
    pub fn new(config: MeshConfig, now: Instant) -> Mesh {
        let local = PeerInfo {
            name: config.identity.name,
            nickname: config.identity.nickname.clone(),
            uid: config.identity.uid,
            version: config.initial_version,
            connections: Vec::new(),
        };
        let name = local.name;
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let first_anti_entropy = now + config.anti_entropy.mul_f64(rng.random_range(0.5..1.5));
        Mesh {
            maker: ConnectionMaker::new(config.backoff),
            config,
            rng,
            topology: Topology::new(local),
            routes: Routes::compute(name, Default::default()),
            data_routes: std::sync::Arc::new(Routes::compute(name, Default::default())),
            routes_stale: false,
            refresh_routes_at: None,
            conns: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            dirty: BTreeMap::new(),
            flush_at: None,
            next_anti_entropy: first_anti_entropy,
            channels: BTreeMap::new(),
            outputs: VecDeque::new(),
            stats: Stats::default(),
            now,
        }
    }

    pub fn name(&self) -> PeerName {
        self.config.identity.name
    }

    pub fn identity(&self) -> &PeerIdentity {
        &self.config.identity
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Routes for frames: over connections whose data path works.
    pub fn data_routes(&self) -> std::sync::Arc<Routes> {
        self.data_routes.clone()
    }

    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.conns.values()
    }

    pub fn connection_to(&self, peer: PeerName) -> Option<&Connection> {
        self.by_peer.get(&peer).map(|id| &self.conns[id])
    }

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.maker.targets()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Registers a subsystem's gossip channel.
    pub fn add_channel(&mut self, name: &str, channel: Box<dyn Channel>) {
        self.channels.insert(name.to_string(), channel);
    }

    pub fn channel_mut(&mut self, name: &str) -> Option<&mut Box<dyn Channel>> {
        self.channels.get_mut(name)
    }

    /// The channels' admission tokens, for our side of the handshake.
    pub fn admission(&self) -> Vec<(String, Vec<u8>)> {
        self.channels
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.admission()?)))
            .collect()
    }

    fn refused_by_channel(&self, peer: &PeerIdentity) -> Option<String> {
        self.channels.iter().find_map(|(name, c)| {
            let token = peer
                .admission
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.as_slice());
            c.admit(peer.name, token).err()
        })
    }

    /// Takes the next thing for the runtime to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to feed [`Input::Tick`] next.
    pub fn next_timeout(&self) -> Instant {
        [
            Some(self.next_anti_entropy),
            self.flush_at,
            self.refresh_routes_at,
            self.maker.next_wakeup(),
            self.topology
                .earliest_unreachable()
                .map(|t| t + self.config.unreachable_grace),
        ]
        .into_iter()
        .flatten()
        .chain(self.channels.values().filter_map(|c| c.next_timeout()))
        .min()
        .expect("the anti-entropy timer is always set")
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        self.now = now;
        match input {
            Input::Connected {
                conn,
                peer,
                address,
                outbound,
                target,
                encrypted,
            } => self.on_connected(conn, peer, address, outbound, target, encrypted),
            Input::ConnectFailed {
                target,
                peer,
                reason,
                refused,
            } => {
                self.maker
                    .failed(target, peer, reason, refused, now, &mut self.rng);
            }
            Input::Closed { conn, reason } => self.on_closed(conn, reason),
            Input::Received { conn, message } => self.on_message(conn, message),
            Input::AddTarget { address, source } => self.maker.add(address, source, now),
            Input::DataPath { peer, usable } => {
                if let Some(c) = self
                    .by_peer
                    .get(&peer)
                    .and_then(|id| self.conns.get_mut(id))
                    && c.usable != usable
                {
                    c.usable = usable;
                    self.local_connections_changed();
                }
            }
            Input::Forget { address } => {
                self.maker.forget(&address);
            }
            Input::Tick => {}
        }
        self.after(now);
    }

    fn on_connected(
        &mut self,
        conn: ConnId,
        peer: PeerIdentity,
        address: SocketAddr,
        outbound: bool,
        target: Option<SocketAddr>,
        encrypted: bool,
    ) {
        let local = &self.config.identity;
        let refusal = if peer.name == local.name && peer.uid == local.uid {
            if let Some(t) = target {
                self.maker.our_own(t);
            }
            Some("this is a connection to ourselves".to_string())
        } else if peer.name == local.name {
            Some(format!(
                "name clash: {} ({}) uses our name {}; give one of them another --name",
                peer.nickname, address, peer.name
            ))
        } else if let Some(&existing) = self.by_peer.get(&peer.name) {
            // Both ends apply the same rule, so they keep the same
            // connection: the one started by the lower name; of two started
            // by the same side, the newer (the older is likely dead).
            let initiator = |outbound: bool| if outbound { local.name } else { peer.name };
            let old = initiator(self.conns[&existing].outbound);
            let new = initiator(outbound);
            if old == new || new < old {
                self.drop_connection(existing, "replaced by a newer connection".into(), true);
                None
            } else {
                Some(format!(
                    "duplicate connection: already connected to {}",
                    peer.name
                ))
            }
        } else if let Some(reason) = self.refused_by_channel(&peer) {
            Some(reason)
        } else if self.conns.len() >= self.config.conn_limit {
            Some(format!(
                "connection limit of {} reached",
                self.config.conn_limit
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.stats.refused += 1;
            tracing::info!(peer = %peer.name, nickname = %peer.nickname, %address, %reason, "refusing connection");
            if let Some(t) = target {
                let state = self.maker.get(&t).map(|t| t.state);
                if state != Some(TargetState::OurOwn) {
                    self.maker.failed(
                        t,
                        Some(peer.name),
                        reason.clone(),
                        true,
                        self.now,
                        &mut self.rng,
                    );
                }
            }
            self.outputs.push_back(Output::Close {
                conn,
                reason,
                refuse: true,
            });
            return;
        }
        tracing::info!(peer = %peer.name, nickname = %peer.nickname, %address, outbound, "connection established");
        if let Some(t) = target {
            self.maker.connected(t, peer.name);
        }
        self.by_peer.insert(peer.name, conn);
        self.conns.insert(
            conn,
            Connection {
                id: conn,
                peer,
                address,
                outbound,
                target,
                encrypted,
                since: self.now,
                usable: false,
            },
        );
        self.local_connections_changed();
        // Bring the new neighbor up to date at once.
        let entries: Vec<PeerInfo> = self.topology.peers().cloned().collect();
        self.send(conn, ControlMessage::Topology { entries });
        let states: Vec<(String, Vec<u8>)> = self
            .channels
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.full_state()?)))
            .collect();
        for (channel, payload) in states {
            self.send(conn, ControlMessage::Gossip { channel, payload });
        }
    }

    fn on_closed(&mut self, conn: ConnId, reason: String) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        tracing::info!(peer = %c.peer.name, nickname = %c.peer.nickname, %reason, "connection closed");
        if self.by_peer.get(&c.peer.name) == Some(&conn) {
            self.by_peer.remove(&c.peer.name);
        }
        if let Some(t) = c.target {
            self.maker.disconnected(t, reason, self.now, &mut self.rng);
        }
        self.maker.peer_lost(c.peer.name, self.now);
        self.local_connections_changed();
    }

    /// The peer refused a connection it had first accepted (a duplicate, a
    /// name clash it saw and we did not): back off like any refusal.
    fn on_refused(&mut self, conn: ConnId, reason: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let (target, peer) = (c.target.take(), c.peer.name);
        let reason = format!("refused by the peer: {reason}");
        self.on_closed(conn, reason.clone());
        if let Some(t) = target {
            self.maker
                .failed(t, Some(peer), reason, true, self.now, &mut self.rng);
        }
    }

    fn drop_connection(&mut self, conn: ConnId, reason: String, refuse: bool) {
        self.outputs.push_back(Output::Close {
            conn,
            reason: reason.clone(),
            refuse,
        });
        self.on_closed(conn, reason);
    }

    fn local_connections_changed(&mut self) {
        let connections = self
            .conns
            .values()
            .map(|c| ConnInfo {
                peer: c.peer.name,
                address: c.address,
                outbound: c.outbound,
                usable: c.usable,
            })
            .collect();
        if self.topology.set_local_connections(connections) {
            self.mark_dirty(self.name(), None);
        }
    }

    fn mark_dirty(&mut self, entry: PeerName, from: Option<PeerName>) {
        self.dirty.insert(entry, from);
        self.flush_at
            .get_or_insert(self.now + self.config.gossip_delay);
        self.routes_changed();
    }

    fn routes_changed(&mut self) {
        self.routes_stale = true;
        self.refresh_routes_at
            .get_or_insert(self.now + self.config.gossip_delay);
    }

    fn send(&mut self, conn: ConnId, message: ControlMessage) {
        self.stats.messages_sent += 1;
        let kind = message.kind(|c| self.channels.contains_key(c));
        *self.stats.sent_by_kind.entry(kind).or_default() += 1;
        self.outputs.push_back(Output::Send { conn, message });
    }

    fn send_to_peer(&mut self, peer: PeerName, message: ControlMessage) {
        if let Some(&conn) = self.by_peer.get(&peer) {
            self.send(conn, message);
        }
    }

    fn on_message(&mut self, conn: ConnId, message: ControlMessage) {
        let Some(from) = self.conns.get(&conn).map(|c| c.peer.name) else {
            return; // a refused or closed connection
        };
        self.stats.messages_received += 1;
        match message {
            // The data path's own negotiation; the runtime handles it.
            ControlMessage::Heartbeat
            | ControlMessage::DataPath { .. }
            | ControlMessage::DataPathOffer { .. } => {}
            ControlMessage::Refuse { reason } => self.on_refused(conn, reason),
            ControlMessage::Topology { entries } => self.merge(entries, from),
            ControlMessage::Digest { entries } => {
                let (ours_newer, theirs_newer) = self.topology.compare(&entries);
                if !ours_newer.is_empty() {
                    self.send(
                        conn,
                        ControlMessage::Topology {
                            entries: ours_newer,
                        },
                    );
                }
                if !theirs_newer.is_empty() {
                    self.send(
                        conn,
                        ControlMessage::Request {
                            names: theirs_newer,
                        },
                    );
                }
            }
            ControlMessage::Request { names } => {
                let entries: Vec<PeerInfo> = names
                    .iter()
                    .filter_map(|n| self.topology.get(*n).cloned())
                    .collect();
                if !entries.is_empty() {
                    self.send(conn, ControlMessage::Topology { entries });
                }
            }
            ControlMessage::Gossip { channel, payload } => self.on_gossip(&channel, from, &payload),
            ControlMessage::Broadcast {
                channel,
                source,
                hops,
                payload,
            } => self.on_broadcast(channel, source, hops, payload),
            ControlMessage::Unicast {
                channel,
                source,
                destination,
                payload,
            } => self.on_unicast(channel, source, destination, payload),
        }
    }

    fn merge(&mut self, entries: Vec<PeerInfo>, from: PeerName) {
        for entry in entries {
            let name = entry.name;
            match self.topology.merge(entry, self.now) {
                Merged::Unchanged => {}
                Merged::New | Merged::Updated => self.mark_dirty(name, Some(from)),
                Merged::Restarted => {
                    tracing::info!(peer = %name, "peer restarted");
                    self.maker.peer_restarted(name, self.now);
                    self.mark_dirty(name, Some(from));
                }
                Merged::SelfCorrected => self.mark_dirty(name, None),
            }
        }
    }

    fn on_gossip(&mut self, channel: &str, from: PeerName, payload: &[u8]) {
        let now = self.now;
        let Some(c) = self.channels.get_mut(channel) else {
            return;
        };
        match c.on_gossip(now, from, payload) {
            Ok(Some(delta)) => {
                let others: Vec<ConnId> = self
                    .conns
                    .values()
                    .filter(|c| c.peer.name != from)
                    .map(|c| c.id)
                    .collect();
                for conn in others {
                    self.send(
                        conn,
                        ControlMessage::Gossip {
                            channel: channel.to_string(),
                            payload: delta.clone(),
                        },
                    );
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%channel, peer = %from, error = %e, "bad gossip"),
        }
    }

    fn on_broadcast(&mut self, channel: String, source: PeerName, hops: u8, payload: Vec<u8>) {
        self.refresh_routes();
        if hops < MAX_BROADCAST_HOPS {
            for child in self.routes.broadcast_children(source) {
                self.send_to_peer(
                    child,
                    ControlMessage::Broadcast {
                        channel: channel.clone(),
                        source,
                        hops: hops + 1,
                        payload: payload.clone(),
                    },
                );
            }
        }
        let now = self.now;
        if let Some(c) = self.channels.get_mut(&channel)
            && let Err(e) = c.on_broadcast(now, source, &payload)
        {
            tracing::warn!(%channel, %source, error = %e, "bad broadcast");
        }
    }

    fn on_unicast(
        &mut self,
        channel: String,
        source: PeerName,
        destination: PeerName,
        payload: Vec<u8>,
    ) {
        if destination == self.name() {
            let now = self.now;
            if let Some(c) = self.channels.get_mut(&channel)
                && let Err(e) = c.on_unicast(now, source, &payload)
            {
                tracing::warn!(%channel, %source, error = %e, "bad unicast");
            }
            return;
        }
        self.refresh_routes();
        if let Some(hop) = self.routes.next_hop(destination) {
            self.send_to_peer(
                hop,
                ControlMessage::Unicast {
                    channel,
                    source,
                    destination,
                    payload,
                },
            );
        }
    }

    /// Recomputes routes if the topology changed, and with them which
    /// peers are reachable.
    fn refresh_routes(&mut self) {
        if !self.routes_stale {
            return;
        }
        self.routes = Routes::compute(self.name(), self.topology.adjacency());
        let data = self.topology.data_adjacency();
        if data != *self.data_routes.adjacency() {
            self.data_routes = std::sync::Arc::new(Routes::compute(self.name(), data));
        }
        self.routes_stale = false;
        self.refresh_routes_at = None;
        let reachable = self.routes.reachable();
        self.topology.mark_reachable(&reachable, self.now);
        for c in self.channels.values_mut() {
            c.on_peers_changed(self.now, &reachable);
        }
    }

    /// Timers and follow-ups after every input.
    fn after(&mut self, now: Instant) {
        if self.refresh_routes_at.is_some_and(|t| t <= now) {
            self.refresh_routes();
        }
        let gone = self
            .topology
            .collect_garbage(now, self.config.unreachable_grace);
        if !gone.is_empty() {
            tracing::info!(peers = ?gone, "forgot unreachable peers");
            for name in gone {
                self.dirty.remove(&name);
            }
            self.routes_stale = true;
            self.refresh_routes();
        }
        for c in self.channels.values_mut() {
            if c.next_timeout().is_some_and(|t| t <= now) {
                c.on_timeout(now);
            }
        }
        self.route_channel_output();
        self.make_connections(now);
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush();
        }
        if now >= self.next_anti_entropy {
            self.anti_entropy();
            self.next_anti_entropy = now
                + self
                    .config
                    .anti_entropy
                    .mul_f64(self.rng.random_range(0.5..1.5));
        }
    }

    fn route_channel_output(&mut self) {
        let mut out = Vec::new();
        for (name, c) in &mut self.channels {
            while let Some(o) = c.poll_outgoing() {
                out.push((name.clone(), o));
            }
        }
        let local = self.name();
        for (channel, o) in out {
            match o {
                Outgoing::Gossip(payload) => {
                    let conns: Vec<ConnId> = self.conns.keys().copied().collect();
                    for conn in conns {
                        let message = ControlMessage::Gossip {
                            channel: channel.clone(),
                            payload: payload.clone(),
                        };
                        self.send(conn, message);
                    }
                }
                Outgoing::Broadcast(payload) => {
                    for child in self.routes.broadcast_children(local) {
                        let message = ControlMessage::Broadcast {
                            channel: channel.clone(),
                            source: local,
                            hops: 1,
                            payload: payload.clone(),
                        };
                        self.send_to_peer(child, message);
                    }
                }
                Outgoing::Unicast(destination, payload) => {
                    self.on_unicast(channel, local, destination, payload);
                }
            }
        }
    }

    fn make_connections(&mut self, now: Instant) {
        let connected: BTreeSet<PeerName> = self.by_peer.keys().copied().collect();
        if self.config.discovery {
            let known = self.discoverable();
            self.maker.discovered(&known, &connected, now);
        }
        let connecting = self
            .maker
            .targets()
            .filter(|t| t.state == TargetState::Connecting)
            .count();
        let budget = self
            .config
            .conn_limit
            .saturating_sub(self.conns.len() + connecting);
        for target in self.maker.due(now, budget, &connected) {
            self.outputs.push_back(Output::Connect { target });
        }
    }

    /// An address for each reachable peer we are not connected to, from
    /// what its neighbors report.
    fn discoverable(&self) -> BTreeMap<PeerName, SocketAddr> {
        let reachable = self.routes.reachable();
        let mut known = BTreeMap::new();
        for info in self
            .topology
            .peers()
            .filter(|p| reachable.contains(&p.name))
        {
            for c in &info.connections {
                if c.peer != self.name() && reachable.contains(&c.peer) {
                    known.entry(c.peer).or_insert(c.address);
                }
            }
        }
        known
    }

    fn flush(&mut self) {
        self.flush_at = None;
        let dirty = std::mem::take(&mut self.dirty);
        let neighbors: Vec<(ConnId, PeerName)> =
            self.conns.values().map(|c| (c.id, c.peer.name)).collect();
        for (conn, neighbor) in neighbors {
            let entries: Vec<PeerInfo> = dirty
                .iter()
                .filter(|(_, from)| **from != Some(neighbor))
                .filter_map(|(name, _)| self.topology.get(*name).cloned())
                .collect();
            if !entries.is_empty() {
                self.send(conn, ControlMessage::Topology { entries });
            }
        }
    }

    fn anti_entropy(&mut self) {
        if self.conns.is_empty() {
            return;
        }
        let pick = self.rng.random_range(0..self.conns.len());
        let conn = *self.conns.keys().nth(pick).expect("in range");
        let entries = self.topology.digest();
        self.send(conn, ControlMessage::Digest { entries });
        let states: Vec<(String, Vec<u8>)> = self
            .channels
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.full_state()?)))
            .collect();
        for (channel, payload) in states {
            self.send(conn, ControlMessage::Gossip { channel, payload });
        }
    }
}

#[cfg(test)]
mod tests;
