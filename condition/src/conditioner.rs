//! One direction of one container's conditioning: packets go in with
//! `push(now, ..)`, each is given the time it leaves (rate, then loss,
//! then latency, then jitter, then perhaps a copy) and comes out of
//! `poll(now)` at that time. Every packet carries its own release time,
//! so a delayed packet never blocks the ones behind it beyond its own
//! delay, and new conditions apply to new packets only: nothing already
//! queued is lost when they change.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::loss::LossModel;
use crate::packet::{Direction, FlowKey};
use crate::qos::Qos;
use crate::rules::Conditions;
use crate::shaper::RateStage;

/// Bytes held at once per direction, whatever the conditions: beyond it
/// packets are dropped (and counted), so no setting can exhaust memory.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
pub const MAX_QUEUED_PACKETS: usize = 200_000;

/// What happened to the packets of one rule (or the default link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    /// Lost on purpose (the loss setting).
    pub lost: u64,
    /// Dropped by the rate: a full shaper queue or a policer.
    pub rate_dropped: u64,
    /// Dropped because the conditioner held all it may.
    pub overflow: u64,
    pub duplicated: u64,
}

/// What `push` did with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<P> {
    /// Nothing to do to it: send it now.
    Pass(P),
    /// Held; `poll` gives it back when due.
    Queued,
    /// Gone (lost or over a limit), counted.
    Dropped,
}

#[derive(Debug, Default)]
struct Class {
    rate: RateStage,
    loss: LossModel,
    /// The latest release time given in this class: without reorder, no
    /// packet leaves before it.
    last_release: Option<Instant>,
    counters: Counters,
}

struct Held<P> {
    at: Instant,
    seq: u64,
    len: usize,
    packet: P,
}

impl<P> PartialEq for Held<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<P> Eq for Held<P> {}
impl<P> PartialOrd for Held<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Held<P> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Conditioner<P> {
    dir: Direction,
    conditions: Conditions,
    /// `classes[0]` is the default link, `classes[i + 1]` is `flows[i]`.
    classes: Vec<Class>,
    held: BinaryHeap<Reverse<Held<P>>>,
    held_bytes: usize,
    seq: u64,
    rng: SmallRng,
}

impl<P: Clone> Conditioner<P> {
    /// `seed` makes the random choices (loss, jitter, copies) repeatable.
    pub fn new(dir: Direction, conditions: Conditions, seed: u64) -> Conditioner<P> {
        let classes = (0..=conditions.flows.len())
            .map(|_| Class::default())
            .collect();
        Conditioner {
            dir,
            conditions,
            classes,
            held: BinaryHeap::new(),
            held_bytes: 0,
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn conditions(&self) -> &Conditions {
        &self.conditions
    }

    /// New conditions, for the packets pushed from now on. Held packets
    /// keep their times; a rule keeps its queue state and counters when
    /// its label stays.
    pub fn reconfigure(&mut self, conditions: Conditions) {
        let mut old: Vec<Option<Class>> = std::mem::take(&mut self.classes)
            .into_iter()
            .map(Some)
            .collect();
        let mut classes = vec![old[0].take().unwrap_or_default()];
        for f in &conditions.flows {
            let kept = self
                .conditions
                .flows
                .iter()
                .position(|g| g.label == f.label)
                .and_then(|i| old[i + 1].take());
            classes.push(kept.unwrap_or_default());
        }
        self.classes = classes;
        self.conditions = conditions;
    }

    fn qos(&self, class: usize) -> &Qos {
        let link = match class {
            0 => &self.conditions.default_link,
            i => &self.conditions.flows[i - 1].link,
        };
        match self.dir {
            Direction::Ingress => &link.ingress,
            Direction::Egress => &link.egress,
        }
    }

    /// Whether a super-frame (a device's offloaded burst of `segments`
    /// packets, `len` IP bytes in all) in flow `key` may go whole: its
    /// class has no conditions and nothing of it is held back. Then it is
    /// counted as its packets and the caller sends it as it is, one write
    /// instead of dozens; otherwise the caller cuts it and pushes each
    /// packet, which is what loss and rate need.
    pub fn pass_whole(
        &mut self,
        now: Instant,
        segments: u64,
        len: usize,
        key: Option<&FlowKey>,
    ) -> bool {
        let class = self.conditions.classify(key).map_or(0, |i| i + 1);
        let clean = self.qos(class).is_clean();
        let c = &mut self.classes[class];
        if !clean || c.last_release.is_some_and(|t| t > now) {
            return false;
        }
        c.counters.packets += segments;
        c.counters.bytes += len as u64;
        true
    }

    /// Takes a packet of `len` bytes (its IP length) in flow `key`.
    pub fn push(
        &mut self,
        now: Instant,
        packet: P,
        len: usize,
        key: Option<&FlowKey>,
    ) -> Pushed<P> {
        let class = self.conditions.classify(key).map_or(0, |i| i + 1);
        let q = self.qos(class).clone();
        let c = &mut self.classes[class];
        c.counters.packets += 1;
        c.counters.bytes += len as u64;
        if q.is_clean() && c.last_release.is_none_or(|t| t <= now) {
            return Pushed::Pass(packet);
        }
        let Some(sent) = c.rate.admit(now, len, &q) else {
            c.counters.rate_dropped += 1;
            return Pushed::Dropped;
        };
        if c.loss.lose(&q, &mut self.rng) {
            c.counters.lost += 1;
            return Pushed::Dropped;
        }
        let mut delay = ms(q.latency);
        if q.jitter > 0.0 && self.rng.random::<f64>() < q.jitter_strength {
            delay += ms(self.rng.random::<f64>() * q.jitter);
        }
        let mut at = sent + delay;
        if !q.reorder {
            at = at.max(c.last_release.unwrap_or(at));
        }
        c.last_release = Some(c.last_release.map_or(at, |t| t.max(at)));
        let copy = q.duplicate > 0.0 && self.rng.random::<f64>() < q.duplicate;
        if copy {
            if !self.hold(at, len, packet.clone()) {
                self.classes[class].counters.overflow += 1;
                return Pushed::Dropped;
            }
            self.classes[class].counters.duplicated += 1;
        }
        if !self.hold(at, len, packet) {
            self.classes[class].counters.overflow += 1;
            return Pushed::Dropped;
        }
        Pushed::Queued
    }

    fn hold(&mut self, at: Instant, len: usize, packet: P) -> bool {
        if self.held_bytes + len > MAX_QUEUED_BYTES || self.held.len() >= MAX_QUEUED_PACKETS {
            return false;
        }
        self.held_bytes += len;
        self.seq += 1;
        self.held.push(Reverse(Held {
            at,
            seq: self.seq,
            len,
            packet,
        }));
        true
    }

    /// The next packet due by `now`, in release order.
    pub fn poll(&mut self, now: Instant) -> Option<P> {
        if self.held.peek()?.0.at > now {
            return None;
        }
        let Reverse(h) = self.held.pop()?;
        self.held_bytes -= h.len;
        Some(h.packet)
    }

    /// When `poll` next has something.
    pub fn next_release(&self) -> Option<Instant> {
        self.held.peek().map(|h| h.0.at)
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Counters per rule: `"default"` first, then each flow's label.
    pub fn counters(&self) -> Vec<(&str, Counters)> {
        std::iter::once("default")
            .chain(self.conditions.flows.iter().map(|f| f.label.as_str()))
            .zip(self.classes.iter().map(|c| c.counters))
            .collect()
    }
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

#[cfg(test)]
mod tests;
