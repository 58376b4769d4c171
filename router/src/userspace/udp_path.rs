//! The UDP path to one peer: heartbeats show whether datagrams cross at
//! all, and probes of growing and shrinking size find the largest that
//! crosses, without relying on ICMP (which firewalls drop).
//!
//! The path counts as usable only while the peer answers; an ICMP-free
//! binary search between the smallest IPv4 MTU and our own link MTU finds
//! the path MTU in about ten probes, first trying the full size, which
//! most paths take.

use std::time::{Duration, Instant};

use crate::liveness::{Liveness, PATH_DEAD_AFTER, PATH_HEARTBEAT_INTERVAL};

const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const PROBE_TRIES: u32 = 2;
/// How often to search again, to notice a path that got larger.
const RESEARCH_AFTER: Duration = Duration::from_secs(600);
pub const MIN_PATH_MTU: u32 = 576;

/// A heartbeat or probe to send: sequence number and IP packet size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub seq: u32,
    pub size: u32,
}

#[derive(Clone, Copy, Debug)]
struct Search {
    /// Largest size known to cross, smallest known not to (exclusive).
    good: u32,
    bad: u32,
    pending: Option<(Probe, Instant, u32)>,
}

pub struct UdpPath {
    link_mtu: u32,
    seq: u32,
    liveness: Liveness,
    acked: bool,
    search: Option<Search>,
    path_mtu: Option<u32>,
    next_search: Instant,
}

impl UdpPath {
    /// `link_mtu`: our underlay interface's MTU, the most a path can take.
    pub fn new(now: Instant, link_mtu: u32) -> UdpPath {
        UdpPath {
            link_mtu,
            seq: 0,
            liveness: Liveness::new(now, PATH_HEARTBEAT_INTERVAL, PATH_DEAD_AFTER),
            acked: false,
            search: None,
            path_mtu: None,
            next_search: now,
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Whether data may be sent: the peer has answered recently.
    pub fn usable(&self, now: Instant) -> bool {
        self.acked && self.liveness.heard_recently(now)
    }

    /// The largest IP packet known to cross, once measured.
    pub fn path_mtu(&self) -> Option<u32> {
        self.path_mtu
    }

    /// Anything authentic arrived from the peer.
    pub fn heard(&mut self, now: Instant) {
        self.liveness.received(now);
    }

    /// The peer acknowledged heartbeat `seq`, received at `size` bytes.
    pub fn acked(&mut self, now: Instant, seq: u32, size: u32) {
        self.heard(now);
        self.acked = true;
        if let Some(search) = &mut self.search
            && let Some((probe, _, _)) = search.pending
            && probe.seq == seq
            && size >= probe.size
        {
            search.good = search.good.max(probe.size);
            search.pending = None;
        }
        self.settle(now);
    }

    /// Ends the search when good and bad meet.
    fn settle(&mut self, now: Instant) {
        if let Some(search) = self.search
            && search.good + 1 >= search.bad
        {
            self.path_mtu = Some(search.good);
            self.search = None;
            self.next_search = now + RESEARCH_AFTER;
        }
    }

    /// The next datagram to send, if one is due now.
    pub fn poll(&mut self, now: Instant) -> Option<Probe> {
        // The search runs once heartbeats work.
        if self.acked && self.search.is_none() && now >= self.next_search {
            self.search = Some(Search {
                good: self.path_mtu.unwrap_or(MIN_PATH_MTU).min(self.link_mtu),
                bad: self.link_mtu + 1,
                pending: None,
            });
        }
        if let Some(mut search) = self.search {
            let due = match search.pending {
                None => true,
                Some((_, sent, _)) => now >= sent + PROBE_TIMEOUT,
            };
            if due {
                let (size, tries) = match search.pending {
                    Some((probe, _, tries)) if tries < PROBE_TRIES => (probe.size, tries + 1),
                    Some((probe, _, _)) => {
                        // Lost every time: too big.
                        search.bad = probe.size;
                        self.search = Some(Search {
                            pending: None,
                            ..search
                        });
                        self.settle(now);
                        return self.poll(now);
                    }
                    // Full size first, then halve the gap.
                    None if search.bad == self.link_mtu + 1 => (self.link_mtu, 1),
                    None => ((search.good + search.bad) / 2, 1),
                };
                let probe = Probe {
                    seq: self.next_seq(),
                    size,
                };
                search.pending = Some((probe, now, tries));
                self.search = Some(search);
                self.liveness.sent(now);
                return Some(probe);
            }
        }
        if self.liveness.heartbeat_due(now) {
            self.liveness.sent(now);
            return Some(Probe {
                seq: self.next_seq(),
                size: 0,
            });
        }
        None
    }

    /// When to poll again.
    pub fn deadline(&self) -> Instant {
        let probe = self
            .search
            .and_then(|s| s.pending)
            .map(|(_, sent, _)| sent + PROBE_TIMEOUT);
        [Some(self.liveness.next_heartbeat()), probe]
            .into_iter()
            .flatten()
            .min()
            .expect("heartbeats are always scheduled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a path against a network that drops packets over `limit`
    /// and answers the rest after 1 ms.
    fn discover(link_mtu: u32, limit: u32) -> (Option<u32>, u32) {
        let mut now = Instant::now();
        let mut path = UdpPath::new(now, link_mtu);
        let mut probes = 0;
        for _ in 0..2000 {
            if let Some(p) = path.poll(now) {
                if p.size > 0 {
                    probes += 1;
                }
                if p.size <= limit {
                    path.acked(now + Duration::from_millis(1), p.seq, p.size.max(1));
                }
            }
            if path.path_mtu().is_some() {
                break;
            }
            now += Duration::from_millis(10);
        }
        (path.path_mtu(), probes)
    }

    #[test]
    fn finds_the_full_link_mtu_with_one_probe() {
        assert_eq!(discover(1500, 1500), (Some(1500), 1));
    }

    #[test]
    fn finds_a_smaller_hop_by_binary_search() {
        let (mtu, probes) = discover(1500, 1400);
        assert_eq!(mtu, Some(1400));
        assert!(probes <= 2 * 12, "{probes} probes");
        assert_eq!(discover(9000, 1500).0, Some(1500));
    }

    #[test]
    fn is_usable_only_while_the_peer_answers() {
        let t0 = Instant::now();
        let mut path = UdpPath::new(t0, 1500);
        let first = path.poll(t0).unwrap();
        assert_eq!(first.size, 0, "a plain heartbeat first");
        assert!(!path.usable(t0));
        path.acked(t0, first.seq, 40);
        assert!(path.usable(t0));
        assert!(!path.usable(t0 + PATH_DEAD_AFTER), "silence kills it");
        path.heard(t0 + PATH_DEAD_AFTER);
        assert!(path.usable(t0 + PATH_DEAD_AFTER));
    }
}
