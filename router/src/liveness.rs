//! Whether the other end of something is alive: heartbeats go out when we
//! have been quiet for an interval, and the other end counts as gone when
//! it has been quiet for a timeout. One machine serves the control
//! connections, the userspace path's UDP heartbeats and the fast
//! datapath's vxlan heartbeats; pure, with the time passed in.

use std::time::{Duration, Instant};

/// How often the data paths (UDP and vxlan) send a heartbeat.
pub const PATH_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A data path that has answered nothing for this long is down: six
/// heartbeats in a row lost.
pub const PATH_DEAD_AFTER: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Nothing sent for a heartbeat interval: send a heartbeat.
    Send,
    /// Nothing received within the timeout: the other end is gone.
    Dead,
}

#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    started: Instant,
    /// None until the first heartbeat: the first one is due at once.
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
}

impl Liveness {
    /// A new machine whose first heartbeat is due now; the other end has
    /// `timeout` from now to be heard.
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Liveness {
        Liveness {
            interval,
            timeout,
            started: now,
            last_sent: None,
            last_received: None,
        }
    }

    /// Something went out: the next heartbeat is an interval away.
    pub fn sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
    }

    /// Something authentic came in.
    pub fn received(&mut self, now: Instant) {
        self.last_received = Some(now);
    }

    /// Whether the other end was heard within the timeout.
    pub fn heard_recently(&self, now: Instant) -> bool {
        self.last_received
            .is_some_and(|t| now.duration_since(t) < self.timeout)
    }

    /// Whether the other end was ever heard.
    pub fn ever_heard(&self) -> bool {
        self.last_received.is_some()
    }

    /// How long since this machine started.
    pub fn age(&self, now: Instant) -> Duration {
        now.duration_since(self.started)
    }

    /// What is due now, death first. Silence counts from the start, so a
    /// peer that never says anything is dead after one timeout.
    pub fn poll(&self, now: Instant) -> Option<Beat> {
        if now >= self.dead_at() {
            Some(Beat::Dead)
        } else if self.heartbeat_due(now) {
            Some(Beat::Send)
        } else {
            None
        }
    }

    /// When to call [`Liveness::poll`] next.
    pub fn deadline(&self) -> Instant {
        self.next_heartbeat().min(self.dead_at())
    }

    /// Whether a heartbeat is due, dead or alive: data paths keep probing
    /// a silent peer so they notice when it comes back.
    pub fn heartbeat_due(&self, now: Instant) -> bool {
        now >= self.next_heartbeat()
    }

    /// When the next heartbeat is due.
    pub fn next_heartbeat(&self) -> Instant {
        self.last_sent.map_or(self.started, |t| t + self.interval)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn dead_at(&self) -> Instant {
        self.last_received.unwrap_or(self.started) + self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_when_quiet_and_dies_when_the_peer_is() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(t0, s(3), s(10));
        assert_eq!(
            l.poll(t0),
            Some(Beat::Send),
            "the first heartbeat is due at once"
        );
        l.sent(t0);
        assert_eq!(l.poll(t0 + s(1)), None);
        assert_eq!(l.deadline(), t0 + s(3));
        assert_eq!(l.poll(t0 + s(3)), Some(Beat::Send));
        l.sent(t0 + s(3));
        l.received(t0 + s(5));
        assert_eq!(l.poll(t0 + s(14)), Some(Beat::Send));
        assert_eq!(l.poll(t0 + s(15)), Some(Beat::Dead));
    }

    #[test]
    fn a_silent_peer_is_never_heard_and_dies_one_timeout_after_the_start() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut l = Liveness::new(t0, s(1), s(3));
        l.sent(t0);
        assert!(!l.ever_heard());
        assert!(!l.heard_recently(t0));
        assert_eq!(l.poll(t0 + s(2)), Some(Beat::Send));
        assert_eq!(l.poll(t0 + s(3)), Some(Beat::Dead));
        l.received(t0 + s(4));
        assert!(l.heard_recently(t0 + s(6)));
        assert!(
            !l.heard_recently(t0 + s(7)),
            "heard is fresh for one timeout"
        );
        assert!(l.ever_heard());
        assert_eq!(l.age(t0 + s(7)), s(7));
    }
}
