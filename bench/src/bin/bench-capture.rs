//! How should the router see its bridge: a TAP port, or an AF_PACKET
//! socket with a memory-mapped ring on a bridge port? This measures both
//! on the same traffic: a container floods 1400-byte UDP datagrams to an
//! unknown MAC, the bridge copies each to every port, and each reader
//! counts what it gets in the same time. (For TCP the TAP has the bigger
//! advantage: with offloads the kernel hands it 64 KiB super-frames; see
//! bench-datapath.)

use std::{
    net::UdpSocket,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bench::Row;
use clap::Parser;
use testbed::{Netns, Spec, Testbed};
use weft_router::netdev::tap::Tap;

#[derive(Parser)]
#[command(about = "TAP against AF_PACKET (TPACKET_V3) for capturing bridge frames")]
struct Args {
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Floods datagrams from the container until `stop`.
fn generator(
    container: &Netns,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<testbed::Result<u64>> {
    container
        .spawn_thread(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_nonblocking(true).unwrap();
            let payload = [0x5au8; 1400];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if s.send_to(&payload, "10.77.0.99:9").is_ok() {
                    sent += 1;
                }
            }
            sent
        })
        .unwrap()
}

fn tap_rate(tb: &Testbed, seconds: u64) -> f64 {
    let host = tb.host(1);
    let tap = host.in_thread(|| Tap::open("cap0").unwrap()).unwrap();
    host.ip(["link", "set", "dev", "cap0", "master", "br9", "up"])
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let gen_thread = generator(&tb.container(1, 1), stop.clone());
    let mut buf = vec![0u8; 65536];
    let fd = tap.file().as_raw_fd();
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        // SAFETY: reads into a buffer we own.
        if unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {
            frames += 1;
        }
    }
    let rate = frames as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = gen_thread.join();
    drop(tap);
    rate
}

/// `struct tpacket_req3`.
#[repr(C)]
struct Req3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

const BLOCK_SIZE: u32 = 1 << 20;
const BLOCKS: u32 = 32;
const TP_STATUS_USER: u32 = 1;

fn packet_rate(tb: &Testbed, seconds: u64) -> f64 {
    let host = tb.host(1);
    host.ip(["link", "add", "pk0", "type", "veth", "peer", "name", "pk1"])
        .unwrap();
    host.ip(["link", "set", "dev", "pk0", "master", "br9", "up"])
        .unwrap();
    host.ip(["link", "set", "dev", "pk1", "up"]).unwrap();
    let index = host
        .in_thread(|| unsafe { libc::if_nametoindex(c"pk1".as_ptr()) })
        .unwrap();
    let sock = host
        .in_thread(|| {
            // SAFETY: plain socket creation; we own the descriptor.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: fd was just created.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .unwrap();
    let fd = sock.as_raw_fd();
    let set = |name: libc::c_int, value: *const libc::c_void, len: usize| {
        // SAFETY: the caller passes a pointer to a value of `len` bytes.
        let rc =
            unsafe { libc::setsockopt(fd, libc::SOL_PACKET, name, value, len as libc::socklen_t) };
        assert_eq!(
            rc,
            0,
            "setsockopt {name}: {}",
            std::io::Error::last_os_error()
        );
    };
    let version: libc::c_int = 2; // TPACKET_V3
    set(10, (&version as *const libc::c_int).cast(), 4); // PACKET_VERSION
    let req = Req3 {
        block_size: BLOCK_SIZE,
        block_nr: BLOCKS,
        frame_size: 2048,
        frame_nr: BLOCK_SIZE / 2048 * BLOCKS,
        retire_blk_tov: 10,
        sizeof_priv: 0,
        feature_req_word: 0,
    };
    set(5, (&req as *const Req3).cast(), std::mem::size_of::<Req3>()); // PACKET_RX_RING
    let len = (BLOCK_SIZE * BLOCKS) as usize;
    // SAFETY: maps the ring the kernel just set up for this socket.
    let ring = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(
        ring,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: zeroed sockaddr_ll is valid; we set family, protocol, index.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: binds our socket to an address we own.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());

    let stop = Arc::new(AtomicBool::new(false));
    let gen_thread = generator(&tb.container(1, 1), stop.clone());
    let start = Instant::now();
    let mut frames = 0u64;
    let mut block = 0usize;
    while start.elapsed() < Duration::from_secs(seconds) {
        // SAFETY: block headers lie within the mapped ring; the kernel and
        // we hand blocks over through their status word.
        unsafe {
            let desc = (ring as *mut u8).add(block * BLOCK_SIZE as usize);
            let status = desc.add(8).cast::<u32>();
            if std::ptr::read_volatile(status) & TP_STATUS_USER == 0 {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                libc::poll(&mut pfd, 1, 10);
                continue;
            }
            frames += u64::from(std::ptr::read_volatile(desc.add(12).cast::<u32>()));
            std::ptr::write_volatile(status, 0);
        }
        block = (block + 1) % BLOCKS as usize;
    }
    let rate = frames as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = gen_thread.join();
    // SAFETY: unmapping what we mapped, no longer used.
    unsafe { libc::munmap(ring, len) };
    host.ip(["link", "del", "pk0"]).unwrap();
    rate
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let tb = Testbed::create_owned("benchcap", Spec::hosts(1).containers(1))
        .map_err(|e| e.to_string())?;
    let (host, c) = (tb.host(1), tb.container(1, 1));
    let ip = |ns: &Netns, a: &[&str]| ns.ip(a).map_err(|e| e.to_string());
    ip(&host, &["link", "add", "br9", "type", "bridge"])?;
    ip(&host, &["link", "set", "dev", "br9", "up"])?;
    ip(
        &host,
        &[
            "link",
            "add",
            "gen1",
            "type",
            "veth",
            "peer",
            "name",
            "gen0",
            "netns",
            c.name(),
        ],
    )?;
    ip(
        &host,
        &["link", "set", "dev", "gen1", "master", "br9", "up"],
    )?;
    ip(&c, &["addr", "add", "10.77.0.1/24", "dev", "gen0"])?;
    ip(&c, &["link", "set", "dev", "gen0", "up"])?;
    ip(
        &c,
        &[
            "neigh",
            "add",
            "10.77.0.99",
            "lladdr",
            "02:00:00:77:00:99",
            "dev",
            "gen0",
        ],
    )?;
    let (mut tap, mut packet) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        tap.push(tap_rate(&tb, args.seconds));
        packet.push(packet_rate(&tb, args.seconds));
    }
    eprintln!("TAP {tap:?} frames/s, AF_PACKET ring {packet:?} frames/s");
    let row = Row::new(
        "capture",
        "1400-byte UDP frames flooded on a bridge, one reader",
        "frames read per second: TAP vs AF_PACKET TPACKET_V3 ring",
        "frames/s",
        &tap,
    )
    .against_paired(&packet, "AF_PACKET (value: TAP)");
    println!("{}\n{}", Row::markdown_header(), row.markdown());
    Ok(())
}
