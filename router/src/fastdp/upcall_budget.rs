//! How many missed packets the router plans, and for how long. Planning a
//! miss costs two netlink requests (install the flow, send the packet); a
//! container sending from thousands of forged MACs would otherwise keep
//! the datapath thread busy with its misses alone, and the kernel's upcall
//! queue would hold seconds of stale misses ahead of a new connection's
//! first packet. While the budget is closed the router leaves its miss
//! queues unread, and when it opens again drops unread what a queue holds
//! if that is more than a burst (the kernel's copy is the only cost); so
//! at most a burst of stale misses waits ahead of new ones. Peers'
//! heartbeats have a flow of their own, so they come up as misses only
//! while it is missing (at most a second, until the next repair pass).
//! Established flows never miss.

/// Misses planned per second, at most.
pub const UPCALLS_PER_SECOND: u32 = 20_000;
/// The budget is granted in windows this long, so a burst cannot spend a
/// whole second's worth at once.
const WINDOW_US: u64 = 100_000;
/// Of each window, at most this long goes to planning misses, whatever
/// the machine's speed: the rest of the thread's time is for commands,
/// the flow table's passes and repairs, and the rest of the CPU for the
/// traffic that already has flows. A fifth: with half, the two routers of
/// the VM's flow bench spent 0.58-0.68 of its two CPUs on a flood of
/// misses and an established transfer kept 0.53x of its speed; with a
/// fifth, 0.35-0.43 and 0.70-0.76x (three runs), still planning 126-227
/// misses a second under emulation (natively, a miss costs tens of
/// microseconds: thousands a second).
const BUSY_US: u64 = WINDOW_US / 5;

/// Whether a miss queue that waited out a closed budget holds a flood
/// (drop it unread) rather than a burst (read it): more than about a
/// hundred full-size frames' worth.
pub fn flooded(queued_bytes: usize) -> bool {
    queued_bytes > FLOOD_BYTES
}
const FLOOD_BYTES: usize = 256 << 10;

#[derive(Debug)]
pub struct UpcallBudget {
    per_window: u32,
    window: u64,
    spent: u32,
    busy_us: u64,
}

impl UpcallBudget {
    pub fn new(per_second: u32) -> UpcallBudget {
        UpcallBudget {
            per_window: (per_second as u64 * WINDOW_US / 1_000_000).max(1) as u32,
            window: u64::MAX,
            spent: 0,
            busy_us: 0,
        }
    }

    /// Whether a miss could be planned at `now_us` (any monotonic clock in
    /// microseconds), without taking it: while the budget is closed, the
    /// router leaves its miss queue unread.
    pub fn open(&mut self, now_us: u64) -> bool {
        let window = now_us / WINDOW_US;
        if window != self.window {
            self.window = window;
            self.spent = 0;
            self.busy_us = 0;
        }
        self.spent < self.per_window && self.busy_us < BUSY_US
    }

    /// When a closed budget opens again: the next window's start.
    pub fn reopens_at_us(&self) -> u64 {
        self.window.saturating_add(1).saturating_mul(WINDOW_US)
    }

    /// Whether one more miss may be planned at `now_us`, and takes it.
    pub fn take(&mut self, now_us: u64) -> bool {
        if !self.open(now_us) {
            return false;
        }
        self.spent += 1;
        true
    }

    /// Planning the miss just taken took `us` microseconds.
    pub fn charge(&mut self, us: u64) {
        self.busy_us = self.busy_us.saturating_add(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_grants_its_share_and_the_next_one_starts_afresh() {
        let mut b = UpcallBudget::new(1_000);
        let granted = (0..500).filter(|_| b.take(1_050_000)).count();
        assert_eq!(granted, 100, "a tenth of a second's share");
        assert!(!b.take(1_099_999));
        assert!(b.take(1_100_000), "a new window");
        // Over a simulated second of a flood, at most the rate goes through.
        let mut b = UpcallBudget::new(20_000);
        let granted = (0..1_000_000u64).filter(|i| b.take(5_000_000 + i)).count();
        assert_eq!(granted, 20_000);
    }

    #[test]
    fn a_slow_machine_plans_for_a_fifth_of_each_window_only() {
        // Each miss takes 10 ms to plan: two fit in a fifth of a window.
        let mut b = UpcallBudget::new(20_000);
        let mut granted = 0;
        for i in 0..100u64 {
            if b.take(200_000 + i * 100) {
                b.charge(10_000);
                granted += 1;
            }
        }
        assert_eq!(granted, 2);
        assert!(b.take(300_000), "the next window");
    }

    #[test]
    fn a_closed_budget_says_when_it_opens_and_looking_takes_nothing() {
        let mut b = UpcallBudget::new(20);
        assert!(b.open(1_010_000));
        assert!(b.open(1_010_000), "looking twice takes nothing");
        assert!(b.take(1_020_000) && b.take(1_030_000));
        assert!(!b.open(1_040_000), "two per window, both taken");
        assert_eq!(b.reopens_at_us(), 1_100_000);
        assert!(!b.open(1_099_999));
        assert!(b.open(1_100_000));
        // Closed by time spent, not by count.
        let mut b = UpcallBudget::new(20_000);
        assert!(b.take(0));
        b.charge(BUSY_US);
        assert!(!b.open(1));
        assert_eq!(b.reopens_at_us(), WINDOW_US);
    }

    #[test]
    fn a_burst_waits_to_be_read_and_a_flood_is_dropped() {
        // Five new connections' first frames (about 2 KiB each as the
        // kernel counts them) are a burst; a window of a flood is not.
        assert!(!flooded(0));
        assert!(!flooded(5 * 2_304));
        assert!(!flooded(100 * 2_304));
        assert!(flooded(1_000 * 2_304));
        assert!(flooded(usize::MAX), "a queue that cannot be measured");
    }

    #[test]
    fn a_tiny_rate_still_lets_one_through_per_window() {
        let mut b = UpcallBudget::new(1);
        assert!(b.take(0));
        assert!(!b.take(50_000));
        assert!(b.take(100_000));
    }
}
