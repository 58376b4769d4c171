//! One control connection: the handshake, then records in both directions
//! and heartbeats, until either side closes it. All decisions about the
//! connection are the mesh's; this task only moves bytes.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    time::{Instant, sleep_until, timeout},
};
use weft_crypto::{
    DataKeys, Established, FrameDecoder, Handshake, HandshakeError, Hello, Password,
    RecordReceiver, RecordSender, Role, handshake::MAX_HANDSHAKE_FRAME, record::MAX_FRAME,
};

use crate::{
    identity::PeerIdentity,
    liveness::{Beat, Liveness},
    mesh::{ConnId, ControlMessage},
};

/// The handshake must be over within this; a peer that stalls is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// An incoming connection's handshake must be over sooner: a real peer
/// sends its hello at once, and a place held by one that stalls is a
/// place a real peer cannot have.
pub const INBOUND_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(8);
/// Control protocol versions this router speaks: 3 adds the data path
/// offer that names a vxlan device (`ControlMessage::DataPathOffer`).
pub const PROTOCOL: (u16, u16) = (2, 3);
/// Outgoing messages queued per connection before the peer counts as
/// stuck and is dropped.
pub const SEND_QUEUE: usize = 1024;

/// What a connection task tells the router.
#[derive(Debug)]
pub enum Event {
    Established {
        conn: ConnId,
        peer: PeerIdentity,
        /// Where the peer accepts control connections.
        address: SocketAddr,
        /// Our end of the connection.
        local: SocketAddr,
        outbound: bool,
        target: Option<SocketAddr>,
        /// Keys for the data path; `None` on a mesh without a password.
        data_keys: Option<DataKeys>,
        /// The control protocol version both ends speak.
        version: u16,
        commands: mpsc::Sender<ConnCommand>,
    },
    /// An attempt that never got established.
    Failed {
        conn: ConnId,
        remote: SocketAddr,
        target: Option<SocketAddr>,
        peer: Option<PeerIdentity>,
        reason: String,
        refused: bool,
    },
    Received {
        conn: ConnId,
        message: ControlMessage,
    },
    Closed {
        conn: ConnId,
        reason: String,
    },
}

/// What the router tells a connection task.
#[derive(Debug)]
pub enum ConnCommand {
    Send(ControlMessage),
    /// Close, first telling the peer why if `refuse`.
    Close {
        reason: String,
        refuse: bool,
    },
}

/// What every connection task needs to know.
#[derive(Clone)]
pub struct Context {
    pub identity: PeerIdentity,
    /// The gossip channels' admission tokens, kept current by the router
    /// task and shown to peers in the handshake.
    pub admission: std::sync::Arc<std::sync::RwLock<crate::mesh::channel::Admission>>,
    pub password: Option<Password>,
    pub events: mpsc::Sender<Event>,
}

fn refused(error: &HandshakeError) -> bool {
    !matches!(error, HandshakeError::Malformed(_))
}

/// Connects to `target` and runs the connection.
pub async fn outbound(conn: ConnId, target: SocketAddr, ctx: Context) {
    let stream = match timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return fail(
                &ctx,
                conn,
                target,
                Some(target),
                None,
                format!("connect: {e}"),
                false,
            )
            .await;
        }
        Err(_) => {
            return fail(
                &ctx,
                conn,
                target,
                Some(target),
                None,
                "connect: timed out".into(),
                false,
            )
            .await;
        }
    };
    run(conn, stream, target, Some(target), ctx).await;
}

/// Runs a connection a peer made to us.
pub async fn inbound(conn: ConnId, stream: TcpStream, remote: SocketAddr, ctx: Context) {
    run(conn, stream, remote, None, ctx).await;
}

async fn fail(
    ctx: &Context,
    conn: ConnId,
    remote: SocketAddr,
    target: Option<SocketAddr>,
    peer: Option<PeerIdentity>,
    reason: String,
    refused: bool,
) {
    let _ = ctx
        .events
        .send(Event::Failed {
            conn,
            remote,
            target,
            peer,
            reason,
            refused,
        })
        .await;
}

async fn run(
    conn: ConnId,
    mut stream: TcpStream,
    remote: SocketAddr,
    target: Option<SocketAddr>,
    ctx: Context,
) {
    let _ = stream.set_nodelay(true);
    let role = if target.is_some() {
        Role::Initiator
    } else {
        Role::Responder
    };
    let hello = Hello {
        min_version: PROTOCOL.0,
        max_version: PROTOCOL.1,
        encryption: false,
        // Set by the handshake.
        nonce: [0; weft_crypto::hello::NONCE_LEN],
        identity: {
            let mut identity = ctx.identity.clone();
            identity.admission = ctx
                .admission
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            identity.encode()
        },
    };
    let mut decoder = FrameDecoder::new(MAX_HANDSHAKE_FRAME);
    let deadline = match role {
        Role::Initiator => HANDSHAKE_TIMEOUT,
        Role::Responder => INBOUND_HANDSHAKE_TIMEOUT,
    };
    let established = timeout(
        deadline,
        handshake(&mut stream, &mut decoder, role, hello, ctx.password.clone()),
    )
    .await;
    let established = match established {
        Ok(Ok(e)) => e,
        Ok(Err((reason, refused, claimed))) => {
            let peer = claimed.and_then(|hello| PeerIdentity::decode(&hello.identity).ok());
            return fail(&ctx, conn, remote, target, peer, reason, refused).await;
        }
        Err(_) => {
            return fail(
                &ctx,
                conn,
                remote,
                target,
                None,
                "handshake timed out".into(),
                false,
            )
            .await;
        }
    };
    let peer = match PeerIdentity::decode(&established.peer.identity) {
        Ok(peer) => peer,
        Err(e) => return fail(&ctx, conn, remote, target, None, e, false).await,
    };
    let address = SocketAddr::new(remote.ip(), peer.listen_port);
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            let reason = format!("connection: {e}");
            return fail(&ctx, conn, remote, target, Some(peer), reason, false).await;
        }
    };
    let (commands, command_rx) = mpsc::channel(SEND_QUEUE);
    let event = Event::Established {
        conn,
        peer,
        address,
        local,
        outbound: target.is_some(),
        target,
        data_keys: established.data_keys.clone(),
        version: established.version,
        commands,
    };
    if ctx.events.send(event).await.is_err() {
        return;
    }
    decoder.set_max(MAX_FRAME);
    let reason = records(conn, stream, decoder, established, command_rx, &ctx).await;
    let _ = ctx.events.send(Event::Closed { conn, reason }).await;
}

/// Why a handshake failed: the reason, whether the peer actively refused
/// (as opposed to a broken or garbled connection), and who it claimed to be.
type HandshakeFailure = (String, bool, Option<Hello>);

/// Runs the handshake.
async fn handshake(
    stream: &mut TcpStream,
    decoder: &mut FrameDecoder,
    role: Role,
    hello: Hello,
    password: Option<Password>,
) -> Result<Established, HandshakeFailure> {
    let (mut hs, first) = Handshake::new(role, hello, password);
    let io_err = |e: std::io::Error, hs: &Handshake| {
        (format!("connection: {e}"), false, hs.peer_hello().cloned())
    };
    stream.write_all(&first).await.map_err(|e| io_err(e, &hs))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| io_err(e, &hs))?;
        if n == 0 {
            let reason = "the peer closed the connection during the handshake".to_string();
            return Err((reason, false, hs.peer_hello().cloned()));
        }
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder
            .next_frame()
            .map_err(|e| (format!("handshake: {e}"), false, hs.peer_hello().cloned()))?
        {
            match hs.handle(&frame) {
                Ok(step) => {
                    for out in step.send {
                        stream.write_all(&out).await.map_err(|e| io_err(e, &hs))?;
                    }
                    if let Some(established) = step.established {
                        return Ok(established);
                    }
                }
                Err(failure) => {
                    if let Some(notice) = failure.notice {
                        let _ = stream.write_all(&notice).await;
                    }
                    let refused = refused(&failure.error);
                    return Err((failure.error.to_string(), refused, hs.peer_hello().cloned()));
                }
            }
        }
    }
}

/// The established phase; returns why it ended.
async fn records(
    conn: ConnId,
    stream: TcpStream,
    mut decoder: FrameDecoder,
    established: Established,
    mut commands: mpsc::Receiver<ConnCommand>,
    ctx: &Context,
) -> String {
    let Established {
        mut sender,
        mut receiver,
        ..
    } = established;
    let (mut reader, mut writer) = stream.into_split();
    let now = std::time::Instant::now();
    let mut liveness = Liveness::new(now, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT);
    // The handshake's last frame just went out.
    liveness.sent(now);
    let mut buf = vec![0u8; 64 * 1024];
    // Frames that arrived with the last handshake frame.
    if let Err(reason) = deliver(conn, &mut decoder, &mut receiver, &mut liveness, ctx).await {
        return reason;
    }
    loop {
        let deadline = Instant::from_std(liveness.deadline());
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return match decoder.finish() {
                    Ok(()) => "the peer closed the connection".into(),
                    Err(e) => format!("the peer closed the connection mid-record: {e}"),
                },
                Ok(n) => {
                    decoder.push(&buf[..n]);
                    if let Err(reason) = deliver(conn, &mut decoder, &mut receiver, &mut liveness, ctx).await {
                        return reason;
                    }
                }
                Err(e) => return format!("connection: {e}"),
            },
            command = commands.recv() => match command {
                Some(ConnCommand::Send(message)) => {
                    if let Err(reason) = send(&mut writer, &mut sender, &message).await {
                        return reason;
                    }
                    liveness.sent(std::time::Instant::now());
                }
                Some(ConnCommand::Close { reason, refuse }) => {
                    if refuse {
                        let _ = send(&mut writer, &mut sender, &ControlMessage::Refuse { reason: reason.clone() }).await;
                    }
                    let _ = writer.shutdown().await;
                    return reason;
                }
                None => return "the router stopped".into(),
            },
            _ = sleep_until(deadline) => match liveness.poll(std::time::Instant::now()) {
                Some(Beat::Dead) => return format!("no heartbeat from the peer for {:?}", liveness.timeout()),
                Some(Beat::Send) => {
                    if let Err(reason) = send(&mut writer, &mut sender, &ControlMessage::Heartbeat).await {
                        return reason;
                    }
                    liveness.sent(std::time::Instant::now());
                }
                None => {}
            },
        }
    }
}

async fn send(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    sender: &mut RecordSender,
    message: &ControlMessage,
) -> Result<(), String> {
    let frame = sender.seal(&message.encode()).map_err(|e| e.to_string())?;
    writer
        .write_all(&frame)
        .await
        .map_err(|e| format!("connection: {e}"))
}

/// Passes every complete record in the decoder on to the router.
async fn deliver(
    conn: ConnId,
    decoder: &mut FrameDecoder,
    receiver: &mut RecordReceiver,
    liveness: &mut Liveness,
    ctx: &Context,
) -> Result<(), String> {
    while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
        let bytes = receiver.open(frame).map_err(|e| e.to_string())?;
        let message = ControlMessage::decode(&bytes)?;
        liveness.received(std::time::Instant::now());
        if !matches!(message, ControlMessage::Heartbeat) {
            ctx.events
                .send(Event::Received { conn, message })
                .await
                .map_err(|_| "the router stopped".to_string())?;
        }
    }
    Ok(())
}
