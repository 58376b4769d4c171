//! The Docker plugin under the real dockerd (Debian's docker.io): a
//! network made with weft's driver and IPAM, containers that reach a
//! container on another simulated host, and restarts of the router and of
//! dockerd that leave them as they were. Also the image built FROM
//! scratch.
//!
//! dockerd finds plugins only at /run/docker/plugins, so this is the one
//! test that serves the Docker plugin.

use std::{net::Ipv4Addr, path::Path};

use testbed::{Dockerd, Spec, Testbed, WeftHost, busybox_tar, runtime::output};

/// Host 1's router, serving the Docker plugin to the dockerd whose
/// directory is `dir` (and asking it for containers' names).
fn launch_h1(h1: &WeftHost, dir: &Path) {
    let host = format!("unix://{}", dir.join("docker.sock").display());
    h1.launch(&["--docker-plugin", "on", "--docker-host", &host])
        .unwrap();
}

/// What `weft dns-lookup NAME` says on `on`: the addresses, or nothing.
fn looked_up(on: &WeftHost, name: &str) -> Vec<String> {
    on.run(&["dns-lookup", name])
        .map(|out| out.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The IPv4 address of `eth0` in container `name`.
fn address(d: &Dockerd, name: &str) -> Ipv4Addr {
    let out = d
        .docker(&["exec", name, "ip", "-4", "-o", "addr", "show", "eth0"])
        .unwrap();
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|c| c.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no address in {out}"))
}

fn pings(d: &Dockerd, name: &str, to: Ipv4Addr) -> bool {
    d.docker(&["exec", name, "ping", "-c", "2", "-W", "2", &to.to_string()])
        .is_ok()
}

#[test]
fn docker_network_with_weft_driver_and_ipam_survives_restarts() {
    let tb = Testbed::create_owned("docker", Spec::hosts(2).containers(1).with_outside()).unwrap();
    let (h1, h2) = (tb.weft(1), tb.weft(2));
    let dir = tb.state_dir().join("docker");
    launch_h1(&h1, &dir);
    h2.launch(&[&tb.host_addr(1).to_string()]).unwrap();
    let far = h2
        .run(&["attach", "--name", "far", tb.container(2, 1).name()])
        .unwrap();
    let far: Ipv4Addr = far.trim().split('/').next().unwrap().parse().unwrap();

    let mut d = Dockerd::start(&tb.host(1), &dir).unwrap();
    let tar = busybox_tar(&dir).unwrap();
    d.docker(&["import", tar.to_str().unwrap(), "weft-test-busybox"])
        .unwrap();
    d.docker(&[
        "network",
        "create",
        "-d",
        "weft",
        "--ipam-driver",
        "weft",
        "wnet",
    ])
    .unwrap();
    let run = |d: &Dockerd, name: &str| {
        d.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "wnet",
            "weft-test-busybox",
            "sleep",
            "600",
        ])
        .unwrap();
    };
    run(&d, "c1");
    let a1 = address(&d, "c1");
    let [x, y, ..] = a1.octets();
    assert!(x == 10 && y & 0xf0 == 32, "{a1} is in weft's range");
    assert!(pings(&d, "c1", far), "c1 reaches {far} on host 2");
    // By name, with no flags: dockerd's resolver passes what it does not
    // know to the host's resolvers, and host 1's router answers instead.
    for name in ["far", "far.weft.local"] {
        let out = d.docker(&["exec", "c1", "nslookup", name]).unwrap();
        assert!(out.contains(&far.to_string()), "{name}: {out}");
        assert!(
            d.docker(&["exec", "c1", "ping", "-c", "1", "-W", "2", name])
                .is_ok(),
            "c1 reaches {name}"
        );
    }
    // Off the overlay, through host 1's gateway: its own host, the other
    // host and the world.
    let world = tb.spec().outside_addr();
    for to in [tb.host_addr(1), tb.host_addr(2), world] {
        assert!(pings(&d, "c1", to), "c1 reaches {to}");
    }
    let route = d.docker(&["exec", "c1", "ip", "route"]).unwrap();
    let gateway = h1.report().unwrap()["host"]["gateway"][0]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(route.contains(&format!("default via {gateway}")), "{route}");
    // Its name and network alias answer on the other host.
    d.docker(&[
        "run",
        "-d",
        "--name",
        "dweb",
        "--network",
        "wnet",
        "--network-alias",
        "webalias",
        "--label",
        "app=web",
        "--label",
        "weft.namespace=shop",
        "weft-test-busybox",
        "sleep",
        "600",
    ])
    .unwrap();
    let dweb = address(&d, "dweb").to_string();
    for name in ["dweb", "webalias"] {
        testbed::eventually(name, std::time::Duration::from_secs(30), || {
            let found = looked_up(&h2, name);
            (found == [dweb.clone()])
                .then_some(())
                .ok_or(format!("{found:?}"))
        });
    }
    // Its labels and namespace select it for network policy, on any host.
    let dir_policy = tb.state_dir().join("web-deny.yaml");
    std::fs::write(
        &dir_policy,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-deny, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n",
    )
    .unwrap();
    h2.run(&["policy", "apply", "-f", dir_policy.to_str().unwrap()])
        .unwrap();
    testbed::eventually("dweb isolated", std::time::Duration::from_secs(10), || {
        let out = h2
            .command(&["policy", "check", &a1.to_string(), &dweb, "80"])
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        said.contains("isolated by shop/web-deny")
            .then_some(())
            .ok_or(said)
    });
    assert!(
        !pings(&d, "c1", dweb.parse().unwrap()),
        "c1 is cut from dweb"
    );
    d.docker(&["rm", "-f", "dweb"]).unwrap();
    testbed::eventually("dweb gone", std::time::Duration::from_secs(30), || {
        let found = looked_up(&h2, "dweb");
        found.is_empty().then_some(()).ok_or(format!("{found:?}"))
    });
    // weft ps lists the Docker container by its endpoint, with its address.
    let ps = h1.run(&["ps"]).unwrap();
    assert!(
        ps.lines()
            .any(|l| l.starts_with("docker:") && l.contains(&format!("{a1}/"))),
        "{ps}"
    );

    // The router restarts: the container keeps its address and its path.
    h1.run(&["stop"]).unwrap();
    launch_h1(&h1, &dir);
    testbed::eventually(
        "c1 to reach host 2 again",
        std::time::Duration::from_secs(30),
        || {
            pings(&d, "c1", far)
                .then_some(())
                .ok_or_else(|| "no answer".to_string())
        },
    );
    assert_eq!(address(&d, "c1"), a1);

    // dockerd restarts (live restore): the same.
    d.restart().unwrap();
    assert_eq!(address(&d, "c1"), a1);
    assert!(
        pings(&d, "c1", far),
        "c1 reaches host 2 after dockerd restarted"
    );

    // A new container gets another address; removing c1 gives its back.
    run(&d, "c2");
    let a2 = address(&d, "c2");
    assert_ne!(a1, a2);
    assert!(
        pings(&d, "c2", a1.to_owned()),
        "containers on one host reach each other"
    );
    d.docker(&["rm", "-f", "c1"]).unwrap();
    let held = h1.ipam_holdings().unwrap();
    let held: Vec<_> = held
        .iter()
        .filter(|(k, _)| k.starts_with("docker"))
        .collect();
    assert!(
        held.iter().all(|(_, a)| !a.contains(&a1.to_string())),
        "{a1} released: {held:?}"
    );
    assert!(
        held.iter().any(|(_, a)| a.contains(&a2.to_string())),
        "{held:?}"
    );

    // The image: static binaries FROM scratch, built with no registry.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut image = std::process::Command::new(root.join("scripts/image"));
    image
        .args(["--dev", "--tag", "weft-test-image"])
        .env("DOCKER", "/usr/bin/docker")
        .env(
            "DOCKER_HOST",
            format!("unix://{}", dir.join("docker.sock").display()),
        );
    output(image).unwrap();
    let version = d
        .docker(&["run", "--rm", "weft-test-image", "--version"])
        .unwrap();
    assert!(version.starts_with("weft "), "{version}");
    let cni = d
        .docker(&[
            "run",
            "--rm",
            "-e",
            "CNI_COMMAND=VERSION",
            "--entrypoint",
            "/weft-cni",
            "weft-test-image",
        ])
        .unwrap();
    assert!(cni.contains("supportedVersions"), "{cni}");
    drop(d);
    tb.destroy().unwrap();
}
