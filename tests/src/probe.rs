use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{Error, Netns, Result};

/// How long a probe datagram may take to arrive before the path counts as
/// blocked; generous, since the underlay is local and an idle one answers in
/// microseconds.
const UDP_PROBE_WAIT: Duration = Duration::from_secs(2);
const UDP_PROBE_TRIES: usize = 5;
const TCP_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a UDP datagram sent from `from` reaches `to_addr:port`, received
/// by a socket inside `to`.
pub fn udp_probe(from: &Netns, to: &Netns, to_addr: Ipv4Addr, port: u16) -> Result<bool> {
    let nonce: u64 = rand::random();
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = to.spawn_thread(move || -> Result<bool> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))
            .map_err(Error::io(format!("bind UDP port {port} for the probe")))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(Error::io("set probe timeout"))?;
        let _ = ready_tx.send(());
        let deadline = Instant::now() + UDP_PROBE_WAIT;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            match socket.recv(&mut buf) {
                Ok(8) if buf[..8] == nonce.to_be_bytes() => return Ok(true),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(Error::io("receive probe")(e)),
            }
        }
        Ok(false)
    })?;
    if ready_rx.recv().is_ok() {
        from.in_thread(move || -> Result<()> {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .map_err(Error::io("bind UDP probe sender"))?;
            for _ in 0..UDP_PROBE_TRIES {
                // A send can fail on a blocked path (EPERM from nftables
                // output hooks); the receiver decides the verdict.
                let _ = socket.send_to(&nonce.to_be_bytes(), (to_addr, port));
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        })??;
    }
    receiver
        .join()
        .map_err(|_| Error::ThreadPanicked(to.name().to_string()))??
}

/// Byte `i` of a transfer: varies within and across 256-byte blocks, so a
/// reordered, duplicated or dropped segment shows up as a mismatch.
fn pattern(i: u64) -> u8 {
    (i ^ (i >> 8) ^ (i >> 16)) as u8
}

/// Sends `bytes` over TCP from `from` to a listener at `to_addr:port` in
/// `to`, checks every byte arrived intact and in order, and returns how long
/// the transfer took.
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_addr: Ipv4Addr,
    port: u16,
    bytes: u64,
) -> Result<Duration> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = to.spawn_thread(move || -> Result<u64> {
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port))
            .map_err(Error::io(format!("listen on TCP port {port}")))?;
        let _ = ready_tx.send(());
        let mut stream = accept_within(&listener, TCP_TIMEOUT)?;
        stream
            .set_read_timeout(Some(TCP_TIMEOUT))
            .map_err(Error::io("set read timeout"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        loop {
            let n = stream
                .read(&mut buf)
                .map_err(Error::io("receive transfer"))?;
            if n == 0 {
                return Ok(received);
            }
            if let Some(at) = (0..n).find(|&k| buf[k] != pattern(received + k as u64)) {
                return Err(Error::Spec(format!(
                    "transfer corrupted at byte {}",
                    received + at as u64
                )));
            }
            received += n as u64;
        }
    })?;
    ready_rx
        .recv()
        .map_err(|_| Error::Spec("TCP receiver did not start".to_string()))?;
    let started = Instant::now();
    from.in_thread(move || -> Result<()> {
        let addr = SocketAddr::from((to_addr, port));
        let mut stream = TcpStream::connect_timeout(&addr, TCP_TIMEOUT)
            .map_err(Error::io(format!("connect to {addr}")))?;
        stream
            .set_write_timeout(Some(TCP_TIMEOUT))
            .map_err(Error::io("set write timeout"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(buf.len() as u64) as usize;
            for (k, byte) in buf[..n].iter_mut().enumerate() {
                *byte = pattern(sent + k as u64);
            }
            stream
                .write_all(&buf[..n])
                .map_err(Error::io("send transfer"))?;
            sent += n as u64;
        }
        stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(Error::io("finish transfer"))
    })??;
    let received = receiver
        .join()
        .map_err(|_| Error::ThreadPanicked(to.name().to_string()))???;
    if received != bytes {
        return Err(Error::Spec(format!(
            "sent {bytes} bytes, {received} arrived"
        )));
    }
    Ok(started.elapsed())
}

/// `accept` with a deadline, so a sender that never connects cannot leave the
/// receiving thread (and with it the namespace) alive.
fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<TcpStream> {
    listener
        .set_nonblocking(true)
        .map_err(Error::io("make listener non-blocking"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(Error::io("make stream blocking"))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::io("accept transfer connection")(e)),
        }
    }
}

/// A listener on `port`, bound again for a while if the port is still
/// taken: an earlier listener on it, closed by now, can live on in a child
/// that another test thread forked while it was open (until that child
/// execs), and under emulation that takes long enough to be seen.
fn bind_again_and_again(port: u16) -> Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
            Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            bound => return bound.map_err(Error::io(format!("listen on TCP port {port}"))),
        }
    }
}

/// Opens a TCP connection from `from` to a listener at `to_addr:port` in
/// `to` and returns the source address the listener saw. The listener
/// writes that address back and the client checks it arrived, so the reply
/// path is proven too (a translated connection answers through the
/// translation).
pub fn tcp_seen_source(from: &Netns, to: &Netns, to_addr: Ipv4Addr, port: u16) -> Result<Ipv4Addr> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let listener = to.spawn_thread(move || -> Result<Ipv4Addr> {
        let listener = bind_again_and_again(port)?;
        let _ = ready_tx.send(());
        let mut stream = accept_within(&listener, TCP_TIMEOUT)?;
        let seen = match stream.peer_addr().map_err(Error::io("peer address"))? {
            SocketAddr::V4(v4) => *v4.ip(),
            SocketAddr::V6(v6) => return Err(Error::Spec(format!("IPv6 peer {v6}"))),
        };
        stream
            .write_all(seen.to_string().as_bytes())
            .map_err(Error::io("answer"))?;
        Ok(seen)
    })?;
    if ready_rx.recv().is_err() {
        // The listener gave up before listening: its own error says why.
        let why = match listener.join() {
            Ok(Ok(Err(e)) | Err(e)) => e.to_string(),
            Ok(Ok(Ok(_))) => "it returned without listening".to_string(),
            Err(_) => "it panicked".to_string(),
        };
        return Err(Error::Spec(format!(
            "TCP listener on {}:{port} did not start: {why}",
            to.name()
        )));
    }
    let answered = from.in_thread(move || -> Result<String> {
        let addr = SocketAddr::from((to_addr, port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(Error::io(format!("connect to {addr}")))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(Error::io("set read timeout"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(Error::io("read the answer"))?;
        Ok(answer)
    })?;
    let seen = listener
        .join()
        .map_err(|_| Error::ThreadPanicked(to.name().to_string()))???;
    let answered = answered?;
    if answered != seen.to_string() {
        return Err(Error::Spec(format!(
            "the listener saw {seen} but the client read {answered:?}"
        )));
    }
    Ok(seen)
}

/// What crossed the underlay switch (`br0`) while `during` ran, as a pcap
/// file's bytes; `filter` is tcpdump's.
pub fn capture(tb: &crate::Testbed, filter: &str, during: impl FnOnce()) -> Result<Vec<u8>> {
    let pcap = std::env::temp_dir().join(format!(
        "weft-capture-{}-{:x}.pcap",
        tb.name(),
        rand::random::<u32>()
    ));
    let pcap_str = pcap.to_str().expect("a UTF-8 temp path").to_string();
    let mut argv = vec![
        "tcpdump",
        "-i",
        "br0",
        "-U",
        "--immediate-mode",
        "-w",
        &pcap_str,
    ];
    argv.extend(filter.split_whitespace());
    let dump = tb.spawn(&tb.underlay(), "tcpdump", argv)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dump.log().contains("listening") {
        if Instant::now() > deadline {
            return Err(Error::Spec(format!(
                "tcpdump did not start: {}",
                dump.log()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    during();
    std::thread::sleep(Duration::from_millis(500));
    drop(dump);
    let bytes = std::fs::read(&pcap).map_err(Error::io(format!("read {}", pcap.display())))?;
    let _ = std::fs::remove_file(&pcap);
    Ok(bytes)
}

/// Every reply's round trip in ms, and how many of `count` were lost.
pub fn ping(from: &Netns, to: &str, count: usize, interval: &str) -> (Vec<f64>, usize) {
    let count_arg = count.to_string();
    let out = from
        .command([
            "ping", "-n", "-c", &count_arg, "-i", interval, "-W", "2", to,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    let lost = count - rtts.len().min(count);
    (rtts, lost)
}
