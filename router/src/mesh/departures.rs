//! Routers that left, for the channels that keep state per origin router
//! (host records, names): an origin unreachable for a grace period is
//! due to be forgotten, and once forgotten, a neighbour's older copy of
//! its state (at a clock no higher than what was forgotten) is refused
//! for a while, so that it does not come back. Pure: time is passed in.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::identity::PeerName;

pub struct Departures {
    /// How long an origin's state outlives its reachability.
    grace: Duration,
    /// How long a forgotten origin's old copies are refused.
    remember: Duration,
    unreachable_since: BTreeMap<PeerName, Instant>,
    /// Per origin forgotten, the highest clock forgotten and when.
    forgotten: BTreeMap<PeerName, (u64, Instant)>,
}

impl Departures {
    pub fn new(grace: Duration, remember: Duration) -> Departures {
        Departures {
            grace,
            remember,
            unreachable_since: BTreeMap::new(),
            forgotten: BTreeMap::new(),
        }
    }

    /// Whether `origin`'s state at `clock` may be taken: not an old copy
    /// of what was forgotten.
    pub fn admits(&self, origin: PeerName, clock: u64) -> bool {
        self.forgotten
            .get(&origin)
            .is_none_or(|(forgotten, _)| clock > *forgotten)
    }

    /// State of `origin` was taken; its grace runs from now if it is not
    /// reachable (and not running already).
    pub fn holding(&mut self, origin: PeerName, reachable: bool, now: Instant) {
        if !reachable {
            self.unreachable_since.entry(origin).or_insert(now);
        }
    }

    /// The reachable routers are now `reachable`; we hold state of
    /// `held` (ourselves, `me`, never departs).
    pub fn on_peers_changed(
        &mut self,
        now: Instant,
        reachable: &BTreeSet<PeerName>,
        me: PeerName,
        held: impl IntoIterator<Item = PeerName>,
    ) {
        self.unreachable_since.retain(|n, _| !reachable.contains(n));
        self.forgotten.retain(|n, _| !reachable.contains(n));
        for origin in held {
            if origin != me && !reachable.contains(&origin) {
                self.unreachable_since.entry(origin).or_insert(now);
            }
        }
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let unreachable = self.unreachable_since.values().map(|t| *t + self.grace);
        let forgotten = self.forgotten.values().map(|(_, t)| *t + self.remember);
        unreachable.chain(forgotten).min()
    }

    /// The origins whose grace ran out by `now`: the caller drops their
    /// state and says so with [`Departures::forgot`]. Old refusals expire.
    pub fn due(&mut self, now: Instant) -> Vec<PeerName> {
        let past = |since: Instant, span: Duration| now.saturating_duration_since(since) >= span;
        let remember = self.remember;
        self.forgotten.retain(|_, (_, at)| !past(*at, remember));
        let due: Vec<PeerName> = self
            .unreachable_since
            .iter()
            .filter(|(_, since)| past(**since, self.grace))
            .map(|(n, _)| *n)
            .collect();
        for origin in &due {
            self.unreachable_since.remove(origin);
        }
        due
    }

    /// `origin`'s state, up to `clock`, was dropped at `now`.
    pub fn forgot(&mut self, origin: PeerName, clock: u64, now: Instant) {
        self.forgotten.insert(origin, (clock, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u64) -> PeerName {
        PeerName::from_u64(x)
    }

    #[test]
    fn an_unreachable_origin_is_due_after_its_grace_and_refused_a_while() {
        let t0 = Instant::now();
        let (grace, remember) = (Duration::from_secs(60), Duration::from_secs(600));
        let mut d = Departures::new(grace, remember);
        d.on_peers_changed(t0, &BTreeSet::from([n(2)]), n(1), [n(1), n(2), n(3)]);
        assert_eq!(d.next_timeout(), Some(t0 + grace));
        assert!(d.due(t0 + grace - Duration::from_secs(1)).is_empty());
        assert_eq!(d.due(t0 + grace), vec![n(3)]);
        d.forgot(n(3), 7, t0 + grace);
        assert!(!d.admits(n(3), 7), "an old copy");
        assert!(d.admits(n(3), 8), "news");
        assert_eq!(d.next_timeout(), Some(t0 + grace + remember));
        assert!(d.due(t0 + grace + remember).is_empty());
        assert!(d.admits(n(3), 7), "remembered only a while");
        // Reachable again: the refusal and the grace end at once.
        d.holding(n(4), false, t0);
        d.forgot(n(5), 1, t0);
        d.on_peers_changed(t0, &BTreeSet::from([n(4), n(5)]), n(1), [n(4)]);
        assert!(d.admits(n(5), 1));
        assert_eq!(d.next_timeout(), None);
    }
}
