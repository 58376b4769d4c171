//! A conditioned container's port: its veth leaves the bridge and a TAP
//! takes its place there; a thread moves every frame between the two
//! through two conditioners (egress: from the container, ingress: to it).
//! Both data paths meet the container at the bridge, so both are
//! conditioned; other containers' frames never come near this thread.
//!
//! The veth is read and written with an AF_PACKET socket carrying
//! virtio-net headers, and the TAP takes TCP offloads, so TCP super-frames
//! arrive whole from both sides. Where a frame's flow has conditions they
//! are cut into wire-sized segments (with real checksums) before they are
//! conditioned: loss and rate work on packets, as on a wire. Where it has
//! none, the super-frame goes on whole with its header, one write for
//! dozens of packets: a conditioned container's other flows, and every
//! flow of one whose conditions are all zero, cost little more than the
//! bridge.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use weft_condition::{Conditioner, Conditions, Counters, Direction, FlowKey, conditioner::Pushed};

use crate::{
    netdev::Tap,
    userspace::offload::{VNET_HDR_LEN, VnetHdr, segment, segments},
    worker::{self, Mailbox, Worker},
};

/// Frames read from one side per turn of the loop, so that neither side
/// nor the timers wait long behind the other.
const BATCH: usize = 64;
/// The largest frame the veth may hand over: a 64 KiB super-frame.
const MAX_FRAME: usize = 65_536 + 14 + VNET_HDR_LEN;
/// Ethernet header: the rate counts IP bytes.
const ETH_LEN: usize = 14;

pub enum PortCommand {
    Set(Conditions),
    /// Counters per rule, per direction.
    Counters(std::sync::mpsc::Sender<PortCounters>),
    Stop,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PortCounters {
    pub ingress: Vec<(String, Counters)>,
    pub egress: Vec<(String, Counters)>,
    /// Frames that could not be written or cut (counted, not logged per
    /// frame).
    pub errors: u64,
    /// Packets held now, both directions.
    pub held: usize,
}

/// The running thread; dropping it stops the thread and closes the TAP.
pub struct Port {
    worker: Worker<PortCommand>,
    pub tap: String,
}

impl Port {
    /// Opens TAP `tap` and a packet socket on the veth `veth_index`, and
    /// starts moving frames under `conditions`. The caller moves the
    /// devices on the bridge.
    pub fn start(tap: &str, veth_index: u32, conditions: Conditions) -> io::Result<Port> {
        let device = Tap::open(tap)?;
        device
            .set_offloads(crate::netdev::tap::offload::CSUM | crate::netdev::tap::offload::TSO4)?;
        set_nonblocking(device.file().as_raw_fd())?;
        let socket = packet_socket(veth_index)?;
        let (sender, mailbox) = worker::mailbox()?;
        let seed = u64::from(veth_index) ^ 0x5eed;
        let worker = Worker::spawn(
            &format!("weft-cond-{veth_index}"),
            sender,
            || PortCommand::Stop,
            move || run(device, socket, mailbox, conditions, seed),
        )?;
        Ok(Port {
            worker,
            tap: tap.to_string(),
        })
    }

    pub fn set(&self, conditions: Conditions) {
        self.worker.send(PortCommand::Set(conditions));
    }

    pub fn counters(&self) -> Option<PortCounters> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.worker.send(PortCommand::Counters(tx));
        rx.recv_timeout(Duration::from_secs(1)).ok()
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An AF_PACKET socket on interface `index` that reads what the
/// container sends (not what we send it), with virtio-net headers.
fn packet_socket(index: u32) -> io::Result<OwnedFd> {
    crate::netdev::packet::socket(
        index,
        libc::ETH_P_ALL as u16,
        &[libc::PACKET_VNET_HDR, libc::PACKET_IGNORE_OUTGOING],
    )
}

/// poll(2) with a timeout to the nanosecond (worker::poll counts whole
/// milliseconds, which would add up to one to every delay).
fn wait(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<()> {
    let timeout = timeout.min(Duration::from_secs(1));
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: polls descriptors we own through a slice of its true length.
    let ready = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if ready < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Whether a read error leaves the device worth reading again.
fn still_there(e: &io::Error, what: &str) -> bool {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => true,
        _ => {
            tracing::info!(error = %e, "a conditioned container's {what} is gone");
            false
        }
    }
}

/// Reads up to [`BATCH`] frames from `fd`, each to `each`; an error that
/// means the device is gone clears `live`.
fn read_batch(
    fd: RawFd,
    live: &mut bool,
    what: &str,
    buf: &mut [u8],
    mut each: impl FnMut(&mut [u8]),
) {
    for _ in 0..BATCH {
        match read_into(fd, buf) {
            Ok(n) => each(&mut buf[..n]),
            Err(e) => {
                *live = still_there(&e, what);
                break;
            }
        }
    }
}

fn read_into(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into a buffer we own, at most its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes a frame that starts with its virtio-net header.
fn write_raw(fd: RawFd, frame: &[u8]) -> io::Result<()> {
    // SAFETY: writes a buffer we own, with its true length.
    let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes a frame with an all-zero virtio-net header (complete, no
/// segmentation) in front.
fn write_frame(fd: RawFd, frame: &[u8]) -> io::Result<()> {
    let hdr = [0u8; VNET_HDR_LEN];
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: writes two buffers we own, each with its true length.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// One side of the port: where its frames come from and go to.
struct Side {
    dir: Direction,
    conditioner: Conditioner<Vec<u8>>,
    /// Where conditioned frames are written.
    out: RawFd,
}

impl Side {
    /// Takes a frame as read (virtio-net header first): whole when its
    /// flow has nothing done to it, else cut and each segment conditioned.
    fn take_read(
        &mut self,
        now: Instant,
        read: &mut [u8],
        scratch: &mut Vec<u8>,
        errors: &mut u64,
    ) {
        let Some(hdr) = VnetHdr::parse(read) else {
            return;
        };
        let frame = &read[VNET_HDR_LEN..];
        // What cannot be cut here (TCP over IPv6, UDP segmentation) can
        // still go whole, counted as one packet.
        let (count, len) =
            segments(&hdr, frame).unwrap_or((1, frame.len().saturating_sub(ETH_LEN)));
        let key = FlowKey::of_frame(frame, self.dir);
        if self.conditioner.pass_whole(now, count, len, key.as_ref()) {
            if write_raw(self.out, read).is_err() {
                *errors += 1;
            }
            return;
        }
        let cut = segment(&hdr, &mut read[VNET_HDR_LEN..], scratch, |s| {
            self.take(now, s, errors)
        });
        if cut.is_err() {
            *errors += 1;
        }
    }

    fn take(&mut self, now: Instant, frame: &[u8], errors: &mut u64) {
        let key = FlowKey::of_frame(frame, self.dir);
        let len = frame.len().saturating_sub(ETH_LEN);
        if let Pushed::Pass(f) = self
            .conditioner
            .push(now, frame.to_vec(), len, key.as_ref())
            && write_frame(self.out, &f).is_err()
        {
            *errors += 1;
        }
    }

    fn release(&mut self, now: Instant, errors: &mut u64) {
        while let Some(f) = self.conditioner.poll(now) {
            if write_frame(self.out, &f).is_err() {
                *errors += 1;
            }
        }
    }
}

fn run(
    tap: Tap,
    socket: OwnedFd,
    mailbox: Mailbox<PortCommand>,
    conditions: Conditions,
    seed: u64,
) {
    let tap_fd = tap.file().as_raw_fd();
    let veth_fd = socket.as_raw_fd();
    let mut egress = Side {
        dir: Direction::Egress,
        conditioner: Conditioner::new(Direction::Egress, conditions.clone(), seed),
        out: tap_fd,
    };
    let mut ingress = Side {
        dir: Direction::Ingress,
        conditioner: Conditioner::new(Direction::Ingress, conditions, seed.rotate_left(17)),
        out: veth_fd,
    };
    let mut errors = 0u64;
    let (mut veth_live, mut tap_live) = (true, true);
    let mut buf = vec![0u8; MAX_FRAME];
    let mut scratch = Vec::new();
    loop {
        let now = Instant::now();
        egress.release(now, &mut errors);
        ingress.release(now, &mut errors);
        while let Some(command) = mailbox.next() {
            match command {
                PortCommand::Set(c) => {
                    egress.conditioner.reconfigure(c.clone());
                    ingress.conditioner.reconfigure(c);
                }
                PortCommand::Counters(reply) => {
                    let named = |s: &Side| {
                        s.conditioner
                            .counters()
                            .into_iter()
                            .map(|(l, c)| (l.to_string(), c))
                            .collect()
                    };
                    let _ = reply.send(PortCounters {
                        ingress: named(&ingress),
                        egress: named(&egress),
                        errors,
                        held: ingress.conditioner.held() + egress.conditioner.held(),
                    });
                }
                PortCommand::Stop => return,
            }
        }
        let deadline = [
            egress.conditioner.next_release(),
            ingress.conditioner.next_release(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1));
        // A device that is gone (the container left) is no longer
        // polled: its errors would wake the loop forever. The router
        // stops the thread when it notices.
        let mut fds = [
            worker::readable(mailbox.fd()),
            worker::readable(if veth_live { veth_fd } else { -1 }),
            worker::readable(if tap_live { tap_fd } else { -1 }),
        ];
        if deadline > now && wait(&mut fds, deadline - now).is_err() {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let now = Instant::now();
        if fds[1].revents != 0 {
            read_batch(veth_fd, &mut veth_live, "veth", &mut buf, |read| {
                egress.take_read(now, read, &mut scratch, &mut errors)
            });
        }
        if fds[2].revents != 0 {
            read_batch(tap_fd, &mut tap_live, "TAP", &mut buf, |read| {
                ingress.take_read(now, read, &mut scratch, &mut errors)
            });
        }
    }
}
