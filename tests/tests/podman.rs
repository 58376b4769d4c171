//! weft's CNI plugin under the real podman (Debian's, CNI backend), run in
//! a simulated host: a podman container reaches a container on another
//! host, its own host, the other host and the world beyond, and a port it
//! publishes (the reference portmap plugin) answers from the world.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use testbed::{Podman, Spec, Testbed, busybox_tar, eventually, workspace_bin};

/// `weft ps` without the host's own gateway line.
fn containers(ps: &str) -> Vec<&str> {
    ps.lines()
        .filter(|l| !l.starts_with("weft:expose"))
        .collect()
}

#[test]
fn podman_containers_get_weft_addresses_and_reach_other_hosts() {
    let tb = Testbed::create_owned("podman", Spec::hosts(2).containers(1).with_outside()).unwrap();
    let h1 = tb.weft(1);
    let h2 = tb.weft(2);
    h1.launch(&[]).unwrap();
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    let far = h2
        .run(&["attach", "--name", "far", tb.container(2, 1).name()])
        .unwrap();
    let far: Ipv4Addr = far.trim().split('/').next().unwrap().parse().unwrap();

    // The plugin and its configuration, installed as a user would, with
    // the reference portmap plugin chained after it.
    let dir = tb.state_dir().join("podman");
    let (bin, conf) = (dir.join("cni/bin"), dir.join("cni/net.d"));
    let plugin = workspace_bin("weft-cni").unwrap();
    let net = tb.name().replace('-', "_");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(Path::new("/usr/lib/cni/portmap"), bin.join("portmap"))
        .expect("the reference CNI plugins (containernetworking-plugins) are installed");
    h1.run(&[
        "setup-cni",
        "--cni-bin-dir",
        bin.to_str().unwrap(),
        "--cni-conf-dir",
        conf.to_str().unwrap(),
        "--network-name",
        &net,
        "--plugin",
        plugin.to_str().unwrap(),
    ])
    .unwrap();

    let podman = Podman::new(&dir, &bin, &conf).unwrap().inside(&tb.host(1));
    let tar = busybox_tar(&dir).unwrap();
    podman
        .run(&["import", tar.to_str().unwrap(), "weft-test-busybox"])
        .unwrap();
    let world = tb.spec().outside_addr();
    let (own, other) = (tb.host_addr(1), tb.host_addr(2));
    // The container resolves the mesh's names with no flags: podman wrote
    // the router's DNS from the CNI result into its resolv.conf.
    let script = format!(
        "ip -4 -o addr show eth0; ping -c 3 -W 2 {far}; \
         for to in {own} {other} {world}; do ping -c 2 -W 2 $to >/dev/null && echo reached $to; done; \
         cat /etc/resolv.conf; nslookup far.weft.local"
    );
    let out = podman
        .run(&[
            "run",
            "--rm",
            "--network",
            &net,
            "weft-test-busybox",
            "sh",
            "-c",
            &script,
        ])
        .unwrap();
    eprintln!("{out}");
    let addr: Ipv4Addr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no address on eth0: {out}"));
    let [a, b, ..] = addr.octets();
    assert!(
        a == 10 && b & 0xf0 == 32,
        "{addr} is from weft's range 10.32.0.0/12"
    );
    assert!(out.contains("3 packets received"), "{out}");
    assert!(out.contains("search weft.local"), "{out}");
    assert!(
        out.contains(&format!("Address: {far}")),
        "far.weft.local: {out}"
    );
    for (what, to) in [
        ("its host", own),
        ("the other host", other),
        ("the world", world),
    ] {
        assert!(out.contains(&format!("reached {to}")), "{what}: {out}");
    }

    // --rm ran DEL: the attachment and its address are gone.
    assert_eq!(containers(&h1.run(&["ps"]).unwrap()), Vec::<&str>::new());
    assert!(
        h1.ipam_holdings()
            .unwrap()
            .keys()
            .all(|id| !id.starts_with("cni:")),
        "{:?}",
        h1.ipam_holdings()
    );

    // A container that stays: weft lists it by its CNI id, and a second
    // one gets another address.
    let id = podman
        .run(&[
            "run",
            "-d",
            "--name",
            "weftpod",
            "--network",
            &net,
            "weft-test-busybox",
            "sleep",
            "120",
        ])
        .unwrap();
    let ps = h1.run(&["ps"]).unwrap();
    let listed = containers(&ps).join("\n");
    let held = h1.ipam_holdings().unwrap();
    assert!(
        held.keys()
            .any(|h| h.starts_with(&format!("cni:{net}:{}", id.trim()))),
        "{held:?}"
    );
    assert_eq!(listed.lines().count(), 1, "{ps}");
    assert!(ps.starts_with("weft:expose"), "CNI exposed the host: {ps}");
    // podman's address came through the chain (weft, then portmap) as the
    // CNI result.
    let format = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    let reported = podman
        .run(&["inspect", "--format", &format, id.trim()])
        .unwrap();
    assert!(
        !reported.trim().is_empty() && listed.contains(&format!("{}/", reported.trim())),
        "podman reports {reported:?}, weft ps: {listed}"
    );
    // Its name answers on the other host.
    eventually("weftpod known on host 2", Duration::from_secs(30), || {
        let found = h2
            .run(&["dns-lookup", "weftpod"])
            .map_err(|e| e.to_string())?;
        (found.trim() == reported.trim()).then_some(()).ok_or(found)
    });
    podman
        .run(&["rm", "--force", "--time", "0", id.trim()])
        .unwrap();
    eventually(
        "weftpod's name gone with it",
        Duration::from_secs(30),
        || match h2.command(&["dns-lookup", "weftpod"]) {
            Ok(out) if !out.status.success() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        h1.ipam_holdings()
            .unwrap()
            .keys()
            .all(|id| !id.starts_with("cni:"))
    );
    // A published port (portmap, chained after weft) answers the world.
    let served = podman
        .run(&[
            "run",
            "-d",
            "--network",
            &net,
            "-p",
            "8080:8080",
            "weft-test-busybox",
            "sh",
            "-c",
            "while true; do echo published | nc -l -p 8080; done",
        ])
        .unwrap();
    eventually(
        "the published port to answer",
        Duration::from_secs(30),
        || {
            let answer = tb
                .outside()
                .run(["nc", "-w", "2", &own.to_string(), "8080"])
                .map_err(|e| e.to_string())?;
            answer.contains("published").then_some(()).ok_or(answer)
        },
    );
    podman
        .run(&["rm", "--force", "--time", "0", served.trim()])
        .unwrap();
    drop(podman);
    tb.destroy().unwrap();
}
