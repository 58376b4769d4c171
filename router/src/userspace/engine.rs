//! The userspace data path at work: one thread per router that moves
//! frames between the bridge's TAP port and UDP datagrams to peers.
//!
//! This is the I/O edge only: it waits on the TAP, the socket and its
//! mailbox, reads in bursts, and hands what it read to the [`Switch`],
//! which decides everything and writes back through the [`Wire`] the
//! engine gives it.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::{AsRawFd, OwnedFd},
    sync::Arc,
    time::Instant,
};

use super::{
    forwarding::SharedMacs,
    socket,
    switch::{Counters, PathReport, Switch, UserspaceCommand, Wire},
};
use crate::{
    identity::PeerName,
    netdev::tap::VNET_HDR_LEN,
    worker::{self, Mailbox, Worker},
};

/// Room for the largest frame a TAP hands over, with its virtio header.
const BUF_LEN: usize = 65536 + VNET_HDR_LEN;
/// Frames or datagrams handled per wake-up before looking at the others,
/// so neither direction starves the other.
const BATCH: usize = 64;

/// A way to give the data path commands, from any thread.
pub type Sender = worker::Sender<UserspaceCommand>;

pub struct UserspaceConfig {
    pub local: PeerName,
    pub tap: OwnedFd,
    pub udp: UdpSocket,
    /// The underlay interface's MTU: the most a path can take.
    pub link_mtu: u32,
    /// The router's MAC table, shared with the fast datapath.
    pub macs: SharedMacs,
}

/// Handle on the running data path; dropping it stops the thread.
pub struct DataPlane {
    worker: Worker<UserspaceCommand>,
    pub counters: Arc<Counters>,
}

impl DataPlane {
    /// Starts the data path thread; path changes arrive on `reports`.
    pub fn start(
        config: UserspaceConfig,
        reports: tokio::sync::mpsc::UnboundedSender<PathReport>,
    ) -> io::Result<DataPlane> {
        set_nonblocking(&config.tap)?;
        let (sender, mailbox) = worker::mailbox()?;
        let counters = Arc::new(Counters::default());
        let switch = Switch::new(
            config.local,
            config.link_mtu,
            config.macs,
            counters.clone(),
            Instant::now(),
        );
        let engine = Engine {
            port: Port {
                tap: config.tap,
                udp: config.udp,
            },
            switch,
            mailbox,
            reports,
        };
        let worker = Worker::spawn(
            "weft-userspace",
            sender,
            || UserspaceCommand::Stop,
            move || engine.run(),
        )?;
        Ok(DataPlane { worker, counters })
    }

    pub fn send(&self, command: UserspaceCommand) {
        self.worker.send(command)
    }

    pub fn sender(&self) -> Sender {
        self.worker.sender()
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0
        || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads into a buffer we own, within its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write_fd(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: writes from a buffer we own, within its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The switch's wire: the bridge's TAP port and the UDP socket.
struct Port {
    tap: OwnedFd,
    udp: UdpSocket,
}

impl Wire for Port {
    fn send(&mut self, addr: SocketAddr, datagrams: &[u8], size: usize) -> io::Result<usize> {
        socket::send_batch(&self.udp, addr, datagrams, size)
    }

    fn to_bridge(&mut self, bytes: &[u8]) -> io::Result<()> {
        write_fd(&self.tap, bytes).map(|_| ())
    }
}

struct Engine {
    port: Port,
    switch: Switch,
    mailbox: Mailbox<UserspaceCommand>,
    reports: tokio::sync::mpsc::UnboundedSender<PathReport>,
}

impl Engine {
    fn run(mut self) {
        let mut tap_buf = vec![0u8; BUF_LEN];
        let mut udp_buf = vec![0u8; BUF_LEN];
        loop {
            let now = Instant::now();
            let mut fds = [
                worker::readable(self.port.tap.as_raw_fd()),
                worker::readable(self.port.udp.as_raw_fd()),
                worker::readable(self.mailbox.fd()),
            ];
            if let Err(e) = worker::poll(&mut fds, now, self.switch.next_timeout()) {
                tracing::error!(error = %e, "userspace path poll failed");
                return;
            }
            if fds[2].revents != 0 && !self.commands() {
                return;
            }
            if fds[0].revents != 0 {
                for _ in 0..BATCH {
                    match read_fd(&self.port.tap, &mut tap_buf) {
                        Ok(n) if n > VNET_HDR_LEN => {
                            let now = Instant::now();
                            self.switch
                                .handle_bridge(now, &mut tap_buf[..n], &mut self.port)
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "reading the TAP device");
                            break;
                        }
                    }
                }
                self.switch.flush(Instant::now(), &mut self.port);
            }
            if fds[1].revents != 0 {
                for _ in 0..BATCH {
                    match socket::recv_segments(&self.port.udp, &mut udp_buf) {
                        Ok((n, from, segment)) => {
                            let size = segment.filter(|s| *s > 0).unwrap_or(n);
                            self.switch.handle_datagrams(
                                Instant::now(),
                                &mut udp_buf[..n],
                                size,
                                from,
                                &mut self.port,
                            );
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "receiving a datagram");
                            break;
                        }
                    }
                }
                self.switch.flush(Instant::now(), &mut self.port);
            }
            self.switch.handle_timeout(Instant::now(), &mut self.port);
            while let Some(report) = self.switch.poll_report() {
                let _ = self.reports.send(report);
            }
        }
    }

    /// Hands commands to the switch; false when told to stop.
    fn commands(&mut self) -> bool {
        while let Some(command) = self.mailbox.next() {
            if let UserspaceCommand::Stop = command {
                return false;
            }
            self.switch
                .handle_command(Instant::now(), command, &mut self.port);
        }
        true
    }
}
