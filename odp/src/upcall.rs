//! The socket upcalls arrive on.

use std::os::fd::{AsRawFd, RawFd};

use neli::{nl::NlPayload, socket::synchronous::NlSocketHandle, types::Buffer};

use crate::{
    DecodeError, Error, PacketMessage, Upcall,
    client::{open_socket, set_nonblocking},
};

/// Room for a burst of upcalls: a full queue loses them (the datapath
/// counts them in `lost`), and a busy router drains it in batches.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// A netlink socket whose port id is given to datapaths and vports as their
/// upcall port; the kernel sends `ovs_packet` messages to it.
pub struct UpcallSocket {
    socket: NlSocketHandle,
}

impl UpcallSocket {
    pub fn open() -> Result<UpcallSocket, Error> {
        let socket = open_socket()?;
        // SO_RCVBUF is silently cut to net.core.rmem_max (208 KiB on a
        // stock kernel: about a hundred upcalls, which one burst of new
        // connections overflows, losing heartbeats with them). The router
        // runs with CAP_NET_ADMIN, which SO_RCVBUFFORCE needs to pass the
        // cap; without it, take what SO_RCVBUF gives.
        if force_recv_buffer(socket.as_raw_fd(), RECEIVE_BUFFER).is_err() {
            let _ = socket.set_recv_buffer_size(RECEIVE_BUFFER);
        }
        Ok(UpcallSocket { socket })
    }

    /// The receive buffer the kernel gave the socket, in bytes (its own
    /// accounting: twice what was asked).
    pub fn recv_buffer_size(&self) -> std::io::Result<usize> {
        let value: libc::c_int = socket_option(self.socket.as_raw_fd(), libc::SO_RCVBUF)?;
        Ok(value.max(0) as usize)
    }

    /// The bytes of upcalls waiting to be read (the kernel's accounting:
    /// each upcall's buffer, a few hundred bytes more than its packet).
    pub fn queued_bytes(&self) -> std::io::Result<usize> {
        // SK_MEMINFO_RMEM_ALLOC is the first of the SO_MEMINFO counters.
        let info: [u32; 9] = socket_option(self.socket.as_raw_fd(), libc::SO_MEMINFO)?;
        Ok(info[0] as usize)
    }

    /// The netlink port id to register as upcall pid.
    pub fn port_id(&self) -> u32 {
        self.socket.pid()
    }

    /// Makes [`UpcallSocket::recv`] return an empty batch instead of
    /// blocking, for use with an event loop.
    pub fn set_nonblocking(&self) -> Result<(), Error> {
        set_nonblocking(self.socket.as_raw_fd())
    }

    /// Receives one datagram's worth of upcalls. Messages that are not
    /// upcalls are skipped; an unreadable one is an error for that message
    /// only, so one bad message cannot hide the others.
    pub fn recv(&self) -> Result<Vec<Result<Upcall, DecodeError>>, Error> {
        let (batch, _) = match self.socket.recv::<u16, Buffer>() {
            Ok(received) => received,
            Err(neli::err::SocketError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(Error::Socket(e.to_string())),
        };
        let mut upcalls = Vec::new();
        for msg in batch {
            let msg = msg.map_err(|e| Error::Socket(e.to_string()))?;
            if let NlPayload::Payload(bytes) = msg.nl_payload() {
                upcalls.push(PacketMessage::parse(bytes.as_ref()).and_then(Upcall::try_from));
            }
        }
        Ok(upcalls)
    }

    /// Drops up to `max` queued upcalls without reading them, and says how
    /// many went: the kernel copies a few bytes of each at most, and takes
    /// up to [`DISCARD_BATCH`] per system call. For a router over its
    /// budget, whose queue must not hold stale misses ahead of new ones.
    /// Each upcall is a datagram of its own, so nothing but upcalls is lost.
    pub fn discard(&self, max: usize) -> Result<usize, Error> {
        let fd = self.socket.as_raw_fd();
        // The buffers and headers are built once and reused by every call.
        let mut scratch = [[0u8; 16]; DISCARD_BATCH];
        let mut iov = scratch.each_mut().map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        });
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty one.
        let mut msgs: [libc::mmsghdr; DISCARD_BATCH] = unsafe { std::mem::zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        let mut dropped = 0;
        // Until the queue is empty (EAGAIN: a short count may also mean an
        // error after some were taken, reported on the next call). A queue
        // that overflowed reports ENOBUFS once; the tries bound a socket
        // that keeps failing.
        for _ in 0..2 * max.div_ceil(DISCARD_BATCH) + 2 {
            let want = (max - dropped).min(DISCARD_BATCH);
            if want == 0 {
                break;
            }
            // SAFETY: at most DISCARD_BATCH headers, each pointing at one
            // live iovec over a live 16-byte buffer, none moved since; no
            // address or control buffers.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs.as_mut_ptr(),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::ENOBUFS) | Some(libc::EINTR) => continue,
                    _ => return Err(Error::Socket(e.to_string())),
                }
            }
            dropped += rc as usize;
        }
        Ok(dropped)
    }
}

/// How many upcalls [`UpcallSocket::discard`] drops per system call.
pub const DISCARD_BATCH: usize = 64;

/// Reads the socket-level option `name` of `fd`, a value of type `T`.
fn socket_option<T: Default>(fd: RawFd, name: libc::c_int) -> std::io::Result<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: value and len point at live locals; the kernel writes at
    // most len bytes, and T is plain data (an integer or an array of them)
    // at every call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

/// Sets `fd`'s receive buffer to `bytes` past net.core.rmem_max.
fn force_recv_buffer(fd: RawFd, bytes: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl AsRawFd for UpcallSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}
