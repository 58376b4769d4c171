//! The socket upcalls arrive on.

use std::os::fd::{AsRawFd, RawFd};

use neli::{nl::NlPayload, socket::synchronous::NlSocketHandle, types::Buffer};

use crate::{
    DecodeError, Error, PacketMessage, Upcall,
    client::{discard_queued, open_socket, set_nonblocking},
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
    /// many went. For a router over its budget, whose queue must not hold
    /// stale misses ahead of new ones.
    pub fn discard(&self, max: usize) -> Result<usize, Error> {
        // An overflow is no upcall: the lost ones are the datapath's count.
        discard_queued(self.socket.as_raw_fd(), max).map(|(dropped, _)| dropped)
    }
}

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
