//! How the address range is cut into blocks, the unit of ownership.
//!
//! Small blocks (64 addresses in the default /12) mean a peer that dies
//! strands little space, and handing space to a newcomer is a matter of
//! giving it a few blocks; at most [`MAX_BLOCKS`] of them keeps the ring
//! small enough to gossip whole.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::IpamError;

pub const MAX_BLOCKS: u32 = 16384;
/// Blocks hold at least 16 addresses (unless the range is smaller).
pub const MIN_BLOCK_BITS: u8 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub range: Ipv4Net,
    /// log2 of the addresses per block.
    pub block_bits: u8,
}

impl Layout {
    /// The blocks of `range`, which must hold at least 4 addresses.
    pub fn new(range: Ipv4Net) -> Result<Layout, IpamError> {
        let range = range.trunc();
        let size_bits = 32 - range.prefix_len();
        if size_bits < 2 {
            return Err(IpamError::RangeTooSmall(range));
        }
        let for_count = size_bits.saturating_sub(MAX_BLOCKS.trailing_zeros() as u8);
        let block_bits = for_count.max(MIN_BLOCK_BITS.min(size_bits));
        Ok(Layout { range, block_bits })
    }

    fn size_bits(&self) -> u8 {
        32 - self.range.prefix_len()
    }

    pub fn block_count(&self) -> u32 {
        1 << (self.size_bits() - self.block_bits)
    }

    pub fn block_size(&self) -> u32 {
        1 << self.block_bits
    }

    fn base(&self) -> u32 {
        u32::from(self.range.network())
    }

    /// The block holding `addr`, if the range does.
    pub fn block_of(&self, addr: Ipv4Addr) -> Option<u32> {
        let a = u32::from(addr);
        self.range
            .contains(&addr)
            .then(|| (a - self.base()) >> self.block_bits)
    }

    /// The first address of block `b`, as a number.
    pub fn block_start(&self, b: u32) -> u32 {
        self.base() + (b << self.block_bits)
    }

    /// The blocks that overlap `subnet`, as a half-open range of indices.
    pub fn blocks_in(&self, subnet: Ipv4Net) -> std::ops::Range<u32> {
        let (first, last) = host_range(subnet);
        match (
            self.block_of(Ipv4Addr::from(first)),
            self.block_of(Ipv4Addr::from(last)),
        ) {
            (Some(a), Some(b)) => a..b + 1,
            _ => 0..0,
        }
    }

    /// Whether `subnet` can be allocated from: inside the range, and at
    /// least 4 addresses (a network, a broadcast and two to hand out).
    pub fn check_subnet(&self, subnet: Ipv4Net) -> Result<(), IpamError> {
        let subnet = subnet.trunc();
        if !self.range.contains(&subnet) {
            return Err(IpamError::SubnetOutside {
                subnet,
                range: self.range,
            });
        }
        if subnet.prefix_len() > 30 {
            return Err(IpamError::SubnetTooSmall(subnet));
        }
        Ok(())
    }
}

/// The addresses of `subnet` that may be handed out: all but its network
/// and broadcast addresses, as numbers (inclusive).
pub fn host_range(subnet: Ipv4Net) -> (u32, u32) {
    let subnet = subnet.trunc();
    let first = u32::from(subnet.network());
    let last = u32::from(subnet.broadcast());
    if subnet.prefix_len() >= 31 {
        (first, last)
    } else {
        (first + 1, last - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_range_has_16384_blocks_of_64() {
        let l = Layout::new(net("10.32.0.0/12")).unwrap();
        assert_eq!((l.block_count(), l.block_size()), (16384, 64));
        assert_eq!(l.block_of("10.32.0.63".parse().unwrap()), Some(0));
        assert_eq!(l.block_of("10.32.0.64".parse().unwrap()), Some(1));
        assert_eq!(l.block_of("10.48.0.0".parse().unwrap()), None);
        assert_eq!(
            Ipv4Addr::from(l.block_start(16383)),
            "10.47.255.192".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn small_ranges_keep_blocks_of_16_or_one_block() {
        let l = Layout::new(net("10.0.0.0/24")).unwrap();
        assert_eq!((l.block_count(), l.block_size()), (16, 16));
        let l = Layout::new(net("10.0.0.0/29")).unwrap();
        assert_eq!((l.block_count(), l.block_size()), (1, 8));
        assert!(Layout::new(net("10.0.0.0/31")).is_err());
        // A huge range still has at most MAX_BLOCKS blocks.
        let l = Layout::new(net("10.0.0.0/8")).unwrap();
        assert_eq!(l.block_count(), MAX_BLOCKS);
    }

    #[test]
    fn subnets_cover_their_blocks_without_network_and_broadcast() {
        let l = Layout::new(net("10.32.0.0/12")).unwrap();
        assert_eq!(l.blocks_in(net("10.32.0.0/12")), 0..16384);
        assert_eq!(l.blocks_in(net("10.32.1.0/24")), 4..8);
        assert_eq!(
            host_range(net("10.32.1.0/24")),
            (
                u32::from(Ipv4Addr::new(10, 32, 1, 1)),
                u32::from(Ipv4Addr::new(10, 32, 1, 254))
            )
        );
        assert!(l.check_subnet(net("10.32.1.0/24")).is_ok());
        assert!(l.check_subnet(net("10.99.0.0/24")).is_err());
        assert!(l.check_subnet(net("10.32.0.0/31")).is_err());
    }
}
