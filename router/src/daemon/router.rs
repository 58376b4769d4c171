//! The router's central task: it owns the mesh, starts connection tasks,
//! passes their events in and the mesh's decisions out, and answers the API.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::{
    api::report::{self, Report, RouterView},
    daemon::{
        connection::{self, ConnCommand, Context, Event},
        handshakes::{Decision, Handshakes},
        peers::PeerMemory,
        throttle::Summary,
    },
    fastdp::{self, Fastdp, FastdpCommand},
    firewall::Firewall,
    hosts::HostsHandle,
    ipam::{IpamHandle, IpamRequest},
    mesh::{ConnId, ControlMessage, Input, Mesh, Output, Routes, Source},
    overlay::{DataPaths, negotiation::PeerOffer, paths},
    userspace::{
        engine::DataPlane,
        switch::{PathReport, PeerSpec, UserspaceCommand},
    },
    vxlan_device::{DeviceCommand, VxlanDevice},
};

/// Failed inbound attempts shown in `weft status connections`: the last
/// few, for a few minutes, so a peer with the wrong password is visible on
/// this side too.
const RECENT_FAILURES: usize = 16;
const FAILURE_MEMORY: Duration = Duration::from_secs(300);
/// How often a flood of failing or turned-away connections is summed up in
/// the log.
const FLOOD_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long a stopping router waits for IPAM's last commit.
const IPAM_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Sends the request `make` builds to the router task and waits for the
/// answer; `None` once the router has stopped.
pub async fn ask<T>(
    requests: &mpsc::Sender<Request>,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    requests.send(make(tx)).await.ok()?;
    rx.await.ok()
}

/// Requests from the API.
#[derive(Debug)]
pub enum Request {
    Report(oneshot::Sender<Report>),
    /// Peers as given (a name or an address) and where each resolved.
    Connect {
        peers: Vec<(String, SocketAddr)>,
        replace: bool,
        done: oneshot::Sender<()>,
    },
    Forget {
        peers: Vec<(String, SocketAddr)>,
        done: oneshot::Sender<()>,
    },
    Metrics(oneshot::Sender<Metrics>),
    Ipam(IpamRequest),
    Names(crate::names::NamesRequest),
    Policy(crate::policy::PolicyRequest),
    /// The host's gateway addresses changed (`weft expose`, `weft hide`).
    Gateway {
        addresses: Vec<ipnet::Ipv4Net>,
        done: oneshot::Sender<()>,
    },
    Stop,
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub peers: usize,
    pub connections_by_state: BTreeMap<String, usize>,
    pub targets_by_state: BTreeMap<String, usize>,
    pub refused_by_us: u64,
    pub failed_attempts: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub sent_by_kind: BTreeMap<String, u64>,
    /// The data path's counters by name.
    pub data: BTreeMap<&'static str, u64>,
    /// The fast datapath's counters by name and its flows, when it runs.
    pub fastdp: Vec<(&'static str, u64)>,
    pub fastdp_flows: Option<u64>,
    /// The DNS server's counters by name, and the names that answer.
    pub dns: Vec<(&'static str, u64)>,
    pub names: usize,
    /// Packets of new connections each policy let through, by policy id.
    pub policy_allowed: Vec<(String, u64)>,
    /// Packets dropped by policy, by (container, direction).
    pub policy_dropped: Vec<((String, &'static str), u64)>,
    /// Conditioned containers by what conditions them (`kernel`,
    /// `conditioner`).
    pub conditioned: BTreeMap<String, usize>,
    /// The conditioners' counters: container, rule, direction, counter.
    pub conditioner: Vec<([String; 3], weft_condition::Counters)>,
    /// Connections by overlay and, on the userspace path, why not the
    /// fast datapath ("" on the fast datapath).
    pub overlays: BTreeMap<(&'static str, &'static str), usize>,
}

/// An incoming connection that failed before it was established.
pub struct Failure {
    pub at: Instant,
    pub remote: SocketAddr,
    /// Who the peer said it was (unauthenticated).
    pub peer: Option<crate::identity::PeerIdentity>,
    pub reason: String,
}

pub struct Settings {
    /// The peers remembered across restarts.
    pub peers: PeerMemory,
    pub port: u16,
    pub encryption: bool,
    pub discovery: bool,
    pub conn_limit: usize,
    /// Subnets between whose hosts data goes unencrypted.
    pub trusted_subnets: Vec<IpNet>,
    /// MTU of the containers' interfaces.
    pub overlay_mtu: u32,
    /// The vxlan port, when the fast datapath runs.
    pub fastdp_port: Option<u16>,
    /// The vxlan port, when the vxlan device runs.
    pub vxlan_device_port: Option<u16>,
    /// Why there is no fast datapath, when there is none.
    pub no_datapath: Option<String>,
}

/// The router's part in the host's own network: its gateway, what it
/// tells the mesh about the host, and weft's firewall table.
pub struct HostSide {
    pub hosts: HostsHandle,
    /// Every router's connections as it sees them; ours published from
    /// our report at most every [`LINKS_EVERY`].
    pub links: crate::links::LinksHandle,
    /// The mesh's names, ours stored in `names_file` whenever they change.
    pub names: crate::names::records::NamesHandle,
    pub names_file: std::path::PathBuf,
    pub names_stored: u64,
    /// The mesh's policies and endpoints, stored in `policy_file` and
    /// compiled into the firewall whenever they change.
    pub policy: crate::policy::records::PolicyRecords,
    pub policy_file: std::path::PathBuf,
    /// The Kubernetes API server's view, which replaces the records'
    /// policies and labels once listed (`--kubernetes`).
    pub policy_cluster: Option<crate::policy::ClusterHandle>,
    /// The generations of the records and of the cluster view compiled last.
    pub policy_seen: Option<(u64, u64)>,
    /// What the last compile said: problems, and whether br_netfilter is
    /// on (policy needs it).
    pub policy_status: std::sync::Arc<std::sync::Mutex<PolicyStatus>>,
    /// Tells the DNS server where to listen: the gateway's addresses.
    pub dns_addresses: tokio::sync::watch::Sender<Vec<std::net::Ipv4Addr>>,
    pub firewall: Firewall,
    /// The host's addresses on the bridge.
    pub gateway: Vec<ipnet::Ipv4Net>,
    /// The host's addresses that answer containers directly once it has a
    /// gateway ([`crate::netdev::direct_addresses`]).
    pub direct: Vec<std::net::Ipv4Addr>,
}

impl HostSide {
    /// Tells the mesh what containers may reach here untranslated: the
    /// host's direct addresses, but only while it has a gateway to answer
    /// them through.
    fn publish(&self) {
        let direct = if self.gateway.is_empty() {
            Vec::new()
        } else {
            self.direct.clone()
        };
        self.hosts.lock().set_local(direct, self.gateway.clone());
        let addresses = self.gateway.iter().map(|g| g.addr()).collect();
        self.dns_addresses.send_if_modified(|current| {
            let changed = *current != addresses;
            *current = addresses;
            changed
        });
    }

    /// Compiles what this host enforces and stores the records, when they
    /// changed (the firewall keeper writes the table in one transaction).
    fn sync_policy(&mut self) {
        let records = self.policy.lock();
        let cluster_generation = self.policy_cluster.as_ref().map_or(0, |c| {
            c.lock().unwrap_or_else(|p| p.into_inner()).generation()
        });
        let generation = (records.generation(), cluster_generation);
        if self.policy_seen == Some(generation) {
            return;
        }
        let known = crate::policy::Known::current(&records, self.policy_cluster.as_ref());
        // A change of the cluster view alone leaves the records, and so
        // policy.json, as they were: nothing to write.
        let records_changed = self.policy_seen.map(|(r, _)| r) != Some(generation.0);
        let stored = records_changed.then(|| crate::policy::Stored::of(&records));
        drop(records);
        let plan = known.plan_here();
        let rendered = weft_policy::nft::render(&plan);
        let mut bridge_error = None;
        if !plan.pods.is_empty()
            && let Err(e) = crate::policy::bridge_calls_iptables()
        {
            tracing::error!(error = %e, "policy cannot see traffic between this host's containers");
            bridge_error = Some(e.to_string());
        }
        for problem in &known.problems {
            tracing::warn!(%problem, "policy");
        }
        *self.policy_status.lock().unwrap_or_else(|p| p.into_inner()) = PolicyStatus {
            problems: known.problems.clone(),
            bridge_error,
            plan,
            policies: known.policies.len(),
            endpoints: known.inventory.endpoints.len(),
        };
        self.firewall.update(|r| r.policy = rendered);
        match stored.map_or(Ok(()), |s| s.save(&self.policy_file)) {
            Ok(()) => self.policy_seen = Some(generation),
            Err(e) => {
                tracing::warn!(error = %e, file = %self.policy_file.display(), "cannot store the policies")
            }
        }
    }

    /// Stores our names if they changed since last stored.
    fn store_names(&mut self) {
        let names = self.names.lock();
        if names.generation() == self.names_stored {
            return;
        }
        let stored = crate::names::Stored::of(&names);
        let generation = names.generation();
        drop(names);
        match stored.save(&self.names_file) {
            Ok(()) => self.names_stored = generation,
            // Tried again at the next change; the names keep working.
            Err(e) => {
                tracing::warn!(error = %e, file = %self.names_file.display(), "cannot store the names")
            }
        }
    }
}

/// What the last policy compile said, for status and checks.
#[derive(Clone, Debug, Default)]
pub struct PolicyStatus {
    pub problems: Vec<String>,
    pub bridge_error: Option<String>,
    /// What this host enforces.
    pub plan: weft_policy::Plan,
    pub policies: usize,
    pub endpoints: usize,
}

/// The data planes the router drives, and the channels they report on.
pub struct Planes {
    pub data: DataPlane,
    pub reports: tokio::sync::mpsc::UnboundedReceiver<PathReport>,
    /// None when the kernel has no usable datapath.
    pub fastdp: Option<Fastdp>,
    pub fastdp_reports: tokio::sync::mpsc::UnboundedReceiver<fastdp::Report>,
    /// None when the fast datapath runs, or the vxlan device could not be
    /// made.
    pub vxlan_device: Option<VxlanDevice>,
    pub device_reports: tokio::sync::mpsc::UnboundedReceiver<fastdp::Report>,
}

pub struct Router {
    mesh: Mesh,
    ctx: Context,
    settings: Settings,
    conns: BTreeMap<ConnId, mpsc::Sender<ConnCommand>>,
    next_conn: ConnId,
    events: mpsc::Receiver<Event>,
    inbound_failures: VecDeque<Failure>,
    failed_attempts: u64,
    /// Incoming handshakes in progress, and how to stop each.
    handshakes: Handshakes,
    handshake_tasks: HashMap<ConnId, tokio::task::AbortHandle>,
    /// Log lines for connections turned away or failing before they are
    /// established: a flood is one line per interval.
    turned_away_log: Summary,
    failed_log: Summary,
    started: Instant,
    data: DataPlane,
    reports: tokio::sync::mpsc::UnboundedReceiver<PathReport>,
    /// Each connection's data path and overlay.
    paths: DataPaths,
    sent_routes: Arc<Routes>,
    fastdp: Option<Fastdp>,
    fastdp_reports: tokio::sync::mpsc::UnboundedReceiver<fastdp::Report>,
    vxlan_device: Option<VxlanDevice>,
    device_reports: tokio::sync::mpsc::UnboundedReceiver<fastdp::Report>,
    /// The peers the vxlan device probes: the only senders the firewall
    /// lets through to its port.
    vxlan_peers: BTreeMap<crate::identity::PeerName, std::net::Ipv4Addr>,
    ipam: IpamHandle,
    /// Notified when IPAM's state reached the disk: answers and messages
    /// held for it may go.
    ipam_stored: Arc<tokio::sync::Notify>,
    host: HostSide,
    /// The hosts channel's generation whose direct hosts the firewall has.
    hosts_seen: Option<u64>,
    /// When our links were last taken from our connections.
    links_taken: Option<Instant>,
}

/// How often our links are taken from our connections (and gossiped if
/// they changed): a path's change reaches other routers' pages within
/// about this, and a burst of events costs one reading.
const LINKS_EVERY: Duration = Duration::from_millis(500);

impl Router {
    pub fn new(
        mesh: Mesh,
        ctx: Context,
        events: mpsc::Receiver<Event>,
        settings: Settings,
        planes: Planes,
        ipam: IpamHandle,
        host: HostSide,
    ) -> Router {
        host.publish();
        let Planes {
            data,
            reports,
            fastdp,
            fastdp_reports,
            vxlan_device,
            device_reports,
        } = planes;
        let ipam_stored = ipam.lock().stored_signal();
        Router {
            ipam_stored,
            ipam,
            host,
            hosts_seen: None,
            links_taken: None,
            paths: DataPaths::new(paths::DataPathsConfig {
                udp_port: settings.port,
                fastdp_port: settings.fastdp_port,
                trusted_subnets: settings.trusted_subnets.clone(),
                fastdp: fastdp.is_some(),
                vxlan_device_port: settings.vxlan_device_port,
            }),
            fastdp,
            fastdp_reports,
            vxlan_device,
            device_reports,
            vxlan_peers: BTreeMap::new(),
            sent_routes: mesh.data_routes(),
            data,
            reports,
            mesh,
            ctx,
            settings,
            conns: BTreeMap::new(),
            next_conn: 1,
            events,
            inbound_failures: VecDeque::new(),
            failed_attempts: 0,
            handshakes: Handshakes::default(),
            handshake_tasks: HashMap::new(),
            turned_away_log: Summary::new(FLOOD_LOG_EVERY),
            failed_log: Summary::new(FLOOD_LOG_EVERY),
            started: Instant::now(),
        }
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        self.next_conn
    }

    /// Runs until stopped by the API or `shutdown`.
    pub async fn run(
        mut self,
        listener: TcpListener,
        mut requests: mpsc::Receiver<Request>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let deadline = tokio::time::Instant::from_std(self.mesh.next_timeout());
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => self.accept(stream, remote),
                    Err(e) => tracing::warn!(error = %e, "accept failed"),
                },
                Some(event) = self.events.recv() => self.on_event(event),
                Some(report) = self.reports.recv() => self.on_path(report),
                Some(report) = self.fastdp_reports.recv() => self.on_kernel_plane(report, false),
                Some(report) = self.device_reports.recv() => self.on_kernel_plane(report, true),
                request = requests.recv() => match request {
                    Some(Request::Stop) | None => break,
                    Some(request) => self.on_request(request).await,
                },
                _ = tokio::time::sleep_until(deadline) => self.mesh.handle(Instant::now(), Input::Tick),
                _ = self.ipam_stored.notified() => {
                    self.ipam.lock().on_stored();
                    // The mesh polls IPAM for the messages that may go now.
                    self.mesh.handle(Instant::now(), Input::Tick);
                }
                _ = &mut shutdown => break,
            }
            self.drain();
            self.ipam.lock().finish();
            self.sync_mesh_hosts();
            self.publish_links(Instant::now());
            self.settings.peers.save_if_changed();
            self.host.store_names();
            self.host.sync_policy();
            let admission = self.mesh.admission();
            if *self.ctx.admission.read().unwrap_or_else(|p| p.into_inner()) != admission {
                *self
                    .ctx
                    .admission
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = admission;
            }
            let routes = self.mesh.data_routes();
            if !Arc::ptr_eq(&routes, &self.sent_routes) {
                self.data.send(UserspaceCommand::Routes(routes.clone()));
                if let Some(f) = &self.fastdp {
                    f.send(FastdpCommand::Routes(routes.clone()));
                }
                self.sent_routes = routes;
            }
        }
        // What IPAM did is on disk before the process ends (nothing that
        // depends on it left; this only saves a restart from redoing it).
        self.ipam.lock().flush(IPAM_FLUSH_LIMIT);
        for (_, commands) in std::mem::take(&mut self.conns) {
            let _ = commands.try_send(ConnCommand::Close {
                reason: "the router is stopping".into(),
                refuse: false,
            });
        }
        tracing::info!("router stopped");
    }

    /// Tells the mesh how our connections are (overlay, MTU, reason),
    /// when [`LINKS_EVERY`] has passed since we last looked.
    fn publish_links(&mut self, now: Instant) {
        if self
            .links_taken
            .is_some_and(|t| now.duration_since(t) < LINKS_EVERY)
        {
            return;
        }
        self.links_taken = Some(now);
        let connections = report::connections(&self.view());
        let record = crate::links::from_connections(&connections);
        self.host.links.lock().publish(record);
    }

    /// Gives the firewall the mesh hosts containers reach untranslated,
    /// when they may have changed.
    fn sync_mesh_hosts(&mut self) {
        let hosts = self.host.hosts.lock();
        if self.hosts_seen == Some(hosts.generation()) {
            return;
        }
        self.hosts_seen = Some(hosts.generation());
        let direct = hosts.direct_hosts();
        drop(hosts);
        self.host.firewall.update(|r| r.mesh_hosts = direct);
    }

    fn accept(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let conn = self.conn_id();
        let now = Instant::now();
        match self.handshakes.admit(now, conn, remote.ip()) {
            Decision::Refuse => {
                if let Some(n) = self.turned_away_log.count(now) {
                    tracing::warn!(%remote, turned_away = n, "too many handshakes from one address: closing its new connections");
                }
                return;
            }
            Decision::Admit { evict } => {
                if let Some(old) = evict.and_then(|c| self.handshake_tasks.remove(&c)) {
                    old.abort();
                    if let Some(n) = self.turned_away_log.count(now) {
                        tracing::warn!(%remote, turned_away = n, "every handshake place taken: stopped the oldest of the busiest address");
                    }
                }
            }
        }
        let ctx = self.ctx.clone();
        let task = tokio::spawn(connection::inbound(conn, stream, remote, ctx));
        self.handshake_tasks.insert(conn, task.abort_handle());
    }

    /// An incoming handshake is over, one way or the other.
    fn handshake_over(&mut self, conn: ConnId) {
        self.handshakes.finished(conn);
        self.handshake_tasks.remove(&conn);
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        let input = match event {
            Event::Established {
                conn,
                peer,
                address,
                local,
                outbound,
                target,
                data_keys,
                version,
                commands,
            } => {
                if !outbound {
                    self.handshake_over(conn);
                }
                self.settings.peers.seen.insert(address);
                self.conns.insert(conn, commands);
                let name = peer.name;
                let encrypted = data_keys.is_some();
                self.mesh.handle(
                    now,
                    Input::Connected {
                        conn,
                        peer,
                        address,
                        outbound,
                        target,
                        encrypted,
                    },
                );
                let current = self.mesh.connection_to(name).map(|c| c.id);
                self.paths.handle(paths::Event::Connected(paths::Connected {
                    conn,
                    peer: name,
                    remote: address,
                    local,
                    keys: data_keys,
                    current,
                    session: rand::random::<u32>().max(1),
                    version,
                }));
                return self.carry_out_paths(now);
            }
            Event::Failed {
                conn,
                remote,
                target,
                peer,
                reason,
                refused,
            } => {
                self.failed_attempts += 1;
                match target {
                    Some(target) => {
                        tracing::info!(%target, %reason, "connection attempt failed");
                        Input::ConnectFailed {
                            target,
                            peer: peer.map(|p| p.name),
                            reason,
                            refused,
                        }
                    }
                    None => {
                        self.handshake_over(conn);
                        if let Some(n) = self.failed_log.count(now) {
                            tracing::info!(%remote, %reason, failed = n, "incoming connection failed");
                        }
                        self.inbound_failures.push_back(Failure {
                            at: now,
                            remote,
                            peer,
                            reason,
                        });
                        while self.inbound_failures.len() > RECENT_FAILURES {
                            self.inbound_failures.pop_front();
                        }
                        return;
                    }
                }
            }
            Event::Received {
                conn,
                message:
                    ControlMessage::DataPath {
                        udp_port,
                        session,
                        encrypt,
                        vxlan_port,
                    },
            } => {
                let offer = PeerOffer {
                    udp_port,
                    session,
                    encrypt,
                    vxlan_port,
                    vxlan_device_port: None,
                };
                return self.offered(now, conn, offer);
            }
            Event::Received {
                conn,
                message:
                    ControlMessage::DataPathOffer {
                        udp_port,
                        session,
                        encrypt,
                        fastdp_port,
                        vxlan_device_port,
                    },
            } => {
                let offer = PeerOffer {
                    udp_port,
                    session,
                    encrypt,
                    vxlan_port: fastdp_port,
                    vxlan_device_port,
                };
                return self.offered(now, conn, offer);
            }
            Event::Received { conn, message } => Input::Received { conn, message },
            Event::Closed { conn, reason } => {
                self.conns.remove(&conn);
                self.data_path_over(now, conn);
                Input::Closed { conn, reason }
            }
        };
        self.mesh.handle(now, input);
    }

    /// A peer's data path offer came on `conn`.
    fn offered(&mut self, now: Instant, conn: ConnId, offer: PeerOffer) {
        let current = self
            .paths
            .peer_of(conn)
            .and_then(|peer| self.mesh.connection_to(peer))
            .map(|c| c.id);
        self.paths.handle(paths::Event::Offered {
            conn,
            current,
            offer,
        });
        self.carry_out_paths(now);
    }

    /// A connection ended: if it carried its peer's data path, stop it.
    fn data_path_over(&mut self, now: Instant, conn: ConnId) {
        self.paths.handle(paths::Event::Closed { conn });
        self.carry_out_paths(now);
    }

    /// Carries out what the data paths' machine decided.
    fn carry_out_paths(&mut self, now: Instant) {
        while let Some(action) = self.paths.poll() {
            match action {
                paths::Action::Send { conn, message } => {
                    if let Some(commands) = self.conns.get(&conn) {
                        let _ = commands.try_send(ConnCommand::Send(message));
                    }
                }
                paths::Action::StartUserspace(start) => {
                    self.data.send(UserspaceCommand::AddPeer(PeerSpec {
                        name: start.peer,
                        addr: start.addr,
                        send_session: start.send_session,
                        recv_session: start.recv_session,
                        keys: start.keys,
                    }));
                }
                paths::Action::StartFastdp(tunnel) => {
                    if let Some(f) = &self.fastdp {
                        f.send(FastdpCommand::Peer(tunnel));
                    }
                }
                paths::Action::StartVxlanDevice(tunnel) => {
                    if let Some(d) = &self.vxlan_device {
                        self.vxlan_peers.insert(tunnel.name, tunnel.remote);
                        self.guard_vxlan_port();
                        d.send(DeviceCommand::Peer(tunnel));
                    }
                }
                paths::Action::Stop(peer) => {
                    self.data.send(UserspaceCommand::RemovePeer(peer));
                    if let Some(f) = &self.fastdp {
                        f.send(FastdpCommand::RemovePeer(peer));
                    }
                    if let Some(d) = &self.vxlan_device {
                        d.send(DeviceCommand::RemovePeer(peer));
                    }
                    if self.vxlan_peers.remove(&peer).is_some() {
                        self.guard_vxlan_port();
                    }
                }
                paths::Action::OnVxlanDevice(set) => {
                    if let Some(d) = &self.vxlan_device {
                        d.send(DeviceCommand::Carrying(set));
                    }
                }
                paths::Action::OnFastdp(set) => {
                    if let Some(f) = &self.fastdp {
                        f.send(FastdpCommand::Fastdp(set.clone()));
                    }
                    self.data.send(UserspaceCommand::Fastdp(set));
                }
                paths::Action::Usable { peer, usable } => {
                    self.mesh.handle(now, Input::DataPath { peer, usable });
                }
            }
        }
    }

    /// Lets exactly the vxlan device's peers through to its port.
    fn guard_vxlan_port(&self) {
        let peers: BTreeSet<std::net::Ipv4Addr> = self.vxlan_peers.values().copied().collect();
        self.host.firewall.update(|r| {
            if let Some(guard) = &mut r.vxlan {
                guard.peers = peers;
            }
        });
    }

    /// The fast datapath (or the vxlan device, `device`) reported a
    /// change.
    fn on_kernel_plane(&mut self, report: fastdp::Report, device: bool) {
        let event = match report {
            fastdp::Report::Vxlan { peer, state } => paths::Event::Vxlan { peer, state },
            fastdp::Report::Datapath { up, reason } => {
                if let Some(reason) = reason {
                    let plane = if device {
                        "vxlan device"
                    } else {
                        "fast datapath"
                    };
                    tracing::warn!(%reason, "{plane}");
                }
                if device {
                    paths::Event::LocalVxlanDevice { up }
                } else {
                    paths::Event::LocalDatapath { up }
                }
            }
        };
        self.paths.handle(event);
        self.carry_out_paths(Instant::now());
    }

    /// The userspace path reported a change for a peer.
    fn on_path(&mut self, report: PathReport) {
        tracing::info!(peer = %report.peer, usable = report.usable, mtu = ?report.path_mtu, "data path changed");
        self.paths.handle(paths::Event::Userspace(report));
        self.carry_out_paths(Instant::now());
    }

    /// Carries out the mesh's decisions.
    fn drain(&mut self) {
        while let Some(output) = self.mesh.poll_output() {
            match output {
                Output::Connect { target } => {
                    let conn = self.conn_id();
                    tokio::spawn(connection::outbound(conn, target, self.ctx.clone()));
                }
                Output::Send { conn, message } => {
                    let Some(commands) = self.conns.get(&conn) else {
                        continue;
                    };
                    if let Err(e) = commands.try_send(ConnCommand::Send(message)) {
                        let reason = match e {
                            // A full queue means the peer stopped reading.
                            mpsc::error::TrySendError::Full(_) => {
                                "the peer is not keeping up; dropping the connection"
                            }
                            // The connection's task is gone already.
                            mpsc::error::TrySendError::Closed(_) => "the connection ended",
                        }
                        .to_string();
                        let _ = commands.try_send(ConnCommand::Close {
                            reason: reason.clone(),
                            refuse: false,
                        });
                        self.conns.remove(&conn);
                        let now = Instant::now();
                        self.data_path_over(now, conn);
                        self.mesh.handle(now, Input::Closed { conn, reason });
                    }
                }
                Output::Close {
                    conn,
                    reason,
                    refuse,
                } => {
                    if let Some(commands) = self.conns.remove(&conn) {
                        let _ = commands.try_send(ConnCommand::Close { reason, refuse });
                    }
                }
            }
        }
    }

    async fn on_request(&mut self, request: Request) {
        let now = Instant::now();
        match request {
            Request::Report(reply) => {
                let _ = reply.send(self.report(now));
            }
            Request::Connect {
                peers,
                replace,
                done,
            } => {
                if replace {
                    let given: Vec<SocketAddr> = self
                        .mesh
                        .targets()
                        .filter(|t| t.source != Source::Discovered)
                        .map(|t| t.address)
                        .collect();
                    for address in given {
                        self.mesh.handle(now, Input::Forget { address });
                        self.settings.peers.forget(None, address);
                    }
                    self.settings.peers.forget_given();
                }
                for (given, address) in peers {
                    self.settings.peers.remember(given, address);
                    self.mesh.handle(
                        now,
                        Input::AddTarget {
                            address,
                            source: Source::Api,
                        },
                    );
                }
                let _ = done.send(());
            }
            Request::Forget { peers, done } => {
                for (given, address) in peers {
                    self.settings.peers.forget(Some(&given), address);
                    self.mesh.handle(now, Input::Forget { address });
                }
                let _ = done.send(());
            }
            Request::Metrics(reply) => {
                let report = self.report(now);
                let mut m = Metrics {
                    peers: report.peers.len(),
                    refused_by_us: self.mesh.stats().refused,
                    failed_attempts: self.failed_attempts,
                    messages_sent: self.mesh.stats().messages_sent,
                    sent_by_kind: self.mesh.stats().sent_by_kind.clone(),
                    messages_received: self.mesh.stats().messages_received,
                    ..Metrics::default()
                };
                for c in &report.connections {
                    *m.connections_by_state.entry(c.state.clone()).or_default() += 1;
                }
                for t in &report.targets {
                    *m.targets_by_state.entry(t.state.clone()).or_default() += 1;
                }
                m.data = self.data.counters.snapshot();
                if let Some(f) = &self.fastdp {
                    m.fastdp = f.counters.snapshot();
                    m.fastdp_flows =
                        Some(f.counters.flows.load(std::sync::atomic::Ordering::Relaxed));
                }
                for o in self.paths.peers() {
                    let reason = o.reason().map_or("", |r| r.as_str());
                    *m.overlays
                        .entry((o.overlay().as_str(), reason))
                        .or_default() += 1;
                }
                let _ = reply.send(m);
            }
            Request::Ipam(request) => self.on_ipam(now, request),
            Request::Names(request) => {
                request.apply(&mut self.host.names.lock(), now);
                // Let the mesh gossip the change now.
                self.mesh.handle(now, Input::Tick);
            }
            Request::Policy(request) => {
                request.apply(&mut self.host.policy.lock(), now);
                self.mesh.handle(now, Input::Tick);
            }
            Request::Gateway { addresses, done } => {
                self.host.gateway = addresses;
                self.host.publish();
                // Let the mesh gossip the new record now.
                self.mesh.handle(now, Input::Tick);
                let _ = done.send(());
            }
            Request::Stop => {}
        }
    }

    fn on_ipam(&mut self, now: Instant, request: IpamRequest) {
        self.ipam.lock().answer(now, request);
        // Let the mesh send what the agent queued.
        self.mesh.handle(now, Input::Tick);
    }

    pub fn report(&mut self, now: Instant) -> Report {
        self.inbound_failures
            .retain(|f| now.duration_since(f.at) < FAILURE_MEMORY);
        report::build(&self.view(), now)
    }

    fn view(&self) -> RouterView<'_> {
        RouterView {
            mesh: &self.mesh,
            paths: &self.paths,
            routes: &self.sent_routes,
            settings: &self.settings,
            failures: &self.inbound_failures,
            host: &self.host,
            started: self.started,
        }
    }
}
