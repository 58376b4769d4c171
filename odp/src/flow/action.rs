//! Flow actions (`OVS_ACTION_ATTR_*`): what the datapath does with a packet
//! that matched, in order.

use crate::{
    flow::key::{KeyAttr, TunnelKey},
    nla_enum,
};

nla_enum! {
    /// `enum ovs_action_attr`.
    pub enum Action {
        /// Send the packet out of this datapath port.
        Output(u32) = 1 as ne,
        /// Send a copy up to userspace.
        Userspace(Vec<UserspaceAttr>) = 2 as nested,
        /// Rewrite one field; `set(tunnel(...))` chooses the tunnel the next
        /// output into a tunnel vport uses.
        Set(KeyAttr) = 3 as one,
        Recirc(u32) = 7 as ne,
        Trunc(u32) = 13 as ne,
        Meter(u32) = 19 as ne,
        @flags {
            PopVlan = 5,
            PopEth = 15,
            CtClear = 16,
        }
    }
}

nla_enum! {
    /// `enum ovs_userspace_attr`.
    pub enum UserspaceAttr {
        /// The netlink port to deliver to.
        Pid(u32) = 1 as ne,
        /// An opaque cookie handed back in the upcall.
        Userdata(Vec<u8>) = 2 as bytes,
        EgressTunPort(u32) = 3 as ne,
        @flags {
            Actions = 4,
        }
    }
}

impl Action {
    pub fn set_tunnel(key: &TunnelKey) -> Action {
        Action::Set(KeyAttr::Tunnel(key.attrs()))
    }

    /// Hand the packet to netlink port `pid`, with `userdata` in the upcall.
    pub fn userspace(pid: u32, userdata: Option<Vec<u8>>) -> Action {
        let mut attrs = vec![UserspaceAttr::Pid(pid)];
        attrs.extend(userdata.map(UserspaceAttr::Userdata));
        Action::Userspace(attrs)
    }
}
