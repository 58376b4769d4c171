//! The ring: who owns each block of the range, as a state every peer holds
//! a copy of and merges from gossip.
//!
//! Each block carries its owner, a version and whether it is active (may
//! hold addresses). Only a block's owner changes it (to activate,
//! deactivate or give it away), each time with a higher version, so the
//! merge is simply "the higher version wins"; the only writes by others
//! are reclaims of a departed owner's inactive blocks; when one of those
//! races an owner's write to the same version, the active state wins (the
//! owner may be handing out its addresses), then the larger owner, the
//! same everywhere.
//!
//! A ring belongs to a cluster: the id agreed when it was first divided.
//! Rings of different clusters never merge ([`crate::agent`] decides what
//! happens instead).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{IpamError, Peer, layout::Layout};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub owner: Peer,
    pub version: u32,
    /// The owner may hand out addresses in it. Becoming active takes the
    /// acknowledgement of enough peers (see the agent), so that a peer
    /// reclaiming a departed owner's space knows which blocks may be in
    /// use and leaves them alone.
    pub active: bool,
}

impl Block {
    /// Whether this state replaces `other` in a merge.
    pub fn supersedes(&self, other: &Block) -> bool {
        (self.version, self.active, self.owner) > (other.version, other.active, other.owner)
    }
}

/// Consecutive blocks in the same state: how rings travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub start: u32,
    pub len: u32,
    pub block: Block,
}

/// What identifies a ring: rings merge only when all of this is equal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: u64,
    pub layout: Layout,
    /// The peers that divided the range first.
    pub seeds: Vec<Peer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub cluster: Cluster,
    blocks: Vec<Block>,
}

/// Per owner: blocks and active blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub blocks: u32,
    pub active: u32,
}

impl Ring {
    /// The first division: the seeds (sorted) get equal contiguous shares,
    /// the first ones one block more when it does not divide evenly.
    pub fn divide(id: u64, layout: Layout, seeds: &[Peer]) -> Ring {
        let mut seeds: Vec<Peer> = seeds.to_vec();
        seeds.sort();
        seeds.dedup();
        assert!(!seeds.is_empty(), "a ring needs at least one seed");
        let n = layout.block_count() as usize;
        let (share, extra) = (n / seeds.len(), n % seeds.len());
        let mut blocks = Vec::with_capacity(n);
        for (i, seed) in seeds.iter().enumerate() {
            let count = share + usize::from(i < extra);
            blocks.extend(std::iter::repeat_n(
                Block {
                    owner: *seed,
                    version: 1,
                    active: false,
                },
                count,
            ));
        }
        Ring {
            cluster: Cluster { id, layout, seeds },
            blocks,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.cluster.layout
    }

    pub fn len(&self) -> u32 {
        self.blocks.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn block(&self, b: u32) -> Block {
        self.blocks[b as usize]
    }

    /// A write by this peer (the owner, or a reclaimer): the new state
    /// must supersede the old.
    pub fn set(&mut self, b: u32, block: Block) {
        debug_assert!(block.supersedes(&self.blocks[b as usize]));
        self.blocks[b as usize] = block;
    }

    /// Writes a new state of block `b` (next version); returns it.
    pub fn bump(&mut self, b: u32, owner: Peer, active: bool) -> Block {
        let block = Block {
            owner,
            version: self.blocks[b as usize].version + 1,
            active,
        };
        self.set(b, block);
        block
    }

    /// Takes what supersedes our state; returns the blocks that changed.
    pub fn merge(&mut self, runs: &[Run]) -> Result<Vec<u32>, IpamError> {
        let n = self.len();
        let mut changed = Vec::new();
        for run in runs {
            let end = run.start.checked_add(run.len).filter(|e| *e <= n);
            let Some(end) = end else {
                return Err(IpamError::Malformed(format!(
                    "blocks {}+{} outside a ring of {n}",
                    run.start, run.len
                )));
            };
            for b in run.start..end {
                if run.block.supersedes(&self.blocks[b as usize]) {
                    self.blocks[b as usize] = run.block;
                    changed.push(b);
                }
            }
        }
        Ok(changed)
    }

    /// The whole ring as runs.
    pub fn runs(&self) -> Vec<Run> {
        self.runs_of(0..self.len())
    }

    /// The given blocks (ascending) as runs.
    pub fn runs_of(&self, blocks: impl IntoIterator<Item = u32>) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for b in blocks {
            let block = self.blocks[b as usize];
            match runs.last_mut() {
                Some(r) if r.start + r.len == b && r.block == block => r.len += 1,
                _ => runs.push(Run {
                    start: b,
                    len: 1,
                    block,
                }),
            }
        }
        runs
    }

    /// A ring received whole: its runs must cover every block once.
    pub fn from_runs(cluster: Cluster, runs: &[Run]) -> Result<Ring, IpamError> {
        let n = cluster.layout.block_count();
        let mut blocks = Vec::with_capacity(n as usize);
        for run in runs {
            if run.start != blocks.len() as u32 || run.len == 0 {
                return Err(IpamError::Malformed("ring runs with gaps".into()));
            }
            if blocks.len() as u64 + u64::from(run.len) > u64::from(n) {
                return Err(IpamError::Malformed("ring runs past its end".into()));
            }
            blocks.extend(std::iter::repeat_n(run.block, run.len as usize));
        }
        if blocks.len() as u32 != n {
            return Err(IpamError::Malformed(format!(
                "ring of {} blocks, layout says {n}",
                blocks.len()
            )));
        }
        Ok(Ring { cluster, blocks })
    }

    pub fn blocks_of(&self, peer: Peer) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).filter(move |b| self.blocks[*b as usize].owner == peer)
    }

    /// Blocks and active blocks per owner.
    pub fn holdings(&self) -> BTreeMap<Peer, Holding> {
        let mut out: BTreeMap<Peer, Holding> = BTreeMap::new();
        for block in &self.blocks {
            let h = out.entry(block.owner).or_default();
            h.blocks += 1;
            h.active += u32::from(block.active);
        }
        out
    }

    /// The peers that own space.
    pub fn members(&self) -> BTreeSet<Peer> {
        self.blocks.iter().map(|b| b.owner).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn layout() -> Layout {
        Layout::new("10.32.0.0/12".parse().unwrap()).unwrap()
    }

    #[test]
    fn division_is_even_contiguous_and_independent_of_seed_order() {
        let r = Ring::divide(7, layout(), &[Peer(3), Peer(1), Peer(2), Peer(1)]);
        let again = Ring::divide(7, layout(), &[Peer(2), Peer(3), Peer(1)]);
        assert_eq!(r, again);
        assert_eq!(r.cluster.seeds, vec![Peer(1), Peer(2), Peer(3)]);
        let h = r.holdings();
        assert_eq!(h[&Peer(1)].blocks, 5462);
        assert_eq!(h[&Peer(2)].blocks, 5461);
        assert_eq!(h[&Peer(3)].blocks, 5461);
        assert_eq!(r.runs().len(), 3, "each share is one run");
    }

    #[test]
    fn merge_takes_higher_versions_only() {
        let mut a = Ring::divide(1, layout(), &[Peer(1), Peer(2)]);
        let mut b = a.clone();
        b.set(
            3,
            Block {
                owner: Peer(1),
                version: 2,
                active: true,
            },
        );
        let changed = a.merge(&b.runs()).unwrap();
        assert_eq!(changed, vec![3]);
        assert_eq!(a, b);
        // Old news changes nothing.
        let old = Ring::divide(1, layout(), &[Peer(1), Peer(2)]);
        assert!(a.merge(&old.runs()).unwrap().is_empty());
        assert!(a.block(3).active);
    }

    #[test]
    fn malformed_runs_are_errors() {
        let mut a = Ring::divide(1, layout(), &[Peer(1)]);
        let bad = Run {
            start: 16380,
            len: 10,
            block: a.block(0),
        };
        assert!(a.merge(&[bad]).is_err());
        assert!(Ring::from_runs(a.cluster.clone(), &[bad]).is_err());
        assert!(Ring::from_runs(a.cluster.clone(), &a.runs()[..0]).is_err());
        assert_eq!(Ring::from_runs(a.cluster.clone(), &a.runs()).unwrap(), a);
    }

    proptest! {
        /// Merging is commutative and idempotent: peers that saw the same
        /// updates in any order hold the same ring.
        #[test]
        fn merge_order_does_not_matter(
            writes in prop::collection::vec((0u32..64, 1u64..5, 1u32..6, any::<bool>()), 1..40),
            split in 0usize..40,
        ) {
            let l = Layout::new("10.0.0.0/22".parse().unwrap()).unwrap();
            let base = Ring::divide(9, l, &[Peer(1), Peer(2)]);
            let updates: Vec<Run> = writes
                .iter()
                .map(|&(b, owner, version, active)| Run {
                    start: b,
                    len: 1,
                    block: Block { owner: Peer(owner), version: version + 1, active },
                })
                .collect();
            let split = split.min(updates.len());
            let mut x = base.clone();
            x.merge(&updates).unwrap();
            let mut y = base.clone();
            y.merge(&updates[split..]).unwrap();
            y.merge(&updates[..split]).unwrap();
            y.merge(&updates).unwrap();
            prop_assert_eq!(&x, &y);
            let mut z = base;
            z.merge(&x.runs()).unwrap();
            prop_assert_eq!(x, z);
        }
    }
}
