//! The UDP socket of the userspace data path.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
};

/// Socket buffers big enough for bursts at line rate: with the default
/// ones Weave's receivers dropped 14% of datagrams under load.
const BUFFER: libc::c_int = 4 << 20;

fn setsockopt(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to an int we own, with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Prepares a bound socket: non-blocking, large buffers, and DF on every
/// datagram without the kernel's path MTU cache, since the data path
/// measures path MTUs itself.
pub fn prepare(socket: &UdpSocket) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    for (name, forced) in [
        (libc::SO_RCVBUF, libc::SO_RCVBUFFORCE),
        (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE),
    ] {
        // The forced variant exceeds the sysctl limits, as root.
        if setsockopt(socket, libc::SOL_SOCKET, forced, BUFFER).is_err() {
            setsockopt(socket, libc::SOL_SOCKET, name, BUFFER)?;
        }
    }
    setsockopt(
        socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    )
}

/// Lets the kernel hand us several datagrams from one sender in one
/// receive (UDP GRO); [`recv`] reports the size they were cut at.
pub fn enable_gro(socket: &UdpSocket) -> io::Result<()> {
    setsockopt(socket, libc::SOL_UDP, libc::UDP_GRO, 1)
}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is a valid (unspecified) address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn addr_of(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::from((ip, u16::from_be(sin6.sin6_port))))
        }
        _ => None,
    }
}

/// Room for one cmsg carrying a u16 (or an int), aligned as cmsgs must be.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends `buf` to `to` as datagrams of `segment` bytes each (the last may
/// be shorter) in one call, letting the kernel cut them (UDP GSO).
pub fn send_segments(
    socket: &UdpSocket,
    to: SocketAddr,
    buf: &[u8],
    segment: usize,
) -> io::Result<usize> {
    let (mut addr, addr_len) = sockaddr_of(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: zeroed msghdr is valid; every pointer set below outlives the
    // call and the cmsg macros stay within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = addr_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if segment < buf.len() {
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        }
        let n = libc::sendmsg(socket.as_raw_fd(), &msg, 0);
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// Sends `buf` as datagrams of `segment` bytes, in one call when the
/// kernel can cut them (UDP GSO) and one by one when it refuses (a device
/// without checksum offload answers EIO): a batch is never dropped only
/// because GSO is missing.
pub fn send_batch(
    socket: &UdpSocket,
    to: SocketAddr,
    buf: &[u8],
    segment: usize,
) -> io::Result<usize> {
    match send_segments(socket, to, buf, segment) {
        Err(e) if segment < buf.len() && e.kind() != io::ErrorKind::WouldBlock => {
            tracing::debug!(error = %e, "UDP GSO refused: sending the batch datagram by datagram");
            buf.chunks(segment.max(1))
                .map(|datagram| socket.send_to(datagram, to))
                .sum()
        }
        sent => sent,
    }
}

/// Receives into `buf`: how many bytes, from where, and, when the kernel
/// glued several datagrams together (UDP GRO), the size of each.
pub fn recv_segments(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    // SAFETY: zeroed sockaddr_storage is a valid buffer for an address.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: as in send_segments; the kernel writes within the lengths we
    // give, and we only read cmsgs the macros find inside `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut segment = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                segment = Some(
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) as usize,
                );
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let from = addr_of(&addr)
            .ok_or_else(|| io::Error::other("datagram from an unknown address family"))?;
        Ok((n as usize, from, segment))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (a, b)
    }

    fn batch() -> Vec<u8> {
        (0..350u32).map(|i| i as u8).collect()
    }

    #[test]
    fn segments_arrive_glued_with_their_size_where_gro_is_on() {
        let (a, b) = pair();
        enable_gro(&b).unwrap();
        let to = b.local_addr().unwrap();
        assert_eq!(send_segments(&a, to, &batch(), 100).unwrap(), 350);
        let mut buf = vec![0u8; 2048];
        let (n, from, segment) = recv_segments(&b, &mut buf).unwrap();
        assert_eq!(from, a.local_addr().unwrap());
        assert_eq!(
            (n, segment),
            (350, Some(100)),
            "one receive, and where to cut"
        );
        assert_eq!(buf[..n], batch());
    }

    #[test]
    fn without_gro_each_segment_is_a_datagram_and_a_short_batch_is_plain() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        send_segments(&a, to, &batch(), 100).unwrap();
        let mut buf = vec![0u8; 2048];
        let sizes: Vec<usize> = (0..4)
            .map(|_| recv_segments(&b, &mut buf).unwrap().0)
            .collect();
        assert_eq!(sizes, [100, 100, 100, 50]);
        // One datagram: no GSO control message at all.
        assert_eq!(send_segments(&a, to, &batch()[..60], 100).unwrap(), 60);
        let (n, _, segment) = recv_segments(&b, &mut buf).unwrap();
        assert_eq!((n, segment), (60, None));
    }

    #[test]
    fn a_batch_the_kernel_will_not_cut_is_sent_one_by_one() {
        let (a, b) = pair();
        let to = b.local_addr().unwrap();
        // More segments than UDP GSO takes in one call (UDP_MAX_SEGMENTS
        // is 64 or 128): the kernel refuses with EINVAL.
        let big: Vec<u8> = (0..200 * 10).map(|i| i as u8).collect();
        assert!(
            send_segments(&a, to, &big, 10).is_err(),
            "the kernel refuses"
        );
        assert_eq!(send_batch(&a, to, &big, 10).unwrap(), big.len());
        let mut buf = vec![0u8; 2048];
        let mut got = Vec::new();
        while got.len() < big.len() {
            let (n, _, _) = recv_segments(&b, &mut buf).unwrap();
            assert_eq!(n, 10);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, big);
    }

    #[test]
    fn addresses_round_trip_through_sockaddr() {
        for addr in ["192.0.2.7:6783", "[2001:db8::1]:443"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let (storage, _) = sockaddr_of(addr);
            assert_eq!(addr_of(&storage), Some(addr));
        }
    }
}
