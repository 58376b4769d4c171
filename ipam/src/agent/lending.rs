//! Space moving between peers: asking a donor for blocks, granting or
//! refusing, and claims of one address in a block someone else owns.

use super::*;

impl Ipam {
    /// Asks the member with the most inactive space in `subnet` for some.
    pub(super) fn ask_for_space(&mut self, now: Instant, subnet: Ipv4Net) {
        let Some(ring) = &self.ring else {
            return;
        };
        let blocks = self.layout.blocks_in(subnet);
        let mut spare: BTreeMap<Peer, u32> = BTreeMap::new();
        let mut anywhere = 0;
        for b in blocks {
            let s = ring.block(b);
            if !s.active && s.owner != self.config.me {
                anywhere += 1;
                if self.reachable.contains(&s.owner) {
                    *spare.entry(s.owner).or_default() += 1;
                }
            }
        }
        let asked = !self.refused_by.is_empty();
        let donor = spare
            .into_iter()
            .filter(|(p, _)| !self.refused_by.contains(p))
            .max_by_key(|(p, n)| (*n, std::cmp::Reverse(*p)))
            .map(|(p, _)| p);
        match donor {
            Some(donor) => {
                tracing::debug!(%donor, %subnet, "asking for space");
                self.space = Some(SpaceAsk {
                    donor,
                    subnet,
                    resend: now + RESEND * 2,
                    unanswered: 0,
                });
                self.unicast(donor, Message::SpaceRequest { subnet });
            }
            None if anywhere == 0 => {
                self.fail_waiting(
                    subnet,
                    "every address of it is in use or held ready by a peer",
                );
            }
            // Everyone we know of said no, but what we know may be behind
            // (space moves between peers all the time): ask again a little
            // later, until the request's own deadline.
            None if asked => {
                self.space_retry = Some(now + RESEND * 2);
            }
            // The space is with peers we cannot reach (yet): wait for them
            // until the request times out.
            None => {}
        }
    }

    pub(super) fn on_space_request(&mut self, from: Peer, subnet: Ipv4Net) {
        let me = self.config.me;
        let Some(ring) = &self.ring else {
            return;
        };
        let blocks = self.layout.blocks_in(subnet);
        let mine: Vec<u32> = ring
            .blocks_of(me)
            .filter(|b| blocks.contains(b) && !ring.block(*b).active)
            .filter(|b| !self.activating.contains_key(b))
            .filter(|b| self.addresses(*b, subnet).all(|a| !self.taken(a)))
            .collect();
        if mine.is_empty() {
            self.unicast(from, Message::SpaceDenied { subnet });
            return;
        }
        // Half of what we have, from the top: our own allocations come
        // from the bottom, so what we keep stays in one piece.
        let give = mine.len().div_ceil(2).min(MAX_GRANT);
        let given: Vec<u32> = mine[mine.len() - give..].to_vec();
        let ring = self.ring.as_mut().expect("checked above");
        for b in &given {
            ring.bump(*b, from, false);
        }
        self.changed_blocks.extend(given.iter().copied());
        self.dirty = true;
        let runs = ring.runs_of(given.iter().copied());
        tracing::debug!(to = %from, blocks = given.len(), "gave space");
        self.unicast(from, Message::SpaceGrant { blocks: runs });
    }

    pub(super) fn on_claim(&mut self, now: Instant, from: Peer, a: u32) {
        let addr = Ipv4Addr::from(a);
        let me = self.config.me;
        let deny = |reason: String| Message::ClaimDenied { addr: a, reason };
        let Some(b) = self.layout.block_of(addr) else {
            self.unicast(from, deny(format!("{addr} is outside the range")));
            return;
        };
        let state = self.ring.as_ref().expect("cluster matched").block(b);
        if state.owner != me {
            self.unicast(
                from,
                deny(format!("{addr} belongs to peer {}", state.owner)),
            );
            return;
        }
        if let Some(holder) = self.holder_of(a) {
            self.unicast(from, deny(holder));
            return;
        }
        let empty = self.addresses(b, self.layout.range).all(|x| !self.taken(x));
        if !state.active && empty && !self.activating.contains_key(&b) {
            let ring = self.ring.as_mut().expect("cluster matched");
            ring.bump(b, from, false);
            self.changed_blocks.insert(b);
            self.dirty = true;
            let runs = ring.runs_of([b]);
            self.unicast(
                from,
                Message::ClaimGranted {
                    addr: a,
                    blocks: runs,
                },
            );
        } else {
            self.lent.insert(a, now);
            self.dirty = true;
            self.unicast(from, Message::ClaimLent { addr: a });
        }
    }
}
