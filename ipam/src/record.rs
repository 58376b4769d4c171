//! What each peer says of itself: the addresses it holds, so that nobody
//! else hands them out, whatever happens to block ownership (a peer
//! removed with `rmpeer` while it was in fact alive, a merge race); and a
//! tombstone when it was removed.
//!
//! A record has one writer, its peer, and a version; the higher version
//! wins. The one exception is the tombstone `rmpeer` writes, which a
//! returning peer answers with a higher version of its own.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::IpamError;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u64,
    pub nickname: String,
    /// Held addresses as runs `(first, count)`: containers' addresses are
    /// mostly consecutive, so a host's list stays a few entries long.
    pub held: Vec<(u32, u32)>,
    /// Removed with `rmpeer`: its space was taken over.
    pub removed: bool,
}

/// More held addresses than this in one record is malformed: no host runs
/// that many containers, and a bound keeps a bad record from costing
/// memory.
const MAX_HELD: u64 = 1 << 20;

impl Record {
    pub fn held_set(&self) -> Result<BTreeSet<u32>, IpamError> {
        self.validate()?;
        let mut out = BTreeSet::new();
        for &(first, n) in &self.held {
            out.extend((u64::from(first)..u64::from(first) + u64::from(n)).map(|a| a as u32));
        }
        Ok(out)
    }

    /// Checks the bounds without building the set.
    pub fn validate(&self) -> Result<(), IpamError> {
        let total: u64 = self.held.iter().map(|&(_, n)| u64::from(n)).sum();
        if total > MAX_HELD {
            return Err(IpamError::Malformed(format!(
                "a record holding {total} addresses"
            )));
        }
        for &(first, n) in &self.held {
            if u64::from(first) + u64::from(n) > 1 << 32 {
                return Err(IpamError::Malformed(
                    "held addresses past 255.255.255.255".into(),
                ));
            }
        }
        Ok(())
    }

    /// Runs of the given sorted addresses.
    pub fn runs(held: &BTreeSet<u32>) -> Vec<(u32, u32)> {
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for &a in held {
            match runs.last_mut() {
                Some((first, n)) if u64::from(*first) + u64::from(*n) == u64::from(a) => *n += 1,
                _ => runs.push((a, 1)),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_addresses_travel_as_runs() {
        let held: BTreeSet<u32> = [1, 2, 3, 7, 9, 10, u32::MAX].into_iter().collect();
        let runs = Record::runs(&held);
        assert_eq!(runs, vec![(1, 3), (7, 1), (9, 2), (u32::MAX, 1)]);
        let r = Record {
            held: runs,
            ..Default::default()
        };
        assert_eq!(r.held_set().unwrap(), held);
    }

    #[test]
    fn absurd_records_are_refused() {
        let r = Record {
            held: vec![(0, u32::MAX)],
            ..Default::default()
        };
        assert!(r.held_set().is_err());
        let r = Record {
            held: vec![(u32::MAX, 2)],
            ..Default::default()
        };
        assert!(r.held_set().is_err());
    }
}
