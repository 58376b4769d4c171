//! Which data path each connection uses, and why: a kernel path (no copy
//! to userspace) whenever one works, the fast datapath (Open vSwitch) where
//! both hosts have it, else the kernel's own vxlan device where both have
//! that; otherwise the userspace path, always with a reason a person can
//! act on.
//!
//! The choice is re-made from scratch at every change of its inputs, so a
//! connection goes back to its kernel path as soon as vxlan heartbeats
//! pass again: there is no state that could keep it down.

use std::fmt;

use serde::Serialize;

pub mod heartbeat;
pub mod negotiation;
pub mod paths;

pub use paths::{Action, DataPaths, Event, PeerPath};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlay {
    /// The kernel's Open vSwitch datapath.
    Fastdp,
    /// The kernel's vxlan device on the bridge, where there is no
    /// Open vSwitch.
    Vxlan,
    Userspace,
}

impl Overlay {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlay::Fastdp => "fastdp",
            Overlay::Vxlan => "vxlan",
            Overlay::Userspace => "userspace",
        }
    }
}

impl fmt::Display for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection is not on a kernel path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// This host has no kernel path: no Open vSwitch datapath and no vxlan
    /// device (neither could be set up, or `--overlay userspace`).
    NoDatapath,
    /// We have the fast datapath and the peer has not.
    PeerWithoutFastdp,
    /// We have the vxlan device and the peer has not (it has the fast
    /// datapath, or no kernel path at all).
    PeerWithoutVxlanDevice,
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
            Reason::PeerWithoutVxlanDevice => "peer-without-vxlan-device",
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
                "load the openvswitch kernel module (modprobe openvswitch) for the fast datapath, \
                 or let weft make its vxlan device (--overlay auto)"
            }
            Reason::PeerWithoutFastdp => "the peer's kernel has no openvswitch module",
            Reason::PeerWithoutVxlanDevice => {
                "the peer has no vxlan device (it runs the fast datapath, or none); \
                 --overlay vxlan on both hosts gives them a kernel path"
            }
            Reason::EncryptionRequired => {
                "data is encrypted in userspace; --trusted-subnets lifts this between trusted hosts"
            }
            Reason::VxlanProbing => "waiting for the first vxlan heartbeat",
            Reason::VxlanBlocked => "allow UDP to the vxlan port (--fastdp-port) between the hosts",
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

/// What is known about one connection's kernel paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// Our datapath is up.
    pub local_datapath: bool,
    /// The peer offered a fast datapath.
    pub peer_datapath: bool,
    /// Our vxlan device is up.
    pub local_device: bool,
    /// The peer offered its vxlan device.
    pub peer_device: bool,
    /// Data on this connection must be encrypted.
    pub encrypt: bool,
    /// vxlan heartbeats over the kernel path the two hosts share: `None`
    /// before any answer or after they stopped
    /// coming back; `Some(full_size)` while they pass.
    pub vxlan: Option<bool>,
    /// Heartbeats were answered once, or have gone unanswered long enough,
    /// so no answer now means a block rather than a start.
    pub vxlan_tried: bool,
}

/// The kernel path two hosts share, if any: the fast datapath first, as
/// the one that also serves routers reached through others.
pub fn kernel_path(i: Inputs) -> Option<Overlay> {
    if i.local_datapath && i.peer_datapath {
        Some(Overlay::Fastdp)
    } else if i.local_device && i.peer_device {
        Some(Overlay::Vxlan)
    } else {
        None
    }
}

/// The overlay to use, and when it is not a kernel path, why.
pub fn choose(i: Inputs) -> (Overlay, Option<Reason>) {
    let reason = match kernel_path(i) {
        None if !i.local_datapath && !i.local_device => Reason::NoDatapath,
        None if i.local_datapath => Reason::PeerWithoutFastdp,
        None => Reason::PeerWithoutVxlanDevice,
        Some(_) if i.encrypt => Reason::EncryptionRequired,
        Some(kernel) => match i.vxlan {
            Some(true) => return (kernel, None),
            Some(false) => Reason::MtuTooSmall,
            None if i.vxlan_tried => Reason::VxlanBlocked,
            None => Reason::VxlanProbing,
        },
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
            local_device: false,
            peer_device: false,
            encrypt: false,
            vxlan: Some(true),
            vxlan_tried: true,
        }
    }

    #[test]
    fn fastdp_when_everything_works() {
        assert_eq!(choose(ok()), (Overlay::Fastdp, None));
    }

    /// A host without Open vSwitch whose peer has the vxlan device too.
    fn device() -> Inputs {
        Inputs {
            local_datapath: false,
            peer_datapath: false,
            local_device: true,
            peer_device: true,
            ..ok()
        }
    }

    #[test]
    fn the_vxlan_device_where_there_is_no_fastdp_on_either_side() {
        assert_eq!(choose(device()), (Overlay::Vxlan, None));
        let cases = [
            (
                Inputs {
                    peer_device: false,
                    ..device()
                },
                Reason::PeerWithoutVxlanDevice,
            ),
            (
                Inputs {
                    peer_device: false,
                    peer_datapath: true,
                    ..device()
                },
                Reason::PeerWithoutVxlanDevice,
            ),
            (
                Inputs {
                    local_device: false,
                    ..device()
                },
                Reason::NoDatapath,
            ),
            (
                Inputs {
                    encrypt: true,
                    ..device()
                },
                Reason::EncryptionRequired,
            ),
            (
                Inputs {
                    vxlan: None,
                    ..device()
                },
                Reason::VxlanBlocked,
            ),
            (
                Inputs {
                    vxlan: None,
                    vxlan_tried: false,
                    ..device()
                },
                Reason::VxlanProbing,
            ),
            (
                Inputs {
                    vxlan: Some(false),
                    ..device()
                },
                Reason::MtuTooSmall,
            ),
        ];
        for (inputs, reason) in cases {
            assert_eq!(
                choose(inputs),
                (Overlay::Userspace, Some(reason)),
                "{inputs:?}"
            );
        }
        // Both kinds on both sides (never from one router, which runs at
        // most one): the fast datapath wins.
        let both = Inputs {
            local_datapath: true,
            peer_datapath: true,
            ..device()
        };
        assert_eq!(choose(both), (Overlay::Fastdp, None));
        // We have the datapath, the peer only the device: no shared path.
        let mixed = Inputs {
            local_datapath: true,
            local_device: false,
            ..device()
        };
        assert_eq!(
            choose(mixed),
            (Overlay::Userspace, Some(Reason::PeerWithoutFastdp))
        );
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
            Reason::PeerWithoutVxlanDevice,
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
                "peer-without-vxlan-device",
                "encryption-required",
                "vxlan-blocked",
                "mtu-too-small"
            ]
        );
    }
}
