//! The web page (`weft ui`), in Debian's headless Chromium driven by
//! playwright-core (tests/ui/page.js), against a three-host mesh: the
//! graph, an edge turning when UDP is blocked, a latency slider a
//! container's round trips follow, a bad value refused beside its
//! control, and without the token no change; every request the page
//! makes goes to the router, and the page's policy is never violated.
//! Screenshots are kept in target/ui-artifacts.

use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{Block, Spec, Testbed, WeftHost, container_addr, eventually, ping};

/// Runs one step of tests/ui/page.js in `router`'s host (the page is on
/// its loopback) and checks what every step must hold: nothing fetched
/// from anywhere but the router, no console errors (a policy violation
/// is one).
fn page(tb: &Testbed, router: &WeftHost, url: &str, step: &str, args: &[&str]) -> Value {
    let dir = env!("CARGO_MANIFEST_DIR");
    let script = format!("{dir}/ui/page.js");
    let artifacts = format!("{dir}/../target/ui-artifacts");
    let mut argv = vec!["node", &script, url, step];
    argv.extend_from_slice(args);
    let out = tb
        .host(router.host)
        .command(&argv)
        .env("NODE_PATH", format!("{dir}/ui/node_modules"))
        .env("WEFT_UI_ARTIFACTS", &artifacts)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{step}: {e}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{step} failed: {seen}");
    let origin = "http://127.0.0.1:6784/";
    for request in seen["requests"].as_array().unwrap() {
        let r = request.as_str().unwrap();
        assert!(
            r.split_once(' ')
                .is_some_and(|(_, u)| u.starts_with(origin)),
            "{step}: the page asked something other than its router: {r}"
        );
    }
    // The browser logs a refused request as an error: expected where the
    // step asks for a refusal, and nothing else.
    let refusals = matches!(step, "exact" | "write");
    let unexpected: Vec<&Value> = seen["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            !(refusals
                && e.as_str().is_some_and(|e| {
                    e.starts_with(
                        "Failed to load resource: the server responded with a status of 4",
                    )
                }))
        })
        .collect();
    assert!(unexpected.is_empty(), "{step}: {unexpected:?} in {seen}");
    eprintln!("{step}: screenshot {}", seen["screenshot"]);
    seen
}

fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "no replies");
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn edge<'a>(edges: &'a Value, a: &str, b: &str) -> &'a Value {
    edges
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["a"] == a && e["b"] == b)
        .unwrap_or_else(|| panic!("no edge {a}-{b} in {edges}"))
}

#[test]
fn the_page_shows_the_mesh_and_changes_it_only_with_the_token() {
    let _ = std::fs::remove_dir_all(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/ui-artifacts"
    ));
    let mut tb = Testbed::create_owned("ui", Spec::hosts(3).containers(1)).unwrap();
    let routers = tb.weft_mesh(3, &[]).unwrap();
    let (c1, router) = (tb.container(1, 1), &routers[0]);
    let to = container_addr(3).to_string();
    eventually(
        "the containers reach each other",
        Duration::from_secs(30),
        || {
            let (_, lost) = ping(&c1, &to, 1, "0.2");
            (lost == 0).then_some(()).ok_or("no reply".to_string())
        },
    );
    for r in &routers {
        eventually("every data path up", Duration::from_secs(30), || {
            r.overlays("userspace", 2)
        });
    }
    let url = router.run(&["ui"]).unwrap().trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:6784/ui#token="), "{url}");
    // The page comes with its policy; its address with the token is the
    // unix socket's alone, even to root over TCP.
    let get = |path: &str| {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:6784\r\nConnection: close\r\n\r\n");
        router.tcp_api(&request, true).unwrap().to_ascii_lowercase()
    };
    let served = get("/ui");
    assert!(
        served.starts_with("http/1.1 200")
            && served.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{served}"
    );
    let asked = get("/ui/url");
    assert!(
        asked.starts_with("http/1.1 404") && !asked.contains("token="),
        "{asked}"
    );

    // Three routers, three connections: ours coloured by overlay, the
    // one between the other two from gossip.
    let graph = page(&tb, router, &url, "graph", &["3", "3"]);
    for other in ["h2", "h3"] {
        let e = edge(&graph["edges"], "h1", other);
        assert_eq!(e["overlay"], "userspace", "{e}");
        assert_eq!(e["stroke"], "rgb(47, 111, 214)", "userspace blue: {e}");
        assert_eq!(e["dashed"], false, "{e}");
    }
    // The one between the other two, as they gossip it.
    let remote = edge(&graph["edges"], "h2", "h3");
    assert_eq!(remote["overlay"], "userspace", "{remote}");
    assert_eq!(remote["source"], "gossip", "{remote}");

    // UDP blocked between h1 and h2: the edge turns red, dashed, and
    // says why, within seconds.
    tb.block(1, 2, Block::AllUdp).unwrap();
    let blocked = Instant::now();
    let turned = page(&tb, router, &url, "edge", &["h1", "h2", "failed", "15"]);
    let took = blocked.elapsed();
    eprintln!(
        "edge h1-h2 turned in {took:?} (page saw it after {} ms of looking): {}",
        turned["waited_ms"], turned["details"]["Reason"]
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(turned["edge"]["stroke"], "rgb(211, 59, 47)", "{turned}");
    assert_eq!(turned["edge"]["dashed"], true, "{turned}");
    assert!(
        turned["details"]["Reason"]
            .as_str()
            .unwrap()
            .contains("UDP"),
        "{turned}"
    );
    tb.unblock(1, 2).unwrap();
    // Between two other hosts: h1's page learns it from their gossip.
    tb.block(2, 3, Block::AllUdp).unwrap();
    let blocked = Instant::now();
    let far = page(&tb, router, &url, "edge", &["h2", "h3", "failed", "15"]);
    eprintln!(
        "edge h2-h3 turned on h1's page in {:?}: {}",
        blocked.elapsed(),
        far["details"]["Reason"]
    );
    assert!(blocked.elapsed() < Duration::from_secs(15));
    assert!(
        far["details"]["Reason"].as_str().unwrap().contains("UDP"),
        "{far}"
    );
    tb.unblock(2, 3).unwrap();

    // A latency slider: the container's round trips follow it.
    let (base, _) = ping(&c1, &to, 20, "0.02");
    let base = median(base);
    let moved = page(
        &tb,
        router,
        &url,
        "slider",
        &[c1.name(), "egress", "latency", "40"],
    );
    assert_eq!(moved["response"]["status"], 200, "{moved}");
    let set: f64 = moved["shown"]
        .as_str()
        .unwrap()
        .trim_end_matches(" ms")
        .parse()
        .unwrap();
    let (rtts, lost) = ping(&c1, &to, 20, "0.05");
    let added = median(rtts) - base;
    eprintln!("slider at {set} ms: round trips grew by {added:.2} ms");
    assert!(
        set >= 40.0 && (added - set).abs() <= 2.0 && lost == 0,
        "{added} vs {set}"
    );

    // A bad value is refused beside its control; the running conditions
    // stay.
    let refused = page(
        &tb,
        router,
        &url,
        "exact",
        &[c1.name(), "egress", "loss", "150"],
    );
    assert_eq!(refused["response"]["status"], 400, "{refused}");
    assert!(
        refused["beside"].as_str().unwrap().contains("loss"),
        "{refused}"
    );
    let kept = router.run(&["condition", c1.name()]).unwrap();
    assert!(kept.contains(&format!("\"latency\": {set}")), "{kept}");

    // A peer connected and forgotten from the page.
    let peer = page(&tb, router, &url, "peer", &["192.0.2.250:6783"]);
    eprintln!("peer: {peer}");
    let targets = router.run(&["status", "targets"]).unwrap();
    assert!(!targets.contains("192.0.2.250"), "forgotten: {targets}");

    // A container's names, and an owner of addresses gone unreachable.
    let addr = container_addr(1).to_string();
    router.run(&["dns-add", &addr, "web"]).unwrap();
    let row = format!("#containers tr[data-id=\"{}\"]", c1.name());
    let named = page(&tb, router, &url, "text", &[&row, "web.weft.local", "10"]);
    eprintln!("names: {}", named["text"]);
    routers[2].run(&["stop"]).unwrap();
    let gone = page(
        &tb,
        router,
        &url,
        "text",
        &["#ipam-legend li[data-peer=\"h3\"]", "unreachable", "20"],
    );
    eprintln!("ipam: {}", gone["text"]);

    // Without the token the page only shows: its controls are off and a
    // change from its own context is refused.
    let read_only = router.run(&["ui", "--read-only"]).unwrap();
    let read_only = read_only.trim();
    assert!(!read_only.contains("token"), "{read_only}");
    let tried = page(&tb, router, read_only, "write", &[]);
    assert_eq!(tried["write"]["status"], 401, "{tried}");
    assert!(
        tried["buttons_disabled"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d == true),
        "{tried}"
    );
}
