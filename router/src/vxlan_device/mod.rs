//! The kernel's own vxlan device as a data path, for hosts without Open
//! vSwitch: a third path between the fast datapath and the userspace one.
//!
//! Layout: the device `weft-vxdev` (UDP 6784, one mesh-wide VNI, learning
//! off, no multicast group) is a port of the `weft` bridge that the bridge
//! neither floods to nor learns on. Frames go through it only where
//! [`entries`] says: to the MACs of routers whose connection the overlay
//! choice put on it, with static bridge entries steering those MACs to the
//! device and device entries sending each to its host. The TAP stays on
//! the bridge, so everything else takes the userspace path as before, and
//! a connection that leaves the device simply loses its entries.
//!
//! This task also sends and answers the vxlan heartbeats that decide
//! whether a connection may use the device (the fast datapath's, sent to
//! the peer's bridge MAC through the device and read off our bridge), keeps
//! MACs that the device carries alive in the router's MAC table (the
//! userspace path no longer sees their frames), and puts the device and
//! its entries back if someone deletes them.

pub mod entries;

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::{AsRawFd, OwnedFd},
    time::{Duration, Instant},
};

use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    fastdp::{PeerTunnel, Report},
    identity::PeerName,
    netdev::{
        self,
        netlink::{FdbEntry, Netlink, VxlanPort},
    },
    overlay::heartbeat::{ETHERTYPE, Heartbeat, VxlanPath, VxlanState},
    userspace::forwarding::SharedMacs,
};
use entries::{Entries, Probed};

pub const DEVICE: &str = "weft-vxdev";
/// The one VNI of the mesh: the device receives only its own.
pub const VNI: u32 = 0x0077_6566;
/// How often the device and its entries are checked and brought in line
/// (and at once whenever the peers or their paths change).
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// Heartbeats are due at most this late.
const TICK: Duration = Duration::from_millis(100);
/// An entry that sent a frame this recently (in 1/100 s) keeps its MAC
/// alive in the MAC table.
const IN_USE_TICKS: u32 = 500;

pub enum DeviceCommand {
    /// Probe a peer through the device.
    Peer(PeerTunnel),
    RemovePeer(PeerName),
    /// The peers whose connections use the device now.
    Carrying(BTreeSet<PeerName>),
}

pub struct VxlanDeviceConfig {
    pub local: PeerName,
    /// The bridge's interface index.
    pub bridge: u32,
    pub port: u16,
    /// The overlay MTU, the device's; full-size heartbeats carry it.
    pub overlay_mtu: u32,
    pub macs: SharedMacs,
    pub netlink: Netlink,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot make the vxlan device {DEVICE}: {0}")]
    Create(#[from] netdev::NetlinkError),
    #[error("cannot open a packet socket for vxlan heartbeats: {0}")]
    Socket(#[from] io::Error),
}

/// Handle on the running plane; dropping it stops the task (the device
/// stays, as the bridge does, and the next router replaces it).
pub struct VxlanDevice {
    commands: mpsc::UnboundedSender<DeviceCommand>,
    task: tokio::task::JoinHandle<()>,
}

impl VxlanDevice {
    /// Makes the device afresh (one left by an earlier router is deleted
    /// with its entries) and starts probing.
    pub async fn start(
        config: VxlanDeviceConfig,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Result<VxlanDevice, DeviceError> {
        let device = build(&config).await?;
        // Heartbeats reach the bridge only through the device: weft's
        // bridge table drops the EtherType from every other port (a
        // container could send one to the bridge too).
        let socket = netdev::packet::socket(config.bridge, ETHERTYPE, &[])?;
        // SAFETY: an OwnedFd stays open for as long as it is owned, here
        // by the AsyncFd.
        let hearing =
            unsafe { AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE) }
                .map_err(|e| DeviceError::Socket(e.into()))?;
        let speaking = netdev::packet::socket(device, 0, &[])?;
        let (commands, rx) = mpsc::unbounded_channel();
        let plane = Plane {
            config,
            reports,
            device: Some(device),
            speaking: Some(speaking),
            hearing,
            peers: BTreeMap::new(),
            carrying: BTreeSet::new(),
            down_reason: None,
        };
        let task = tokio::spawn(plane.run(rx));
        Ok(VxlanDevice { commands, task })
    }

    pub fn send(&self, command: DeviceCommand) {
        let _ = self.commands.send(command);
    }
}

impl Drop for VxlanDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Deletes a device an earlier router left, when this one runs none: its
/// static entries would hold MACs nothing maintains, and its port would
/// stay open with no guard in front of it.
pub async fn remove_leftover(netlink: &Netlink) {
    match netlink.delete_named(DEVICE).await {
        Ok(true) => tracing::info!(
            device = DEVICE,
            "removed the vxlan device of an earlier router"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(device = DEVICE, error = %e, "cannot remove the vxlan device of an earlier router")
        }
    }
}

/// Deletes a device of our name and makes ours; returns its index.
async fn build(config: &VxlanDeviceConfig) -> Result<u32, netdev::NetlinkError> {
    let netlink = &config.netlink;
    netlink.delete_named(DEVICE).await?;
    let link = netlink
        .add_vxlan_port(&VxlanPort {
            name: DEVICE,
            vni: VNI,
            port: config.port,
            mtu: config.overlay_mtu,
            bridge: config.bridge,
        })
        .await?;
    Ok(link.index)
}

struct PeerProbe {
    tunnel: PeerTunnel,
    path: VxlanPath,
    reported: Option<VxlanState>,
}

struct Plane {
    config: VxlanDeviceConfig,
    reports: mpsc::UnboundedSender<Report>,
    /// The device's index, while it exists.
    device: Option<u32>,
    /// Sends heartbeats into the device.
    speaking: Option<OwnedFd>,
    /// Reads heartbeats that reach our bridge.
    hearing: AsyncFd<OwnedFd>,
    peers: BTreeMap<PeerName, PeerProbe>,
    carrying: BTreeSet<PeerName>,
    /// Why the device is missing, once reported.
    down_reason: Option<String>,
}

impl Plane {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<DeviceCommand>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconciled = Instant::now();
        let mut buf = vec![0u8; 65536];
        loop {
            let mut changed = false;
            tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    self.command(command);
                    changed = true;
                }
                ready = self.hearing.readable() => {
                    match ready {
                        // Reads until the socket is empty, so the next
                        // wait starts from a clear readiness.
                        Ok(mut guard) => {
                            guard.clear_ready();
                            drop(guard);
                            self.hear(&mut buf);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "vxlan device: cannot wait for heartbeats");
                            return;
                        }
                    }
                }
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            self.heartbeats(now);
            if changed || now.duration_since(reconciled) >= RECONCILE_EVERY {
                reconciled = now;
                self.reconcile(now).await;
            }
        }
    }

    fn command(&mut self, command: DeviceCommand) {
        match command {
            DeviceCommand::Peer(tunnel) => {
                let full = self.config.overlay_mtu as usize + 14;
                self.peers.insert(
                    tunnel.name,
                    PeerProbe {
                        tunnel,
                        path: VxlanPath::new(Instant::now(), full),
                        reported: None,
                    },
                );
            }
            DeviceCommand::RemovePeer(peer) => {
                self.peers.remove(&peer);
                self.carrying.remove(&peer);
            }
            DeviceCommand::Carrying(set) => self.carrying = set,
        }
    }

    /// Reads every heartbeat waiting; answers pings, counts acks.
    fn hear(&mut self, buf: &mut [u8]) {
        let fd = self.hearing.get_ref().as_raw_fd();
        loop {
            // SAFETY: reads into a buffer we own, of its true length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(len) = usize::try_from(n) else {
                return; // EAGAIN, or an error the next wakeup meets again
            };
            let Some(hb) = Heartbeat::parse(&buf[..len]) else {
                continue;
            };
            let local = self.config.local;
            let Some(p) = self.peers.get_mut(&hb.sender) else {
                continue; // not a peer we probe
            };
            if let Some(ack) = p.path.on_heartbeat(Instant::now(), local, hb, len) {
                let to = netdev::bridge_mac(hb.sender);
                self.speak(&ack.frame_to(to, 0));
            }
        }
    }

    fn speak(&self, frame: &[u8]) {
        let Some(fd) = &self.speaking else { return };
        // SAFETY: sends a buffer we own, of its true length.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            tracing::trace!(error = %io::Error::last_os_error(), "cannot send a vxlan heartbeat");
        }
    }

    /// Sends the heartbeats due and reports what changed.
    fn heartbeats(&mut self, now: Instant) {
        let local = self.config.local;
        let mut due = Vec::new();
        for (name, p) in &mut self.peers {
            if let Some((seq, size)) = p.path.poll(now) {
                let hb = Heartbeat {
                    ack: false,
                    seq,
                    sender: local,
                    size: size as u16,
                };
                due.push(hb.frame_to(netdev::bridge_mac(*name), size));
            }
            let state = p.path.state(now);
            if p.reported != Some(state) {
                p.reported = Some(state);
                let _ = self.reports.send(Report::Vxlan { peer: *name, state });
            }
        }
        for frame in due {
            self.speak(&frame);
        }
    }

    /// Puts the device back if it is gone, then brings its entries and
    /// the bridge's in line with what is wanted.
    async fn reconcile(&mut self, now: Instant) {
        let Some(device) = self.ensure_device().await else {
            return;
        };
        let netlink = &self.config.netlink;
        let held = match netlink.fdb(device).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, "vxlan device: cannot read its forwarding entries");
                return;
            }
        };
        let have = held_entries(&held);
        let want = {
            let mut macs = self.config.macs.lock();
            for e in held.iter().filter(|e| in_use(e)) {
                macs.touch(e.mac, now);
            }
            let probed: BTreeMap<PeerName, Probed> = self
                .peers
                .iter()
                .map(|(name, p)| {
                    (
                        *name,
                        Probed {
                            remote: p.tunnel.remote,
                            bridge_mac: netdev::bridge_mac(*name),
                        },
                    )
                })
                .collect();
            entries::wanted(&probed, &self.carrying, macs.entries(now))
        };
        let changes = entries::changes(&have, &want);
        if changes.is_empty() {
            return;
        }
        let mut failed = Vec::new();
        for (mac, remote) in &changes.set_remote {
            if let Err(e) = netlink.fdb_to_remote(device, *mac, *remote).await {
                failed.push(e.to_string());
            }
        }
        for mac in &changes.set_bridged {
            if let Err(e) = netlink.fdb_to_port(device, *mac).await {
                failed.push(e.to_string());
            }
        }
        for mac in &changes.unset_bridged {
            if let Err(e) = netlink.fdb_delete(device, *mac, false).await {
                failed.push(e.to_string());
            }
        }
        for mac in &changes.unset_remote {
            if let Err(e) = netlink.fdb_delete(device, *mac, true).await {
                failed.push(e.to_string());
            }
        }
        tracing::debug!(
            set = changes.set_remote.len() + changes.set_bridged.len(),
            unset = changes.unset_bridged.len() + changes.unset_remote.len(),
            "vxlan device: forwarding entries brought in line"
        );
        if let Some(first) = failed.first() {
            tracing::warn!(failed = failed.len(), error = %first, "vxlan device: some forwarding entries could not be set");
        }
    }

    /// The device's index, making it again if it is gone or off the
    /// bridge; reports it down (once) while it cannot be made.
    async fn ensure_device(&mut self) -> Option<u32> {
        let netlink = &self.config.netlink;
        let intact = match (self.device, netlink.link(DEVICE).await) {
            (Some(index), Ok(Some(link))) => {
                link.index == index && link.controller == Some(self.config.bridge)
            }
            // Not known now: never rebuild (and flush) a device on a
            // failed look-up; the next pass looks again.
            (Some(_), Err(e)) => {
                tracing::debug!(error = %e, "vxlan device: cannot look it up");
                return None;
            }
            _ => false,
        };
        if intact {
            return self.device;
        }
        if self.device.is_some() {
            tracing::warn!(
                device = DEVICE,
                "the vxlan device was deleted or taken off the bridge: making it again"
            );
        }
        let made = match build(&self.config).await {
            Ok(index) => netdev::packet::socket(index, 0, &[])
                .map(|s| (index, s))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match made {
            Ok((index, socket)) => {
                self.device = Some(index);
                self.speaking = Some(socket);
                if self.down_reason.take().is_some() {
                    tracing::info!(device = DEVICE, "vxlan device back");
                    let _ = self.reports.send(Report::Datapath {
                        up: true,
                        reason: None,
                    });
                }
                self.device
            }
            Err(reason) => {
                self.device = None;
                self.speaking = None;
                if self.down_reason.is_none() {
                    let _ = self.reports.send(Report::Datapath {
                        up: false,
                        reason: Some(reason.clone()),
                    });
                    self.down_reason = Some(reason);
                }
                None
            }
        }
    }
}

/// What the kernel holds, as [`Entries`]: the device's entries with a
/// remote, the bridge's static ones (not the port's own address).
fn held_entries(held: &[FdbEntry]) -> Entries {
    let mut have = Entries::default();
    for e in held {
        match (e.device, e.remote) {
            (true, Some(remote)) => {
                have.remote.insert(e.mac, remote);
            }
            (false, _) if e.static_ => {
                have.bridged.insert(e.mac);
            }
            _ => {}
        }
    }
    have
}

/// Whether a device entry sent a frame recently.
fn in_use(e: &FdbEntry) -> bool {
    e.device && e.idle_ticks.is_some_and(|t| t < IN_USE_TICKS)
}
