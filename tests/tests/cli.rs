//! The `weft` command line's lifecycle commands, run as a user would.

use std::time::{Duration, Instant};

use testbed::{Spec, Testbed, eventually};

#[test]
fn launch_fails_fast_and_says_why() {
    let tb = Testbed::create_owned("clilaunch", Spec::hosts(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();

    // Another router with its own directories but the same port.
    let mut other = tb.weft(1);
    other.run_dir = other.run_dir.with_file_name("run-other");
    other.data_dir = other.data_dir.with_file_name("data-other");
    let started = Instant::now();
    let out = other.command(&["launch"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("6783") && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(stderr.contains("--port"), "says what to do: {stderr}");
    // It gives up on seeing the router die, not after `weft launch`'s
    // whole 20 s wait for an API; how fast is bench's business.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited out the launch timeout: {:?}",
        started.elapsed()
    );

    let out = h1.command(&["launch"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));

    let out = other.command(&["launch", "--bogus"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--bogus"),
        "{stderr}"
    );

    // Without permission for its directories.
    let weft = testbed::workspace_bin("weft").unwrap();
    let out = tb
        .host(1)
        .command([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ])
        .arg(weft)
        .args(["launch", "--port", "7000", "--http-addr", "127.0.0.1:7001"])
        .env("WEFT_DATA_DIR", "/var/lib/weft-test-denied")
        .env("WEFT_RUN_DIR", "/run/weft-test-denied")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("run as root"),
        "{stderr}"
    );
}

#[test]
fn stop_and_reset_end_the_router_and_its_state() {
    let tb = Testbed::create_owned("clistop", Spec::hosts(1)).unwrap();
    let h1 = tb.weft(1);
    h1.launch(&[]).unwrap();
    let name = h1.report().unwrap()["router"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = h1.pid().unwrap();
    h1.run(&["stop"]).unwrap();
    // Gone, or exited and waiting for its reaper.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z "),
        "the process is gone: {state}"
    );
    let out = h1.command(&["status"]).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("weft launch"),
        "status points at launch"
    );
    let out = h1.command(&["stop"]).unwrap();
    assert!(out.status.success(), "stopping a stopped router is fine");

    h1.launch(&[]).unwrap();
    assert_eq!(
        h1.report().unwrap()["router"]["name"],
        name.as_str(),
        "the name persists"
    );
    let removed = h1.run(&["reset"]).unwrap();
    assert!(removed.contains("peer-name"), "{removed}");
    assert!(!h1.data_dir.join("peer-name").exists());
    assert!(
        h1.pid()
            .is_none_or(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
    );
}

#[test]
fn connect_and_forget_change_the_targets() {
    let tb = Testbed::create_owned("cliconnect", Spec::hosts(2)).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    h1.launch(&[]).unwrap();
    h2.launch(&[]).unwrap();
    let addr = tb.host_addr(1).to_string();
    h2.run(&["connect", &addr]).unwrap();
    eventually("h2 to connect to h1", Duration::from_secs(30), || {
        let report = h2.report().map_err(|e| e.to_string())?;
        match report["peers"].as_array().map(Vec::len) {
            Some(2) => Ok(()),
            n => Err(format!("{n:?} peers")),
        }
    });
    let targets = h2.run(&["status", "targets"]).unwrap();
    assert!(
        targets.contains("192.0.2.1:6783") && targets.contains("connect"),
        "{targets}"
    );
    h2.run(&["forget", &addr]).unwrap();
    let targets = h2.run(&["status", "targets"]).unwrap();
    assert!(!targets.contains("192.0.2.1:6783"), "{targets}");
    assert_eq!(
        h2.report().unwrap()["peers"].as_array().unwrap().len(),
        2,
        "the connection stays"
    );
    let out = h2.command(&["connect", "no-such-host.invalid"]).unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve"));
}
