//! `ovs_datapath`: the datapaths themselves (`struct datapath` in the
//! kernel), each a switch with ports, a flow table and upcall sockets.

use crate::{
    DecodeError,
    codec::Fixed,
    message::{Family, Message, ObjectCmd},
    nla_enum,
};

/// The `ovs_datapath` generic netlink family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathFamily;

impl Family for DatapathFamily {
    const NAME: &'static str = "ovs_datapath";
    const VERSION: u8 = 2;
    type Cmd = ObjectCmd;
    type Attr = DatapathAttr;
}

pub type DatapathMessage = Message<DatapathFamily>;

/// The multicast group the kernel announces datapath changes on (created,
/// set, deleted), whichever program made them.
pub const DATAPATH_MCGROUP: &str = "ovs_datapath";

nla_enum! {
    /// `enum ovs_datapath_attr`.
    pub enum DatapathAttr {
        Name(String) = 1 as string,
        /// The netlink port that receives upcalls when vports don't name one.
        UpcallPid(u32) = 2 as ne,
        Stats(DatapathStats) = 3 as fixed,
        MegaflowStats(MegaflowStats) = 4 as fixed,
        /// `OVS_DP_F_*` bits, see [`features`].
        UserFeatures(u32) = 5 as ne,
        MasksCacheSize(u32) = 7 as ne,
        PerCpuPids(Vec<u32>) = 8 as u32s,
        Ifindex(u32) = 9 as ne,
    }
}

/// `OVS_DP_F_*`: what userspace tells the datapath it understands.
pub mod features {
    /// Netlink attributes in upcalls may be unaligned.
    pub const UNALIGNED: u32 = 1 << 0;
    /// Each vport names its own upcall sockets.
    pub const VPORT_PIDS: u32 = 1 << 1;
    pub const TC_RECIRC_SHARING: u32 = 1 << 2;
    pub const DISPATCH_UPCALL_PER_CPU: u32 = 1 << 3;

    /// The names of the bits set in `features`, unknown bits in hex.
    pub fn names(features: u32) -> Vec<String> {
        let known = [
            (UNALIGNED, "unaligned"),
            (VPORT_PIDS, "vport-pids"),
            (TC_RECIRC_SHARING, "tc-recirc-sharing"),
            (DISPATCH_UPCALL_PER_CPU, "per-cpu-upcalls"),
        ];
        let mut out: Vec<String> = known
            .iter()
            .filter(|(bit, _)| features & bit != 0)
            .map(|(_, name)| name.to_string())
            .collect();
        let rest = known.iter().fold(features, |f, (bit, _)| f & !bit);
        if rest != 0 {
            out.push(format!("{rest:#x}"));
        }
        out
    }
}

#[cfg(test)]
mod feature_tests {
    use super::features;

    #[test]
    fn feature_bits_are_named() {
        assert!(features::names(0).is_empty());
        assert_eq!(
            features::names(features::UNALIGNED | features::DISPATCH_UPCALL_PER_CPU | 0x100),
            ["unaligned", "per-cpu-upcalls", "0x100"]
        );
    }
}

/// `struct ovs_dp_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathStats {
    /// Packets that matched a flow.
    pub hit: u64,
    /// Packets that matched none and went up as upcalls.
    pub missed: u64,
    /// Misses that could not be queued to userspace.
    pub lost: u64,
    pub flows: u64,
}

/// `struct ovs_dp_megaflow_stats` (its two pad fields are written as zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MegaflowStats {
    pub mask_hit: u64,
    pub masks: u32,
    pub cache_hit: u64,
}

fn u64_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("in bounds"))
}

/// Reads `N` consecutive host-order u64s, the layout of the kernel's
/// statistics structs.
pub(crate) fn u64s<const N: usize>(bytes: &[u8]) -> [u64; N] {
    std::array::from_fn(|i| u64_at(bytes, i))
}

pub(crate) fn put_u64s(values: &[u64], buf: &mut Vec<u8>) {
    values
        .iter()
        .for_each(|v| buf.extend_from_slice(&v.to_ne_bytes()));
}

impl Fixed for DatapathStats {
    const LEN: usize = 32;
    fn read(bytes: &[u8]) -> DatapathStats {
        let [hit, missed, lost, flows] = u64s(bytes);
        DatapathStats {
            hit,
            missed,
            lost,
            flows,
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        put_u64s(&[self.hit, self.missed, self.lost, self.flows], buf)
    }
}

impl Fixed for MegaflowStats {
    const LEN: usize = 32;
    fn read(bytes: &[u8]) -> MegaflowStats {
        let masks = u32::from_ne_bytes(bytes[8..12].try_into().expect("in bounds"));
        MegaflowStats {
            mask_hit: u64_at(bytes, 0),
            masks,
            cache_hit: u64_at(bytes, 2),
        }
    }
    fn write(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.mask_hit.to_ne_bytes());
        buf.extend_from_slice(&self.masks.to_ne_bytes());
        buf.extend_from_slice(&[0; 4]);
        put_u64s(&[self.cache_hit, 0], buf);
    }
}

/// A datapath as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datapath {
    /// The interface index of the datapath's local port, which identifies
    /// it in every other request.
    pub ifindex: i32,
    pub name: String,
    pub user_features: u32,
    pub stats: DatapathStats,
    pub megaflow_stats: Option<MegaflowStats>,
}

impl TryFrom<&DatapathMessage> for Datapath {
    type Error = DecodeError;

    fn try_from(msg: &DatapathMessage) -> Result<Datapath, DecodeError> {
        let mut dp = Datapath {
            ifindex: msg.dp_ifindex,
            name: String::new(),
            user_features: 0,
            stats: DatapathStats::default(),
            megaflow_stats: None,
        };
        let mut named = false;
        for attr in &msg.attrs {
            match attr {
                DatapathAttr::Name(name) => {
                    dp.name = name.clone();
                    named = true;
                }
                DatapathAttr::UserFeatures(f) => dp.user_features = *f,
                DatapathAttr::Stats(s) => dp.stats = *s,
                DatapathAttr::MegaflowStats(s) => dp.megaflow_stats = Some(*s),
                _ => {}
            }
        }
        if !named {
            return Err(DecodeError::Invalid {
                what: "datapath",
                reason: "reply without a name".to_string(),
            });
        }
        Ok(dp)
    }
}

/// Requests of the `ovs_datapath` family.
impl DatapathMessage {
    /// Creates datapath `name`, sending misses to netlink port `upcall_pid`.
    pub fn create(name: &str, upcall_pid: u32, user_features: u32) -> DatapathMessage {
        Message::new(
            ObjectCmd::New,
            0,
            vec![
                DatapathAttr::Name(name.to_string()),
                DatapathAttr::UpcallPid(upcall_pid),
                DatapathAttr::UserFeatures(user_features),
            ],
        )
    }

    /// Gets (or with a dump, lists) datapaths; by name when given.
    pub fn get(name: Option<&str>) -> DatapathMessage {
        let attrs = name
            .map(|n| DatapathAttr::Name(n.to_string()))
            .into_iter()
            .collect();
        Message::new(ObjectCmd::Get, 0, attrs)
    }

    pub fn get_by_index(dp_ifindex: i32) -> DatapathMessage {
        Message::new(ObjectCmd::Get, dp_ifindex, Vec::new())
    }

    pub fn delete(dp_ifindex: i32) -> DatapathMessage {
        Message::new(ObjectCmd::Del, dp_ifindex, Vec::new())
    }

    /// Changes the user features and the default upcall port.
    pub fn set(dp_ifindex: i32, upcall_pid: u32, user_features: u32) -> DatapathMessage {
        Message::new(
            ObjectCmd::Set,
            dp_ifindex,
            vec![
                DatapathAttr::UpcallPid(upcall_pid),
                DatapathAttr::UserFeatures(user_features),
            ],
        )
    }

    /// Names the upcall port for each CPU, used when the datapath
    /// dispatches upcalls per CPU (`DISPATCH_UPCALL_PER_CPU`, Linux 5.15+);
    /// CPUs beyond the list wrap around it.
    pub fn set_per_cpu_pids(dp_ifindex: i32, pids: Vec<u32>) -> DatapathMessage {
        Message::new(
            ObjectCmd::Set,
            dp_ifindex,
            vec![DatapathAttr::PerCpuPids(pids)],
        )
    }
}
