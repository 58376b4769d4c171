//! "Fragmentation needed" for a container whose packet is too big for the
//! path to its destination: its TCP then lowers the segment size for that
//! destination, so a smaller-MTU hop never black-holes a connection.

use super::packet::{ETH_LEN, Ipv4, PROTO_ICMP, checksum, fix_ipv4_checksum};

/// Linux ignores a next-hop MTU below this (`min_pmtu`).
pub const MIN_REPORTED_MTU: u16 = 552;

/// The answer to `frame` (an IPv4 packet with DF set) for a path that takes
/// IP packets of at most `mtu` bytes; `None` if the frame does not call for
/// one (not IPv4, no DF, or itself an ICMP error, which is never answered
/// with another). A ping is answered like any other packet.
pub fn frag_needed(frame: &[u8], mtu: u16) -> Option<Vec<u8>> {
    let ip = Ipv4::of_frame(frame)?;
    if !ip.dont_fragment() {
        return None;
    }
    if ip.protocol() == PROTO_ICMP {
        let icmp_type = *ip.bytes.get(ip.header_len())?;
        // Destination unreachable, source quench, redirect, time
        // exceeded, parameter problem.
        if matches!(icmp_type, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
    }
    // The offending header and 8 bytes of what follows, as RFC 792 asks.
    let quoted = &ip.bytes[..(ip.header_len() + 8).min(ip.bytes.len())];
    let mut out = Vec::with_capacity(ETH_LEN + 20 + 8 + quoted.len());
    out.extend_from_slice(&frame[6..12]); // back to the sender
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + quoted.len()) as u16;
    let mut header = [0u8; 20];
    header[0] = 0x45;
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header[6] = 0x40;
    header[8] = 64;
    header[9] = PROTO_ICMP;
    // From the destination the packet was meant for: Linux matches the
    // quoted header, not our address, and this one is on-link for it.
    header[12..16].copy_from_slice(&ip.dst());
    header[16..20].copy_from_slice(&ip.src());
    fix_ipv4_checksum(&mut header);
    out.extend_from_slice(&header);
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.max(MIN_REPORTED_MTU).to_be_bytes());
    icmp.extend_from_slice(quoted);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&icmp);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userspace::packet::{checksum, testing::ipv4_frame};

    fn tcp_frame(df: bool) -> Vec<u8> {
        ipv4_frame(6, 0, df, &[0xab; 1400])
    }

    #[test]
    fn answers_a_df_packet_with_a_valid_icmp() {
        let frame = tcp_frame(true);
        let reply = frag_needed(&frame, 1300).unwrap();
        assert_eq!(&reply[0..6], &frame[6..12], "to the sender's MAC");
        let ip = Ipv4::of_frame(&reply).unwrap();
        assert_eq!((ip.src(), ip.dst()), ([10, 32, 0, 2], [10, 32, 0, 1]));
        assert_eq!(checksum(&ip.bytes[..20]), 0);
        let icmp = &ip.bytes[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1300);
        assert_eq!(checksum(icmp), 0);
        assert_eq!(&icmp[8..28], &frame[14..34], "quotes the original header");
        assert_eq!(ip.total_len(), reply.len() - 14);
    }

    #[test]
    fn only_when_needed() {
        assert!(
            frag_needed(&tcp_frame(false), 1300).is_none(),
            "no DF: no ICMP"
        );
        assert!(frag_needed(&[0u8; 10], 1300).is_none());
        let reply = frag_needed(&tcp_frame(true), 100).unwrap();
        let icmp = &reply[34..];
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), MIN_REPORTED_MTU);
    }
}
