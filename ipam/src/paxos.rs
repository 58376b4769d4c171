//! Agreeing on the first division of the range: single-decree Paxos among
//! the initial peers, over the mesh.
//!
//! The value agreed is a cluster id and the peers that divide the range.
//! Paxos guarantees one value for the whole mesh however proposals race,
//! so a mesh can never end up with two rings of its own making; the
//! quorum (`consensus=N` gives N/2+1) is what keeps a lone peer that
//! started early from dividing the range by itself.
//!
//! Each elector is proposer and acceptor. An acceptor's promise must be
//! on disk before it is sent: the agent marks itself dirty and the router
//! persists before it sends anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::Peer;

/// Ordered by round, then proposer, so two proposers never share one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub proposer: Peer,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Value {
    pub cluster: u64,
    pub seeds: Vec<Peer>,
}

/// What an acceptor has promised and accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acceptor {
    pub promised: Option<Ballot>,
    pub accepted: Option<(Ballot, Value)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosMessage {
    Prepare(Ballot),
    Promise {
        ballot: Ballot,
        accepted: Option<(Ballot, Value)>,
    },
    Accept {
        ballot: Ballot,
        value: Value,
    },
    Accepted(Ballot),
    /// The acceptor has promised a higher ballot.
    Nack {
        ballot: Ballot,
        promised: Ballot,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    Everyone,
    Peer(Peer),
}

/// A proposal that has not succeeded in this long is tried again with a
/// higher round (plus jitter, so that rivals stop colliding).
const RETRY_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
enum Phase {
    Preparing {
        promises: BTreeMap<Peer, Option<(Ballot, Value)>>,
    },
    Accepting {
        value: Value,
        accepted: BTreeSet<Peer>,
    },
}

#[derive(Debug)]
struct Proposal {
    ballot: Ballot,
    phase: Phase,
    deadline: Instant,
}

#[derive(Debug)]
pub struct Paxos {
    me: Peer,
    quorum: usize,
    elector: bool,
    pub acceptor: Acceptor,
    proposal: Option<Proposal>,
    /// Wanted a ring, and still no value is chosen.
    wanted: bool,
    highest_round: u64,
    /// The cluster id of our own value, should it be chosen.
    cluster_seed: u64,
    chosen: Option<Value>,
    out: Vec<(Destination, PaxosMessage)>,
    /// The acceptor state changed and must be persisted.
    pub dirty: bool,
}

impl Paxos {
    /// `quorum`: how many electors must agree. Observers (`elector`
    /// false) neither propose nor accept.
    pub fn new(me: Peer, quorum: usize, elector: bool, acceptor: Acceptor) -> Paxos {
        let highest_round = acceptor.promised.map_or(0, |b| b.round);
        Paxos {
            me,
            quorum: quorum.max(1),
            elector,
            acceptor,
            proposal: None,
            wanted: false,
            highest_round,
            cluster_seed: 0,
            chosen: None,
            out: Vec::new(),
            dirty: false,
        }
    }

    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Whether a proposal is under way (for status).
    pub fn proposing(&self) -> bool {
        self.proposal.is_some()
    }

    /// A ring is needed: propose, unless a proposal is under way.
    /// `cluster` is a fresh random id for the value, should ours win.
    pub fn want(&mut self, now: Instant, cluster: u64) {
        self.wanted = true;
        if self.cluster_seed == 0 {
            self.cluster_seed = cluster;
        }
        if self.elector && self.proposal.is_none() && self.chosen.is_none() {
            self.propose(now);
        }
    }

    fn propose(&mut self, now: Instant) {
        self.highest_round += 1;
        let ballot = Ballot {
            round: self.highest_round,
            proposer: self.me,
        };
        self.proposal = Some(Proposal {
            ballot,
            phase: Phase::Preparing {
                promises: BTreeMap::new(),
            },
            deadline: now + RETRY_AFTER,
        });
        self.out
            .push((Destination::Everyone, PaxosMessage::Prepare(ballot)));
        // We are one of the acceptors too.
        self.on_message(now, self.me, PaxosMessage::Prepare(ballot));
    }

    /// When a retry is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.proposal.as_ref().map(|p| p.deadline)
    }

    /// Retries a proposal that timed out; `jitter_ms` spreads rivals.
    pub fn tick(&mut self, now: Instant, jitter_ms: u64) {
        let due = self.proposal.as_ref().is_some_and(|p| now >= p.deadline);
        if due && self.chosen.is_none() {
            self.proposal = None;
            if self.wanted && self.elector {
                self.propose(now);
                if let Some(p) = &mut self.proposal {
                    p.deadline += Duration::from_millis(jitter_ms);
                }
            }
        }
    }

    /// The value, once this proposer saw a quorum accept it.
    pub fn take_chosen(&mut self) -> Option<Value> {
        self.chosen.take()
    }

    /// A ring arrived by gossip: Paxos is over for us.
    pub fn finish(&mut self) {
        self.proposal = None;
        self.wanted = false;
    }

    pub fn poll(&mut self) -> Option<(Destination, PaxosMessage)> {
        (!self.out.is_empty()).then(|| self.out.remove(0))
    }

    pub fn on_message(&mut self, now: Instant, from: Peer, msg: PaxosMessage) {
        if !self.elector {
            return;
        }
        match msg {
            PaxosMessage::Prepare(ballot) => {
                self.highest_round = self.highest_round.max(ballot.round);
                let reply = match self.acceptor.promised {
                    Some(p) if p > ballot => PaxosMessage::Nack {
                        ballot,
                        promised: p,
                    },
                    _ => {
                        if self.acceptor.promised != Some(ballot) {
                            self.acceptor.promised = Some(ballot);
                            self.dirty = true;
                        }
                        PaxosMessage::Promise {
                            ballot,
                            accepted: self.acceptor.accepted.clone(),
                        }
                    }
                };
                self.reply(now, from, reply);
            }
            PaxosMessage::Accept { ballot, value } => {
                self.highest_round = self.highest_round.max(ballot.round);
                let reply = match self.acceptor.promised {
                    Some(p) if p > ballot => PaxosMessage::Nack {
                        ballot,
                        promised: p,
                    },
                    _ => {
                        self.acceptor.promised = Some(ballot);
                        self.acceptor.accepted = Some((ballot, value));
                        self.dirty = true;
                        PaxosMessage::Accepted(ballot)
                    }
                };
                self.reply(now, from, reply);
            }
            PaxosMessage::Promise { ballot, accepted } => {
                self.on_promise(now, from, ballot, accepted)
            }
            PaxosMessage::Accepted(ballot) => {
                let quorum = self.quorum;
                let Some(p) = self.proposal.as_mut().filter(|p| p.ballot == ballot) else {
                    return;
                };
                if let Phase::Accepting { value, accepted } = &mut p.phase {
                    accepted.insert(from);
                    if accepted.len() >= quorum {
                        self.chosen = Some(value.clone());
                        self.proposal = None;
                        self.wanted = false;
                    }
                }
            }
            PaxosMessage::Nack { ballot, promised } => {
                self.highest_round = self.highest_round.max(promised.round);
                if self.proposal.as_ref().is_some_and(|p| p.ballot == ballot) {
                    // Someone is ahead: try again after the usual wait,
                    // which lets the higher proposal finish first.
                    if let Some(p) = &mut self.proposal {
                        p.deadline = p.deadline.min(now + RETRY_AFTER);
                    }
                }
            }
        }
    }

    /// Answers `to`, locally when that is us.
    fn reply(&mut self, now: Instant, to: Peer, msg: PaxosMessage) {
        if to == self.me {
            self.on_message(now, to, msg);
        } else {
            self.out.push((Destination::Peer(to), msg));
        }
    }

    fn on_promise(
        &mut self,
        now: Instant,
        from: Peer,
        ballot: Ballot,
        accepted: Option<(Ballot, Value)>,
    ) {
        let quorum = self.quorum;
        let Some(p) = self.proposal.as_mut().filter(|p| p.ballot == ballot) else {
            return;
        };
        let Phase::Preparing { promises } = &mut p.phase else {
            return;
        };
        promises.insert(from, accepted);
        if promises.len() < quorum {
            return;
        }
        // A value some acceptor already took must be kept; otherwise ours:
        // the electors that answered divide the range.
        let value = promises
            .values()
            .flatten()
            .max_by_key(|(b, _)| *b)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| {
                let mut seeds: Vec<Peer> = promises.keys().copied().collect();
                seeds.sort();
                Value {
                    cluster: self.cluster_seed,
                    seeds,
                }
            });
        p.phase = Phase::Accepting {
            value: value.clone(),
            accepted: BTreeSet::new(),
        };
        p.deadline = now + RETRY_AFTER;
        let msg = PaxosMessage::Accept { ballot, value };
        self.out.push((Destination::Everyone, msg.clone()));
        self.on_message(now, self.me, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers every message among `nodes` (a message to a node not in
    /// `reach` of the sender is lost) until nothing moves.
    fn run(nodes: &mut [Paxos], now: Instant, cut: &dyn Fn(usize, usize) -> bool) {
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some((dest, msg)) = nodes[i].poll() {
                    moved = true;
                    let from = nodes[i].me;
                    let targets: Vec<usize> = match dest {
                        Destination::Everyone => (0..nodes.len()).filter(|&j| j != i).collect(),
                        Destination::Peer(p) => {
                            (0..nodes.len()).filter(|&j| nodes[j].me == p).collect()
                        }
                    };
                    for j in targets {
                        if !cut(i, j) {
                            nodes[j].on_message(now, from, msg.clone());
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn nodes(n: usize, quorum: usize) -> Vec<Paxos> {
        (0..n)
            .map(|i| Paxos::new(Peer(i as u64 + 1), quorum, true, Acceptor::default()))
            .collect()
    }

    #[test]
    fn rival_proposers_agree_on_one_value() {
        let now = Instant::now();
        let mut ns = nodes(5, 3);
        for (i, n) in ns.iter_mut().enumerate() {
            n.want(now, 100 + i as u64);
        }
        run(&mut ns, now, &|_, _| false);
        let mut later = now;
        let mut chosen: Vec<Value> = Vec::new();
        for round in 0..20 {
            chosen.extend(ns.iter_mut().filter_map(Paxos::take_chosen));
            if !chosen.is_empty() && round > 3 {
                break;
            }
            later += RETRY_AFTER * 2;
            for (i, n) in ns.iter_mut().enumerate() {
                n.tick(later, (i as u64) * 700);
            }
            run(&mut ns, later, &|_, _| false);
        }
        assert!(!chosen.is_empty(), "some proposer succeeded");
        assert!(chosen.windows(2).all(|w| w[0] == w[1]), "{chosen:?}");
        assert!(chosen[0].seeds.len() >= 3);
    }

    #[test]
    fn a_minority_cannot_choose_and_a_majority_keeps_an_accepted_value() {
        let now = Instant::now();
        let mut ns = nodes(5, 3);
        // Nodes 0 and 1 are cut off from the rest.
        let cut = |a: usize, b: usize| (a < 2) != (b < 2);
        ns[0].want(now, 100);
        run(&mut ns, now, &cut);
        assert_eq!(ns[0].take_chosen(), None, "2 of 5 is no quorum");
        ns[2].want(now, 102);
        run(&mut ns, now, &cut);
        let v = ns[2].take_chosen().expect("3 of 5 is a quorum");
        assert_eq!(v.seeds, vec![Peer(3), Peer(4), Peer(5)]);
        // Healed, node 0 proposes again: it must end up with the same value.
        let later = now + RETRY_AFTER * 3;
        ns[0].tick(later, 0);
        run(&mut ns, later, &|_, _| false);
        assert_eq!(ns[0].take_chosen(), Some(v));
    }

    #[test]
    fn observers_stay_out_and_promises_mark_the_state_dirty() {
        let now = Instant::now();
        let mut obs = Paxos::new(Peer(9), 1, false, Acceptor::default());
        obs.want(now, 9);
        assert!(obs.poll().is_none());
        obs.on_message(
            now,
            Peer(1),
            PaxosMessage::Prepare(Ballot {
                round: 1,
                proposer: Peer(1),
            }),
        );
        assert!(obs.poll().is_none() && !obs.dirty);

        let mut alone = Paxos::new(Peer(1), 1, true, Acceptor::default());
        alone.want(now, 5);
        assert!(alone.dirty);
        let v = alone
            .take_chosen()
            .expect("a quorum of one chooses at once");
        assert_eq!(
            v,
            Value {
                cluster: 5,
                seeds: vec![Peer(1)]
            }
        );
    }
}
