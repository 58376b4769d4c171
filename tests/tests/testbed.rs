//! The testbed itself, checked against the kernel: hosts reach each other,
//! blocks block, and nothing is left behind however a test ends.

use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use testbed::{Block, Netns, Spec, Testbed, tcp_transfer, udp_probe, workspace_bin};

/// What the machine's own namespace looks like; the testbed must never
/// change it.
#[derive(Debug, PartialEq)]
struct RootSnapshot {
    links: BTreeSet<String>,
    nft_tables: BTreeSet<String>,
}

fn root_snapshot() -> RootSnapshot {
    let lines = |program: &str, args: &[&str]| -> BTreeSet<String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .expect("run in root namespace");
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let links = lines("ip", &["-o", "link", "show"])
        .into_iter()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    RootSnapshot {
        links,
        nft_tables: lines("nft", &["list", "tables"]),
    }
}

fn namespaces_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_gone(name: &str, before: &RootSnapshot) {
    let left = namespaces_named(&format!("tb-{name}-"));
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let state = Path::new("/run/weft-testbed").join(name);
    assert!(!state.exists(), "state left behind: {}", state.display());
    assert_eq!(&root_snapshot(), before, "the root namespace changed");
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn pings(from: &Netns, to: impl ToString) -> bool {
    from.succeeds(["ping", "-c1", "-W1", "-q", &to.to_string()])
        .unwrap()
}

#[test]
fn five_hosts_with_containers_ping_block_unblock_and_leave_nothing() {
    let before = root_snapshot();
    let mut tb = Testbed::create_owned("five", Spec::hosts(5).containers(2)).unwrap();
    let name = tb.name().to_string();
    assert_eq!(namespaces_named(&format!("tb-{name}-")).len(), 1 + 5 + 10);

    for host in 1..=5 {
        for index in 1..=2 {
            let links = tb
                .container(host, index)
                .ip(["-o", "link", "show"])
                .unwrap();
            assert_eq!(
                links.lines().count(),
                1,
                "a fresh container has only lo: {links}"
            );
        }
        for other in (1..=5).filter(|o| *o != host) {
            assert!(
                pings(&tb.host(host), tb.host_addr(other)),
                "h{host} -> h{other}"
            );
        }
    }

    let (h1, h2, h3) = (tb.host(1), tb.host(2), tb.host(3));
    let (a2, a3) = (tb.host_addr(2), tb.host_addr(3));
    assert!(
        udp_probe(&h1, &h2, a2, 6783).unwrap(),
        "UDP passes before any block"
    );

    tb.block(1, 2, Block::AllUdp).unwrap();
    assert!(
        !udp_probe(&h1, &h2, a2, 6783).unwrap(),
        "UDP h1 -> h2 blocked"
    );
    assert!(
        !udp_probe(&h2, &h1, tb.host_addr(1), 6783).unwrap(),
        "UDP h2 -> h1 blocked"
    );
    assert!(pings(&h1, a2), "blocking UDP leaves ICMP alone");
    assert!(
        udp_probe(&h1, &h3, a3, 6783).unwrap(),
        "other pairs are not blocked"
    );
    tb.unblock(1, 2).unwrap();
    assert!(
        udp_probe(&h1, &h2, a2, 6783).unwrap(),
        "UDP passes again after unblock"
    );
    assert!(
        tb.firewall().unwrap().is_empty(),
        "unblocking everything removes the table"
    );

    tb.block(1, 2, Block::UdpPort(6784)).unwrap();
    assert!(!udp_probe(&h1, &h2, a2, 6784).unwrap(), "the blocked port");
    assert!(udp_probe(&h1, &h2, a2, 6783).unwrap(), "another port");
    tb.unblock(1, 2).unwrap();

    tb.block(1, 2, Block::All).unwrap();
    assert!(!pings(&h1, a2), "everything blocked");
    tb.unblock(1, 2).unwrap();
    assert!(pings(&h1, a2));

    drop(tb);
    assert_gone(&name, &before);
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let before = root_snapshot();
    let name = std::sync::Mutex::new(String::new());
    let outcome = std::panic::catch_unwind(|| {
        let tb = Testbed::create_owned("panics", Spec::hosts(2).containers(1)).unwrap();
        *name.lock().unwrap() = tb.name().to_string();
        assert!(tb.host(1).path().exists());
        panic!("the test body fails");
    });
    assert!(outcome.is_err());
    let name = name.into_inner().unwrap();
    assert!(!name.is_empty());
    assert_gone(&name, &before);
}

/// Starts `weft-testbed run` holding a testbed, in its own process group as
/// a shell would run it, and waits until the testbed exists.
fn start_holder() -> (std::process::Child, String) {
    let bin = workspace_bin("weft-testbed").unwrap();
    let child = Command::new(bin)
        .args([
            "run",
            "--hosts",
            "2",
            "--containers",
            "1",
            "--",
            "sleep",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let name = format!("run{}n0", child.id());
    let pid = child.id();
    wait_for("the holder's command", Duration::from_secs(20), || {
        has_child(pid, "sleep")
    });
    assert_eq!(namespaces_named(&format!("tb-{name}-")).len(), 1 + 2 + 2);
    (child, name)
}

/// Whether process `parent` has a child running `comm`.
fn has_child(parent: u32, comm: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(|e| e.ok()).any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            return false;
        };
        let ppid = tail.split(' ').nth(1);
        head.ends_with(&format!("({comm}")) && ppid == Some(&parent.to_string())
    })
}

#[test]
fn ctrl_c_removes_the_testbed() {
    let before = root_snapshot();
    let (mut child, name) = start_holder();
    killpg(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + 2),
        "exit status reports the interrupted command"
    );
    assert_gone(&name, &before);
}

#[test]
fn a_killed_test_process_is_reaped() {
    let before = root_snapshot();
    let (mut child, name) = start_holder();
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("the reaper", Duration::from_secs(20), || {
        namespaces_named(&format!("tb-{name}-")).is_empty()
            && !Path::new("/run/weft-testbed").join(&name).exists()
    });
    assert_gone(&name, &before);
}

#[test]
fn link_and_hop_mtus_are_enforced() {
    let tb = Testbed::create_owned("mtu", Spec::hosts(4).mtu(9000).hop(2, 1400)).unwrap();
    let (h1, h3) = (tb.host(1), tb.host(3));
    let df_ping = |from: &Netns, to: std::net::Ipv4Addr, payload: u32| {
        from.succeeds([
            "ping",
            "-c1",
            "-W1",
            "-q",
            "-M",
            "do",
            "-s",
            &payload.to_string(),
            &to.to_string(),
        ])
        .unwrap()
    };
    // 20 bytes of IPv4 header and 8 of ICMP ride on top of the payload.
    assert!(
        df_ping(&h1, tb.host_addr(2), 9000 - 28),
        "jumbo frames on the same side"
    );
    assert!(
        df_ping(&h1, tb.host_addr(3), 1400 - 28),
        "a full packet fits the hop"
    );
    assert!(
        !df_ping(&h1, tb.host_addr(3), 1400 - 27),
        "one byte more does not"
    );
    // TCP through the hop works: the router's ICMP lowers the path MTU.
    tcp_transfer(&h1, &h3, tb.host_addr(3), 5001, 4 << 20).unwrap();
}

#[test]
fn hosts_can_be_driven_from_threads_and_background_processes() {
    let tb = Testbed::create_owned("procs", Spec::hosts(2)).unwrap();
    let h1 = tb.host(1);
    let bind_h1_addr = || std::net::UdpSocket::bind("192.0.2.1:0").is_ok();
    assert!(
        h1.in_thread(bind_h1_addr).unwrap(),
        "a thread inside h1 has h1's address"
    );
    assert!(!bind_h1_addr(), "the test's own namespace does not");

    let mut server = tb
        .spawn(
            &tb.host(2),
            "echo",
            ["sh", "-c", "echo started; exec sleep 30"],
        )
        .unwrap();
    wait_for(
        "the background process to log",
        Duration::from_secs(5),
        || server.log().contains("started"),
    );
    assert!(server.is_running());
    let pid = server.pid();
    let netns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let expected = std::fs::metadata(tb.host(2).path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        netns
            .to_string_lossy()
            .contains(&expected.ino().to_string()),
        "runs inside h2"
    );
    server.stop();
    assert!(
        std::fs::metadata(format!("/proc/{pid}")).is_err(),
        "stopped process is gone"
    );
}
