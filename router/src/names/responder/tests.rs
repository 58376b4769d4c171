use std::collections::BTreeMap;

use hickory_proto::{
    op::{Edns, Query},
    rr::RData,
};
use rand::{SeedableRng, rngs::SmallRng};

use super::*;
use crate::identity::PeerName;

/// A fixed record set.
#[derive(Default)]
struct Table(Vec<(Fqdn, Instance)>);

impl Table {
    fn with(mut self, name: &str, addr: [u8; 4], ready: bool) -> Table {
        let instance = Instance {
            addr: Ipv4Addr::from(addr),
            origin: PeerName::from_u64(1),
            owner: format!("c{}", self.0.len()),
            port: (!ready).then_some(5432),
            ready,
        };
        self.0.push((Fqdn::parse(name).unwrap(), instance));
        self
    }
}

impl Lookup for Table {
    fn instances(&self, name: &Fqdn) -> Vec<Instance> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, i)| i.clone())
            .collect()
    }

    fn names_of(&self, addr: Ipv4Addr) -> Vec<Fqdn> {
        self.0
            .iter()
            .filter(|(_, i)| i.addr == addr)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn zone() -> Zone {
    Zone {
        domain: Fqdn::parse("weft.local.").unwrap(),
        ttl: 1,
    }
}

fn query(name: &str, kind: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(0x1234).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m
}

fn ask(table: &Table, q: &Message, transport: Transport, waited: bool) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(7);
    respond(
        &zone(),
        table,
        &q.to_vec().unwrap(),
        transport,
        waited,
        &mut rng,
    )
}

fn answer(outcome: Outcome) -> Message {
    match outcome {
        Outcome::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_name_answers_one_ready_instance_at_a_time_each_in_turn_of_chance() {
    let table = Table::default()
        .with("db.weft.local", [10, 32, 0, 1], true)
        .with("db.weft.local", [10, 32, 0, 2], true)
        .with("db.weft.local", [10, 32, 0, 3], true);
    let q = query("DB.weft.local.", RecordType::A);
    let bytes = q.to_vec().unwrap();
    let mut seen: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut rng = SmallRng::seed_from_u64(1);
    for _ in 0..300 {
        let m = answer(respond(
            &zone(),
            &table,
            &bytes,
            Transport::Udp,
            false,
            &mut rng,
        ));
        assert_eq!(m.id(), 0x1234);
        assert!(m.authoritative() && m.recursion_available());
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let got = addresses(&m);
        assert_eq!(got.len(), 1, "{got:?}");
        *seen.entry(got[0]).or_default() += 1;
        assert!(m.answers().iter().all(|r| r.ttl() == 1));
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.values().all(|n| *n >= 60),
        "each gets a share: {seen:?}"
    );
}

#[test]
fn unknown_names_and_other_types_follow_the_rfcs() {
    let table = Table::default().with("db.weft.local", [10, 32, 0, 1], true);
    let m = answer(ask(
        &table,
        &query("nope.weft.local.", RecordType::A),
        Transport::Udp,
        false,
    ));
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let m = answer(ask(
        &table,
        &query("db.weft.local.", RecordType::AAAA),
        Transport::Udp,
        false,
    ));
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(
        m.answers().is_empty(),
        "a known name has no AAAA: empty, not NXDOMAIN"
    );
    assert_eq!(
        ask(
            &table,
            &query("example.com.", RecordType::A),
            Transport::Udp,
            false
        ),
        Outcome::Forward
    );
}

#[test]
fn a_single_label_of_the_mesh_answers_as_its_name_and_others_go_upstream() {
    let table = Table::default()
        .with("db.weft.local", [10, 32, 0, 1], true)
        .with("later.weft.local", [10, 32, 0, 2], false);
    let m = answer(ask(
        &table,
        &query("db.", RecordType::A),
        Transport::Udp,
        false,
    ));
    assert_eq!(addresses(&m), vec![Ipv4Addr::from([10, 32, 0, 1])]);
    assert_eq!(
        m.answers()[0].name().to_ascii(),
        "db.",
        "the answer names what was asked, or resolvers drop it"
    );
    assert_eq!(
        ask(
            &table,
            &query("later.", RecordType::A),
            Transport::Udp,
            false
        ),
        Outcome::Wait(Fqdn::parse("later.weft.local").unwrap()),
        "a single label waits like its full name"
    );
    for other in ["nope.", "db.example.com.", "localhost."] {
        assert_eq!(
            ask(&table, &query(other, RecordType::A), Transport::Udp, false),
            Outcome::Forward,
            "{other} is not the mesh's"
        );
    }
}

#[test]
fn a_name_with_no_ready_instance_waits_then_fails() {
    let table = Table::default()
        .with("db.weft.local", [10, 32, 0, 1], false)
        .with("db.weft.local", [10, 32, 0, 2], false);
    let q = query("db.weft.local.", RecordType::A);
    assert_eq!(
        ask(&table, &q, Transport::Udp, false),
        Outcome::Wait(Fqdn::parse("db.weft.local").unwrap())
    );
    let m = answer(ask(&table, &q, Transport::Udp, true));
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let table = table.with("db.weft.local", [10, 32, 0, 3], true);
    let m = answer(ask(&table, &q, Transport::Udp, false));
    assert_eq!(
        addresses(&m),
        vec![Ipv4Addr::from([10, 32, 0, 3])],
        "only the ready one"
    );
}

#[test]
fn reverse_lookups_name_containers_and_forward_the_rest() {
    let table = Table::default().with("db.weft.local", [10, 32, 0, 1], true);
    let m = answer(ask(
        &table,
        &query("1.0.32.10.in-addr.arpa.", RecordType::PTR),
        Transport::Udp,
        false,
    ));
    let names: Vec<String> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(names, vec!["db.weft.local."]);
    for other in [
        "9.0.32.10.in-addr.arpa.",
        "1.0.32.in-addr.arpa.",
        "x.1.0.32.10.in-addr.arpa.",
    ] {
        assert_eq!(
            ask(
                &table,
                &query(other, RecordType::PTR),
                Transport::Udp,
                false
            ),
            Outcome::Forward,
            "{other}"
        );
    }
}

#[test]
fn answers_never_outgrow_what_the_client_takes() {
    // One address with 200 names: its PTR answer is large.
    let mut table = Table::default();
    for i in 0..200 {
        table = table.with(&format!("name-{i:03}.weft.local"), [10, 32, 1, 1], true);
    }
    let q = query("1.1.32.10.in-addr.arpa.", RecordType::PTR);
    let query_len = q.to_vec().unwrap().len();
    let ptrs = |m: &Message| m.answers().len();
    let Outcome::Reply(small) = ask(&table, &q, Transport::Udp, false) else {
        panic!()
    };
    assert!(small.len() <= CLASSIC_UDP, "{} bytes", small.len());
    assert!(small.len() < query_len * 20);
    assert!(Message::from_vec(&small).unwrap().truncated());

    let mut with_edns = q.clone();
    let mut edns = Edns::new();
    edns.set_max_payload(65000);
    with_edns.set_edns(edns);
    let Outcome::Reply(large) = ask(&table, &with_edns, Transport::Udp, false) else {
        panic!()
    };
    assert!(
        large.len() <= MAX_UDP && large.len() > CLASSIC_UDP,
        "{}",
        large.len()
    );

    let m = answer(ask(&table, &q, Transport::Tcp, false));
    assert_eq!(ptrs(&m), 200, "TCP takes them all");
    assert!(!m.truncated());
}

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let table = Table::default();
    let mut rng = SmallRng::seed_from_u64(3);
    let mut go = |bytes: &[u8]| respond(&zone(), &table, bytes, Transport::Udp, false, &mut rng);
    assert_eq!(go(&[1, 2, 3]), Outcome::Drop, "not even a header");
    // A header claiming one question, and nothing after it.
    let header = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let m = answer(go(&header));
    assert_eq!((m.id(), m.response_code()), (0xabcd, ResponseCode::FormErr));
    let mut response = header;
    response[2] |= 0x80;
    assert_eq!(go(&response), Outcome::Drop, "a response is never answered");

    let mut two = query("a.weft.local.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("b.weft.local.").unwrap(),
        RecordType::A,
    ));
    let m = answer(go(&two.to_vec().unwrap()));
    assert_eq!(m.response_code(), ResponseCode::FormErr);

    let mut update = query("a.weft.local.", RecordType::A);
    update.set_op_code(OpCode::Update);
    let m = answer(go(&update.to_vec().unwrap()));
    assert_eq!(m.response_code(), ResponseCode::NotImp);
}

#[test]
fn a_query_no_upstream_answered_gets_servfail() {
    let q = query("example.com.", RecordType::A);
    let m = Message::from_vec(&server_failure(&q.to_vec().unwrap()).unwrap()).unwrap();
    assert_eq!(
        (m.id(), m.response_code()),
        (0x1234, ResponseCode::ServFail)
    );
    assert_eq!(m.queries(), q.queries());
    assert!(server_failure(&[0, 1, 2]).is_none());
}
