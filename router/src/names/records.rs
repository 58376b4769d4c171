//! The mesh's names: which container addresses answer which name, as a
//! record set every router holds and gossips on the `names` channel.
//!
//! Each entry belongs to the router that registered it (its origin), and
//! only the origin changes it: a change carries the origin's clock, which
//! only grows (a restart seeds it from the wall clock above the last run),
//! and merging keeps the entry with the higher clock. A removal is an
//! entry marked deleted (a tombstone), so it spreads like any change and
//! an old copy cannot bring the name back; tombstones are dropped after
//! [`TOMBSTONE_TTL`]. When stale news of our own entries comes back (a
//! copy someone kept from before our restart), we say ours again, newer.
//! The entries of a router unreachable for [`FORGET_AFTER`] are dropped,
//! remembering the highest clock dropped so that a neighbour that kept
//! them cannot bring them back.
//!
//! Pure: no I/O, time passed in; the router stores our own entries and
//! the DNS server reads [`Names::lookup`].

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::name::Fqdn;
use crate::{
    identity::PeerName,
    mesh::{Channel, Outgoing, channel::Shared, departures::Departures},
};

/// The mesh channel names travel on.
pub const CHANNEL: &str = "names";

/// How long a removal is remembered: far longer than any gossip takes to
/// reach every router of a connected mesh.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// How long the names of a router that left outlive its reachability:
/// a short partition or a restart does not make them flicker.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);
/// Most entries one message may carry and one origin may have: a peer
/// cannot make us hold more than this per router.
pub const MAX_ENTRIES: usize = 65_536;
/// Longest container id or owner string.
pub const MAX_OWNER: usize = 128;

/// What identifies an entry within its origin's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub name: Fqdn,
    pub addr: Ipv4Addr,
    /// The container (or `weft:extern` for names added by hand).
    pub owner: String,
}

/// An entry's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    /// The origin's clock at the change.
    pub clock: u64,
    /// The port whose listener makes the instance ready, if it declared
    /// one.
    pub port: Option<u16>,
    /// Something listens on `port` in the instance's namespace (always,
    /// with no port), as its origin last saw.
    pub ready: bool,
    pub deleted: bool,
}

/// The wire form: entries by origin.
pub type Entries = Vec<(PeerName, Key, Value)>;

pub fn encode(entries: &Entries) -> Vec<u8> {
    postcard::to_allocvec(entries).expect("name entries serialize")
}

pub fn decode(bytes: &[u8]) -> Result<Entries, String> {
    let entries: Entries =
        postcard::from_bytes(bytes).map_err(|e| format!("malformed name entries: {e}"))?;
    if entries.len() > MAX_ENTRIES {
        return Err(format!("{} name entries, over the limit", entries.len()));
    }
    // Names were checked as they were read (Fqdn's TryFrom).
    if entries
        .iter()
        .any(|(_, key, _)| key.owner.len() > MAX_OWNER)
    {
        return Err("an owner over the limit".into());
    }
    Ok(entries)
}

/// One address that answers a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub addr: Ipv4Addr,
    pub origin: PeerName,
    pub owner: String,
    pub port: Option<u16>,
    pub ready: bool,
}

impl Instance {
    fn of(origin: PeerName, key: &Key, value: &Value) -> Instance {
        Instance {
            addr: key.addr,
            origin,
            owner: key.owner.clone(),
            port: value.port,
            ready: value.ready,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Held {
    value: Value,
    /// When we learnt it (for a tombstone: when it may go).
    since: Instant,
}

/// Every router's names, as this router knows them.
pub struct Names {
    me: PeerName,
    clock: u64,
    /// By name first, so that a query is a range, not a scan.
    entries: BTreeMap<(Key, PeerName), Held>,
    /// How many entries each origin has here (bounded by [`MAX_ENTRIES`]).
    per_origin: BTreeMap<PeerName, usize>,
    /// When the oldest tombstone may go, or earlier (a tombstone
    /// overwritten by a live entry leaves it early): kept so that the
    /// mesh's every turn does not scan all entries.
    tombstones_due: Option<Instant>,
    reachable: BTreeSet<PeerName>,
    departures: Departures,
    outgoing: VecDeque<Outgoing>,
    /// Grows with every change of our own entries, so the router stores
    /// them only then.
    generation: u64,
}

impl Names {
    /// Starts with no names and our clock at `clock` (above any it had in
    /// an earlier run).
    pub fn new(me: PeerName, clock: u64) -> Names {
        Names {
            me,
            clock,
            entries: BTreeMap::new(),
            per_origin: BTreeMap::new(),
            tombstones_due: None,
            reachable: BTreeSet::new(),
            departures: Departures::new(FORGET_AFTER, TOMBSTONE_TTL),
            outgoing: VecDeque::new(),
            generation: 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn tick(&mut self) -> u64 {
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    /// Sets one of our entries and gossips it.
    fn set_own(&mut self, now: Instant, key: Key, port: Option<u16>, ready: bool, deleted: bool) {
        let value = Value {
            clock: self.tick(),
            port,
            ready,
            deleted,
        };
        self.put(self.me, key.clone(), Held { value, since: now });
        self.generation += 1;
        self.outgoing
            .push_back(Outgoing::Gossip(encode(&vec![(self.me, key, value)])));
    }

    /// Registers `name` for `addr` of container `owner` on this router;
    /// false if it was there already, the same.
    /// An instance with a port starts not ready, until
    /// [`Names::set_ready`] says something listens.
    pub fn add(&mut self, now: Instant, key: Key, port: Option<u16>) -> bool {
        let current = self.entries.get(&(key.clone(), self.me));
        if current.is_some_and(|h| !h.value.deleted && h.value.port == port) {
            return false;
        }
        self.set_own(now, key, port, port.is_none(), false);
        true
    }

    /// The owners of our live entries.
    pub fn own_owners(&self) -> BTreeSet<String> {
        self.own()
            .filter(|(_, v)| !v.deleted)
            .map(|(k, _)| k.owner.clone())
            .collect()
    }

    /// Our instances that declared a port, with whether they are ready:
    /// what the router watches.
    pub fn watched(&self) -> Vec<(Key, u16, bool)> {
        self.own()
            .filter(|(_, v)| !v.deleted)
            .filter_map(|(k, v)| Some((k.clone(), v.port?, v.ready)))
            .collect()
    }

    /// Whether our instance `key` has a listener on its port now; gossips
    /// the change.
    pub fn set_ready(&mut self, now: Instant, key: &Key, ready: bool) {
        let Some(held) = self.entries.get(&(key.clone(), self.me)) else {
            return;
        };
        let value = held.value;
        if value.deleted || value.port.is_none() || value.ready == ready {
            return;
        }
        self.set_own(now, key.clone(), value.port, ready, false);
    }

    /// Removes our entries that match every filter given (an owner's, an
    /// address's, a name's). Returns how many went.
    pub fn remove(
        &mut self,
        now: Instant,
        owner: Option<&str>,
        addr: Option<Ipv4Addr>,
        name: Option<&Fqdn>,
    ) -> usize {
        let gone: Vec<(Key, Option<u16>)> = self
            .own()
            .filter(|(k, v)| {
                owner.is_none_or(|o| k.owner == o)
                    && addr.is_none_or(|a| a == k.addr)
                    && name.is_none_or(|n| *n == k.name)
                    && !v.deleted
            })
            .map(|(k, v)| (k.clone(), v.port))
            .collect();
        for (key, port) in &gone {
            self.set_own(now, key.clone(), *port, false, true);
        }
        gone.len()
    }

    fn own(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.entries
            .iter()
            .filter(|((_, origin), _)| *origin == self.me)
            .map(|((k, _), h)| (k, &h.value))
    }

    /// Our own entries, live or recently removed, and our clock: what the
    /// router stores to keep them across a restart.
    pub fn snapshot(&self) -> (u64, Vec<(Key, Value)>) {
        let own = self.own().map(|(k, v)| (k.clone(), *v)).collect();
        (self.clock, own)
    }

    /// Takes back what [`Names::snapshot`] saved, before the mesh runs.
    pub fn restore(&mut self, now: Instant, clock: u64, own: Vec<(Key, Value)>) {
        self.clock = self.clock.max(clock);
        for (key, value) in own.into_iter().take(MAX_ENTRIES) {
            self.clock = self.clock.max(value.clock);
            self.put(self.me, key, Held { value, since: now });
        }
        self.generation += 1;
    }

    /// Whether `origin`'s names count: ours, and reachable routers'.
    fn counts(&self, origin: PeerName) -> bool {
        origin == self.me || self.reachable.contains(&origin)
    }

    /// The live instances of `name`, in a stable order (the server
    /// shuffles them).
    pub fn lookup(&self, name: &Fqdn) -> Vec<Instance> {
        let first = (
            Key {
                name: name.clone(),
                ..min_key()
            },
            PeerName::from_u64(0),
        );
        self.entries
            .range(first..)
            .take_while(|((key, _), _)| key.name == *name)
            .filter(|((_, origin), held)| !held.value.deleted && self.counts(*origin))
            .map(|((key, origin), held)| Instance::of(*origin, key, &held.value))
            .collect()
    }

    /// The names `addr` answers to.
    pub fn reverse(&self, addr: Ipv4Addr) -> Vec<Fqdn> {
        let names: BTreeSet<Fqdn> = self
            .entries
            .iter()
            .filter(|((key, origin), held)| {
                key.addr == addr && !held.value.deleted && self.counts(*origin)
            })
            .map(|((key, _), _)| key.name.clone())
            .collect();
        names.into_iter().collect()
    }

    /// How many names have an instance that counts.
    pub fn name_count(&self) -> usize {
        let names: BTreeSet<&Fqdn> = self
            .entries
            .iter()
            .filter(|((_, origin), held)| !held.value.deleted && self.counts(*origin))
            .map(|((key, _), _)| &key.name)
            .collect();
        names.len()
    }

    /// Every live entry that counts, by name: for `weft status dns`.
    pub fn all(&self) -> Vec<(Fqdn, Instance)> {
        self.entries
            .iter()
            .filter(|((_, origin), held)| !held.value.deleted && self.counts(*origin))
            .map(|((key, origin), held)| {
                (key.name.clone(), Instance::of(*origin, key, &held.value))
            })
            .collect()
    }

    /// Keeps the newer of ours and theirs per entry; returns what was news.
    fn merge(&mut self, now: Instant, entries: Entries) -> Entries {
        let mut news = Vec::new();
        for (origin, key, theirs) in entries {
            if origin == self.me {
                self.stale_news_of_ours(now, key, theirs);
                continue;
            }
            let forgotten = !self.departures.admits(origin, theirs.clock);
            let slot = (key, origin);
            let newer = self
                .entries
                .get(&slot)
                .is_none_or(|ours| theirs.clock > ours.value.clock);
            if !newer || forgotten {
                continue;
            }
            if !self.entries.contains_key(&slot)
                && self.per_origin.get(&origin).copied().unwrap_or(0) >= MAX_ENTRIES
            {
                continue;
            }
            self.departures.holding(origin, self.counts(origin), now);
            let (key, origin) = slot;
            self.put(
                origin,
                key.clone(),
                Held {
                    value: theirs,
                    since: now,
                },
            );
            news.push((origin, key, theirs));
        }
        news
    }

    /// Someone sent us an entry of ours: if it is not what we hold (a copy
    /// from before our restart, or one we never had), ours is said again,
    /// newer than it, so every router ends with ours.
    fn stale_news_of_ours(&mut self, now: Instant, key: Key, theirs: Value) {
        let ours = self.entries.get(&(key.clone(), self.me)).map(|h| h.value);
        self.clock = self.clock.max(theirs.clock);
        match ours {
            Some(ours) if ours == theirs => {}
            Some(ours) => self.set_own(now, key, ours.port, ours.ready, ours.deleted),
            None if !theirs.deleted => self.set_own(now, key, theirs.port, false, true),
            None => {}
        }
    }
}

impl Names {
    /// Holds `held` for `origin`'s `key`, counting a new entry.
    fn put(&mut self, origin: PeerName, key: Key, held: Held) {
        if held.value.deleted {
            let due = held.since + TOMBSTONE_TTL;
            self.tombstones_due = Some(self.tombstones_due.map_or(due, |d| d.min(due)));
        }
        if self.entries.insert((key, origin), held).is_none() {
            *self.per_origin.entry(origin).or_default() += 1;
        }
    }

    /// Counts every origin's entries and finds the oldest tombstone
    /// again, after many entries went at once.
    fn recount(&mut self) {
        self.per_origin.clear();
        self.tombstones_due = None;
        for ((_, origin), held) in &self.entries {
            *self.per_origin.entry(*origin).or_default() += 1;
            if held.value.deleted {
                let due = held.since + TOMBSTONE_TTL;
                self.tombstones_due = Some(self.tombstones_due.map_or(due, |d| d.min(due)));
            }
        }
    }
}

/// The smallest key with a name (to range over a name's entries).
fn min_key() -> Key {
    Key {
        name: Fqdn::root(),
        addr: Ipv4Addr::UNSPECIFIED,
        owner: String::new(),
    }
}

impl Channel for Names {
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
        // Ours and the reachable routers' first, should there be too many.
        let (live, rest): (Entries, Entries) = self
            .entries
            .iter()
            .map(|((k, o), h)| (*o, k.clone(), h.value))
            .partition(|(o, _, _)| self.counts(*o));
        let all: Entries = live.into_iter().chain(rest).take(MAX_ENTRIES).collect();
        Some(encode(&all))
    }

    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>) {
        self.reachable = reachable.clone();
        let origins: BTreeSet<PeerName> = self.per_origin.keys().copied().collect();
        self.departures
            .on_peers_changed(now, reachable, self.me, origins);
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.departures
            .next_timeout()
            .into_iter()
            .chain(self.tombstones_due)
            .min()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.entries.retain(|_, h| {
            !(h.value.deleted && now.saturating_duration_since(h.since) >= TOMBSTONE_TTL)
        });
        for origin in self.departures.due(now) {
            let mut highest = 0;
            self.entries.retain(|(_, o), h| {
                if *o == origin {
                    highest = highest.max(h.value.clock);
                }
                *o != origin
            });
            self.departures.forgot(origin, highest, now);
        }
        self.recount();
    }

    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }
}

/// The channel as the router shares it between the mesh, its own task and
/// the DNS server.
pub type NamesHandle = Shared<Names>;

#[cfg(test)]
mod tests;
