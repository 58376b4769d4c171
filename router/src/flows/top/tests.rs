use std::time::Duration;

use weft_condition::{FlowMatch, FlowRule, Link};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn udp(from: &str, to: &str, ports: (u16, u16), packets: u64, bytes: u64) -> Sample {
    Sample {
        source: ip(from),
        destination: ip(to),
        protocol: 17,
        ports: Some(ports),
        packets,
        bytes,
    }
}

fn local(id: &str, address: &str) -> Local {
    Local {
        id: id.into(),
        addresses: vec![ip(address)],
        conditions: Conditions::default(),
    }
}

#[test]
fn two_readings_give_each_direction_its_rate() {
    let mut top = Top::default();
    let t0 = Instant::now();
    let locals = [local("a", "10.32.0.2")];
    let first = top.observe(
        t0,
        &[udp("10.32.0.2", "10.40.0.9", (5000, 6000), 100, 100_000)],
        false,
        &locals,
    );
    assert_eq!(
        first.interval_ms, None,
        "the first reading only starts counting"
    );
    let flow = &first.containers[0].rules[0].flows[0];
    assert_eq!(
        (flow.outbound.packets, flow.outbound.bits_per_second),
        (100, 0.0)
    );

    let second = top.observe(
        t0 + Duration::from_secs(2),
        &[
            udp("10.32.0.2", "10.40.0.9", (5000, 6000), 1100, 1_100_000),
            udp("10.40.0.9", "10.32.0.2", (6000, 5000), 10, 500),
        ],
        false,
        &locals,
    );
    assert_eq!(second.interval_ms, Some(2000));
    let rule = &second.containers[0].rules[0];
    assert_eq!(rule.rule, DEFAULT_RULE);
    assert_eq!(rule.flows.len(), 1, "both directions are one conversation");
    let flow = &rule.flows[0];
    assert_eq!(
        (flow.remote, flow.local_port, flow.remote_port),
        (ip("10.40.0.9"), Some(5000), Some(6000))
    );
    assert_eq!(flow.outbound.bits_per_second, 1_000_000.0 * 8.0 / 2.0);
    assert_eq!(flow.outbound.packets_per_second, 500.0);
    // New since the last reading: counted from zero.
    assert_eq!(flow.inbound.bits_per_second, 500.0 * 8.0 / 2.0);
    assert_eq!(rule.outbound, flow.outbound);
}

#[test]
fn a_counter_that_restarted_counts_from_zero_not_backwards() {
    let mut top = Top::default();
    let t0 = Instant::now();
    let locals = [local("a", "10.32.0.2")];
    top.observe(
        t0,
        &[udp("10.32.0.2", "10.32.0.3", (1, 2), 500, 500_000)],
        false,
        &locals,
    );
    let r = top.observe(
        t0 + Duration::from_secs(1),
        &[udp("10.32.0.2", "10.32.0.3", (1, 2), 3, 3_000)],
        false,
        &locals,
    );
    let out = r.containers[0].rules[0].flows[0].outbound;
    assert_eq!(
        (out.bits_per_second, out.packets_per_second),
        (24_000.0, 3.0)
    );
}

#[test]
fn traffic_between_two_local_containers_shows_in_both() {
    let mut top = Top::default();
    let locals = [local("a", "10.32.0.2"), local("b", "10.32.0.3")];
    let r = top.observe(
        Instant::now(),
        &[udp("10.32.0.2", "10.32.0.3", (40000, 53), 4, 400)],
        false,
        &locals,
    );
    let a = &r.containers[0].rules[0].flows[0];
    let b = &r.containers[1].rules[0].flows[0];
    assert_eq!(
        (a.remote, a.outbound.bytes, a.inbound.bytes),
        (ip("10.32.0.3"), 400, 0)
    );
    assert_eq!(
        (b.remote, b.inbound.bytes, b.outbound.bytes),
        (ip("10.32.0.2"), 400, 0)
    );
    assert_eq!((b.local_port, b.remote_port), (Some(53), Some(40000)));
}

#[test]
fn flows_are_put_with_the_first_rule_that_matches_them_as_the_conditioner_would() {
    let rule = |label: &str, flow: FlowMatch, link: &Link| FlowRule {
        label: label.into(),
        flow,
        link: link.clone(),
    };
    let mut a = local("a", "10.32.0.2");
    let mut delayed = Link::default();
    delayed.egress.latency = 20.0;
    a.conditions.flows = vec![
        rule(
            "video",
            FlowMatch {
                protocol: Some(17),
                ports: Some((6000, 6100)),
                ..FlowMatch::default()
            },
            &delayed,
        ),
        rule(
            "peers",
            FlowMatch {
                remote: Some("10.40.0.0/16".parse().unwrap()),
                ..FlowMatch::default()
            },
            &Link::default(),
        ),
    ];
    let r = Top::default().observe(
        Instant::now(),
        &[
            // The remote port is what a rule's ports match.
            udp("10.32.0.2", "10.40.0.9", (5000, 6050), 1, 100),
            udp("10.40.0.9", "10.32.0.2", (6050, 5000), 1, 100),
            udp("10.40.0.7", "10.32.0.2", (5000, 6050), 1, 100),
            udp("10.32.0.2", "10.50.0.1", (5000, 6000), 1, 100),
            udp("10.32.0.2", "10.50.0.1", (5000, 7000), 1, 100),
        ],
        false,
        &[a],
    );
    let c = &r.containers[0];
    assert!(c.conditioned);
    let names: Vec<(&str, usize)> = c
        .rules
        .iter()
        .map(|g| (g.rule.as_str(), g.flows.len()))
        .collect();
    assert_eq!(names, [("video", 2), ("peers", 1), (DEFAULT_RULE, 1)]);
    assert_eq!(c.rules[0].inbound.bytes + c.rules[0].outbound.bytes, 300);
    assert_eq!(c.rules[1].flows[0].remote_port, Some(5000));
}

#[test]
fn rows_are_bounded_but_totals_count_every_flow() {
    let samples: Vec<Sample> = (0..(MAX_ROWS as u16 + 50))
        .map(|p| udp("10.32.0.2", "10.40.0.9", (p, 80), 1, 10 + u64::from(p)))
        .collect();
    let r = Top::default().observe(Instant::now(), &samples, true, &[local("a", "10.32.0.2")]);
    let g = &r.containers[0].rules[0];
    assert_eq!((g.flows.len(), g.omitted), (MAX_ROWS, 50));
    assert_eq!(g.outbound.packets, MAX_ROWS as u64 + 50);
    assert!(r.table_full);
    // Busiest (here: most bytes, no rates yet) first.
    assert_eq!(g.flows[0].local_port, Some(MAX_ROWS as u16 + 49));
}

#[test]
fn traffic_of_no_local_container_is_left_out() {
    let r = Top::default().observe(
        Instant::now(),
        &[udp("10.40.0.1", "10.40.0.2", (1, 2), 1, 1)],
        false,
        &[local("a", "10.32.0.2")],
    );
    assert!(r.containers[0].rules[0].flows.is_empty());
}
