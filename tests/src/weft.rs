//! weft routers on testbed hosts: each host gets its own data and run
//! directories inside the testbed's state, and runs the workspace's `weft`
//! binary inside its namespace, the way a user would.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Error, Netns, Node, Result, Testbed, state, tcp_seen_source, workspace_bin};

/// The weft router of one testbed host.
#[derive(Clone, Debug)]
pub struct WeftHost {
    pub host: usize,
    pub netns: Netns,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
}

/// The overlay address weft tests give container 1 of `host`.
pub fn container_addr(host: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, 0, host as u8)
}

/// Whether `from` gets answers to pings to `to` (two tries, so a first
/// packet lost to ARP does not count).
pub fn pings(from: &Netns, to: Ipv4Addr) -> bool {
    from.succeeds(["ping", "-c2", "-i0.2", "-W2", "-q", &to.to_string()])
        .unwrap_or(false)
}

impl Testbed {
    /// `bytes` of TCP from host `from`'s first container to host `to`'s,
    /// on `port`; a failure panics with what `explain` says of the mesh.
    pub fn transfer(
        &self,
        (from, to): (usize, usize),
        port: u16,
        bytes: u64,
        explain: impl Fn() -> String,
    ) {
        if let Err(e) = crate::tcp_transfer(
            &self.container(from, 1),
            &self.container(to, 1),
            container_addr(to),
            port,
            bytes,
        ) {
            panic!("{bytes} bytes h{from}c1 -> h{to}c1: {e}\n{}", explain());
        }
    }

    /// Every host's first container pings every other's.
    pub fn ping_all_pairs(&self, hosts: usize) {
        for a in 1..=hosts {
            for b in (1..=hosts).filter(|b| *b != a) {
                assert!(
                    pings(&self.container(a, 1), container_addr(b)),
                    "h{a}c1 -> h{b}c1"
                );
            }
        }
    }
}

impl Testbed {
    /// Launches a router on hosts 1..=`hosts` (each given host 1's
    /// address, plus `extra` flags) and, where the host has containers,
    /// attaches container 1 at [`container_addr`].
    pub fn weft_mesh(&self, hosts: usize, extra: &[&str]) -> Result<Vec<WeftHost>> {
        let first = self.host_addr(1).to_string();
        (1..=hosts)
            .map(|h| {
                let weft = self.weft(h);
                let mut args = extra.to_vec();
                if h > 1 {
                    args.push(&first);
                }
                weft.launch(&args)?;
                let container = Node::Container { host: h, index: 1 };
                if !self.spec().has_node(container) {
                    return Ok(weft);
                }
                let cidr = format!("{}/12", container_addr(h));
                let out = weft.run(&["attach", &cidr, self.container(h, 1).name()])?;
                if !out.contains(&cidr) {
                    return Err(Error::Spec(format!(
                        "weft attach should print the address {cidr}: {out}"
                    )));
                }
                Ok(weft)
            })
            .collect()
    }

    /// Routers on hosts 1..=`hosts` (each given host 1's address and
    /// `extra` flags), once every connection is up on `overlay`; nothing
    /// attached.
    pub fn connected_mesh(
        &self,
        hosts: usize,
        extra: &[&str],
        overlay: &str,
    ) -> Result<Vec<WeftHost>> {
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        self.connected_mesh_each(hosts, |_| extra.clone(), overlay)
    }

    /// [`Testbed::connected_mesh`] with each host's own flags, `extra(host)`.
    pub fn connected_mesh_each(
        &self,
        hosts: usize,
        extra: impl Fn(usize) -> Vec<String>,
        overlay: &str,
    ) -> Result<Vec<WeftHost>> {
        let first = self.host_addr(1).to_string();
        let mut routers = Vec::new();
        for h in 1..=hosts {
            let weft = self.weft(h);
            let mut args = extra(h);
            if h > 1 {
                args.push(first.clone());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            weft.launch(&args)?;
            routers.push(weft);
        }
        for r in &routers {
            // Generous: under emulation the fast datapath takes a while.
            eventually("every connection up", Duration::from_secs(60), || {
                r.overlays(overlay, hosts - 1)
            });
        }
        Ok(routers)
    }

    /// Routers on hosts 1..=`hosts` (each given host 1's address and
    /// `extra` flags), their connections on `overlay`, each host exposed,
    /// then container 1 of each attached with an address from IPAM.
    /// Returns the routers, each host's gateway and each container's
    /// address.
    pub fn exposed_mesh(
        &self,
        hosts: usize,
        extra: &[&str],
        overlay: &str,
    ) -> Result<(Vec<WeftHost>, Vec<Ipv4Addr>, Vec<Ipv4Addr>)> {
        let routers = self.connected_mesh(hosts, extra, overlay)?;
        let addr_of = |printed: String| -> Result<Ipv4Addr> {
            printed
                .trim()
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| Error::Spec(format!("not an address: {printed:?}")))
        };
        let mut gateways = Vec::new();
        let mut containers = Vec::new();
        for r in &routers {
            gateways.push(addr_of(r.run(&["expose"])?)?);
            containers.push(addr_of(
                r.run(&["attach", self.container(r.host, 1).name()])?,
            )?);
        }
        Ok((routers, gateways, containers))
    }

    /// Kubernetes-style services across hosts, as kube-proxy would write
    /// them into every host ([`kube_proxy_rules`]): a service address and
    /// a node port backed by container 1 of host 3 (at `containers[2]`).
    /// The machine-wide `bridge-nf-call-iptables` is off in the hosts, so
    /// weft's own bridge setting is what translates replies back. Returns
    /// the source address the backend saw from container 1 of host 1 and of
    /// host 2 through the service, and from container 1 of host 2 through
    /// host 1's node port.
    pub fn service_sources(&self, containers: &[Ipv4Addr]) -> Result<[Ipv4Addr; 3]> {
        let service = Ipv4Addr::new(10, 96, 0, 10);
        let port = 8080;
        for h in 1..=3 {
            let host = self.host(h);
            host.run(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"])?;
            host.nft(&kube_proxy_rules(service, containers[2], port))?;
        }
        let backend = self.container(3, 1);
        Ok([
            tcp_seen_source(&self.container(1, 1), &backend, service, port)?,
            tcp_seen_source(&self.container(2, 1), &backend, service, port)?,
            tcp_seen_source(&self.container(2, 1), &backend, self.host_addr(1), port + 1)?,
        ])
    }

    /// The weft router of `host` (not started until [`WeftHost::launch`]).
    pub fn weft(&self, host: usize) -> WeftHost {
        let base = state::dir(self.name())
            .join("weft")
            .join(format!("h{host}"));
        WeftHost {
            host,
            netns: self.host(host),
            data_dir: base.join("data"),
            run_dir: base.join("run"),
        }
    }
}

impl WeftHost {
    /// Runs `weft ARGS` in the host with this host's directories;
    /// returns the whole output whatever the exit status.
    pub fn command(&self, args: &[&str]) -> Result<Output> {
        let weft = workspace_bin("weft")?;
        let mut cmd = self.netns.command([weft.as_os_str()]);
        cmd.args(args)
            .env("WEFT_DATA_DIR", &self.data_dir)
            .env("WEFT_RUN_DIR", &self.run_dir)
            .env_remove("WEFT_PASSWORD");
        cmd.output().map_err(|source| Error::Spawn {
            command: format!("weft {}", args.join(" ")),
            source,
        })
    }

    /// Runs `weft ARGS` and returns its stdout; a failure is an error with
    /// its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: format!("weft {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `weft launch --nickname hN ARGS`. Unless ARGS choose an overlay,
    /// `--overlay fastdp`: the fast datapath in the kernel VM, the
    /// userspace path on a host without openvswitch, as the tests written
    /// for those paths expect; tests of the vxlan device ask for it.
    pub fn launch(&self, args: &[&str]) -> Result<String> {
        let nickname = format!("h{}", self.host);
        let mut all = vec!["launch", "--nickname", &nickname];
        if !args
            .iter()
            .any(|a| a.starts_with("--overlay") || *a == "--no-fastdp")
        {
            all.extend_from_slice(&["--overlay", "fastdp"]);
        }
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `weft ARGS`, whose output is JSON, parsed.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let text = self.run(args)?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("weft {} is not JSON: {e}\n{text}", args.join(" "))))
    }

    /// GET `path` from the router's API on its unix socket, as the CLI
    /// does but without a process: tests poll the router often, and under
    /// emulation (the kernel VM) each `ip netns exec weft ...` took a good
    /// part of a second.
    pub fn api_get(&self, path: &str) -> Result<String> {
        weft_api::Client::new(self.run_dir.join("weft.sock"))
            .get(path)
            .map_err(|source| Error::Api {
                host: self.host,
                path: path.to_string(),
                source,
            })
    }

    /// The router's report (what `weft report` prints), parsed.
    pub fn report(&self) -> Result<Value> {
        let text = self.api_get("/report")?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Spec(format!("the report is not JSON: {e}\n{text}")))
    }

    /// What this router's IPAM holds (`weft ipam show`): each owner
    /// (container id) and its addresses.
    pub fn ipam_holdings(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let show = self.json(&["ipam", "show"])?;
        let containers = show["containers"]
            .as_object()
            .ok_or_else(|| Error::Spec(format!("no containers in weft ipam show: {show}")))?;
        containers
            .iter()
            .map(|(id, addrs)| {
                let addrs: Option<Vec<String>> = addrs
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_str().map(String::from)).collect());
                let addrs = addrs.ok_or_else(|| {
                    Error::Spec(format!("{id}: addresses are not a list of strings: {show}"))
                })?;
                Ok((id.clone(), addrs))
            })
            .collect()
    }

    /// The connections of `weft report`.
    pub fn connections(&self) -> Result<Vec<Value>> {
        let report = self.report()?;
        Ok(report["connections"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Ok when exactly `expected` connections use `overlay`; otherwise
    /// the connections as they are (for [`eventually`]).
    pub fn overlays(&self, overlay: &str, expected: usize) -> std::result::Result<(), String> {
        let conns = self.connections().map_err(|e| e.to_string())?;
        let n = conns.iter().filter(|c| c["overlay"] == overlay).count();
        if n == expected {
            Ok(())
        } else {
            Err(format!(
                "h{}: {n} of {expected} connections on {overlay}: {}",
                self.host,
                Value::from(conns)
            ))
        }
    }

    /// Ok (the connection) when the connection to `peer` is on `overlay`
    /// with `reason` (none: null); the connection as it is otherwise.
    pub fn connection_is(
        &self,
        peer: &str,
        overlay: &str,
        reason: Option<&str>,
    ) -> std::result::Result<Value, String> {
        let c = self.connection_to(peer)?;
        let want_reason = reason.map(Value::from).unwrap_or(Value::Null);
        if c["overlay"] == overlay && c["reason"] == want_reason {
            Ok(c)
        } else {
            Err(format!("h{} -> {peer}: {c}", self.host))
        }
    }

    /// The connection to the peer nicknamed `nickname`.
    pub fn connection_to(&self, nickname: &str) -> std::result::Result<Value, String> {
        self.connections()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|c| c["nickname"] == nickname)
            .ok_or_else(|| format!("h{}: no connection to {nickname}", self.host))
    }

    /// The router's pid, from its pid file.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.run_dir.join("weft.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the router outright, as a crash would.
    pub fn kill9(&self) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| Error::Spec(format!("no router running on h{}", self.host)))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| Error::Spec(format!("kill {pid}: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        // Gone, or a zombie no one reaps (the kernel VM's init does not).
        let running = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            })
        };
        while running() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The router's log (when started with `weft launch`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("weft.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the router's log, oldest first: for a
    /// failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let mut tail: Vec<&str> = log.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join("\n")
    }

    /// Sends `request` (raw HTTP; it should say `Connection: close`) to the
    /// router's TCP API from inside the host, as root or, with `nobody`, as
    /// an unprivileged user; returns the raw answer.
    pub fn tcp_api(&self, request: &str, nobody: bool) -> Result<String> {
        let mut argv: Vec<&str> = Vec::new();
        if nobody {
            argv.extend([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]);
        }
        argv.extend(["nc", "-w", "5", "127.0.0.1", "6784"]);
        let mut child = self
            .netns
            .command(&argv)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                command: argv.join(" "),
                source,
            })?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(request.as_bytes())
            .map_err(Error::io("send the request"))?;
        let out = child
            .wait_with_output()
            .map_err(Error::io("read the answer"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `GET /metrics` over TCP, as Prometheus scrapes it.
    /// The ids of the policies `weft policy list` shows.
    pub fn policy_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .api_get("/policy/list")?
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('!'))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect())
    }

    pub fn metrics(&self) -> Result<String> {
        self.tcp_api(
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:6784\r\nConnection: close\r\n\r\n",
            false,
        )
    }

    /// The value of the `/metrics` sample `sample` (a name and its
    /// labels, as printed: `weft_fastdp_flows`,
    /// `weft_datapath_total{counter="relayed"}`).
    pub fn metric(&self, sample: &str) -> Result<u64> {
        let metrics = self.metrics()?;
        let key = format!("{sample} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Spec(format!("no {sample} in /metrics:\n{metrics}")))
    }

    /// A counter of the userspace data path (`weft_datapath_total`).
    pub fn datapath_counter(&self, name: &str) -> u64 {
        self.metric(&format!("weft_datapath_total{{counter=\"{name}\"}}"))
            .unwrap()
    }

    /// Every `/metrics` line of the fast datapath (`weft_fastdp_...`).
    pub fn fastdp_metrics(&self) -> Result<Vec<String>> {
        Ok(self
            .metrics()?
            .lines()
            .filter(|l| l.starts_with("weft_fastdp"))
            .map(str::to_string)
            .collect())
    }

    /// A counter of the fast datapath (`weft_fastdp_total`).
    pub fn fastdp_total(&self, name: &str) -> Result<u64> {
        self.metric(&format!("weft_fastdp_total{{counter=\"{name}\"}}"))
    }

    /// [`WeftHost::fastdp_total`] for tests, where a missing counter is a
    /// failure.
    pub fn fastdp_counter(&self, name: &str) -> u64 {
        self.fastdp_total(name).unwrap()
    }

    /// The flows in the kernel datapath's table, as `weft dp show` reads
    /// them from the kernel.
    pub fn kernel_flows(&self) -> Result<u64> {
        let show = self.run(&["dp", "show"])?;
        show.split(", ")
            .find_map(|part| part.split_once(" flows").and_then(|(n, _)| n.parse().ok()))
            .ok_or_else(|| Error::Spec(format!("no flow count in `weft dp show`: {show}")))
    }
}

/// A service address and a node port (`port` + 1) as kube-proxy writes
/// them, for a host's own nftables: DNAT to `backend` for the service from
/// containers and the host; DNAT and masquerade for the node port.
pub fn kube_proxy_rules(service: Ipv4Addr, backend: Ipv4Addr, port: u16) -> String {
    format!(
        "table ip kubeproxy {{
  chain prerouting {{ type nat hook prerouting priority -100;
    ip daddr {service} tcp dport {port} dnat to {backend}:{port}
    fib daddr type local tcp dport {node_port} meta mark set 0x4000 dnat to {backend}:{node_port}
  }}
  chain output {{ type nat hook output priority -100;
    ip daddr {service} tcp dport {port} dnat to {backend}:{port}
  }}
  chain postrouting {{ type nat hook postrouting priority 100;
    meta mark 0x4000 masquerade
  }}
}}
",
        node_port = port + 1
    )
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after
/// `timeout` with `what` and the last value seen.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {last}")
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}
