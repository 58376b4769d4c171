//! The userspace data path at work: one thread per router that moves
//! frames between the bridge's TAP port and UDP datagrams to peers.
//!
//! Everything it decides comes from the pure parts: [`forwarding`] says
//! where a frame goes, the data routes say how to get there, [`udp_path`]
//! says whether a peer is reachable and how large a datagram may be,
//! [`encap`] and `weft_crypto` say what goes on the wire.

use std::{
    collections::HashMap,
    io,
    net::{SocketAddr, UdpSocket},
    ops::Range,
    os::fd::{AsRawFd, OwnedFd},
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
    forwarding::{MacTable, Outbound, from_bridge, from_router},
    fragment, icmp,
    offload::{self, Coalescer, VnetHdr},
    packet::macs,
    socket,
    udp_path::UdpPath,
};
use crate::{
    identity::PeerName,
    liveness::PATH_DEAD_AFTER,
    mesh::Routes,
    netdev::tap::VNET_HDR_LEN,
    worker::{self, Mailbox, Worker},
};

/// Room for the largest frame a TAP hands over, with its virtio header.
const BUF_LEN: usize = 65536 + VNET_HDR_LEN;
/// Frames or datagrams handled per wake-up before looking at the others,
/// so neither direction starves the other.
const BATCH: usize = 64;
/// Received datagrams opened together at most.
const TOGETHER: usize = 64;
/// The most datagrams one UDP GSO send may carry (the kernel's limit).
const GSO_MAX_SEGMENTS: usize = 64;
/// The most bytes one UDP GSO send may carry: one IPv4 packet's worth.
const GSO_MAX_BYTES: usize = 65507;

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
    Fastdp(std::collections::BTreeSet<PeerName>),
    /// A frame the fast datapath hands over, from router `origin`: a
    /// broadcast to pass on to the children it cannot reach, or a unicast
    /// it cannot deliver.
    Relay {
        origin: PeerName,
        frame: Vec<u8>,
    },
    Stop,
}

/// A way to give the data path commands, from any thread.
pub type Sender = worker::Sender<UserspaceCommand>;

/// A change in a peer's path, for the control plane to act on and show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathReport {
    pub peer: PeerName,
    pub usable: bool,
    /// The largest IP packet known to cross.
    pub path_mtu: Option<u32>,
    pub reason: Option<String>,
}

/// Frames held while no router is reachable, and for how long: long
/// enough to carry a container's first ARP request to the mesh that is
/// coming up, short enough that nothing stale is sent.
const HELD_FRAMES: usize = 64;
const HOLD_FOR: Duration = Duration::from_secs(1);

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

pub struct UserspaceConfig {
    pub local: PeerName,
    pub tap: OwnedFd,
    pub udp: UdpSocket,
    /// The underlay interface's MTU: the most a path can take.
    pub link_mtu: u32,
}

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
        let seal = if self.sealer.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        };
        let mtu = self.path.path_mtu()? as usize;
        Some(mtu.saturating_sub(encap::OUTER_IP_UDP_LEN + HEADER_LEN + routing + seal))
    }
}

/// Handle on the running data path; dropping it stops the thread.
pub struct DataPlane {
    worker: Worker<UserspaceCommand>,
    pub counters: Arc<Counters>,
}

impl DataPlane {
    /// Starts the data path thread; path changes arrive on `reports`.
    pub fn start(
        config: UserspaceConfig,
        reports: tokio::sync::mpsc::UnboundedSender<PathReport>,
    ) -> io::Result<DataPlane> {
        set_nonblocking(&config.tap)?;
        let (sender, mailbox) = worker::mailbox()?;
        let counters = Arc::new(Counters::default());
        let engine = Engine {
            local: config.local,
            tap: config.tap,
            udp: config.udp,
            link_mtu: config.link_mtu,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            held: std::collections::VecDeque::new(),
            macs: MacTable::default(),
            routes: Arc::new(Routes::compute(config.local, Default::default())),
            fastdp: Default::default(),
            mailbox,
            reports,
            counters: counters.clone(),
            batch: Batch {
                hop: None,
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                buf: Vec::with_capacity(GSO_MAX_BYTES + BUF_LEN),
                size: 0,
                count: 0,
                closed: false,
            },
            coalescer: Coalescer::default(),
        };
        let worker = Worker::spawn(
            "weft-userspace",
            sender,
            || UserspaceCommand::Stop,
            move || engine.run(),
        )?;
        Ok(DataPlane { worker, counters })
    }

    pub fn send(&self, command: UserspaceCommand) {
        self.worker.send(command)
    }

    pub fn sender(&self) -> Sender {
        self.worker.sender()
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into a buffer we own, within its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_fd(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: writes from a buffer we own, within its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes a virtio-net header and frame to the TAP.
fn write_tap(tap: &OwnedFd, counters: &Counters, bytes: &[u8]) {
    match write_fd(tap, bytes) {
        Ok(_) => {
            counters.frames_to_bridge.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::trace!(error = %e, "writing to the TAP device"),
    }
}

struct Engine {
    local: PeerName,
    tap: OwnedFd,
    udp: UdpSocket,
    link_mtu: u32,
    peers: HashMap<PeerName, UdpPeer>,
    sessions: HashMap<u32, PeerName>,
    macs: MacTable,
    routes: Arc<Routes>,
    /// Frames from our containers that had no router to go to yet.
    held: std::collections::VecDeque<(Instant, Vec<u8>)>,
    /// Peers the fast datapath serves.
    fastdp: std::collections::BTreeSet<PeerName>,
    mailbox: Mailbox<UserspaceCommand>,
    reports: tokio::sync::mpsc::UnboundedSender<PathReport>,
    counters: Arc<Counters>,
    batch: Batch,
    coalescer: Coalescer,
}

/// What to send, before sealing: kind, routing fields, frame.
struct Datagram<'a> {
    kind: Kind,
    routing: Option<Routing>,
    body: &'a [u8],
}

impl Engine {
    fn run(mut self) {
        let mut tap_buf = vec![0u8; BUF_LEN];
        let mut udp_buf = vec![0u8; BUF_LEN];
        let mut scratch: Vec<u8> = Vec::with_capacity(BUF_LEN);
        let mut last_expiry = Instant::now();
        loop {
            let now = Instant::now();
            let deadline = self
                .peers
                .values()
                .map(|p| p.path.deadline())
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            let mut fds = [
                worker::readable(self.tap.as_raw_fd()),
                worker::readable(self.udp.as_raw_fd()),
                worker::readable(self.mailbox.fd()),
            ];
            if let Err(e) = worker::poll(&mut fds, now, deadline) {
                tracing::error!(error = %e, "userspace path poll failed");
                return;
            }
            if fds[2].revents != 0 && !self.commands() {
                return;
            }
            if fds[0].revents != 0 {
                for _ in 0..BATCH {
                    match read_fd(&self.tap, &mut tap_buf) {
                        Ok(n) if n > VNET_HDR_LEN => {
                            self.on_bridge_read(&mut tap_buf[..n], &mut scratch)
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the TAP device");
                            break;
                        }
                    }
                }
                self.flush_batch();
            }
            if fds[1].revents != 0 {
                for _ in 0..BATCH {
                    match socket::recv_segments(&self.udp, &mut udp_buf) {
                        Ok((n, from, segment)) => {
                            let size = segment.filter(|s| *s > 0).unwrap_or(n).max(1);
                            self.on_datagrams(&mut udp_buf[..n], size, from);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "receiving a datagram");
                            break;
                        }
                    }
                }
                self.flush_bridge();
                self.flush_batch();
            }
            let now = Instant::now();
            self.heartbeats(now);
            self.flush_batch();
            if now.duration_since(last_expiry) > Duration::from_secs(60) {
                self.macs.expire(now);
                last_expiry = now;
            }
        }
    }

    /// Applies commands; false when told to stop.
    fn commands(&mut self) -> bool {
        // Queued datagrams go out under the peers they were queued for.
        self.flush_batch();
        while let Some(command) = self.mailbox.next() {
            match command {
                UserspaceCommand::AddPeer(spec) => {
                    let now = Instant::now();
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
                    self.macs.forget_router(name);
                }
                UserspaceCommand::Routes(routes) => {
                    self.routes = routes;
                    self.release_held();
                }
                UserspaceCommand::Fastdp(set) => self.fastdp = set,
                UserspaceCommand::Relay { origin, frame } => self.relay(origin, &frame),
                UserspaceCommand::Stop => return false,
            }
        }
        true
    }

    /// What the TAP gave us: a virtio-net header and a frame, possibly a
    /// TCP super-frame to cut into segments first.
    fn on_bridge_read(&mut self, read: &mut [u8], scratch: &mut Vec<u8>) {
        let Some(hdr) = VnetHdr::parse(read) else {
            return;
        };
        let frame = &mut read[VNET_HDR_LEN..];
        let Some((src, dst)) = macs(frame) else {
            return;
        };
        self.counters
            .frames_from_bridge
            .fetch_add(1, Ordering::Relaxed);
        let decision = from_bridge(&mut self.macs, self.local, src, dst, Instant::now());
        if decision == Outbound::Drop {
            return;
        }
        let result = offload::segment(&hdr, frame, scratch, |segment| match decision {
            Outbound::Unicast(dest) => self.unicast(self.local, dest, 0, segment),
            _ => self.flood(self.local, 0, segment, true),
        });
        if let Err(e) = result {
            tracing::debug!(error = %e, "dropping a frame from the bridge");
        }
    }

    /// Sends `frame` from `origin` towards router `dest`: directly when we
    /// are the origin and have a working path to it, else to the next hop
    /// over working paths.
    fn unicast(&mut self, origin: PeerName, dest: PeerName, hops: u8, frame: &[u8]) {
        let now = Instant::now();
        let direct =
            origin == self.local && self.peers.get(&dest).is_some_and(|p| p.path.usable(now));
        let (hop, out) = if direct {
            let out = Datagram {
                kind: Kind::Frame,
                routing: None,
                body: frame,
            };
            (dest, out)
        } else {
            let Some(hop) = self.routes.next_hop(dest) else {
                self.counters
                    .dropped_no_route
                    .fetch_add(1, Ordering::Relaxed);
                return;
            };
            let routing = Routing {
                origin,
                destination: Some(dest),
                hops,
            };
            let out = Datagram {
                kind: Kind::Forwarded,
                routing: Some(routing),
                body: frame,
            };
            (hop, out)
        };
        self.send_fitting(hop, out, origin);
    }

    /// Sends a broadcast of `origin` to our children in its tree; with
    /// `skip_fastdp`, not to those the fast datapath already served.
    fn flood(&mut self, origin: PeerName, hops: u8, frame: &[u8], skip_fastdp: bool) {
        let children = self.routes.broadcast_children(origin);
        if children.is_empty() && origin == self.local {
            // No router to send it to yet: a container's first ARP request
            // while the mesh is still coming up. Held, not lost (the
            // kernel would ask again only a second later).
            self.hold(frame);
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
            self.send_fitting(child, out, origin);
        }
    }

    /// Keeps a frame of ours that had nowhere to go, a little while.
    fn hold(&mut self, frame: &[u8]) {
        if self.held.len() == HELD_FRAMES {
            self.held.pop_front();
        }
        self.held.push_back((Instant::now(), frame.to_vec()));
    }

    /// The routes changed: the frames held since a moment ago go now
    /// (older ones are stale and dropped).
    fn release_held(&mut self) {
        // Still nowhere to go: they wait on (flooding them now would hold
        // them again, as if new, and keep stale frames forever).
        if self.routes.broadcast_children(self.local).is_empty() {
            return;
        }
        let now = Instant::now();
        let held: Vec<(Instant, Vec<u8>)> = self.held.drain(..).collect();
        for (at, frame) in held {
            if now.duration_since(at) <= HOLD_FOR {
                self.counters.held_released.fetch_add(1, Ordering::Relaxed);
                self.flood(self.local, 0, &frame, true);
            }
        }
        self.flush_batch();
    }

    /// A frame from the fast datapath that only we can move on.
    fn relay(&mut self, origin: PeerName, frame: &[u8]) {
        let Some((_, dst)) = macs(frame) else {
            return;
        };
        let owner = (!super::forwarding::is_group(&dst))
            .then(|| self.macs.lookup(&dst, Instant::now()))
            .flatten();
        match owner {
            Some(owner) if owner != self.local => self.unicast(origin, owner, 0, frame),
            _ => self.flood(origin, 0, frame, true),
        }
        self.flush_batch();
    }

    /// Sends `out` to `hop` if it fits the path. If not, nothing is lost
    /// in silence: a packet that may be fragmented goes in pieces, and a
    /// container of ours whose packet may not hears "fragmentation needed".
    fn send_fitting(&mut self, hop: PeerName, out: Datagram, origin: PeerName) {
        let routing = out.routing.map_or(0, |r| {
            Routing::len(if r.destination.is_some() {
                Kind::Forwarded
            } else {
                Kind::Broadcast
            })
        });
        // Not measured yet (heartbeats have not come back): send.
        let limit = self.peers.get(&hop).and_then(|p| p.frame_limit(routing));
        let Some(limit) = limit.filter(|l| out.body.len() > *l) else {
            return self.send(hop, out);
        };
        if let Some(pieces) = fragment::fragment(out.body, limit) {
            self.counters.fragmented.fetch_add(1, Ordering::Relaxed);
            for piece in &pieces {
                self.send(
                    hop,
                    Datagram {
                        kind: out.kind,
                        routing: out.routing,
                        body: piece,
                    },
                );
            }
            return;
        }
        self.counters
            .dropped_too_big
            .fetch_add(1, Ordering::Relaxed);
        if origin == self.local {
            let ip_mtu = limit.saturating_sub(encap::ETHERNET_LEN) as u16;
            if let Some(reply) = icmp::frag_needed(out.body, ip_mtu) {
                self.write_bridge(&reply);
            }
        }
    }

    /// Queues one datagram to `hop` in the batch of datagrams for that
    /// peer, to be sealed with the others if the path is encrypted.
    fn send(&mut self, hop: PeerName, out: Datagram) {
        let Some(peer) = self.peers.get(&hop) else {
            self.counters
                .dropped_no_route
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (sealed, addr) = (peer.sealer.is_some(), peer.addr);
        let routing_len = out.routing.map_or(0, |r| {
            Routing::len(if r.destination.is_some() {
                Kind::Forwarded
            } else {
                Kind::Broadcast
            })
        });
        let len =
            HEADER_LEN + if sealed { SEAL_OVERHEAD } else { 0 } + routing_len + out.body.len();
        let b = &self.batch;
        let joins = b.hop == Some(hop)
            && !b.closed
            && len <= b.size
            && b.count < GSO_MAX_SEGMENTS
            && b.buf.len() + len <= GSO_MAX_BYTES;
        if !joins {
            self.flush_batch();
            let b = &mut self.batch;
            b.hop = Some(hop);
            b.addr = addr;
            b.size = len;
        }
        let peer = self.peers.get(&hop).expect("looked up above");
        let b = &mut self.batch;
        let start = b.buf.len();
        b.buf.resize(start + len, 0);
        let buf = &mut b.buf[start..];
        let header = Header {
            kind: out.kind,
            sealed,
            session: peer.send_session,
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
    /// (faster than one by one), and sends them: one system call for the
    /// lot.
    fn flush_batch(&mut self) {
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
            if let Err(e) = sealer.seal_each(Instant::now(), datagrams) {
                // Cannot happen: each datagram was sized with room for the
                // seal. Sending it unsealed must not happen either.
                tracing::error!(error = %e, "sealing datagrams; dropped");
                b.count = 0;
            }
        }
        if b.count > 0 {
            match socket::send_batch(&self.udp, b.addr, &b.buf, b.size) {
                Ok(n) => {
                    self.counters
                        .datagrams_sent
                        .fetch_add(b.count as u64, Ordering::Relaxed);
                    self.counters
                        .bytes_sent
                        .fetch_add(n as u64, Ordering::Relaxed);
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
    fn flush_bridge(&mut self) {
        let (tap, counters) = (&self.tap, &self.counters);
        self.coalescer
            .flush(&mut |bytes: &[u8]| write_tap(tap, counters, bytes));
    }

    /// Writes one frame of ours (an ICMP answer) to the bridge.
    fn write_bridge(&mut self, frame: &[u8]) {
        self.flush_bridge();
        let mut buf = Vec::with_capacity(VNET_HDR_LEN + frame.len());
        buf.extend_from_slice(&VnetHdr::default().emit());
        buf.extend_from_slice(frame);
        write_tap(&self.tap, &self.counters, &buf);
    }

    /// The datagrams of one receive, cut at `size` (UDP GRO glues a run
    /// from one sender): when all are sealed by one peer they are opened
    /// together, faster than one by one and with the same outcome.
    fn on_datagrams(&mut self, buf: &mut [u8], size: usize, from: SocketAddr) {
        let now = Instant::now();
        for run in buf.chunks_mut(size * TOGETHER) {
            let opened = self.open_together(now, run, size);
            for (i, datagram) in run.chunks_mut(size).enumerate() {
                let result = opened.as_ref().map(|results| results[i].clone());
                self.on_datagram(now, datagram, from, result);
            }
        }
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
        self.counters
            .opened_together
            .fetch_add(count as u64, Ordering::Relaxed);
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
    ) {
        self.counters
            .datagrams_received
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_received
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        let Ok(header) = Header::parse(datagram) else {
            self.counters
                .dropped_malformed
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let known = self
            .sessions
            .get(&header.session)
            .copied()
            .filter(|sender| self.peers.contains_key(sender));
        let Some(sender) = known else {
            self.counters
                .dropped_unknown_session
                .fetch_add(1, Ordering::Relaxed);
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
                        self.counters
                            .dropped_unauthentic
                            .fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            (None, false) if from.ip() == peer.addr.ip() => HEADER_LEN..len,
            _ => {
                self.counters
                    .dropped_unauthentic
                    .fetch_add(1, Ordering::Relaxed);
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
                self.send(
                    sender,
                    Datagram {
                        kind: Kind::Ack,
                        routing: None,
                        body: &ack,
                    },
                );
            }
            Kind::Ack => {
                if let Some((seq, size)) = encap::parse_ack(body) {
                    let peer = self.peers.get_mut(&sender).expect("looked up above");
                    peer.path.acked(now, seq, u32::from(size));
                }
            }
            Kind::Frame => {
                let body = body.to_vec();
                self.deliver(sender, &body);
            }
            Kind::Forwarded | Kind::Broadcast => {
                let Ok(routing) = Routing::parse(header.kind, body) else {
                    return;
                };
                let frame = body[Routing::len(header.kind)..].to_vec();
                match routing.destination {
                    Some(dest) if dest == self.local => self.deliver(routing.origin, &frame),
                    Some(dest) if routing.hops < MAX_HOPS => {
                        self.counters.relayed.fetch_add(1, Ordering::Relaxed);
                        self.unicast(routing.origin, dest, routing.hops + 1, &frame);
                    }
                    Some(_) => {}
                    None => {
                        self.deliver(routing.origin, &frame);
                        if routing.hops < MAX_HOPS {
                            self.flood(routing.origin, routing.hops + 1, &frame, false);
                        }
                    }
                }
            }
        }
    }

    /// Passes a frame from router `origin` on to our bridge, through the
    /// coalescer.
    fn deliver(&mut self, origin: PeerName, frame: &[u8]) {
        let Some((src, _)) = macs(frame) else { return };
        from_router(&mut self.macs, origin, src, Instant::now());
        let (tap, counters) = (&self.tap, &self.counters);
        self.coalescer
            .push(frame, &mut |bytes: &[u8]| write_tap(tap, counters, bytes));
    }

    /// Heartbeats and probes due, and path changes to report.
    fn heartbeats(&mut self, now: Instant) {
        let names: Vec<PeerName> = self.peers.keys().copied().collect();
        for name in names {
            while let Some(probe) = self.peers.get_mut(&name).and_then(|p| p.path.poll(now)) {
                let sealed = self.peers[&name].sealer.is_some();
                let overhead =
                    encap::OUTER_IP_UDP_LEN + HEADER_LEN + if sealed { SEAL_OVERHEAD } else { 0 };
                let len = (probe.size as usize).saturating_sub(overhead);
                let body = encap::heartbeat_body(probe.seq, len);
                self.send(
                    name,
                    Datagram {
                        kind: Kind::Heartbeat,
                        routing: None,
                        body: &body,
                    },
                );
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
                let _ = self.reports.send(PathReport {
                    peer: name,
                    usable: state.0,
                    path_mtu: state.1,
                    reason,
                });
            }
        }
    }
}
