//! The data paths of a router's connections as one pure machine: it
//! negotiates each connection's data path (the offer we send, the peer's
//! offer that starts it), keeps what each path has shown (the userspace
//! path's heartbeats, the vxlan heartbeats, whether our datapath or vxlan
//! device is up),
//! re-chooses the overlay whenever any of that changes, and says what the
//! planes and the mesh must be told. The router feeds it events and
//! carries out its [`Action`]s.
//!
//! It keeps no timers of its own: the heartbeat machines of the two planes
//! keep time and report here when what they show changes. Randomness (the
//! session id a connection offers) comes in with the event.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use ipnet::IpNet;
use weft_crypto::DataKeys;

use super::{
    Inputs, Overlay, Reason, choose,
    heartbeat::VxlanState,
    negotiation::{Ignored, Negotiation, PeerOffer, Setup, Start},
};
use crate::{
    fastdp::PeerTunnel,
    identity::PeerName,
    mesh::{ConnId, ControlMessage},
    userspace::switch::PathReport,
};

/// What the machine needs to know of its router.
#[derive(Clone, Debug)]
pub struct DataPathsConfig {
    /// The UDP port of our userspace path, offered to every peer.
    pub udp_port: u16,
    /// Our vxlan port, offered while our datapath is up.
    pub fastdp_port: Option<u16>,
    /// Between addresses of these subnets data goes unsealed.
    pub trusted_subnets: Vec<IpNet>,
    /// Whether a fast datapath plane runs at all (it may still go down).
    pub fastdp: bool,
    /// The port of our vxlan device, when that plane runs (never with a
    /// fast datapath).
    pub vxlan_device_port: Option<u16>,
}

/// A control connection that came up.
#[derive(Clone, Debug)]
pub struct Connected {
    pub conn: ConnId,
    pub peer: PeerName,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub keys: Option<DataKeys>,
    /// The connection the mesh holds for the peer now.
    pub current: Option<ConnId>,
    /// A fresh random id (non-zero) for the peer to put on its datagrams.
    pub session: u32,
    /// The control protocol version of the connection.
    pub version: u16,
}

/// The first control protocol version whose routers read
/// [`ControlMessage::DataPathOffer`]; an older peer is sent the offer it
/// knows, which cannot name a vxlan device.
pub const OFFER_VERSION: u16 = 3;

#[derive(Clone, Debug)]
pub enum Event {
    Connected(Connected),
    /// The peer's offer came on `conn`; `current` is the connection the
    /// mesh holds for the peer now.
    Offered {
        conn: ConnId,
        current: Option<ConnId>,
        offer: PeerOffer,
    },
    Closed {
        conn: ConnId,
    },
    /// The vxlan heartbeats to a peer (over whichever kernel path the two
    /// share) show something new.
    Vxlan {
        peer: PeerName,
        state: VxlanState,
    },
    /// Our own datapath went away or came back.
    LocalDatapath {
        up: bool,
    },
    /// Our vxlan device went away (and could not be put back) or came back.
    LocalVxlanDevice {
        up: bool,
    },
    /// The userspace path to a peer changed.
    Userspace(PathReport),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this offer on the connection.
    Send {
        conn: ConnId,
        message: ControlMessage,
    },
    /// Start the userspace path to a peer.
    StartUserspace(Start),
    /// Point a vxlan tunnel at a peer.
    StartFastdp(PeerTunnel),
    /// Probe a peer through our vxlan device.
    StartVxlanDevice(PeerTunnel),
    /// Stop every plane's path to a peer.
    Stop(PeerName),
    /// The peers on the fast datapath now, for the userspace path and the
    /// fast datapath.
    OnFastdp(BTreeSet<PeerName>),
    /// The peers on the vxlan device now, for that plane.
    OnVxlanDevice(BTreeSet<PeerName>),
    /// Whether the peer's connection carries data, for the mesh's routes.
    Usable { peer: PeerName, usable: bool },
}

/// One peer's data path, once started.
#[derive(Clone, Debug)]
pub struct PeerPath {
    /// Its userspace data are sealed.
    pub sealed: bool,
    /// What the userspace path last said.
    pub userspace: Option<PathReport>,
    inputs: Inputs,
}

impl PeerPath {
    /// The overlay and why not the fast datapath: always made afresh from
    /// the inputs, so it cannot lag behind them.
    fn choice(&self) -> (Overlay, Option<Reason>) {
        choose(self.inputs)
    }

    pub fn overlay(&self) -> Overlay {
        self.choice().0
    }

    /// Why it is not on the fast datapath.
    pub fn reason(&self) -> Option<Reason> {
        self.choice().1
    }

    /// Whether the connection carries data at all. The vxlan device
    /// carries only unicast to MACs the userspace path taught us, and
    /// never a broadcast (ARP): it needs the userspace path too.
    pub fn usable(&self) -> bool {
        self.overlay() == Overlay::Fastdp || self.userspace.as_ref().is_some_and(|r| r.usable)
    }
}

pub struct DataPaths {
    config: DataPathsConfig,
    local_datapath: bool,
    local_device: bool,
    negotiation: Negotiation,
    peers: HashMap<PeerName, PeerPath>,
    /// The sets last announced by [`Action::OnFastdp`] and
    /// [`Action::OnVxlanDevice`].
    on_fastdp: BTreeSet<PeerName>,
    on_device: BTreeSet<PeerName>,
    actions: VecDeque<Action>,
}

impl DataPaths {
    /// A fast datapath plane starts up (`config.fastdp`), or a vxlan
    /// device, or neither.
    pub fn new(config: DataPathsConfig) -> DataPaths {
        DataPaths {
            local_datapath: config.fastdp,
            local_device: config.vxlan_device_port.is_some(),
            config,
            negotiation: Negotiation::default(),
            peers: HashMap::new(),
            on_fastdp: BTreeSet::new(),
            on_device: BTreeSet::new(),
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The peer's data path, once started.
    pub fn peer(&self, peer: PeerName) -> Option<&PeerPath> {
        self.peers.get(&peer)
    }

    /// Every started data path.
    pub fn peers(&self) -> impl Iterator<Item = &PeerPath> {
        self.peers.values()
    }

    /// The peer of a connection that is negotiating or carries data.
    pub fn peer_of(&self, conn: ConnId) -> Option<PeerName> {
        self.negotiation.peer_of(conn)
    }

    pub fn handle(&mut self, event: Event) {
        match event {
            Event::Connected(c) => self.connected(c),
            Event::Offered {
                conn,
                current,
                offer,
            } => self.offered(conn, current, offer),
            Event::Closed { conn } => {
                if let Some(peer) = self.negotiation.closed(conn) {
                    self.peers.remove(&peer);
                    self.actions.push_back(Action::Stop(peer));
                    self.announce_kernel_sets();
                }
            }
            Event::Vxlan { peer, state } => self.update(peer, |p| {
                p.inputs.vxlan = match state {
                    VxlanState::Up { full_size } => Some(full_size),
                    VxlanState::Probing | VxlanState::Down => None,
                };
                p.inputs.vxlan_tried |= state != VxlanState::Probing;
            }),
            Event::LocalDatapath { up } => {
                self.local_datapath = up;
                self.update_all(|i| i.local_datapath = up);
            }
            Event::LocalVxlanDevice { up } => {
                self.local_device = up;
                self.update_all(|i| i.local_device = up);
            }
            Event::Userspace(report) => self.update(report.peer, |p| p.userspace = Some(report)),
        }
    }

    fn connected(&mut self, c: Connected) {
        let Connected {
            conn,
            peer,
            remote,
            local,
            keys,
            current,
            session,
            version,
        } = c;
        let trusted = |ip: IpAddr| self.config.trusted_subnets.iter().any(|n| n.contains(&ip));
        let setup = Setup {
            peer,
            remote: remote.ip(),
            local: local.ip(),
            encrypt: keys.is_some() && !(trusted(local.ip()) && trusted(remote.ip())),
            keys,
            session,
        };
        let Some(offer) = self.negotiation.connected(conn, setup, current) else {
            return;
        };
        let fastdp_port = self.config.fastdp_port.filter(|_| self.local_datapath);
        let message = if version >= OFFER_VERSION {
            ControlMessage::DataPathOffer {
                udp_port: self.config.udp_port,
                session: offer.session,
                encrypt: offer.encrypt,
                fastdp_port,
                vxlan_device_port: self.config.vxlan_device_port.filter(|_| self.local_device),
            }
        } else {
            ControlMessage::DataPath {
                udp_port: self.config.udp_port,
                session: offer.session,
                encrypt: offer.encrypt,
                vxlan_port: fastdp_port,
            }
        };
        self.actions.push_back(Action::Send { conn, message });
    }

    fn offered(&mut self, conn: ConnId, current: Option<ConnId>, offer: PeerOffer) {
        let start = match self.negotiation.offered(conn, current, &offer) {
            Ok(start) => start,
            Err(Ignored::NoKeys) => {
                tracing::error!(conn, "the peer wants encrypted data but there are no keys");
                return;
            }
            Err(why) => {
                tracing::debug!(conn, %why, "data path offer ignored");
                return;
            }
        };
        let peer = start.peer;
        let sealed = start.keys.is_some();
        let inputs = Inputs {
            local_datapath: self.local_datapath,
            peer_datapath: offer.vxlan_port.is_some(),
            local_device: self.local_device,
            peer_device: offer.vxlan_device_port.is_some(),
            encrypt: sealed,
            vxlan: None,
            vxlan_tried: false,
        };
        // The plane that probes the peer: the kernel path the two hosts
        // would share with every plane up (ours may be down just now and
        // come back).
        let could = super::kernel_path(Inputs {
            local_datapath: self.config.fastdp,
            local_device: self.config.vxlan_device_port.is_some(),
            ..inputs
        });
        let tunnel = match (start.remote, start.local) {
            (IpAddr::V4(remote), IpAddr::V4(local)) if !sealed => Some(PeerTunnel {
                name: peer,
                remote,
                local,
            }),
            _ => None,
        };
        self.actions.push_back(Action::StartUserspace(start));
        match (could, tunnel) {
            (Some(Overlay::Fastdp), Some(t)) => self.actions.push_back(Action::StartFastdp(t)),
            (Some(Overlay::Vxlan), Some(t)) => self.actions.push_back(Action::StartVxlanDevice(t)),
            _ => {}
        }
        self.peers.insert(
            peer,
            PeerPath {
                sealed,
                userspace: None,
                inputs,
            },
        );
        tracing::info!(%peer, sealed, "data path started");
        self.update(peer, |_| {});
    }

    /// Applies `change` to every started path's inputs, in a fixed order.
    fn update_all(&mut self, change: impl Fn(&mut Inputs)) {
        let mut peers: Vec<PeerName> = self.peers.keys().copied().collect();
        peers.sort();
        for peer in peers {
            self.update(peer, |p| change(&mut p.inputs));
        }
    }

    /// Applies `change` to a started path and says what it changed: the
    /// overlay (logged), whether the connection carries data (to the mesh)
    /// and the kernel paths' peers (to the planes).
    fn update(&mut self, peer: PeerName, change: impl FnOnce(&mut PeerPath)) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let before = p.choice();
        change(p);
        let choice = p.choice();
        if choice != before {
            tracing::info!(
                %peer,
                overlay = %choice.0,
                reason = choice.1.map(Reason::as_str),
                "connection overlay changed"
            );
        }
        let usable = p.usable();
        self.actions.push_back(Action::Usable { peer, usable });
        self.announce_kernel_sets();
    }

    fn announce_kernel_sets(&mut self) {
        let on = |overlay: Overlay| -> BTreeSet<PeerName> {
            self.peers
                .iter()
                .filter(|(_, p)| p.overlay() == overlay)
                .map(|(name, _)| *name)
                .collect()
        };
        let (fastdp, device) = (on(Overlay::Fastdp), on(Overlay::Vxlan));
        if fastdp != self.on_fastdp {
            self.on_fastdp = fastdp.clone();
            self.actions.push_back(Action::OnFastdp(fastdp));
        }
        if device != self.on_device {
            self.on_device = device.clone();
            self.actions.push_back(Action::OnVxlanDevice(device));
        }
    }
}

#[cfg(test)]
mod tests;
