use super::*;
use crate::rules::{FlowMatch, FlowRule, Link};

const MS: Duration = Duration::from_millis(1);

fn egress(q: Qos) -> Conditions {
    Conditions {
        default_link: Link {
            ingress: Qos::default(),
            egress: q,
        },
        flows: vec![],
    }
}

/// Feeds packets `0..n`, one every `gap`, and polls with an ideal timer:
/// returns (packet, sent at, released at) in release order, and what
/// was dropped.
fn run(
    c: &mut Conditioner<usize>,
    n: usize,
    gap: Duration,
) -> (Vec<(usize, Instant, Instant)>, usize) {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut dropped = 0;
    let sent_at = |i: usize| t0 + gap * i as u32;
    let drain = |c: &mut Conditioner<usize>, until: Instant, out: &mut Vec<_>| {
        while let Some(at) = c.next_release().filter(|at| *at <= until) {
            let p = c.poll(at).expect("due");
            out.push((p, sent_at(p), at));
        }
    };
    for i in 0..n {
        let now = sent_at(i);
        drain(c, now, &mut out);
        match c.push(now, i, 1200, None) {
            Pushed::Pass(p) => out.push((p, now, now)),
            Pushed::Queued => {}
            Pushed::Dropped => dropped += 1,
        }
    }
    drain(c, t0 + Duration::from_secs(3600), &mut out);
    (out, dropped)
}

fn delays(out: &[(usize, Instant, Instant)]) -> Vec<Duration> {
    out.iter().map(|(_, sent, at)| *at - *sent).collect()
}

#[test]
fn latency_is_added_exactly_to_every_packet() {
    for l in [20.0, 100.0] {
        let mut c = Conditioner::new(
            Direction::Egress,
            egress(Qos {
                latency: l,
                ..Qos::default()
            }),
            1,
        );
        let (out, dropped) = run(&mut c, 2000, MS);
        assert_eq!((out.len(), dropped), (2000, 0));
        let want = Duration::from_secs_f64(l / 1000.0);
        assert!(delays(&out).iter().all(|d| *d == want), "{l} ms");
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "in order");
    }
}

#[test]
fn loss_is_within_two_points_over_2000_packets_and_zero_loses_none() {
    for (p, burst) in [(0.0, None), (0.02, None), (0.1, None), (0.02, Some(3.0))] {
        let q = Qos {
            loss: p,
            loss_burst: burst,
            ..Qos::default()
        };
        let mut c = Conditioner::new(Direction::Egress, egress(q), 42);
        let (out, dropped) = run(&mut c, 2000, MS);
        assert_eq!(out.len() + dropped, 2000);
        let seen = dropped as f64 / 2000.0;
        assert!(
            (seen - p).abs() <= 0.02,
            "loss {p} burst {burst:?}: saw {seen}"
        );
        if p == 0.0 {
            assert_eq!(dropped, 0);
        }
        assert_eq!(c.counters()[0].1.lost, dropped as u64);
    }
}

#[test]
fn jitter_spreads_over_its_range_and_never_reorders_unless_asked() {
    // A video call: 50 packets a second, 150 ms +- 30 ms.
    let q = Qos {
        latency: 150.0,
        jitter: 30.0,
        ..Qos::default()
    };
    let mut c = Conditioner::new(Direction::Egress, egress(q.clone()), 3);
    let (out, _) = run(&mut c, 2000, 20 * MS);
    let d: Vec<f64> = delays(&out)
        .iter()
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    assert!(
        d.iter().all(|ms| (150.0..=180.0).contains(ms)),
        "within [L, L+J]"
    );
    let mean = d.iter().sum::<f64>() / d.len() as f64;
    assert!(
        (mean - 165.0).abs() < 2.0,
        "uniform over the range: mean {mean}"
    );
    let low = d.iter().filter(|ms| **ms < 156.0).count();
    let high = d.iter().filter(|ms| **ms > 174.0).count();
    assert!(low > 200 && high > 200, "both ends used: {low} {high}");
    assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "no overtaking");

    // Packets closer than the jitter: still in order, and none is held
    // past its own latest time (sent + L + J), so a delayed packet holds
    // the ones behind it at most by its own delay.
    let mut c = Conditioner::new(Direction::Egress, egress(q.clone()), 4);
    let (out, _) = run(&mut c, 2000, MS);
    assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "no overtaking");
    assert!(
        delays(&out).iter().all(|d| *d <= 180 * MS),
        "held at most by the jitter"
    );
    let spread: Vec<Duration> = delays(&out);
    assert!(
        spread.iter().any(|d| *d < 170 * MS),
        "not all held to the maximum"
    );

    // With reorder, the same stream overtakes itself.
    let mut c = Conditioner::new(Direction::Egress, egress(Qos { reorder: true, ..q }), 4);
    let (out, _) = run(&mut c, 2000, MS);
    let overtaken = out.windows(2).filter(|w| w[0].0 > w[1].0).count();
    assert!(overtaken > 100, "reordered: {overtaken}");
}

#[test]
fn a_jitter_strength_below_one_jitters_that_share_of_packets() {
    let q = Qos {
        jitter: 50.0,
        jitter_strength: 0.25,
        reorder: true,
        ..Qos::default()
    };
    let mut c = Conditioner::new(Direction::Egress, egress(q), 5);
    let (out, _) = run(&mut c, 4000, MS);
    let delayed = delays(&out).iter().filter(|d| !d.is_zero()).count();
    assert!((delayed as f64 / 4000.0 - 0.25).abs() < 0.03, "{delayed}");
}

#[test]
fn changing_conditions_loses_nothing_queued_and_applies_to_the_next_packet() {
    let t0 = Instant::now();
    let slow = egress(Qos {
        latency: 100.0,
        ..Qos::default()
    });
    let mut c = Conditioner::new(Direction::Egress, slow, 6);
    for i in 0..100 {
        assert_eq!(c.push(t0 + MS * i, i as usize, 1200, None), Pushed::Queued);
    }
    c.reconfigure(egress(Qos {
        latency: 10.0,
        reorder: true,
        ..Qos::default()
    }));
    // The next packet, pushed right after the change, has the new delay.
    let now = t0 + 100 * MS;
    assert_eq!(c.push(now, 100, 1200, None), Pushed::Queued);
    let mut out = Vec::new();
    while let Some(at) = c.next_release() {
        out.push((c.poll(at).unwrap(), at));
    }
    assert_eq!(out.len(), 101, "nothing lost");
    for (p, at) in &out {
        let want = if *p == 100 {
            now + 10 * MS // the new conditions, at once
        } else {
            t0 + MS * *p as u32 + 100 * MS // the old ones kept
        };
        assert_eq!(*at, want, "packet {p}");
    }
    assert_eq!(c.counters()[0].1.packets, 101, "counters kept");
    // Cleared: a packet still behind held ones of its class waits for
    // them (no reordering); once they are gone, packets pass at once.
    let mut c = Conditioner::new(
        Direction::Egress,
        egress(Qos {
            latency: 100.0,
            ..Qos::default()
        }),
        6,
    );
    assert_eq!(c.push(t0, 1, 60, None), Pushed::Queued);
    c.reconfigure(Conditions::default());
    assert_eq!(c.push(t0 + MS, 2, 60, None), Pushed::Queued);
    assert_eq!(c.poll(t0 + 100 * MS), Some(1));
    assert_eq!(c.poll(t0 + 100 * MS), Some(2));
    assert_eq!(c.push(t0 + 101 * MS, 3, 60, None), Pushed::Pass(3));
}

#[test]
fn flows_get_their_own_conditions_and_the_rest_passes_untouched() {
    let video = FlowRule {
        label: "video".into(),
        flow: FlowMatch {
            protocol: Some(17),
            ports: Some((5000, 5010)),
            ..FlowMatch::default()
        },
        link: Link {
            ingress: Qos::default(),
            egress: Qos {
                latency: 150.0,
                ..Qos::default()
            },
        },
    };
    let conditions = Conditions {
        default_link: Link::default(),
        flows: vec![video],
    };
    let mut c = Conditioner::new(Direction::Egress, conditions, 7);
    let t0 = Instant::now();
    let key = |port| FlowKey {
        remote: "10.32.0.9".parse().unwrap(),
        protocol: 17,
        port: Some(port),
    };
    assert_eq!(c.push(t0, 1, 100, Some(&key(5004))), Pushed::Queued);
    assert_eq!(c.push(t0, 2, 100, Some(&key(53))), Pushed::Pass(2));
    assert_eq!(c.next_release(), Some(t0 + 150 * MS));
    let counters = c.counters();
    assert_eq!(counters[0].0, "default");
    assert_eq!((counters[1].0, counters[1].1.packets), ("video", 1));
    // Ingress of the same container has no conditions.
    let mut inn = Conditioner::new(Direction::Ingress, c.conditions().clone(), 7);
    assert_eq!(inn.push(t0, 3, 100, Some(&key(5004))), Pushed::Pass(3));
}

#[test]
fn rate_then_latency_and_copies() {
    let q = Qos {
        rate: Some(9_600_000),
        latency: 10.0,
        duplicate: 0.1,
        ..Qos::default()
    };
    let mut c = Conditioner::new(Direction::Egress, egress(q), 8);
    let (out, dropped) = run(&mut c, 2000, MS);
    assert_eq!(dropped, 0, "1.2 kB a ms is exactly the rate");
    let copies = out.len() - 2000;
    assert!((copies as f64 / 2000.0 - 0.1).abs() < 0.02, "{copies}");
    assert_eq!(c.counters()[0].1.duplicated, copies as u64);
    // 1200 bytes at 9.6 Mbit/s take 1 ms on the wire, then 10 ms more.
    assert_eq!(delays(&out)[0], 11 * MS);
}

#[test]
fn no_setting_holds_more_than_the_bound() {
    let q = Qos {
        latency: 60_000.0,
        ..Qos::default()
    };
    let mut c = Conditioner::new(Direction::Egress, egress(q), 9);
    let t0 = Instant::now();
    let mut dropped = 0;
    for i in 0..MAX_QUEUED_PACKETS + 10 {
        if c.push(t0, i, 64, None) == Pushed::Dropped {
            dropped += 1;
        }
    }
    assert_eq!(c.held(), MAX_QUEUED_PACKETS);
    assert_eq!((dropped, c.counters()[0].1.overflow), (10, 10));
}

#[test]
fn a_super_frame_goes_whole_only_where_nothing_would_be_done_to_its_packets() {
    let tcp = FlowKey {
        remote: "10.32.0.9".parse().unwrap(),
        protocol: 6,
        port: Some(5201),
    };
    let mut c: Conditioner<usize> = Conditioner::new(Direction::Egress, egress(Qos::default()), 7);
    let t0 = Instant::now();
    assert!(c.pass_whole(t0, 45, 65_000, Some(&tcp)));
    let counted = c.counters()[0].1;
    assert_eq!(
        (counted.packets, counted.bytes),
        (45, 65_000),
        "counted as its packets"
    );

    // Latency: cut and pushed packet by packet.
    c.reconfigure(egress(Qos {
        latency: 10.0,
        ..Qos::default()
    }));
    assert!(!c.pass_whole(t0, 45, 65_000, Some(&tcp)));
    assert_eq!(c.push(t0, 1, 1500, Some(&tcp)), Pushed::Queued);
    // Cleared while a packet is held: nothing overtakes it, whole or not.
    c.reconfigure(egress(Qos::default()));
    assert!(!c.pass_whole(t0 + 5 * MS, 45, 65_000, Some(&tcp)));
    assert_eq!(c.poll(t0 + 10 * MS), Some(1));
    assert!(c.pass_whole(t0 + 10 * MS, 45, 65_000, Some(&tcp)));

    // A rule with conditions keeps its flows' super-frames from going
    // whole; other flows still do.
    let mut rules = egress(Qos::default());
    rules.flows.push(FlowRule {
        label: "bulk".into(),
        flow: FlowMatch {
            ports: Some((5201, 5201)),
            protocol: Some(6),
            ..FlowMatch::default()
        },
        link: Link {
            ingress: Qos::default(),
            egress: Qos {
                loss: 0.01,
                ..Qos::default()
            },
        },
    });
    c.reconfigure(rules);
    assert!(!c.pass_whole(t0 + 20 * MS, 45, 65_000, Some(&tcp)));
    let other = FlowKey {
        port: Some(80),
        ..tcp
    };
    assert!(c.pass_whole(t0 + 20 * MS, 45, 65_000, Some(&other)));
}
