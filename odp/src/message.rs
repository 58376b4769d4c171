//! The envelope of every ODP message: the generic netlink header, the
//! datapath's `struct ovs_header`, then attributes.
//!
//! ```text
//!  0        1         2                 4                     8
//! +--------+---------+-----------------+---------------------+------------
//! | cmd u8 | version | reserved (u16)  | dp_ifindex (i32)    | attributes
//! +--------+---------+-----------------+---------------------+------------
//! ```
//!
//! The netlink header in front of it belongs to the socket layer.

use std::fmt::Debug;

use crate::{
    DecodeError,
    nla::{self, Nla},
};

/// Generic netlink header plus `struct ovs_header`.
pub const HEADER_LEN: usize = 8;

/// One of the four generic netlink families of the datapath.
pub trait Family {
    /// The name the kernel registers the family under.
    const NAME: &'static str;
    /// The protocol version requests carry.
    const VERSION: u8;
    type Cmd: Copy + Debug + PartialEq + From<u8> + Into<u8>;
    type Attr: Nla + Clone + Debug + PartialEq;
}

/// A message of family `F`.
#[derive(Clone, Debug, PartialEq)]
pub struct Message<F: Family> {
    pub cmd: F::Cmd,
    pub version: u8,
    /// The datapath's interface index; 0 where a request names the datapath
    /// by attribute instead.
    pub dp_ifindex: i32,
    pub attrs: Vec<F::Attr>,
}

impl<F: Family> Message<F> {
    pub fn new(cmd: F::Cmd, dp_ifindex: i32, attrs: Vec<F::Attr>) -> Message<F> {
        Message {
            cmd,
            version: F::VERSION,
            dp_ifindex,
            attrs,
        }
    }

    /// Reads a message from the bytes after the netlink header.
    pub fn parse(buf: &[u8]) -> Result<Message<F>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Short {
                what: "generic netlink and ovs headers",
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        Ok(Message {
            cmd: F::Cmd::from(buf[0]),
            version: buf[1],
            dp_ifindex: i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]),
            attrs: nla::parse_all(&buf[HEADER_LEN..])?,
        })
    }

    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.cmd.into(), self.version, 0, 0]);
        buf.extend_from_slice(&self.dp_ifindex.to_ne_bytes());
        nla::emit_all(&self.attrs, buf);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.emit(&mut buf);
        buf
    }
}

/// Commands of the datapath, vport and flow families, which share numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectCmd {
    New,
    Del,
    Get,
    Set,
    Other(u8),
}

impl From<u8> for ObjectCmd {
    fn from(value: u8) -> ObjectCmd {
        match value {
            1 => ObjectCmd::New,
            2 => ObjectCmd::Del,
            3 => ObjectCmd::Get,
            4 => ObjectCmd::Set,
            other => ObjectCmd::Other(other),
        }
    }
}

impl From<ObjectCmd> for u8 {
    fn from(cmd: ObjectCmd) -> u8 {
        match cmd {
            ObjectCmd::New => 1,
            ObjectCmd::Del => 2,
            ObjectCmd::Get => 3,
            ObjectCmd::Set => 4,
            ObjectCmd::Other(other) => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        DatapathMessage, FlowMessage, KeyAttr, PutMode, TunnelKey, VportKind, VportMessage,
        flow::{Action, EthernetKey, Flow},
    };

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn datapath_create_is_laid_out_as_the_kernel_expects() {
        let msg = DatapathMessage::create("weft", 0x1234, 0);
        assert_eq!(
            hex(&msg.to_bytes()),
            concat!(
                "01020000",
                "00000000", // cmd NEW, version 2; dp_ifindex 0
                "0900",
                "0100",
                "7765667400",
                "000000", // NAME "weft\0" padded
                "0800",
                "0200",
                "34120000", // UPCALL_PID
                "0800",
                "0500",
                "00000000", // USER_FEATURES
            )
        );
    }

    #[test]
    fn vxlan_vport_carries_its_port_as_a_nested_option() {
        let msg = VportMessage::create(7, "vx", VportKind::Vxlan { dst_port: 6784 }, &[]);
        let bytes = msg.to_bytes();
        assert_eq!(
            hex(&bytes),
            concat!(
                "01010000", "07000000", "0700", "0300", "767800", "00", // NAME "vx\0"
                "0800", "0200", "04000000", // TYPE vxlan
                "0800", "0500", "00000000", // UPCALL_PID [0]: none given
                "0c00", "0400", "0600", "0100", "801a", "0000", // OPTIONS { DST_PORT 6784 }
            )
        );
        assert_eq!(VportMessage::parse(&bytes).unwrap(), msg);
    }

    #[test]
    fn flow_with_tunnel_action_round_trips() {
        let tunnel = TunnelKey {
            id: 0x2a,
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            tos: 0,
            ttl: 64,
            dont_fragment: true,
            csum: false,
        };
        let flow = Flow::new(
            vec![
                KeyAttr::InPort(1),
                KeyAttr::Ethernet(EthernetKey::default()),
            ],
            Some(vec![
                KeyAttr::InPort(u32::MAX),
                KeyAttr::Ethernet(EthernetKey::default()),
            ]),
            vec![Action::set_tunnel(&tunnel), Action::Output(2)],
        );
        let msg = FlowMessage::put(3, &flow, PutMode::Create);
        let bytes = msg.to_bytes();
        assert_eq!(FlowMessage::parse(&bytes).unwrap(), msg);
        // The tunnel id is attribute type 0 inside the nested tunnel key,
        // big-endian: easy to get wrong, so pin its bytes.
        assert!(
            hex(&bytes).contains("0c000000000000000000002a"),
            "{}",
            hex(&bytes)
        );
    }
}
