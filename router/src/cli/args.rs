//! The command line: `weft launch`, `weft router`, `weft status` and the
//! rest. Every option's doc comment is its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::identity::PeerName;

/// weft: a container overlay network router.
///
/// Every host runs one router; given the address of any other router it
/// joins the whole mesh. Start it with `weft launch`, look at it with
/// `weft status`.
#[derive(Parser, Debug)]
#[command(name = "weft", version = crate::VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the router in the background; returns once it answers.
    Launch(RouterArgs),
    /// Run the router in the foreground (for systemd and Kubernetes).
    Router(RouterArgs),
    /// Stop the router.
    Stop(DirArgs),
    /// Stop the router and remove its persisted state, weft's nftables
    /// tables and its devices (bridge, datapath). Refused while containers
    /// are attached, whose addresses would be forgotten.
    Reset {
        /// Take the attached containers off the network first.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Show the router's state: a summary, or one table.
    Status {
        #[command(subcommand)]
        what: Option<StatusWhat>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Print the router's full state as JSON.
    Report(DirArgs),
    /// Connect to more peers (host or host:port).
    Connect {
        #[arg(required = true)]
        peers: Vec<String>,
        /// Replace the peers given so far instead of adding.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Stop connecting to peers (existing connections stay).
    Forget {
        #[arg(required = true)]
        peers: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Print the version of this weft binary and of the running router.
    Version(DirArgs),
    /// The kernel fast datapath: `weft dp show` (datapath and ports) or
    /// `weft dp flows`.
    Dp {
        #[command(subcommand)]
        what: DpWhat,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Put a container on the weft network: [ADDR/CIDR...] TARGET, where
    /// TARGET is a network namespace name, a namespace path, a pid or a
    /// Docker container. Without addresses, IPAM gives one.
    Attach {
        /// Addresses with prefix length (10.32.0.5/12), then the target.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        /// A name the container answers to on every host (repeat for
        /// aliases); NAME:PORT makes lookups wait until something listens
        /// on PORT in the container.
        #[arg(long = "name", value_name = "NAME[:PORT]")]
        names: Vec<String>,
        /// The container's namespace, for network policy (default:
        /// `default`).
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
        /// A label policies select the container by (repeat for more).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A named port policies may refer to, like http=80/tcp (repeat
        /// for more).
        #[arg(long = "port", value_name = "NAME=PORT[/PROTOCOL]")]
        ports: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Take a container off the weft network, or only some addresses.
    Detach {
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Give an address names on every host of the mesh: ADDR NAME...
    /// (NAME:PORT waits for a listener on PORT, as with attach --name).
    DnsAdd {
        address: std::net::Ipv4Addr,
        #[arg(required = true, value_name = "NAME[:PORT]")]
        names: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Take names away: ADDR [NAME...] (those of ADDR registered on this
    /// host; only the NAMEs given, if any).
    DnsRemove {
        address: std::net::Ipv4Addr,
        names: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// The addresses a name answers with, as every container sees them.
    DnsLookup {
        name: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// What a container needs to resolve the mesh's names: the options for
    /// `docker run` / `podman run` (--dns, --dns-search).
    DnsArgs(DirArgs),
    /// List containers on the weft network (attached, CNI and Docker) with
    /// their MAC and addresses; the host's gateway first, as weft:expose.
    Ps(DirArgs),
    /// Give this host an address on the weft network (its gateway): it
    /// reaches containers, and containers reach it and, through it, the
    /// world. Without addresses, IPAM gives one; given ones in the range
    /// are claimed in IPAM. Prints the host's gateway addresses.
    Expose {
        /// Addresses with prefix length, like 10.32.0.1/12.
        addresses: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Take the host's gateway addresses off the weft network (all of
    /// them, or the ones given) and give them back to IPAM.
    Hide {
        addresses: Vec<String>,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Take over the address space of a peer that is gone for good (by
    /// name or nickname). Refused while the peer is reachable.
    Rmpeer {
        peer: String,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Install the CNI plugin and a network configuration for podman,
    /// containerd or CRI-O.
    SetupCni(super::setup_cni::SetupCniArgs),
    /// Put a container's traffic under chosen latency, jitter, loss and
    /// rate, or show what it suffers (no settings given). Settings apply
    /// to both directions unless --direction says one; flow rules come
    /// with --file (weft's JSON or Synthetic Network's).
    Condition(ConditionArgs),
    /// Flow top: packets, bytes and rates of every flow of this host's
    /// containers, on both data paths, grouped by the conditioning rule
    /// each matches; refreshes until Ctrl-C. Counting runs only while
    /// someone watches (a minute after the last look).
    Top(TopArgs),
    /// The web page: prints the address of the mesh's picture and its
    /// controls, served by this router on its loopback API. The address
    /// carries the token that lets the page change things; without it
    /// (`--read-only`) the page only shows.
    Ui {
        /// Print the address without the token: the page only reads.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Open a container's Synthetic Network door: a loopback port of its
    /// own answering Synthetic Network's API (GET/POST /qos, its flow-top
    /// profiles) and, with --ui, serving its page, so its JavaScript
    /// client and page drive this container unchanged. Without a
    /// container: the open doors.
    Synthetic(SyntheticArgs),
    /// Network policy (Kubernetes NetworkPolicy objects) for clusters
    /// without an API server: apply, list, delete, and check what a
    /// connection would meet.
    Policy {
        #[command(subcommand)]
        what: PolicyWhat,
        #[command(flatten)]
        dirs: DirArgs,
    },
    /// Address allocation by hand: allocate, claim, release, reset.
    Ipam {
        #[command(subcommand)]
        what: IpamWhat,
        #[command(flatten)]
        dirs: DirArgs,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum PolicyWhat {
    /// Store NetworkPolicy objects from FILE (YAML with `---` between
    /// documents, or JSON; `-` reads stdin) on every host of the mesh.
    /// All are checked first: one invalid policy changes nothing.
    Apply {
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: std::path::PathBuf,
    },
    /// Every policy, the directions it isolates and how many containers
    /// it selects.
    List,
    /// Remove policies by NAME (in namespace default) or NAMESPACE/NAME.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set the labels of namespace NAME (namespaceSelector matches them),
    /// on every host; no labels clears them. Every namespace also has
    /// kubernetes.io/metadata.name=NAME.
    Namespace {
        name: String,
        #[arg(value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// Would a new connection from FROM to TO on PORT be allowed, and
    /// why. FROM and TO are addresses or containers (NAMESPACE/NAME).
    /// Exits 1 when it would be denied.
    Check {
        from: String,
        to: String,
        /// PORT or PORT/PROTOCOL (tcp, udp, sctp).
        port: String,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum IpamWhat {
    /// The IPAM state as JSON (what `weft status ipam` shows, and this
    /// host's containers).
    Show,
    /// An address for ID (any string naming a container); the same one
    /// again if ID already has one.
    Allocate {
        id: String,
        /// Allocate in this subnet of the range (default: the default
        /// subnet).
        #[arg(long, value_parser = parse_cidr)]
        subnet: Option<ipnet::Ipv4Net>,
    },
    /// This very address for ID.
    Claim {
        id: String,
        address: std::net::Ipv4Addr,
        #[arg(long, value_parser = parse_cidr)]
        subnet: Option<ipnet::Ipv4Net>,
    },
    /// Give back ID's addresses (or one of them).
    Release {
        id: String,
        address: Option<std::net::Ipv4Addr>,
    },
    /// Forget this router's ring and allocations so that it can join
    /// another mesh's IPAM cluster (the fix for "belongs to IPAM cluster
    /// ... both have addresses in use").
    Reset {
        /// Take this host's containers off the network and give up its
        /// gateway first; without it, reset is refused while any address
        /// is held here.
        #[arg(long)]
        detach: bool,
        /// Gone: it let IPAM hand out addresses containers still use.
        #[arg(long, hide = true)]
        force: bool,
    },
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpWhat {
    /// The datapath, its ports and their counters.
    Show,
    /// The flows the router installed.
    Flows,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWhat {
    /// Every peer this router knows and its connections.
    Peers,
    /// This router's connections, including failed and refused ones.
    Connections,
    /// The addresses this router connects to, and how that goes.
    Targets,
    /// Address allocation: ranges per peer, free counts, unreachable
    /// owners.
    Ipam,
    /// Names: the domain, where DNS is served, every name and its
    /// instances, and the query counters.
    Dns,
    /// Network policy: what applies to each of this host's containers,
    /// what it allows, and how much it dropped.
    Policy,
}

impl StatusWhat {
    pub fn path(self) -> &'static str {
        match self {
            StatusWhat::Peers => "/status/peers",
            StatusWhat::Connections => "/status/connections",
            StatusWhat::Targets => "/status/targets",
            StatusWhat::Ipam => "/status/ipam",
            StatusWhat::Dns => "/status/dns",
            StatusWhat::Policy => "/status/policy",
        }
    }
}

/// Where the router keeps its state and its sockets; several routers on
/// one machine (simulated hosts) each need their own.
#[derive(Args, Debug, Clone)]
pub struct DirArgs {
    /// Persisted state (peer name, address allocations).
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "/var/lib/weft")]
    pub data_dir: PathBuf,
    /// Runtime files: API socket, pid file, log of a launched router.
    #[arg(long, env = "WEFT_RUN_DIR", default_value = "/run/weft")]
    pub run_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Peers to connect to: host or host:port.
    pub peers: Vec<String>,
    /// TCP port for control connections from other routers.
    #[arg(long, env = "WEFT_PORT", default_value_t = 6783)]
    pub port: u16,
    /// Address to accept control connections on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: std::net::IpAddr,
    /// Network password: encrypts and authenticates everything between
    /// routers. All routers of a mesh need the same one.
    /// On the command line it shows in the process list while `weft
    /// launch` runs (the router never has it in its own arguments): prefer
    /// --password-file or WEFT_PASSWORD.
    #[arg(
        long,
        env = "WEFT_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,
    /// A file holding the network password (its first line), readable by
    /// root alone.
    #[arg(long, env = "WEFT_PASSWORD_FILE")]
    pub password_file: Option<std::path::PathBuf>,
    /// This router's name (six hex bytes, like 02:00:00:00:00:01); by
    /// default derived from the machine id and data directory.
    #[arg(long)]
    pub name: Option<PeerName>,
    /// A name for people; the host name by default.
    #[arg(long)]
    pub nickname: Option<String>,
    /// The HTTP API's TCP address (it also listens on a socket in the run
    /// directory).
    #[arg(long, env = "WEFT_HTTP_ADDR", default_value = "127.0.0.1:6784")]
    pub http_addr: std::net::SocketAddr,
    /// Most connections to other routers.
    #[arg(long, default_value_t = 100)]
    pub conn_limit: usize,
    /// Connect only to the peers given, not to peers learnt from others.
    #[arg(long)]
    pub no_discovery: bool,
    /// The kernel paths this router may use: `auto` the fast datapath
    /// (Open vSwitch) where the kernel has it, else the kernel's vxlan
    /// device; `fastdp` or `vxlan` only that one; `userspace` neither.
    /// Every connection falls back to the userspace path when its kernel
    /// path does not carry.
    #[arg(long, value_enum, env = "WEFT_OVERLAY", default_value = "auto")]
    pub overlay: OverlayChoice,
    /// Never use a kernel path, only the userspace path (`--overlay
    /// userspace`).
    #[arg(long, env = "WEFT_NO_FASTDP", conflicts_with = "overlay")]
    pub no_fastdp: bool,
    /// UDP port of vxlan between routers: the fast datapath's tunnels or
    /// the vxlan device.
    #[arg(long, default_value_t = 6784)]
    pub fastdp_port: u16,
    /// Most flows in the fast datapath's kernel table. Near it flows make
    /// room (from 7/8 full down to 3/4), those that carried fewer than 16
    /// packets first, each kind least recently used first; at it a new
    /// pair of MACs is forwarded without a flow until there is room.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(64..=1_000_000))]
    pub fastdp_max_flows: u32,
    /// MTU of the overlay (containers' interfaces); by default the
    /// underlay interface's MTU minus what encapsulation adds.
    #[arg(long, env = "WEFT_MTU")]
    pub mtu: Option<u32>,
    /// Subnets whose hosts trust each other's network: between two routers
    /// in them, data goes unencrypted even with a password, and so may use
    /// the fast datapath (control connections stay encrypted).
    /// Comma-separated CIDRs.
    #[arg(long, value_delimiter = ',')]
    pub trusted_subnets: Vec<ipnet::IpNet>,
    /// The range IPAM hands container addresses out of; the same on every
    /// router of the mesh.
    #[arg(long, env = "WEFT_IPALLOC_RANGE", default_value = weft_ipam::DEFAULT_RANGE, value_parser = parse_cidr)]
    pub ipalloc_range: ipnet::Ipv4Net,
    /// Where addresses come from when no subnet is asked for (inside the
    /// range); the whole range by default.
    #[arg(long, env = "WEFT_IPALLOC_DEFAULT_SUBNET", value_parser = parse_cidr)]
    pub ipalloc_default_subnet: Option<ipnet::Ipv4Net>,
    /// How the range is first divided: `consensus=N` (N initial routers
    /// agree; default: 1 + the number of peers given), `seed=NAME,NAME`
    /// (these routers own it from the start) or `observer` (never takes
    /// part; gets space from others).
    #[arg(long, env = "WEFT_IPALLOC_INIT", value_parser = parse_init)]
    pub ipalloc_init: Option<weft_ipam::Init>,
    /// Take back the unused space of peers unreachable this long (like
    /// 30m, 2h or 600s); off by default. Only space no container can be
    /// using is taken, and only by a majority (see the README).
    #[arg(long, env = "WEFT_IPALLOC_RECLAIM_AFTER", value_parser = parse_duration)]
    pub ipalloc_reclaim_after: Option<std::time::Duration>,
    /// Serve Docker's network and IPAM plugin (`docker network create -d
    /// weft --ipam-driver weft NET`) on /run/docker/plugins/weft.sock:
    /// `auto` does when a Docker daemon socket is at /run/docker.sock.
    #[arg(long, env = "WEFT_DOCKER_PLUGIN", value_enum, default_value = "auto")]
    pub docker_plugin: DockerPlugin,
    /// Where dockerd's API is, to learn the names of Docker containers on
    /// weft networks (their container name and network aliases).
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///run/docker.sock")]
    pub docker_host: String,
    /// On Kubernetes (inside the DaemonSet): peers come from the node list,
    /// read at start and every minute, and the IPAM space of nodes deleted
    /// from the cluster is taken back.
    /// NetworkPolicies, pods' labels and namespaces' labels then come from
    /// the API server too (watched), in place of `weft policy apply`.
    #[arg(long, env = "WEFT_KUBERNETES")]
    pub kubernetes: bool,
    /// With --kubernetes, the API server to use instead of the in-cluster
    /// one: https://HOST:PORT as the pod's service account, or
    /// http://127.0.0.1:8001 for `kubectl proxy` on this node.
    #[arg(long, env = "WEFT_KUBERNETES_API", requires = "kubernetes")]
    pub kubernetes_api: Option<String>,
    /// With --kubernetes, this router's node (the DaemonSet sets NODE_NAME
    /// from spec.nodeName): it is not dialled as a peer.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Send containers' traffic to the world with their own addresses: no
    /// masquerading to the host's address (the network beyond must then
    /// route the range back to this host).
    #[arg(long, env = "WEFT_NO_MASQUERADE")]
    pub no_masquerade: bool,
    /// Destinations containers reach with their own addresses, not the
    /// host's: a VPC, a VPN (repeat, or comma-separated CIDRs).
    #[arg(long, value_delimiter = ',', value_parser = parse_cidr)]
    pub masquerade_exclude: Vec<ipnet::Ipv4Net>,
    /// Start afresh: do not dial the peers remembered from the last run
    /// (those given and those connected to).
    #[arg(long)]
    pub no_resume: bool,
    /// Rebuild a lost IPAM state (ipam.redb missing, empty or damaged and
    /// moved aside) from the containers attached on this host: their
    /// addresses are held again before anything is handed out.
    #[arg(long)]
    pub recover_ipam: bool,
    /// Do not answer DNS: containers get no names from weft.
    #[arg(long, env = "WEFT_NO_DNS")]
    pub no_dns: bool,
    /// The domain the mesh's names live in.
    #[arg(long, env = "WEFT_DNS_DOMAIN", default_value = crate::names::name::DEFAULT_DOMAIN, value_parser = parse_domain)]
    pub dns_domain: crate::names::name::Fqdn,
    /// How long a query waits for a name whose instances declared a port
    /// (`--name db:5432`) until one listens on it, then fails (30s, 2m).
    #[arg(long, env = "WEFT_DNS_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub dns_wait: std::time::Duration,
    /// Seconds a DNS answer may be cached: short, so that clients spread
    /// over a name's instances and forget departed ones quickly.
    #[arg(long, env = "WEFT_DNS_TTL", default_value_t = 1)]
    pub dns_ttl: u32,
    /// Leave containers' queries to the host's resolvers alone. By default
    /// the router answers them (the mesh's names; anything else it asks
    /// those same resolvers), which is how Docker containers resolve the
    /// mesh's names with no flags.
    #[arg(long, env = "WEFT_NO_DNS_CAPTURE")]
    pub no_dns_capture: bool,
    /// Where the host's own resolvers are listed: names outside the
    /// domain are forwarded to them.
    #[arg(long, env = "WEFT_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: std::path::PathBuf,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "WEFT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    #[command(flatten)]
    pub dirs: DirArgs,
}

/// A CIDR, with what is wrong named (`10.32.0.0/33`: the prefix length,
/// not "invalid IP address syntax").
pub fn parse_cidr(s: &str) -> Result<ipnet::Ipv4Net, String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| {
        format!("{s:?}: expected an address and a prefix length, like 10.32.0.0/12")
    })?;
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{s:?}: {len:?} is not a prefix length"))?;
    ipnet::Ipv4Net::new(addr, len)
        .map_err(|_| format!("{s:?}: the prefix length {len} is more than 32"))
}

/// Which kernel paths a router may use (`--overlay`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayChoice {
    Auto,
    Fastdp,
    Vxlan,
    Userspace,
}

impl RouterArgs {
    /// What `--overlay` and `--no-fastdp` ask for together.
    pub fn overlay_choice(&self) -> OverlayChoice {
        if self.no_fastdp {
            OverlayChoice::Userspace
        } else {
            self.overlay
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerPlugin {
    Auto,
    On,
    Off,
}

fn parse_init(s: &str) -> Result<weft_ipam::Init, String> {
    let bad = || format!("{s:?}: expected consensus=N, seed=NAME[,NAME...] or observer");
    match s.split_once('=') {
        None if s == "observer" => Ok(weft_ipam::Init::Observer),
        Some(("consensus", n)) => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(weft_ipam::Init::Consensus(n)),
            _ => Err(bad()),
        },
        Some(("seed", names)) => {
            let mut seeds = Vec::new();
            for name in names.split(',') {
                let name: PeerName = name.parse().map_err(|e| format!("{}: {e}", bad()))?;
                seeds.push(weft_ipam::Peer(name.as_u64()));
            }
            Ok(weft_ipam::Init::Seed(seeds))
        }
        _ => Err(bad()),
    }
}

/// `90`, `90s`, `30m`, `2h`.
/// A DNS domain, with what is wrong named.
fn parse_domain(s: &str) -> Result<crate::names::name::Fqdn, String> {
    crate::names::name::Fqdn::parse(s).map_err(|e| format!("--dns-domain: {e}"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration like 600s, 30m or 2h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit must be s, m or h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_cidr_names_what_is_wrong() {
        assert_eq!(
            parse_cidr("10.32.0.0/12"),
            Ok("10.32.0.0/12".parse().unwrap())
        );
        assert!(
            parse_cidr("10.32.0.0/33")
                .unwrap_err()
                .contains("prefix length 33 is more than 32")
        );
        assert!(
            parse_cidr("10.32.0/12")
                .unwrap_err()
                .contains("not an IPv4 address")
        );
        assert!(
            parse_cidr("10.32.0.0")
                .unwrap_err()
                .contains("prefix length")
        );
        assert!(
            parse_cidr("10.32.0.0/x")
                .unwrap_err()
                .contains("not a prefix length")
        );
    }

    #[test]
    fn ipalloc_flags_parse_and_bad_values_say_what_is_expected() {
        assert_eq!(parse_init("consensus=3"), Ok(weft_ipam::Init::Consensus(3)));
        assert_eq!(parse_init("observer"), Ok(weft_ipam::Init::Observer));
        assert_eq!(
            parse_init("seed=02:00:00:00:00:01,02:00:00:00:00:02"),
            Ok(weft_ipam::Init::Seed(vec![
                weft_ipam::Peer(0x0200_0000_0001),
                weft_ipam::Peer(0x0200_0000_0002)
            ]))
        );
        assert!(parse_init("consensus=0").unwrap_err().contains("expected"));
        assert!(parse_init("seed=bob").is_err());
        assert_eq!(
            parse_duration("30m"),
            Ok(std::time::Duration::from_secs(1800))
        );
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert!(parse_duration("5d").is_err());
    }
}

/// `weft condition CONTAINER ...`.
#[derive(Args, Debug)]
pub struct ConditionArgs {
    /// The container, as `weft ps` shows its id.
    pub container: String,
    /// Milliseconds added to every packet.
    #[arg(long, value_name = "MS")]
    pub latency: Option<f64>,
    /// Up to this many milliseconds more, uniformly, per packet.
    #[arg(long, value_name = "MS")]
    pub jitter: Option<f64>,
    /// Fraction of packets jittered (default 1: all).
    #[arg(long, value_name = "FRACTION")]
    pub jitter_strength: Option<f64>,
    /// Let jittered packets overtake each other.
    #[arg(long)]
    pub reorder: bool,
    /// Fraction of packets lost, 0 to 1 (0.02 is 2%).
    #[arg(long, value_name = "FRACTION")]
    pub loss: Option<f64>,
    /// Lose packets in runs of this many on average (burst loss).
    #[arg(long, value_name = "PACKETS")]
    pub loss_burst: Option<f64>,
    /// Rate limit in bits per second: 500k, 10M, 1G or a number.
    #[arg(long, value_name = "BITS", value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Drop what exceeds the rate instead of queueing it.
    #[arg(long)]
    pub police: bool,
    /// The rate's queue (or the policer's burst) in bytes.
    #[arg(long, value_name = "BYTES")]
    pub queue_limit: Option<u64>,
    /// Fraction of packets sent twice.
    #[arg(long, value_name = "FRACTION")]
    pub duplicate: Option<f64>,
    /// Which traffic the settings are for: into the container, out of
    /// it, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub direction: ConditionDirection,
    /// Conditions from a JSON file (`-`: standard input), weft's form or
    /// Synthetic Network's, replacing all of the container's.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["latency", "jitter", "loss", "rate", "duplicate", "clear"])]
    pub file: Option<PathBuf>,
    /// Take every condition off the container.
    #[arg(long)]
    pub clear: bool,
    #[command(flatten)]
    pub dirs: DirArgs,
}

/// `weft synthetic`.
#[derive(Args, Debug)]
pub struct SyntheticArgs {
    /// The container, as `weft ps` shows its id; none: list the doors.
    pub container: Option<String>,
    /// The port on 127.0.0.1 (0: any free one; the same one is kept
    /// across router restarts).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Synthetic Network's page: its `frontend/client` directory
    /// (control.html, ui.js, ...), read when the door opens.
    #[arg(long, value_name = "DIR")]
    pub ui: Option<PathBuf>,
    /// Close the container's door.
    #[arg(long, conflicts_with_all = ["port", "ui"], requires = "container")]
    pub close: bool,
    #[command(flatten)]
    pub dirs: DirArgs,
}

/// `weft top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Only this container (as `weft ps` shows its id).
    pub container: Option<String>,
    /// Seconds between refreshes, and what rates are taken over.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Flows shown per rule, busiest first (the rest are summed).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub rows: usize,
    /// Print one reading and exit (also what happens when the output is
    /// not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Print one reading as JSON (what `/flows` answers) and exit.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: DirArgs,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.2..=3600.0).contains(&s) => Ok(s),
        _ => Err(format!(
            "{text:?}: give seconds between 0.2 and 3600, e.g. 1 or 0.5"
        )),
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionDirection {
    Both,
    Ingress,
    Egress,
}

/// Bits per second: a number, or one with k, M or G (powers of 1000),
/// optionally followed by "bit" or "bps".
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("bit")
        .or_else(|| t.strip_suffix("bps"))
        .unwrap_or(t);
    let (digits, scale) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    match digits.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * scale).round() as u64),
        _ => Err(format!(
            "{text:?} is not a rate: give bits per second, like 500k, 10M or 1G"
        )),
    }
}
