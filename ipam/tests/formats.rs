//! Golden bytes of what IPAM writes: its gossip and messages on the
//! mesh's `ipam` channel, and its snapshot on disk (`ipam.redb` holds it).
//! Each is compared with `tests/golden/` and decoded back from it; the
//! last release's bytes (`previous/`) must still decode.

use std::time::Instant;

use weft_golden::Golden;
use weft_ipam::{
    Config, Init, Ipam, Layout, Peer,
    message::{Envelope, Gossip, Message},
    paxos::{Ballot, PaxosMessage, Value},
    record::Record,
    ring::{Block, Cluster, Run},
};

fn golden() -> Golden {
    Golden::new(env!("CARGO_MANIFEST_DIR"))
}

fn block() -> Block {
    Block {
        owner: Peer(0x0211_2233_4455),
        version: 3,
        active: true,
    }
}

fn gossip() -> Gossip {
    Gossip {
        cluster: Some(Cluster {
            id: 0x95c4_eff3_63cd_bac9,
            layout: Layout::new("10.32.0.0/12".parse().unwrap()).unwrap(),
            seeds: vec![Peer(0x0211_2233_4455)],
        }),
        in_use: true,
        full: false,
        blocks: vec![Run {
            start: 0,
            len: 2,
            block: block(),
        }],
        records: vec![(
            Peer(0x0211_2233_4455),
            Record {
                version: 5,
                nickname: "h1".into(),
                held: vec![(1, 3)],
                removed: false,
            },
        )],
    }
}

fn envelopes() -> Vec<(&'static str, Envelope)> {
    let ballot = Ballot {
        round: 2,
        proposer: Peer(7),
    };
    let wrap = |message| Envelope {
        cluster: Some(0x95c4_eff3_63cd_bac9),
        message,
    };
    vec![
        (
            "envelope-paxos-accept",
            wrap(Message::Paxos(PaxosMessage::Accept {
                ballot,
                value: Value {
                    cluster: 11,
                    seeds: vec![Peer(7), Peer(8)],
                },
            })),
        ),
        ("envelope-state-request", wrap(Message::StateRequest)),
        ("envelope-state", wrap(Message::State(gossip()))),
        (
            "envelope-activate",
            wrap(Message::Activate {
                block: 4,
                state: block(),
            }),
        ),
        (
            "envelope-space-request",
            wrap(Message::SpaceRequest {
                subnet: "10.32.0.0/16".parse().unwrap(),
            }),
        ),
        (
            "envelope-claim-denied",
            wrap(Message::ClaimDenied {
                addr: 0x0a20_0301,
                reason: "held by c1".into(),
            }),
        ),
    ]
}

/// A lone seeded peer that handed out two addresses: the snapshot is
/// reproducible since the agent's randomness is seeded.
fn snapshot() -> Vec<u8> {
    let now = Instant::now();
    let mut config = Config::new(Peer(1), "10.32.0.0/24".parse().unwrap());
    config.init = Init::Seed(vec![Peer(1)]);
    config.seed = 20;
    let mut ipam = Ipam::new(config, now).unwrap();
    ipam.allocate(now, "c1", None);
    ipam.allocate(now, "c2", None);
    ipam.snapshot()
}

#[test]
fn formats_match_their_golden_bytes() {
    let g = golden();
    g.check(
        "gossip",
        "ipam gossip: cluster, ring runs, records (postcard)",
        &gossip().encode(),
    );
    assert_eq!(Gossip::decode(&g.bytes("gossip")), Ok(gossip()));
    for (name, envelope) in envelopes() {
        g.check(
            name,
            "ipam message in its envelope (postcard)",
            &envelope.encode(),
        );
        assert_eq!(Envelope::decode(&g.bytes(name)), Ok(envelope));
    }
    let bytes = snapshot();
    assert_eq!(bytes, snapshot(), "a snapshot is reproducible");
    g.check(
        "snapshot",
        "the agent's state on disk (postcard, format 1)",
        &bytes,
    );
    let restored = Ipam::restore(
        {
            let mut c = Config::new(Peer(1), "10.32.0.0/24".parse().unwrap());
            c.init = Init::Seed(vec![Peer(1)]);
            c
        },
        Instant::now(),
        &g.bytes("snapshot"),
    )
    .unwrap();
    assert_eq!(restored.snapshot(), bytes, "restored, it is the same state");
}

/// A router of this version must understand one of the last release
/// during a rolling upgrade, and start from its snapshot.
#[test]
fn the_previous_release_still_decodes() {
    for (kind, bytes) in golden().previous() {
        let ok = match kind.as_str() {
            "gossip" => Gossip::decode(&bytes).is_ok(),
            k if k.starts_with("envelope-") => Envelope::decode(&bytes).is_ok(),
            "snapshot" => Ipam::restore(
                Config::new(Peer(1), "10.32.0.0/24".parse().unwrap()),
                Instant::now(),
                &bytes,
            )
            .is_ok(),
            other => panic!("{other}: no decoder is named for it; add one here"),
        };
        assert!(ok, "previous/{kind} no longer decodes");
    }
}
