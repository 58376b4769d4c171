//! Gossip channels: how subsystems (IPAM first) share state over the mesh
//! without knowing its shape.
//!
//! A channel is pure like the mesh: it gets messages and time, and queues
//! what it wants sent. The mesh routes: gossip goes to neighbors (and what
//! a neighbor's gossip changed goes on to the others), broadcasts follow
//! the source's tree, unicasts the shortest path.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use crate::identity::PeerName;

/// What a channel asks the mesh to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// To every neighbor, to merge.
    Gossip(Vec<u8>),
    /// To every reachable router.
    Broadcast(Vec<u8>),
    /// To one router.
    Unicast(PeerName, Vec<u8>),
}

/// Per channel name, the token a peer shows in its handshake.
pub type Admission = Vec<(String, Vec<u8>)>;

pub trait Channel {
    /// Merges a neighbor's gossip; returns the part that was news to us, to
    /// pass on to our other neighbors.
    fn on_gossip(
        &mut self,
        now: Instant,
        from: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String>;

    /// A broadcast from `source`; a channel that gossips only refuses it.
    fn on_broadcast(
        &mut self,
        _now: Instant,
        _source: PeerName,
        _payload: &[u8],
    ) -> Result<(), String> {
        Err("this channel takes gossip only".into())
    }

    /// A unicast from `source`; a channel that gossips only refuses it.
    fn on_unicast(
        &mut self,
        _now: Instant,
        _source: PeerName,
        _payload: &[u8],
    ) -> Result<(), String> {
        Err("this channel takes gossip only".into())
    }

    /// Everything we know, for periodic anti-entropy and for new neighbors.
    fn full_state(&self) -> Option<Vec<u8>>;

    /// The set of reachable routers changed.
    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>);

    /// Messages to send, taken one at a time.
    fn poll_outgoing(&mut self) -> Option<Outgoing>;

    /// When the channel wants time to pass in (a deadline), if ever.
    fn next_timeout(&self) -> Option<Instant> {
        None
    }

    fn on_timeout(&mut self, _now: Instant) {}

    /// What this channel wants a peer to see in our handshake, to decide
    /// whether we may join (IPAM: its cluster).
    fn admission(&self) -> Option<Vec<u8>> {
        None
    }

    /// Whether a peer that showed `token` may connect; the error says why
    /// not, and is what both operators see.
    fn admit(&self, _peer: PeerName, _token: Option<&[u8]>) -> Result<(), String> {
        Ok(())
    }
}

/// A channel shared between the mesh, which drives it, and the router's
/// task, which reads and changes it (the `hosts` channel).
pub struct Shared<C>(Arc<Mutex<C>>);

impl<C> Clone for Shared<C> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<C: Channel + Send + 'static> Shared<C> {
    pub fn new(channel: C) -> Shared<C> {
        Shared(Arc::new(Mutex::new(channel)))
    }

    pub fn lock(&self) -> MutexGuard<'_, C> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The side the mesh drives.
    pub fn channel(&self) -> Box<dyn Channel + Send> {
        Box::new(self.clone())
    }
}

impl<C: Channel + Send + 'static> Channel for Shared<C> {
    fn on_gossip(
        &mut self,
        now: Instant,
        from: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        self.lock().on_gossip(now, from, payload)
    }

    fn on_broadcast(
        &mut self,
        now: Instant,
        source: PeerName,
        payload: &[u8],
    ) -> Result<(), String> {
        self.lock().on_broadcast(now, source, payload)
    }

    fn on_unicast(&mut self, now: Instant, source: PeerName, payload: &[u8]) -> Result<(), String> {
        self.lock().on_unicast(now, source, payload)
    }

    fn full_state(&self) -> Option<Vec<u8>> {
        self.lock().full_state()
    }

    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>) {
        self.lock().on_peers_changed(now, reachable)
    }

    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.lock().poll_outgoing()
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.lock().next_timeout()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.lock().on_timeout(now)
    }

    fn admission(&self) -> Option<Vec<u8>> {
        self.lock().admission()
    }

    fn admit(&self, peer: PeerName, token: Option<&[u8]>) -> Result<(), String> {
        self.lock().admit(peer, token)
    }
}
