//! The fast datapath's vxlan heartbeats, on a thread of their own: they
//! decide whether a connection may use the datapath, so the datapath
//! thread's work must not delay them. Its table work (a pass over a table
//! of thousands of flows took seconds under emulation) once held them back
//! long enough for the peer to declare the path dead and flush every flow,
//! which made the table churn harder still.
//!
//! The thread owns the heartbeat socket (where the heartbeat flow sends
//! peers' heartbeats), a netlink client of its own to send heartbeats and
//! answers through the datapath, and each peer's [`VxlanPath`]; it tells
//! the router what the paths show. The router tells it of peers directly;
//! only what the datapath thread alone knows comes from there: the ports
//! of a rebuilt datapath, and heartbeats that came up as misses because
//! their flow was missing.

use std::{
    collections::HashMap,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use weft_odp::{Action, Client, Error as OdpError, KeyAttr, UpcallSocket};

use super::{PeerTunnel, Ports, Report, tunnels::Tunnels};
use crate::{
    identity::PeerName,
    overlay::heartbeat::{Heartbeat, VxlanPath, VxlanState},
    worker::{self, Mailbox},
};

pub enum HeartbeatCommand {
    Peer(PeerTunnel),
    RemovePeer(PeerName),
    /// The datapath was built again: heartbeats leave through these ports.
    Ports(Ports),
    /// A peer's heartbeat that came up as a miss, because the heartbeat
    /// flow was missing (deleted by another program, say).
    Arrived {
        peer: PeerName,
        heartbeat: Heartbeat,
        len: usize,
    },
    Stop,
}

/// Handle on the heartbeat thread; dropping it stops the thread.
pub struct Heartbeats {
    worker: worker::Worker<HeartbeatCommand>,
    upcall_pid: u32,
}

pub struct HeartbeatConfig {
    pub local: PeerName,
    /// The largest frame the overlay carries, its MTU plus the Ethernet
    /// header: full-size heartbeats are this big.
    pub full_size: usize,
    pub reports: tokio::sync::mpsc::UnboundedSender<Report>,
}

impl Heartbeats {
    pub fn start(config: HeartbeatConfig, ports: Ports) -> Result<Heartbeats, OdpError> {
        let socket_error = |e: std::io::Error| OdpError::Socket(e.to_string());
        let (sender, mailbox) = worker::mailbox().map_err(socket_error)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = worker::Worker::spawn(
            "weft-fastdp-hb",
            sender,
            || HeartbeatCommand::Stop,
            move || match Beater::new(config, ports, mailbox) {
                Ok(beater) => {
                    let _ = ready_tx.send(Ok(beater.socket.port_id()));
                    beater.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            },
        )
        .map_err(socket_error)?;
        let upcall_pid = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(OdpError::Socket("the heartbeat thread died".into())))?;
        Ok(Heartbeats { worker, upcall_pid })
    }

    /// The netlink port id of the heartbeat socket, for the heartbeat
    /// flow's userspace action.
    pub fn upcall_pid(&self) -> u32 {
        self.upcall_pid
    }

    pub fn send(&self, command: HeartbeatCommand) {
        self.worker.send(command)
    }

    pub fn sender(&self) -> worker::Sender<HeartbeatCommand> {
        self.worker.sender()
    }
}

struct Peer {
    path: VxlanPath,
    reported: Option<VxlanState>,
}

struct Beater {
    config: HeartbeatConfig,
    client: Client,
    socket: UpcallSocket,
    ports: Ports,
    tunnels: Tunnels,
    peers: HashMap<PeerName, Peer>,
    mailbox: Mailbox<HeartbeatCommand>,
}

impl Beater {
    fn new(
        config: HeartbeatConfig,
        ports: Ports,
        mailbox: Mailbox<HeartbeatCommand>,
    ) -> Result<Beater, OdpError> {
        let socket = UpcallSocket::open()?;
        socket.set_nonblocking()?;
        Ok(Beater {
            config,
            client: Client::connect()?,
            socket,
            ports,
            tunnels: Tunnels::default(),
            peers: HashMap::new(),
            mailbox,
        })
    }

    fn run(mut self) {
        loop {
            let now = Instant::now();
            let deadline = self
                .peers
                .values()
                .map(|p| p.path.deadline())
                .min()
                .unwrap_or(now + Duration::from_secs(1));
            let mut fds = [
                worker::readable(self.socket.as_raw_fd()),
                worker::readable(self.mailbox.fd()),
            ];
            if let Err(e) = worker::poll(&mut fds, now, deadline) {
                // Without heartbeats no path can be vouched for: the
                // router must stop using the datapath, not keep the last
                // state it heard.
                tracing::error!(error = %e, "fast datapath heartbeat poll failed");
                let reason = format!("the fast datapath's heartbeats stopped: {e}");
                let _ = self.config.reports.send(Report::Datapath {
                    up: false,
                    reason: Some(reason),
                });
                return;
            }
            if fds[1].revents != 0 && !self.commands() {
                return;
            }
            if fds[0].revents != 0 {
                self.upcalls();
            }
            self.beat(Instant::now());
        }
    }

    fn commands(&mut self) -> bool {
        while let Some(command) = self.mailbox.next() {
            match command {
                HeartbeatCommand::Peer(tunnel) => {
                    self.tunnels.insert(tunnel);
                    let path = VxlanPath::new(Instant::now(), self.config.full_size);
                    let peer = Peer {
                        path,
                        reported: None,
                    };
                    self.peers.insert(tunnel.name, peer);
                }
                HeartbeatCommand::RemovePeer(name) => {
                    self.tunnels.remove(name);
                    self.peers.remove(&name);
                }
                HeartbeatCommand::Ports(ports) => self.ports = ports,
                HeartbeatCommand::Arrived {
                    peer,
                    heartbeat,
                    len,
                } => self.arrived(peer, heartbeat, len, Instant::now()),
                HeartbeatCommand::Stop => return false,
            }
        }
        true
    }

    /// Everything the heartbeat flow sent up: nothing but peers'
    /// heartbeats reaches this socket, and they are few.
    fn upcalls(&mut self) {
        loop {
            let batch = match self.socket.recv() {
                Ok(b) if b.is_empty() => return,
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat upcall socket");
                    return;
                }
            };
            let now = Instant::now();
            for upcall in batch.into_iter().flatten() {
                let Some(peer) = self.tunnels.sender(&upcall.key) else {
                    continue;
                };
                if let Some(hb) = Heartbeat::parse(&upcall.packet) {
                    self.arrived(peer, hb, upcall.packet.len(), now);
                }
            }
        }
    }

    fn arrived(&mut self, peer: PeerName, hb: Heartbeat, len: usize, now: Instant) {
        let local = self.config.local;
        let answer = self
            .peers
            .get_mut(&peer)
            .and_then(|p| p.path.on_heartbeat(now, local, hb, len));
        if let Some(ack) = answer {
            self.send(peer, &ack.frame(0));
        }
    }

    fn send(&mut self, peer: PeerName, frame: &[u8]) {
        let Some(set) = self.tunnels.set_tunnel(self.config.local, peer) else {
            return;
        };
        let actions = vec![set, Action::Output(self.ports.vxlan)];
        let key = vec![KeyAttr::InPort(self.ports.tap)];
        if let Err(e) = self.client.execute(self.ports.dp, frame, key, actions) {
            tracing::trace!(error = %e, %peer, "cannot send a vxlan heartbeat");
        }
    }

    /// Sends the heartbeats that are due and reports paths whose state
    /// changed.
    fn beat(&mut self, now: Instant) {
        let names: Vec<PeerName> = self.peers.keys().copied().collect();
        for name in names {
            if let Some((seq, size)) = self.peers.get_mut(&name).and_then(|p| p.path.poll(now)) {
                let hb = Heartbeat {
                    ack: false,
                    seq,
                    sender: self.config.local,
                    size: size as u16,
                };
                self.send(name, &hb.frame(size));
            }
            let p = self.peers.get_mut(&name).expect("listed above");
            let state = p.path.state(now);
            if p.reported != Some(state) {
                p.reported = Some(state);
                let report = Report::Vxlan { peer: name, state };
                let _ = self.config.reports.send(report);
            }
        }
    }
}
