//! Just enough of Ethernet, IPv4 and TCP to segment, coalesce and answer
//! frames: field offsets and the Internet checksum.

pub const ETH_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;

pub fn ethertype(frame: &[u8]) -> Option<u16> {
    frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

pub fn macs(frame: &[u8]) -> Option<([u8; 6], [u8; 6])> {
    if frame.len() < ETH_LEN {
        return None;
    }
    let dst = frame[0..6].try_into().expect("6 bytes");
    let src = frame[6..12].try_into().expect("6 bytes");
    Some((src, dst))
}

/// A view of an IPv4 header inside a frame.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// The IPv4 header of an Ethernet frame, if it has a sane one.
    pub fn of_frame(frame: &'a [u8]) -> Option<Ipv4<'a>> {
        if ethertype(frame)? != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = &frame[ETH_LEN..];
        let ihl = usize::from(*ip.first()? & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
            return None;
        }
        Some(Ipv4 { bytes: ip })
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.bytes[0] & 0x0f) * 4
    }

    pub fn total_len(&self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[2], self.bytes[3]]))
    }

    pub fn dont_fragment(&self) -> bool {
        self.bytes[6] & 0x40 != 0
    }

    pub fn protocol(&self) -> u8 {
        self.bytes[9]
    }

    pub fn src(&self) -> [u8; 4] {
        self.bytes[12..16].try_into().expect("4 bytes")
    }

    pub fn dst(&self) -> [u8; 4] {
        self.bytes[16..20].try_into().expect("4 bytes")
    }
}

/// Adds `data` to a running ones'-complement sum (as 16-bit big-endian
/// words, `data` starting on an even offset of the checksummed range).
/// Sums 32-bit words into 64 bits, which is the same sum folded later and
/// four times fewer additions than 16-bit words.
pub fn sum(acc: u64, data: &[u8]) -> u64 {
    let mut acc = acc;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for c in &mut pairs {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits (not inverted).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Sets an IPv4 header's checksum field.
pub fn fix_ipv4_checksum(ip: &mut [u8]) {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[10] = 0;
    ip[11] = 0;
    let c = checksum(&ip[..ihl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Sum of the TCP/UDP pseudo-header for IPv4.
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u64 {
    let mut acc = sum(0, &src);
    acc = sum(acc, &dst);
    acc + u64::from(proto) + len as u64
}

/// Frames for the userspace path's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::fix_ipv4_checksum;

    /// An Ethernet frame from 02:00:00:00:00:01 to 02:00:00:00:00:02 with
    /// an IPv4 packet from 10.32.0.1 to 10.32.0.2: `protocol`, IP id `id`,
    /// DF if `df`, TTL 64, `l4` after the header, the header's checksum
    /// right.
    pub(crate) fn ipv4_frame(protocol: u8, id: u16, df: bool, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6] = if df { 0x40 } else { 0 };
        ip[8] = 64;
        ip[9] = protocol;
        ip[12..16].copy_from_slice(&[10, 32, 0, 1]);
        ip[16..20].copy_from_slice(&[10, 32, 0, 2]);
        fix_ipv4_checksum(&mut ip);
        f.extend_from_slice(&ip);
        f.extend_from_slice(l4);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_sums_equal_word_sums() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 37 % 251) as u8).collect();
        let mut narrow = 0u64;
        for c in data.chunks(2) {
            narrow += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        assert_eq!(fold(sum(0, &data)), fold(narrow));
    }

    #[test]
    fn checksum_matches_a_known_header() {
        // An IPv4 header with checksum 0xb861 (a common textbook example).
        let mut ip = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        fix_ipv4_checksum(&mut ip);
        assert_eq!(&ip[10..12], &[0xb8, 0x61]);
        assert_eq!(checksum(&ip), 0, "a header with its checksum sums to zero");
    }
}
