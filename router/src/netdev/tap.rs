//! The TAP port the router plugs into its bridge: frames the bridge sends
//! to remote MACs come out of it, frames from other hosts go in.
//!
//! It is opened with a virtio-net header in front of every frame, so that
//! with offloads on the kernel can hand over (and take) TCP super-frames of
//! up to 64 KiB instead of one frame per MTU.

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Size of `struct virtio_net_hdr` (without the mergeable-buffers field).
pub const VNET_HDR_LEN: usize = 10;

/// `TUN_F_*` offloads the router can take from the kernel.
pub mod offload {
    pub const CSUM: u32 = libc::TUN_F_CSUM;
    pub const TSO4: u32 = libc::TUN_F_TSO4;
    pub const TSO6: u32 = libc::TUN_F_TSO6;
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    /// The request for interface `name`: the kernel reads the name up to
    /// its NUL, so at most IFNAMSIZ - 1 bytes fit.
    fn new(name: &str, flags: libc::c_short) -> io::Result<IfReq> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "interface name {name:?} must be 1 to {} bytes without NUL",
                    libc::IFNAMSIZ - 1
                ),
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    }
}

/// An open TAP device; the device disappears when this is dropped, so a
/// router that dies leaves no TAP behind.
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates TAP `name` with virtio-net headers on its frames.
    pub fn open(name: &str) -> io::Result<Tap> {
        let mut req = IfReq::new(
            name,
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        )?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: TUNSETIFF reads and writes an ifreq we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads an int we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Tap {
            file,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which offloads the kernel may use towards us (`offload::*` bits).
    pub fn set_offloads(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Another descriptor for the same queue, for a thread of its own.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        // SAFETY: dup returns a new descriptor we then own.
        let fd = unsafe { libc::dup(self.file.as_raw_fd()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is valid and ours.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use nix::sched::{CloneFlags, unshare};

    use super::*;

    #[test]
    fn names_fill_at_most_fifteen_bytes_and_stay_nul_terminated() {
        let req = IfReq::new("abcdefghijklmno", 0).unwrap();
        assert_eq!(req.name[14], b'o' as libc::c_char);
        assert_eq!(req.name[15], 0, "the kernel needs the NUL");
        for bad in ["abcdefghijklmnop", "", "a\0b"] {
            let e = IfReq::new(bad, 0).err().expect(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    /// Opens a TAP in a network namespace of the test's own thread, never
    /// the host's, and checks it exists with our offloads and a clone.
    #[test]
    fn a_tap_opens_takes_offloads_and_goes_with_its_file() {
        let outcome = std::thread::spawn(|| -> Result<(), String> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare (run as root): {e}"))?;
            let name = "wefttaptest0";
            let tap = Tap::open(name).map_err(|e| format!("open: {e}"))?;
            assert_eq!(tap.name(), name);
            let exists = || nix::net::if_::if_nametoindex(name).is_ok();
            assert!(exists(), "the device exists");
            tap.set_offloads(offload::CSUM | offload::TSO4 | offload::TSO6)
                .map_err(|e| format!("offloads: {e}"))?;
            let clone = File::from(tap.try_clone_fd().map_err(|e| e.to_string())?);
            // A down TAP refuses frames with EIO: the clone is the same
            // device, not some other file.
            let frame = vec![0u8; VNET_HDR_LEN + 60];
            let refused = (&clone).write_all(&frame).err().map(|e| e.raw_os_error());
            assert_eq!(refused, Some(Some(libc::EIO)));
            drop(clone);
            drop(tap);
            assert!(!exists(), "the device goes with its last descriptor");
            Ok(())
        })
        .join()
        .expect("the test thread");
        outcome.unwrap();
    }
}
