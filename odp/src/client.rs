//! The request/response socket to the kernel datapath, on neli.
//!
//! neli frames netlink messages, numbers them and decodes kernel errors and
//! acks; what goes inside (the generic netlink and ovs headers and the
//! attributes) is this crate's own [`Message`], carried as opaque bytes.

use std::{io::Cursor, iter::once, os::fd::AsRawFd};

use neli::{
    consts::{
        genl::{CtrlAttr, CtrlAttrMcastGrp, CtrlCmd, Index},
        nl::{GenlId, NlmF, Nlmsg},
        socket::NlFamily,
    },
    genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, NlattrBuilder},
    nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder},
    socket::synchronous::NlSocketHandle,
    types::{Buffer, GenlBuffer},
    utils::Groups,
    {Size, ToBytes},
};

use crate::{
    Datapath, DatapathFamily, DatapathMessage, Error, Family, Flow, FlowFamily, FlowMessage,
    KeyAttr, Message, PacketFamily, PacketMessage, PutMode, Vport, VportFamily, VportKind,
    VportMessage, datapath::DATAPATH_MCGROUP, flow::Action, vport::VPORT_MCGROUP,
};

/// The generic netlink ids the kernel assigned to the datapath families at
/// module load; they differ between boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FamilyIds {
    pub datapath: u16,
    pub vport: u16,
    pub flow: u16,
    pub packet: u16,
    /// The multicast group announcing datapath changes.
    pub datapath_mcgroup: Option<u32>,
    /// The multicast group announcing vport changes.
    pub vport_mcgroup: Option<u32>,
}

/// A connection to the kernel datapath for requests.
pub struct Client {
    socket: NlSocketHandle,
    ids: FamilyIds,
    seq: u32,
}

fn socket_error(e: impl std::fmt::Display) -> Error {
    Error::Socket(e.to_string())
}

pub(crate) fn open_socket() -> Result<NlSocketHandle, Error> {
    NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty()).map_err(socket_error)
}

/// Makes reads on `fd` return at once instead of blocking, for sockets
/// read from an event loop.
pub(crate) fn set_nonblocking(fd: std::os::fd::RawFd) -> Result<(), Error> {
    // SAFETY: fcntl on a descriptor the caller owns, with no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(Error::Socket(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

/// How many datagrams [`discard_queued`] drops per system call.
pub(crate) const DISCARD_BATCH: usize = 64;

/// Drops up to `max` datagrams queued on non-blocking netlink socket `fd`
/// without reading them (the kernel copies a few bytes of each at most),
/// up to [`DISCARD_BATCH`] per system call; says how many went and whether
/// the queue had overflowed (the kernel reports that once, as ENOBUFS).
/// Each message is a datagram of its own, so only whole messages are lost.
pub(crate) fn discard_queued(fd: std::os::fd::RawFd, max: usize) -> Result<(usize, bool), Error> {
    // The buffers and headers are built once and reused by every call.
    let mut scratch = [[0u8; 16]; DISCARD_BATCH];
    let mut iov = scratch.each_mut().map(|b| libc::iovec {
        iov_base: b.as_mut_ptr().cast(),
        iov_len: b.len(),
    });
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty one.
    let mut msgs: [libc::mmsghdr; DISCARD_BATCH] = unsafe { std::mem::zeroed() };
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut dropped = 0;
    let mut overflowed = false;
    // Until the queue is empty (EAGAIN: a short count may also mean an
    // error after some were taken, reported on the next call); the tries
    // bound a socket that keeps failing.
    for _ in 0..2 * max.div_ceil(DISCARD_BATCH) + 2 {
        let want = (max - dropped).min(DISCARD_BATCH);
        if want == 0 {
            break;
        }
        // SAFETY: at most DISCARD_BATCH headers, each pointing at one
        // live iovec over a live 16-byte buffer, none moved since; no
        // address or control buffers.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => break,
                Some(libc::ENOBUFS) => overflowed = true,
                Some(libc::EINTR) => {}
                _ => return Err(Error::Socket(e.to_string())),
            }
            continue;
        }
        dropped += rc as usize;
    }
    Ok((dropped, overflowed))
}

/// Which family a message type belongs to, for addressing it.
pub trait Addressed: Family {
    fn id(ids: &FamilyIds) -> u16;
}

impl Addressed for DatapathFamily {
    fn id(ids: &FamilyIds) -> u16 {
        ids.datapath
    }
}
impl Addressed for VportFamily {
    fn id(ids: &FamilyIds) -> u16 {
        ids.vport
    }
}
impl Addressed for FlowFamily {
    fn id(ids: &FamilyIds) -> u16 {
        ids.flow
    }
}
impl Addressed for PacketFamily {
    fn id(ids: &FamilyIds) -> u16 {
        ids.packet
    }
}

/// Requests sent to the kernel together, in one datagram, each answered
/// by an ack alone: for the router's handling of a miss (a flow, then the
/// packet that missed) and its flow table's passes (a step of deletions),
/// where the kernel's copy of each flow would only be built, read and
/// thrown away, and one system call does for many. Each request's ack
/// waits in the socket's receive buffer until all are sent: keep a batch
/// to a few dozen requests.
#[derive(Debug, Default)]
pub struct Batch {
    requests: Vec<Pending>,
}

#[derive(Debug)]
struct Pending {
    family: fn(&FamilyIds) -> u16,
    payload: Vec<u8>,
    flags: u16,
    context: &'static str,
}

impl Batch {
    /// Installs or changes a flow (see [`Client::put_flow`]).
    pub fn put_flow(&mut self, dp_ifindex: i32, flow: &Flow, mode: PutMode) {
        let msg = FlowMessage::put(dp_ifindex, flow, mode);
        self.push(&msg, mode.netlink_flags(), "flow");
    }

    /// Deletes the flow whose unmasked key is `key` (see
    /// [`Client::delete_flow`], which also returns the flow's last stats).
    pub fn delete_flow(&mut self, dp_ifindex: i32, key: &[KeyAttr]) {
        let msg = FlowMessage::delete(dp_ifindex, Some(key));
        self.push(&msg, 0, "flow");
    }

    /// Runs `actions` on `packet` (see [`Client::execute`]).
    pub fn execute(
        &mut self,
        dp_ifindex: i32,
        packet: &[u8],
        key: Vec<KeyAttr>,
        actions: Vec<Action>,
    ) {
        let msg = PacketMessage::execute(dp_ifindex, packet, key, actions);
        self.push(&msg, 0, "packet execute");
    }

    fn push<F: Addressed>(&mut self, msg: &Message<F>, flags: u16, context: &'static str) {
        self.requests.push(Pending {
            family: F::id,
            payload: msg.to_bytes(),
            flags,
            context,
        });
    }
}

impl Client {
    /// Sends `batch` in one datagram and waits for every request's ack:
    /// one result per request, in order. The kernel handles them in
    /// order and one failing does not stop the others. The outer error is
    /// the socket's.
    pub fn send_batch(&mut self, batch: Batch) -> Result<Vec<Result<(), Error>>, Error> {
        let first = self.seq.wrapping_add(1);
        let mut datagram = Vec::new();
        for pending in &batch.requests {
            let seq = self.next_seq();
            let msg: Nlmsghdr<u16, Buffer> = NlmsghdrBuilder::default()
                .nl_type((pending.family)(&self.ids))
                .nl_flags(NlmF::REQUEST | NlmF::ACK | NlmF::from_bits_truncate(pending.flags))
                .nl_seq(seq)
                .nl_pid(self.socket.pid())
                .nl_payload(NlPayload::Payload(Buffer::from(pending.payload.as_slice())))
                .build()
                .map_err(socket_error)?;
            let mut bytes = Cursor::new(vec![0; msg.padded_size()]);
            msg.to_bytes(&mut bytes).map_err(socket_error)?;
            datagram.extend_from_slice(bytes.get_ref());
        }
        if datagram.is_empty() {
            return Ok(Vec::new());
        }
        loop {
            // SAFETY: sends a live buffer of its true length on our socket.
            let sent = unsafe {
                libc::send(
                    self.socket.as_raw_fd(),
                    datagram.as_ptr().cast(),
                    datagram.len(),
                    0,
                )
            };
            if sent >= 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(socket_error(e));
            }
        }
        let mut results: Vec<Option<Result<(), Error>>> =
            batch.requests.iter().map(|_| None).collect();
        let mut waiting = results.len();
        while waiting > 0 {
            let (replies, _) = self.socket.recv::<u16, Buffer>().map_err(socket_error)?;
            for reply in replies {
                let reply = reply.map_err(socket_error)?;
                let i = reply.nl_seq().wrapping_sub(first) as usize;
                let Some(slot) = results.get_mut(i).filter(|r| r.is_none()) else {
                    continue; // an answer to an earlier request
                };
                *slot = match reply.nl_payload() {
                    NlPayload::Err(e) => Some(Err(Error::from_errno(
                        -*e.error(),
                        batch.requests[i].context,
                    ))),
                    NlPayload::Ack(_) => Some(Ok(())),
                    _ => continue,
                };
                waiting -= 1;
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    /// Connects and looks up the four families. Fails with
    /// [`Error::ModuleNotLoaded`] on a kernel without openvswitch (the
    /// kernel tries to load the module on this lookup).
    pub fn connect() -> Result<Client, Error> {
        let socket = open_socket()?;
        let _ = socket.enable_ext_ack(true);
        let mut client = Client {
            socket,
            ids: FamilyIds {
                datapath: 0,
                vport: 0,
                flow: 0,
                packet: 0,
                datapath_mcgroup: None,
                vport_mcgroup: None,
            },
            seq: 0,
        };
        let (datapath, datapath_mcgroup) =
            client.resolve(DatapathFamily::NAME, Some(DATAPATH_MCGROUP))?;
        let (vport, vport_mcgroup) = client.resolve(VportFamily::NAME, Some(VPORT_MCGROUP))?;
        let (flow, _) = client.resolve(FlowFamily::NAME, None)?;
        let (packet, _) = client.resolve(PacketFamily::NAME, None)?;
        client.ids = FamilyIds {
            datapath,
            vport,
            flow,
            packet,
            datapath_mcgroup,
            vport_mcgroup,
        };
        Ok(client)
    }

    pub fn family_ids(&self) -> FamilyIds {
        self.ids
    }

    /// The netlink port id of this socket.
    pub fn port_id(&self) -> u32 {
        self.socket.pid()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// `CTRL_CMD_GETFAMILY`: the family's id and, if asked, a multicast
    /// group's id.
    fn resolve(
        &mut self,
        family: &'static str,
        mcgroup: Option<&str>,
    ) -> Result<(u16, Option<u32>), Error> {
        let attr = NlattrBuilder::default()
            .nla_type(
                AttrTypeBuilder::default()
                    .nla_type(CtrlAttr::FamilyName)
                    .build()
                    .map_err(socket_error)?,
            )
            .nla_payload(family)
            .build()
            .map_err(socket_error)?;
        let genl = GenlmsghdrBuilder::default()
            .cmd(CtrlCmd::Getfamily)
            .version(2)
            .attrs(once(attr).collect::<GenlBuffer<_, _>>())
            .build()
            .map_err(socket_error)?;
        let seq = self.next_seq();
        let msg = NlmsghdrBuilder::default()
            .nl_type(GenlId::Ctrl)
            .nl_flags(NlmF::REQUEST | NlmF::ACK)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(genl))
            .build()
            .map_err(socket_error)?;
        self.socket.send(&msg).map_err(socket_error)?;
        let mut result = None;
        loop {
            let (replies, _) = self
                .socket
                .recv::<u16, Genlmsghdr<CtrlCmd, CtrlAttr>>()
                .map_err(socket_error)?;
            for reply in replies {
                let reply = reply.map_err(socket_error)?;
                if *reply.nl_seq() != seq {
                    continue;
                }
                match reply.nl_payload() {
                    NlPayload::Payload(p) => {
                        let attrs = p.attrs().get_attr_handle();
                        let id = attrs
                            .get_attr_payload_as::<u16>(CtrlAttr::FamilyId)
                            .map_err(socket_error)?;
                        let group = mcgroup.and_then(|wanted| {
                            let groups = attrs
                                .get_nested_attributes::<Index>(CtrlAttr::McastGroups)
                                .ok()?;
                            groups.iter().find_map(|group| {
                                let group = group.get_attr_handle::<CtrlAttrMcastGrp>().ok()?;
                                let name = group
                                    .get_attr_payload_as_with_len::<String>(CtrlAttrMcastGrp::Name)
                                    .ok()?;
                                (name == wanted)
                                    .then(|| {
                                        group.get_attr_payload_as::<u32>(CtrlAttrMcastGrp::Id).ok()
                                    })
                                    .flatten()
                            })
                        });
                        result = Some((id, group));
                    }
                    NlPayload::Err(e) => {
                        return Err(match -*e.error() {
                            libc::ENOENT => Error::ModuleNotLoaded { family },
                            errno => Error::from_errno(errno, format!("looking up {family}")),
                        });
                    }
                    NlPayload::Ack(_) => {
                        return result
                            .ok_or_else(|| Error::Socket(format!("no reply for family {family}")));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends `msg` and collects the replies: one for a plain request, many
    /// for a dump. Kernel errors are mapped with `context` naming the
    /// object, e.g. "datapath weft".
    pub fn request<F: Addressed>(
        &mut self,
        msg: &Message<F>,
        extra_flags: u16,
        dump: bool,
        context: &str,
    ) -> Result<Vec<Message<F>>, Error> {
        let seq = self.next_seq();
        let mut flags = NlmF::REQUEST | NlmF::from_bits_truncate(extra_flags);
        // The kernel answers changes (new, set, del) with a notification
        // that reaches the requester only with ECHO; gets answer anyway.
        flags |= if dump {
            NlmF::DUMP
        } else {
            NlmF::ACK | NlmF::ECHO
        };
        let request: Nlmsghdr<u16, Buffer> = NlmsghdrBuilder::default()
            .nl_type(F::id(&self.ids))
            .nl_flags(flags)
            .nl_seq(seq)
            .nl_pid(self.socket.pid())
            .nl_payload(NlPayload::Payload(Buffer::from(msg.to_bytes())))
            .build()
            .map_err(socket_error)?;
        self.socket.send(&request).map_err(socket_error)?;
        let mut replies = Vec::new();
        loop {
            let (batch, _) = self.socket.recv::<u16, Buffer>().map_err(socket_error)?;
            for reply in batch {
                let reply = reply.map_err(socket_error)?;
                if *reply.nl_seq() != seq {
                    continue;
                }
                let done = u16::from(Nlmsg::Done) == *reply.nl_type();
                match reply.nl_payload() {
                    NlPayload::Payload(bytes) if !done => {
                        replies.push(Message::parse(bytes.as_ref())?)
                    }
                    NlPayload::Err(e) => return Err(Error::from_errno(-*e.error(), context)),
                    NlPayload::Ack(_) | NlPayload::DumpExtAck(_) => return Ok(replies),
                    _ if done => return Ok(replies),
                    _ => {}
                }
            }
        }
    }

    /// A request expecting exactly one object back.
    fn one<F: Addressed>(
        &mut self,
        msg: &Message<F>,
        flags: u16,
        context: &str,
    ) -> Result<Message<F>, Error> {
        self.request(msg, flags, false, context)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Socket(format!("the kernel sent no reply for {context}")))
    }

    // Datapaths.

    /// Creates a datapath; its misses go to netlink port `upcall_pid`.
    pub fn create_datapath(
        &mut self,
        name: &str,
        upcall_pid: u32,
        user_features: u32,
    ) -> Result<Datapath, Error> {
        let context = format!("datapath {name}");
        let reply = self.one(
            &DatapathMessage::create(name, upcall_pid, user_features),
            0,
            &context,
        )?;
        Ok(Datapath::try_from(&reply)?)
    }

    pub fn datapath(&mut self, name: &str) -> Result<Datapath, Error> {
        let reply = self.one(
            &DatapathMessage::get(Some(name)),
            0,
            &format!("datapath {name}"),
        )?;
        Ok(Datapath::try_from(&reply)?)
    }

    pub fn datapaths(&mut self) -> Result<Vec<Datapath>, Error> {
        let replies = self.request(&DatapathMessage::get(None), 0, true, "datapaths")?;
        Ok(replies
            .iter()
            .map(Datapath::try_from)
            .collect::<Result<_, _>>()?)
    }

    pub fn set_datapath(
        &mut self,
        dp_ifindex: i32,
        upcall_pid: u32,
        user_features: u32,
    ) -> Result<Datapath, Error> {
        let msg = DatapathMessage::set(dp_ifindex, upcall_pid, user_features);
        let reply = self.one(&msg, 0, &format!("datapath {dp_ifindex}"))?;
        Ok(Datapath::try_from(&reply)?)
    }

    /// See [`DatapathMessage::set_per_cpu_pids`].
    pub fn set_per_cpu_upcall_pids(&mut self, dp_ifindex: i32, pids: &[u32]) -> Result<(), Error> {
        let msg = DatapathMessage::set_per_cpu_pids(dp_ifindex, pids.to_vec());
        self.one(&msg, 0, &format!("datapath {dp_ifindex}"))
            .map(drop)
    }

    pub fn delete_datapath(&mut self, dp_ifindex: i32) -> Result<(), Error> {
        let context = format!("datapath {dp_ifindex}");
        self.request(&DatapathMessage::delete(dp_ifindex), 0, false, &context)
            .map(drop)
    }

    // Vports.

    pub fn create_vport(
        &mut self,
        dp_ifindex: i32,
        name: &str,
        kind: VportKind,
        upcall_pids: &[u32],
    ) -> Result<Vport, Error> {
        let msg = VportMessage::create(dp_ifindex, name, kind, upcall_pids);
        let reply = self.one(&msg, 0, &format!("vport {name}"))?;
        Ok(Vport::try_from(&reply)?)
    }

    pub fn vport(&mut self, dp_ifindex: i32, name: &str) -> Result<Vport, Error> {
        let reply = self.one(
            &VportMessage::get(dp_ifindex, Some(name)),
            0,
            &format!("vport {name}"),
        )?;
        Ok(Vport::try_from(&reply)?)
    }

    pub fn vports(&mut self, dp_ifindex: i32) -> Result<Vec<Vport>, Error> {
        let replies = self.request(&VportMessage::get(dp_ifindex, None), 0, true, "vports")?;
        Ok(replies
            .iter()
            .map(Vport::try_from)
            .collect::<Result<_, _>>()?)
    }

    pub fn set_vport_upcall_pids(
        &mut self,
        dp_ifindex: i32,
        port_no: u32,
        pids: &[u32],
    ) -> Result<Vport, Error> {
        let msg = VportMessage::set_upcall_pids(dp_ifindex, port_no, pids);
        let reply = self.one(&msg, 0, &format!("vport {port_no}"))?;
        Ok(Vport::try_from(&reply)?)
    }

    pub fn delete_vport(&mut self, dp_ifindex: i32, port_no: u32) -> Result<(), Error> {
        let context = format!("vport {port_no}");
        self.request(
            &VportMessage::delete(dp_ifindex, port_no),
            0,
            false,
            &context,
        )
        .map(drop)
    }

    // Flows.

    /// Installs or changes a flow and returns it as the kernel stored it.
    pub fn put_flow(&mut self, dp_ifindex: i32, flow: &Flow, mode: PutMode) -> Result<Flow, Error> {
        let msg = FlowMessage::put(dp_ifindex, flow, mode);
        let reply = self.one(&msg, mode.netlink_flags(), "flow")?;
        Ok(Flow::try_from(&reply)?)
    }

    pub fn flow(&mut self, dp_ifindex: i32, key: &[KeyAttr]) -> Result<Flow, Error> {
        let reply = self.one(&FlowMessage::get(dp_ifindex, Some(key)), 0, "flow")?;
        Ok(Flow::try_from(&reply)?)
    }

    pub fn flows(&mut self, dp_ifindex: i32) -> Result<Vec<Flow>, Error> {
        let replies = self.request(&FlowMessage::get(dp_ifindex, None), 0, true, "flows")?;
        Ok(replies
            .iter()
            .map(Flow::try_from)
            .collect::<Result<_, _>>()?)
    }

    /// Deletes one flow and returns its final statistics.
    pub fn delete_flow(&mut self, dp_ifindex: i32, key: &[KeyAttr]) -> Result<Flow, Error> {
        let reply = self.one(&FlowMessage::delete(dp_ifindex, Some(key)), 0, "flow")?;
        Ok(Flow::try_from(&reply)?)
    }

    /// Deletes every flow of the datapath.
    pub fn flush_flows(&mut self, dp_ifindex: i32) -> Result<(), Error> {
        self.request(&FlowMessage::delete(dp_ifindex, None), 0, false, "flows")
            .map(drop)
    }

    // Packets.

    /// Runs `actions` on `packet` in the datapath.
    pub fn execute(
        &mut self,
        dp_ifindex: i32,
        packet: &[u8],
        key: Vec<KeyAttr>,
        actions: Vec<Action>,
    ) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.execute(dp_ifindex, packet, key, actions);
        self.send_batch(batch)?.pop().unwrap_or(Ok(()))
    }
}
