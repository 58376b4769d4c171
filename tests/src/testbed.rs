use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    Background, Block, BlockRule, Error, Netns, Node, Result, Spec,
    block::{self, TABLE},
    netns::{NETNS_DIR, checked},
    process::stop_detached,
    spec::PREFIX_LEN,
    state::{self, STATE_ROOT, State},
    workspace_bin,
};

/// Every namespace of testbed `t` is named `tb-<t>-<node>`.
const NETNS_PREFIX: &str = "tb-";
const MAX_NAME_LEN: usize = 40;
/// Testbeds with more hosts than this get permanent neighbour entries.
const PERMANENT_NEIGHBOURS_FROM: usize = 20;
/// How long processes in a doomed namespace get to exit after SIGTERM.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// A set of simulated hosts, containers and the underlay joining them.
///
/// A testbed made with [`Testbed::create_owned`] is removed when the value is
/// dropped (also while a panic unwinds) and, through a reaper process, when
/// the owning process dies without unwinding (Ctrl-C, `kill -9`, abort).
#[derive(Debug)]
pub struct Testbed {
    state: State,
    /// Holds the write end of the reaper's stdin: when this process dies for
    /// any reason the kernel closes it and the reaper removes the testbed.
    reaper: Option<Child>,
    owned: bool,
}

impl Testbed {
    /// A testbed that lives as long as the returned value, named uniquely
    /// from `hint` so tests can run in parallel.
    pub fn create_owned(hint: &str, spec: Spec) -> Result<Testbed> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let hint: String = hint
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(16)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{hint}{}n{n}", std::process::id());
        Testbed::create(&name, spec, true)
    }

    /// A testbed that outlives this process, until [`destroy`] removes it;
    /// what `weft-testbed create` makes.
    pub fn create_persistent(name: &str, spec: Spec) -> Result<Testbed> {
        Testbed::create(name, spec, false)
    }

    /// An existing testbed, by name; dropping it leaves it in place.
    pub fn open(name: &str) -> Result<Testbed> {
        Ok(Testbed {
            state: State::load(name)?,
            reaper: None,
            owned: false,
        })
    }

    fn create(name: &str, spec: Spec, owned: bool) -> Result<Testbed> {
        check_name(name)?;
        spec.validate()?;
        if state::dir(name).exists() || !namespaces_of(name).is_empty() {
            return Err(Error::Exists(name.to_string()));
        }
        let state = State {
            name: name.to_string(),
            spec,
            owner_pid: owned.then(std::process::id),
            blocks: Vec::new(),
        };
        // State first, so that whatever happens next, `destroy` and `gc`
        // know the testbed exists.
        state.save()?;
        let mut testbed = Testbed {
            state,
            reaper: None,
            owned,
        };
        let built = testbed.start_reaper().and_then(|()| testbed.build());
        match built {
            Ok(()) => Ok(testbed),
            Err(e) => {
                // Dropping removes the partial testbed; for a persistent one
                // do it explicitly since drop leaves those in place.
                if !owned {
                    let _ = destroy(name);
                }
                Err(e)
            }
        }
    }

    fn start_reaper(&mut self) -> Result<()> {
        if !self.owned {
            return Ok(());
        }
        let bin = workspace_bin("weft-testbed")?;
        let mut cmd = Command::new(&bin);
        cmd.args(["reap", &self.state.name])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: bin.display().to_string(),
            source,
        })?;
        self.reaper = Some(child);
        Ok(())
    }

    fn build(&self) -> Result<()> {
        let spec = &self.state.spec;
        for node in spec.nodes() {
            let ns = self.netns(node);
            add_netns(ns.name())?;
            ns.ip(["link", "set", "dev", "lo", "up"])?;
        }
        let net = self.netns(Node::Underlay);
        let bridges: &[&str] = if spec.hop.is_some() {
            &["br0", "br1"]
        } else {
            &["br0"]
        };
        for bridge in bridges {
            net.ip(["link", "add", bridge, "type", "bridge"])?;
            net.ip(["link", "set", "dev", bridge, "up"])?;
        }
        if let Some(hop) = spec.hop {
            let rt = self.netns(Node::Router);
            let (addr_a, addr_b) = spec.router_addrs();
            self.plug(&rt, "eth0", "rt0", "br0", None, addr_a)?;
            self.plug(&rt, "eth1", "rt1", "br1", Some(hop.mtu), addr_b)?;
            rt.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        if spec.outside {
            let out = self.netns(Node::Outside);
            self.plug(&out, "eth0", "out", "br0", None, spec.outside_addr())?;
            if let Some((a, _)) = spec.hop.map(|_| spec.router_addrs()) {
                out.ip(["route", "add", "default", "via", &a.to_string()])?;
            }
        }
        for host in 1..=spec.hosts {
            let ns = self.netns(Node::Host(host));
            let port = format!("h{host}");
            let (mtu, addr) = (spec.link_mtu(host), spec.host_addr(host));
            self.plug(&ns, "eth0", &port, spec.bridge_of(host), mtu, addr)?;
            if let Some(gateway) = spec.gateway_of(host) {
                ns.ip(["route", "add", "default", "via", &gateway.to_string()])?;
            }
        }
        if spec.hosts > PERMANENT_NEIGHBOURS_FROM {
            self.permanent_neighbours()?;
        }
        Ok(())
    }

    /// Every host knows every other host's MAC for good. All namespaces
    /// share the kernel's neighbour-table limits (gc_thresh3, 1024 here):
    /// a big testbed whose hosts all talk to each other would run out of
    /// entries and hosts beyond about 33 never join. Permanent entries are
    /// exempt from those limits, and no sysctl of the machine is touched.
    fn permanent_neighbours(&self) -> Result<()> {
        let spec = &self.state.spec;
        let mut macs = Vec::new();
        for host in 1..=spec.hosts {
            let mac = self.host(host).mac("eth0")?;
            macs.push((spec.host_addr(host), spec.bridge_of(host), mac));
        }
        for host in 1..=spec.hosts {
            let batch: String = macs
                .iter()
                .filter(|(addr, bridge, _)| {
                    *addr != spec.host_addr(host) && *bridge == spec.bridge_of(host)
                })
                .map(|(addr, _, mac)| {
                    format!("neigh replace {addr} lladdr {mac} dev eth0 nud permanent\n")
                })
                .collect();
            self.host(host)
                .run_with_input(&["ip", "-batch", "-"], &batch)?;
        }
        Ok(())
    }

    /// Connects namespace `ns` to a bridge of the underlay with a veth pair:
    /// `inner` inside `ns` with `addr`, `port` on the bridge.
    fn plug(
        &self,
        ns: &Netns,
        inner: &str,
        port: &str,
        bridge: &str,
        mtu: Option<u32>,
        addr: Ipv4Addr,
    ) -> Result<()> {
        let net = self.netns(Node::Underlay);
        let mtu_args = |mtu: Option<u32>| match mtu {
            Some(mtu) => vec!["mtu".to_string(), mtu.to_string()],
            None => vec![],
        };
        let mut args: Vec<String> = vec!["link".into(), "add".into(), port.into()];
        args.extend(mtu_args(mtu));
        args.extend(["type", "veth", "peer", "name", inner].map(String::from));
        args.extend(mtu_args(mtu));
        args.extend(["netns".to_string(), ns.name().to_string()]);
        net.ip(&args)?;
        net.ip(["link", "set", "dev", port, "master", bridge, "up"])?;
        ns.ip(["addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", inner])?;
        ns.ip(["link", "set", "dev", inner, "up"])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn spec(&self) -> &Spec {
        &self.state.spec
    }

    /// A directory of the testbed's own, removed with it: for the state of
    /// what a test runs (routers, container runtimes).
    pub fn state_dir(&self) -> PathBuf {
        state::dir(&self.state.name)
    }

    /// The namespace of `node`. Panics if the testbed has no such node: in a
    /// test that is a bug in the test, not a condition to handle.
    pub fn netns(&self, node: Node) -> Netns {
        assert!(
            self.state.spec.has_node(node),
            "testbed {} has no node {node}",
            self.state.name
        );
        Netns::new(format!("{NETNS_PREFIX}{}-{node}", self.state.name))
    }

    /// Like [`Testbed::netns`], for names typed by a user.
    pub fn node(&self, name: &str) -> Result<Netns> {
        let no_such_node = || Error::NoSuchNode {
            testbed: self.state.name.clone(),
            node: name.to_string(),
        };
        let node: Node = name.parse().map_err(|_| no_such_node())?;
        if !self.state.spec.has_node(node) {
            return Err(no_such_node());
        }
        Ok(self.netns(node))
    }

    pub fn host(&self, host: usize) -> Netns {
        self.netns(Node::Host(host))
    }

    pub fn container(&self, host: usize, index: usize) -> Netns {
        self.netns(Node::Container { host, index })
    }

    pub fn underlay(&self) -> Netns {
        self.netns(Node::Underlay)
    }

    /// The host of the world outside the mesh ([`Spec::with_outside`]).
    pub fn outside(&self) -> Netns {
        self.netns(Node::Outside)
    }

    pub fn host_addr(&self, host: usize) -> Ipv4Addr {
        self.state.spec.host_addr(host)
    }

    pub fn blocks(&self) -> &[BlockRule] {
        &self.state.blocks
    }

    /// Drops `what` between hosts `a` and `b`, both ways, in the underlay.
    pub fn block(&mut self, a: usize, b: usize, what: Block) -> Result<()> {
        for host in [a, b] {
            if !self.state.spec.has_host(host) {
                return Err(Error::NoSuchNode {
                    testbed: self.state.name.clone(),
                    node: Node::Host(host).to_string(),
                });
            }
        }
        let mut blocks = self.state.blocks.clone();
        blocks.push(BlockRule { a, b, what });
        self.apply_blocks(blocks)
    }

    /// Removes every block between hosts `a` and `b`.
    pub fn unblock(&mut self, a: usize, b: usize) -> Result<()> {
        let mut blocks = self.state.blocks.clone();
        blocks.retain(|rule| !rule.between(a, b));
        self.apply_blocks(blocks)
    }

    fn apply_blocks(&mut self, blocks: Vec<BlockRule>) -> Result<()> {
        let script = block::ruleset(&self.state.spec, &blocks);
        self.underlay().nft(&script)?;
        self.state.blocks = blocks;
        self.state.save()
    }

    /// The nftables ruleset of the underlay, as `nft list table` prints it
    /// (empty when nothing is blocked).
    pub fn firewall(&self) -> Result<String> {
        let out = self
            .underlay()
            .command(["nft", "list", "table", TABLE])
            .output();
        Ok(out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default())
    }

    /// Where a background process started as `label` on `node` logs.
    pub fn log_path(&self, node: &Netns, label: &str) -> PathBuf {
        state::dir(&self.state.name)
            .join("logs")
            .join(format!("{}-{label}.log", node.name()))
    }

    fn pid_path(&self, node: &Netns, label: &str) -> PathBuf {
        state::dir(&self.state.name)
            .join("procs")
            .join(format!("{}-{label}.pid", node.name()))
    }

    /// Starts `argv` in the background on `node`; it stops when the returned
    /// handle is dropped, and in any case when the testbed goes.
    pub fn spawn<I, S>(&self, node: &Netns, label: &str, argv: I) -> Result<Background>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        node.spawn(argv, &self.log_path(node, label))
    }

    /// Starts `argv` in the background and leaves it running after this
    /// process exits, remembered under `label` for [`Testbed::stop_detached`].
    pub fn start_detached<I, S>(&self, node: &Netns, label: &str, argv: I) -> Result<u32>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let pid_path = self.pid_path(node, label);
        if let Ok(pid) = fs::read_to_string(&pid_path)
            && process_alive(pid.trim().parse().unwrap_or(0))
        {
            return Err(Error::Spec(format!(
                "{label} is already running on {} (pid {}); stop it first",
                node.name(),
                pid.trim()
            )));
        }
        let pid = self.spawn(node, label, argv)?.detach();
        let dir = pid_path.parent().expect("pid file has a directory");
        fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        fs::write(&pid_path, pid.to_string())
            .map_err(Error::io(format!("write {}", pid_path.display())))?;
        Ok(pid)
    }

    /// Stops what [`Testbed::start_detached`] started; false if it was not running.
    pub fn stop_detached(&self, node: &Netns, label: &str) -> Result<bool> {
        let pid_path = self.pid_path(node, label);
        let Ok(text) = fs::read_to_string(&pid_path) else {
            return Ok(false);
        };
        let _ = fs::remove_file(&pid_path);
        match text.trim().parse::<u32>() {
            Ok(pid) if process_alive(pid) => {
                stop_detached(pid);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Removes the testbed now, reporting what could not be removed.
    pub fn destroy(mut self) -> Result<()> {
        self.owned = false;
        let result = destroy(&self.state.name);
        self.release_reaper();
        result
    }

    fn release_reaper(&mut self) {
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = destroy(&self.state.name)
        {
            eprintln!("testbed {}: cleanup incomplete: {e}", self.state.name);
        }
        self.release_reaper();
    }
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::Spec(format!(
            "testbed name {name:?} must be 1 to {MAX_NAME_LEN} letters, digits or underscores"
        )))
    }
}

fn add_netns(name: &str) -> Result<()> {
    // The first `ip netns add` on a machine sets up /run/netns as a shared
    // mount; tests starting together can race on that, so retry briefly.
    let mut attempt = 0;
    loop {
        let result = checked(Command::new("ip").args(["netns", "add", name]));
        if result.is_ok() || attempt == 3 || Netns::new(name).path().exists() {
            return result.map(drop);
        }
        attempt += 1;
        thread::sleep(Duration::from_millis(50 * attempt));
    }
}

fn process_alive(pid: u32) -> bool {
    pid != 0 && kill(Pid::from_raw(pid as i32), None) != Err(Errno::ESRCH)
}

/// The namespaces of testbed `name` that exist now.
fn namespaces_of(name: &str) -> Vec<Netns> {
    let prefix = format!("{NETNS_PREFIX}{name}-");
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut found: Vec<Netns> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .map(Netns::new)
        .collect();
    found.sort_by(|a, b| a.name().cmp(b.name()));
    found
}

/// Processes whose network namespace is one of `namespaces`.
fn processes_in(namespaces: &[Netns]) -> Vec<Pid> {
    let ids: BTreeSet<(u64, u64)> = namespaces
        .iter()
        .filter_map(|ns| fs::metadata(ns.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| ids.contains(&(m.dev(), m.ino())))
        })
        .map(Pid::from_raw)
        .collect()
}

/// Removes testbed `name`: stops every process inside its namespaces, deletes
/// the namespaces (which takes their interfaces, routes and nftables rules
/// with them) and its state. Removing a testbed that is gone is not an error.
pub fn destroy(name: &str) -> Result<()> {
    check_name(name)?;
    let namespaces = namespaces_of(name);
    let deadline = Instant::now() + KILL_GRACE;
    let mut signal = Signal::SIGTERM;
    loop {
        let pids = processes_in(&namespaces);
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            signal = Signal::SIGKILL;
        }
        for pid in pids {
            let _ = kill(pid, signal);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let mut failures = Vec::new();
    for ns in &namespaces {
        if let Err(e) = checked(Command::new("ip").args(["netns", "del", ns.name()])) {
            failures.push(e.to_string());
        }
    }
    let dir = state::dir(name);
    unmount_under(&dir);
    if let Err(e) = fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        failures.push(format!("remove {}: {e}", dir.display()));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Error::Spec(format!(
            "could not remove all of testbed {name}: {}",
            failures.join("; ")
        )))
    }
}

/// Unmounts whatever a test mounted under `dir` (a small file system for a
/// data directory, a container runtime's mounts), deepest first, so that
/// the directory can go.
pub(crate) fn unmount_under(dir: &std::path::Path) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut ours: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| std::path::Path::new(m).starts_with(dir))
        .collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Names of all testbeds on this machine: those with state, and namespaces
/// left without state by a crash.
pub fn list() -> Vec<String> {
    let mut names = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        names.extend(entries.filter_map(|e| e.ok()?.file_name().into_string().ok()));
    }
    if let Ok(entries) = fs::read_dir(NETNS_DIR) {
        names.extend(entries.filter_map(|e| {
            let file = e.ok()?.file_name().into_string().ok()?;
            let rest = file.strip_prefix(NETNS_PREFIX)?;
            Some(rest.split_once('-')?.0.to_string())
        }));
    }
    names.into_iter().collect()
}

/// Whether a running process owns testbed `name` (a test in progress).
pub fn owned_by_a_live_process(name: &str) -> bool {
    State::load(name)
        .ok()
        .and_then(|s| s.owner_pid)
        .is_some_and(process_alive)
}

/// Removes testbeds whose owning process is gone, and namespaces left
/// without state; returns their names. Testbeds made by hand are kept.
pub fn gc() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list() {
        let orphaned = match State::load(&name) {
            Ok(state) => state.owner_pid.is_some_and(|pid| !process_alive(pid)),
            Err(Error::NoSuchTestbed(_)) => true,
            Err(_) => false,
        };
        if orphaned {
            destroy(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}
