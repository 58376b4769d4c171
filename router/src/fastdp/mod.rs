//! The fast datapath: the kernel's Open vSwitch datapath switches frames
//! between our bridge, vxlan tunnels to peers and the TAP of the userspace
//! path, so that on connections where it works no frame ever reaches
//! userspace.
//!
//! Layout: the datapath `weft-dp` has three ports: its own internal port
//! (also named `weft-dp`), which is a member of the `weft` bridge,
//! `weft-vxlan` (the vxlan endpoint on UDP 6784) and `weft-tap` (the
//! userspace path). The bridge keeps doing what it does best, local
//! switching and learning, and stays where netfilter, tcpdump and every
//! familiar tool see container traffic; the datapath only sees traffic
//! entering and leaving the host, so flows stay few. The internal port
//! rather than a veth pair joins the two: one device and one queueing
//! step fewer for every packet (measured in `bench-datapath`). A fourth
//! device, [`HEADROOM_PORT`], sits on the bridge, down, so that packets
//! bound for the tunnel are made with room for its header.
//!
//! Flows are installed on misses ([`planner`] decides), within a budget of
//! misses per second ([`upcall_budget`]); they expire when idle, those
//! that have carried few packets and then the least recently used make
//! room when the table nears its bound ([`flow_table`]), and all are
//! flushed whenever routes or overlay choices change.
//!
//! The vxlan heartbeats that decide whether a connection may use the fast
//! datapath run on a thread of their own ([`heartbeats`]; peers'
//! heartbeats come up through a flow of their own, not as misses). This
//! thread puts the datapath back together if someone deletes it or its
//! ports, or changes its features: at once when the kernel announces the
//! change, else at the next pass.

pub mod flow_table;
mod heartbeats;
pub mod planner;
pub mod show;
mod tunnels;
pub mod upcall_budget;

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use weft_odp::{
    Action, Batch, ChangeSocket, Client, Error as OdpError, Flow, KeyAttr, KeyFields, PacketCmd,
    PutMode, TunnelAttr, Upcall, UpcallSocket, VportKind, flow::EthernetKey,
};

use crate::overlay::heartbeat::{self, Heartbeat, VxlanState};
use crate::{
    identity::PeerName,
    mesh::Routes,
    netdev::netlink::{Netlink, NetlinkError, VxlanPort},
    userspace::{engine, forwarding::SharedMacs, packet::macs, switch::UserspaceCommand},
    worker::{self, Mailbox},
};
use flow_table::{Dumped, FlowTable};
use heartbeats::{HeartbeatCommand, HeartbeatConfig, Heartbeats};
use planner::{Hop, Ingress, View};
use tunnels::Tunnels;
use upcall_budget::{UPCALLS_PER_SECOND, UpcallBudget};

pub const DATAPATH: &str = "weft-dp";
pub const VXLAN: &str = "weft-vxlan";
/// `OVSP_LOCAL`: the datapath's internal port, on the bridge.
const BRIDGE_PORT: u32 = 0;
/// The internal port's MTU: never the bridge's limit (that is the
/// overlay MTU, set on the bridge itself), so frames too big for a path
/// still reach the datapath and the router can answer them.
const BRIDGE_PORT_MTU: u32 = 65521;
/// A kernel vxlan device that stays down on the bridge, there only for
/// the headroom it asks for: the bridge gives every port (the containers'
/// veths above all) the largest headroom any port asks for, so packets are
/// made with room for the vxlan header. The datapath's internal port asks
/// for none (mainline kernels lack the call through which the datapath
/// would pass on its vxlan port's needs), and without this port the vxlan
/// port had to reallocate the head of every packet it sent (counted in
/// `bench-datapath --profile-mode count`).
pub const HEADROOM_PORT: &str = "weft-headroom";
/// It cannot come up while the datapath's vxlan port holds the same UDP
/// port, so it never receives, and the VNI names nothing.
const HEADROOM_VNI: u32 = 0;
const REPAIR_EVERY: Duration = Duration::from_secs(1);
/// The least time between repair passes that announced changes bring
/// forward: this router's own repairs are announced too.
const REPAIR_AFTER_CHANGE: Duration = Duration::from_millis(50);
/// Announcements read per turn of the loop.
const CHANGES_PER_TURN: usize = 64;
/// How often the flow table is read for idle flows.
const EXPIRE_EVERY: Duration = Duration::from_secs(10);
/// Flow deletions sent to the kernel in one datagram: a step of a large
/// table's pass is a thousand, one request each took a round trip and
/// made the kernel build a copy of every deleted flow; the acks of one
/// datagram wait together in the socket's receive buffer.
const DELETES_PER_REQUEST: usize = 64;
/// How soon the next pass comes while the table sheds flows.
const SHED_SOON: Duration = Duration::from_millis(100);
/// How long upcalls are handled before timers get their turn.
const UPCALL_TURN: Duration = Duration::from_millis(50);
/// Bounds one drop of stale misses: more than a miss queue's buffer holds
/// (8 MiB as the kernel counts it; an upcall takes well over 128 bytes).
const STALE_MISSES_AT_MOST: usize = weft_odp::upcall::RECEIVE_BUFFER / 64;

/// The upcall sockets the datapath thread reads.
#[derive(Clone, Copy)]
enum Queue {
    Local,
    Tunnel,
    Relays,
}

/// How to reach one peer's datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerTunnel {
    pub name: PeerName,
    /// The peer's underlay address.
    pub remote: Ipv4Addr,
    /// Ours, as the peer sees it.
    pub local: Ipv4Addr,
}

pub enum FastdpCommand {
    Peer(PeerTunnel),
    RemovePeer(PeerName),
    Routes(Arc<Routes>),
    /// The peers whose connections currently use the fast datapath.
    Fastdp(BTreeSet<PeerName>),
    Stop,
}

/// What the fast datapath tells the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Vxlan {
        peer: PeerName,
        state: VxlanState,
    },
    /// The datapath went away (and could not be put back) or came back.
    Datapath {
        up: bool,
        reason: Option<String>,
    },
}

pub struct FastdpConfig {
    pub local: PeerName,
    /// The bridge the datapath's internal port joins.
    pub bridge: String,
    pub vxlan_port: u16,
    /// The flow table's bounds.
    pub flow_limits: flow_table::Limits,
    /// The overlay MTU: full-size heartbeats carry frames this big.
    pub overlay_mtu: u32,
    pub tap: String,
    /// The userspace path, which takes frames the datapath hands it.
    pub engine: engine::Sender,
    /// The router's MAC table, shared with the userspace path.
    pub macs: SharedMacs,
    /// The router's netlink connection, for the datapath port's links.
    pub netlink: Netlink,
}

/// The ports of our datapath, by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ports {
    dp: i32,
    bridge: u32,
    vxlan: u32,
    tap: u32,
}

/// Handle on the running fast datapath; dropping it stops the thread.
pub struct Fastdp {
    worker: worker::Worker<FastdpCommand>,
    /// The heartbeat thread (which the datapath thread owns) hears of
    /// peers straight from the router, never after a busy datapath
    /// thread: a peer that left and came back must not be reported on
    /// with its old path's state.
    heartbeats: worker::Sender<HeartbeatCommand>,
    pub counters: Arc<Counters>,
}

/// What the datapath thread counts, read by the API.
#[derive(Default, Debug)]
pub struct Counters {
    /// Packets that missed every flow and were planned.
    pub misses: AtomicU64,
    /// Misses dropped over the upcall budget.
    pub misses_over_budget: AtomicU64,
    pub flows_installed: AtomicU64,
    /// Misses forwarded without a flow: the table was at its bound.
    pub flows_not_installed_table_full: AtomicU64,
    pub flows_expired_idle: AtomicU64,
    /// Flows removed to make room (those on probation first).
    pub flows_evicted: AtomicU64,
    pub flushes: AtomicU64,
    /// Flows in the kernel's table now (an upper bound between passes).
    pub flows: AtomicU64,
}

impl Counters {
    /// Every counter by its name (the table's size apart), for `/metrics`.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("misses", get(&self.misses)),
            ("misses_over_budget", get(&self.misses_over_budget)),
            ("flows_installed", get(&self.flows_installed)),
            (
                "flows_not_installed_table_full",
                get(&self.flows_not_installed_table_full),
            ),
            ("flows_expired_idle", get(&self.flows_expired_idle)),
            ("flows_evicted", get(&self.flows_evicted)),
            ("flushes", get(&self.flushes)),
        ]
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// A flow as the table's bookkeeping knows it: what the router keys its
/// flows on (port, MACs, and for vxlan the pair's tunnel id).
type FlowId = (Option<u32>, Option<EthernetKey>, Option<u64>);

fn flow_id(key: &[KeyAttr]) -> FlowId {
    (key.in_port(), key.ethernet(), key.tunnel_id())
}

/// A tunnel id for traffic from `src` to `dst`: 12 bits of each name, so
/// a capture shows which pair a packet belongs to. The receiver knows the
/// sender from the outer source address; the id is for people and checks.
pub fn vni(src: PeerName, dst: PeerName) -> u64 {
    let short = |p: PeerName| {
        let n = p.as_u64();
        (n ^ (n >> 12) ^ (n >> 24) ^ (n >> 36)) & 0xfff
    };
    (short(src) << 12) | short(dst)
}

/// The datapath features weft asks for: none, so upcalls go to the port
/// each vport names.
const FEATURES: u32 = 0;

/// Also names our upcall socket for per-CPU dispatch: another program
/// (`ovs-dpctl` does, just by opening the datapath) may switch the datapath
/// to it, and misses must keep reaching us until [`Worker::repair`]
/// switches it back. Kernels before 5.15 lack the attribute; nothing to do
/// there.
fn steer_upcalls(client: &mut Client, dp: i32, upcall_pid: u32) {
    if let Err(e) = client.set_per_cpu_upcall_pids(dp, &[upcall_pid]) {
        tracing::debug!(error = %e, "this kernel has no per-CPU upcall dispatch");
    }
}

/// Creates the datapath and its ports afresh (a stale one from an earlier
/// router is deleted with its flows) and puts its internal port on the
/// bridge.
fn build(
    client: &mut Client,
    plumbing: &Plumbing,
    config: &FastdpConfig,
    upcall_pid: u32,
    tunnel_pid: u32,
) -> Result<Ports, OdpError> {
    if let Ok(old) = client.datapath(DATAPATH) {
        client.delete_datapath(old.ifindex)?;
    }
    let dp = client
        .create_datapath(DATAPATH, upcall_pid, FEATURES)?
        .ifindex;
    steer_upcalls(client, dp, upcall_pid);
    let pids = [upcall_pid];
    let tap = client
        .create_vport(dp, &config.tap, VportKind::Netdev, &pids)?
        .port_no;
    let vxlan = client
        .create_vport(
            dp,
            VXLAN,
            VportKind::Vxlan {
                dst_port: config.vxlan_port,
            },
            &[tunnel_pid],
        )?
        .port_no;
    plumbing
        .join_bridge(&config.bridge)
        .map_err(|e| OdpError::Socket(format!("cannot put {DATAPATH} on the bridge: {e}")))?;
    // Only speed depends on it: the datapath runs without.
    if let Err(e) = plumbing.keep_headroom_port(config) {
        tracing::warn!(error = %e, port = HEADROOM_PORT, "no headroom port: every packet sent through a tunnel is copied to make room for its header");
    }
    Ok(Ports {
        dp,
        bridge: BRIDGE_PORT,
        vxlan,
        tap,
    })
}

/// rtnetlink for the datapath's internal port, from this synchronous
/// thread: the calls run on the router's own runtime and netlink
/// connection, and the thread waits for them (no runtime of its own).
struct Plumbing {
    runtime: tokio::runtime::Handle,
    netlink: Netlink,
}

impl Plumbing {
    /// The internal port on the bridge, up, without IPv6 (it is a switch
    /// port: its own router solicitations would only add flows).
    fn join_bridge(&self, bridge: &str) -> Result<(), String> {
        let sysctl = format!("/proc/sys/net/ipv6/conf/{DATAPATH}/disable_ipv6");
        if let Err(e) = std::fs::write(&sysctl, "1") {
            tracing::debug!(error = %e, "cannot disable IPv6 on the datapath port");
        }
        self.runtime
            .block_on(async {
                let nl = &self.netlink;
                let port = nl.require(DATAPATH).await?;
                let bridge = nl.require(bridge).await?;
                nl.set_mtu_up(port.index, BRIDGE_PORT_MTU).await?;
                nl.attach(port.index, bridge.index).await
            })
            .map_err(|e| e.to_string())
    }

    /// Keeps [`HEADROOM_PORT`] on the bridge with the overlay MTU (a port
    /// below the bridge's MTU would lower it); puts a new one in place of
    /// one missing or changed. Says whether it made one.
    fn keep_headroom_port(&self, config: &FastdpConfig) -> Result<bool, NetlinkError> {
        self.runtime.block_on(async {
            let nl = &self.netlink;
            let bridge = nl.require(&config.bridge).await?;
            match nl.link(HEADROOM_PORT).await? {
                Some(port)
                    if port.controller == Some(bridge.index) && port.mtu == config.overlay_mtu =>
                {
                    return Ok(false);
                }
                Some(port) => nl.delete(port.index).await?,
                None => {}
            }
            nl.add_vxlan_port_down(&VxlanPort {
                name: HEADROOM_PORT,
                vni: HEADROOM_VNI,
                port: config.vxlan_port,
                mtu: config.overlay_mtu,
                bridge: bridge.index,
            })
            .await?;
            Ok(true)
        })
    }

    fn remove_headroom_port(&self) {
        let removed = self
            .runtime
            .block_on(self.netlink.delete_named(HEADROOM_PORT));
        if let Err(e) = removed {
            tracing::warn!(error = %e, port = HEADROOM_PORT, "cannot remove the headroom port");
        }
    }
}

impl Fastdp {
    /// Sets up the datapath on its own thread; an error (the module
    /// missing, above all) means running without a fast datapath.
    pub async fn start(
        config: FastdpConfig,
        reports: tokio::sync::mpsc::UnboundedSender<Report>,
    ) -> Result<Fastdp, OdpError> {
        let (sender, mailbox) = worker::mailbox().map_err(|e| OdpError::Socket(e.to_string()))?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let worker = worker::Worker::spawn(
            "weft-fastdp",
            sender,
            || FastdpCommand::Stop,
            move || match Worker::new(config, runtime, mailbox, reports, shared) {
                Ok(worker) => {
                    let _ = ready_tx.send(Ok(worker.heartbeats.sender()));
                    worker.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            },
        )
        .map_err(|e| OdpError::Socket(e.to_string()))?;
        // On an error the thread has ended: dropping the handle joins it.
        let heartbeats = ready_rx
            .await
            .unwrap_or_else(|_| Err(OdpError::Socket("the fast datapath thread died".into())))?;
        Ok(Fastdp {
            worker,
            heartbeats,
            counters,
        })
    }

    pub fn send(&self, command: FastdpCommand) {
        match &command {
            FastdpCommand::Peer(tunnel) => self.heartbeats.send(HeartbeatCommand::Peer(*tunnel)),
            FastdpCommand::RemovePeer(name) => {
                self.heartbeats.send(HeartbeatCommand::RemovePeer(*name))
            }
            _ => {}
        }
        self.worker.send(command)
    }
}

struct Worker {
    config: FastdpConfig,
    client: Client,
    plumbing: Plumbing,
    /// Misses from the bridge and the TAP.
    upcalls: UpcallSocket,
    /// Misses from the vxlan port. Both miss queues are left unread while
    /// the upcall budget is closed.
    tunnel_upcalls: UpcallSocket,
    /// Frames our flows hand up for the userspace path: a socket of their
    /// own, so dropping over-budget misses unread never drops them.
    relays: UpcallSocket,
    /// The kernel's announcements of datapath and port changes, which
    /// bring the repair pass forward: `ovs-dpctl` switches the datapath to
    /// per-CPU upcall dispatch just by opening it, and every upcall,
    /// heartbeats included, goes to its sockets until the features are put
    /// back. None where the kernel announces nothing (then the pass's
    /// second is the bound).
    changes: Option<ChangeSocket>,
    /// The miss queues went unread while the budget was closed: what they
    /// hold is stale.
    misses_stale: bool,
    /// Which miss queue is read first this turn (they alternate).
    local_first: bool,
    /// The heartbeat thread; the heartbeat flow sends peers' heartbeats
    /// to its socket, never queued behind misses, however many there are.
    heartbeats: Heartbeats,
    ports: Ports,
    tunnels: Tunnels,
    fastdp: BTreeSet<PeerName>,
    routes: Arc<Routes>,
    table: FlowTable<FlowId>,
    /// The key each flow was installed with, which is what deletes it: the
    /// kernel finds a flow by its unmasked key, and a dumped key is the
    /// masked one (its EtherType and tunnel fields differ).
    installed: HashMap<FlowId, Vec<KeyAttr>>,
    budget: UpcallBudget,
    /// The budget's clock.
    epoch: Instant,
    counters: Arc<Counters>,
    mailbox: Mailbox<FastdpCommand>,
    reports: tokio::sync::mpsc::UnboundedSender<Report>,
    next_repair: Instant,
    last_repair: Instant,
    next_expiry: Instant,
    up: bool,
    /// The last pass could not put the headroom port back.
    headroom_failed: bool,
}

impl Worker {
    fn new(
        config: FastdpConfig,
        runtime: tokio::runtime::Handle,
        mailbox: Mailbox<FastdpCommand>,
        reports: tokio::sync::mpsc::UnboundedSender<Report>,
        counters: Arc<Counters>,
    ) -> Result<Worker, OdpError> {
        let mut client = Client::connect()?;
        let upcalls = UpcallSocket::open()?;
        upcalls.set_nonblocking()?;
        let plumbing = Plumbing {
            runtime,
            netlink: config.netlink.clone(),
        };
        // The vxlan port's upcalls (misses of frames from peers, and their
        // heartbeats while the heartbeat flow is missing) have a socket of
        // their own, read first, so a local container's flood of misses
        // cannot bury them in one queue. (While the budget is closed both
        // queues go unread, and are dropped if a flood filled them: a
        // heartbeat lost that way needs its flow missing too, which the
        // next repair pass, within a second, puts back.)
        let tunnel_upcalls = UpcallSocket::open()?;
        tunnel_upcalls.set_nonblocking()?;
        let relays = UpcallSocket::open()?;
        relays.set_nonblocking()?;
        let changes = ChangeSocket::open(&client.family_ids())
            .inspect_err(|e| {
                tracing::info!(error = %e, "no datapath announcements: another program's changes are undone within a second")
            })
            .ok();
        let ports = build(
            &mut client,
            &plumbing,
            &config,
            upcalls.port_id(),
            tunnel_upcalls.port_id(),
        )?;
        let heartbeats = Heartbeats::start(
            HeartbeatConfig {
                local: config.local,
                full_size: (config.overlay_mtu as usize) + crate::userspace::packet::ETH_LEN,
                reports: reports.clone(),
            },
            ports,
        )
        .inspect_err(|_| {
            // Running without a fast datapath: its TAP must be free for
            // the bridge.
            let _ = client.delete_datapath(ports.dp);
            plumbing.remove_headroom_port();
        })?;
        let now = Instant::now();
        let mut worker = Worker {
            routes: Arc::new(Routes::compute(config.local, Default::default())),
            table: FlowTable::new(config.flow_limits),
            installed: HashMap::new(),
            config,
            client,
            plumbing,
            upcalls,
            tunnel_upcalls,
            relays,
            changes,
            misses_stale: false,
            local_first: false,
            heartbeats,
            ports,
            tunnels: Tunnels::default(),
            fastdp: BTreeSet::new(),
            budget: UpcallBudget::new(UPCALLS_PER_SECOND),
            epoch: Instant::now(),
            counters,
            mailbox,
            reports,
            next_repair: now + REPAIR_EVERY,
            last_repair: now,
            next_expiry: now + EXPIRE_EVERY,
            up: true,
            headroom_failed: false,
        };
        worker.install_heartbeat_flow();
        Ok(worker)
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            let mut deadline = self.next_repair.min(self.next_expiry);
            // A closed budget leaves the misses queued (poll skips a
            // negative descriptor) until it opens.
            let open = self.budget.open(self.clock_us(now));
            if !open {
                self.misses_stale = true;
                let opens = self.epoch + Duration::from_micros(self.budget.reopens_at_us());
                deadline = deadline.min(opens);
            }
            let misses = |socket: &UpcallSocket| if open { socket.as_raw_fd() } else { -1 };
            let mut fds = [
                worker::readable(misses(&self.upcalls)),
                worker::readable(self.mailbox.fd()),
                worker::readable(misses(&self.tunnel_upcalls)),
                worker::readable(self.relays.as_raw_fd()),
                worker::readable(self.changes.as_ref().map_or(-1, |c| c.as_raw_fd())),
            ];
            if let Err(e) = worker::poll(&mut fds, now, deadline) {
                tracing::error!(error = %e, "fast datapath poll failed");
                return;
            }
            if fds[1].revents != 0 && !self.commands() {
                return;
            }
            if fds[3].revents != 0 {
                self.upcalls(Queue::Relays);
            }
            if fds[4].revents != 0 {
                self.changes_announced();
            }
            if self.misses_stale && self.budget.open(self.clock_us(Instant::now())) {
                self.drop_stale_misses();
            }
            // Turn about, so neither queue can take every window's budget
            // while both are busy.
            let mut queues = [
                (fds[2].revents, Queue::Tunnel),
                (fds[0].revents, Queue::Local),
            ];
            if self.local_first {
                queues.reverse();
            }
            self.local_first = !self.local_first;
            for (revents, queue) in queues {
                if revents != 0 {
                    self.upcalls(queue);
                }
            }
            let now = Instant::now();
            if now >= self.next_repair {
                self.next_repair = now + REPAIR_EVERY;
                self.last_repair = now;
                self.repair();
            }
            if now >= self.next_expiry {
                self.expire(now);
            }
        }
    }

    fn commands(&mut self) -> bool {
        while let Some(command) = self.mailbox.next() {
            match command {
                FastdpCommand::Peer(tunnel) => self.tunnels.insert(tunnel),
                FastdpCommand::RemovePeer(name) => {
                    self.tunnels.remove(name);
                    self.config.macs.lock().forget_router(name);
                    self.flush(format_args!("{name} left"));
                }
                FastdpCommand::Routes(routes) => {
                    self.routes = routes;
                    self.flush(format_args!("the routes changed"));
                }
                FastdpCommand::Fastdp(set) => {
                    if set != self.fastdp {
                        let names: Vec<String> = set.iter().map(|p| p.to_string()).collect();
                        self.flush(format_args!(
                            "the peers on the fast datapath are now [{}]",
                            names.join(", ")
                        ));
                        self.fastdp = set;
                    }
                }
                FastdpCommand::Stop => {
                    let _ = self.client.delete_datapath(self.ports.dp);
                    self.plumbing.remove_headroom_port();
                    return false;
                }
            }
        }
        true
    }

    /// Removes every flow: they come back, recomputed, on the next miss.
    /// Logged with its cause, since a flush sends every established
    /// connection back through upcalls at once.
    fn flush(&mut self, why: std::fmt::Arguments) {
        tracing::info!(
            flows = self.table.count(),
            "flushing the fast datapath's flows: {why}"
        );
        if let Err(e) = self.client.flush_flows(self.ports.dp) {
            tracing::warn!(error = %e, "cannot flush flows");
        }
        self.table.cleared();
        self.installed.clear();
        bump(&self.counters.flushes, 1);
        self.counters.flows.store(0, Ordering::Relaxed);
        self.install_heartbeat_flow();
    }

    /// The flow that sends peers' heartbeats (their fixed MACs and
    /// EtherType, on the vxlan port, any tunnel) straight to their own
    /// socket. As misses they would share the vxlan port's queue with every
    /// frame from peers that has no flow yet: a flood of new MACs queued
    /// seconds of upcalls ahead of them, the path was declared dead, and
    /// the flush that followed made the flood worse. Installed with the
    /// datapath, after every flush and at every repair pass (in case
    /// another program deleted it); without it heartbeats still arrive, as
    /// misses.
    fn install_heartbeat_flow(&mut self) {
        let key = vec![
            KeyAttr::InPort(self.ports.vxlan),
            KeyAttr::Ethernet(EthernetKey {
                src: heartbeat::SRC_MAC,
                dst: heartbeat::DST_MAC,
            }),
            KeyAttr::EtherType(heartbeat::ETHERTYPE),
        ];
        let mask = vec![
            KeyAttr::InPort(u32::MAX),
            KeyAttr::Ethernet(EthernetKey {
                src: [0xff; 6],
                dst: [0xff; 6],
            }),
            KeyAttr::EtherType(u16::MAX),
        ];
        let action = Action::userspace(self.heartbeats.upcall_pid(), None);
        let flow = Flow::new(key, Some(mask), vec![action]);
        if let Err(e) = self
            .client
            .put_flow(self.ports.dp, &flow, PutMode::CreateOrModify)
        {
            tracing::warn!(error = %e, "cannot install the heartbeat flow: heartbeats arrive as misses");
        }
    }

    /// Handles what the upcall socket holds, for at most
    /// [`UPCALL_TURN`]: under a flood of misses the socket never runs
    /// dry, and commands, repairs and the flow table's passes must still
    /// get their turn.
    fn upcalls(&mut self, queue: Queue) {
        let started = Instant::now();
        let misses = !matches!(queue, Queue::Relays);
        while started.elapsed() < UPCALL_TURN {
            if misses && !self.budget.open(self.clock_us(Instant::now())) {
                return; // the rest waits unread (see `run`)
            }
            let socket = match queue {
                Queue::Local => &self.upcalls,
                Queue::Tunnel => &self.tunnel_upcalls,
                Queue::Relays => &self.relays,
            };
            let batch = match socket.recv() {
                Ok(b) if b.is_empty() => return,
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "upcall socket");
                    return;
                }
            };
            for upcall in batch.into_iter().flatten() {
                self.upcall(upcall);
            }
        }
    }

    /// Drops, unread, the misses that queued while the budget was closed,
    /// if there are more than a burst of them: a flood's are older than
    /// the misses behind them by now, while a few new connections' first
    /// packets on a slow machine (whose first miss of a window may close
    /// the budget) are kept and read.
    fn drop_stale_misses(&mut self) {
        self.misses_stale = false;
        for socket in [&self.upcalls, &self.tunnel_upcalls] {
            let queued = socket.queued_bytes().unwrap_or(usize::MAX);
            if !upcall_budget::flooded(queued) {
                continue;
            }
            match socket.discard(STALE_MISSES_AT_MOST) {
                Ok(n) => bump(&self.counters.misses_over_budget, n as u64),
                Err(e) => tracing::debug!(error = %e, "upcall socket"),
            }
        }
    }

    /// Microseconds since the worker started: the budget's clock.
    fn clock_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn upcall(&mut self, upcall: Upcall) {
        let now = Instant::now();
        if upcall.cmd == PacketCmd::Action {
            // A frame a flow handed to us for the userspace path, with its
            // origin router in the cookie.
            if let Some(origin) = upcall.userdata.as_deref().and_then(name_of) {
                self.config.engine.send(UserspaceCommand::Relay {
                    origin,
                    frame: upcall.packet,
                });
            }
            return;
        }
        let Some(in_port) = upcall.key.in_port() else {
            return;
        };
        let ingress = if in_port == self.ports.bridge {
            Ingress::Bridge
        } else if in_port == self.ports.tap {
            Ingress::Tap
        } else if in_port == self.ports.vxlan {
            let Some(peer) = self.tunnels.sender(&upcall.key) else {
                return; // from a host that is not our peer
            };
            if let Some(heartbeat) = Heartbeat::parse(&upcall.packet) {
                let len = upcall.packet.len();
                let arrived = HeartbeatCommand::Arrived {
                    peer,
                    heartbeat,
                    len,
                };
                self.heartbeats.send(arrived);
                return;
            }
            Ingress::Vxlan { peer }
        } else {
            return;
        };
        let Some((src, dst)) = macs(&upcall.packet) else {
            return;
        };
        if !self.budget.take(self.clock_us(now)) {
            bump(&self.counters.misses_over_budget, 1);
            return;
        }
        bump(&self.counters.misses, 1);
        let planning = Instant::now();
        let view = View {
            local: self.config.local,
            routes: &self.routes,
            fastdp: &self.fastdp,
        };
        let hops = planner::plan(&view, &mut self.config.macs.lock(), ingress, src, dst, now);
        let actions = self.actions(&hops);
        let mut key = vec![
            KeyAttr::InPort(in_port),
            KeyAttr::Ethernet(EthernetKey { src, dst }),
        ];
        let mut mask = vec![
            KeyAttr::InPort(u32::MAX),
            KeyAttr::Ethernet(EthernetKey {
                src: [0xff; 6],
                dst: [0xff; 6],
            }),
        ];
        if let Ingress::Vxlan { .. } = ingress {
            let tunnel: Vec<TunnelAttr> =
                upcall.key.tunnel().map(<[_]>::to_vec).unwrap_or_default();
            let exact: Vec<TunnelAttr> = tunnel
                .iter()
                .filter_map(|a| match a {
                    TunnelAttr::Id(_) => Some(TunnelAttr::Id(u64::MAX)),
                    TunnelAttr::Ipv4Src(_) => Some(TunnelAttr::Ipv4Src(Ipv4Addr::BROADCAST)),
                    TunnelAttr::Ipv4Dst(_) => Some(TunnelAttr::Ipv4Dst(Ipv4Addr::BROADCAST)),
                    _ => None,
                })
                .collect();
            key.insert(0, KeyAttr::Tunnel(tunnel));
            mask.insert(0, KeyAttr::Tunnel(exact));
        }
        // The flow and the packet that missed (which still has to go) in
        // one request to the kernel.
        let flow = Flow::new(key, Some(mask), actions.clone());
        let mut batch = Batch::default();
        let installing = self.table.admit();
        if installing {
            batch.put_flow(self.ports.dp, &flow, PutMode::CreateOrModify);
        } else {
            bump(&self.counters.flows_not_installed_table_full, 1);
        }
        if !actions.is_empty() {
            let mut exec_key = vec![KeyAttr::InPort(in_port)];
            if let Some(t) = upcall.key.tunnel() {
                exec_key.insert(0, KeyAttr::Tunnel(t.to_vec()));
            }
            batch.execute(self.ports.dp, &upcall.packet, exec_key, actions);
        }
        let mut results = match self.client.send_batch(batch) {
            Ok(results) => results.into_iter(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot send a missed packet's flow and packet");
                Vec::new().into_iter()
            }
        };
        if installing {
            match results.next() {
                Some(Ok(())) => {
                    bump(&self.counters.flows_installed, 1);
                    self.installed.insert(flow_id(&flow.key), flow.key);
                }
                Some(Err(e)) => {
                    self.table.not_installed();
                    tracing::debug!(error = %e, "cannot install a flow");
                }
                None => self.table.not_installed(),
            }
        }
        if let Some(Err(e)) = results.next() {
            tracing::debug!(error = %e, "cannot execute a missed packet");
        }
        self.table_grew(now);
        self.budget.charge(planning.elapsed().as_micros() as u64);
    }

    /// Counts the table; near its bound, asks for a pass that makes room
    /// soon.
    fn table_grew(&mut self, now: Instant) {
        if self.table.crowded() {
            self.next_expiry = self.next_expiry.min(now + SHED_SOON);
        }
        self.counters
            .flows
            .store(self.table.count() as u64, Ordering::Relaxed);
    }

    fn actions(&self, hops: &[Hop]) -> Vec<Action> {
        let mut actions = Vec::new();
        for hop in hops {
            match *hop {
                Hop::Bridge => actions.push(Action::Output(self.ports.bridge)),
                Hop::Tap => actions.push(Action::Output(self.ports.tap)),
                Hop::Tunnel(peer) => {
                    if let Some(set) = self.tunnels.set_tunnel(self.config.local, peer) {
                        actions.push(set);
                        actions.push(Action::Output(self.ports.vxlan));
                    }
                }
                Hop::Userspace(origin) => {
                    // To the relay socket, never among the misses a flood
                    // drops. (Were another program to switch the datapath
                    // to per-CPU dispatch, the kernel would send these to
                    // the miss socket instead until the repair pass, which
                    // the change's announcement brings forward, switches it
                    // back; they are relayed from there too unless a
                    // flood's queue is dropped.)
                    let cookie = origin.octets().to_vec();
                    actions.push(Action::userspace(self.relays.port_id(), Some(cookie)));
                }
            }
        }
        actions
    }

    /// The kernel announced changes to datapaths or ports: the repair pass
    /// comes at once, or as soon as [`REPAIR_AFTER_CHANGE`] allows.
    fn changes_announced(&mut self) {
        let Some(changes) = &self.changes else {
            return;
        };
        match changes.drain(CHANGES_PER_TURN) {
            Ok(0) => {}
            Ok(_) => {
                self.next_repair = self.next_repair.min(self.last_repair + REPAIR_AFTER_CHANGE);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the datapath's announcements: repairing once a second only");
                self.changes = None;
            }
        }
    }

    /// Puts the datapath back if it or a port was deleted under us, and
    /// its features if another program changed them.
    fn repair(&mut self) {
        let intact = match self.client.datapath(DATAPATH) {
            Ok(dp) if dp.ifindex == self.ports.dp => {
                if dp.user_features != FEATURES {
                    tracing::warn!(
                        features = format_args!("{:#x}", dp.user_features),
                        "another program (ovs-dpctl?) changed the datapath's features: restoring them"
                    );
                    let pid = self.upcalls.port_id();
                    if let Err(e) = self.client.set_datapath(dp.ifindex, pid, FEATURES) {
                        tracing::warn!(error = %e, "cannot restore the datapath's features");
                    }
                    steer_upcalls(&mut self.client, dp.ifindex, pid);
                }
                match self.client.vports(self.ports.dp) {
                    Ok(vports) => [self.ports.bridge, self.ports.vxlan, self.ports.tap]
                        .iter()
                        .all(|p| vports.iter().any(|v| v.port_no == *p)),
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if intact {
            self.install_heartbeat_flow();
            self.keep_headroom_port();
            return;
        }
        tracing::warn!("the datapath or one of its ports is gone: rebuilding it");
        match build(
            &mut self.client,
            &self.plumbing,
            &self.config,
            self.upcalls.port_id(),
            self.tunnel_upcalls.port_id(),
        ) {
            Ok(ports) => {
                self.ports = ports;
                self.heartbeats.send(HeartbeatCommand::Ports(ports));
                self.table.cleared();
                self.installed.clear();
                self.install_heartbeat_flow();
                if !self.up {
                    self.up = true;
                    let _ = self.reports.send(Report::Datapath {
                        up: true,
                        reason: None,
                    });
                }
                tracing::info!("datapath rebuilt");
            }
            Err(e) => {
                if self.up {
                    self.up = false;
                    let reason = format!("the datapath could not be rebuilt: {e}");
                    let _ = self.reports.send(Report::Datapath {
                        up: false,
                        reason: Some(reason),
                    });
                }
            }
        }
    }

    /// Puts the headroom port back if someone deleted or changed it; says
    /// so once per failure, not on every pass.
    fn keep_headroom_port(&mut self) {
        match self.plumbing.keep_headroom_port(&self.config) {
            Ok(made) => {
                if made {
                    tracing::warn!(
                        port = HEADROOM_PORT,
                        "the headroom port was gone or changed: put back"
                    );
                }
                self.headroom_failed = false;
            }
            Err(e) => {
                if !self.headroom_failed {
                    tracing::warn!(error = %e, port = HEADROOM_PORT, "cannot put the headroom port back: packets sent through tunnels are copied until it is");
                }
                self.headroom_failed = true;
            }
        }
    }

    /// Removes idle flows, and makes room when the table is crowded, a
    /// step at a time ([`flow_table`]).
    fn expire(&mut self, now: Instant) {
        self.next_expiry = now + EXPIRE_EVERY;
        let flows = match self.client.flows(self.ports.dp) {
            // The heartbeat flow is not the table's to count or remove.
            Ok(flows) => flows
                .into_iter()
                .filter(|f| !is_heartbeat_flow(&f.key))
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the flow table: no flow expires or makes room");
                return;
            }
        };
        let dumped: Vec<Dumped<FlowId>> = flows
            .iter()
            .map(|f| Dumped {
                id: flow_id(&f.key),
                used_ms: f.used_ms,
                packets: f.stats.packets,
            })
            .collect();
        let pass = self.table.pass(&dumped, monotonic_ms());
        for (step, chunk) in pass.delete.chunks(DELETES_PER_REQUEST).enumerate() {
            let mut batch = Batch::default();
            for &i in chunk {
                let key = self.installed.get(&dumped[i].id).unwrap_or(&flows[i].key);
                batch.delete_flow(self.ports.dp, key);
            }
            let results = match self.client.send_batch(batch) {
                Ok(results) => results,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot delete flows");
                    break;
                }
            };
            for ((n, deleted), &i) in (step * DELETES_PER_REQUEST..).zip(results).zip(chunk) {
                if let Err(e) = &deleted {
                    tracing::debug!(error = %e, "cannot delete a flow");
                    continue;
                }
                self.installed.remove(&dumped[i].id);
                self.table.removed();
                let counter = if n < pass.idle {
                    &self.counters.flows_expired_idle
                } else {
                    &self.counters.flows_evicted
                };
                bump(counter, 1);
            }
        }
        if pass.again || self.table.crowded() {
            self.next_expiry = now + SHED_SOON;
        }
        // Keys of flows the kernel no longer has (deleted by someone else).
        let present: std::collections::HashSet<&FlowId> = dumped.iter().map(|f| &f.id).collect();
        self.installed.retain(|id, _| present.contains(id));
        self.counters
            .flows
            .store(self.table.count() as u64, Ordering::Relaxed);
    }
}

fn is_heartbeat_flow(key: &[KeyAttr]) -> bool {
    key.ethernet()
        .is_some_and(|e| e.src == heartbeat::SRC_MAC && e.dst == heartbeat::DST_MAC)
}

fn name_of(bytes: &[u8]) -> Option<PeerName> {
    let octets: [u8; 6] = bytes.try_into().ok()?;
    let mut n = [0u8; 8];
    n[2..].copy_from_slice(&octets);
    Some(PeerName::from_u64(u64::from_be_bytes(n)))
}

/// The kernel's monotonic clock in milliseconds, the clock of a flow's
/// "used" time.
pub(crate) fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_ids_fit_vxlan_and_tell_pairs_apart() {
        let (a, b) = (
            PeerName::from_u64(0x0211_2233_4455),
            PeerName::from_u64(0x02aa_bbcc_ddee),
        );
        assert!(vni(a, b) < 1 << 24);
        assert_ne!(vni(a, b), vni(b, a));
        assert_eq!(name_of(&a.octets()), Some(a));
    }
}
