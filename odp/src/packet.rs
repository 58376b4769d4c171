//! `ovs_packet`: packets crossing between the datapath and userspace:
//! upcalls (a miss, or a `userspace` action) and packets userspace asks
//! the datapath to execute actions on.

use crate::{
    DecodeError,
    flow::{Action, KeyAttr, TunnelAttr},
    message::{Family, Message},
    nla_enum,
};

/// The `ovs_packet` generic netlink family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketFamily;

impl Family for PacketFamily {
    const NAME: &'static str = "ovs_packet";
    const VERSION: u8 = 1;
    type Cmd = PacketCmd;
    type Attr = PacketAttr;
}

pub type PacketMessage = Message<PacketFamily>;

/// `enum ovs_packet_cmd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketCmd {
    /// Kernel to userspace: no flow matched.
    Miss,
    /// Kernel to userspace: a `userspace` action ran.
    Action,
    /// Userspace to kernel: run these actions on this packet.
    Execute,
    Other(u8),
}

impl From<u8> for PacketCmd {
    fn from(value: u8) -> PacketCmd {
        match value {
            1 => PacketCmd::Miss,
            2 => PacketCmd::Action,
            3 => PacketCmd::Execute,
            other => PacketCmd::Other(other),
        }
    }
}

impl From<PacketCmd> for u8 {
    fn from(cmd: PacketCmd) -> u8 {
        match cmd {
            PacketCmd::Miss => 1,
            PacketCmd::Action => 2,
            PacketCmd::Execute => 3,
            PacketCmd::Other(other) => other,
        }
    }
}

nla_enum! {
    /// `enum ovs_packet_attr`.
    pub enum PacketAttr {
        /// The whole frame, from the Ethernet header on.
        Packet(Vec<u8>) = 1 as bytes,
        /// The flow key the kernel extracted (upcalls), or the metadata to
        /// execute with (in_port, tunnel).
        Key(Vec<KeyAttr>) = 2 as nested,
        Actions(Vec<Action>) = 3 as nested,
        Userdata(Vec<u8>) = 4 as bytes,
        EgressTunKey(Vec<TunnelAttr>) = 5 as nested,
        /// The largest fragment of a reassembled packet.
        Mru(u16) = 9 as ne,
        /// The packet's length before truncation.
        Len(u32) = 10 as ne,
        Hash(u64) = 11 as ne,
        @flags {
            Probe = 8,
        }
    }
}

/// A packet the kernel sent up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upcall {
    pub cmd: PacketCmd,
    pub dp_ifindex: i32,
    pub packet: Vec<u8>,
    pub key: Vec<KeyAttr>,
    /// The cookie of the `userspace` action that sent it.
    pub userdata: Option<Vec<u8>>,
}

impl TryFrom<PacketMessage> for Upcall {
    type Error = DecodeError;

    fn try_from(msg: PacketMessage) -> Result<Upcall, DecodeError> {
        let mut packet = None;
        let mut upcall = Upcall {
            cmd: msg.cmd,
            dp_ifindex: msg.dp_ifindex,
            packet: Vec::new(),
            key: Vec::new(),
            userdata: None,
        };
        for attr in msg.attrs {
            match attr {
                PacketAttr::Packet(p) => packet = Some(p),
                PacketAttr::Key(k) => upcall.key = k,
                PacketAttr::Userdata(u) => upcall.userdata = Some(u),
                _ => {}
            }
        }
        upcall.packet = packet.ok_or_else(|| DecodeError::Invalid {
            what: "upcall",
            reason: "no packet".to_string(),
        })?;
        Ok(upcall)
    }
}

impl PacketMessage {
    /// Runs `actions` on `packet` as if it had arrived with the metadata in
    /// `key` (at least the in_port; a tunnel for packets from one).
    pub fn execute(
        dp_ifindex: i32,
        packet: &[u8],
        key: Vec<KeyAttr>,
        actions: Vec<Action>,
    ) -> PacketMessage {
        Message::new(
            PacketCmd::Execute,
            dp_ifindex,
            vec![
                PacketAttr::Packet(packet.to_vec()),
                PacketAttr::Key(key),
                PacketAttr::Actions(actions),
            ],
        )
    }
}
