//! The connection maker: which addresses to connect to, and when.
//!
//! Targets come from the command line, from `weft connect`, and from gossip
//! (peers others are connected to). A failed attempt is retried after an
//! exponentially growing, jittered delay, so a refused or unreachable peer
//! is never hammered; a peer that restarts is retried at once.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use rand::Rng;
use serde::Serialize;

use crate::identity::PeerName;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    CommandLine,
    Api,
    /// Connected to in the router's last run (remembered across restarts).
    Resumed,
    Discovered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetState {
    Waiting,
    Connecting,
    Connected,
    /// The address is our own; it is kept to show, never tried.
    OurOwn,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub address: SocketAddr,
    pub source: Source,
    pub state: TargetState,
    /// Failed attempts since the last success.
    pub attempts: u32,
    pub next_try: Instant,
    pub last_error: Option<String>,
    /// The peer met at this address, once known.
    pub peer: Option<PeerName>,
}

/// Retry delays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    /// First delay after a refusal (wrong password, name clash): the peer
    /// answered, so the problem needs a person, not a quick retry.
    pub refused: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            refused: Duration::from_secs(10),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    fn delay(&self, attempts: u32, refused: bool, rng: &mut impl Rng) -> Duration {
        let base = if refused { self.refused } else { self.initial };
        let exp = base
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(self.max);
        // +-20% so a mesh that lost a router does not retry in lockstep.
        exp.mul_f64(rng.random_range(0.8..1.2))
    }
}

pub struct ConnectionMaker {
    targets: BTreeMap<SocketAddr, Target>,
    backoff: Backoff,
}

impl ConnectionMaker {
    pub fn new(backoff: Backoff) -> ConnectionMaker {
        ConnectionMaker {
            targets: BTreeMap::new(),
            backoff,
        }
    }

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.values()
    }

    pub fn get(&self, address: &SocketAddr) -> Option<&Target> {
        self.targets.get(address)
    }

    /// Adds a target to try now; a target already there keeps its state
    /// but is tried now if waiting, and a person's word outranks gossip.
    pub fn add(&mut self, address: SocketAddr, source: Source, now: Instant) {
        let target = self.targets.entry(address).or_insert(Target {
            address,
            source,
            state: TargetState::Waiting,
            attempts: 0,
            next_try: now,
            last_error: None,
            peer: None,
        });
        target.source = target.source.min(source);
        if target.state == TargetState::Waiting && source != Source::Discovered {
            target.next_try = now;
        }
    }

    /// Stops trying `address`; an existing connection stays.
    pub fn forget(&mut self, address: &SocketAddr) -> bool {
        self.targets.remove(address).is_some()
    }

    /// Targets to connect to now, at most `budget`, marked as connecting.
    /// Targets of peers we are connected to (through another address or an
    /// inbound connection) are put off until [`ConnectionMaker::peer_lost`].
    pub fn due(
        &mut self,
        now: Instant,
        budget: usize,
        connected: &BTreeSet<PeerName>,
    ) -> Vec<SocketAddr> {
        let mut due = Vec::new();
        for target in self.targets.values_mut() {
            if target.state != TargetState::Waiting || target.next_try > now {
                continue;
            }
            if target.peer.is_some_and(|p| connected.contains(&p)) {
                target.next_try = now + self.backoff.max;
            } else if due.len() < budget {
                target.state = TargetState::Connecting;
                due.push(target.address);
            }
        }
        due
    }

    pub fn connected(&mut self, address: SocketAddr, peer: PeerName) {
        if let Some(t) = self.targets.get_mut(&address) {
            t.state = TargetState::Connected;
            t.attempts = 0;
            t.last_error = None;
            t.peer = Some(peer);
        }
    }

    /// An attempt failed; `refused` if the peer answered and said no.
    pub fn failed(
        &mut self,
        address: SocketAddr,
        peer: Option<PeerName>,
        error: String,
        refused: bool,
        now: Instant,
        rng: &mut impl Rng,
    ) {
        if let Some(t) = self.targets.get_mut(&address) {
            t.attempts += 1;
            t.state = TargetState::Waiting;
            t.next_try = now + self.backoff.delay(t.attempts, refused, rng);
            t.last_error = Some(error);
            t.peer = peer.or(t.peer);
        }
    }

    /// A connection made from this target ended.
    pub fn disconnected(
        &mut self,
        address: SocketAddr,
        reason: String,
        now: Instant,
        rng: &mut impl Rng,
    ) {
        if let Some(t) = self.targets.get_mut(&address) {
            t.state = TargetState::Waiting;
            t.attempts = 1;
            t.next_try = now + self.backoff.delay(1, false, rng);
            t.last_error = Some(reason);
        }
    }

    /// The address turned out to be our own.
    pub fn our_own(&mut self, address: SocketAddr) {
        if let Some(t) = self.targets.get_mut(&address) {
            t.state = TargetState::OurOwn;
            t.last_error = Some("this is our own address".to_string());
        }
    }

    /// A peer came back with a new uid: whatever we were waiting for, try
    /// its addresses now.
    pub fn peer_restarted(&mut self, peer: PeerName, now: Instant) {
        for t in self.targets.values_mut() {
            if t.peer == Some(peer) && t.state == TargetState::Waiting {
                t.next_try = now;
                t.attempts = 0;
            }
        }
    }

    /// Our connection to `peer` ended: its other addresses are worth a try.
    pub fn peer_lost(&mut self, peer: PeerName, now: Instant) {
        for t in self.targets.values_mut() {
            if t.peer == Some(peer) && t.state == TargetState::Waiting {
                t.next_try = t.next_try.min(now + self.backoff.initial);
            }
        }
    }

    /// Brings discovered targets in line with gossip: an address for each
    /// known peer we are not connected to, and none for peers that are gone
    /// or connected through another address.
    pub fn discovered(
        &mut self,
        known: &BTreeMap<PeerName, SocketAddr>,
        connected: &BTreeSet<PeerName>,
        now: Instant,
    ) {
        self.targets.retain(|_, t| {
            t.source != Source::Discovered
                || t.state != TargetState::Waiting
                || t.peer
                    .is_none_or(|p| known.contains_key(&p) && !connected.contains(&p))
        });
        let targeted: BTreeSet<PeerName> = self.targets.values().filter_map(|t| t.peer).collect();
        for (&peer, &address) in known {
            if connected.contains(&peer)
                || targeted.contains(&peer)
                || self.targets.contains_key(&address)
            {
                continue;
            }
            self.add(address, Source::Discovered, now);
            if let Some(t) = self.targets.get_mut(&address) {
                t.peer = Some(peer);
            }
        }
    }

    /// When a waiting target next becomes due.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.targets
            .values()
            .filter(|t| t.state == TargetState::Waiting)
            .map(|t| t.next_try)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::SmallRng};

    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 6783))
    }

    #[test]
    fn failures_back_off_exponentially_with_jitter_and_refusals_longer() {
        let mut rng = SmallRng::seed_from_u64(1);
        let t0 = Instant::now();
        let mut m = ConnectionMaker::new(Backoff::default());
        m.add(addr(1), Source::CommandLine, t0);
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..8 {
            assert_eq!(m.due(now, 10, &BTreeSet::new()), vec![addr(1)]);
            assert!(
                m.due(now, 10, &BTreeSet::new()).is_empty(),
                "not twice while connecting"
            );
            m.failed(
                addr(1),
                None,
                "connection refused".into(),
                false,
                now,
                &mut rng,
            );
            let next = m.get(&addr(1)).unwrap().next_try;
            delays.push(next - now);
            now = next;
        }
        assert!(
            delays[0] >= Duration::from_millis(800) && delays[0] <= Duration::from_millis(1200)
        );
        assert!(
            delays[3] >= Duration::from_millis(6400),
            "doubling: {delays:?}"
        );
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(72)),
            "capped: {delays:?}"
        );
        m.add(addr(2), Source::CommandLine, now);
        m.due(now, 10, &BTreeSet::new());
        m.failed(addr(2), None, "wrong password".into(), true, now, &mut rng);
        assert!(m.get(&addr(2)).unwrap().next_try - now >= Duration::from_secs(8));
    }

    #[test]
    fn restarts_and_user_requests_retry_at_once() {
        let mut rng = SmallRng::seed_from_u64(2);
        let t0 = Instant::now();
        let peer = PeerName::from_u64(9);
        let mut m = ConnectionMaker::new(Backoff::default());
        m.add(addr(1), Source::Discovered, t0);
        m.due(t0, 1, &BTreeSet::new());
        m.failed(addr(1), Some(peer), "timed out".into(), false, t0, &mut rng);
        assert!(m.due(t0, 1, &BTreeSet::new()).is_empty());
        m.peer_restarted(peer, t0);
        assert_eq!(m.due(t0, 1, &BTreeSet::new()), vec![addr(1)]);
        m.failed(addr(1), Some(peer), "timed out".into(), false, t0, &mut rng);
        m.add(addr(1), Source::Api, t0);
        assert_eq!(m.get(&addr(1)).unwrap().source, Source::Api);
        assert_eq!(m.due(t0, 1, &BTreeSet::new()), vec![addr(1)]);
    }

    #[test]
    fn discovery_follows_gossip() {
        let t0 = Instant::now();
        let (p1, p2) = (PeerName::from_u64(1), PeerName::from_u64(2));
        let mut m = ConnectionMaker::new(Backoff::default());
        let known = BTreeMap::from([(p1, addr(1)), (p2, addr(2))]);
        m.discovered(&known, &BTreeSet::from([p2]), t0);
        assert_eq!(
            m.targets().map(|t| t.address).collect::<Vec<_>>(),
            vec![addr(1)]
        );
        m.discovered(&BTreeMap::new(), &BTreeSet::new(), t0);
        assert_eq!(
            m.targets().count(),
            0,
            "gone from gossip, gone from targets"
        );
    }
}
