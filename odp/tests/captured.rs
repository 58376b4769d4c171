//! Every ODP message the real kernel exchanged with two clients (weft's own
//! and ovs-dpctl), recorded with nlmon in the kernel VM by
//! `scripts/capture-odp`, must parse and re-emit byte for byte: through
//! neli for the netlink header and through this crate for the rest.

use std::{collections::BTreeMap, io::Cursor, path::Path};

use neli::{FromBytes, ToBytes, nl::Nlmsghdr, types::Buffer};
use weft_odp::{
    DatapathFamily, DatapathMessage, Family, FlowMessage, Message, PacketMessage, VportMessage,
    nla::Nla,
};

const LINKTYPE_NETLINK: u32 = 253;
const NETLINK_GENERIC: u16 = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// The cooked header nlmon puts before each message: packet type, ARPHRD,
/// address length, address, then the netlink protocol.
const COOKED_LEN: usize = 16;

/// The payloads of a pcap file of link type NETLINK.
fn packets(pcap: &[u8]) -> Vec<(u16, &[u8])> {
    assert_eq!(
        &pcap[0..4],
        &0xa1b2c3d4u32.to_le_bytes(),
        "a little-endian pcap"
    );
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        LINKTYPE_NETLINK
    );
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        let len = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let data = &pcap[at + 16..at + 16 + len];
        let protocol = u16::from_be_bytes([data[14], data[15]]);
        out.push((protocol, &data[COOKED_LEN..]));
        at += 16 + len;
    }
    out
}

/// Splits a datagram into its netlink messages (header included).
fn messages(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 16 {
        let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
        assert!(
            len >= 16 && len <= data.len(),
            "netlink length {len} of {}",
            data.len()
        );
        out.push(&data[..len]);
        data = &data[((len + 3) & !3).min(data.len())..];
    }
    out
}

/// Learns family ids from the controller's replies in the capture.
fn family_name(payload: &[u8]) -> Option<(u16, String)> {
    let mut attrs = &payload[4..];
    let (mut id, mut name) = (None, None);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        let value = &attrs[4..len];
        match kind {
            CTRL_ATTR_FAMILY_ID => id = Some(u16::from_ne_bytes([value[0], value[1]])),
            CTRL_ATTR_FAMILY_NAME => {
                name = Some(String::from_utf8_lossy(&value[..value.len() - 1]).into_owned())
            }
            _ => {}
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    Some((id?, name?))
}

fn count_other<A: Nla + std::fmt::Debug>(attrs: &[A]) -> usize {
    // Unknown attributes print as `Other(RawNla { .. })`, nested or not.
    let text = format!("{attrs:?}");
    text.matches("Other(RawNla").count()
}

#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<String, usize>,
    unknown_attrs: usize,
}

fn round_trip<F: Family>(payload: &[u8], tally: &mut Tally, origin: &str, parsed: &mut String) {
    let msg = Message::<F>::parse(payload)
        .unwrap_or_else(|e| panic!("{origin}: {} does not parse: {e}", F::NAME));
    assert_eq!(
        msg.to_bytes(),
        payload,
        "{origin}: {} {:?} re-emits differently",
        F::NAME,
        msg.cmd
    );
    tally.unknown_attrs += count_other(&msg.attrs);
    parsed.push_str(&format!("{} {:?} {:?}\n", F::NAME, msg.cmd, msg.attrs));
    *tally
        .by_kind
        .entry(format!("{} {:?}", F::NAME, msg.cmd))
        .or_default() += 1;
}

#[test]
fn every_captured_message_round_trips_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
    let mut tally = Tally::default();
    let mut files = 0;
    let golden = weft_golden::Golden::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        files += 1;
        let pcap = std::fs::read(&path).unwrap();
        let mut families = BTreeMap::new();
        // What every message parses to, pinned beside the capture.
        let mut parsed = String::new();
        for (protocol, data) in packets(&pcap) {
            if protocol != NETLINK_GENERIC {
                continue;
            }
            for raw in messages(data) {
                let origin = path.file_name().unwrap().to_string_lossy();
                // The netlink header through neli, both ways.
                let header = Nlmsghdr::<u16, Buffer>::from_bytes(&mut Cursor::new(raw))
                    .unwrap_or_else(|e| panic!("{origin}: neli cannot read a message: {e}"));
                let mut again = Cursor::new(Vec::new());
                header.to_bytes(&mut again).unwrap();
                assert_eq!(
                    again.into_inner(),
                    raw,
                    "{origin}: neli re-emits a header differently"
                );

                let kind = *header.nl_type();
                let payload = &raw[16..];
                if kind == GENL_ID_CTRL {
                    families.extend(family_name(payload));
                    continue;
                }
                match families.get(&kind).map(String::as_str) {
                    Some(DatapathFamily::NAME) => round_trip::<weft_odp::DatapathFamily>(
                        payload,
                        &mut tally,
                        &origin,
                        &mut parsed,
                    ),
                    Some("ovs_vport") => round_trip::<weft_odp::VportFamily>(
                        payload,
                        &mut tally,
                        &origin,
                        &mut parsed,
                    ),
                    Some("ovs_flow") => round_trip::<weft_odp::FlowFamily>(
                        payload,
                        &mut tally,
                        &origin,
                        &mut parsed,
                    ),
                    Some("ovs_packet") => round_trip::<weft_odp::PacketFamily>(
                        payload,
                        &mut tally,
                        &origin,
                        &mut parsed,
                    ),
                    _ => {}
                }
            }
        }
        let stem = path.file_stem().unwrap().to_string_lossy();
        golden.check_text(&format!("{stem}.parsed"), &parsed);
    }
    assert!(
        files >= 5,
        "the captures are missing: run scripts/capture-odp"
    );
    println!(
        "{:#?}\nunknown attributes kept: {}",
        tally.by_kind, tally.unknown_attrs
    );
    for kind in [
        "ovs_datapath New",
        "ovs_datapath Get",
        "ovs_datapath Del",
        "ovs_vport New",
        "ovs_vport Get",
        "ovs_vport Del",
        "ovs_flow New",
        "ovs_flow Get",
        "ovs_flow Del",
        "ovs_flow Set",
        "ovs_packet Miss",
        "ovs_packet Action",
        "ovs_packet Execute",
    ] {
        assert!(
            tally.by_kind.contains_key(kind),
            "no {kind} message among the captures"
        );
    }
    assert!(
        tally.unknown_attrs > 0,
        "some captured attribute is of a type we do not model, and was kept"
    );
}

/// Cuts every captured message at every length and flips bytes in it: the
/// parsers must return errors, never panic.
#[test]
fn damaged_messages_are_errors_not_panics() {
    let pcap =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures/upcall.pcap"))
            .unwrap();
    let mut checked = 0;
    for (_, data) in packets(&pcap) {
        for raw in messages(data) {
            let payload = &raw[16..];
            for cut in 0..payload.len() {
                let short = &payload[..cut];
                let _ = DatapathMessage::parse(short);
                let _ = VportMessage::parse(short);
                let _ = FlowMessage::parse(short);
                let _ = PacketMessage::parse(short);
                checked += 1;
            }
            for at in 0..payload.len() {
                let mut bent = payload.to_vec();
                bent[at] ^= 0xa5;
                let _ = PacketMessage::parse(&bent);
                let _ = FlowMessage::parse(&bent);
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "only {checked} variants checked");
}
