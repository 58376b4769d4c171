//! The userspace overlay's decisions, with no I/O: which router a frame
//! goes to and by which peer, what goes on the wire (sealed or not, whole
//! or in fragments), what reaches the bridge, when heartbeats and probes
//! are due, and when a peer's path changed. The engine reads the TAP, the
//! socket and its mailbox, and hands everything here with the time.
//!
//! The shape is quinn's (`handle_*(now, ..)`, [`Switch::poll_report`],
//! [`Switch::next_timeout`]) with one difference, taken from smoltcp's
//! `Device`: frames and datagrams leave through the caller's [`Wire`] as
//! they are decided instead of waiting in a queue for a `poll`. This is
//! the hot path, and a queue would copy every frame once more.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    io,
    net::SocketAddr,
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arrayvec::ArrayVec;
use weft_crypto::{
    DataKeys, OpenError, Opener, RekeyPolicy, Sealer, datagram::OVERHEAD as SEAL_OVERHEAD,
};

use super::{
    encap::{self, HEADER_LEN, Header, Kind, MAX_HOPS, Routing},
    forwarding::{Outbound, SharedMacs, from_bridge, is_group},
    fragment, icmp,
    offload::{self, Coalescer, VnetHdr},
    packet::macs,
    udp_path::UdpPath,
};
use crate::{
    identity::PeerName, liveness::PATH_DEAD_AFTER, mesh::Routes, netdev::tap::VNET_HDR_LEN,
};

/// Received datagrams opened together at most.
const TOGETHER: usize = 64;
/// The most datagrams one UDP GSO send may carry (the kernel's limit).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes one UDP GSO send may carry: one IPv4 packet's worth.
pub const GSO_MAX_BYTES: usize = 65507;
/// Frames held while no router is reachable, and for how long: long
/// enough to carry a container's first ARP request to the mesh that is
/// coming up, short enough that nothing stale is sent.
const HELD_FRAMES: usize = 64;
const HOLD_FOR: Duration = Duration::from_secs(1);
/// How often MACs not seen for their TTL are forgotten.
const MAC_EXPIRY_EVERY: Duration = Duration::from_secs(60);

/// Where the switch's frames and datagrams go: the TAP and the UDP socket
/// in the engine, a recording in tests.
pub trait Wire {
    /// Sends `datagrams` to `addr`, `size` bytes each but the last, which
    /// may be shorter; returns the bytes sent.
    fn send(&mut self, addr: SocketAddr, datagrams: &[u8], size: usize) -> io::Result<usize>;
    /// Writes a virtio-net header and the frame after it to the bridge.
    fn to_bridge(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// How to reach one peer's data path.
pub struct PeerSpec {
    pub name: PeerName,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// The session id it asked us to put on datagrams for it.
    pub send_session: u32,
    /// The session id we asked it to use; it identifies its datagrams.
    pub recv_session: u32,
    /// Keys to seal with, or none for a cleartext path.
    pub keys: Option<DataKeys>,
}

pub enum UserspaceCommand {
    AddPeer(PeerSpec),
    RemovePeer(PeerName),
    Routes(Arc<Routes>),
    /// The peers the fast datapath serves: our own floods skip them (the
    /// datapath sent them their copy by vxlan).
    Fastdp(BTreeSet<PeerName>),
    /// A frame the fast datapath hands over, from router `origin`: a
    /// broadcast to pass on to the children it cannot reach, or a unicast
    /// it cannot deliver.
    Relay {
        origin: PeerName,
        frame: Vec<u8>,
    },
    /// Ends the engine's thread (the switch itself ignores it).
    Stop,
}

/// A change in a peer's path, for the control plane to act on and show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathReport {
    pub peer: PeerName,
    pub usable: bool,
    /// The largest IP packet known to cross.
    pub path_mtu: Option<u32>,
    pub reason: Option<String>,
}

/// Counters, read by the API.
#[derive(Default, Debug)]
pub struct Counters {
    pub frames_from_bridge: AtomicU64,
    pub frames_to_bridge: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub dropped_no_route: AtomicU64,
    pub dropped_too_big: AtomicU64,
    pub dropped_unauthentic: AtomicU64,
    /// Datagrams that parse but carry a session id no peer has (a peer
    /// that restarted, or someone guessing): dropped.
    pub dropped_unknown_session: AtomicU64,
    /// Datagrams too short or malformed to parse.
    pub dropped_malformed: AtomicU64,
    pub relayed: AtomicU64,
    /// Packets too big for their path cut into fragments that fit.
    pub fragmented: AtomicU64,
    /// Frames held while no router could be reached, sent once one could.
    pub held_released: AtomicU64,
    /// Received datagrams opened in a batch with others of their run.
    pub opened_together: AtomicU64,
}

impl Counters {
    /// Every counter by its name, for `/metrics`.
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("frames_from_bridge", get(&self.frames_from_bridge)),
            ("frames_to_bridge", get(&self.frames_to_bridge)),
            ("datagrams_sent", get(&self.datagrams_sent)),
            ("datagrams_received", get(&self.datagrams_received)),
            ("bytes_sent", get(&self.bytes_sent)),
            ("bytes_received", get(&self.bytes_received)),
            ("dropped_no_route", get(&self.dropped_no_route)),
            ("dropped_too_big", get(&self.dropped_too_big)),
            ("dropped_unauthentic", get(&self.dropped_unauthentic)),
            (
                "dropped_unknown_session",
                get(&self.dropped_unknown_session),
            ),
            ("dropped_malformed", get(&self.dropped_malformed)),
            ("relayed", get(&self.relayed)),
            ("fragmented", get(&self.fragmented)),
            ("held_released", get(&self.held_released)),
            ("opened_together", get(&self.opened_together)),
        ]
        .into_iter()
        .collect()
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// One peer's end of the userspace path.
struct UdpPeer {
    addr: SocketAddr,
    send_session: u32,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    path: UdpPath,
    reported: Option<(bool, Option<u32>)>,
}

impl UdpPeer {
    /// The largest frame that fits a datagram to this peer with `routing`
    /// bytes in front of it.
    fn frame_limit(&self, routing: usize) -> Option<usize> {
        let mtu = self.path.path_mtu()? as usize;
        Some(mtu.saturating_sub(encap::OUTER_IP_UDP_LEN + HEADER_LEN + routing + self.seal_len()))
    }

    fn seal_len(&self) -> usize {
        if self.sealer.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        }
    }
}

/// What to send, before sealing: kind, routing fields, frame.
#[derive(Clone, Copy)]
struct Datagram<'a> {
    kind: Kind,
    routing: Option<Routing>,
    body: &'a [u8],
}

impl Datagram<'_> {
    fn routing_len(&self) -> usize {
        self.routing.map_or(0, |r| {
            Routing::len(if r.destination.is_some() {
                Kind::Forwarded
            } else {
                Kind::Broadcast
            })
        })
    }
}

/// Datagrams for one peer waiting to go out in a single send: all of one
/// size but the last, as UDP GSO needs.
struct Batch {
    hop: Option<PeerName>,
    addr: SocketAddr,
    buf: Vec<u8>,
    size: usize,
    count: usize,
    /// A datagram shorter than the others ended the batch.
    closed: bool,
}

/// The userspace path's learning switch between our bridge and the peers.
pub struct Switch {
    local: PeerName,
    /// The underlay interface's MTU: the most a path can take.
    link_mtu: u32,
    peers: HashMap<PeerName, UdpPeer>,
    sessions: HashMap<u32, PeerName>,
    macs: SharedMacs,
    routes: Arc<Routes>,
    /// Frames from our containers that had no router to go to yet.
    held: VecDeque<(Instant, Vec<u8>)>,
    /// Peers the fast datapath serves.
    fastdp: BTreeSet<PeerName>,
    counters: Arc<Counters>,
    batch: Batch,
    coalescer: Coalescer,
    /// Where a TCP super-frame from the bridge is cut into segments.
    scratch: Vec<u8>,
    reports: VecDeque<PathReport>,
    next_mac_expiry: Instant,
}

impl Switch {
    pub fn new(
        local: PeerName,
        link_mtu: u32,
        macs: SharedMacs,
        counters: Arc<Counters>,
        now: Instant,
    ) -> Switch {
        Switch {
            local,
            link_mtu,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            macs,
            routes: Arc::new(Routes::compute(local, Default::default())),
            held: VecDeque::new(),
            fastdp: BTreeSet::new(),
            counters,
            batch: Batch {
                hop: None,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                buf: Vec::with_capacity(GSO_MAX_BYTES + 65536),
                size: 0,
                count: 0,
                closed: false,
            },
            coalescer: Coalescer::default(),
            scratch: Vec::with_capacity(65536 + VNET_HDR_LEN),
            reports: VecDeque::new(),
            next_mac_expiry: now + MAC_EXPIRY_EVERY,
        }
    }

    /// Applies a command from the control plane.
    pub fn handle_command(&mut self, now: Instant, command: UserspaceCommand, wire: &mut dyn Wire) {
        // Queued datagrams go out under the peers they were queued for.
        self.flush_batch(now, wire);
        match command {
            UserspaceCommand::AddPeer(spec) => {
                let (sealer, opener) = match spec.keys {
                    Some(keys) => (
                        Some(Sealer::new(keys.send, now, RekeyPolicy::default())),
                        Some(Opener::new(keys.recv, RekeyPolicy::default())),
                    ),
                    None => (None, None),
                };
                self.sessions.retain(|_, n| *n != spec.name);
                self.sessions.insert(spec.recv_session, spec.name);
                self.peers.insert(
                    spec.name,
                    UdpPeer {
                        addr: spec.addr,
                        send_session: spec.send_session,
                        sealer,
                        opener,
                        path: UdpPath::new(now, self.link_mtu),
                        reported: None,
                    },
                );
            }
            UserspaceCommand::RemovePeer(name) => {
                self.peers.remove(&name);
                self.sessions.retain(|_, n| *n != name);
                self.macs.lock().forget_router(name);
            }
            UserspaceCommand::Routes(routes) => {
                self.routes = routes;
                self.release_held(now, wire);
            }
            UserspaceCommand::Fastdp(set) => self.fastdp = set,
            UserspaceCommand::Relay { origin, frame } => self.relay(now, origin, &frame, wire),
            UserspaceCommand::Stop => {}
        }
    }

    /// What the TAP gave us: a virtio-net header and a frame, possibly a
    /// TCP super-frame to cut into segments first. What it decides may
    /// wait in a batch until [`Switch::flush`].
    pub fn handle_bridge(&mut self, now: Instant, read: &mut [u8], wire: &mut dyn Wire) {
        let Some(hdr) = VnetHdr::parse(read) else {
            return;
        };
        let frame = &mut read[VNET_HDR_LEN..];
        let Some((src, dst)) = macs(frame) else {
            return;
        };
        bump(&self.counters.frames_from_bridge, 1);
        let decision = from_bridge(&mut self.macs.lock(), self.local, src, dst, now);
        if decision == Outbound::Drop {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = offload::segment(&hdr, frame, &mut scratch, |segment| match decision {
            Outbound::Unicast(dest) => self.unicast(now, self.local, dest, 0, segment, wire),
            _ => self.flood(now, self.local, 0, segment, true, wire),
        });
        self.scratch = scratch;
        if let Err(e) = result {
            tracing::debug!(error = %e, "dropping a frame from the bridge");
        }
    }

    /// The datagrams of one receive from `from`, cut at `size` (UDP GRO
    /// glues a run from one sender): when all are sealed by one peer they
    /// are opened together, faster than one by one and with the same
    /// outcome. What they cause may wait until [`Switch::flush`].
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        size: usize,
        from: SocketAddr,
        wire: &mut dyn Wire,
    ) {
        let size = size.max(1);
        for run in buf.chunks_mut(size * TOGETHER) {
            let opened = self.open_together(now, run, size);
            for (i, datagram) in run.chunks_mut(size).enumerate() {
                let result = opened.as_ref().map(|results| results[i].clone());
                self.on_datagram(now, datagram, from, result, wire);
            }
        }
    }

    /// Heartbeats and probes due, MACs to forget, and path changes to
    /// report; call it by [`Switch::next_timeout`] (earlier is harmless).
    pub fn handle_timeout(&mut self, now: Instant, wire: &mut dyn Wire) {
        self.heartbeats(now, wire);
        self.flush_batch(now, wire);
        if now >= self.next_mac_expiry {
            self.macs.lock().expire(now);
            self.next_mac_expiry = now + MAC_EXPIRY_EVERY;
        }
    }

    /// Sends what waits in batches: datagrams to one peer and TCP segments
    /// glued for the bridge. Call it when a burst of reads is done.
    pub fn flush(&mut self, now: Instant, wire: &mut dyn Wire) {
        self.flush_bridge(wire);
        self.flush_batch(now, wire);
    }

    /// When [`Switch::handle_timeout`] is next due.
    pub fn next_timeout(&self) -> Instant {
        self.peers
            .values()
            .map(|p| p.path.deadline())
            .chain([self.next_mac_expiry])
            .min()
            .expect("MAC expiry is always scheduled")
    }

    /// The next change in a peer's path, once.
    pub fn poll_report(&mut self) -> Option<PathReport> {
        self.reports.pop_front()
    }

    /// Sends `frame` from `origin` towards router `dest`: directly when we
    /// are the origin and have a working path to it, else to the next hop
    /// over working paths.
    fn unicast(
        &mut self,
        now: Instant,
        origin: PeerName,
        dest: PeerName,
        hops: u8,
        frame: &[u8],
        wire: &mut dyn Wire,
    ) {
        let direct =
            origin == self.local && self.peers.get(&dest).is_some_and(|p| p.path.usable(now));
        if direct {
            let out = Datagram {
                kind: Kind::Frame,
                routing: None,
                body: frame,
            };
            return self.send_fitting(now, dest, out, origin, wire);
        }
        let Some(hop) = self.routes.next_hop(dest) else {
            bump(&self.counters.dropped_no_route, 1);
            return;
        };
        let out = Datagram {
            kind: Kind::Forwarded,
            routing: Some(Routing {
                origin,
                destination: Some(dest),
                hops,
            }),
            body: frame,
        };
        self.send_fitting(now, hop, out, origin, wire);
    }

    /// Sends a broadcast of `origin` to our children in its tree; with
    /// `skip_fastdp`, not to those the fast datapath already served.
    fn flood(
        &mut self,
        now: Instant,
        origin: PeerName,
        hops: u8,
        frame: &[u8],
        skip_fastdp: bool,
        wire: &mut dyn Wire,
    ) {
        let children = self.routes.broadcast_children(origin);
        if children.is_empty() && origin == self.local {
            // No router to send it to yet: a container's first ARP request
            // while the mesh is still coming up. Held, not lost (the
            // kernel would ask again only a second later).
            self.hold(now, frame);
        }
        for child in children {
            if skip_fastdp && self.fastdp.contains(&child) {
                continue;
            }
            let out = Datagram {
                kind: Kind::Broadcast,
                routing: Some(Routing {
                    origin,
                    destination: None,
                    hops,
                }),
                body: frame,
            };
            self.send_fitting(now, child, out, origin, wire);
        }
    }

    /// Keeps a frame of ours that had nowhere to go, a little while.
    fn hold(&mut self, now: Instant, frame: &[u8]) {
        if self.held.len() == HELD_FRAMES {
            self.held.pop_front();
        }
        self.held.push_back((now, frame.to_vec()));
    }

    /// The routes changed: the frames held since a moment ago go now
    /// (older ones are stale and dropped).
    fn release_held(&mut self, now: Instant, wire: &mut dyn Wire) {
        // Still nowhere to go: they wait on (flooding them now would hold
        // them again, as if new, and keep stale frames forever).
        if self.routes.broadcast_children(self.local).is_empty() {
            return;
        }
        let held: Vec<(Instant, Vec<u8>)> = self.held.drain(..).collect();
        for (at, frame) in held {
            if now.duration_since(at) <= HOLD_FOR {
                bump(&self.counters.held_released, 1);
                self.flood(now, self.local, 0, &frame, true, wire);
            }
        }
        self.flush_batch(now, wire);
    }

    /// A frame from the fast datapath that only we can move on.
    fn relay(&mut self, now: Instant, origin: PeerName, frame: &[u8], wire: &mut dyn Wire) {
        let Some((_, dst)) = macs(frame) else {
            return;
        };
        let owner = (!is_group(&dst))
            .then(|| self.macs.lock().lookup(&dst, now))
            .flatten();
        match owner {
            Some(owner) if owner != self.local => self.unicast(now, origin, owner, 0, frame, wire),
            _ => self.flood(now, origin, 0, frame, true, wire),
        }
        self.flush_batch(now, wire);
    }

    /// Sends `out` to `hop` if it fits the path. If not, nothing is lost
    /// in silence: a packet that may be fragmented goes in pieces, and a
    /// container of ours whose packet may not hears "fragmentation needed".
    fn send_fitting(
        &mut self,
        now: Instant,
        hop: PeerName,
        out: Datagram,
        origin: PeerName,
        wire: &mut dyn Wire,
    ) {
        // Not measured yet (heartbeats have not come back): send.
        let limit = self
            .peers
            .get(&hop)
            .and_then(|p| p.frame_limit(out.routing_len()));
        let Some(limit) = limit.filter(|l| out.body.len() > *l) else {
            return self.send(now, hop, out, wire);
        };
        if let Some(pieces) = fragment::fragment(out.body, limit) {
            bump(&self.counters.fragmented, 1);
            for piece in &pieces {
                self.send(now, hop, Datagram { body: piece, ..out }, wire);
            }
            return;
        }
        bump(&self.counters.dropped_too_big, 1);
        if origin == self.local {
            let ip_mtu = limit.saturating_sub(encap::ETHERNET_LEN) as u16;
            if let Some(reply) = icmp::frag_needed(out.body, ip_mtu) {
                self.write_bridge(&reply, wire);
            }
        }
    }

    /// Queues one datagram to `hop` in the batch of datagrams for that
    /// peer, to be sealed with the others if the path is encrypted.
    fn send(&mut self, now: Instant, hop: PeerName, out: Datagram, wire: &mut dyn Wire) {
        let Some(peer) = self.peers.get(&hop) else {
            bump(&self.counters.dropped_no_route, 1);
            return;
        };
        let (sealed, addr) = (peer.sealer.is_some(), peer.addr);
        let len = HEADER_LEN + peer.seal_len() + out.routing_len() + out.body.len();
        let b = &self.batch;
        let joins = b.hop == Some(hop)
            && !b.closed
            && len <= b.size
            && b.count < GSO_MAX_SEGMENTS
            && b.buf.len() + len <= GSO_MAX_BYTES;
        if !joins {
            self.flush_batch(now, wire);
            let b = &mut self.batch;
            b.hop = Some(hop);
            b.addr = addr;
            b.size = len;
        }
        let session = self.peers[&hop].send_session;
        let b = &mut self.batch;
        let start = b.buf.len();
        b.buf.resize(start + len, 0);
        let buf = &mut b.buf[start..];
        let header = Header {
            kind: out.kind,
            sealed,
            session,
        };
        buf[..HEADER_LEN].copy_from_slice(&header.emit());
        let mut at = HEADER_LEN
            + if sealed {
                weft_crypto::datagram::HEADER_LEN
            } else {
                0
            };
        if let Some(r) = out.routing {
            at += r.emit(&mut buf[at..]);
        }
        buf[at..at + out.body.len()].copy_from_slice(out.body);
        b.count += 1;
        b.closed = len < b.size;
    }

    /// Seals the queued datagrams if their path is encrypted, all together
    /// (faster than one by one), and sends them: one send for the lot.
    fn flush_batch(&mut self, now: Instant, wire: &mut dyn Wire) {
        let b = &mut self.batch;
        let sealer = b
            .hop
            .and_then(|hop| self.peers.get_mut(&hop)?.sealer.as_mut());
        if b.count > 0
            && let Some(sealer) = sealer
        {
            let datagrams = b.buf.chunks_mut(b.size).map(|datagram| {
                let (aad, packet) = datagram.split_at_mut(HEADER_LEN);
                (&*aad, packet)
            });
            if let Err(e) = sealer.seal_each(now, datagrams) {
                // Cannot happen: each datagram was sized with room for the
                // seal. Sending it unsealed must not happen either.
                tracing::error!(error = %e, "sealing datagrams; dropped");
                b.count = 0;
            }
        }
        if b.count > 0 {
            match wire.send(b.addr, &b.buf, b.size) {
                Ok(n) => {
                    bump(&self.counters.datagrams_sent, b.count as u64);
                    bump(&self.counters.bytes_sent, n as u64);
                }
                Err(e) => tracing::trace!(error = %e, "send failed"),
            }
        }
        b.buf.clear();
        b.count = 0;
        b.hop = None;
        b.closed = false;
    }

    /// Writes what the coalescer holds to the bridge.
    fn flush_bridge(&mut self, wire: &mut dyn Wire) {
        let counters = &self.counters;
        self.coalescer
            .flush(&mut |bytes: &[u8]| to_bridge(wire, counters, bytes));
    }

    /// Writes one frame of ours (an ICMP answer) to the bridge.
    fn write_bridge(&mut self, frame: &[u8], wire: &mut dyn Wire) {
        self.flush_bridge(wire);
        let mut buf = Vec::with_capacity(VNET_HDR_LEN + frame.len());
        buf.extend_from_slice(&VnetHdr::default().emit());
        buf.extend_from_slice(frame);
        to_bridge(wire, &self.counters, &buf);
    }

    /// Opens the datagrams of `buf` together if they are all sealed by one
    /// peer; their results, or None to open them one by one.
    fn open_together(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        size: usize,
    ) -> Option<ArrayVec<Result<Range<usize>, OpenError>, TOGETHER>> {
        let count = buf.len().div_ceil(size);
        if !(2..=TOGETHER).contains(&count) {
            return None;
        }
        let mut session = None;
        for datagram in buf.chunks(size) {
            let header = Header::parse(datagram).ok()?;
            if !header.sealed || *session.get_or_insert(header.session) != header.session {
                return None;
            }
        }
        let sender = self.sessions.get(&session?)?;
        let opener = self.peers.get_mut(sender)?.opener.as_mut()?;
        let mut results: ArrayVec<_, TOGETHER> =
            (0..count).map(|_| Err(OpenError::TooShort)).collect();
        let datagrams = buf.chunks_mut(size).map(|datagram| {
            let (aad, packet) = datagram.split_at_mut(HEADER_LEN);
            (&*aad, packet)
        });
        opener.open_each(now, datagrams, &mut results);
        bump(&self.counters.opened_together, count as u64);
        Some(results)
    }

    /// A datagram from a peer; `opened` is its opening when that was done
    /// already.
    fn on_datagram(
        &mut self,
        now: Instant,
        datagram: &mut [u8],
        from: SocketAddr,
        opened: Option<Result<Range<usize>, OpenError>>,
        wire: &mut dyn Wire,
    ) {
        bump(&self.counters.datagrams_received, 1);
        bump(&self.counters.bytes_received, datagram.len() as u64);
        let Ok(header) = Header::parse(datagram) else {
            bump(&self.counters.dropped_malformed, 1);
            return;
        };
        let known = self
            .sessions
            .get(&header.session)
            .copied()
            .filter(|sender| self.peers.contains_key(sender));
        let Some(sender) = known else {
            bump(&self.counters.dropped_unknown_session, 1);
            return;
        };
        let peer = self.peers.get_mut(&sender).expect("looked up above");
        let len = datagram.len();
        let body = match (&mut peer.opener, header.sealed) {
            (Some(opener), true) => {
                let (aad, packet) = datagram.split_at_mut(HEADER_LEN);
                match opened.unwrap_or_else(|| opener.open(now, aad, packet)) {
                    Ok(range) => (HEADER_LEN + range.start)..(HEADER_LEN + range.end),
                    Err(_) => {
                        bump(&self.counters.dropped_unauthentic, 1);
                        return;
                    }
                }
            }
            (None, false) if from.ip() == peer.addr.ip() => HEADER_LEN..len,
            _ => {
                bump(&self.counters.dropped_unauthentic, 1);
                return;
            }
        };
        peer.path.heard(now);
        if header.sealed {
            // An authentic datagram: the peer may have moved (roaming).
            peer.addr = from;
        }
        let body = &datagram[body];
        match header.kind {
            Kind::Heartbeat => {
                let Some(seq) = encap::parse_heartbeat(body) else {
                    return;
                };
                let received = (len + encap::OUTER_IP_UDP_LEN) as u16;
                let ack = encap::ack_body(seq, received);
                let out = Datagram {
                    kind: Kind::Ack,
                    routing: None,
                    body: &ack,
                };
                self.send(now, sender, out, wire);
            }
            Kind::Ack => {
                if let Some((seq, size)) = encap::parse_ack(body) {
                    peer.path.acked(now, seq, u32::from(size));
                }
            }
            Kind::Frame => {
                let body = body.to_vec();
                self.deliver(now, sender, &body, wire);
            }
            Kind::Forwarded | Kind::Broadcast => {
                let Ok(routing) = Routing::parse(header.kind, body) else {
                    return;
                };
                let frame = body[Routing::len(header.kind)..].to_vec();
                match routing.destination {
                    Some(dest) if dest == self.local => {
                        self.deliver(now, routing.origin, &frame, wire)
                    }
                    Some(dest) if routing.hops < MAX_HOPS => {
                        bump(&self.counters.relayed, 1);
                        self.unicast(now, routing.origin, dest, routing.hops + 1, &frame, wire);
                    }
                    Some(_) => {}
                    None => {
                        self.deliver(now, routing.origin, &frame, wire);
                        if routing.hops < MAX_HOPS {
                            self.flood(now, routing.origin, routing.hops + 1, &frame, false, wire);
                        }
                    }
                }
            }
        }
    }

    /// Passes a frame from router `origin` on to our bridge, through the
    /// coalescer, learning where its source lives.
    fn deliver(&mut self, now: Instant, origin: PeerName, frame: &[u8], wire: &mut dyn Wire) {
        let Some((src, _)) = macs(frame) else { return };
        self.macs.lock().learn(src, origin, now);
        let counters = &self.counters;
        self.coalescer
            .push(frame, &mut |bytes: &[u8]| to_bridge(wire, counters, bytes));
    }

    /// Heartbeats and probes due, and path changes to report.
    fn heartbeats(&mut self, now: Instant, wire: &mut dyn Wire) {
        let names: Vec<PeerName> = self.peers.keys().copied().collect();
        for name in names {
            while let Some(probe) = self.peers.get_mut(&name).and_then(|p| p.path.poll(now)) {
                let overhead = encap::OUTER_IP_UDP_LEN + HEADER_LEN + self.peers[&name].seal_len();
                let len = (probe.size as usize).saturating_sub(overhead);
                let body = encap::heartbeat_body(probe.seq, len);
                let out = Datagram {
                    kind: Kind::Heartbeat,
                    routing: None,
                    body: &body,
                };
                self.send(now, name, out, wire);
            }
            let peer = self.peers.get_mut(&name).expect("listed above");
            let state = (peer.path.usable(now), peer.path.path_mtu());
            if peer.reported != Some(state) {
                peer.reported = Some(state);
                let reason = (!state.0).then(|| {
                    format!(
                        "no UDP heartbeats from the peer for {PATH_DEAD_AFTER:?} (is UDP to {} blocked?)",
                        peer.addr
                    )
                });
                self.reports.push_back(PathReport {
                    peer: name,
                    usable: state.0,
                    path_mtu: state.1,
                    reason,
                });
            }
        }
    }
}

/// Writes to the bridge, counting what went.
fn to_bridge(wire: &mut dyn Wire, counters: &Counters, bytes: &[u8]) {
    match wire.to_bridge(bytes) {
        Ok(()) => bump(&counters.frames_to_bridge, 1),
        Err(e) => tracing::trace!(error = %e, "writing to the TAP device"),
    }
}

#[cfg(test)]
mod tests;
