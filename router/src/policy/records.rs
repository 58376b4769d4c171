//! The policy channel: the mesh's policies and every container's labels,
//! namespace and named ports, spread by gossip so that each host can
//! enforce for its own containers against peers on the others.
//!
//! A convergent register set: each key holds the value with the highest
//! (clock, origin), where the clock is a Lamport clock (a write is above
//! everything its router has seen), so the last `weft policy apply`
//! anywhere wins and every router ends with the same. Removals are
//! tombstones, kept [`TOMBSTONE_TTL`]. Policies belong to the mesh;
//! endpoints to the router whose container they are, counted only while
//! it is reachable and forgotten after [`FORGET_AFTER`]. Pure: time comes
//! in.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    identity::PeerName,
    mesh::{
        channel::{Channel, Outgoing, Shared},
        departures::Departures,
    },
};

pub const CHANNEL: &str = "policy";
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Most entries held, and in one message.
pub const MAX_ENTRIES: usize = 65_536;
/// Largest body (a policy's JSON, an endpoint's labels).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Key {
    /// A policy, `namespace/name`.
    Policy(String),
    /// A container of `origin`'s, by its owner id.
    Endpoint(PeerName, String),
    /// A namespace's labels (set with `weft policy namespace`; Kubernetes
    /// namespaces come from the API server instead).
    Namespace(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub clock: u64,
    pub origin: PeerName,
    /// JSON; `None` once removed.
    pub body: Option<String>,
}

impl Value {
    fn newer_than(&self, other: &Value) -> bool {
        (self.clock, self.origin) > (other.clock, other.origin)
    }
}

pub type Entries = Vec<(Key, Value)>;

pub fn encode(entries: &Entries) -> Vec<u8> {
    postcard::to_allocvec(entries).expect("entries serialize")
}

pub fn decode(bytes: &[u8]) -> Result<Entries, String> {
    let entries: Entries =
        postcard::from_bytes(bytes).map_err(|e| format!("malformed policy entries: {e}"))?;
    if entries.len() > MAX_ENTRIES {
        return Err(format!("{} policy entries in one message", entries.len()));
    }
    if let Some((key, _)) = entries
        .iter()
        .find(|(_, v)| v.body.as_ref().is_some_and(|b| b.len() > MAX_BODY))
    {
        return Err(format!("{key:?}: a body over {MAX_BODY} bytes"));
    }
    Ok(entries)
}

#[derive(Clone, Debug)]
struct Held {
    value: Value,
    since: Instant,
}

pub struct Records {
    me: PeerName,
    clock: u64,
    entries: BTreeMap<Key, Held>,
    reachable: BTreeSet<PeerName>,
    departures: Departures,
    outgoing: VecDeque<Outgoing>,
    /// Grows with every change that counts (ours or learnt), so the
    /// router recompiles and stores only then.
    generation: u64,
}

impl Records {
    pub fn new(me: PeerName, clock: u64) -> Records {
        Records {
            me,
            clock,
            entries: BTreeMap::new(),
            reachable: BTreeSet::new(),
            departures: Departures::new(FORGET_AFTER, TOMBSTONE_TTL),
            outgoing: VecDeque::new(),
            generation: 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sets `key` to `body` (or removes it) as a new write of ours; false
    /// when it held that already.
    pub fn set(&mut self, now: Instant, key: Key, body: Option<String>) -> bool {
        if self.entries.get(&key).map(|h| &h.value.body) == Some(&body) {
            return false;
        }
        if body.is_none() && !self.entries.contains_key(&key) {
            return false;
        }
        // A peer's clock may be anything: never overflow.
        self.clock = self.clock.saturating_add(1);
        let value = Value {
            clock: self.clock,
            origin: self.me,
            body,
        };
        self.entries.insert(
            key.clone(),
            Held {
                value: value.clone(),
                since: now,
            },
        );
        self.generation += 1;
        self.outgoing
            .push_back(Outgoing::Gossip(encode(&vec![(key, value)])));
        true
    }

    /// Whether an entry counts: a policy always, an endpoint while its
    /// router is us or reachable.
    fn counts(&self, key: &Key) -> bool {
        match key {
            Key::Policy(_) | Key::Namespace(_) => true,
            Key::Endpoint(origin, _) => *origin == self.me || self.reachable.contains(origin),
        }
    }

    /// The live policies' bodies, by id.
    pub fn policies(&self) -> Vec<(String, &Value)> {
        self.entries
            .iter()
            .filter_map(|(k, h)| match k {
                Key::Policy(id) if h.value.body.is_some() => Some((id.clone(), &h.value)),
                _ => None,
            })
            .collect()
    }

    /// The live namespaces' labels (JSON bodies), by name.
    pub fn namespaces(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter_map(|(k, h)| match (k, &h.value.body) {
                (Key::Namespace(name), Some(body)) => Some((name.as_str(), body.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Every live endpoint that counts: its router, owner and body.
    pub fn endpoints(&self) -> Vec<(PeerName, &str, &str)> {
        self.entries
            .iter()
            .filter(|(k, _)| self.counts(k))
            .filter_map(|(k, h)| match (k, &h.value.body) {
                (Key::Endpoint(origin, owner), Some(body)) => {
                    Some((*origin, owner.as_str(), body.as_str()))
                }
                _ => None,
            })
            .collect()
    }

    pub fn me(&self) -> PeerName {
        self.me
    }

    /// What is kept across a restart: our endpoints and every policy,
    /// removed ones included, and the clock.
    pub fn snapshot(&self) -> (u64, Entries) {
        let kept = self
            .entries
            .iter()
            .filter(|(k, _)| match k {
                Key::Policy(_) | Key::Namespace(_) => true,
                Key::Endpoint(origin, _) => *origin == self.me,
            })
            .map(|(k, h)| (k.clone(), h.value.clone()))
            .collect();
        (self.clock, kept)
    }

    /// Takes back a [`Records::snapshot`], before the mesh runs.
    pub fn restore(&mut self, now: Instant, clock: u64, entries: Entries) {
        self.clock = self.clock.max(clock);
        for (key, value) in entries.into_iter().take(MAX_ENTRIES) {
            self.clock = self.clock.max(value.clock);
            self.entries.insert(key, Held { value, since: now });
        }
        self.generation += 1;
    }

    fn merge(&mut self, now: Instant, entries: Entries) -> Entries {
        let mut news = Vec::new();
        for (key, theirs) in entries {
            self.clock = self.clock.max(theirs.clock);
            if let Key::Endpoint(origin, _) = &key {
                if *origin == self.me {
                    self.stale_news_of_ours(now, key, theirs);
                    continue;
                }
                if !self.departures.admits(*origin, theirs.clock) {
                    continue;
                }
            }
            let newer = self
                .entries
                .get(&key)
                .is_none_or(|ours| theirs.newer_than(&ours.value));
            if !newer || (!self.entries.contains_key(&key) && self.entries.len() >= MAX_ENTRIES) {
                continue;
            }
            if let Key::Endpoint(origin, _) = &key {
                self.departures
                    .holding(*origin, self.reachable.contains(origin), now);
            }
            self.entries.insert(
                key.clone(),
                Held {
                    value: theirs.clone(),
                    since: now,
                },
            );
            self.generation += 1;
            news.push((key, theirs));
        }
        news
    }

    /// A copy of one of our endpoints that is not what we hold (from before
    /// a restart, say): ours is said again, newer.
    fn stale_news_of_ours(&mut self, now: Instant, key: Key, theirs: Value) {
        let ours = self.entries.get(&key).map(|h| h.value.clone());
        match ours {
            Some(ours) if ours == theirs => {}
            Some(ours) => {
                self.entries.remove(&key);
                self.set(now, key, ours.body);
            }
            None if theirs.body.is_some() => {
                // Ours once, unknown now: removed.
                self.entries.insert(
                    key.clone(),
                    Held {
                        value: theirs,
                        since: now,
                    },
                );
                self.set(now, key, None);
            }
            None => {}
        }
    }
}

impl Channel for Records {
    fn on_gossip(
        &mut self,
        now: Instant,
        _from: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        let news = self.merge(now, decode(payload)?);
        Ok((!news.is_empty()).then(|| encode(&news)))
    }

    fn full_state(&self) -> Option<Vec<u8>> {
        let all: Entries = self
            .entries
            .iter()
            .map(|(k, h)| (k.clone(), h.value.clone()))
            .collect();
        Some(encode(&all))
    }

    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>) {
        self.reachable = reachable.clone();
        let origins: BTreeSet<PeerName> = self
            .entries
            .keys()
            .filter_map(|k| match k {
                Key::Endpoint(o, _) => Some(*o),
                Key::Policy(_) | Key::Namespace(_) => None,
            })
            .collect();
        self.departures
            .on_peers_changed(now, reachable, self.me, origins);
        // Which endpoints count changed.
        self.generation += 1;
    }

    fn next_timeout(&self) -> Option<Instant> {
        let tombstones = self
            .entries
            .values()
            .filter(|h| h.value.body.is_none())
            .map(|h| h.since + TOMBSTONE_TTL);
        self.departures
            .next_timeout()
            .into_iter()
            .chain(tombstones)
            .min()
    }

    fn on_timeout(&mut self, now: Instant) {
        let before = self.entries.len();
        self.entries.retain(|_, h| {
            !(h.value.body.is_none() && now.saturating_duration_since(h.since) >= TOMBSTONE_TTL)
        });
        for origin in self.departures.due(now) {
            let mut highest = 0;
            self.entries.retain(|k, h| match k {
                Key::Endpoint(o, _) if *o == origin => {
                    highest = highest.max(h.value.clock);
                    false
                }
                _ => true,
            });
            self.departures.forgot(origin, highest, now);
        }
        if self.entries.len() != before {
            self.generation += 1;
        }
    }

    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }
}

pub type PolicyRecords = Shared<Records>;

#[cfg(test)]
mod tests;
