//! Heartbeats over vxlan between two routers' kernel paths (the fast
//! datapath, or the vxlan device): the only proof that the kernel really
//! carries frames between two hosts (a firewall may pass TCP and the
//! userspace path's UDP port but not the vxlan port), and, at full size,
//! that it carries the overlay MTU.
//!
//! A heartbeat is an Ethernet frame with a local-experimental EtherType,
//! which no container uses. On the fast datapath it goes between two fixed
//! weft MACs, so no data flow ever matches one; the receiving router's
//! heartbeat flow (those MACs and the EtherType on its vxlan port) hands
//! each to a socket of its own, never queued behind misses (without that
//! flow it arrives as a miss); through the vxlan device it goes to the
//! receiving host's bridge MAC, so its bridge hands it up to the router's
//! socket instead of forwarding it. The receiver reads the EtherType, not
//! the destination.
//!
//! ```text
//! | dst MAC (6) | src MAC (6) | 0x88b5 | kind (1) | seq (u32) | sender (6) | size (u16) | padding |
//! ```

use std::time::{Duration, Instant};

use crate::{
    identity::PeerName,
    liveness::{Liveness, PATH_DEAD_AFTER, PATH_HEARTBEAT_INTERVAL},
};

pub const ETHERTYPE: u16 = 0x88b5;
pub const DST_MAC: [u8; 6] = [0x02, 0x77, 0x65, 0x66, 0x74, 0x01];
pub const SRC_MAC: [u8; 6] = [0x02, 0x77, 0x65, 0x66, 0x74, 0x02];
const KIND_PING: u8 = 1;
const KIND_ACK: u8 = 2;
const MIN_LEN: usize = 14 + 1 + 4 + 6 + 2;

/// A path that never answered is called blocked after this long, rather
/// than left "probing" for ever.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(4);

/// An ack counts only for one of the last this many heartbeats sent (the
/// path is dead after six intervals without one anyway): an ack for a
/// sequence number never sent, or sent long ago, is a replay or a forgery
/// and must not keep a dead path up.
const ACK_WINDOW: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub ack: bool,
    pub seq: u32,
    pub sender: PeerName,
    /// For a ping, its full frame size; for an ack, the size received.
    pub size: u16,
}

impl Heartbeat {
    /// The fast datapath's frame, padded to `size` bytes (at least the
    /// minimum).
    pub fn frame(&self, size: usize) -> Vec<u8> {
        self.frame_to(DST_MAC, size)
    }

    /// The frame to `dst`, padded to `size` bytes (at least the minimum).
    pub fn frame_to(&self, dst: [u8; 6], size: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(size.max(MIN_LEN));
        f.extend_from_slice(&dst);
        f.extend_from_slice(&SRC_MAC);
        f.extend_from_slice(&ETHERTYPE.to_be_bytes());
        f.push(if self.ack { KIND_ACK } else { KIND_PING });
        f.extend_from_slice(&self.seq.to_be_bytes());
        f.extend_from_slice(&self.sender.octets());
        f.extend_from_slice(&self.size.to_be_bytes());
        f.resize(size.max(MIN_LEN), 0);
        f
    }

    /// Reads a heartbeat frame; `None` for any other frame.
    pub fn parse(frame: &[u8]) -> Option<Heartbeat> {
        if frame.len() < MIN_LEN || frame[12..14] != ETHERTYPE.to_be_bytes() {
            return None;
        }
        let mut name = [0u8; 8];
        name[2..].copy_from_slice(&frame[19..25]);
        Some(Heartbeat {
            ack: match frame[14] {
                KIND_PING => false,
                KIND_ACK => true,
                _ => return None,
            },
            seq: u32::from_be_bytes(frame[15..19].try_into().expect("4 bytes")),
            sender: PeerName::from_u64(u64::from_be_bytes(name)),
            size: u16::from_be_bytes([frame[25], frame[26]]),
        })
    }
}

/// What a vxlan path's heartbeats have shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VxlanState {
    /// No answer yet.
    Probing,
    /// Answers come; `full_size`: a full-size frame came back recently.
    Up { full_size: bool },
    /// Answers stopped.
    Down,
}

/// A path is too small for full-size frames once this many full-size
/// heartbeats in a row went unanswered while the small one sent after
/// each came back. Counting those, not time since the last full-size
/// answer, keeps a burst that loses every frame (a busy host, another
/// program briefly taking the datapath's upcalls) from reading as a small
/// MTU: full-size heartbeats go every other interval, so two lost in such
/// a burst left none answered within the dead time.
const FULL_SIZE_LOST_TOO_SMALL: u32 = 3;

/// Heartbeats to one peer over vxlan: alternately small (odd sequence
/// numbers) and full-size (even), one per heartbeat interval.
pub struct VxlanPath {
    full_size: usize,
    seq: u32,
    /// Any answer, small or full-size.
    liveness: Liveness,
    /// The newest full-size heartbeat answered at full size.
    full_answered: Option<u32>,
    /// Full-size heartbeats unanswered while a later small one was
    /// answered, since the last full-size answer.
    full_lost: u32,
    /// The newest full-size heartbeat counted in `full_lost`.
    full_lost_newest: Option<u32>,
}

impl VxlanPath {
    /// `full_size`: the largest frame the overlay carries (its MTU plus
    /// the Ethernet header).
    pub fn new(now: Instant, full_size: usize) -> VxlanPath {
        VxlanPath {
            full_size,
            seq: 0,
            liveness: Liveness::new(now, PATH_HEARTBEAT_INTERVAL, PATH_DEAD_AFTER),
            full_answered: None,
            full_lost: 0,
            full_lost_newest: None,
        }
    }

    /// The heartbeat to send now, if due, and the frame size to pad it to.
    pub fn poll(&mut self, now: Instant) -> Option<(u32, usize)> {
        if !self.liveness.heartbeat_due(now) {
            return None;
        }
        self.liveness.sent(now);
        self.seq = self.seq.wrapping_add(1);
        let size = if self.seq.is_multiple_of(2) {
            self.full_size
        } else {
            MIN_LEN
        };
        Some((self.seq, size))
    }

    /// A heartbeat from the peer arrived in a frame of `len` bytes. An ack
    /// counts for the path; a ping is answered: the ack to send back,
    /// from `local`, says the size it arrived at.
    pub fn on_heartbeat(
        &mut self,
        now: Instant,
        local: PeerName,
        hb: Heartbeat,
        len: usize,
    ) -> Option<Heartbeat> {
        if hb.ack {
            self.acked(now, hb.seq, usize::from(hb.size));
            return None;
        }
        Some(Heartbeat {
            ack: true,
            seq: hb.seq,
            sender: local,
            size: len.min(usize::from(u16::MAX)) as u16,
        })
    }

    /// An ack came back for heartbeat `seq`, a frame of `size` bytes.
    pub fn acked(&mut self, now: Instant, seq: u32, size: usize) {
        if seq == 0 || self.seq.wrapping_sub(seq) >= ACK_WINDOW {
            return;
        }
        self.liveness.received(now);
        if size >= self.full_size {
            if newer(self.full_answered, seq) {
                self.full_answered = Some(seq);
                self.full_lost = 0;
            }
            return;
        }
        // The full-size heartbeat this answer follows (or is: a full-size
        // one that arrived cut short) had its chance and did not come back
        // whole, while this smaller one did.
        let full = seq & !1;
        if full != 0 && newer(self.full_answered, full) && newer(self.full_lost_newest, full) {
            self.full_lost_newest = Some(full);
            self.full_lost += 1;
        }
    }

    pub fn state(&self, now: Instant) -> VxlanState {
        if self.liveness.heard_recently(now) {
            if self.full_lost >= FULL_SIZE_LOST_TOO_SMALL {
                VxlanState::Up { full_size: false }
            } else if self.full_answered.is_some() {
                VxlanState::Up { full_size: true }
            } else {
                // A full-size frame may trail the first small one: until
                // it has had its chances, the path is still being probed.
                VxlanState::Probing
            }
        } else if self.liveness.ever_heard() || self.liveness.age(now) >= GIVE_UP_AFTER {
            VxlanState::Down
        } else {
            VxlanState::Probing
        }
    }

    pub fn deadline(&self) -> Instant {
        self.liveness.next_heartbeat()
    }
}

/// Whether heartbeat `seq` is newer than `than` (none is older than any).
fn newer(than: Option<u32>, seq: u32) -> bool {
    than.is_none_or(|t| seq != t && seq.wrapping_sub(t) < u32::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_other_frames_are_not_heartbeats() {
        let hb = Heartbeat {
            ack: true,
            seq: 9,
            sender: PeerName::from_u64(0x0211_2233_4455),
            size: 1464,
        };
        let f = hb.frame(1464);
        assert_eq!(f.len(), 1464);
        assert_eq!(Heartbeat::parse(&f), Some(hb));
        let to_bridge = hb.frame_to([2, 0, 0, 0, 0, 9], 64);
        assert_eq!(&to_bridge[..6], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(Heartbeat::parse(&to_bridge), Some(hb));
        let mut other = f.clone();
        other[13] = 0;
        assert_eq!(Heartbeat::parse(&other), None);
        assert_eq!(Heartbeat::parse(&f[..10]), None);
    }

    #[test]
    fn states_follow_the_answers() {
        let t0 = Instant::now();
        let mut p = VxlanPath::new(t0, 1464);
        assert_eq!(p.state(t0), VxlanState::Probing);
        assert_eq!(
            VxlanPath::new(t0, 1464).state(t0 + GIVE_UP_AFTER),
            VxlanState::Down,
            "never answered: blocked, not probing for ever"
        );
        let (seq, small) = p.poll(t0).unwrap();
        p.acked(t0, seq, small);
        assert_eq!(
            p.state(t0),
            VxlanState::Probing,
            "the full-size heartbeat has not had its chance yet"
        );
        let (seq, full) = p.poll(t0 + PATH_HEARTBEAT_INTERVAL).unwrap();
        assert_eq!(full, 1464);
        p.acked(t0 + PATH_HEARTBEAT_INTERVAL, seq, full);
        assert_eq!(
            p.state(t0 + PATH_HEARTBEAT_INTERVAL),
            VxlanState::Up { full_size: true }
        );

        // Only small frames come back: too small, once the full-size ones
        // have had time.
        let mut q = VxlanPath::new(t0, 1464);
        for k in 0..8 {
            let at = t0 + PATH_HEARTBEAT_INTERVAL * k;
            let (seq, size) = q.poll(at).unwrap();
            if size < 1464 {
                q.acked(at, seq, size);
            }
        }
        assert_eq!(
            q.state(t0 + PATH_HEARTBEAT_INTERVAL * 7),
            VxlanState::Up { full_size: false }
        );
        assert_eq!(
            p.state(t0 + PATH_HEARTBEAT_INTERVAL + PATH_DEAD_AFTER),
            VxlanState::Down
        );
    }

    #[test]
    fn a_burst_that_loses_every_frame_is_not_a_small_mtu() {
        // Seen in CI: ovs-dpctl took the datapath's upcalls twice, a second
        // each; the full-size heartbeats of both seconds were lost, and the
        // small one after them answered: a window of three seconds with no
        // full-size answer read as a path too small, and the connection
        // left the fast datapath (and its flows) for an instant.
        let t0 = Instant::now();
        let mut p = VxlanPath::new(t0, 1464);
        let mut at = t0;
        let answer = |p: &mut VxlanPath, at: Instant, lost: bool| {
            let (seq, size) = p.poll(at).unwrap();
            if !lost {
                p.acked(at, seq, size);
            }
            size
        };
        for _ in 0..4 {
            answer(&mut p, at, false);
            at += PATH_HEARTBEAT_INTERVAL;
        }
        assert_eq!(p.state(at), VxlanState::Up { full_size: true });
        // Everything lost for two seconds (two full-size heartbeats among
        // them), then a small one answered.
        for _ in 0..4 {
            answer(&mut p, at, true);
            at += PATH_HEARTBEAT_INTERVAL;
        }
        assert_eq!(answer(&mut p, at, false), MIN_LEN);
        at += PATH_HEARTBEAT_INTERVAL;
        assert_eq!(
            p.state(at),
            VxlanState::Up { full_size: true },
            "a burst of loss is not a small MTU"
        );

        // Whereas full-size heartbeats lost each time a small one after
        // them comes back are: three in a row, then a full-size answer
        // again undoes it.
        let mut lost = 0;
        while p.state(at) == (VxlanState::Up { full_size: true }) {
            assert!(
                lost <= FULL_SIZE_LOST_TOO_SMALL,
                "still full-size after {lost} lost"
            );
            let (seq, size) = p.poll(at).unwrap();
            if size == MIN_LEN {
                p.acked(at, seq, size);
            } else {
                lost += 1;
            }
            at += PATH_HEARTBEAT_INTERVAL;
        }
        assert_eq!(p.state(at), VxlanState::Up { full_size: false });
        // The burst's last full-size heartbeat counts: the small one after
        // it came back.
        assert_eq!(lost + 1, FULL_SIZE_LOST_TOO_SMALL);
        // One full-size answer undoes it.
        let (mut seq, mut size) = p.poll(at).unwrap();
        if size == MIN_LEN {
            p.acked(at, seq, size);
            assert_eq!(p.state(at), VxlanState::Up { full_size: false });
            at += PATH_HEARTBEAT_INTERVAL;
            (seq, size) = p.poll(at).unwrap();
        }
        p.acked(at, seq, size);
        assert_eq!(p.state(at), VxlanState::Up { full_size: true });
    }

    #[test]
    fn pings_are_answered_with_their_size_and_acks_count_for_the_path() {
        let t0 = Instant::now();
        let me = PeerName::from_u64(0x0200_0000_0001);
        let them = PeerName::from_u64(0x0200_0000_0002);
        let mut p = VxlanPath::new(t0, 1464);
        let ping = Heartbeat {
            ack: false,
            seq: 7,
            sender: them,
            size: 1464,
        };
        assert_eq!(
            p.on_heartbeat(t0, me, ping, 1464),
            Some(Heartbeat {
                ack: true,
                seq: 7,
                sender: me,
                size: 1464
            })
        );
        assert_eq!(p.state(t0), VxlanState::Probing, "a ping is not an answer");
        let (seq, _) = p.poll(t0).unwrap();
        let ack = Heartbeat {
            ack: true,
            seq,
            ..ping
        };
        assert_eq!(p.on_heartbeat(t0, me, ack, 64), None);
        assert_eq!(p.state(t0), VxlanState::Up { full_size: true });
    }

    #[test]
    fn acks_count_only_for_heartbeats_recently_sent() {
        let t0 = Instant::now();
        let me = PeerName::from_u64(0x0200_0000_0001);
        let ack = |seq| Heartbeat {
            ack: true,
            seq,
            sender: PeerName::from_u64(0x0200_0000_0002),
            size: 1464,
        };
        // Nothing sent yet: no ack can be for us.
        let mut p = VxlanPath::new(t0, 1464);
        p.on_heartbeat(t0, me, ack(1), 1464);
        assert_eq!(p.state(t0), VxlanState::Probing);
        // Ten sent: the newest eight count, older ones, the future and
        // zero do not.
        let mut at = t0;
        for _ in 0..10 {
            at += PATH_HEARTBEAT_INTERVAL;
            p.poll(at).unwrap();
        }
        for seq in [0, 1, 2, 11, u32::MAX] {
            p.on_heartbeat(at, me, ack(seq), 1464);
            assert_eq!(p.state(at), VxlanState::Down, "seq {seq} counted");
        }
        p.on_heartbeat(at, me, ack(3), 1464);
        assert_eq!(p.state(at), VxlanState::Up { full_size: true });
    }
}
