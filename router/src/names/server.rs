//! The DNS server's I/O: UDP and TCP on the host's gateway addresses,
//! queries handed to the [`responder`](super::responder) with the current
//! names, other names forwarded to the host's own resolvers, and held
//! queries asked again until their name has a ready instance.
//!
//! Everything is bounded: queries held, forwards in flight, TCP
//! connections and their idle time, and the log.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::{SeedableRng, rngs::SmallRng};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    time::Instant,
};

use super::{
    records::NamesHandle,
    responder::{self, MAX_UDP, Outcome, Transport, Zone},
};

/// Queries held waiting for a ready instance, at most; beyond, a query
/// that would wait is answered at once.
const MAX_HELD: usize = 1024;
/// Forwards in flight at most, and TCP connections at most.
const MAX_FORWARDS: usize = 256;
const MAX_TCP: usize = 64;
/// How long one upstream resolver gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// A TCP client silent this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often held queries are asked again.
const RECHECK: Duration = Duration::from_millis(25);

/// Counters, for `/metrics` and `weft status dns`.
#[derive(Default, Debug)]
pub struct DnsCounters {
    pub queries: AtomicU64,
    pub answered: AtomicU64,
    pub nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_failed: AtomicU64,
    pub malformed: AtomicU64,
    pub waits: AtomicU64,
    pub waits_answered: AtomicU64,
    pub waits_expired: AtomicU64,
}

impl DnsCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("queries", get(&self.queries)),
            ("answered", get(&self.answered)),
            ("nxdomain", get(&self.nxdomain)),
            ("forwarded", get(&self.forwarded)),
            ("forward_failed", get(&self.forward_failed)),
            ("malformed", get(&self.malformed)),
            ("waits", get(&self.waits)),
            ("waits_answered", get(&self.waits_answered)),
            ("waits_expired", get(&self.waits_expired)),
        ]
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the server needs.
#[derive(Clone)]
pub struct DnsConfig {
    pub zone: Zone,
    /// How long a query for a name with no ready instance is held.
    pub wait: Duration,
    /// The host's resolvers, for names that are not ours.
    pub upstreams: Vec<SocketAddr>,
}

/// The host's resolvers from resolv.conf's text, leaving out `ours` (a
/// resolver that is this server would forward to itself).
pub fn upstreams_from(resolv_conf: &str, ours: &[Ipv4Addr]) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| !matches!(a, IpAddr::V4(v4) if ours.contains(v4)))
        .map(|a| SocketAddr::new(a, 53))
        .take(3)
        .collect()
}

/// The resolvers containers are given by their runtimes, from the texts
/// of the host's resolv.conf files: the IPv4 nameservers that are not
/// loopback (a runtime replaces a loopback resolver, systemd-resolved's
/// stub, by the servers behind it, which is why systemd's own file is
/// read too) and not `ours`.
pub fn container_resolvers(
    texts: &[&str],
    ours: &[Ipv4Addr],
) -> std::collections::BTreeSet<Ipv4Addr> {
    texts
        .iter()
        .flat_map(|text| upstreams_from(text, ours))
        .filter_map(|a| match a.ip() {
            IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
            _ => None,
        })
        .collect()
}

/// Shared by the server's tasks.
struct Server {
    config: DnsConfig,
    names: NamesHandle,
    counters: Arc<DnsCounters>,
    forwards: Semaphore,
}

impl Server {
    fn respond(
        &self,
        query: &[u8],
        transport: Transport,
        waited: bool,
        rng: &mut SmallRng,
    ) -> Outcome {
        let names = self.names.lock();
        responder::respond(&self.config.zone, &*names, query, transport, waited, rng)
    }

    fn count(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Reply(bytes) => {
                // RCODE 3 is NXDOMAIN.
                if bytes.get(3).is_some_and(|b| b & 0x0f == 3) {
                    bump(&self.counters.nxdomain);
                } else {
                    bump(&self.counters.answered);
                }
            }
            Outcome::Drop => bump(&self.counters.malformed),
            Outcome::Forward => bump(&self.counters.forwarded),
            Outcome::Wait(_) => bump(&self.counters.waits),
        }
    }

    /// A held query was answered: because an instance became ready, or
    /// because its wait was `over`.
    fn wait_ended(&self, over: bool) {
        bump(if over {
            &self.counters.waits_expired
        } else {
            &self.counters.waits_answered
        });
    }

    /// Asks the host's resolvers, one after the other.
    async fn forward(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let _permit = self.forwards.try_acquire().ok()?;
        for upstream in &self.config.upstreams {
            let asked = match transport {
                Transport::Udp => forward_udp(*upstream, query).await,
                Transport::Tcp => forward_tcp(*upstream, query).await,
            };
            if let Some(answer) = asked {
                return Some(answer);
            }
        }
        bump(&self.counters.forward_failed);
        None
    }
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; MAX_UDP];
    let n = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    // The answer must be to this query.
    (n >= 2 && buf[..2] == query[..2]).then(|| buf[..n].to_vec())
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await.ok()?;
        write_frame(&mut stream, query).await.ok()?;
        read_frame(&mut stream).await.ok()
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .ok()?
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await
}

/// Serves DNS on port 53 of each address `addresses` holds (the host's
/// gateways), following its changes, while the router runs.
pub async fn follow(
    service: Arc<super::NameService>,
    mut addresses: tokio::sync::watch::Receiver<Vec<Ipv4Addr>>,
    on_listening: impl Fn(&[SocketAddr]) + Send + 'static,
) {
    loop {
        let wanted = addresses.borrow_and_update().clone();
        let mut tasks = tokio::task::JoinSet::new();
        let mut listening = Vec::new();
        for addr in wanted {
            let at = SocketAddr::from((addr, 53));
            let (config, names, counters) = (
                service.config.clone(),
                service.names.clone(),
                service.counters.clone(),
            );
            // Bound here, so that a failure is told now.
            match bind(at).await {
                Ok(sockets) => {
                    listening.push(at);
                    tasks.spawn(serve(sockets, config, names, counters));
                }
                Err(e) => tracing::warn!(
                    address = %at,
                    error = %e,
                    "cannot serve DNS: another server holds port 53 on this address? Stop it, or launch weft with --no-dns"
                ),
            }
        }
        if !listening.is_empty() {
            tracing::info!(addresses = ?listening, domain = %service.domain(), "serving DNS");
        }
        on_listening(&listening);
        *service.listening.lock().unwrap_or_else(|p| p.into_inner()) = listening;
        if addresses.changed().await.is_err() {
            return;
        }
        tasks.shutdown().await;
    }
}

/// The UDP socket and TCP listener of one address.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<Sockets> {
    Ok(Sockets {
        udp: UdpSocket::bind(addr).await?,
        tcp: TcpListener::bind(addr).await?,
    })
}

/// A query held for a ready instance.
struct HeldQuery {
    query: Vec<u8>,
    from: SocketAddr,
    until: Instant,
}

/// Serves DNS on `sockets` until the task is dropped.
pub async fn serve(
    sockets: Sockets,
    config: DnsConfig,
    names: NamesHandle,
    counters: Arc<DnsCounters>,
) -> std::io::Result<()> {
    let Sockets { udp, tcp } = sockets;
    let udp = Arc::new(udp);
    let server = Arc::new(Server {
        config,
        names,
        counters,
        forwards: Semaphore::new(MAX_FORWARDS),
    });
    // Both loops end with this task: the JoinSet of connections aborts
    // them when dropped.
    let accept = async {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = tcp.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    if connections.len() >= MAX_TCP {
                        continue; // dropped: at the limit
                    }
                    let server = server.clone();
                    connections.spawn(async move { serve_tcp(&server, stream).await });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    };
    tokio::select! {
        result = serve_udp(server.clone(), udp) => result,
        () = accept => Ok(()),
    }
}

async fn serve_udp(server: Arc<Server>, udp: Arc<UdpSocket>) -> std::io::Result<()> {
    let mut rng = SmallRng::from_os_rng();
    let mut held: VecDeque<HeldQuery> = VecDeque::new();
    let mut buf = vec![0u8; MAX_UDP];
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        tokio::select! {
            ready = udp.readable() => {
                if ready.is_err() {
                    continue;
                }
                // Everything queued, before waiting again: under load one
                // wake-up serves many queries.
                while let Ok((n, from)) = udp.try_recv_from(&mut buf) {
                    bump(&server.counters.queries);
                    let query = &buf[..n];
                    let outcome = server.respond(query, Transport::Udp, false, &mut rng);
                    server.count(&outcome);
                    match outcome {
                        Outcome::Reply(answer) => send(&udp, &answer, from).await,
                        Outcome::Forward => {
                            let (server, udp, query) = (server.clone(), udp.clone(), query.to_vec());
                            tokio::spawn(async move {
                                let answer = server.forward(&query, Transport::Udp).await;
                                if let Some(answer) = answer.or_else(|| responder::server_failure(&query)) {
                                    send(&udp, &answer, from).await;
                                }
                            });
                        }
                        Outcome::Wait(_) if held.len() < MAX_HELD => held.push_back(HeldQuery {
                            query: query.to_vec(),
                            from,
                            until: Instant::now() + server.config.wait,
                        }),
                        Outcome::Wait(_) => {
                            if let Outcome::Reply(answer) = server.respond(query, Transport::Udp, true, &mut rng) {
                                send(&udp, &answer, from).await;
                            }
                        }
                        Outcome::Drop => {}
                    }
                }
            }
            _ = recheck.tick(), if !held.is_empty() => {
                let now = Instant::now();
                let mut still = VecDeque::new();
                while let Some(h) = held.pop_front() {
                    let over = now >= h.until;
                    match server.respond(&h.query, Transport::Udp, over, &mut rng) {
                        Outcome::Reply(answer) => {
                            server.wait_ended(over);
                            send(&udp, &answer, h.from).await;
                        }
                        Outcome::Wait(_) => still.push_back(h),
                        _ => {}
                    }
                }
                held = still;
            }
        }
    }
}

/// Sends one answer, at once when the socket takes it.
async fn send(udp: &UdpSocket, answer: &[u8], to: SocketAddr) {
    if let Err(e) = udp.try_send_to(answer, to)
        && e.kind() == std::io::ErrorKind::WouldBlock
    {
        let _ = udp.send_to(answer, to).await;
    }
}

async fn serve_tcp(server: &Server, mut stream: TcpStream) {
    let mut rng = SmallRng::from_os_rng();
    loop {
        let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_frame(&mut stream)).await else {
            return;
        };
        bump(&server.counters.queries);
        let until = Instant::now() + server.config.wait;
        let mut outcome = server.respond(&query, Transport::Tcp, false, &mut rng);
        server.count(&outcome);
        let mut held = None;
        while let Outcome::Wait(_) = outcome {
            tokio::time::sleep(RECHECK).await;
            let over = Instant::now() >= until;
            held = Some(over);
            outcome = server.respond(&query, Transport::Tcp, over, &mut rng);
        }
        if let Some(over) = held {
            server.wait_ended(over);
        }
        let answer = match outcome {
            Outcome::Reply(answer) => Some(answer),
            Outcome::Forward => match server.forward(&query, Transport::Tcp).await {
                Some(answer) => Some(answer),
                None => responder::server_failure(&query),
            },
            _ => None,
        };
        match answer {
            Some(answer) => {
                if write_frame(&mut stream, &answer).await.is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_given_the_servers_behind_a_loopback_stub() {
        let stub = "nameserver 127.0.0.53\noptions edns0\n";
        let systemd = "nameserver 192.0.2.53\nnameserver 10.32.0.1\nnameserver 2001:db8::53\n";
        let ours = [Ipv4Addr::new(10, 32, 0, 1)];
        assert_eq!(
            container_resolvers(&[stub, systemd], &ours),
            [Ipv4Addr::new(192, 0, 2, 53)].into(),
            "not the stub, not ourselves, not IPv6"
        );
        assert!(container_resolvers(&["", ""], &ours).is_empty());
    }

    #[test]
    fn upstreams_skip_ourselves_and_junk() {
        let conf = "# comment\nnameserver 10.32.0.1\nnameserver 192.0.2.53\nsearch example\nnameserver bogus\nnameserver fd00::53\n";
        let ours = [Ipv4Addr::new(10, 32, 0, 1)];
        assert_eq!(
            upstreams_from(conf, &ours),
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
    }
}
