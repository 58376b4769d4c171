//! IPv4 fragmentation of a container's packet that is too big for the
//! path to its destination and may be fragmented (no DF): it is delivered
//! in pieces, which the destination's kernel puts back together, instead of
//! vanishing. (A packet with DF gets "fragmentation needed" instead, see
//! [`super::icmp`].) Pure.

use super::packet::{ETH_LEN, Ipv4, fix_ipv4_checksum};

/// The pieces of `frame` (Ethernet and IPv4), each at most `max_frame`
/// bytes; `None` when it cannot be cut (not IPv4, DF set, a header that
/// leaves no room, a length that does not add up).
pub fn fragment(frame: &[u8], max_frame: usize) -> Option<Vec<Vec<u8>>> {
    let ip = Ipv4::of_frame(frame)?;
    if ip.dont_fragment() {
        return None;
    }
    let header_len = ip.header_len();
    let total = ip.total_len();
    if total < header_len || ETH_LEN + total > frame.len() {
        return None;
    }
    let header = &ip.bytes[..header_len];
    let payload = &ip.bytes[header_len..total];
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let more_after = flags_offset & 0x2000 != 0;
    let first_offset = usize::from(flags_offset & 0x1fff) * 8;
    // Later pieces carry the basic header only: options that must be
    // copied into every fragment are rare enough that a plain header is
    // the safer guess than copying ones that must not be.
    let room = |hlen: usize| max_frame.saturating_sub(ETH_LEN + hlen) / 8 * 8;
    if room(header_len) == 0 || room(20) == 0 {
        return None;
    }
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let hlen = if at == 0 { header_len } else { 20 };
        let take = room(hlen).min(payload.len() - at);
        let last = at + take == payload.len();
        let mut piece = Vec::with_capacity(ETH_LEN + hlen + take);
        piece.extend_from_slice(&frame[..ETH_LEN]);
        piece.extend_from_slice(&header[..hlen]);
        let h = &mut piece[ETH_LEN..ETH_LEN + hlen];
        h[0] = 0x40 | (hlen / 4) as u8;
        h[2..4].copy_from_slice(&((hlen + take) as u16).to_be_bytes());
        let offset = (first_offset + at) / 8;
        let more = !last || more_after;
        let field = (offset as u16 & 0x1fff) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&field.to_be_bytes());
        fix_ipv4_checksum(h);
        piece.extend_from_slice(&payload[at..at + take]);
        pieces.push(piece);
        at += take;
    }
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userspace::packet::{checksum, testing::ipv4_frame};

    fn udp_frame(payload: usize, df: bool) -> Vec<u8> {
        let mut udp = vec![0x30, 0x39, 0x30, 0x39];
        udp.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend((0..payload).map(|i| i as u8));
        ipv4_frame(17, 0x1234, df, &udp)
    }

    /// Puts pieces back together as a receiving kernel would.
    fn reassemble(pieces: &[Vec<u8>]) -> Vec<u8> {
        let mut data = Vec::new();
        for p in pieces {
            let ip = Ipv4::of_frame(p).unwrap();
            let field = u16::from_be_bytes([ip.bytes[6], ip.bytes[7]]);
            assert_eq!(
                usize::from(field & 0x1fff) * 8,
                data.len(),
                "in order, no gap"
            );
            assert_eq!(checksum(&ip.bytes[..ip.header_len()]), 0, "header checksum");
            assert_eq!(&ip.bytes[4..6], &[0x12, 0x34], "the same id");
            data.extend_from_slice(&ip.bytes[ip.header_len()..ip.total_len()]);
        }
        data
    }

    #[test]
    fn a_packet_without_df_is_cut_to_fit_and_adds_back_up() {
        let frame = udp_frame(1400, false);
        let pieces = fragment(&frame, 14 + 1300).unwrap();
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= 14 + 1300));
        let first = Ipv4::of_frame(&pieces[0]).unwrap();
        assert_eq!(first.bytes[6] & 0x20, 0x20, "more fragments");
        let last = Ipv4::of_frame(&pieces[1]).unwrap();
        assert_eq!(last.bytes[6] & 0x20, 0, "the last");
        assert_eq!(reassemble(&pieces), frame[14 + 20..].to_vec());
        // Tiny paths, many pieces, each a multiple of 8 but the last.
        let pieces = fragment(&frame, 14 + 68).unwrap();
        assert_eq!(reassemble(&pieces), frame[14 + 20..].to_vec());
        for p in &pieces[..pieces.len() - 1] {
            assert_eq!((Ipv4::of_frame(p).unwrap().total_len() - 20) % 8, 0);
        }
    }

    #[test]
    fn df_and_what_is_not_ipv4_are_not_cut() {
        assert_eq!(fragment(&udp_frame(1400, true), 1314), None);
        let mut arp = udp_frame(100, false);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(fragment(&arp, 64), None);
        assert_eq!(
            fragment(&udp_frame(100, false), 14 + 20 + 7),
            None,
            "no room"
        );
    }
}
