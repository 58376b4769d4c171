//! The promises of the hardening issue, each tried as a user and as an
//! attacker would, named after its item: `addresses_N` (never twice),
//! `no_one_in_N`, `nothing_lost_N`.

use std::{net::Ipv4Addr, time::Duration};

use testbed::{Spec, Testbed, WeftHost, eventually};

/// The address `weft attach` printed.
fn addr(printed: &str) -> Ipv4Addr {
    printed.trim().split('/').next().unwrap().parse().unwrap()
}

fn stderr_of(h: &WeftHost, args: &[&str]) -> String {
    let out = h.command(args).unwrap();
    assert!(!out.status.success(), "weft {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn addresses_1_and_2_a_lost_or_damaged_state_is_refused_and_rebuilt_from_the_containers() {
    let tb = Testbed::create_owned("lost", Spec::hosts(1).containers(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let held = addr(&h1.run(&["attach", tb.container(1, 1).name()]).unwrap());
    h1.run(&["stop"]).unwrap();
    let file = h1.data_dir.join("ipam.redb");
    let good = std::fs::read(&file).unwrap();

    // Emptied (2) and cut short (1): refused, and the message says how.
    for (what, bytes) in [
        ("empty", Vec::new()),
        ("truncated", good[..100_000].to_vec()),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let e = stderr_of(&h1, &["launch"]);
        assert!(e.contains("--recover-ipam"), "{what}: {e}");
        assert!(!e.contains("panicked"), "{what}: no backtrace: {e}");
        assert!(h1.pid().is_none(), "{what}: no router runs");
    }
    // Missing: the same.
    std::fs::remove_file(&file).unwrap();
    let e = stderr_of(&h1, &["launch"]);
    assert!(
        e.contains(&format!("{held} by attach:{}", tb.container(1, 1).name())),
        "{e}"
    );

    // Recovered: the container's address is held again before anything
    // is handed out.
    h1.launch(&["--recover-ipam"]).unwrap();
    let holdings = h1.ipam_holdings().unwrap();
    let owner = format!("attach:{}", tb.container(1, 1).name());
    assert_eq!(holdings[&owner], vec![held.to_string()], "{holdings:?}");
    for i in 0..5 {
        let got = addr(&h1.run(&["ipam", "allocate", &format!("x{i}")]).unwrap());
        assert_ne!(got, held, "an address in use handed out again");
    }
    // The flag with a state present is refused: nothing to recover.
    h1.run(&["stop"]).unwrap();
    let e = stderr_of(&h1, &["launch", "--recover-ipam"]);
    assert!(e.contains("nothing to recover"), "{e}");
    tb.destroy().unwrap();
}

#[test]
fn addresses_3_a_failed_attach_leaves_nothing_and_a_restart_settles_leftovers() {
    let tb = Testbed::create_owned("failattach", Spec::hosts(1).containers(3)).unwrap();
    let h1 = tb.weft(1);
    // The data directory on a small file system of the test's own.
    std::fs::create_dir_all(&h1.data_dir).unwrap();
    let data = h1.data_dir.to_str().unwrap().to_string();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs", &data])
        .status()
        .unwrap();
    assert!(mount.success());
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(data.clone());
    h1.launch(&[]).unwrap();
    let first = addr(&h1.run(&["attach", tb.container(1, 1).name()]).unwrap());
    // Fill it up.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={data}/fill"), "bs=64k"])
        .stderr(std::process::Stdio::null())
        .status();
    let out = h1.command(&["attach", tb.container(1, 2).name()]).unwrap();
    assert!(!out.status.success(), "attach on a full disk fails");
    let c2 = tb.container(1, 2);
    assert!(
        c2.ip(["link", "show", "weft0"]).is_err(),
        "the failed attach left no interface: {}",
        c2.ip(["-4", "addr"]).unwrap()
    );
    std::fs::remove_file(format!("{data}/fill")).unwrap();
    let second = addr(&h1.run(&["attach", c2.name()]).unwrap());
    assert_ne!(first, second);

    // Leftovers of a router killed mid-attach and mid-detach: a holding
    // whose interface never came, and an interface whose holding went.
    h1.run(&["ipam", "allocate", "attach:never-made"]).unwrap();
    h1.run(&["ipam", "release", &format!("attach:{}", c2.name())])
        .unwrap();
    h1.kill9().unwrap();
    h1.launch(&[]).unwrap();
    let holdings = h1.ipam_holdings().unwrap();
    assert!(!holdings.contains_key("attach:never-made"), "{holdings:?}");
    assert_eq!(
        holdings[&format!("attach:{}", c2.name())],
        vec![second.to_string()],
        "the interface's address is held again: {holdings:?}"
    );
    let third = addr(&h1.run(&["attach", tb.container(1, 3).name()]).unwrap());
    assert!(third != first && third != second);
    h1.run(&["stop"]).unwrap();
    drop(_unmount);
    tb.destroy().unwrap();
}

#[test]
fn addresses_4_an_explicit_address_in_the_range_is_claimed() {
    let tb = Testbed::create_owned("claim", Spec::hosts(1).containers(2)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let c1 = tb.container(1, 1);
    h1.run(&["attach", "10.32.3.1/12", c1.name()]).unwrap();
    let holdings = h1.ipam_holdings().unwrap();
    assert_eq!(
        holdings[&format!("attach:{}", c1.name())],
        vec!["10.32.3.1".to_string()]
    );
    let e = stderr_of(&h1, &["ipam", "claim", "other", "10.32.3.1"]);
    assert!(e.contains("in use"), "{e}");
    // Another container asking for it is refused, and gets nothing.
    let c2 = tb.container(1, 2);
    let e = stderr_of(&h1, &["attach", "10.32.3.1/12", c2.name()]);
    assert!(e.contains("10.32.3.1") && e.contains("in use"), "{e}");
    assert!(c2.ip(["link", "show", "weft0"]).is_err());
    // Detaching gives it back.
    h1.run(&["detach", c1.name()]).unwrap();
    h1.run(&["ipam", "claim", "other", "10.32.3.1"]).unwrap();
    tb.destroy().unwrap();
}

#[test]
fn addresses_5_reset_refuses_while_containers_are_attached() {
    let tb = Testbed::create_owned("resetref", Spec::hosts(2).containers(1)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    h1.launch(&[]).unwrap();
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    let held = addr(&h2.run(&["attach", tb.container(2, 1).name()]).unwrap());
    // Neither reset forgets an address in use, running or stopped.
    let e = stderr_of(&h2, &["ipam", "reset"]);
    assert!(e.contains("--detach"), "{e}");
    let e = stderr_of(&h2, &["reset"]);
    assert!(
        e.contains(&held.to_string()) && e.contains("--detach"),
        "{e}"
    );
    h2.run(&["stop"]).unwrap();
    let e = stderr_of(&h2, &["reset"]);
    assert!(e.contains(&held.to_string()), "stopped too: {e}");
    // On request, the containers go first; the mesh does not hand the
    // address out while anyone uses it.
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    let out = h2.run(&["reset", "--detach"]).unwrap();
    assert!(out.contains("detached"), "{out}");
    assert!(tb.container(2, 1).ip(["link", "show", "weft0"]).is_err());
    assert!(
        tb.host(2).ip(["link", "show", "weft"]).is_err(),
        "bridge removed"
    );
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    eventually("rejoined", Duration::from_secs(30), || {
        h2.overlays("userspace", 1)
    });
    tb.destroy().unwrap();
}

/// A POST to the TCP API, with `headers` (each ending in CRLF).
fn post(path: &str, body: &str, headers: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:6784\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn no_one_in_7_the_api_obeys_only_root_or_its_token() {
    let tb = Testbed::create_owned("apiauth", Spec::hosts(1).containers(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&["--docker-plugin", "off"]).unwrap();
    let c1 = tb.container(1, 1);
    let held = addr(&h1.run(&["attach", c1.name()]).unwrap());
    let owner = format!("attach:{}", c1.name());

    // As nobody, over loopback TCP: nothing that changes state.
    let attempts = [
        ("/ipam/release", format!(r#"{{"id": "{owner}"}}"#)),
        ("/stop", String::new()),
        ("/attach", r#"{"target": "/proc/1/ns/net"}"#.to_string()),
        ("/connect", r#"{"peers": ["192.0.2.99"]}"#.to_string()),
    ];
    for (path, body) in &attempts {
        let answer = h1.tcp_api(&post(path, body, ""), true).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        assert!(answer.contains("api-token"), "says what to do: {answer}");
    }
    assert_eq!(h1.ipam_holdings().unwrap()[&owner], vec![held.to_string()]);
    let targets = h1.run(&["status", "targets"]).unwrap();
    assert!(!targets.contains("192.0.2.99"), "{targets}");
    // What a web page could send: text/plain, its Origin, its Host.
    let page = "POST /stop HTTP/1.1\r\nHost: evil.example\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let answer = h1.tcp_api(page, true).unwrap();
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    let page_origin = "GET /report HTTP/1.1\r\nHost: 127.0.0.1:6784\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n";
    assert!(
        h1.tcp_api(page_origin, true)
            .unwrap()
            .starts_with("HTTP/1.1 403")
    );
    // Reads stay open on loopback.
    let read = "GET /status HTTP/1.1\r\nHost: 127.0.0.1:6784\r\nConnection: close\r\n\r\n";
    assert!(h1.tcp_api(read, true).unwrap().starts_with("HTTP/1.1 200"));
    // Docker's routes do not exist here, with or without the plugin.
    let token = std::fs::read_to_string(h1.run_dir.join("api-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}\r\n", token.trim());
    let join = post("/NetworkDriver.Join", r#"{"EndpointID": "e"}"#, &bearer);
    assert!(
        h1.tcp_api(&join, false)
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );
    // The unix socket is root's alone.
    let socket = h1.run_dir.join("weft.sock");
    let socket = socket.to_str().unwrap();
    let as_nobody = h1
        .netns
        .command([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "nc",
            "-U",
            "-N",
            socket,
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!as_nobody.status.success(), "nobody connected to {socket}");
    // With the token, a change over TCP is taken.
    let connect = post("/connect", r#"{"peers": ["192.0.2.99"]}"#, &bearer);
    let answer = h1.tcp_api(&connect, false).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        h1.run(&["status", "targets"])
            .unwrap()
            .contains("192.0.2.99")
    );
    tb.destroy().unwrap();
}

#[test]
fn no_one_in_8_idle_api_connections_are_closed_and_capped() {
    use std::{io::Read, net::TcpStream};
    let tb = Testbed::create_owned("apiidle", Spec::hosts(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let rss = |pid: i32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    };
    let pid = h1.pid().unwrap();
    let before = rss(pid);
    let closed = h1
        .netns
        .in_thread(|| {
            let mut idle: Vec<TcpStream> = (0..600)
                .filter_map(|_| TcpStream::connect("127.0.0.1:6784").ok())
                .collect();
            let opened = idle.len();
            // Every one ends, those over the limit at once, the others
            // when they send no request in time.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut ended = 0;
            for s in &mut idle {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let mut buf = [0u8; 16];
                // Closed by the router: end of stream or a reset; a
                // timeout here means it was still open.
                let closed = match s.read(&mut buf) {
                    Ok(n) => n == 0,
                    Err(e) => matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ),
                };
                if closed {
                    ended += 1;
                }
            }
            (opened, ended)
        })
        .unwrap();
    assert_eq!(
        closed.0, closed.1,
        "every idle connection was closed: {closed:?}"
    );
    let after = rss(pid);
    assert!(
        after < before + 20_000,
        "memory grew from {before} to {after} KiB"
    );
    // The router still answers, over TCP too.
    assert!(h1.metrics().unwrap().contains("weft_peers"));
    tb.destroy().unwrap();
}

#[test]
fn nothing_lost_13_no_thread_is_left_in_a_container_namespace() {
    let tb = Testbed::create_owned("threadns", Spec::hosts(1).containers(2)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    for round in 0..20 {
        let c = tb.container(1, 1 + round % 2);
        h1.run(&["attach", c.name()]).unwrap();
        h1.run(&["ps"]).unwrap();
        h1.run(&["dp", "show"]).ok();
        h1.run(&["detach", c.name()]).unwrap();
    }
    let pid = h1.pid().unwrap();
    let host_ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let mut checked = 0;
    for task in tasks {
        let task = task.unwrap().path();
        let ns = std::fs::read_link(task.join("ns/net")).unwrap();
        assert_eq!(
            ns,
            host_ns,
            "thread {} of the router is in another namespace",
            task.display()
        );
        checked += 1;
    }
    assert!(checked >= 3, "{checked} threads");
    tb.destroy().unwrap();
}

#[test]
fn no_one_in_9_the_password_is_in_no_process_list() {
    let tb = Testbed::create_owned("pwargv", Spec::hosts(2)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    let secret = format!("hardening-9-{:016x}", rand_u64());
    h1.launch(&["--password", &secret]).unwrap();
    // A file others may read is refused; root's alone is taken.
    let file = tb.state_dir().join("password");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let file_arg = file.to_str().unwrap();
    let e = stderr_of(&h2, &["launch", "--password-file", file_arg]);
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    h2.launch(&["--password-file", file_arg, &tb.host_addr(1).to_string()])
        .unwrap();
    eventually("an encrypted connection", Duration::from_secs(30), || {
        let c = h2.connection_to("h1")?;
        (c["encrypted"] == true).then_some(()).ok_or(c.to_string())
    });
    // Nothing running shows it.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            assert!(!cmdline.contains(&secret), "in the process list: {cmdline}");
        }
    }
    assert!(!h1.log().contains(&secret) && !h2.log().contains(&secret));
    tb.destroy().unwrap();
}

fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    u64::from_le_bytes(bytes)
}

#[test]
fn no_one_in_10_with_a_password_nothing_identifying_crosses_in_the_clear() {
    let tb = Testbed::create_owned("clearhello", Spec::hosts(2)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    let first = tb.host_addr(1).to_string();
    let names = ["hardening-ten-alpha", "hardening-ten-bravo"];
    // Without a password the hello names the router: the capture sees it.
    let seen = |password: Option<&str>| -> Vec<u8> {
        let mut extra: Vec<&str> = password.map(|p| vec!["--password", p]).unwrap_or_default();
        extra.extend(["--nickname", names[0]]);
        h1.run(&[&["launch"], &extra[..]].concat()).unwrap();
        h1.run(&["ipam", "allocate", "x"]).unwrap();
        let bytes = testbed::capture(&tb, "tcp port 6783", || {
            let mut extra: Vec<&str> = password.map(|p| vec!["--password", p]).unwrap_or_default();
            extra.extend(["--nickname", names[1], &first]);
            h2.run(&[&["launch"], &extra[..]].concat()).unwrap();
            eventually("connected", Duration::from_secs(30), || {
                h2.connection_to(names[0]).map(drop)
            });
        })
        .unwrap();
        h1.run(&["stop"]).unwrap();
        h2.run(&["stop"]).unwrap();
        bytes
    };
    let contains = |bytes: &[u8], s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    let clear = seen(None);
    assert!(contains(&clear, names[0]) && contains(&clear, names[1]));
    let _ = h1.run(&["reset", "--detach"]);
    let _ = h2.run(&["reset", "--detach"]);
    let sealed = seen(Some("s3cret-ten"));
    assert!(sealed.len() > 1000, "the capture holds the handshake");
    for name in names {
        assert!(!contains(&sealed, name), "{name} crossed in the clear");
    }
    assert!(contains(&sealed, "weft"), "the hello is still there");
    tb.destroy().unwrap();
}

#[test]
fn no_one_in_6_a_handshake_flood_neither_locks_peers_out_nor_fills_the_log() {
    use std::{
        net::TcpStream,
        sync::{
            Arc,
            atomic::{AtomicBool, Ordering},
        },
    };
    let tb = Testbed::create_owned("hsflood", Spec::hosts(3)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    h1.launch(&[]).unwrap();
    let log_before = h1.log().lines().count();
    // Host 3 runs no weft: it keeps 100 connections open to h1's port,
    // replacing five of them every 20 ms, and never says a word.
    let stop = Arc::new(AtomicBool::new(false));
    let target = std::net::SocketAddr::from((tb.host_addr(1), 6783));
    let flood = {
        let stop = stop.clone();
        tb.host(3)
            .spawn_thread(move || {
                let mut open: std::collections::VecDeque<TcpStream> = Default::default();
                let mut made = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    while open.len() < 100 {
                        if let Ok(s) =
                            TcpStream::connect_timeout(&target, Duration::from_millis(200))
                        {
                            open.push_back(s);
                            made += 1;
                        }
                    }
                    for _ in 0..5 {
                        open.pop_front();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                made
            })
            .unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    eventually(
        "h2 to join h1 under the flood",
        Duration::from_secs(30),
        || h2.connection_to("h1").map(drop),
    );
    let joined = started.elapsed();
    eprintln!("joined {joined:?} after launch, under the flood");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let made = flood.join().unwrap().unwrap();
    assert!(made > 500, "the flood opened {made} connections");
    let lines = h1.log().lines().count() - log_before;
    assert!(
        lines < 100,
        "{made} junk connections made {lines} log lines:\n{}",
        h1.log()
    );
    tb.destroy().unwrap();
}

#[test]
fn nothing_lost_11_a_relaunch_keeps_the_crashed_routers_log() {
    let tb = Testbed::create_owned("keeplog", Spec::hosts(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let first = h1.pid().unwrap();
    h1.kill9().unwrap();
    h1.launch(&[]).unwrap();
    let second = h1.pid().unwrap();
    assert_ne!(first, second);
    let log = h1.log();
    let starts = log.matches("weft router").filter(|_| true).count();
    assert!(starts >= 2, "both runs are in the log:\n{log}");
    tb.destroy().unwrap();
}

#[test]
fn nothing_lost_12_a_restarted_router_finds_its_mesh_again() {
    let tb = Testbed::create_owned("resume", Spec::hosts(3)).unwrap();
    let routers: Vec<WeftHost> = (1..=3).map(|h| tb.weft(h)).collect();
    let first = tb.host_addr(1).to_string();
    routers[0].launch(&[]).unwrap();
    for r in &routers[1..] {
        // A name that does not resolve does not stop the launch: it is
        // retried, and said.
        r.launch(&["no-such-peer.invalid", &first]).unwrap();
    }
    for r in &routers {
        eventually("a full mesh", Duration::from_secs(30), || {
            r.overlays("userspace", 2)
        });
    }
    let targets = routers[1].run(&["status", "targets"]).unwrap();
    assert!(
        targets.contains("no-such-peer.invalid") && targets.contains("resolving"),
        "{targets}"
    );
    // A peer written wrong stops the launch, and says what is wrong.
    let mut spare = tb.weft(3);
    spare.run_dir = tb.state_dir().join("spare-run");
    spare.data_dir = tb.state_dir().join("spare-data");
    let e = stderr_of(&spare, &["launch", "--port", "7783", "192.0.2.2:99999"]);
    assert!(e.contains("port 99999 is out of range"), "{e}");

    // The router every other was given crashes and is started with no
    // peers: it dials the ones it knew, at once.
    routers[0].kill9().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let started = std::time::Instant::now();
    routers[0].launch(&[]).unwrap();
    eventually("h1 back in the mesh", Duration::from_secs(30), || {
        routers[0].overlays("userspace", 2)
    });
    eprintln!(
        "h1 connected to both peers {:?} after its relaunch",
        started.elapsed()
    );
    let targets = routers[0].run(&["status", "targets"]).unwrap();
    assert!(targets.contains("resumed"), "{targets}");
    // --no-resume starts afresh.
    routers[0].run(&["stop"]).unwrap();
    routers[0].launch(&["--no-resume"]).unwrap();
    let targets = routers[0].run(&["status", "targets"]).unwrap();
    assert!(!targets.contains("resumed"), "{targets}");
    tb.destroy().unwrap();
}

#[test]
fn small_things_a_user_meets() {
    let mut tb = Testbed::create_owned("small", Spec::hosts(3).containers(1)).unwrap();
    let h1 = tb.weft(1);
    // A typo never suggests a command that takes something away.
    for typo in ["prime", "rset", "stp", "rmper"] {
        let e = stderr_of(&h1, &[typo]);
        for destructive in ["'reset'", "'rmpeer'", "'stop'"] {
            assert!(!e.contains(destructive), "{typo}: {e}");
        }
    }
    assert!(
        stderr_of(&h1, &["exposee"]).contains("'expose'"),
        "harmless ones still are"
    );
    // Traffic to a peer without a direct path names the router it goes
    // through.
    tb.block(2, 3, testbed::Block::AllUdp).unwrap();
    let routers: Vec<WeftHost> = (1..=3).map(|h| tb.weft(h)).collect();
    routers[0].launch(&[]).unwrap();
    for r in &routers[1..] {
        r.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    }
    eventually(
        "h2's traffic to h3 relayed through h1",
        Duration::from_secs(30),
        || {
            let table = routers[1]
                .run(&["status", "connections"])
                .map_err(|e| e.to_string())?;
            table
                .lines()
                .any(|l| l.contains(" h3 ") && l.contains("relayed through h1"))
                .then_some(())
                .ok_or(table)
        },
    );
    // Datagrams of sessions no peer has are counted, not silently eaten.
    let before = routers[0].datapath_counter("dropped_unknown_session");
    let to = std::net::SocketAddr::from((tb.host_addr(1), 6783));
    tb.host(3)
        .in_thread(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            // Version 1, kind Frame, not sealed, session 0xdeadbeef.
            let mut datagram = vec![0x11, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef];
            datagram.extend_from_slice(&[0u8; 60]);
            for _ in 0..5 {
                s.send_to(&datagram, to).unwrap();
            }
        })
        .unwrap();
    eventually("unknown sessions counted", Duration::from_secs(30), || {
        let n = routers[0].datapath_counter("dropped_unknown_session");
        (n >= before + 5).then_some(()).ok_or(format!("{n}"))
    });
    // Detach says what it gave back.
    let attached = routers[0]
        .run(&["attach", tb.container(1, 1).name()])
        .unwrap();
    let released = routers[0]
        .run(&["detach", tb.container(1, 1).name()])
        .unwrap();
    assert_eq!(released.trim(), attached.trim().split('/').next().unwrap());
    tb.destroy().unwrap();
}

#[test]
fn nothing_lost_14_a_smaller_hop_black_holes_nothing() {
    use std::os::fd::AsRawFd;
    // Host 1, then a router whose link towards host 2 has MTU 1300; the
    // overlay MTU follows the 1500 links, so 1400-byte packets fit the
    // container's interface but not the path.
    let tb = Testbed::create_owned("blackhole", Spec::hosts(2).containers(1).hop(1, 1300)).unwrap();
    let routers = tb.weft_mesh(2, &[]).unwrap();
    for r in &routers {
        eventually("data path", Duration::from_secs(30), || {
            r.overlays("userspace", 1)
        });
    }
    eventually("the path MTU to h2", Duration::from_secs(30), || {
        let c = routers[0].connection_to("h2")?;
        c["mtu"]
            .as_u64()
            .filter(|m| *m < 1300)
            .map(drop)
            .ok_or(c.to_string())
    });
    let (c1, c2) = (tb.container(1, 1), tb.container(2, 1));
    let to = testbed::container_addr(2);

    // UDP without DF: delivered in fragments, every byte.
    let receiver = c2
        .spawn_thread(move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:9400").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 2000];
            let mut whole = 0;
            while let Ok(n) = s.recv(&mut buf) {
                if n == 1372 && buf[..n].iter().enumerate().all(|(i, b)| *b == i as u8) {
                    whole += 1;
                }
            }
            whole
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c1.in_thread(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        // IP_PMTUDISC_DONT: no DF, the kernel may (and we must) fragment.
        let dont: libc::c_int = libc::IP_PMTUDISC_DONT;
        // SAFETY: a valid socket and an int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                &dont as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let payload: Vec<u8> = (0..1372).map(|i| i as u8).collect();
        for _ in 0..20 {
            s.send_to(&payload, (to, 9400)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .unwrap();
    let whole = receiver.join().unwrap().unwrap();
    assert!(
        whole >= 18,
        "{whole} of 20 datagrams of 1400 bytes arrived whole"
    );

    // A ping with DF hears "fragmentation needed"; without, it is answered.
    let target = to.to_string();
    let out = c1
        .command([
            "ping", "-c", "2", "-W", "2", "-M", "do", "-s", "1372", &target,
        ])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.to_lowercase().contains("mtu"), "ping with DF: {said}");
    assert!(
        c1.succeeds([
            "ping", "-c", "2", "-W", "2", "-M", "dont", "-s", "1372", &target
        ])
        .unwrap(),
        "ping without DF is answered"
    );
    tb.destroy().unwrap();
}

#[test]
fn nothing_lost_15_a_containers_first_frames_wait_for_the_mesh() {
    let tb = Testbed::create_owned("firstframes", Spec::hosts(2).containers(1)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    // Apart at first, the containers' addresses outside IPAM's range.
    for (h, r) in [(1, &h1), (2, &h2)] {
        r.launch(&["--ipalloc-range", "10.48.0.0/12"]).unwrap();
        let cidr = format!("{}/12", testbed::container_addr(h));
        r.run(&["attach", &cidr, tb.container(h, 1).name()])
            .unwrap();
    }
    // h1's container pings before any path exists: its ARP request has
    // nowhere to go, and is held.
    let to = testbed::container_addr(2).to_string();
    let ping = {
        let c1 = tb.container(1, 1);
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let answered = c1.succeeds(["ping", "-c", "1", "-W", "5", &to]).unwrap();
            (answered, started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    h2.run(&["connect", &tb.host_addr(1).to_string()]).unwrap();
    let (answered, took) = ping.join().unwrap();
    assert!(answered, "the first ping is answered");
    assert!(
        h1.datapath_counter("held_released") >= 1,
        "the ARP request was held and sent once the path came up (answered after {took:?})"
    );
    tb.destroy().unwrap();
}
