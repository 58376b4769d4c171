//! TCP segmentation and coalescing in userspace, so the data path moves
//! 64 KiB at a time through the TAP instead of one MTU.
//!
//! With offloads on, the kernel hands the TAP TCP "super-frames" of up to
//! 64 KiB with a virtio-net header saying how to cut them (segment size,
//! where the checksum goes). [`segment`] cuts them into wire-sized TCP
//! segments with real checksums, each sent as its own datagram. On the
//! receiving side [`Coalescer`] glues consecutive segments of one flow back
//! into a super-frame for a single TAP write, marked for the kernel as
//! needing its checksum completed, which for local delivery means never.

use super::packet::{
    ETH_LEN, ETHERTYPE_IPV4, PROTO_TCP, ethertype, fix_ipv4_checksum, fold, pseudo_header_sum, sum,
};

pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
/// The checksum was verified (or the frame came through an authenticated
/// tunnel that carried it intact): the kernel need not check it.
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_ECN: u8 = 0x80;
/// The largest super-frame we build: what the kernel accepts as one IPv4
/// packet, with room for its headers.
pub const MAX_COALESCED: usize = 65535 - 100;
/// TCP flags that end a super-frame: a segment carrying one of them (or
/// missing ACK) is delivered on its own.
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_URG: u8 = 0x20;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr`: little-endian fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("super-frame of a kind we cannot segment (gso type {0:#x})")]
    Unsupported(u8),
    #[error("malformed super-frame")]
    Malformed,
}

/// Where a TCP/IPv4 frame's headers end.
struct TcpIpv4 {
    ip: usize,
    tcp: usize,
    payload: usize,
}

fn tcp_ipv4(frame: &[u8]) -> Option<TcpIpv4> {
    if ethertype(frame)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ETH_LEN;
    let ihl = usize::from(*frame.get(ip)? & 0x0f) * 4;
    if frame[ip] >> 4 != 4 || ihl < 20 || frame.get(ip + 9)? != &PROTO_TCP {
        return None;
    }
    let tcp = ip + ihl;
    let doff = usize::from(*frame.get(tcp + 12)? >> 4) * 4;
    if doff < 20 || frame.len() < tcp + doff {
        return None;
    }
    Some(TcpIpv4 {
        ip,
        tcp,
        payload: tcp + doff,
    })
}

/// Writes the full TCP checksum of a TCP/IPv4 frame.
fn set_tcp_checksum(frame: &mut [u8], at: &TcpIpv4) {
    let src: [u8; 4] = frame[at.ip + 12..at.ip + 16].try_into().expect("4 bytes");
    let dst: [u8; 4] = frame[at.ip + 16..at.ip + 20].try_into().expect("4 bytes");
    let tcp_len = frame.len() - at.tcp;
    frame[at.tcp + 16] = 0;
    frame[at.tcp + 17] = 0;
    let total = sum(
        pseudo_header_sum(src, dst, PROTO_TCP, tcp_len),
        &frame[at.tcp..],
    );
    let c = !fold(total);
    frame[at.tcp + 16..at.tcp + 18].copy_from_slice(&c.to_be_bytes());
}

/// Completes a checksum the kernel left partial (`F_NEEDS_CSUM`): the
/// ones'-complement sum from `csum_start`, written at `csum_offset`.
pub fn complete_checksum(hdr: &VnetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() {
        return Err(OffloadError::Malformed);
    }
    // The field holds the pseudo-header sum the kernel started with.
    let c = !fold(sum(0, &frame[start..]));
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// How many packets `frame` stands for once cut as `hdr` describes, and
/// their IP bytes in all; `None` for what [`segment`] cannot cut.
pub fn segments(hdr: &VnetHdr, frame: &[u8]) -> Option<(u64, usize)> {
    let ip_len = frame.len().checked_sub(ETH_LEN)?;
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => Some((1, ip_len)),
        GSO_TCPV4 => {
            let at = tcp_ipv4(frame)?;
            let mss = usize::from(hdr.gso_size).max(1);
            let count = (frame.len() - at.payload).div_ceil(mss).max(1);
            Some((count as u64, ip_len + (count - 1) * (at.payload - ETH_LEN)))
        }
        _ => None,
    }
}

/// Cuts `frame` as `hdr` describes, calling `emit` with each resulting
/// frame (full checksums included), built in `scratch`.
pub fn segment(
    hdr: &VnetHdr,
    frame: &mut [u8],
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            complete_checksum(hdr, frame)?;
            emit(frame);
            return Ok(());
        }
        GSO_TCPV4 => {}
        other => return Err(OffloadError::Unsupported(other)),
    }
    let at = tcp_ipv4(frame).ok_or(OffloadError::Malformed)?;
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let headers = &frame[..at.payload];
    let payload = &frame[at.payload..];
    let seq = u32::from_be_bytes(frame[at.tcp + 4..at.tcp + 8].try_into().expect("4 bytes"));
    let id = u16::from_be_bytes([frame[at.ip + 4], frame[at.ip + 5]]);
    let flags = frame[at.tcp + 13];
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        scratch.clear();
        scratch.extend_from_slice(headers);
        scratch.extend_from_slice(chunk);
        let ip_len = (scratch.len() - at.ip) as u16;
        scratch[at.ip + 2..at.ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        scratch[at.ip + 4..at.ip + 6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        fix_ipv4_checksum(&mut scratch[at.ip..at.tcp]);
        let seg_seq = seq.wrapping_add((i * mss) as u32);
        scratch[at.tcp + 4..at.tcp + 8].copy_from_slice(&seg_seq.to_be_bytes());
        let mut seg_flags = flags;
        if i + 1 < count {
            seg_flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            seg_flags &= !TCP_CWR;
        }
        scratch[at.tcp + 13] = seg_flags;
        set_tcp_checksum(scratch, &at);
        emit(scratch);
    }
    Ok(())
}

/// The fields that must match for two segments to be glued together.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Flow {
    macs: [u8; 12],
    addrs: [u8; 8],
    ports: [u8; 4],
    tos_ttl: [u8; 2],
    /// Offsets of the TCP header and of the payload.
    tcp: usize,
    header_len: usize,
}

/// Glues consecutive TCP segments of one flow into super-frames.
pub struct Coalescer {
    /// The pending super-frame, virtio header included.
    buf: Vec<u8>,
    flow: Option<Flow>,
    next_seq: u32,
    mss: usize,
    segments: usize,
    /// Whether the last segment was shorter than the segment size (no
    /// more may follow in one super-frame).
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: Vec::with_capacity(MAX_COALESCED + VNET_HDR_LEN),
            flow: None,
            next_seq: 0,
            mss: 0,
            segments: 0,
            closed: false,
        }
    }
}

impl Coalescer {
    /// Takes a frame (checksums verified or trusted); calls `emit` with
    /// anything that must go out before it (virtio header included).
    pub fn push(&mut self, frame: &[u8], emit: &mut impl FnMut(&[u8])) {
        let Some(at) = tcp_ipv4(frame).filter(|at| {
            let flags = frame[at.tcp + 13];
            let ip_len = usize::from(u16::from_be_bytes([frame[at.ip + 2], frame[at.ip + 3]]));
            // Plain data segments only, unfragmented, with DF as Linux sends
            // them, and not padded beyond their IP length.
            flags & (TCP_SYN | TCP_RST | TCP_URG | TCP_FIN | TCP_CWR) == 0
                && flags & TCP_ACK != 0
                && frame[at.ip + 6] & 0x7f == 0x40
                && frame[at.ip + 7] == 0
                && at.ip + ip_len == frame.len()
                && frame.len() > at.payload
        }) else {
            self.flush(emit);
            self.single(frame, emit);
            return;
        };
        let mut flow = Flow {
            macs: [0; 12],
            addrs: [0; 8],
            ports: [0; 4],
            tos_ttl: [frame[at.ip + 1], frame[at.ip + 8]],
            tcp: at.tcp,
            header_len: at.payload,
        };
        flow.macs.copy_from_slice(&frame[..12]);
        flow.addrs.copy_from_slice(&frame[at.ip + 12..at.ip + 20]);
        flow.ports.copy_from_slice(&frame[at.tcp..at.tcp + 4]);
        let seq = u32::from_be_bytes(frame[at.tcp + 4..at.tcp + 8].try_into().expect("4 bytes"));
        let len = frame.len() - at.payload;
        let fits = self.flow == Some(flow)
            && !self.closed
            && seq == self.next_seq
            && len <= self.mss
            && self.buf.len() + len <= MAX_COALESCED + VNET_HDR_LEN
            // The ACK and window move on; other header bytes (options such
            // as timestamps) must be the same, or the merged header lies.
            && self.buf[VNET_HDR_LEN + at.tcp + 20..VNET_HDR_LEN + at.payload] == frame[at.tcp + 20..at.payload];
        if fits {
            self.buf.extend_from_slice(&frame[at.payload..]);
            // The newest ACK number, window and PSH flag stand for all.
            let dst = VNET_HDR_LEN + at.tcp;
            self.buf[dst + 8..dst + 12].copy_from_slice(&frame[at.tcp + 8..at.tcp + 12]);
            self.buf[dst + 13] |= frame[at.tcp + 13] & TCP_PSH;
            self.buf[dst + 14..dst + 16].copy_from_slice(&frame[at.tcp + 14..at.tcp + 16]);
            self.segments += 1;
            self.next_seq = seq.wrapping_add(len as u32);
            self.closed = len < self.mss;
            return;
        }
        self.flush(emit);
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; VNET_HDR_LEN]);
        self.buf.extend_from_slice(frame);
        self.flow = Some(flow);
        self.next_seq = seq.wrapping_add(len as u32);
        self.mss = len;
        self.segments = 1;
        self.closed = false;
    }

    /// Sends out the pending super-frame, if any.
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        let Some(flow) = self.flow.take() else { return };
        let frame = &mut self.buf[VNET_HDR_LEN..];
        let at = TcpIpv4 {
            ip: ETH_LEN,
            tcp: flow.tcp,
            payload: flow.header_len,
        };
        let ip_len = (frame.len() - at.ip) as u16;
        frame[at.ip + 2..at.ip + 4].copy_from_slice(&ip_len.to_be_bytes());
        fix_ipv4_checksum(&mut frame[at.ip..at.tcp]);
        let hdr = if self.segments == 1 {
            VnetHdr {
                flags: F_DATA_VALID,
                ..VnetHdr::default()
            }
        } else {
            // A partial checksum: the pseudo-header sum, to be completed
            // by whoever needs it complete.
            let src: [u8; 4] = frame[at.ip + 12..at.ip + 16].try_into().expect("4 bytes");
            let dst: [u8; 4] = frame[at.ip + 16..at.ip + 20].try_into().expect("4 bytes");
            let partial = fold(pseudo_header_sum(src, dst, PROTO_TCP, frame.len() - at.tcp));
            frame[at.tcp + 16..at.tcp + 18].copy_from_slice(&partial.to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: at.payload as u16,
                gso_size: self.mss as u16,
                csum_start: at.tcp as u16,
                csum_offset: 16,
            }
        };
        self.buf[..VNET_HDR_LEN].copy_from_slice(&hdr.emit());
        emit(&self.buf);
        self.buf.clear();
    }

    fn single(&mut self, frame: &[u8], emit: &mut impl FnMut(&[u8])) {
        self.buf.clear();
        self.buf.extend_from_slice(&VnetHdr::default().emit());
        self.buf.extend_from_slice(frame);
        emit(&self.buf);
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userspace::packet::{checksum, fold, sum, testing::ipv4_frame};

    /// A TCP/IPv4 frame with `payload`, sequence `seq`, flags, and a
    /// timestamp option so headers are 32 bytes as Linux sends them.
    fn tcp_frame(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut tcp = vec![0u8; 32];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5001u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&99u32.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&500u16.to_be_bytes());
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        tcp.extend_from_slice(payload);
        let mut f = ipv4_frame(6, 7, true, &tcp);
        let at = tcp_ipv4(&f).unwrap();
        set_tcp_checksum(&mut f, &at);
        f
    }

    fn tcp_checksum_ok(frame: &[u8]) -> bool {
        let at = tcp_ipv4(frame).unwrap();
        let src: [u8; 4] = frame[at.ip + 12..at.ip + 16].try_into().unwrap();
        let dst: [u8; 4] = frame[at.ip + 16..at.ip + 20].try_into().unwrap();
        fold(sum(
            pseudo_header_sum(src, dst, 6, frame.len() - at.tcp),
            &frame[at.tcp..],
        )) == 0xffff
            && checksum(&frame[at.ip..at.tcp]) == 0
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// A super-frame as the kernel hands it: the data, a partial checksum.
    fn super_frame(data: &[u8], mss: u16, flags: u8) -> (VnetHdr, Vec<u8>) {
        let mut f = tcp_frame(1000, flags, data);
        let at = tcp_ipv4(&f).unwrap();
        let partial = fold(pseudo_header_sum(
            [10, 32, 0, 1],
            [10, 32, 0, 2],
            6,
            f.len() - at.tcp,
        ));
        f[at.tcp + 16..at.tcp + 18].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: at.payload as u16,
            gso_size: mss,
            csum_start: at.tcp as u16,
            csum_offset: 16,
        };
        (hdr, f)
    }

    #[test]
    fn headers_round_trip() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1385,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.emit()), Some(h));
    }

    #[test]
    fn segments_carry_the_data_in_order_with_valid_checksums() {
        let data = payload(10_000);
        let (hdr, mut f) = super_frame(&data, 1385, TCP_ACK | TCP_PSH);
        let mut scratch = Vec::new();
        let mut segments = Vec::new();
        segment(&hdr, &mut f, &mut scratch, |s| segments.push(s.to_vec())).unwrap();
        assert_eq!(segments.len(), 10_000usize.div_ceil(1385));
        let mut joined = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            assert!(tcp_checksum_ok(s), "segment {i} checksum");
            let at = tcp_ipv4(s).unwrap();
            let seq = u32::from_be_bytes(s[at.tcp + 4..at.tcp + 8].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1385) as u32);
            let psh = s[at.tcp + 13] & TCP_PSH != 0;
            assert_eq!(psh, i + 1 == segments.len(), "PSH only on the last");
            assert!(s.len() - at.payload <= 1385);
            joined.extend_from_slice(&s[at.payload..]);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn a_super_frame_counts_as_the_segments_it_is_cut_into() {
        let (hdr, mut f) = super_frame(&payload(10_000), 1385, TCP_ACK);
        let counted = segments(&hdr, &f);
        let mut cut = (0u64, 0usize);
        segment(&hdr, &mut f, &mut Vec::new(), |s| {
            cut.0 += 1;
            cut.1 += s.len() - ETH_LEN;
        })
        .unwrap();
        assert_eq!(counted, Some(cut));
        let lone = VnetHdr {
            gso_type: GSO_NONE,
            ..hdr
        };
        assert_eq!(segments(&lone, &f), Some((1, f.len() - ETH_LEN)));
        let v6 = VnetHdr { gso_type: 4, ..hdr };
        assert_eq!(segments(&v6, &f), None, "what segment cannot cut");
    }

    #[test]
    fn coalescing_undoes_segmentation() {
        let data = payload(20_000);
        let (hdr, mut f) = super_frame(&data, 1385, TCP_ACK | TCP_PSH);
        let mut segments = Vec::new();
        segment(&hdr, &mut f, &mut Vec::new(), |s| segments.push(s.to_vec())).unwrap();
        let mut out = Vec::new();
        let mut c = Coalescer::default();
        for s in &segments {
            c.push(s, &mut |b: &[u8]| out.push(b.to_vec()));
        }
        c.flush(&mut |b: &[u8]| out.push(b.to_vec()));
        assert_eq!(out.len(), 1, "one super-frame");
        let hdr = VnetHdr::parse(&out[0]).unwrap();
        assert_eq!(
            (hdr.gso_type, hdr.gso_size, hdr.flags),
            (GSO_TCPV4, 1385, F_NEEDS_CSUM)
        );
        let mut frame = out[0][VNET_HDR_LEN..].to_vec();
        let at = tcp_ipv4(&frame).unwrap();
        assert_eq!(&frame[at.payload..], &data[..]);
        assert_eq!(checksum(&frame[at.ip..at.tcp]), 0, "IP header checksum");
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[16], frame[17]])),
            frame.len() - ETH_LEN
        );
        complete_checksum(&hdr, &mut frame).unwrap();
        assert!(
            tcp_checksum_ok(&frame),
            "the partial checksum completes to a valid one"
        );
        assert!(frame[at.tcp + 13] & TCP_PSH != 0);
    }

    #[test]
    fn gaps_other_flows_and_control_segments_split_super_frames() {
        let a = tcp_frame(1000, TCP_ACK, &payload(100));
        let b = tcp_frame(1100, TCP_ACK, &payload(100));
        let gap = tcp_frame(1300, TCP_ACK, &payload(100));
        let fin = tcp_frame(1400, TCP_ACK | TCP_FIN, &payload(100));
        let mut other = tcp_frame(1400, TCP_ACK, &payload(100));
        other[ETH_LEN + 20 + 1] ^= 1; // another port
        let mut out = Vec::new();
        let mut c = Coalescer::default();
        for f in [&a, &b, &gap, &fin, &other] {
            c.push(f, &mut |x: &[u8]| out.push(x.to_vec()));
        }
        c.flush(&mut |x: &[u8]| out.push(x.to_vec()));
        let sizes: Vec<usize> = out.iter().map(|o| o.len() - VNET_HDR_LEN).collect();
        assert_eq!(
            sizes,
            vec![a.len() + 100, gap.len(), fin.len(), other.len()]
        );
        let single = VnetHdr::parse(&out[1]).unwrap();
        assert_eq!(single.gso_type, GSO_NONE, "a lone segment goes as it is");
    }

    #[test]
    fn partial_checksums_of_single_frames_are_completed() {
        let mut f = tcp_frame(5, TCP_ACK, &payload(333));
        let at = tcp_ipv4(&f).unwrap();
        let partial = fold(pseudo_header_sum(
            [10, 32, 0, 1],
            [10, 32, 0, 2],
            6,
            f.len() - at.tcp,
        ));
        f[at.tcp + 16..at.tcp + 18].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: at.tcp as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let mut out = Vec::new();
        segment(&hdr, &mut f, &mut Vec::new(), |s| out.push(s.to_vec())).unwrap();
        assert!(tcp_checksum_ok(&out[0]));
    }

    #[test]
    fn malformed_super_frames_are_errors() {
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 100,
            ..VnetHdr::default()
        };
        assert_eq!(
            segment(&hdr, &mut [0u8; 20], &mut Vec::new(), |_| {}),
            Err(OffloadError::Malformed)
        );
        let udp = VnetHdr { gso_type: 5, ..hdr };
        assert_eq!(
            segment(&udp, &mut [0u8; 80], &mut Vec::new(), |_| {}),
            Err(OffloadError::Unsupported(5))
        );
    }
}
