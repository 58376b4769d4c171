//! How full the kernel's flow table may get, and which flows leave it.
//!
//! Flows age out when idle. Near the bound the table sheds flows in small
//! steps, down to a low-water mark, instead of being flushed: a flush
//! sends every established flow back to upcalls at once, at the moment
//! the router is busiest (a burst of new MAC pairs). What it sheds first
//! are the flows on probation, those that have carried only a few
//! packets, least recently used first, and only then proven flows: under
//! a flood of new pairs (a container sending from thousands of forged
//! MACs), plain least-recently-used order evicted an established
//! connection's flows after a few seconds' pause, and its next packets
//! then waited among the flood's misses, most of which the upcall budget
//! drops. At the bound itself a miss is still forwarded but gets no flow
//! until a pass has made room. Pure: the worker dumps the table and
//! passes the kernel's clock in.

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
    /// A flow that has carried this many packets is proven: room is made
    /// from the flows on probation first.
    pub proven_packets: u64,
}

/// Flows unused this long go.
const IDLE_MS: u64 = 60_000;
/// A TCP connection's handshake and first round trips, more than a flood
/// of forged MAC pairs sends on one pair while its flow lives.
const PROVEN_PACKETS: u64 = 16;

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
            proven_packets: PROVEN_PACKETS,
        }
    }
}

/// What a pass decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Indexes into the dumped flows to delete: idle ones first, then
    /// for room those on probation, then proven ones, each least recently
    /// used first.
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

    /// Decides which of the dumped `flows` to delete at `now_ms` on the
    /// kernel's monotonic clock. The count becomes the dump's length;
    /// report each deletion that succeeds with [`FlowTable::removed`].
    pub fn pass(&mut self, flows: &[Dumped<K>], now_ms: u64) -> Pass {
        let limits = self.limits;
        let mut unused_since = HashMap::with_capacity(self.unused_since.len());
        let last_use: Vec<u64> = flows
            .iter()
            .map(|f| match f.used_ms {
                Some(t) => t,
                None => {
                    let since = self.unused_since.get(&f.id).copied().unwrap_or(now_ms);
                    unused_since.insert(f.id.clone(), since);
                    since
                }
            })
            .collect();
        // Flows that went away or have been used since lose their entry.
        self.unused_since = unused_since;
        self.count = flows.len();

        let mut order: Vec<usize> = (0..flows.len()).collect();
        order.sort_by_key(|&i| (last_use[i], i));
        let idle = order
            .iter()
            .take_while(|&&i| now_ms.saturating_sub(last_use[i]) > limits.idle_ms)
            .count();
        order[idle..].sort_by_key(|&i| (flows[i].packets >= limits.proven_packets, last_use[i], i));
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
        order.truncate(take);
        Pass {
            idle: idle.min(take),
            delete: order,
            again: wanted > take,
        }
    }
}

/// One flow of the kernel's table as a pass sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped<K> {
    pub id: K,
    /// The kernel's time of last use, `None` for never.
    pub used_ms: Option<u64>,
    /// Packets the flow has carried since it was installed.
    pub packets: u64,
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
        proven_packets: 16,
    };

    fn table() -> FlowTable<u32> {
        FlowTable::new(SMALL)
    }

    /// Flows by identity and last use that have carried one packet each.
    fn unproven<K: Clone>(flows: &[(K, Option<u64>)]) -> Vec<Dumped<K>> {
        flows
            .iter()
            .map(|(id, used_ms)| Dumped {
                id: id.clone(),
                used_ms: *used_ms,
                packets: 1,
            })
            .collect()
    }

    /// Removes the flows `pass` chose from `table` and tells `t`.
    fn apply<K>(t: &mut FlowTable<K>, table: &mut Vec<Dumped<K>>, pass: &Pass)
    where
        K: std::hash::Hash + Eq + Clone,
    {
        let gone: std::collections::HashSet<usize> = pass.delete.iter().copied().collect();
        for _ in &pass.delete {
            t.removed();
        }
        let mut i = 0;
        table.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
    }

    #[test]
    fn room_is_made_from_flows_on_probation_before_proven_ones() {
        let mut t = table();
        // Nine flows: over the high-water mark of 8, so two go this pass.
        // The oldest two have carried a transfer; of the others, the least
        // recently used go first.
        let flows: Vec<Dumped<u32>> = (0..9)
            .map(|i| Dumped {
                id: i,
                used_ms: Some(5_000 + u64::from(i)),
                packets: if i < 2 { 10_000 } else { 1 },
            })
            .collect();
        let pass = t.pass(&flows, 5_100);
        assert_eq!(pass.delete, vec![2, 3]);
        // Only proven flows left: least recently used first among them.
        let mut t = table();
        let proven: Vec<Dumped<u32>> = flows
            .iter()
            .map(|f| Dumped {
                packets: 16,
                ..f.clone()
            })
            .collect();
        assert_eq!(t.pass(&proven, 5_100).delete, vec![0, 1]);
    }

    #[test]
    fn a_paused_transfer_keeps_its_flow_through_a_flood_of_new_pairs() {
        // What the VM's flow bench found with a table of 1,024: a transfer
        // paused for a few seconds while a flood of forged pairs (each flow
        // used once) came in; least recently used, its flow was the first
        // to go, and its next connection's first packets waited among the
        // flood's misses until they timed out.
        let limits = Limits::for_max(1024);
        let mut t: FlowTable<u64> = FlowTable::new(limits);
        let mut table = vec![Dumped {
            id: 0,
            used_ms: Some(1_000),
            packets: 50_000,
        }];
        let (mut next, mut now, mut shed) = (1u64, 1_000u64, 0);
        // Ten seconds of passes, a tenth of a second apart, 50 new pairs
        // between passes (the routers' planning rate under emulation).
        for _ in 0..100 {
            now += 100;
            for _ in 0..50 {
                if t.admit() {
                    table.push(Dumped {
                        id: next,
                        used_ms: Some(now),
                        packets: 1,
                    });
                }
                next += 1;
            }
            let pass = t.pass(&table, now);
            assert!(
                !pass.delete.contains(&0),
                "the paused transfer's flow was shed at {now} ms"
            );
            shed += pass.delete.len();
            apply(&mut t, &mut table, &pass);
        }
        assert_eq!(table[0].id, 0);
        assert!(shed > 3_000, "the flood was shed ({shed} flows)");
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
        let pass = t.pass(&unproven(&flows), 9_000);
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
        assert!(t.pass(&unproven(&[(7, None)]), 10_000).delete.is_empty());
        assert!(t.pass(&unproven(&[(7, None)]), 10_900).delete.is_empty());
        assert_eq!(t.pass(&unproven(&[(7, None)]), 11_001).delete, vec![0]);
        // Used in between: the kernel's time counts, and a later unused
        // spell starts afresh.
        let mut t = table();
        t.pass(&unproven(&[(7, None)]), 10_000);
        t.pass(&unproven(&[(7, Some(10_500))]), 10_600);
        assert!(t.pass(&unproven(&[(7, None)]), 11_200).delete.is_empty());
        assert!(t.pass(&unproven(&[(7, None)]), 12_100).delete.is_empty());
        assert_eq!(t.pass(&unproven(&[(7, None)]), 12_201).delete, vec![0]);
    }

    #[test]
    fn a_crowded_table_sheds_its_least_recently_used_flows_in_steps() {
        let mut t = table();
        // Nine flows, all recent: over the high-water mark of 8, so four go
        // (down to 5), at most two a pass, the least recently used first.
        let flows: Vec<(u32, Option<u64>)> = (0..9)
            .map(|i| (i, Some(5_000 + u64::from((i * 7) % 9))))
            .collect();
        let first = t.pass(&unproven(&flows), 5_100);
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
        let second = t.pass(&unproven(&rest), 5_150);
        let used_rest: Vec<u64> = second.delete.iter().map(|&i| rest[i].1.unwrap()).collect();
        assert_eq!(
            used_rest,
            vec![5_002, 5_003],
            "shedding goes on below the high-water mark"
        );
        assert!(!second.again, "down to the low-water mark");
        let left: Vec<(u32, Option<u64>)> = (0..5).map(|i| (i, Some(5_000))).collect();
        assert!(t.pass(&unproven(&left), 5_200).delete.is_empty());
        let six: Vec<(u32, Option<u64>)> = (0..6).map(|i| (i, Some(5_000))).collect();
        assert!(
            t.pass(&unproven(&six), 5_250).delete.is_empty(),
            "shedding ended at the low-water mark"
        );
    }

    #[test]
    fn a_table_below_the_high_water_mark_keeps_its_recent_flows() {
        let mut t = table();
        let flows: Vec<(u32, Option<u64>)> = (0..7).map(|i| (i, Some(5_000))).collect();
        assert_eq!(t.pass(&unproven(&flows), 5_500), Pass::default());
    }

    #[test]
    fn the_most_recently_used_flow_survives_any_churn() {
        // A simulated table under a flood of new pairs: one flow carries
        // a transfer (used at every pass), the others are used once each.
        let limits = Limits::for_max(8192);
        assert_eq!((limits.high, limits.low, limits.step), (7168, 6144, 1024));
        let mut t: FlowTable<u64> = FlowTable::new(limits);
        // Counted as unproven, so it survives by recency alone.
        let mut table = unproven(&[(0u64, Some(0))]);
        let mut next = 1u64;
        let mut now = 0u64;
        let mut refused = 0;
        for _ in 0..200 {
            now += 50;
            // 2,000 new pairs arrive between passes, more than a pass
            // sheds; each is admitted or forwarded without a flow.
            for _ in 0..2_000 {
                if t.admit() {
                    table.extend(unproven(&[(next, None)]));
                } else {
                    refused += 1;
                }
                next += 1;
            }
            table[0].used_ms = Some(now);
            let pass = t.pass(&table, now);
            assert!(!pass.delete.contains(&0), "the transfer's flow was evicted");
            apply(&mut t, &mut table, &pass);
            assert!(table.len() <= limits.max);
            assert_eq!(t.count(), table.len());
        }
        assert_eq!(table[0].id, 0);
        assert!(refused > 0, "the flood outran the passes at times");
    }
}
