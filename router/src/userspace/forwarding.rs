//! Which router a frame goes to, decided like a learning switch whose ports
//! are routers: a frame from a remote router teaches us where its source
//! MAC lives; a frame for a known MAC goes to that MAC's router; broadcast,
//! multicast and unknown unicast flood along the mesh's broadcast tree.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use crate::identity::PeerName;

/// How long a learnt MAC stays without being seen again.
pub const MAC_TTL: Duration = Duration::from_secs(300);
/// Most MACs remembered, so a flood of forged sources cannot exhaust memory.
pub const MAX_MACS: usize = 100_000;

pub type Mac = [u8; 6];

pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// Where each MAC lives.
#[derive(Default)]
pub struct MacTable {
    entries: HashMap<Mac, (PeerName, Instant)>,
}

impl MacTable {
    /// Records that `mac` lives at `owner`; returns the previous owner if
    /// it moved.
    pub fn learn(&mut self, mac: Mac, owner: PeerName, now: Instant) -> Option<PeerName> {
        if is_group(&mac) {
            return None;
        }
        if self.entries.len() >= MAX_MACS && !self.entries.contains_key(&mac) {
            self.expire(now);
            if self.entries.len() >= MAX_MACS {
                return None;
            }
        }
        match self.entries.insert(mac, (owner, now)) {
            Some((old, _)) if old != owner => Some(old),
            _ => None,
        }
    }

    pub fn lookup(&self, mac: &Mac, now: Instant) -> Option<PeerName> {
        self.entries
            .get(mac)
            .filter(|(_, seen)| now.duration_since(*seen) < MAC_TTL)
            .map(|(owner, _)| *owner)
    }

    pub fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|_, (_, seen)| now.duration_since(*seen) < MAC_TTL);
    }

    /// Every MAC still fresh and where it lives.
    pub fn entries(&self, now: Instant) -> Vec<(Mac, PeerName)> {
        self.entries
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) < MAC_TTL)
            .map(|(mac, (owner, _))| (*mac, *owner))
            .collect()
    }

    /// Counts `mac` as seen now where it lives, if it is known (frames a
    /// kernel path carries never reach the userspace path that learns).
    pub fn touch(&mut self, mac: Mac, now: Instant) {
        if let Some((_, seen)) = self.entries.get_mut(&mac) {
            *seen = (*seen).max(now);
        }
    }

    /// Forgets every MAC of a router that left the mesh.
    pub fn forget_router(&mut self, router: PeerName) {
        self.entries.retain(|_, (owner, _)| *owner != router);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The router's one MAC table, shared by the userspace path and the fast
/// datapath: both learn the same MACs (ours from the bridge, the others'
/// from the routers their frames came from), so a frame either path
/// learnt is known to the other.
#[derive(Clone, Default)]
pub struct SharedMacs(Arc<Mutex<MacTable>>);

impl SharedMacs {
    pub fn lock(&self) -> MutexGuard<'_, MacTable> {
        // The table stays consistent between calls: a panic elsewhere
        // while holding it leaves nothing half-done.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What to do with a frame from our own bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// To this router.
    Unicast(PeerName),
    /// To every router, along our broadcast tree.
    Flood,
    /// Nothing: the destination is local (the bridge got it there already).
    Drop,
}

/// Decides for a frame read from our TAP, learning its source as local.
pub fn from_bridge(
    table: &mut MacTable,
    local: PeerName,
    src: Mac,
    dst: Mac,
    now: Instant,
) -> Outbound {
    table.learn(src, local, now);
    if is_group(&dst) {
        return Outbound::Flood;
    }
    match table.lookup(&dst, now) {
        Some(owner) if owner == local => Outbound::Drop,
        Some(owner) => Outbound::Unicast(owner),
        None => Outbound::Flood,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(x: u64) -> PeerName {
        PeerName::from_u64(x)
    }

    #[test]
    fn learns_like_a_switch() {
        let now = Instant::now();
        let mut t = MacTable::default();
        let (a, b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);
        assert_eq!(
            from_bridge(&mut t, n(1), a, b, now),
            Outbound::Flood,
            "unknown: flood"
        );
        t.learn(b, n(2), now);
        assert_eq!(
            from_bridge(&mut t, n(1), a, b, now),
            Outbound::Unicast(n(2))
        );
        let c = [2, 0, 0, 0, 0, 0xc];
        assert_eq!(
            from_bridge(&mut t, n(1), c, a, now),
            Outbound::Drop,
            "local to local"
        );
        assert_eq!(
            from_bridge(&mut t, n(1), a, [0xff; 6], now),
            Outbound::Flood
        );
        assert_eq!(t.learn(b, n(3), now), Some(n(2)), "a MAC that moved");
        assert_eq!(t.lookup(&b, now + MAC_TTL), None, "and ages out");
        t.touch(b, now + MAC_TTL / 2);
        assert_eq!(
            t.lookup(&b, now + MAC_TTL),
            Some(n(3)),
            "touched: alive longer"
        );
        assert_eq!(t.entries(now + MAC_TTL), vec![(b, n(3))]);
        t.touch([2, 0, 0, 0, 0, 0xd], now);
        assert_eq!(
            t.lookup(&[2, 0, 0, 0, 0, 0xd], now),
            None,
            "touch learns nothing"
        );
        t.forget_router(n(3));
        assert_eq!(t.lookup(&b, now), None);
    }

    #[test]
    fn group_addresses_are_never_learnt() {
        let mut t = MacTable::default();
        assert_eq!(t.learn([1, 0, 0x5e, 0, 0, 1], n(1), Instant::now()), None);
        assert!(t.is_empty());
    }
}
