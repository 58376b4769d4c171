//! The router process: binds its sockets, builds its identity and runs the
//! router task and the API until stopped.

pub mod connection;
pub mod discovery;
pub mod handshakes;
pub mod logfile;
pub mod paths;
pub mod peers;
pub mod policy_watch;
pub mod readiness;
pub mod router;
pub mod throttle;

use std::{
    path::Path,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use tokio::{net::TcpListener, signal::unix::SignalKind, sync::mpsc};
use weft_crypto::Password;

use crate::{
    api::{self, Api},
    cli::args::{DockerPlugin, OverlayChoice, RouterArgs},
    daemon::{
        connection::Context,
        paths::Paths,
        router::{HostSide, Router, Settings},
    },
    fastdp::{self, Fastdp},
    firewall::{Firewall, Ruleset},
    hosts::{Hosts, HostsHandle},
    identity::{MAX_NICKNAME, PeerIdentity, PeerName},
    ipam::IpamHandle,
    mesh::{Input, Mesh, MeshConfig, Source},
    netdev::{
        self, HostNetwork, Netlink,
        attach::{AttachError, Registry},
        gateway::Gateway,
    },
    userspace::{
        self, encap,
        engine::{self, DataPlane},
        forwarding::SharedMacs,
    },
    vxlan_device,
};

/// Where systemd-resolved lists the servers behind its stub, which is what
/// container runtimes give containers when resolv.conf names only the stub.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// The peer name: given, or persisted from an earlier start, or derived
/// from the machine id and the data directory (so simulated hosts on one
/// machine differ) and then persisted.
fn peer_name(given: Option<PeerName>, paths: &Paths) -> Result<PeerName> {
    if let Some(name) = given {
        return Ok(name);
    }
    let file = paths.name_file();
    if let Ok(text) = std::fs::read_to_string(&file) {
        return text.trim().parse().map_err(|e: String| {
            anyhow::anyhow!("{}: {e}; remove it or pass --name", file.display())
        });
    }
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/var/lib/dbus/machine-id"))
        .context("no machine id in /etc/machine-id; pass --name")?;
    let dir = std::fs::canonicalize(&paths.data_dir).unwrap_or_else(|_| paths.data_dir.clone());
    let seed = format!("{}\n{}", machine_id.trim(), dir.display());
    let name = PeerName::derive(seed.as_bytes());
    std::fs::write(&file, format!("{name}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(name)
}

fn nickname(given: Option<String>) -> String {
    let name = given
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_else(|| "weft".into());
    name.chars().take(MAX_NICKNAME).collect()
}

fn create_dir(dir: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the {what} directory {} (run as root, or choose another with --{what}-dir)",
            dir.display()
        )
    })
}

async fn bind_tcp(addr: std::net::SocketAddr, what: &str, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!(
                "another process (another weft router?) uses it; choose another with {flag}"
            ),
            std::io::ErrorKind::PermissionDenied => "run as root".to_string(),
            _ => format!("check {flag}"),
        };
        anyhow::anyhow!("cannot listen for {what} on {addr}: {e}; {hint}")
    })
}

/// The mesh's names, with ours taken back from the last run.
fn open_names(
    paths: &paths::Paths,
    me: crate::identity::PeerName,
    clock_ms: u64,
    now: std::time::Instant,
) -> Result<crate::names::records::NamesHandle> {
    let mut names = crate::names::records::Names::new(me, clock_ms);
    if let Some(stored) = crate::names::Stored::load(&paths.names_file())? {
        names.restore(now, stored.clock, stored.entries);
    }
    Ok(crate::names::records::NamesHandle::new(names))
}

/// Logs what policy drops, naming the container and what isolates it.
fn spawn_drop_log(status: std::sync::Arc<std::sync::Mutex<router::PolicyStatus>>) {
    let lookup = move |addr: std::net::Ipv4Addr, egress: bool| {
        let s = status.lock().unwrap_or_else(|p| p.into_inner());
        let pod = s.plan.pods.iter().find(|p| p.endpoint.addr == addr)?;
        let direction = if egress { &pod.egress } else { &pod.ingress };
        let by = direction
            .as_ref()
            .map(|d| d.isolated_by.clone())
            .unwrap_or_default();
        Some((pod.endpoint.name.clone(), by))
    };
    let spawned = std::thread::Builder::new()
        .name("weft-policy-log".into())
        .spawn(move || crate::policy::droplog::run(lookup));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the policy drop log");
    }
}

fn open_policy(
    paths: &paths::Paths,
    me: crate::identity::PeerName,
    clock: u64,
    now: std::time::Instant,
) -> Result<crate::policy::records::PolicyRecords> {
    let mut records = crate::policy::records::Records::new(me, clock);
    if let Some(stored) = crate::policy::Stored::load(&paths.policy_file())? {
        records.restore(now, stored.clock, stored.entries);
    }
    Ok(crate::policy::records::PolicyRecords::new(records))
}

/// IPAM as configured, restored from the data directory.
fn open_ipam(
    args: &RouterArgs,
    paths: &Paths,
    identity: &PeerIdentity,
    now: std::time::Instant,
    in_use: &[(String, std::net::Ipv4Addr)],
) -> Result<(IpamHandle, Vec<crate::ipam::Conflict>)> {
    let mut config = weft_ipam::Config::new(crate::ipam::peer(identity.name), args.ipalloc_range);
    config.nickname = identity.nickname.clone();
    config.default_subnet = args.ipalloc_default_subnet.unwrap_or(args.ipalloc_range);
    config.init = args
        .ipalloc_init
        .clone()
        .unwrap_or(weft_ipam::Init::Consensus(1 + args.peers.len()));
    config.reclaim_after = args.ipalloc_reclaim_after;
    config.seed = rand::random();
    let store = crate::ipam::Store::open(&paths.ipam_file())?;
    let (ipam, conflicts) = IpamHandle::open(config, store, now, in_use, args.recover_ipam)
        .context("cannot start IPAM")?;
    let status = ipam.lock().ipam.status(now);
    tracing::info!(
        range = %status.range,
        default_subnet = %status.default_subnet,
        cluster = status.cluster.as_deref().unwrap_or("none yet"),
        addresses_held = status.containers.values().map(Vec::len).sum::<usize>(),
        "IPAM ready"
    );
    Ok((ipam, conflicts))
}

/// Takes off the interfaces whose address IPAM says another owner holds:
/// of two claims on one address, the one IPAM recorded stays.
async fn drop_conflicts(
    netlink: &Netlink,
    registry: &mut Registry,
    gateway: &mut Gateway,
    conflicts: Vec<crate::ipam::Conflict>,
) -> Result<()> {
    for c in conflicts {
        if c.owner == crate::netdev::gateway::OWNER {
            tracing::error!(addr = %c.addr, holder = %c.holder, "the gateway has an address IPAM gave someone else: taking it off");
            if let Some(net) = gateway
                .addresses()
                .iter()
                .find(|n| n.addr() == c.addr)
                .copied()
            {
                gateway.remove(netlink, net).await?;
            }
            continue;
        }
        // Docker's endpoints are Docker's: taking one away here would leave
        // Docker believing it is still connected.
        if c.owner.starts_with(crate::api::docker::OWNER_PREFIX) {
            tracing::error!(owner = %c.owner, addr = %c.addr, "a Docker endpoint has an address IPAM gave someone else: disconnect the container from the weft network and connect it again for a new address");
            continue;
        }
        tracing::error!(owner = %c.owner, addr = %c.addr, holder = %c.holder, "an interface here has an address IPAM gave someone else: taking it off");
        let ids: Vec<String> = registry
            .list()
            .into_iter()
            .filter(|a| a.ipam_owner() == c.owner)
            .map(|a| a.id)
            .collect();
        for id in ids {
            match registry.detach(netlink, &id, &[]).await {
                // Gone already (the container stopped meanwhile): done.
                Ok(_) | Err(AttachError::NotAttached(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Runs the router in the foreground until SIGTERM, SIGINT or `POST /stop`.
pub fn run(args: RouterArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("bad --log-level {:?}", args.log_level))?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(mut args: RouterArgs) -> Result<()> {
    let paths = Paths::new(&args.dirs);
    create_dir(&paths.data_dir, "data")?;
    create_dir(&paths.run_dir, "run")?;
    if let Some(pid) = paths::read_pid(&paths.pid_file())
        && paths::process_running(pid)
        && pid != std::process::id() as i32
    {
        bail!(
            "a weft router is already running with run directory {} (pid {pid}); stop it with `weft stop`",
            paths.run_dir.display()
        );
    }
    let kubernetes = if args.kubernetes {
        let (cluster, peers) =
            discovery::initial(args.kubernetes_api.as_deref(), args.node_name.as_deref()).await?;
        args.peers.extend(peers);
        Some(cluster)
    } else {
        None
    };
    // The peers: those given, or those remembered from the last run.
    let remembered = if args.no_resume {
        peers::Remembered::default()
    } else {
        peers::Remembered::load(&paths.peers_file())
    };
    let names: Vec<String> = if args.peers.is_empty() {
        remembered.given.iter().cloned().collect()
    } else {
        args.peers.clone()
    };
    let unresolved: peers::Unresolved = Default::default();
    let mut targets = Vec::new();
    let mut resolved = std::collections::BTreeMap::new();
    for name in &names {
        // A mistake in how a peer is written stops the launch; a name
        // that does not resolve yet does not.
        api::peer_syntax(name).map_err(anyhow::Error::msg)?;
        match api::resolve_peer(name).await {
            Ok(address) => {
                targets.push(address);
                resolved.insert(name.clone(), address);
            }
            Err(e) => {
                tracing::warn!(peer = %name, error = %e, "peer does not resolve yet: trying again in the background");
                unresolved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), e);
            }
        }
    }
    let listener = bind_tcp((args.host, args.port).into(), "peers", "--port").await?;
    let udp = std::net::UdpSocket::bind((args.host, args.port)).map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for data on UDP {}:{}: {e}; choose another --port",
            args.host,
            args.port
        )
    })?;
    userspace::socket::prepare(&udp).context("cannot set up the UDP socket")?;
    let http = bind_tcp(args.http_addr, "the HTTP API", "--http-addr").await?;
    let unix = api::bind_unix(&paths.socket())
        .with_context(|| format!("cannot create the API socket {}", paths.socket().display()))?;
    let identity = PeerIdentity {
        name: peer_name(args.name, &paths)?,
        nickname: nickname(args.nickname.clone()),
        uid: rand::random(),
        listen_port: args.port,
        admission: Vec::new(),
    };
    let password = read_password(&args)?.as_deref().map(Password::derive);

    // The host side of the overlay: bridge, TAP, and the MTU that fits.
    let netlink = Netlink::here().context("cannot talk to the kernel over netlink")?;
    if let Some(problem) =
        netdev::collision(&netlink, args.ipalloc_range, "--ipalloc-range").await?
    {
        bail!("{problem}");
    }
    let underlay = netdev::underlay(&netlink, &targets).await?;
    // Is there a kernel datapath? (Looking it up loads the module if it can.)
    let choice = args.overlay_choice();
    let datapath: Result<(), String> = match choice {
        OverlayChoice::Auto | OverlayChoice::Fastdp => weft_odp::Client::connect()
            .map(drop)
            .map_err(|e| e.to_string()),
        OverlayChoice::Vxlan => Err("not asked for (--overlay vxlan)".into()),
        OverlayChoice::Userspace => Err("disabled with --overlay userspace".into()),
    };
    // Without one, the kernel's vxlan device, unless only the fast
    // datapath or no kernel path was asked for.
    let want_device = match choice {
        OverlayChoice::Auto => datapath.is_err(),
        OverlayChoice::Vxlan => true,
        OverlayChoice::Fastdp | OverlayChoice::Userspace => false,
    };
    if let Err(reason) = &datapath {
        if want_device {
            tracing::info!(%reason, "no fast datapath: using the kernel's vxlan device");
        } else {
            tracing::warn!(%reason, "no fast datapath: all traffic takes the userspace path");
        }
    }
    // The overlay MTU fits what carries data: vxlan when there is a
    // kernel path and no encryption, else our own encapsulation.
    let overlay_mtu = match args.mtu {
        Some(mtu) => mtu,
        None if (datapath.is_ok() || want_device) && password.is_none() => {
            underlay.mtu.saturating_sub(encap::VXLAN_OVERHEAD)
        }
        None => underlay
            .mtu
            .saturating_sub(encap::overhead(password.is_some())),
    };
    if overlay_mtu < netdev::MIN_MTU {
        bail!(
            "the overlay MTU would be {overlay_mtu} (underlay {} has MTU {}): too small; give --mtu",
            underlay.name,
            underlay.mtu
        );
    }
    let (bridge, tap) =
        netdev::setup(&netlink, identity.name, overlay_mtu, datapath.is_ok()).await?;
    // TCP super-frames in and out of the TAP, and several datagrams per
    // receive: the difference between one system call per frame and one
    // per 64 KiB.
    use netdev::tap::offload;
    if let Err(e) = tap.set_offloads(offload::CSUM | offload::TSO4) {
        tracing::warn!(error = %e, "the TAP takes no offloads: the userspace data path will be slower");
    }
    if let Err(e) = userspace::socket::enable_gro(&udp) {
        tracing::warn!(error = %e, "no UDP GRO: receiving datagrams one at a time");
    }
    let mut gateway = Gateway::load(paths.gateway_file())?;
    gateway
        .restore(&netlink)
        .await
        .context("cannot put the host's gateway back on the bridge")?;
    let mut registry = Registry::load(paths.data_dir.join("attachments.json"))?;
    registry.prune(&netlink).await?;
    registry.set_mtu(&netlink, overlay_mtu).await;
    tracing::info!(
        underlay = %underlay.name,
        underlay_mtu = underlay.mtu,
        overlay_mtu,
        bridge = netdev::BRIDGE,
        "overlay network ready"
    );

    let clock_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(1);
    let mut config = MeshConfig::new(identity.clone(), clock_ms, rand::random());
    config.conn_limit = args.conn_limit;
    config.discovery = !args.no_discovery;
    let now = std::time::Instant::now();
    let mut mesh = Mesh::new(config, now);
    let mut in_use = registry.in_use();
    in_use.extend(
        gateway
            .addresses()
            .iter()
            .map(|g| (crate::netdev::gateway::OWNER.to_string(), g.addr())),
    );
    let (ipam, conflicts) = open_ipam(&args, &paths, &identity, now, &in_use)?;
    drop_conflicts(&netlink, &mut registry, &mut gateway, conflicts).await?;
    mesh.add_channel(crate::ipam::CHANNEL, ipam.channel());
    let hosts = HostsHandle::new(Hosts::new(identity.name, clock_ms));
    mesh.add_channel(crate::hosts::CHANNEL, hosts.channel());
    let links = crate::links::LinksHandle::new(crate::links::Links::new(identity.name, clock_ms));
    mesh.add_channel(crate::links::CHANNEL, links.channel());
    let name_records = open_names(&paths, identity.name, clock_ms, now)?;
    mesh.add_channel(crate::names::records::CHANNEL, name_records.channel());
    let (dns_addresses, dns_follows) = tokio::sync::watch::channel(Vec::new());
    let resolv_conf = std::fs::read_to_string(&args.resolv_conf).unwrap_or_default();
    let ours: Vec<_> = gateway.addresses().iter().map(|g| g.addr()).collect();
    let name_service = Arc::new(crate::names::NameService {
        names: name_records.clone(),
        config: crate::names::server::DnsConfig {
            zone: crate::names::responder::Zone {
                domain: args.dns_domain.clone(),
                ttl: args.dns_ttl,
            },
            wait: args.dns_wait,
            upstreams: crate::names::server::upstreams_from(&resolv_conf, &ours),
        },
        counters: Default::default(),
        enabled: !args.no_dns,
        listening: Default::default(),
    });
    let names_stored = name_records.lock().generation();
    let policy = open_policy(&paths, identity.name, clock_ms, now)?;
    let policy_status: std::sync::Arc<std::sync::Mutex<router::PolicyStatus>> = Default::default();
    let policy_cluster: Option<crate::policy::ClusterHandle> =
        kubernetes.is_some().then(Default::default);
    spawn_drop_log(policy_status.clone());
    mesh.add_channel(crate::policy::records::CHANNEL, policy.channel());
    let host = HostSide {
        hosts,
        links,
        names: name_records.clone(),
        names_file: paths.names_file(),
        names_stored,
        policy: policy.clone(),
        policy_file: paths.policy_file(),
        policy_cluster: policy_cluster.clone(),
        policy_seen: None,
        policy_status: policy_status.clone(),
        dns_addresses,
        firewall: Firewall::start(Ruleset {
            range: args.ipalloc_range,
            masquerade: !args.no_masquerade,
            exclude: args.masquerade_exclude.clone(),
            mesh_hosts: Default::default(),
            bridge_mac: netdev::bridge_mac(identity.name),
            overlay_ports: vec![
                netdev::TAP.into(),
                fastdp::DATAPATH.into(),
                vxlan_device::DEVICE.into(),
            ],
            dns: None,
            policy: String::new(),
            vxlan: None,
        }),
        gateway: gateway.addresses().to_vec(),
        direct: netdev::direct_addresses(&netlink).await?,
    };
    let dns_firewall = host.firewall.clone();
    for address in &targets {
        mesh.handle(
            now,
            Input::AddTarget {
                address: *address,
                source: Source::CommandLine,
            },
        );
    }
    for address in remembered.seen.iter().filter(|a| !targets.contains(a)) {
        mesh.handle(
            now,
            Input::AddTarget {
                address: *address,
                source: Source::Resumed,
            },
        );
    }
    if !remembered.seen.is_empty() || (args.peers.is_empty() && !names.is_empty()) {
        tracing::info!(
            given = names.len(),
            seen = remembered.seen.len(),
            "resuming the peers of the last run (--no-resume starts afresh)"
        );
    }
    std::fs::write(paths.pid_file(), format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", paths.pid_file().display()))?;
    tracing::info!(
        name = %identity.name,
        nickname = %identity.nickname,
        port = args.port,
        http = %args.http_addr,
        encryption = password.is_some(),
        "weft router {} started",
        crate::VERSION
    );

    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let macs = SharedMacs::default();
    let data = DataPlane::start(
        engine::UserspaceConfig {
            local: identity.name,
            tap: tap.try_clone_fd().context("cannot share the TAP device")?,
            udp,
            link_mtu: underlay.mtu,
            macs: macs.clone(),
        },
        reports_tx,
    )
    .context("cannot start the data path")?;
    let (fastdp_tx, fastdp_rx) = mpsc::unbounded_channel();
    let device_macs = macs.clone();
    let (fastdp, datapath) = match datapath {
        Ok(()) => {
            let config = fastdp::FastdpConfig {
                local: identity.name,
                bridge: netdev::BRIDGE.into(),
                vxlan_port: args.fastdp_port,
                flow_limits: fastdp::flow_table::Limits::for_max(args.fastdp_max_flows as usize),
                overlay_mtu,
                tap: netdev::TAP.into(),
                engine: data.sender(),
                macs,
                netlink: netlink.clone(),
            };
            match Fastdp::start(config, fastdp_tx).await {
                Ok(f) => {
                    tracing::info!(
                        datapath = fastdp::DATAPATH,
                        vxlan_port = args.fastdp_port,
                        "fast datapath ready"
                    );
                    (Some(f), Ok(()))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up the fast datapath: all traffic takes the userspace path");
                    netdev::tap_on_bridge(&netlink, bridge.index).await?;
                    (None, Err(e.to_string()))
                }
            }
        }
        Err(reason) => (None, Err(reason)),
    };
    let (device_tx, device_rx) = mpsc::unbounded_channel();
    // Also when the datapath was there but could not be set up.
    let start_device = match choice {
        OverlayChoice::Auto => fastdp.is_none(),
        OverlayChoice::Vxlan => true,
        OverlayChoice::Fastdp | OverlayChoice::Userspace => false,
    };
    let vxlan_device = if start_device {
        let config = vxlan_device::VxlanDeviceConfig {
            local: identity.name,
            bridge: bridge.index,
            port: args.fastdp_port,
            overlay_mtu,
            macs: device_macs,
            netlink: netlink.clone(),
        };
        match vxlan_device::VxlanDevice::start(config, device_tx).await {
            Ok(device) => {
                tracing::info!(
                    device = vxlan_device::DEVICE,
                    vxlan_port = args.fastdp_port,
                    "vxlan device ready"
                );
                Some(device)
            }
            Err(e) => {
                tracing::warn!(error = %e, "no vxlan device: traffic takes the userspace path");
                None
            }
        }
    } else {
        None
    };
    if vxlan_device.is_none() {
        vxlan_device::remove_leftover(&netlink).await;
    }
    if vxlan_device.is_some() {
        let guard = crate::firewall::VxlanGuard {
            port: args.fastdp_port,
            peers: Default::default(),
        };
        host.firewall.update(|r| r.vxlan = Some(guard));
    }
    let (events_tx, events_rx) = mpsc::channel(4096);
    let (requests_tx, requests_rx) = mpsc::channel(64);
    let ctx = Context {
        identity,
        admission: Default::default(),
        password: password.clone(),
        events: events_tx,
    };
    let pending: Vec<String> = unresolved
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect();
    if !pending.is_empty() {
        tokio::spawn(peers::resolve_later(
            pending,
            requests_tx.clone(),
            unresolved.clone(),
        ));
    }
    let settings = Settings {
        peers: peers::PeerMemory {
            file: paths.peers_file(),
            given: names.iter().cloned().collect(),
            seen: remembered.seen.clone(),
            saved: remembered.clone(),
            resolved,
            unresolved,
        },
        port: args.port,
        encryption: password.is_some(),
        discovery: !args.no_discovery,
        conn_limit: args.conn_limit,
        trusted_subnets: args.trusted_subnets.clone(),
        overlay_mtu,
        fastdp_port: fastdp.is_some().then_some(args.fastdp_port),
        vxlan_device_port: vxlan_device.is_some().then_some(args.fastdp_port),
        no_datapath: datapath.err(),
    };
    let network = Arc::new(HostNetwork {
        netlink,
        bridge: bridge.index,
        mtu: overlay_mtu,
        registry: tokio::sync::Mutex::new(registry),
        gateway: tokio::sync::Mutex::new(gateway),
        conditioning: crate::condition::Conditioning::load(paths.conditions_file())?,
        flows: crate::flows::FlowTop::default(),
    });
    if let Err(e) = crate::flows::FlowTop::clear().await {
        tracing::warn!(error = %e, "cannot remove a flow-counting table left by an earlier router");
    }
    network.conditioning.restore(&network).await;
    let docker = docker_listener(args.docker_plugin)?;
    let docker_served = docker.is_some();
    if let Some(cluster) = kubernetes {
        if let Some(view) = &policy_cluster {
            policy_watch::spawn(&cluster, view.clone(), requests_tx.clone())?;
        }
        tokio::spawn(discovery::run(
            cluster,
            args.node_name.clone(),
            requests_tx.clone(),
        ));
    }
    let token = write_token(&paths)?;
    if !args.no_dns {
        let resolvers = if args.no_dns_capture {
            Default::default()
        } else {
            let systemd = std::fs::read_to_string(SYSTEMD_RESOLV_CONF).unwrap_or_default();
            crate::names::server::container_resolvers(&[&resolv_conf, &systemd], &ours)
        };
        tokio::spawn(crate::names::server::follow(
            name_service.clone(),
            dns_follows,
            move |listening| {
                let server = listening.iter().find_map(|a| match a.ip() {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                });
                let dns = server.map(|server| crate::firewall::DnsCapture {
                    server,
                    resolvers: resolvers.clone(),
                });
                dns_firewall.update(|r| r.dns = dns);
            },
        ));
    }
    tokio::spawn(readiness::run(
        name_records.clone(),
        network.clone(),
        requests_tx.clone(),
    ));
    tokio::spawn(readiness::forget_departed(
        name_records,
        network.clone(),
        requests_tx.clone(),
    ));
    let api = Api::new(
        requests_tx,
        network,
        token,
        name_service,
        args.docker_host.clone(),
        crate::api::policy::PolicyAccess {
            records: policy,
            cluster: policy_cluster,
            status: policy_status,
        },
    )
    .with_http(http.local_addr().unwrap_or(args.http_addr));
    api.restore_doors().await;
    let api = tokio::spawn(api.serve(http, unix, docker));
    if let Some(log) = std::env::var_os(logfile::ENV) {
        tokio::spawn(logfile::keep(log.into()));
    }
    let planes = router::Planes {
        data,
        reports: reports_rx,
        fastdp,
        fastdp_reports: fastdp_rx,
        vxlan_device,
        device_reports: device_rx,
    };
    let router = Router::new(mesh, ctx, events_rx, settings, planes, ipam, host);
    let mut term =
        tokio::signal::unix::signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
    };
    router.run(listener, requests_rx, shutdown).await;
    api.abort();
    // Counting for a reader who can no longer read costs every frame.
    let _ = crate::flows::FlowTop::clear().await;
    drop(tap);
    let _ = std::fs::remove_file(paths.socket());
    let _ = std::fs::remove_file(paths.pid_file());
    let _ = std::fs::remove_file(paths.token_file());
    if docker_served {
        let _ = std::fs::remove_file(api::docker::SOCKET);
    }
    Ok(())
}

/// The network password: given, or the first line of --password-file. A
/// file others may read is refused: it would be no secret.
fn read_password(args: &RouterArgs) -> Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = &args.password_file else {
        return Ok(args.password.clone());
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the password file {} may be read by others (mode {:o}): chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        bail!("the password file {} is empty", path.display());
    }
    Ok(Some(password))
}

/// A fresh API token, in a file only root reads: what a change over the
/// TCP API must carry.
fn write_token(paths: &Paths) -> Result<String> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let token = api::access::new_token();
    let path = paths.token_file();
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// The Docker plugin socket, unless another router serves it already.
fn docker_listener(mode: DockerPlugin) -> Result<Option<tokio::net::UnixListener>> {
    let wanted = match mode {
        DockerPlugin::Off => false,
        DockerPlugin::On => true,
        DockerPlugin::Auto => ["/run/docker.sock", "/var/run/docker.sock"]
            .iter()
            .any(|p| Path::new(p).exists()),
    };
    if !wanted {
        return Ok(None);
    }
    let socket = Path::new(api::docker::SOCKET);
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        tracing::warn!(socket = %socket.display(), "another weft router serves the Docker plugin here; not serving it");
        return Ok(None);
    }
    create_dir(socket.parent().expect("a directory"), "Docker plugin")?;
    let listener = api::bind_unix(socket).with_context(|| {
        format!(
            "cannot create the Docker plugin socket {}",
            socket.display()
        )
    })?;
    tracing::info!(socket = %socket.display(), "serving Docker's network and IPAM plugin");
    Ok(Some(listener))
}
