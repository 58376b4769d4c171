//! Which data path each connection uses, and why: the fast datapath
//! (kernel vxlan, no copy to userspace) whenever it works, otherwise the
//! userspace path, always with a reason a person can act on.
//!
//! The choice is re-made from scratch at every change of its inputs, so a
//! connection goes back to the fast datapath as soon as vxlan heartbeats
//! pass again: there is no state that could keep it down.

use std::fmt;

use serde::Serialize;

pub mod negotiation;
pub mod paths;

pub use paths::{Action, DataPaths, Event, PeerPath};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlay {
    Fastdp,
    Userspace,
}

impl Overlay {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlay::Fastdp => "fastdp",
            Overlay::Userspace => "userspace",
        }
    }
}

impl fmt::Display for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection is not on the fast datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// This kernel has no Open vSwitch datapath (or it could not be set up).
    NoDatapath,
    /// The peer's kernel has none.
    PeerWithoutFastdp,
    /// The mesh has a password and the connection is not between trusted
    /// subnets: data must be encrypted, which vxlan does not do.
    EncryptionRequired,
    /// No vxlan heartbeats have come back yet.
    VxlanProbing,
    /// vxlan heartbeats do not come back: UDP to the vxlan port is blocked.
    VxlanBlocked,
    /// Small vxlan heartbeats pass but full-size ones do not: the path
    /// cannot carry the overlay MTU in vxlan.
    MtuTooSmall,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoDatapath => "no-datapath",
            Reason::PeerWithoutFastdp => "peer-without-fastdp",
            Reason::EncryptionRequired => "encryption-required",
            Reason::VxlanProbing => "vxlan-probing",
            Reason::VxlanBlocked => "vxlan-blocked",
            Reason::MtuTooSmall => "mtu-too-small",
        }
    }

    /// What the operator can do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Reason::NoDatapath => {
                "load the openvswitch kernel module (modprobe openvswitch) for the fast datapath"
            }
            Reason::PeerWithoutFastdp => "the peer's kernel has no openvswitch module",
            Reason::EncryptionRequired => {
                "data is encrypted in userspace; --trusted-subnets lifts this between trusted hosts"
            }
            Reason::VxlanProbing => "waiting for the first vxlan heartbeat",
            Reason::VxlanBlocked => "allow UDP to the fast datapath port between the hosts",
            Reason::MtuTooSmall => {
                "the path drops full-size vxlan packets; raise the path MTU or lower --mtu"
            }
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one connection's fast datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// Our datapath is up.
    pub local_datapath: bool,
    /// The peer offered a fast datapath.
    pub peer_datapath: bool,
    /// Data on this connection must be encrypted.
    pub encrypt: bool,
    /// vxlan heartbeats: `None` before any answer or after they stopped
    /// coming back; `Some(full_size)` while they pass.
    pub vxlan: Option<bool>,
    /// Heartbeats were answered once, or have gone unanswered long enough,
    /// so no answer now means a block rather than a start.
    pub vxlan_tried: bool,
}

/// The overlay to use, and when it is not the fast datapath, why.
pub fn choose(i: Inputs) -> (Overlay, Option<Reason>) {
    let reason = if !i.local_datapath {
        Reason::NoDatapath
    } else if !i.peer_datapath {
        Reason::PeerWithoutFastdp
    } else if i.encrypt {
        Reason::EncryptionRequired
    } else {
        match i.vxlan {
            Some(true) => return (Overlay::Fastdp, None),
            Some(false) => Reason::MtuTooSmall,
            None if i.vxlan_tried => Reason::VxlanBlocked,
            None => Reason::VxlanProbing,
        }
    };
    (Overlay::Userspace, Some(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Inputs {
        Inputs {
            local_datapath: true,
            peer_datapath: true,
            encrypt: false,
            vxlan: Some(true),
            vxlan_tried: true,
        }
    }

    #[test]
    fn fastdp_when_everything_works() {
        assert_eq!(choose(ok()), (Overlay::Fastdp, None));
    }

    #[test]
    fn each_reason_in_order_of_what_to_fix_first() {
        let cases = [
            (
                Inputs {
                    local_datapath: false,
                    ..ok()
                },
                Reason::NoDatapath,
            ),
            (
                Inputs {
                    peer_datapath: false,
                    ..ok()
                },
                Reason::PeerWithoutFastdp,
            ),
            (
                Inputs {
                    encrypt: true,
                    ..ok()
                },
                Reason::EncryptionRequired,
            ),
            (
                Inputs {
                    vxlan: None,
                    vxlan_tried: false,
                    ..ok()
                },
                Reason::VxlanProbing,
            ),
            (
                Inputs {
                    vxlan: None,
                    ..ok()
                },
                Reason::VxlanBlocked,
            ),
            (
                Inputs {
                    vxlan: Some(false),
                    ..ok()
                },
                Reason::MtuTooSmall,
            ),
            (
                Inputs {
                    local_datapath: false,
                    encrypt: true,
                    vxlan: None,
                    ..ok()
                },
                Reason::NoDatapath,
            ),
        ];
        for (inputs, reason) in cases {
            assert_eq!(
                choose(inputs),
                (Overlay::Userspace, Some(reason)),
                "{inputs:?}"
            );
        }
    }

    #[test]
    fn reasons_print_as_the_documented_codes() {
        let codes: Vec<&str> = [
            Reason::NoDatapath,
            Reason::PeerWithoutFastdp,
            Reason::EncryptionRequired,
            Reason::VxlanBlocked,
            Reason::MtuTooSmall,
        ]
        .iter()
        .map(|r| r.as_str())
        .collect();
        assert_eq!(
            codes,
            [
                "no-datapath",
                "peer-without-fastdp",
                "encryption-required",
                "vxlan-blocked",
                "mtu-too-small"
            ]
        );
    }
}
