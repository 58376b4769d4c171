//! Which incoming connections may run a handshake: a bounded number at
//! once, a few per source address, and when all places are taken the
//! oldest handshake of the busiest source gives way. A host that opens
//! connections as fast as it can holds a few places at most, and a real
//! peer always gets one. Pure: the router acts on the decisions.

use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use crate::mesh::ConnId;

/// Handshakes in progress at once.
pub const MAX_TOTAL: usize = 64;
/// Handshakes in progress from one address at once: routers behind one
/// NAT still fit, one flooding host holds no more.
pub const MAX_PER_SOURCE: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run it; first stop the handshake `evict` names, if any.
    Admit { evict: Option<ConnId> },
    /// Its source has as many running as it may: close it.
    Refuse,
}

#[derive(Debug)]
pub struct Handshakes {
    max_total: usize,
    max_per_source: usize,
    running: BTreeMap<ConnId, (IpAddr, Instant)>,
}

impl Default for Handshakes {
    fn default() -> Self {
        Handshakes::new(MAX_TOTAL, MAX_PER_SOURCE)
    }
}

impl Handshakes {
    pub fn new(max_total: usize, max_per_source: usize) -> Handshakes {
        Handshakes {
            max_total,
            max_per_source,
            running: BTreeMap::new(),
        }
    }

    fn count(&self, source: IpAddr) -> usize {
        self.running.values().filter(|(s, _)| *s == source).count()
    }

    /// A connection from `source` wants to start its handshake.
    pub fn admit(&mut self, now: Instant, conn: ConnId, source: IpAddr) -> Decision {
        if self.count(source) >= self.max_per_source {
            return Decision::Refuse;
        }
        let evict = if self.running.len() >= self.max_total {
            self.busiest_oldest()
        } else {
            None
        };
        if let Some(old) = evict {
            self.running.remove(&old);
        }
        self.running.insert(conn, (source, now));
        Decision::Admit { evict }
    }

    /// The oldest handshake of the source with the most running.
    fn busiest_oldest(&self) -> Option<ConnId> {
        let mut per_source: BTreeMap<IpAddr, usize> = BTreeMap::new();
        for (source, _) in self.running.values() {
            *per_source.entry(*source).or_default() += 1;
        }
        let busiest = per_source
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(s, _)| *s)?;
        self.running
            .iter()
            .filter(|(_, (s, _))| *s == busiest)
            .min_by_key(|(_, (_, at))| *at)
            .map(|(conn, _)| *conn)
    }

    /// The handshake ended (established, failed or stopped).
    pub fn finished(&mut self, conn: ConnId) {
        self.running.remove(&conn);
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_flooding_source_holds_a_few_places_and_a_peer_still_gets_in() {
        let start = Instant::now();
        let mut h = Handshakes::new(16, 4);
        let mut conn = 0;
        // One host opens connection after connection.
        let mut admitted = 0;
        for i in 0..1000 {
            conn += 1;
            let now = start + Duration::from_millis(i);
            if let Decision::Admit { evict } = h.admit(now, conn, ip(66)) {
                assert_eq!(evict, None);
                admitted += 1;
            }
        }
        assert_eq!(admitted, 4, "the flood holds its four places");
        // Many flooding hosts fill every place; a peer still gets one, at
        // the cost of the busiest source's oldest.
        for source in 100..120u8 {
            for _ in 0..4 {
                conn += 1;
                h.admit(start + Duration::from_secs(1), conn, ip(source));
            }
        }
        assert_eq!(h.running(), 16);
        conn += 1;
        let decision = h.admit(start + Duration::from_secs(2), conn, ip(2));
        let Decision::Admit {
            evict: Some(evicted),
        } = decision
        else {
            panic!("the peer is refused: {decision:?}");
        };
        assert_eq!(h.running(), 16);
        // Evicted: the oldest of a source holding the most (4).
        assert!(evicted < conn);
        h.finished(conn);
        assert_eq!(h.running(), 15);
    }

    #[test]
    fn finished_handshakes_free_their_place() {
        let now = Instant::now();
        let mut h = Handshakes::new(2, 1);
        assert_eq!(h.admit(now, 1, ip(1)), Decision::Admit { evict: None });
        assert_eq!(h.admit(now, 2, ip(1)), Decision::Refuse);
        h.finished(1);
        assert_eq!(h.admit(now, 3, ip(1)), Decision::Admit { evict: None });
    }
}
