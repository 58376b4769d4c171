use super::*;

/// An NFLOG packet message's payload as the kernel builds it: nfgenmsg,
/// then attributes (a header we skip, the prefix, the packet).
fn message(prefix: &str, packet: &[u8]) -> Vec<u8> {
    let mut out = vec![2, 0, 0x1a, 0x7f];
    attr(&mut out, 1, &[0x08, 0x00, 2, 0]);
    let mut p = prefix.as_bytes().to_vec();
    p.push(0);
    attr(&mut out, NFULA_PREFIX, &p);
    attr(&mut out, NFULA_PAYLOAD, packet);
    out
}

fn tcp_syn(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0; 16]);
    p
}

#[test]
fn a_logged_drop_reads_back_with_its_prefix_addresses_and_ports() {
    let m = message(
        &prefix("in", [10, 32, 0, 5].into()),
        &tcp_syn([10, 33, 0, 7], [10, 32, 0, 5], 40000, 80),
    );
    let d = parse(&m).unwrap();
    assert_eq!(
        parse_prefix(&d.prefix),
        Some(("in", Ipv4Addr::new(10, 32, 0, 5)))
    );
    assert_eq!(
        (d.src, d.dst, d.protocol, d.ports),
        (
            [10, 33, 0, 7].into(),
            [10, 32, 0, 5].into(),
            6,
            Some((40000, 80))
        )
    );
    assert_eq!(
        describe(&d, "x/a", &["x/deny".into()]),
        "ingress of x/a: 10.33.0.7 tcp/80 dropped, isolated by x/deny"
    );
}

#[test]
fn malformed_messages_are_nothing() {
    let good = message(
        "weft-policy out 10.32.0.5 ",
        &tcp_syn([10, 32, 0, 5], [1, 1, 1, 1], 1, 53),
    );
    assert!(parse(&good).is_some());
    for cut in 0..good.len() {
        // Cut anywhere: nothing or a clean parse, never a panic.
        let _ = parse(&good[..cut]);
    }
    let mut bad_len = good.clone();
    bad_len[4] = 0xff;
    assert_eq!(parse(&bad_len), None);
    let ipv6 = message("weft-policy in 10.32.0.5 ", &[0x60; 40]);
    assert_eq!(parse(&ipv6), None);
    let no_prefix = {
        let mut out = vec![2, 0, 0, 0];
        attr(
            &mut out,
            NFULA_PAYLOAD,
            &tcp_syn([1, 2, 3, 4], [5, 6, 7, 8], 1, 2),
        );
        out
    };
    assert_eq!(parse(&no_prefix), None, "not one of ours");
}

/// What the router sends the kernel to bind the group, pinned.
#[test]
fn the_configuration_is_pinned() {
    let [bind, mode] = config_payloads(GROUP);
    let mut both = bind.clone();
    both.extend_from_slice(&mode);
    weft_golden::Golden::new(env!("CARGO_MANIFEST_DIR")).check(
        "nflog-config",
        "NFLOG bind of group 6783, then copy mode: 64 bytes of each packet",
        &both,
    );
    assert_eq!(config_type(), 0x0401);
    assert_eq!(packet_type(), 0x0400);
}

#[test]
fn the_log_is_bounded_per_second_and_says_what_it_held_back() {
    let mut budget = LineBudget::default();
    let went = (0..25).filter(|_| budget.take(100).is_some()).count();
    assert_eq!(went, LINES_PER_SECOND as usize);
    assert_eq!(
        budget.take(101),
        Some(15),
        "the next second says 15 were held back"
    );
    assert_eq!(budget.take(101), Some(0));
}
