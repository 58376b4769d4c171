//! How full the kernel's flow table may get, and which flows leave it.
//!
//! Flows age out when idle. Near the bound the table sheds its least
//! recently used flows in small steps, down to a low-water mark, instead
//! of being flushed: a flush sends every established flow back to upcalls
//! at once, at the moment the router is busiest (a burst of new MAC
//! pairs), and the flows that carry most traffic are the ones used last.
//! At the bound itself a miss is still forwarded but gets no flow until a
//! pass has made room. Pure: the worker dumps the table and passes the
//! kernel's clock in.

use std::{collections::HashMap, hash::Hash};

/// The table's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Flows never installed beyond this.
    pub max: usize,
    /// From this many flows on, passes come quickly and shed flows.
    pub high: usize,
    /// What a shedding pass brings the table down to.
    pub low: usize,
    /// Most flows one pass removes, so the worker goes back to upcalls
    /// and heartbeats between passes.
    pub step: usize,
    /// Flows unused this long go whatever the table's size.
    pub idle_ms: u64,
}

/// Flows unused this long go.
const IDLE_MS: u64 = 60_000;

impl Limits {
    /// The bounds of a table of at most `max` flows: shedding from 7/8
    /// full down to 3/4, an eighth at most per pass (8,192: 7,168, 6,144
    /// and 1,024).
    pub fn for_max(max: usize) -> Limits {
        let max = max.max(8);
        Limits {
            max,
            high: max / 8 * 7,
            low: max / 4 * 3,
            step: max / 8,
            idle_ms: IDLE_MS,
        }
    }
}

/// What a pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Indexes into the dumped flows to delete, idle ones first, then the
    /// least recently used.
    pub delete: Vec<usize>,
    /// How many of `delete` went for being idle (the rest for room).
    pub idle: usize,
    /// More should go than one step allowed: pass again soon.
    pub again: bool,
}

/// The router's side of the kernel's flow table: how many flows it has
/// (an upper bound between passes) and since when the flows the kernel
/// reports as never used have been seen so.
#[derive(Debug)]
pub struct FlowTable<K> {
    limits: Limits,
    count: usize,
    /// Between crossing the high-water mark and reaching the low one.
    shedding: bool,
    /// A flow the kernel installed but no packet has used yet reports no
    /// time of use; its age counts from the first pass that saw it.
    unused_since: HashMap<K, u64>,
}

impl<K: Hash + Eq + Clone> FlowTable<K> {
    pub fn new(limits: Limits) -> FlowTable<K> {
        FlowTable {
            limits,
            count: 0,
            shedding: false,
            unused_since: HashMap::new(),
        }
    }

    /// Whether a flow may be installed now. A `true` counts it: call
    /// [`FlowTable::not_installed`] if the kernel then refuses it.
    pub fn admit(&mut self) -> bool {
        if self.count >= self.limits.max {
            return false;
        }
        self.count += 1;
        true
    }

    pub fn not_installed(&mut self) {
        self.count = self.count.saturating_sub(1);
    }

    /// Whether the table is full enough to shed flows now rather than at
    /// the next regular pass.
    pub fn crowded(&self) -> bool {
        self.count >= self.limits.high
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Every flow is gone (a flush or a rebuilt datapath).
    pub fn cleared(&mut self) {
        self.count = 0;
        self.shedding = false;
        self.unused_since.clear();
    }

    /// One flow the pass chose was deleted.
    pub fn removed(&mut self) {
        self.count = self.count.saturating_sub(1);
    }

    /// Decides which of the dumped `flows` (each its identity and the
    /// kernel's last use, `None` for never) to delete at `now_ms` on the
    /// kernel's monotonic clock. The count becomes the dump's length;
    /// report each deletion that succeeds with [`FlowTable::removed`].
    pub fn pass(&mut self, flows: &[(K, Option<u64>)], now_ms: u64) -> Pass {
        let limits = self.limits;
        let mut unused_since = HashMap::with_capacity(self.unused_since.len());
        let last_use: Vec<u64> = flows
            .iter()
            .map(|(id, used)| match used {
                Some(t) => *t,
                None => {
                    let since = self.unused_since.get(id).copied().unwrap_or(now_ms);
                    unused_since.insert(id.clone(), since);
                    since
                }
            })
            .collect();
        // Flows that went away or have been used since lose their entry.
        self.unused_since = unused_since;
        self.count = flows.len();

        let mut by_age: Vec<usize> = (0..flows.len()).collect();
        by_age.sort_by_key(|&i| (last_use[i], i));
        let idle = by_age
            .iter()
            .take_while(|&&i| now_ms.saturating_sub(last_use[i]) > limits.idle_ms)
            .count();
        if flows.len() >= limits.high {
            self.shedding = true;
        } else if flows.len() <= limits.low {
            self.shedding = false;
        }
        let for_room = if self.shedding {
            flows.len() - limits.low
        } else {
            0
        };
        let wanted = idle.max(for_room);
        let take = wanted.min(limits.step);
        by_age.truncate(take);
        Pass {
            idle: idle.min(take),
            delete: by_age,
            again: wanted > take,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        max: 10,
        high: 8,
        low: 5,
        step: 2,
        idle_ms: 1_000,
    };

    fn table() -> FlowTable<u32> {
        FlowTable::new(SMALL)
    }

    #[test]
    fn installs_stop_at_the_bound_and_a_refused_install_frees_its_place() {
        let mut t = table();
        for _ in 0..10 {
            assert!(t.admit());
        }
        assert!(!t.admit(), "the eleventh flow is over the bound");
        t.not_installed();
        assert!(t.admit(), "the kernel refused one: its place is free");
        assert!(t.crowded());
        t.cleared();
        assert!(!t.crowded());
        assert_eq!(t.count(), 0);
    }

    #[test]
    fn idle_flows_go_oldest_first_and_recent_or_fresh_ones_stay() {
        let mut t = table();
        let flows = [
            (1, Some(100)),
            (2, Some(8_500)),
            (3, None),
            (4, Some(7_000)),
        ];
        let pass = t.pass(&flows, 9_000);
        // 1 and 4 were last used more than a second ago; 3 was just seen
        // unused for the first time.
        assert_eq!(pass.delete, vec![0, 3]);
        assert_eq!(pass.idle, 2);
        assert!(!pass.again);
        assert_eq!(t.count(), 4);
    }

    #[test]
    fn a_flow_never_used_ages_from_the_pass_that_first_saw_it() {
        let mut t = table();
        assert!(t.pass(&[(7, None)], 10_000).delete.is_empty());
        assert!(t.pass(&[(7, None)], 10_900).delete.is_empty());
        assert_eq!(t.pass(&[(7, None)], 11_001).delete, vec![0]);
        // Used in between: the kernel's time counts, and a later unused
        // spell starts afresh.
        let mut t = table();
        t.pass(&[(7, None)], 10_000);
        t.pass(&[(7, Some(10_500))], 10_600);
        assert!(t.pass(&[(7, None)], 11_200).delete.is_empty());
        assert!(t.pass(&[(7, None)], 12_100).delete.is_empty());
        assert_eq!(t.pass(&[(7, None)], 12_201).delete, vec![0]);
    }

    #[test]
    fn a_crowded_table_sheds_its_least_recently_used_flows_in_steps() {
        let mut t = table();
        // Nine flows, all recent: over the high-water mark of 8, so four go
        // (down to 5), at most two a pass, the least recently used first.
        let flows: Vec<(u32, Option<u64>)> = (0..9)
            .map(|i| (i, Some(5_000 + u64::from((i * 7) % 9))))
            .collect();
        let first = t.pass(&flows, 5_100);
        let used =
            |p: &Pass| -> Vec<u64> { p.delete.iter().map(|&i| flows[i].1.unwrap()).collect() };
        assert_eq!(used(&first), vec![5_000, 5_001]);
        assert_eq!(first.idle, 0);
        assert!(first.again, "two of four went");
        let rest: Vec<(u32, Option<u64>)> = flows
            .iter()
            .enumerate()
            .filter(|(i, _)| !first.delete.contains(i))
            .map(|(_, f)| *f)
            .collect();
        let second = t.pass(&rest, 5_150);
        let used_rest: Vec<u64> = second.delete.iter().map(|&i| rest[i].1.unwrap()).collect();
        assert_eq!(
            used_rest,
            vec![5_002, 5_003],
            "shedding goes on below the high-water mark"
        );
        assert!(!second.again, "down to the low-water mark");
        let left: Vec<(u32, Option<u64>)> = (0..5).map(|i| (i, Some(5_000))).collect();
        assert!(t.pass(&left, 5_200).delete.is_empty());
        let six: Vec<(u32, Option<u64>)> = (0..6).map(|i| (i, Some(5_000))).collect();
        assert!(
            t.pass(&six, 5_250).delete.is_empty(),
            "shedding ended at the low-water mark"
        );
    }

    #[test]
    fn a_table_below_the_high_water_mark_keeps_its_recent_flows() {
        let mut t = table();
        let flows: Vec<(u32, Option<u64>)> = (0..7).map(|i| (i, Some(5_000))).collect();
        assert_eq!(t.pass(&flows, 5_500), Pass::default());
    }

    #[test]
    fn the_most_recently_used_flow_survives_any_churn() {
        // A simulated table under a flood of new pairs: one flow carries
        // a transfer (used at every pass), the others are used once each.
        let limits = Limits::for_max(8192);
        assert_eq!((limits.high, limits.low, limits.step), (7168, 6144, 1024));
        let mut t: FlowTable<u64> = FlowTable::new(limits);
        let mut table: Vec<(u64, Option<u64>)> = vec![(0, Some(0))];
        let mut next = 1u64;
        let mut now = 0u64;
        let mut refused = 0;
        for _ in 0..200 {
            now += 50;
            // 2,000 new pairs arrive between passes, more than a pass
            // sheds; each is admitted or forwarded without a flow.
            for _ in 0..2_000 {
                if t.admit() {
                    table.push((next, None));
                } else {
                    refused += 1;
                }
                next += 1;
            }
            table[0].1 = Some(now);
            let pass = t.pass(&table, now);
            assert!(!pass.delete.contains(&0), "the transfer's flow was evicted");
            let gone: std::collections::HashSet<usize> = pass.delete.iter().copied().collect();
            for _ in &pass.delete {
                t.removed();
            }
            let mut i = 0;
            table.retain(|_| {
                i += 1;
                !gone.contains(&(i - 1))
            });
            assert!(table.len() <= limits.max);
            assert_eq!(t.count(), table.len());
        }
        assert_eq!(table[0].0, 0);
        assert!(refused > 0, "the flood outran the passes at times");
    }
}
