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
    eventually("rejoined", Duration::from_secs(20), || {
        h2.overlays("userspace", 1)
    });
    tb.destroy().unwrap();
}
