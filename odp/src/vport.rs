//! `ovs_vport`: the ports of a datapath: existing network devices
//! (`netdev`), devices the datapath creates (`internal`, the local port)
//! and tunnel endpoints (`vxlan`).

use crate::{
    DecodeError,
    codec::Fixed,
    datapath::{put_u64s, u64s},
    message::{Family, Message, ObjectCmd},
    nla_enum,
};

/// The `ovs_vport` generic netlink family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VportFamily;

impl Family for VportFamily {
    const NAME: &'static str = "ovs_vport";
    const VERSION: u8 = 1;
    type Cmd = ObjectCmd;
    type Attr = VportAttr;
}

pub type VportMessage = Message<VportFamily>;

/// The multicast group the kernel announces vport changes on.
pub const VPORT_MCGROUP: &str = "ovs_vport";

nla_enum! {
    /// `enum ovs_vport_attr`.
    pub enum VportAttr {
        PortNo(u32) = 1 as ne,
        Type(VportType) = 2 as fixed,
        Name(String) = 3 as string,
        Options(Vec<TunnelOption>) = 4 as nested,
        /// Netlink ports that receive this port's upcalls.
        UpcallPids(Vec<u32>) = 5 as u32s,
        Stats(VportStats) = 6 as fixed,
        Ifindex(u32) = 8 as ne,
        NetnsId(i32) = 9 as ne,
    }
}

nla_enum! {
    /// `OVS_TUNNEL_ATTR_*`: options of tunnel vports.
    pub enum TunnelOption {
        /// The UDP port the tunnel listens on and sends to.
        DstPort(u16) = 1 as ne,
        Extension(Vec<u8>) = 2 as bytes,
    }
}

/// `enum ovs_vport_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VportType {
    Unspec,
    Netdev,
    Internal,
    Gre,
    Vxlan,
    Geneve,
    Other(u32),
}

impl From<u32> for VportType {
    fn from(value: u32) -> VportType {
        match value {
            0 => VportType::Unspec,
            1 => VportType::Netdev,
            2 => VportType::Internal,
            3 => VportType::Gre,
            4 => VportType::Vxlan,
            5 => VportType::Geneve,
            other => VportType::Other(other),
        }
    }
}

impl From<VportType> for u32 {
    fn from(t: VportType) -> u32 {
        match t {
            VportType::Unspec => 0,
            VportType::Netdev => 1,
            VportType::Internal => 2,
            VportType::Gre => 3,
            VportType::Vxlan => 4,
            VportType::Geneve => 5,
            VportType::Other(other) => other,
        }
    }
}

impl std::fmt::Display for VportType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VportType::Unspec => write!(f, "unspec"),
            VportType::Netdev => write!(f, "netdev"),
            VportType::Internal => write!(f, "internal"),
            VportType::Gre => write!(f, "gre"),
            VportType::Vxlan => write!(f, "vxlan"),
            VportType::Geneve => write!(f, "geneve"),
            VportType::Other(n) => write!(f, "type-{n}"),
        }
    }
}

impl Fixed for VportType {
    const LEN: usize = 4;
    fn read(bytes: &[u8]) -> VportType {
        u32::from_ne_bytes(bytes.try_into().expect("length checked")).into()
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&u32::from(*self).to_ne_bytes())
    }
}

/// `struct ovs_vport_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VportStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

impl Fixed for VportStats {
    const LEN: usize = 64;
    fn read(bytes: &[u8]) -> VportStats {
        let [
            rx_packets,
            tx_packets,
            rx_bytes,
            tx_bytes,
            rx_errors,
            tx_errors,
            rx_dropped,
            tx_dropped,
        ] = u64s(bytes);
        VportStats {
            rx_packets,
            tx_packets,
            rx_bytes,
            tx_bytes,
            rx_errors,
            tx_errors,
            rx_dropped,
            tx_dropped,
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        let s = self;
        put_u64s(
            &[
                s.rx_packets,
                s.tx_packets,
                s.rx_bytes,
                s.tx_bytes,
                s.rx_errors,
                s.tx_errors,
                s.rx_dropped,
                s.tx_dropped,
            ],
            buf,
        )
    }
}

/// What kind of port to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VportKind {
    /// An existing network device of the same name.
    Netdev,
    /// A network device the datapath creates.
    Internal,
    /// A vxlan endpoint on UDP port `dst_port`; tunnel ids and addresses
    /// come per packet from the `set(tunnel)` action.
    Vxlan { dst_port: u16 },
}

/// A port as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vport {
    pub dp_ifindex: i32,
    pub port_no: u32,
    pub kind: VportType,
    pub name: String,
    /// The UDP port of a tunnel vport.
    pub dst_port: Option<u16>,
    pub upcall_pids: Vec<u32>,
    pub stats: VportStats,
    pub ifindex: Option<u32>,
}

impl TryFrom<&VportMessage> for Vport {
    type Error = DecodeError;

    fn try_from(msg: &VportMessage) -> Result<Vport, DecodeError> {
        let missing = |field: &str| DecodeError::Invalid {
            what: "vport",
            reason: format!("reply without {field}"),
        };
        let (mut port_no, mut kind, mut name) = (None, None, None);
        let mut vport = Vport {
            dp_ifindex: msg.dp_ifindex,
            port_no: 0,
            kind: VportType::Unspec,
            name: String::new(),
            dst_port: None,
            upcall_pids: Vec::new(),
            stats: VportStats::default(),
            ifindex: None,
        };
        for attr in &msg.attrs {
            match attr {
                VportAttr::PortNo(n) => port_no = Some(*n),
                VportAttr::Type(t) => kind = Some(*t),
                VportAttr::Name(n) => name = Some(n.clone()),
                VportAttr::Options(options) => {
                    vport.dst_port = options.iter().find_map(|o| match o {
                        TunnelOption::DstPort(p) => Some(*p),
                        _ => None,
                    })
                }
                VportAttr::UpcallPids(pids) => vport.upcall_pids = pids.clone(),
                VportAttr::Stats(s) => vport.stats = *s,
                VportAttr::Ifindex(i) => vport.ifindex = Some(*i),
                _ => {}
            }
        }
        vport.port_no = port_no.ok_or_else(|| missing("a port number"))?;
        vport.kind = kind.ok_or_else(|| missing("a type"))?;
        vport.name = name.ok_or_else(|| missing("a name"))?;
        Ok(vport)
    }
}

/// Requests of the `ovs_vport` family.
impl VportMessage {
    /// Adds port `name` of `kind` to the datapath, its upcalls going to
    /// `upcall_pids` (the kernel needs at least one; 0 means "none").
    pub fn create(
        dp_ifindex: i32,
        name: &str,
        kind: VportKind,
        upcall_pids: &[u32],
    ) -> VportMessage {
        let vport_type = match kind {
            VportKind::Netdev => VportType::Netdev,
            VportKind::Internal => VportType::Internal,
            VportKind::Vxlan { .. } => VportType::Vxlan,
        };
        let mut attrs = vec![
            VportAttr::Name(name.to_string()),
            VportAttr::Type(vport_type),
            VportAttr::UpcallPids(if upcall_pids.is_empty() {
                vec![0]
            } else {
                upcall_pids.to_vec()
            }),
        ];
        if let VportKind::Vxlan { dst_port } = kind {
            attrs.push(VportAttr::Options(vec![TunnelOption::DstPort(dst_port)]));
        }
        Message::new(ObjectCmd::New, dp_ifindex, attrs)
    }

    /// Gets one port by name (or lists all ports with a dump and no name).
    pub fn get(dp_ifindex: i32, name: Option<&str>) -> VportMessage {
        let attrs = name
            .map(|n| VportAttr::Name(n.to_string()))
            .into_iter()
            .collect();
        Message::new(ObjectCmd::Get, dp_ifindex, attrs)
    }

    pub fn get_by_number(dp_ifindex: i32, port_no: u32) -> VportMessage {
        Message::new(ObjectCmd::Get, dp_ifindex, vec![VportAttr::PortNo(port_no)])
    }

    pub fn delete(dp_ifindex: i32, port_no: u32) -> VportMessage {
        Message::new(ObjectCmd::Del, dp_ifindex, vec![VportAttr::PortNo(port_no)])
    }

    /// Points a port's upcalls at other netlink ports.
    pub fn set_upcall_pids(dp_ifindex: i32, port_no: u32, upcall_pids: &[u32]) -> VportMessage {
        Message::new(
            ObjectCmd::Set,
            dp_ifindex,
            vec![
                VportAttr::PortNo(port_no),
                VportAttr::UpcallPids(upcall_pids.to_vec()),
            ],
        )
    }
}
