//! Log lines for events that can come by the thousand (refused
//! handshakes, connections over a limit): the first is said at once, then
//! at most one line per interval, with how many there were since. An
//! attacker cannot fill the disk through the log. Pure: time is passed in.

use std::time::{Duration, Instant};

pub struct Summary {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Summary {
    pub fn new(every: Duration) -> Summary {
        Summary {
            every,
            last: None,
            count: 0,
        }
    }

    /// Counts one event; when a line is due, returns how many events it
    /// covers (this one and those held back since the last line).
    pub fn count(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(at) if now < at + self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_one_line_per_interval_with_its_count() {
        let start = Instant::now();
        let mut s = Summary::new(Duration::from_secs(10));
        assert_eq!(s.count(start), Some(1), "the first is said at once");
        let mut lines = Vec::new();
        // 98,000 events over a minute: one every ~0.6 ms.
        for i in 1..98_000u64 {
            let now = start + Duration::from_micros(i * 612);
            if let Some(n) = s.count(now) {
                lines.push(n);
            }
        }
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert_eq!(1 + lines.iter().sum::<u64>() + s.count, 98_000);
    }
}
