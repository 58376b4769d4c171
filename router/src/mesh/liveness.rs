//! Heartbeats of one control connection: send one when we have been quiet,
//! give up on the peer when it has been quiet for too long.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Nothing sent for a heartbeat interval: send a heartbeat.
    Send,
    /// Nothing received within the timeout: the connection is dead.
    Dead,
}

#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    last_sent: Instant,
    last_received: Instant,
}

impl Liveness {
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Liveness {
        Liveness {
            interval,
            timeout,
            last_sent: now,
            last_received: now,
        }
    }

    pub fn sent(&mut self, now: Instant) {
        self.last_sent = now;
    }

    pub fn received(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// What is due now, death first.
    pub fn poll(&self, now: Instant) -> Option<Beat> {
        if now >= self.last_received + self.timeout {
            Some(Beat::Dead)
        } else if now >= self.last_sent + self.interval {
            Some(Beat::Send)
        } else {
            None
        }
    }

    /// When to call [`Liveness::poll`] next.
    pub fn deadline(&self) -> Instant {
        (self.last_sent + self.interval).min(self.last_received + self.timeout)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
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
        assert_eq!(l.poll(t0 + s(1)), None);
        assert_eq!(l.deadline(), t0 + s(3));
        assert_eq!(l.poll(t0 + s(3)), Some(Beat::Send));
        l.sent(t0 + s(3));
        l.received(t0 + s(5));
        assert_eq!(l.poll(t0 + s(14)), Some(Beat::Send));
        assert_eq!(l.poll(t0 + s(15)), Some(Beat::Dead));
    }
}
