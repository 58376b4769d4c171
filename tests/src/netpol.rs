//! The NetworkPolicy model on a testbed, with real traffic: namespaces
//! x, y, z and pods a, b, c as containers on three hosts (every pod a on
//! host 1, b on host 2, c on host 3, so each probe table has both
//! same-host and cross-host pairs), each serving TCP and UDP on 80 and 81,
//! and each conformance case of `policy/cases.yaml` applied with `weft
//! policy apply` and checked against its truth tables.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use weft_policy::{
    Protocol,
    cases::{self, Case, NAMED_PORTS, Probe, Table},
};

use crate::{
    Netns, Result, Testbed, WeftHost, eventually,
    kube_api::{self, KubeApi},
};

/// How long a probe waits: a dropped SYN or datagram is "denied".
const PROBE_WAIT: Duration = Duration::from_millis(400);
/// How long a case's tables may take to come true after it is applied.
const SETTLE: Duration = Duration::from_secs(45);
/// The same for the first case: the first enforcement on each host also
/// loads br_netfilter and builds the first policy chains, which under
/// emulation took 42 s on one machine and more on CI's.
const FIRST_SETTLE: Duration = Duration::from_secs(120);
/// How long the mesh may take to carry every pair's traffic at first.
const WARM_UP: Duration = Duration::from_secs(120);

/// Where the routers learn labels and policies.
pub enum Source {
    /// `weft attach --namespace --label --port`, `weft policy namespace`
    /// and `weft policy apply` on one router, gossiped to the others.
    Weft,
    /// A stand-in Kubernetes API server that every router watches
    /// (`--kubernetes`); containers are attached with no labels, as the
    /// CNI plugin attaches pods.
    Kubernetes(KubeApi),
}

/// The nine pods, their servers, and the three routers.
pub struct Model {
    pub routers: Vec<WeftHost>,
    source: Source,
    /// By pod number (x/a 0 ... z/c 8).
    pub pods: Vec<(Netns, Ipv4Addr)>,
    stop: Arc<AtomicBool>,
    dir: std::path::PathBuf,
    applied: Vec<String>,
    /// Whether a case's tables have held once (see [`FIRST_SETTLE`]).
    enforced: bool,
    /// Where the last case's time went, for the log of a run.
    timing: String,
}

impl Drop for Model {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Accepts (and closes) TCP connections on `port` in `ns` until `stop`,
/// which it looks at every `every`; returns once it listens. It sleeps in
/// poll(2) between connections: eighteen of these polling accept every
/// few milliseconds took a good part of the kernel VM's emulated CPUs.
pub fn tcp_acceptor(ns: &Netns, port: u16, stop: Arc<AtomicBool>, every: Duration) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn_thread(move || {
        let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind tcp");
        listener.set_nonblocking(true).expect("nonblocking");
        let _ = tx.send(());
        let wait = every.as_millis().clamp(1, 1000) as libc::c_int;
        while !stop.load(Ordering::Relaxed) {
            let mut fd = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd that lives across the call.
            unsafe { libc::poll(&mut fd, 1, wait) };
            while let Ok((conn, _)) = listener.accept() {
                drop(conn);
            }
        }
    })?;
    rx.recv()
        .map_err(|_| crate::Error::ThreadPanicked(format!("tcp acceptor in {}", ns.name())))
}

/// Serves TCP (accept and close) and UDP (echo) on 80 and 81 in `ns`.
fn serve(ns: &Netns, stop: &Arc<AtomicBool>) -> Result<()> {
    for port in [80u16, 81] {
        tcp_acceptor(ns, port, stop.clone(), Duration::from_millis(200))?;
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        ns.spawn_thread(move || {
            let socket = UdpSocket::bind(("0.0.0.0", port)).expect("bind udp");
            socket
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let _ = tx.send(());
            let mut buf = [0u8; 64];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        })?;
        let _ = rx.recv();
    }
    Ok(())
}

/// Fails with every failed case's tables, if any.
pub fn assert_all_held(failed: &[String]) {
    assert!(
        failed.is_empty(),
        "{} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn reaches(
    from: &Netns,
    to: Ipv4Addr,
    probe: Probe,
) -> Result<std::thread::JoinHandle<Result<bool>>> {
    from.spawn_thread(move || {
        let at = SocketAddr::from((to, probe.port));
        match probe.protocol {
            Protocol::Udp => udp_echoed(at).unwrap_or(false),
            _ => TcpStream::connect_timeout(&at, PROBE_WAIT).is_ok(),
        }
    })
}

/// Whether a datagram to `at` comes back.
fn udp_echoed(at: SocketAddr) -> std::io::Result<bool> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_read_timeout(Some(PROBE_WAIT))?;
    s.connect(at)?;
    s.send(b"probe")?;
    let mut buf = [0u8; 16];
    Ok(s.recv(&mut buf).is_ok_and(|n| &buf[..n] == b"probe"))
}

impl Model {
    /// Routers on hosts 1-3 of `tb` (which needs 3 hosts of 3
    /// containers) on `overlay`, and the nine pods attached with their
    /// namespaces, labels and named ports.
    pub fn start(tb: &Testbed, extra: &[&str], overlay: &str) -> Result<Model> {
        Model::start_from(tb, extra, overlay, false)
    }

    /// [`Model::start`], labels and policies from a Kubernetes API server
    /// if `kubernetes`.
    pub fn start_from(
        tb: &Testbed,
        extra: &[&str],
        overlay: &str,
        kubernetes: bool,
    ) -> Result<Model> {
        let source = if kubernetes {
            let api = KubeApi::new();
            for h in 1..=3 {
                api.put(
                    kube_api::NODES,
                    kube_api::node(&format!("h{h}"), tb.host_addr(h)),
                );
                api.serve_in(&tb.host(h))?;
            }
            Source::Kubernetes(api)
        } else {
            Source::Weft
        };
        let url = format!("http://127.0.0.1:{}", kube_api::PORT);
        let routers = tb.connected_mesh_each(
            3,
            |h| {
                let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
                if kubernetes {
                    args.extend([
                        "--kubernetes".into(),
                        "--kubernetes-api".into(),
                        url.clone(),
                    ]);
                    args.extend(["--node-name".into(), format!("h{h}")]);
                }
                args
            },
            overlay,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut pods = Vec::new();
        for (i, name) in cases::pods() {
            let (ns, pod) = name.split_once('/').expect("ns/pod");
            let (host, container) = (i % 3 + 1, i / 3 + 1);
            let netns = tb.container(host, container);
            let mut args = vec!["attach".to_string()];
            if !kubernetes {
                args.extend(["--namespace".into(), ns.into()]);
                args.extend(["--label".into(), format!("pod={pod}")]);
                for (port_name, port) in NAMED_PORTS {
                    args.extend(["--port".into(), format!("{port_name}={port}")]);
                }
            }
            args.push(netns.name().to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = routers[host - 1].run(&args)?;
            let addr: Ipv4Addr = out
                .trim()
                .split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| crate::Error::Spec(format!("attach printed {out:?}")))?;
            serve(&netns, &stop)?;
            if let Source::Kubernetes(api) = &source {
                let ports: Vec<(&str, u16, &str)> = NAMED_PORTS
                    .iter()
                    .map(|(n, spec)| {
                        let (number, protocol) = spec.split_once('/').expect("PORT/PROTO");
                        let protocol = if protocol == "udp" { "UDP" } else { "TCP" };
                        (*n, number.parse().expect("a port"), protocol)
                    })
                    .collect();
                let node = format!("h{host}");
                let object = kube_api::pod(ns, pod, &node, addr, &[("pod", pod)], &ports);
                api.put(kube_api::PODS, object);
            }
            pods.push((netns, addr));
        }
        for (i, ns) in cases::NAMESPACES.iter().enumerate() {
            match &source {
                // Namespaces' labels, given on one host, known on all.
                Source::Weft => {
                    routers[i].run(&["policy", "namespace", ns, &format!("ns={ns}")])?;
                }
                Source::Kubernetes(api) => {
                    api.put(kube_api::NAMESPACES, kube_api::namespace(ns, &[("ns", ns)]))
                }
            }
        }
        let dir = tb.state_dir().join("netpol");
        std::fs::create_dir_all(&dir).map_err(crate::Error::io("create netpol dir"))?;
        let model = Model {
            routers,
            source,
            pods,
            stop,
            dir,
            applied: Vec::new(),
            enforced: false,
            timing: String::new(),
        };
        // Before any policy, everyone reaches everyone: the data path is
        // warm (under emulation, the fast datapath's first flows take a
        // while), so a case's table measures policy, not start-up.
        // First contact one pair at a time: 72 pairs meeting at once is a
        // burst of new MAC pairs that the fast datapath under emulation
        // does not yet absorb (see the notes on issue 25); the tables
        // below then probe every pair at once, as before.
        let first = Probe::parse("tcp/80").expect("a probe");
        for (f, (from, _)) in model.pods.iter().enumerate() {
            for (t, (_, to)) in model.pods.iter().enumerate() {
                if f != t {
                    let _ = reaches(from, *to, first)?.join();
                }
            }
        }
        for probe in ["tcp/80", "udp/80"] {
            let probe = Probe::parse(probe).expect("a probe");
            let open = [[true; 9]; 9];
            eventually("every pod to reach every other", WARM_UP, || {
                let seen = model.probe(probe).map_err(|e| e.to_string())?;
                (seen == open)
                    .then_some(())
                    .ok_or_else(|| cases::render(&seen))
            });
        }
        Ok(model)
    }

    /// Who reaches whom for `probe`, every pair at once.
    pub fn probe(&self, probe: Probe) -> Result<Table> {
        let mut handles = Vec::new();
        for (f, (from, _)) in self.pods.iter().enumerate() {
            for (t, (_, to)) in self.pods.iter().enumerate() {
                if f != t {
                    handles.push((f, t, reaches(from, *to, probe)?));
                }
            }
        }
        let mut table = [[true; 9]; 9];
        for (f, t, h) in handles {
            table[f][t] = h
                .join()
                .map_err(|_| crate::Error::ThreadPanicked("probe".into()))??;
        }
        Ok(table)
    }

    /// Applies `case` (after taking the last one's policies away) on the
    /// `n`th router and waits until every truth table holds; the error
    /// says which did not, wanted against seen.
    pub fn check(&mut self, n: usize, case: &Case) -> std::result::Result<(), String> {
        let yaml = case.policies(|i| self.pods[i].1);
        let documents = weft_policy::model::parse_documents(&yaml)
            .map_err(|e| format!("{}: {e}", case.title))?;
        let mut ids: Vec<String> = documents.iter().map(|(_, p)| p.id()).collect();
        ids.sort();
        match &self.source {
            Source::Weft => {
                let on = &self.routers[n % 3];
                if !self.applied.is_empty() {
                    let mut args = vec!["policy", "delete"];
                    args.extend(self.applied.iter().map(String::as_str));
                    on.run(&args).map_err(|e| e.to_string())?;
                }
                let file = self.dir.join(format!("case-{n}.yaml"));
                std::fs::write(&file, &yaml).map_err(|e| e.to_string())?;
                on.run(&["policy", "apply", "-f", file.to_str().expect("utf-8 path")])
                    .map_err(|e| format!("{}: {e}", case.title))?;
            }
            Source::Kubernetes(api) => {
                for id in &self.applied {
                    api.delete(kube_api::NETWORK_POLICIES, id);
                }
                for ((object, _), id) in documents.iter().zip(documents.iter().map(|(_, p)| p.id()))
                {
                    let mut object = serde_json::to_value(object).map_err(|e| e.to_string())?;
                    let (namespace, _) = id.split_once('/').expect("ns/name");
                    object["metadata"]["namespace"] = serde_json::json!(namespace);
                    api.put(kube_api::NETWORK_POLICIES, object);
                }
            }
        }
        self.applied = ids.clone();
        let started = std::time::Instant::now();
        for r in &self.routers {
            eventually("the case's policies on every router", SETTLE, || {
                let mut seen = r.policy_ids().unwrap_or_default();
                seen.sort();
                (seen == ids)
                    .then_some(())
                    .ok_or_else(|| format!("{seen:?}"))
            });
        }
        let everywhere = started.elapsed();
        let held = self.verify(case);
        self.enforced |= held.is_ok();
        self.timing = format!(
            "policies on every router {} ms, tables {} ms",
            everywhere.as_millis(),
            (started.elapsed() - everywhere).as_millis()
        );
        held
    }

    /// Waits until every truth table of `case` holds.
    pub fn verify(&self, case: &Case) -> std::result::Result<(), String> {
        let settle = if self.enforced { SETTLE } else { FIRST_SETTLE };
        for (probe, want) in case.expectations() {
            let deadline = std::time::Instant::now() + settle;
            loop {
                let got = self.probe(probe).map_err(|e| e.to_string())?;
                if got == want {
                    break;
                }
                eprintln!("     {probe:?} not yet");
                if std::time::Instant::now() > deadline {
                    return Err(format!(
                        "{} ({probe:?}):\nwant\n{}seen\n{}",
                        case.title,
                        cases::render(&want),
                        cases::render(&got)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }

    /// Stops the Kubernetes API stand-in: every router loses its API
    /// server at once.
    pub fn api_server_gone(&mut self) {
        self.source = Source::Weft;
    }

    /// Every conformance case in turn; the failures, each with its tables.
    pub fn check_all(&mut self) -> Vec<String> {
        self.check_every(1)
    }

    /// Every `stride`th conformance case (the first, then every
    /// `stride`th after it) in turn; the failures, each with its tables.
    pub fn check_every(&mut self, stride: usize) -> Vec<String> {
        let cases = cases::load().expect("policy/cases.yaml reads");
        assert!(cases.len() >= 40, "{} cases", cases.len());
        let mut failed = Vec::new();
        for (n, case) in cases.iter().enumerate().step_by(stride) {
            let started = std::time::Instant::now();
            match self.check(n, case) {
                Ok(()) => eprintln!(
                    "ok   {:>5} ms  {} ({})",
                    started.elapsed().as_millis(),
                    case.title,
                    self.timing
                ),
                Err(e) => {
                    eprintln!("FAIL {}\n{e}", case.title);
                    failed.push(e);
                }
            }
        }
        failed
    }
}
