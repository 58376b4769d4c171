//! Making a block active: the owner may hand out its addresses once
//! enough peers acknowledged it, so a reclaimer knows what may be in use.

use super::*;

impl Ipam {
    /// Whether one of our blocks in `subnet` is being activated.
    pub(super) fn activating_in(&self, subnet: Ipv4Net) -> bool {
        let blocks = self.layout.blocks_in(subnet);
        self.activating
            .range(blocks.start..blocks.end)
            .next()
            .is_some()
    }

    /// Starts activating one of our inactive blocks in `subnet`, unless
    /// one is on its way; false when we have none.
    pub(super) fn activate_one(&mut self, now: Instant, subnet: Ipv4Net) -> bool {
        if self.activating_in(subnet) {
            return true;
        }
        let blocks = self.layout.blocks_in(subnet);
        let me = self.config.me;
        let Some(ring) = &self.ring else {
            return false;
        };
        let candidate = ring
            .blocks_of(me)
            .filter(|b| blocks.contains(b))
            .find(|b| !ring.block(*b).active && self.free_in(*b, subnet) > 0);
        match candidate {
            Some(b) => {
                self.start_activation(now, b);
                true
            }
            None => false,
        }
    }

    pub(super) fn start_activation(&mut self, now: Instant, b: u32) {
        let me = self.config.me;
        let Some(ring) = &mut self.ring else {
            return;
        };
        let state = ring.bump(b, me, true);
        self.changed_blocks.insert(b);
        self.dirty = true;
        self.activating.insert(
            b,
            Activation {
                version: state.version,
                acks: [me].into(),
                resend: now + RESEND,
            },
        );
        self.broadcast(Message::Activate { block: b, state });
        self.check_activation(b);
    }

    pub(super) fn majority(&self, count: usize) -> bool {
        let members = self.ring.as_ref().map_or(1, |r| r.members().len());
        count * 2 > members
    }

    pub(super) fn check_activation(&mut self, b: u32) {
        let Some(act) = self.activating.get(&b) else {
            return;
        };
        if self.majority(act.acks.len()) {
            self.activating.remove(&b);
            self.confirmed.insert(b);
            self.dirty = true;
            tracing::debug!(block = b, "block activated");
            self.again = true;
        }
    }

    pub(super) fn on_activate(
        &mut self,
        from: Peer,
        b: u32,
        state: Block,
    ) -> Result<(), IpamError> {
        let ring = self.ring.as_mut().expect("cluster matched");
        if b >= ring.len() || state.owner != from || !state.active {
            return Err(IpamError::Malformed(format!("activation of block {b}")));
        }
        let cur = ring.block(b);
        let ok = if state == cur {
            true
        } else if state.supersedes(&cur) {
            // Never let an activation displace another owner's active
            // block: that owner may hand out its addresses.
            !(cur.active && cur.owner != from)
        } else {
            false
        };
        if ok {
            if state != cur {
                ring.set(b, state);
                self.changed_blocks.insert(b);
                self.dirty = true;
                if self.confirmed.remove(&b) || self.activating.remove(&b).is_some() {
                    tracing::warn!(block = b, owner = %from, "lost a block to an activation");
                }
            }
            self.unicast(
                from,
                Message::ActivateAck {
                    block: b,
                    version: state.version,
                },
            );
        } else {
            self.unicast(
                from,
                Message::ActivateNack {
                    block: b,
                    state: cur,
                },
            );
        }
        Ok(())
    }
}
