//! The socket that hears of changes to datapaths and their ports.

use std::os::fd::{AsRawFd, RawFd};

use neli::socket::synchronous::NlSocketHandle;

use crate::{
    Error, FamilyIds,
    client::{discard_queued, open_socket, set_nonblocking},
};

/// Subscribed to the datapath and vport families' multicast groups, where
/// the kernel announces every datapath created, set or deleted and every
/// port added, set or deleted, whichever program did it (this one too). A
/// router that keeps its datapath as it wants it learns of another
/// program's change at once instead of at its next check. Only whether
/// something arrived matters, so the announcements are dropped unread:
/// no parser faces them.
pub struct ChangeSocket {
    socket: NlSocketHandle,
}

impl ChangeSocket {
    /// Joins the groups `ids` names; fails if it names neither (a kernel
    /// that announces nothing).
    pub fn open(ids: &FamilyIds) -> Result<ChangeSocket, Error> {
        let groups: Vec<u32> = [ids.datapath_mcgroup, ids.vport_mcgroup]
            .into_iter()
            .flatten()
            .collect();
        if groups.is_empty() {
            return Err(Error::Socket(
                "the kernel names no datapath or vport multicast group".into(),
            ));
        }
        let socket = open_socket()?;
        for group in groups {
            join(socket.as_raw_fd(), group)?;
        }
        set_nonblocking(socket.as_raw_fd())?;
        Ok(ChangeSocket { socket })
    }

    /// Drops every announcement waiting, up to `max`, and says how many
    /// there were. A queue that overflowed counts as one: something
    /// changed, the details are lost either way.
    pub fn drain(&self, max: usize) -> Result<usize, Error> {
        let (dropped, overflowed) = discard_queued(self.socket.as_raw_fd(), max)?;
        Ok(dropped + usize::from(overflowed))
    }
}

/// NETLINK_ADD_MEMBERSHIP of `group` on `fd`.
fn join(fd: RawFd, group: u32) -> Result<(), Error> {
    // SAFETY: a pointer to a live u32 and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_NETLINK,
            libc::NETLINK_ADD_MEMBERSHIP,
            (&group as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(Error::Socket(format!(
            "joining multicast group {group}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

impl AsRawFd for ChangeSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
