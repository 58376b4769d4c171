//! `ovs_flow`: the datapath's flow table, each flow a key, an optional
//! mask and a list of actions.

mod action;
mod key;

pub use action::{Action, UserspaceAttr};
pub use key::{
    ArpKey, EthernetKey, IcmpKey, Ipv4Key, KeyAttr, KeyFields, PortsKey, TunnelAttr, TunnelKey,
};

use crate::{
    DecodeError,
    codec::Fixed,
    datapath::{put_u64s, u64s},
    message::{Family, Message, ObjectCmd},
    nla_enum,
};

/// The `ovs_flow` generic netlink family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowFamily;

impl Family for FlowFamily {
    const NAME: &'static str = "ovs_flow";
    const VERSION: u8 = 1;
    type Cmd = ObjectCmd;
    type Attr = FlowAttr;
}

pub type FlowMessage = Message<FlowFamily>;

nla_enum! {
    /// `enum ovs_flow_attr`.
    pub enum FlowAttr {
        Key(Vec<KeyAttr>) = 1 as nested,
        Actions(Vec<Action>) = 2 as nested,
        Stats(FlowStats) = 3 as fixed,
        /// TCP flags seen on the flow's packets, ORed together.
        TcpFlags(u8) = 4 as ne,
        /// When the flow last matched, in milliseconds of the kernel's
        /// monotonic clock.
        Used(u64) = 5 as ne,
        Mask(Vec<KeyAttr>) = 7 as nested,
        /// A unique flow id chosen by userspace, instead of the key.
        Ufid(Vec<u8>) = 9 as bytes,
        UfidFlags(u32) = 10 as ne,
        @flags {
            /// Reset the statistics (with a `set`).
            Clear = 6,
            Probe = 8,
        }
    }
}

/// `struct ovs_flow_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
}

impl Fixed for FlowStats {
    const LEN: usize = 16;
    fn read(bytes: &[u8]) -> FlowStats {
        let [packets, bytes] = u64s(bytes);
        FlowStats { packets, bytes }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        put_u64s(&[self.packets, self.bytes], buf)
    }
}

/// A flow as the kernel describes it (or as we install it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub key: Vec<KeyAttr>,
    /// Without a mask every field of the key matches exactly.
    pub mask: Option<Vec<KeyAttr>>,
    pub actions: Vec<Action>,
    pub stats: FlowStats,
    pub used_ms: Option<u64>,
    pub tcp_flags: u8,
}

impl Flow {
    pub fn new(key: Vec<KeyAttr>, mask: Option<Vec<KeyAttr>>, actions: Vec<Action>) -> Flow {
        Flow {
            key,
            mask,
            actions,
            stats: FlowStats::default(),
            used_ms: None,
            tcp_flags: 0,
        }
    }
}

impl TryFrom<&FlowMessage> for Flow {
    type Error = DecodeError;

    fn try_from(msg: &FlowMessage) -> Result<Flow, DecodeError> {
        let mut flow = Flow::new(Vec::new(), None, Vec::new());
        let mut keyed = false;
        for attr in &msg.attrs {
            match attr {
                FlowAttr::Key(key) => {
                    flow.key = key.clone();
                    keyed = true;
                }
                FlowAttr::Mask(mask) => flow.mask = Some(mask.clone()),
                FlowAttr::Actions(actions) => flow.actions = actions.clone(),
                FlowAttr::Stats(stats) => flow.stats = *stats,
                FlowAttr::Used(used) => flow.used_ms = Some(*used),
                FlowAttr::TcpFlags(flags) => flow.tcp_flags = *flags,
                _ => {}
            }
        }
        if !keyed {
            return Err(DecodeError::Invalid {
                what: "flow",
                reason: "reply without a key".to_string(),
            });
        }
        Ok(flow)
    }
}

/// How [`FlowMessage::put`] treats an existing flow with the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with "already exists" if there is one.
    Create,
    /// Replace its actions if there is one, else create it.
    CreateOrModify,
    /// Replace its actions; fail with "does not exist" if there is none.
    Modify,
}

/// Requests of the `ovs_flow` family.
impl FlowMessage {
    /// Installs or changes a flow; the netlink flags that go with the mode
    /// come from [`PutMode::netlink_flags`].
    pub fn put(dp_ifindex: i32, flow: &Flow, mode: PutMode) -> FlowMessage {
        let mut attrs = vec![FlowAttr::Key(flow.key.clone())];
        if let Some(mask) = &flow.mask {
            attrs.push(FlowAttr::Mask(mask.clone()));
        }
        attrs.push(FlowAttr::Actions(flow.actions.clone()));
        let cmd = match mode {
            PutMode::Modify => ObjectCmd::Set,
            PutMode::Create | PutMode::CreateOrModify => ObjectCmd::New,
        };
        Message::new(cmd, dp_ifindex, attrs)
    }

    /// Gets the flow with exactly this key (or, with a dump and no key,
    /// lists all flows).
    pub fn get(dp_ifindex: i32, key: Option<&[KeyAttr]>) -> FlowMessage {
        let attrs = key.map(|k| FlowAttr::Key(k.to_vec())).into_iter().collect();
        Message::new(ObjectCmd::Get, dp_ifindex, attrs)
    }

    /// Deletes the flow with this key, or every flow without one.
    pub fn delete(dp_ifindex: i32, key: Option<&[KeyAttr]>) -> FlowMessage {
        let attrs = key.map(|k| FlowAttr::Key(k.to_vec())).into_iter().collect();
        Message::new(ObjectCmd::Del, dp_ifindex, attrs)
    }
}

impl PutMode {
    /// `NLM_F_CREATE` and `NLM_F_EXCL` as the kernel's flow code reads
    /// them: either one on `OVS_FLOW_CMD_NEW` refuses a flow that exists
    /// (genetlink once took `NLM_F_EXCL` for a dump, so the kernel accepts
    /// `NLM_F_CREATE` in its place), and without both a new flow is
    /// created anyway. So "create or modify" is neither flag.
    pub fn netlink_flags(self) -> u16 {
        const NLM_F_EXCL: u16 = 0x200;
        const NLM_F_CREATE: u16 = 0x400;
        match self {
            PutMode::Create => NLM_F_CREATE | NLM_F_EXCL,
            PutMode::CreateOrModify | PutMode::Modify => 0,
        }
    }
}
