//! A gossip channel that holds one record per router: each router writes
//! only its own, with a version that grows; merging keeps the newest per
//! router, so every router converges on the same set whatever order
//! gossip arrives in. A router unreachable for [`FORGET_AFTER`] is
//! forgotten, so routers that left for good do not pile up. What a record
//! holds is the channel's own: the host records (`hosts`), the links
//! (`links`). Pure: no I/O; time is passed in.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use serde::{Serialize, de::DeserializeOwned};

use super::{Channel, Outgoing, departures::Departures};
use crate::identity::PeerName;

/// Most records one gossip message may carry: a peer cannot make us hold
/// more than this. Our full state never carries more, so a mesh beyond
/// it still converges on the reachable routers' records.
pub const MAX_RECORDS: usize = 4096;

/// How long a router's record outlives its reachability. Its record only
/// counts while it is reachable; keeping it a while spares re-learning it
/// after a short partition, and the router resends it when it returns.
pub const FORGET_AFTER: Duration = Duration::from_secs(300);

/// One router's record on such a channel.
pub trait RouterRecord: Clone + Default + PartialEq + Serialize + DeserializeOwned {
    /// What errors call these records ("host records").
    const WHAT: &'static str;
    /// Grows with every change; a restart starts above the last run (the
    /// router seeds it from the wall clock).
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
    /// Whether a record heard from a peer stays within the channel's
    /// bounds.
    fn within_bounds(&self) -> bool;
}

/// The wire form: records by router (postcard).
pub type Records<R> = Vec<(PeerName, R)>;

pub fn encode<R: RouterRecord>(records: &Records<R>) -> Vec<u8> {
    postcard::to_allocvec(records).expect("records serialize")
}

pub fn decode<R: RouterRecord>(bytes: &[u8]) -> Result<Records<R>, String> {
    let records: Records<R> =
        postcard::from_bytes(bytes).map_err(|e| format!("malformed {}: {e}", R::WHAT))?;
    if records.len() > MAX_RECORDS || records.iter().any(|(_, r)| !r.within_bounds()) {
        return Err(format!("{} over the limit", R::WHAT));
    }
    Ok(records)
}

/// Every router's record, as this router knows them.
pub struct PerRouter<R> {
    me: PeerName,
    records: BTreeMap<PeerName, R>,
    reachable: BTreeSet<PeerName>,
    /// Routers unreachable, and those forgotten: a neighbour that has not
    /// forgotten yet must not bring them back.
    departures: Departures,
    outgoing: VecDeque<Outgoing>,
    /// Grows whenever what counts may have changed (a record, who is
    /// reachable), so users recompute only then.
    generation: u64,
}

impl<R: RouterRecord> PerRouter<R> {
    /// Starts with an empty record of ours at `version`.
    pub fn new(me: PeerName, version: u64) -> PerRouter<R> {
        let mut mine = R::default();
        mine.set_version(version);
        PerRouter {
            me,
            records: BTreeMap::from([(me, mine)]),
            reachable: BTreeSet::new(),
            departures: Departures::new(FORGET_AFTER, FORGET_AFTER),
            outgoing: VecDeque::new(),
            generation: 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn me(&self) -> PeerName {
        self.me
    }

    pub fn local(&self) -> &R {
        &self.records[&self.me]
    }

    pub fn get(&self, peer: PeerName) -> Option<&R> {
        self.records.get(&peer)
    }

    /// The records of reachable routers other than us.
    pub fn reachable_others(&self) -> impl Iterator<Item = (PeerName, &R)> {
        self.records
            .iter()
            .filter(|(name, _)| **name != self.me && self.reachable.contains(name))
            .map(|(name, r)| (*name, r))
    }

    /// Replaces our record's contents (its version is ours to keep);
    /// gossips it if it changed, and says whether it did.
    pub fn publish(&mut self, mut record: R) -> bool {
        let mine = self.records.get_mut(&self.me).expect("our own record");
        record.set_version(mine.version());
        if record == *mine {
            return false;
        }
        record.set_version(mine.version().saturating_add(1));
        *mine = record.clone();
        self.generation += 1;
        self.outgoing
            .push_back(Outgoing::Gossip(encode(&vec![(self.me, record)])));
        true
    }

    /// Keeps the newer of ours and theirs per router; returns what was
    /// news. A record claiming to be ours and newer means we restarted
    /// with a clock behind the last run: ours jumps past it.
    fn merge(&mut self, now: Instant, records: Records<R>) -> Records<R> {
        let mut news = Vec::new();
        for (name, theirs) in records {
            if name == self.me {
                let mine = self.records.get_mut(&self.me).expect("our own record");
                if theirs.version() >= mine.version() && theirs != *mine {
                    mine.set_version(theirs.version().saturating_add(1));
                    let record = mine.clone();
                    self.outgoing
                        .push_back(Outgoing::Gossip(encode(&vec![(self.me, record)])));
                }
                continue;
            }
            let newer = self
                .records
                .get(&name)
                .is_none_or(|ours| theirs.version() > ours.version());
            if newer && self.departures.admits(name, theirs.version()) {
                self.departures
                    .holding(name, self.reachable.contains(&name), now);
                self.generation += 1;
                self.records.insert(name, theirs.clone());
                news.push((name, theirs));
            }
        }
        news
    }
}

impl<R: RouterRecord> Channel for PerRouter<R> {
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
        let (live, rest): (Records<R>, Records<R>) = self
            .records
            .iter()
            .map(|(n, r)| (*n, r.clone()))
            .partition(|(n, _)| *n == self.me || self.reachable.contains(n));
        let all: Records<R> = live.into_iter().chain(rest).take(MAX_RECORDS).collect();
        Some(encode(&all))
    }

    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>) {
        if self.reachable != *reachable {
            self.generation += 1;
            self.reachable = reachable.clone();
        }
        self.departures
            .on_peers_changed(now, reachable, self.me, self.records.keys().copied());
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.departures.next_timeout()
    }

    fn on_timeout(&mut self, now: Instant) {
        for name in self.departures.due(now) {
            if let Some(record) = self.records.remove(&name) {
                self.departures.forgot(name, record.version(), now);
                self.generation += 1;
            }
        }
    }

    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }
}
