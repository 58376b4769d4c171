//! The sliding replay window of RFC 6479: a ring of bitmap blocks, so
//! advancing the window clears whole words instead of shifting bits.

const BLOCK_BITS: u64 = 64;
const BLOCKS: usize = 64;
/// How far behind the newest counter a packet may still be accepted:
/// 4032 packets, room for reordering across a batch of sends on several
/// queues. (One block is always being reused, hence `BLOCKS - 1`.)
pub const WINDOW: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Counters seen recently, to drop duplicates and packets too old to tell.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    bitmap: [u64; BLOCKS],
    /// The highest counter accepted so far.
    highest: u64,
}

/// Why a counter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Seen before.
    Duplicate,
    /// Older than the window: it may or may not have been seen.
    TooOld,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            bitmap: [0; BLOCKS],
            highest: 0,
        }
    }
}

fn position(counter: u64) -> (usize, u64) {
    let block = (counter / BLOCK_BITS) as usize % BLOCKS;
    (block, 1 << (counter % BLOCK_BITS))
}

impl ReplayWindow {
    /// Whether `counter` may be accepted. Check before authenticating,
    /// record with [`ReplayWindow::accept`] only after.
    pub fn check(&self, counter: u64) -> Result<(), Replay> {
        if counter > self.highest {
            return Ok(());
        }
        if counter + WINDOW < self.highest {
            return Err(Replay::TooOld);
        }
        let (block, bit) = position(counter);
        if self.bitmap[block] & bit != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records an authenticated `counter`, sliding the window forward if it
    /// is the newest.
    pub fn accept(&mut self, counter: u64) {
        if counter > self.highest {
            let current = self.highest / BLOCK_BITS;
            let newest = counter / BLOCK_BITS;
            let cleared = (newest - current).min(BLOCKS as u64);
            for i in 1..=cleared {
                self.bitmap[((current + i) % BLOCKS as u64) as usize] = 0;
            }
            self.highest = counter;
        }
        let (block, bit) = position(counter);
        self.bitmap[block] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn duplicates_and_old_counters_are_refused() {
        let mut w = ReplayWindow::default();
        for c in [0, 1, 2, 5] {
            assert_eq!(w.check(c), Ok(()));
            w.accept(c);
        }
        assert_eq!(w.check(2), Err(Replay::Duplicate));
        assert_eq!(w.check(3), Ok(()), "late but new");
        w.accept(10_000);
        assert_eq!(w.check(10_000 - WINDOW), Ok(()));
        assert_eq!(w.check(10_000 - WINDOW - 1), Err(Replay::TooOld));
        assert_eq!(w.check(10_000), Err(Replay::Duplicate));
    }

    #[test]
    fn the_window_holds_at_least_2048_packets() {
        let mut w = ReplayWindow::default();
        w.accept(5000);
        for c in (5000 - 2048)..5000 {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
        }
    }

    proptest! {
        /// Against a model that remembers everything: within the window the
        /// verdict is exact, and nothing accepted is ever accepted twice.
        #[test]
        fn agrees_with_a_perfect_memory(counters in prop::collection::vec(0u64..20_000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            let mut highest = 0;
            for c in counters {
                let verdict = w.check(c);
                if seen.contains(&c) {
                    prop_assert!(verdict.is_err(), "replay of {} accepted", c);
                } else if c + WINDOW >= highest {
                    prop_assert_eq!(verdict, Ok(()), "fresh {} in the window refused", c);
                }
                if verdict.is_ok() {
                    w.accept(c);
                    seen.insert(c);
                    highest = highest.max(c);
                }
            }
        }
    }
}
