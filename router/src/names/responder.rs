//! What the DNS server answers, decided with no I/O: a query's bytes in,
//! an answer's bytes out (or "forward it", or "hold it until an instance
//! is ready"). The wire format is hickory-proto's; the decisions are
//! ours.
//!
//! - A names of the mesh's domain: one ready instance per answer, chosen
//!   at random, with a short TTL, so that clients spread over them (a
//!   shuffled list would not spread glibc's clients, which all take the
//!   address nearest by prefix).
//! - AAAA (and any other type) of a known name: no error, no answer (RFC
//!   4074); of an unknown name: NXDOMAIN.
//! - A single label that is a name of the mesh answers as that name (what
//!   Docker's embedded resolver passes on).
//! - PTR of a container's address: its names. Anything else is forwarded
//!   to the host's resolvers.
//! - A known name whose instances declared a port none listens on yet is
//!   held (AppSwitch's dependency ordering) until one does or the wait is
//!   over, and then NXDOMAIN.
//! - Malformed queries get FORMERR when their header can be read, and
//!   nothing when not; an answer never outgrows the client's UDP size (it
//!   is cut and marked truncated), so a small query cannot be turned into
//!   a large answer to someone else.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, PTR},
    },
};
use rand::Rng;

use super::{name::Fqdn, records::Instance};

/// The UDP answer size a client without EDNS takes.
pub const CLASSIC_UDP: usize = 512;
/// The most we answer over UDP whatever a client's EDNS says.
pub const MAX_UDP: usize = 4096;

/// The zone this router serves.
#[derive(Clone, Debug)]
pub struct Zone {
    pub domain: Fqdn,
    /// Seconds an answer may be cached: short, so that load spreads and
    /// departed instances leave clients' caches quickly.
    pub ttl: u32,
}

/// What a query's answer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: pass the query to the host's resolvers.
    Forward,
    /// A known name with no ready instance: ask again when one is ready
    /// or the wait is over.
    Wait(Fqdn),
    /// Not even a header to answer: say nothing.
    Drop,
}

/// What the responder asks of the record set.
pub trait Lookup {
    fn instances(&self, name: &Fqdn) -> Vec<Instance>;
    fn names_of(&self, addr: Ipv4Addr) -> Vec<Fqdn>;
}

impl Lookup for super::records::Names {
    fn instances(&self, name: &Fqdn) -> Vec<Instance> {
        self.lookup(name)
    }

    fn names_of(&self, addr: Ipv4Addr) -> Vec<Fqdn> {
        self.reverse(addr)
    }
}

/// How the query came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers `query`. `waited`: the query was held and its wait is over.
pub fn respond(
    zone: &Zone,
    names: &impl Lookup,
    query: &[u8],
    transport: Transport,
    waited: bool,
    rng: &mut impl Rng,
) -> Outcome {
    let message = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => return format_error(query),
    };
    if message.message_type() != MessageType::Query {
        return Outcome::Drop;
    }
    if message.op_code() != OpCode::Query {
        return reply(&message, ResponseCode::NotImp, false, Vec::new(), transport);
    }
    let [question] = message.queries() else {
        return reply(
            &message,
            ResponseCode::FormErr,
            false,
            Vec::new(),
            transport,
        );
    };
    let Ok(qname) = Fqdn::parse(&question.name().to_ascii()) else {
        return Outcome::Forward;
    };
    if let Some((name, instances)) = in_zone(zone, names, &qname) {
        if instances.is_empty() {
            return reply(
                &message,
                ResponseCode::NXDomain,
                true,
                Vec::new(),
                transport,
            );
        }
        if question.query_type() != RecordType::A {
            return reply(&message, ResponseCode::NoError, true, Vec::new(), transport);
        }
        let mut ready: Vec<Ipv4Addr> = instances
            .iter()
            .filter(|i| i.ready)
            .map(|i| i.addr)
            .collect();
        ready.sort();
        ready.dedup();
        if ready.is_empty() {
            return if waited {
                reply(
                    &message,
                    ResponseCode::NXDomain,
                    true,
                    Vec::new(),
                    transport,
                )
            } else {
                Outcome::Wait(name)
            };
        }
        // One instance per answer, chosen at random: glibc sorts a list of
        // addresses by RFC 6724's longest matching prefix, so every client
        // of a shuffled list would pick the same (nearest) instance.
        let chosen = ready[rng.random_range(0..ready.len())];
        let answer = Record::from_rdata(question.name().clone(), zone.ttl, RData::A(A(chosen)));
        return reply(
            &message,
            ResponseCode::NoError,
            true,
            vec![answer],
            transport,
        );
    }
    if question.query_type() == RecordType::PTR
        && let Some(addr) = reverse_address(&qname)
    {
        let found = names.names_of(addr);
        if !found.is_empty() {
            let owner = question.name().clone();
            let answers = found
                .iter()
                .filter_map(|n| Name::from_ascii(n.as_str()).ok())
                .map(|n| Record::from_rdata(owner.clone(), zone.ttl, RData::PTR(PTR(n))))
                .collect();
            return reply(&message, ResponseCode::NoError, true, answers, transport);
        }
    }
    Outcome::Forward
}

/// The zone's name a query asks for, with its instances: a name in the
/// domain, or a single label that is a name of the mesh (`db.` for
/// `db.weft.local.`). The second is what a container whose resolver
/// searches no weft domain asks, Docker's above all: its embedded resolver
/// answers the containers of its own host and passes the rest on as they
/// were typed. A single label the mesh does not know is the host's
/// resolvers' to answer.
fn in_zone(zone: &Zone, names: &impl Lookup, qname: &Fqdn) -> Option<(Fqdn, Vec<Instance>)> {
    if qname.is_within(&zone.domain) {
        return Some((qname.clone(), names.instances(qname)));
    }
    let label = qname.as_str().strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let name = Fqdn::in_domain(label, &zone.domain).ok()?;
    let instances = names.instances(&name);
    (!instances.is_empty()).then_some((name, instances))
}

/// The address a `d.c.b.a.in-addr.arpa.` name asks about.
fn reverse_address(name: &Fqdn) -> Option<Ipv4Addr> {
    let rest = name.as_str().strip_suffix(".in-addr.arpa.")?;
    let mut octets = [0u8; 4];
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    for (i, part) in parts.iter().rev().enumerate() {
        octets[i] = part.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// The answer to `query`, cut to what the client takes over UDP.
fn reply(
    query: &Message,
    code: ResponseCode,
    authoritative: bool,
    mut answers: Vec<Record>,
    transport: Transport,
) -> Outcome {
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => query
            .extensions()
            .as_ref()
            .map_or(CLASSIC_UDP, |e| usize::from(e.max_payload()))
            .clamp(CLASSIC_UDP, MAX_UDP),
    };
    let mut truncated = false;
    loop {
        let mut m = Message::new();
        m.set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_authoritative(authoritative)
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true)
            .set_truncated(truncated)
            .set_response_code(code);
        m.add_queries(query.queries().iter().cloned());
        m.add_answers(answers.iter().cloned());
        match m.to_vec() {
            Ok(bytes) if bytes.len() <= limit => return Outcome::Reply(bytes),
            Ok(_) if !answers.is_empty() => {
                // Cut in half until it fits; the client asks again over
                // TCP for the rest.
                answers.truncate(answers.len() / 2);
                truncated = true;
            }
            _ => return Outcome::Drop,
        }
    }
}

/// SERVFAIL for a query no upstream resolver answered: the client moves
/// on at once (to its next search domain or server) instead of waiting
/// out its timeout.
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(query).ok()?;
    match reply(
        &message,
        ResponseCode::ServFail,
        false,
        Vec::new(),
        Transport::Tcp,
    ) {
        Outcome::Reply(bytes) => Some(bytes),
        _ => None,
    }
}

/// FORMERR for a query whose header can be read; nothing otherwise.
fn format_error(query: &[u8]) -> Outcome {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        // Too short for a header, or itself a response: answering
        // responses would let two servers bounce errors forever.
        return Outcome::Drop;
    }
    let mut m = Message::new();
    m.set_id(u16::from_be_bytes([query[0], query[1]]))
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::from_u8((query[2] >> 3) & 0x0f))
        .set_response_code(ResponseCode::FormErr);
    m.to_vec().map_or(Outcome::Drop, Outcome::Reply)
}

#[cfg(test)]
mod tests;
