//! Connections network policy dropped, told in the router's log: the drop
//! rules also send the packet's headers (rate-limited by the kernel) to
//! an NFLOG group, and this module reads them there (netlink, the
//! netfilter family), names the container and the policies that isolate
//! it, and logs at most [`LINES_PER_SECOND`] lines a second, with a count
//! of those it left out.
//!
//! The message parser is pure and fuzzed; the socket is the edge.

use std::net::Ipv4Addr;

pub use weft_policy::nft::{LOG_GROUP as GROUP, log_prefix as prefix};
/// Most lines logged per second; the rest are counted.
pub const LINES_PER_SECOND: u32 = 10;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Bytes of each packet copied: an IPv4 header with options and the
/// ports.
const COPY_RANGE: u32 = 64;

/// The netlink message type of NFLOG's configuration messages.
pub fn config_type() -> u16 {
    (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG
}

/// The netlink message type of a logged packet.
pub fn packet_type() -> u16 {
    (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The payloads that bind this socket to `group` and ask for packets'
/// first bytes: nfgenmsg (family unspecified, version 0, the group in
/// network order) and one attribute each.
pub fn config_payloads(group: u16) -> [Vec<u8>; 2] {
    let header = |out: &mut Vec<u8>| {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&group.to_be_bytes());
    };
    let mut bind = Vec::new();
    header(&mut bind);
    attr(&mut bind, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]);
    let mut mode = Vec::new();
    header(&mut mode);
    let mut m = COPY_RANGE.to_be_bytes().to_vec();
    m.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    attr(&mut mode, NFULA_CFG_MODE, &m);
    [bind, mode]
}

/// What a drop rule logged: its prefix (direction and container) and the
/// packet's addresses and ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub prefix: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// 6 TCP, 17 UDP, 132 SCTP, 1 ICMP...
    pub protocol: u8,
    pub ports: Option<(u16, u16)>,
}

/// Parses the payload of an NFLOG packet message (after the netlink
/// header); `None` for anything else or anything malformed.
pub fn parse(payload: &[u8]) -> Option<Dropped> {
    let mut rest = payload.get(4..)?;
    let (mut prefix, mut packet) = (None, None);
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        match kind {
            NFULA_PREFIX => {
                let text = value.split(|b| *b == 0).next()?;
                prefix = Some(String::from_utf8_lossy(text).into_owned());
            }
            NFULA_PAYLOAD => packet = Some(value),
            _ => {}
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    let packet = packet?;
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    let protocol = packet[9];
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    let ports = matches!(protocol, 6 | 17 | 132)
        .then(|| {
            let p = packet.get(header_len..header_len + 4)?;
            Some((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
            ))
        })
        .flatten();
    Some(Dropped {
        prefix: prefix?,
        src,
        dst,
        protocol,
        ports,
    })
}

/// The direction and container a prefix names.
pub fn parse_prefix(prefix: &str) -> Option<(&str, Ipv4Addr)> {
    let mut words = prefix.strip_prefix("weft-policy ")?.split_whitespace();
    let direction = words.next()?;
    let addr = words.next()?.parse().ok()?;
    Some((direction, addr))
}

/// The line a drop is logged as.
pub fn describe(d: &Dropped, container: &str, isolated_by: &[String]) -> String {
    let proto = match d.protocol {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        132 => "sctp".to_string(),
        1 => "icmp".to_string(),
        n => format!("protocol {n}"),
    };
    let (direction, peer, port) = match parse_prefix(&d.prefix) {
        Some(("out", _)) => ("egress", d.dst, d.ports.map(|p| p.1)),
        _ => ("ingress", d.src, d.ports.map(|p| p.1)),
    };
    let port = port.map(|p| format!("/{p}")).unwrap_or_default();
    let by = if isolated_by.is_empty() {
        String::new()
    } else {
        format!(", isolated by {}", isolated_by.join(", "))
    };
    format!("{direction} of {container}: {peer} {proto}{port} dropped{by}")
}

/// At most [`LINES_PER_SECOND`] a second; says how many it held back.
#[derive(Default)]
pub struct LineBudget {
    second: u64,
    used: u32,
    held: u64,
}

impl LineBudget {
    /// Whether a line may go now (`now_s`: seconds of any clock); with
    /// it, how many were held back since the last one that went.
    pub fn take(&mut self, now_s: u64) -> Option<u64> {
        if now_s != self.second {
            self.second = now_s;
            self.used = 0;
        }
        if self.used >= LINES_PER_SECOND {
            self.held += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests;

/// Reads what the drop rules log, until the process ends; `lookup` names
/// the container at an address and the policies isolating it in a
/// direction (`true`: egress). Run on a thread of its own.
pub fn run(lookup: impl Fn(Ipv4Addr, bool) -> Option<(String, Vec<String>)>) {
    use neli::{
        consts::{nl::NlmF, socket::NlFamily},
        nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder},
        socket::synchronous::NlSocketHandle,
        types::Buffer,
        utils::Groups,
    };
    let socket = match NlSocketHandle::connect(NlFamily::Netfilter, None, Groups::empty()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read policy drops from NFLOG: they are counted, not logged");
            return;
        }
    };
    for payload in config_payloads(GROUP) {
        let message: Result<Nlmsghdr<u16, Buffer>, _> = NlmsghdrBuilder::default()
            .nl_type(config_type())
            .nl_flags(NlmF::REQUEST)
            .nl_payload(NlPayload::Payload(Buffer::from(payload)))
            .build();
        let sent = message
            .map_err(|e| e.to_string())
            .and_then(|m| socket.send(&m).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot bind NFLOG group {GROUP}: policy drops are counted, not logged");
            return;
        }
    }
    let mut budget = LineBudget::default();
    let started = std::time::Instant::now();
    loop {
        let batch = match socket.recv::<u16, Buffer>() {
            Ok((batch, _)) => batch,
            Err(e) => {
                tracing::debug!(error = %e, "NFLOG read failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        for message in batch.into_iter().flatten() {
            if *message.nl_type() != packet_type() {
                continue;
            }
            let NlPayload::Payload(bytes) = message.nl_payload() else {
                continue;
            };
            let Some(dropped) = parse(bytes.as_ref()) else {
                continue;
            };
            let Some((direction, addr)) = parse_prefix(&dropped.prefix) else {
                continue;
            };
            let (container, isolated_by) =
                lookup(addr, direction == "out").unwrap_or_else(|| (addr.to_string(), Vec::new()));
            if let Some(held) = budget.take(started.elapsed().as_secs()) {
                let line = describe(&dropped, &container, &isolated_by);
                if held > 0 {
                    tracing::warn!(held_back = held, "policy dropped a connection: {line}");
                } else {
                    tracing::warn!("policy dropped a connection: {line}");
                }
            }
        }
    }
}
