//! Golden bytes of every format the router writes: control messages,
//! the identity in its hello, host records, link records, name entries and names.json, the userspace path's header,
//! routing fields and heartbeats, the vxlan heartbeat frame,
//! conditions.json and synthetic-network.json. Each
//! value is encoded and compared with `tests/golden/`, then decoded from
//! the committed bytes; the last release's bytes (`previous/`) must still
//! decode.

use std::net::Ipv4Addr;

use weft_golden::Golden;

use crate::{
    hosts::HostRecord,
    identity::{PeerIdentity, PeerName},
    mesh::{
        ControlMessage, per_router,
        topology::{ConnInfo, PeerInfo},
    },
    names::{
        Stored,
        name::Fqdn,
        records::{self, Key, Value},
    },
    overlay::heartbeat::Heartbeat,
    userspace::encap::{self, Header, Kind, Routing},
};

fn golden() -> Golden {
    Golden::new(env!("CARGO_MANIFEST_DIR"))
}

fn a() -> PeerName {
    PeerName::from_u64(0x0211_2233_4455)
}

fn b() -> PeerName {
    PeerName::from_u64(0x0266_7788_99aa)
}

/// Two doors, one with a page and one without.
fn stored_doors() -> crate::condition::doors::StoredDoors {
    use crate::condition::doors::{DoorSetting, StoredDoors};
    StoredDoors {
        doors: [
            (
                "web".to_string(),
                DoorSetting {
                    port: 40123,
                    ui: Some("/opt/synthetic-network/frontend/client".into()),
                },
            ),
            (
                "db".to_string(),
                DoorSetting {
                    port: 40124,
                    ui: None,
                },
            ),
        ]
        .into(),
    }
}

/// Every field of a container's conditions in use, a flow rule of each
/// kind.
fn stored_conditions() -> std::collections::BTreeMap<String, weft_condition::Conditions> {
    use weft_condition::{Conditions, FlowMatch, FlowRule, Link, Qos, qos::RateMode};
    let every = Qos {
        rate: Some(10_000_000),
        rate_mode: RateMode::Police,
        queue_limit: Some(64_000),
        loss: 0.02,
        loss_burst: Some(3.0),
        latency: 150.0,
        jitter: 30.0,
        jitter_strength: 0.5,
        reorder: true,
        duplicate: 0.01,
    };
    let rule = |label: &str, flow: FlowMatch| FlowRule {
        label: label.into(),
        flow,
        link: Link {
            ingress: Qos {
                latency: 20.0,
                ..Qos::default()
            },
            egress: Qos::default(),
        },
    };
    let conditions = Conditions {
        default_link: Link {
            ingress: Qos::default(),
            egress: every,
        },
        flows: vec![
            rule(
                "dns",
                FlowMatch {
                    protocol: Some(17),
                    ports: Some((53, 53)),
                    ..FlowMatch::default()
                },
            ),
            rule(
                "peers_v6",
                FlowMatch {
                    remote: Some("fd00::/64".parse().unwrap()),
                    protocol: Some(6),
                    ports: Some((8000, 8100)),
                },
            ),
            rule(
                "host",
                FlowMatch {
                    remote: Some("10.32.0.7/32".parse().unwrap()),
                    ..FlowMatch::default()
                },
            ),
        ],
    };
    [("web".to_string(), conditions)].into_iter().collect()
}

fn control_messages() -> Vec<(&'static str, ControlMessage)> {
    vec![
        ("control-heartbeat", ControlMessage::Heartbeat),
        (
            "control-refuse",
            ControlMessage::Refuse {
                reason: "name clash".into(),
            },
        ),
        (
            "control-topology",
            ControlMessage::Topology {
                entries: vec![PeerInfo {
                    name: a(),
                    nickname: "h1".into(),
                    uid: 0x0102_0304_0506_0708,
                    version: 7,
                    connections: vec![ConnInfo {
                        peer: b(),
                        address: "192.0.2.2:6783".parse().unwrap(),
                        outbound: true,
                        usable: true,
                    }],
                }],
            },
        ),
        (
            "control-digest",
            ControlMessage::Digest {
                entries: vec![(a(), 0x0102_0304_0506_0708, 7), (b(), 9, 300)],
            },
        ),
        (
            "control-request",
            ControlMessage::Request {
                names: vec![a(), b()],
            },
        ),
        (
            "control-gossip",
            ControlMessage::Gossip {
                channel: "ipam".into(),
                payload: vec![1, 2, 3],
            },
        ),
        (
            "control-broadcast",
            ControlMessage::Broadcast {
                channel: "hosts".into(),
                source: a(),
                hops: 2,
                payload: vec![4, 5],
            },
        ),
        (
            "control-unicast",
            ControlMessage::Unicast {
                channel: "ipam".into(),
                source: a(),
                destination: b(),
                payload: vec![6],
            },
        ),
        (
            "control-data-path",
            ControlMessage::DataPath {
                udp_port: 6783,
                session: 0xdead_beef,
                encrypt: true,
                vxlan_port: Some(6784),
            },
        ),
        (
            "control-data-path-offer",
            ControlMessage::DataPathOffer {
                udp_port: 6783,
                session: 0xdead_beef,
                encrypt: false,
                fastdp_port: None,
                vxlan_device_port: Some(6784),
            },
        ),
    ]
}

fn identity() -> PeerIdentity {
    PeerIdentity {
        name: a(),
        nickname: "h1".into(),
        uid: 0x0102_0304_0506_0708,
        listen_port: 6783,
        admission: vec![("ipam".into(), vec![9, 9])],
    }
}

fn host_records() -> per_router::Records<HostRecord> {
    vec![(
        a(),
        HostRecord {
            version: 1_700_000_000_001,
            direct: vec![Ipv4Addr::new(192, 0, 2, 1)],
            gateways: vec!["10.32.0.1/12".parse().unwrap()],
        },
    )]
}

fn link_records() -> per_router::Records<crate::links::LinkRecord> {
    use crate::links::{Link, LinkRecord};
    vec![(
        a(),
        LinkRecord {
            version: 1_700_000_000_002,
            links: vec![
                Link {
                    peer: b(),
                    overlay: Some("fastdp".into()),
                    mtu: Some(1376),
                    encrypted: Some(false),
                    reason: None,
                },
                Link {
                    peer: PeerName::from_u64(0x0233_0000_0001),
                    overlay: None,
                    mtu: None,
                    encrypted: None,
                    reason: Some("no UDP heartbeats".into()),
                },
            ],
        },
    )]
}

fn name_entry() -> (Key, Value) {
    let key = Key {
        name: Fqdn::parse("db.weft.local").unwrap(),
        addr: Ipv4Addr::new(10, 32, 0, 5),
        owner: "attach:c1".into(),
    };
    let value = Value {
        clock: 1_700_000_000_002,
        port: Some(5432),
        ready: true,
        deleted: false,
    };
    (key, value)
}

fn name_entries() -> records::Entries {
    let (key, value) = name_entry();
    vec![(a(), key, value)]
}

fn stored_names() -> Stored {
    Stored {
        clock: 1_700_000_000_003,
        entries: vec![name_entry()],
    }
}

fn encap_header() -> Header {
    Header {
        kind: Kind::Forwarded,
        sealed: true,
        session: 0x0102_0304,
    }
}

fn routing() -> Routing {
    Routing {
        origin: a(),
        destination: Some(b()),
        hops: 3,
    }
}

fn vxlan_heartbeat() -> Heartbeat {
    Heartbeat {
        ack: true,
        seq: 9,
        sender: a(),
        size: 1464,
    }
}

#[test]
fn formats_match_their_golden_bytes() {
    let g = golden();
    for (name, message) in control_messages() {
        g.check(name, "mesh::ControlMessage (postcard)", &message.encode());
        assert_eq!(ControlMessage::decode(&g.bytes(name)), Ok(message));
    }
    g.check(
        "identity",
        "identity::PeerIdentity, the hello's identity (postcard)",
        &identity().encode(),
    );
    assert_eq!(PeerIdentity::decode(&g.bytes("identity")), Ok(identity()));
    g.check(
        "host-records",
        "hosts channel: records by router (postcard)",
        &per_router::encode(&host_records()),
    );
    assert_eq!(
        per_router::decode(&g.bytes("host-records")),
        Ok(host_records())
    );
    g.check(
        "link-records",
        "links channel: each router's connections, overlay, MTU, reason (postcard)",
        &per_router::encode(&link_records()),
    );
    assert_eq!(
        per_router::decode(&g.bytes("link-records")),
        Ok(link_records())
    );
    g.check(
        "name-entries",
        "names channel: entries by origin (postcard)",
        &records::encode(&name_entries()),
    );
    assert_eq!(
        records::decode(&g.bytes("name-entries")),
        Ok(name_entries())
    );
    let conditions = crate::condition::encode_store(&stored_conditions());
    g.check(
        "conditions-json",
        "conditions.json, the conditioned containers on disk (JSON)",
        &conditions,
    );
    assert_eq!(
        crate::condition::decode_store(&g.bytes("conditions-json")),
        Ok(stored_conditions())
    );

    let doors = stored_doors();
    g.check(
        "synthetic-network-json",
        "synthetic-network.json, the containers' Synthetic Network doors (JSON)",
        &crate::condition::doors::encode_doors(&doors),
    );
    assert_eq!(
        crate::condition::doors::decode_doors(&g.bytes("synthetic-network-json")),
        Ok(doors)
    );

    let json = serde_json::to_vec_pretty(&stored_names()).unwrap();
    g.check("names-json", "names.json, our names on disk (JSON)", &json);
    let read: Stored = serde_json::from_slice(&g.bytes("names-json")).unwrap();
    assert_eq!(read, stored_names());

    g.check(
        "encap-header",
        "userspace datagram header: version<<4|kind, flags, 2 reserved, session",
        &encap_header().emit(),
    );
    assert_eq!(Header::parse(&g.bytes("encap-header")), Ok(encap_header()));
    let mut fields = [0u8; encap::MAX_ROUTING_LEN];
    let n = routing().emit(&mut fields);
    g.check(
        "encap-routing",
        "a forwarded frame's origin, destination and hops",
        &fields[..n],
    );
    assert_eq!(
        Routing::parse(Kind::Forwarded, &g.bytes("encap-routing")),
        Ok(routing())
    );
    g.check(
        "udp-heartbeat",
        "userspace heartbeat body: seq, padding",
        &encap::heartbeat_body(0x0a0b_0c0d, 8),
    );
    assert_eq!(
        encap::parse_heartbeat(&g.bytes("udp-heartbeat")),
        Some(0x0a0b_0c0d)
    );
    g.check(
        "udp-ack",
        "userspace heartbeat ack: seq, received size",
        &encap::ack_body(0x0a0b_0c0d, 1472),
    );
    assert_eq!(
        encap::parse_ack(&g.bytes("udp-ack")),
        Some((0x0a0b_0c0d, 1472))
    );
    g.check(
        "vxlan-heartbeat",
        "fast datapath heartbeat frame (ack, padded to 64 bytes)",
        &vxlan_heartbeat().frame(64),
    );
    assert_eq!(
        Heartbeat::parse(&g.bytes("vxlan-heartbeat")),
        Some(vxlan_heartbeat())
    );
}

/// A router of this version must understand one of the last release
/// during a rolling upgrade.
#[test]
fn the_previous_release_still_decodes() {
    let recognised = |o: Option<_>| o.map(drop).ok_or_else(|| "not recognised".to_string());
    for (kind, bytes) in golden().previous() {
        let decoded = match kind.as_str() {
            k if k.starts_with("control-") => ControlMessage::decode(&bytes).map(drop),
            "identity" => PeerIdentity::decode(&bytes).map(drop),
            "host-records" => per_router::decode::<HostRecord>(&bytes).map(drop),
            "link-records" => per_router::decode::<crate::links::LinkRecord>(&bytes).map(drop),
            "name-entries" => records::decode(&bytes).map(drop),
            "conditions-json" => crate::condition::decode_store(&bytes).map(drop),
            "synthetic-network-json" => crate::condition::doors::decode_doors(&bytes).map(drop),
            "names-json" => serde_json::from_slice::<Stored>(&bytes)
                .map(drop)
                .map_err(|e| e.to_string()),
            "encap-header" => Header::parse(&bytes).map(drop).map_err(|e| e.to_string()),
            "encap-routing" => Routing::parse(Kind::Forwarded, &bytes)
                .map(drop)
                .map_err(|e| e.to_string()),
            "udp-heartbeat" => recognised(encap::parse_heartbeat(&bytes).map(drop)),
            "udp-ack" => recognised(encap::parse_ack(&bytes).map(drop)),
            "vxlan-heartbeat" => recognised(Heartbeat::parse(&bytes).map(drop)),
            other => panic!("{other}: no decoder is named for it; add one here"),
        };
        decoded.unwrap_or_else(|e| panic!("previous/{kind} no longer decodes: {e}"));
    }
}
