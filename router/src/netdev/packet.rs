//! AF_PACKET sockets: frames read from and written to one interface as
//! they are, below IP.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd},
};

/// A non-blocking AF_PACKET socket bound to interface `index` that reads
/// frames of EtherType `protocol` (`ETH_P_ALL`: every one; 0: none, for a
/// socket that only sends), with the `SOL_PACKET` int `options` set.
pub fn socket(index: u32, protocol: u16, options: &[libc::c_int]) -> io::Result<OwnedFd> {
    let proto = protocol.to_be();
    // SAFETY: a new socket, owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let on: libc::c_int = 1;
    for &option in options {
        // SAFETY: an int option on our socket.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: all-zero is a valid sockaddr_ll, filled in below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: binds our socket to a sockaddr_ll of the right size.
    let r = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}
