//! Frames from many simulated containers: one raw socket in a container
//! sends from thousands of source MACs to one destination, so the fast
//! datapath sees that many MAC pairs (its flows are per pair).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{Error, Netns, Result};

/// An EtherType no stack answers (IEEE's second local experimental one;
/// weft's heartbeats use the first).
const ETHER_TYPE: u16 = 0x88b6;

/// A running sender; [`MacChurn::stop`] ends it.
pub struct MacChurn {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Result<u64>>>,
}

impl MacChurn {
    /// Starts sending `rate` frames a second out of `dev` in `ns` to the
    /// MAC `dst` ("aa:bb:..."), from `pairs` source MACs in turn
    /// (`02:fe:00:xx:xx:xx`), so each pair recurs every `pairs / rate`
    /// seconds.
    pub fn start(ns: &Netns, dev: &str, dst: &str, pairs: u32, rate: u32) -> Result<MacChurn> {
        let dst = parse_mac(dst)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let dev = dev.to_string();
        let thread = ns.spawn_thread(move || send(&dev, dst, pairs.max(1), rate, &flag))?;
        Ok(MacChurn { stop, thread })
    }

    /// Stops sending; how many frames went.
    pub fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| Error::ThreadPanicked("mac churn".into()))??
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Spec(format!("MAC {text}: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| Error::Spec(format!("MAC {text}: not six bytes")))
}

fn send(dev: &str, dst: [u8; 6], pairs: u32, rate: u32, stop: &AtomicBool) -> Result<u64> {
    let failed = |what: &str| Error::io(format!("{what} for the MAC churn on {dev}"));
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETHER_TYPE.to_be()),
        )
    };
    if fd < 0 {
        return Err(failed("AF_PACKET socket")(std::io::Error::last_os_error()));
    }
    let name = std::ffi::CString::new(dev).map_err(|e| Error::Spec(e.to_string()))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETHER_TYPE.to_be();
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    let mut frame = [0u8; 64];
    frame[..6].copy_from_slice(&dst);
    frame[12..14].copy_from_slice(&ETHER_TYPE.to_be_bytes());
    let started = Instant::now();
    let (mut sent, mut pair) = (0u64, 0u32);
    while !stop.load(Ordering::Relaxed) {
        // Paced against the start, so a slow moment is made up rather than
        // lost: as many frames as `rate` says are due by now.
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent < due {
            let [_, a, b, c] = pair.to_be_bytes();
            frame[6..12].copy_from_slice(&[0x02, 0xfe, 0, a, b, c]);
            pair = (pair + 1) % pairs;
            // SAFETY: the frame and the address outlive the call.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n <= 0 {
                break;
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: ours, closed once.
    unsafe { libc::close(fd) };
    Ok(sent)
}
