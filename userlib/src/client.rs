//! A connection to the module's generic netlink family.
//!
//! Built on neli's `NlSocketHandle` rather than its `NlRouter`: the router (0.7.5)
//! drops the extended-ack attributes when it converts an error to its typed form, and
//! the kernel's extack message is what tells a user why a request was refused.

use crate::error::{Error, KernelError, Result};
use crate::events::Group;
use crate::events::TrackedSocket;
use crate::state::MigrationState;
use crate::uapi::{
    Command, InfoAttr, StateAttr, FAMILY_NAME, MCGRP_EVENTS, MCGRP_RELEASES, PROTO_VERSION, QUEUE_CHUNK,
};
use neli::consts::genl::{Cmd, CtrlAttr, CtrlAttrMcastGrp, CtrlCmd, Index, NlAttrType};
use neli::consts::nl::{GenlId, NlType, NlmF, NlmsgerrAttr};
use neli::consts::socket::NlFamily;
use neli::err::{Nlmsgerr, NlmsghdrErr};
use neli::genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, NlattrBuilder, NoUserHeader};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, GenlBuffer, NlBuffer};
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::fmt::Debug;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// One attribute as raw bytes: `(type, payload)`.
pub type RawAttr = (u16, Vec<u8>);

const ENOENT: i32 = 2;
/// Generic netlink header: cmd, version, reserved.
const GENL_HEADER: usize = 4;
/// A request this size always fits a netlink socket's default send buffer.
const DEFAULT_SNDBUF: usize = 128 << 10;

/// What `GET_INFO` reports about the loaded module. Counters and gauges are those of
/// the caller's network namespace: requests count where the netlink socket that sent
/// them lives, guarded tuples and tracked sockets where their connection does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// Version of the loaded module.
    pub module_version: String,
    /// Protocol version the module speaks.
    pub proto_version: u32,
    /// Sockets exported since load.
    pub exports: u64,
    /// Sockets imported since load.
    pub imports: u64,
    /// Imported sockets released since load (whether or not anyone listened).
    pub releases: u64,
    /// Requests that failed after validation.
    pub errors: u64,
    /// Largest send + receive queue one export carries.
    pub max_queue_bytes: u32,
    /// The RST guard of departed tuples (connections exported with DETACH).
    pub departed: DepartedInfo,
    /// Imported sockets currently tracked for their release.
    pub tracked: u32,
    /// Events sent (delivered, or nobody listened).
    pub events_sent: u64,
    /// Events a listener missed or that could not be built.
    pub events_lost: u64,
}

/// Counters of the module's RST guard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DepartedInfo {
    /// Tuples whose packets are dropped now.
    pub active: u32,
    /// Most tuples the guard holds, all namespaces together.
    pub capacity: u32,
    /// Most tuples one namespace may hold (0 from modules without a quota).
    pub quota: u32,
    /// How long a tuple is guarded, in milliseconds.
    pub timeout_ms: u32,
    /// Packets dropped instead of answered with RST, and RSTs this host was about to
    /// send on a departed tuple.
    pub dropped: u64,
    /// Guarded tuples that expired.
    pub expired: u64,
    /// DETACH requests refused because the guard was full.
    pub full: u64,
    /// Packets sent on to the new owner a DETACH named (0 from modules without
    /// forwarding).
    pub forwarded: u64,
    /// Bytes of those packets.
    pub forwarded_bytes: u64,
    /// Packets that had a new owner to go to but were dropped (no route, TTL, memory).
    pub forward_failed: u64,
    /// Packets another host forwarded here for a connection with no socket here (not
    /// imported yet, or gone), dropped instead of answered with RST.
    pub forwarded_unowned: u64,
}

/// How `SOCK_IMPORT` should set up the new socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Own this local address instead of the exported one (same family; port kept).
    pub bind_addr: Option<IpAddr>,
    /// IP_FREEBIND: the local address need not be configured on this host.
    pub freebind: bool,
    /// IP_TRANSPARENT semantics (for TPROXY setups).
    pub transparent: bool,
    /// Open the new fd with O_NONBLOCK (tokio needs it).
    pub nonblock: bool,
}

/// A socket `SOCK_IMPORT` built.
#[derive(Debug)]
pub struct Imported {
    /// The new connected TCP socket (O_CLOEXEC).
    pub fd: OwnedFd,
    /// Id of this migration, the one `SOCK_EXPORT` chose.
    pub migration_id: u64,
    /// Congestion control in effect (the exported one unless this host lacks it).
    pub cc_name: String,
}

/// A netlink connection to the `prism_sock` family. One request at a time; open one
/// client per thread.
pub struct Client {
    sock: NlSocketHandle,
    family: u16,
    events_group: u32,
    /// `None` from a module that predates the group.
    releases_group: Option<u32>,
    seq: Cell<u32>,
    /// Request size the socket's send buffer is known to take.
    sndbuf: Cell<usize>,
    /// Where replies are received: an allocation with room for the largest reply the
    /// module can send (its max-queue-bytes of queues and the state), never zeroed.
    /// neli's own receive path zero-fills a buffer that size for every datagram, which
    /// cost more than the whole request; and a reply received anywhere smaller would
    /// have to be peeked at first, one more system call per export.
    replies: RefCell<Vec<u8>>,
    /// The capacity `replies` gets, from the module's max-queue-bytes.
    max_reply: usize,
    /// Where export and import requests are built, kept between requests: a fresh
    /// buffer of a large state is fresh pages (malloc maps them), and faulting them in
    /// cost more than the kernel's work.
    requests: RefCell<Vec<u8>>,
}

/// Appends a netlink attribute, padded to 4 bytes.
fn put_attr(buf: &mut Vec<u8>, kind: impl Into<u16>, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.into().to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

/// Netlink message header size.
const NLMSG_HEADER: usize = 16;

fn kernel_error<T, P>(err: &Nlmsgerr<NlmsghdrErr<T, P>>) -> Error {
    let mut k = KernelError {
        errno: -*err.error(),
        message: None,
        bad_attr_offset: None,
    };
    for a in err.ext_ack().iter() {
        let payload = a.nla_payload().as_ref();
        match a.nla_type().nla_type() {
            NlmsgerrAttr::Msg => {
                let text = payload.split(|b| *b == 0).next().unwrap_or_default();
                k.message = Some(String::from_utf8_lossy(text).into_owned());
            }
            NlmsgerrAttr::Offset => {
                k.bad_attr_offset = payload.try_into().ok().map(u32::from_ne_bytes);
            }
            _ => {}
        }
    }
    Error::Kernel(k)
}

fn netlink(e: impl std::fmt::Display) -> Error {
    Error::Netlink(e.to_string())
}

fn proto(e: impl std::fmt::Display) -> Error {
    Error::Protocol(e.to_string())
}

/// Receive buffer of the netlink socket: a reply of max-queue-bytes (1 MiB) plus its
/// acknowledgement, with room for skb overhead.
const RCVBUF: usize = 4 << 20;

/// The largest reply datagram for `max_queue_bytes`: the queues in chunks of
/// `QUEUE_CHUNK` with their attribute headers, plus room for the state and the headers.
fn max_reply(max_queue_bytes: u32) -> usize {
    let queued = max_queue_bytes as usize;
    queued + (queued / QUEUE_CHUNK as usize + 2) * 4 + (64 << 10)
}

/// Sets a socket buffer size with `force` (allowed with CAP_NET_ADMIN), else `plain`
/// (capped by the sysctl), for `size` bytes.
pub(crate) fn set_buf(fd: i32, force: libc::c_int, plain: libc::c_int, size: usize) -> std::io::Result<()> {
    let want = size.min(i32::MAX as usize / 2) as libc::c_int;
    let mut last = std::io::Error::from_raw_os_error(libc::EINVAL);
    for opt in [force, plain] {
        // SAFETY: `want` is a valid int for the duration of the call.
        let ret = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        last = std::io::Error::last_os_error();
    }
    Err(last)
}

/// What every GET_INFO reply carries.
const INFO_REQUIRED: [InfoAttr; 16] = [
    InfoAttr::ModuleVersion,
    InfoAttr::ProtoVersion,
    InfoAttr::Exports,
    InfoAttr::Imports,
    InfoAttr::Releases,
    InfoAttr::Errors,
    InfoAttr::MaxQueueBytes,
    InfoAttr::DepartedActive,
    InfoAttr::DepartedCapacity,
    InfoAttr::DepartedTimeoutMs,
    InfoAttr::DepartedDropped,
    InfoAttr::DepartedExpired,
    InfoAttr::DepartedFull,
    InfoAttr::Tracked,
    InfoAttr::EventsSent,
    InfoAttr::EventsLost,
];

/// Replies up to this size are copied out of the kept buffer; a larger export reply
/// takes the buffer with it.
const SMALL_REPLY: usize = 16 << 10;

/// Receives the next datagram into `v`'s spare capacity (which must hold it); its
/// length, with `v` set to it.
fn recv_into(fd: i32, v: &mut Vec<u8>) -> std::io::Result<usize> {
    let spare = v.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of its length.
    let n = unsafe { recv_raw(fd, spare.as_mut_ptr().cast(), spare.len())? };
    // SAFETY: the kernel initialised `n` bytes of the spare capacity (`recv_raw`
    // refuses a datagram longer than the room it was given).
    unsafe { v.set_len(v.len() + n) };
    Ok(n)
}

/// Receives one netlink datagram into `buf`; its length. A datagram larger than `buf`
/// is an error, not a silent truncation.
pub(crate) fn recv_datagram(fd: i32, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len()) }
}

/// Receives one datagram into `len` bytes at `at`; its length, or an error for a
/// datagram longer than that (MSG_TRUNC makes the kernel report the real length).
///
/// # Safety
///
/// `at` must be valid for writes of `len` bytes.
unsafe fn recv_raw(fd: i32, at: *mut u8, len: usize) -> std::io::Result<usize> {
    loop {
        // SAFETY: the caller guarantees `at` is valid for `len` bytes.
        let n = unsafe { libc::recv(fd, at.cast(), len, libc::MSG_TRUNC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        if n > len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a {n}-byte netlink message exceeds the {len}-byte buffer"),
            ));
        }
        return Ok(n);
    }
}

/// A generic netlink request: command `cmd` at `version`, with `(type, payload)` attributes.
fn request<C: Cmd, A: NlAttrType>(
    cmd: C,
    version: u8,
    list: impl IntoIterator<Item = (A, Vec<u8>)>,
) -> Result<Genlmsghdr<C, A>> {
    let attrs = list
        .into_iter()
        .map(|(kind, payload)| {
            NlattrBuilder::default()
                .nla_type(AttrTypeBuilder::default().nla_type(kind).build().map_err(proto)?)
                .nla_payload(payload)
                .build()
                .map_err(proto)
        })
        .collect::<Result<GenlBuffer<A, Buffer>>>()?;
    GenlmsghdrBuilder::<C, A, NoUserHeader>::default()
        .cmd(cmd)
        .version(version)
        .attrs(attrs)
        .build()
        .map_err(proto)
}

impl Client {
    /// Opens a generic netlink socket and resolves the family and its `events` group;
    /// fails with [`Error::ModuleNotLoaded`] when the module is not loaded.
    pub fn connect() -> Result<Self> {
        let sock = NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty()).map_err(netlink)?;
        sock.enable_ext_ack(true).map_err(netlink)?;
        sock.enable_strict_checking(true).map_err(netlink)?;
        // A state reply of up to max-queue-bytes and the acknowledgement behind it must
        // both fit the receive buffer. Forcing the size needs CAP_NET_ADMIN, which every
        // caller of export and import has; others keep what SO_RCVBUF allows.
        let _ = set_buf(sock.as_raw_fd(), libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RCVBUF);
        let mut client = Client {
            sock,
            family: 0,
            events_group: 0,
            releases_group: None,
            seq: Cell::new(1),
            sndbuf: Cell::new(DEFAULT_SNDBUF),
            replies: RefCell::new(Vec::with_capacity(SMALL_REPLY)),
            max_reply: SMALL_REPLY,
            requests: RefCell::new(Vec::new()),
        };
        let request = request(
            CtrlCmd::Getfamily,
            2,
            [(CtrlAttr::FamilyName, format!("{FAMILY_NAME}\0").into_bytes())],
        )?;
        let replies =
            match client.transact::<_, _, Genlmsghdr<CtrlCmd, CtrlAttr>>(GenlId::Ctrl, request, false) {
                Err(Error::Kernel(k)) if k.errno == ENOENT => return Err(Error::ModuleNotLoaded),
                other => other?,
            };
        let reply = replies
            .first()
            .ok_or_else(|| proto("no CTRL_CMD_GETFAMILY reply"))?;
        let h = reply.attrs().get_attr_handle();
        client.family = h.get_attr_payload_as::<u16>(CtrlAttr::FamilyId).map_err(proto)?;
        let groups = h
            .get_nested_attributes::<Index>(CtrlAttr::McastGroups)
            .map_err(proto)?;
        let group = |want: &str| {
            groups.iter().find_map(|g| {
                let g = g.get_attr_handle::<CtrlAttrMcastGrp>().ok()?;
                let name = g
                    .get_attr_payload_as_with_len::<String>(CtrlAttrMcastGrp::Name)
                    .ok()?;
                (name == want).then(|| g.get_attr_payload_as::<u32>(CtrlAttrMcastGrp::Id).ok())?
            })
        };
        client.events_group =
            group(MCGRP_EVENTS).ok_or_else(|| proto("family has no `events` multicast group"))?;
        client.releases_group = group(MCGRP_RELEASES);
        // Every later reply is received whole in one call, the largest export included.
        client.max_reply = max_reply(client.info()?.max_queue_bytes);
        client.replies = RefCell::new(Vec::with_capacity(client.max_reply));
        Ok(client)
    }

    /// The generic netlink family id the kernel assigned to `prism_sock`.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// The multicast group id of the `events` group.
    pub fn events_group(&self) -> u32 {
        self.events_group
    }

    /// The multicast group id of `group`; [`Error::Protocol`] if the loaded module
    /// predates the group.
    pub fn group_id(&self, group: Group) -> Result<u32> {
        match group {
            Group::Events => Ok(self.events_group),
            Group::Releases => self
                .releases_group
                .ok_or_else(|| proto("the loaded module has no `releases` multicast group")),
        }
    }

    /// Sends one request and collects its replies up to the kernel's acknowledgement,
    /// or with `dump` a dump request and its replies up to NLMSG_DONE.
    fn transact<T, Q, R>(&self, nl_type: T, request: Q, dump: bool) -> Result<Vec<R>>
    where
        T: NlType + Debug,
        Q: Size + ToBytes + Debug,
        R: Size + FromBytesWithInput<Input = usize> + Clone + Debug,
    {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let msg = NlmsghdrBuilder::default()
            .nl_type(nl_type)
            .nl_flags(if dump {
                NlmF::REQUEST | NlmF::DUMP
            } else {
                NlmF::REQUEST | NlmF::ACK
            })
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(request))
            .build()
            .map_err(proto)?;
        self.sock.send(&msg).map_err(netlink)?;
        let mut out = Vec::new();
        let mut buf = self.replies.borrow_mut();
        loop {
            buf.clear();
            let msgs = match recv_into(self.sock.as_raw_fd(), &mut buf) {
                Ok(n) => NlBuffer::<T, R>::from_bytes_with_input(&mut Cursor::new(&buf[..n]), n)
                    .map_err(netlink)?,
                // The reply arrived whole but the acknowledgement behind it did not fit
                // the receive buffer: the request succeeded all the same (a failed
                // request has no reply, only the error).
                Err(e) if !dump && e.raw_os_error() == Some(libc::ENOBUFS) && !out.is_empty() => {
                    return Ok(out)
                }
                Err(e) => return Err(netlink(e)),
            };
            for m in msgs {
                if *m.nl_seq() != seq {
                    continue;
                }
                match m.nl_payload() {
                    NlPayload::Payload(p) => out.push(p.clone()),
                    NlPayload::Err(e) => return Err(kernel_error(e)),
                    NlPayload::Ack(_) => return Ok(out),
                    // NLMSG_DONE: a dump's end, with the dump's own error if it failed.
                    NlPayload::DumpExtAck(done) if dump && *done.error() != 0 => {
                        return Err(Error::Kernel(KernelError {
                            errno: -*done.error(),
                            message: None,
                            bad_attr_offset: None,
                        }))
                    }
                    NlPayload::DumpExtAck(_) | NlPayload::Empty if dump => return Ok(out),
                    NlPayload::DumpExtAck(_) | NlPayload::Empty => {}
                }
            }
        }
    }

    /// Sends `cmd` with raw attributes `(type, payload)` and returns the replies' attributes.
    ///
    /// Meant for diagnostics and for conformance tests of the module's validation: the
    /// attributes are sent as given, well-formed or not.
    pub fn raw_request(&self, cmd: u8, attributes: &[RawAttr]) -> Result<Vec<Vec<RawAttr>>> {
        let request = request(cmd, PROTO_VERSION as u8, attributes.iter().cloned())?;
        Ok(self
            .transact::<_, _, Genlmsghdr<u8, u16>>(self.family, request, false)?
            .iter()
            .map(|p| {
                p.attrs()
                    .iter()
                    .map(|a| (*a.nla_type().nla_type(), a.nla_payload().as_ref().to_vec()))
                    .collect()
            })
            .collect())
    }

    /// The sockets the module tracks in this namespace: imported here and neither
    /// released nor exported again (`SOCK_LIST`, a dump). An
    /// [`EventListener`](crate::EventListener) that lost events rebuilds its view from
    /// this, and goes on with events numbered above each entry's `seq`. Needs
    /// CAP_NET_ADMIN in the namespace's user namespace.
    pub fn list_tracked(&self) -> Result<Vec<TrackedSocket>> {
        let request = request(
            u8::from(Command::SockList),
            PROTO_VERSION as u8,
            std::iter::empty::<(u16, Vec<u8>)>(),
        )?;
        self.transact::<_, _, Genlmsghdr<u8, u16>>(self.family, request, true)?
            .iter()
            .map(crate::events::decode_tracked)
            .collect()
    }

    /// Reads the module's version and counters (`GET_INFO`).
    pub fn info(&self) -> Result<ModuleInfo> {
        let (attrs, _) = self.call(Command::GetInfo, &[], (GENL_HEADER, false), |buf| {
            put_attr(buf, InfoAttr::ProtoVersion, &PROTO_VERSION.to_ne_bytes());
        })?;
        // One pass over the flat list of counters, each read in place.
        let mut info = ModuleInfo::default();
        let mut seen = 0u64;
        for (kind, p) in crate::state::attributes(&attrs) {
            let u64v = || p.try_into().map(u64::from_ne_bytes).ok();
            let u32v = || p.try_into().map(u32::from_ne_bytes).ok();
            let d = &mut info.departed;
            let ok = match InfoAttr::from(kind) {
                InfoAttr::ModuleVersion => {
                    let v = p.split(|b| *b == 0).next().unwrap_or_default();
                    info.module_version = String::from_utf8_lossy(v).into_owned();
                    Some(())
                }
                InfoAttr::ProtoVersion => u32v().map(|v| info.proto_version = v),
                InfoAttr::Exports => u64v().map(|v| info.exports = v),
                InfoAttr::Imports => u64v().map(|v| info.imports = v),
                InfoAttr::Releases => u64v().map(|v| info.releases = v),
                InfoAttr::Errors => u64v().map(|v| info.errors = v),
                InfoAttr::MaxQueueBytes => u32v().map(|v| info.max_queue_bytes = v),
                InfoAttr::DepartedActive => u32v().map(|v| d.active = v),
                InfoAttr::DepartedCapacity => u32v().map(|v| d.capacity = v),
                InfoAttr::DepartedTimeoutMs => u32v().map(|v| d.timeout_ms = v),
                InfoAttr::DepartedDropped => u64v().map(|v| d.dropped = v),
                InfoAttr::DepartedExpired => u64v().map(|v| d.expired = v),
                InfoAttr::DepartedFull => u64v().map(|v| d.full = v),
                InfoAttr::Tracked => u32v().map(|v| info.tracked = v),
                InfoAttr::EventsSent => u64v().map(|v| info.events_sent = v),
                InfoAttr::EventsLost => u64v().map(|v| info.events_lost = v),
                InfoAttr::DepartedForwarded => u64v().map(|v| d.forwarded = v),
                InfoAttr::DepartedForwardedBytes => u64v().map(|v| d.forwarded_bytes = v),
                InfoAttr::DepartedForwardFailed => u64v().map(|v| d.forward_failed = v),
                InfoAttr::ForwardedUnowned => u64v().map(|v| d.forwarded_unowned = v),
                InfoAttr::DepartedQuota => u32v().map(|v| d.quota = v),
                // Padding, and attributes of newer modules.
                _ => continue,
            };
            if ok.is_none() {
                return Err(proto(format!("GET_INFO attribute {kind} has the wrong length")));
            }
            seen |= 1 << kind.min(63);
        }
        for a in INFO_REQUIRED {
            if seen & (1 << u16::from(a)) == 0 {
                return Err(proto(format!("GET_INFO reply without {a:?}")));
            }
        }
        Ok(info)
    }

    /// Exports the whole state of the TCP socket `fd` (`SOCK_EXPORT`), captured
    /// atomically; the socket is left as it was.
    pub fn export_snapshot(&self, fd: impl AsFd) -> Result<MigrationState> {
        self.export(fd.as_fd(), false, None)
    }

    /// Exports the TCP socket `fd` and finishes it on this host without a packet to the
    /// peer (`SOCK_EXPORT` with DETACH). The module drops the peer's packets for the
    /// tuple until it is imported here again or expires, so no RST leaves this host.
    /// `fd` stays open on a closed socket: close it.
    pub fn export_detach(&self, fd: impl AsFd) -> Result<MigrationState> {
        self.export(fd.as_fd(), true, None)
    }

    /// Like [`Client::export_detach`], but the peer's packets that still arrive here
    /// go on to the new owner at `owner` from the start (as after [`Client::forward`])
    /// instead of being dropped. The owner's module drops those that reach it before
    /// its import, so it may answer as soon as it has imported, before L4 steers.
    pub fn export_detach_to(&self, fd: impl AsFd, owner: Ipv4Addr) -> Result<MigrationState> {
        self.export(fd.as_fd(), true, Some(owner))
    }

    /// Sends the peer's packets of the connection `state` was detached from, those that
    /// still reach this host, to its new owner at `owner` from now on, instead of
    /// dropping them (`SOCK_FORWARD`): inside IPIP, or 6in4 for an IPv6 connection,
    /// so the owner's `tunl0`/`sit0` must be up. The owner's module drops what reaches
    /// it before its import; the owner may answer before the L4 layer steers the flow.
    pub fn forward(&self, state: &MigrationState, owner: Ipv4Addr) -> Result<()> {
        let tuple = [
            StateAttr::Family,
            StateAttr::Saddr,
            StateAttr::Daddr,
            StateAttr::Sport,
            StateAttr::Dport,
        ];
        self.call(Command::SockForward, &[], (0, false), |buf| {
            for (kind, payload) in crate::state::attributes(state.as_bytes()) {
                if tuple.iter().any(|t| u16::from(*t) == kind) {
                    put_attr(buf, StateAttr::from(kind), payload);
                }
            }
            // Big-endian on the wire: the address's octets as they are.
            put_attr(buf, StateAttr::ForwardTo, &owner.octets());
        })?;
        Ok(())
    }

    fn export(
        &self,
        fd: BorrowedFd<'_>,
        detach: bool,
        forward_to: Option<Ipv4Addr>,
    ) -> Result<MigrationState> {
        let (reply, start) = self.call(Command::SockExport, &[], (GENL_HEADER, true), |buf| {
            put_attr(buf, StateAttr::Fd, &(fd.as_raw_fd() as u32).to_ne_bytes());
            if detach {
                put_attr(buf, StateAttr::Detach, &[]);
            }
            if let Some(owner) = forward_to {
                // Big-endian on the wire: the address's octets as they are.
                put_attr(buf, StateAttr::ForwardTo, &owner.octets());
            }
        })?;
        // The blob is the module's own bytes, not re-encoded.
        Ok(MigrationState::from_message(reply, start))
    }

    /// Builds a live socket from `state` in this process's network namespace
    /// (`SOCK_IMPORT`) and returns it as a new fd.
    pub fn import(&self, state: &MigrationState, options: &ImportOptions) -> Result<Imported> {
        // The blob goes out byte for byte as SOCK_EXPORT produced it, straight from
        // `state` (one iovec of the request).
        let (attrs, _) = self.call(
            Command::SockImport,
            state.as_bytes(),
            (GENL_HEADER, false),
            |buf| {
                match options.bind_addr {
                    Some(IpAddr::V4(a)) => put_attr(buf, StateAttr::BindAddr, &a.octets()),
                    Some(IpAddr::V6(a)) => put_attr(buf, StateAttr::BindAddr, &a.octets()),
                    None => {}
                }
                for (set, kind) in [
                    (options.freebind, StateAttr::Freebind),
                    (options.transparent, StateAttr::Transparent),
                    (options.nonblock, StateAttr::Nonblock),
                ] {
                    if set {
                        put_attr(buf, kind, &[]);
                    }
                }
            },
        )?;
        let (mut fd, mut migration_id, mut cc_name) = (None, None, None);
        for (kind, payload) in crate::state::attributes(&attrs) {
            match kind {
                k if k == u16::from(StateAttr::Fd) => {
                    fd = payload.try_into().ok().map(u32::from_ne_bytes);
                }
                k if k == u16::from(StateAttr::MigrationId) => {
                    migration_id = payload.try_into().ok().map(u64::from_ne_bytes);
                }
                k if k == u16::from(StateAttr::CcName) => {
                    let name = payload.split(|b| *b == 0).next().unwrap_or_default();
                    cc_name = Some(String::from_utf8_lossy(name).into_owned());
                }
                _ => {}
            }
        }
        let fd = fd.ok_or_else(|| proto("import reply without an fd"))?;
        // SAFETY: the module installed this fd in our table for us alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Imported {
            fd,
            migration_id: migration_id.ok_or_else(|| proto("import reply without a migration id"))?,
            cc_name: cc_name.ok_or_else(|| proto("import reply without cc-name"))?,
        })
    }

    /// Imports `state` as a [`std::net::TcpStream`].
    pub fn import_stream(&self, state: &MigrationState, options: &ImportOptions) -> Result<(TcpStream, u64)> {
        let imported = self.import(state, options)?;
        Ok((TcpStream::from(imported.fd), imported.migration_id))
    }

    /// Sends one `cmd` request whose attributes are `body` (sent as it is, from where
    /// it lies) followed by what `attrs` appends, and returns a vector holding the
    /// payload of its reply from byte `skip` on (the generic netlink header is 4 bytes),
    /// and where in the vector that starts. No acknowledgement is asked for: the reply is
    /// the answer, and a failure comes back as an error message all the same, so a call
    /// is one send and one receive. A small reply is received into a buffer kept between
    /// calls and copied out; with `exact` a large one is returned in that buffer itself
    /// (no copy), and the client takes a fresh one.
    fn call(
        &self,
        cmd: Command,
        body: &[u8],
        (skip, exact): (usize, bool),
        attrs: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(Vec<u8>, usize)> {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let mut req = self.requests.borrow_mut();
        req.clear();
        req.resize(NLMSG_HEADER, 0);
        req.extend_from_slice(&[u8::from(cmd), PROTO_VERSION as u8, 0, 0]);
        let head = req.len();
        attrs(&mut req);
        let len = req.len() + body.len();
        let flags = if cmd.replies() {
            libc::NLM_F_REQUEST
        } else {
            libc::NLM_F_REQUEST | libc::NLM_F_ACK
        } as u16;
        req[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&self.family.to_ne_bytes());
        req[6..8].copy_from_slice(&flags.to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.ensure_sndbuf(len + 64)?;
        let mut iov = [
            libc::iovec {
                iov_base: req.as_ptr().cast_mut().cast(),
                iov_len: head,
            },
            libc::iovec {
                iov_base: body.as_ptr().cast_mut().cast(),
                iov_len: body.len(),
            },
            libc::iovec {
                iov_base: req[head..].as_ptr().cast_mut().cast(),
                iov_len: req.len() - head,
            },
        ];
        // SAFETY: a zeroed msghdr is valid; the kernel is the default destination.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = iov.as_mut_ptr();
        mh.msg_iovlen = iov.len() as _;
        let fd = self.sock.as_raw_fd();
        let sent = if body.is_empty() {
            // SAFETY: `req` is valid for reads of its length.
            unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) }
        } else {
            // SAFETY: every iovec points to memory valid for its length for the call.
            unsafe { libc::sendmsg(fd, &mh, 0) }
        };
        if sent < 0 {
            return Err(netlink(std::io::Error::last_os_error()));
        }
        drop(req);
        let mut buf = self.replies.borrow_mut();
        loop {
            buf.clear();
            let n = recv_into(fd, &mut buf).map_err(netlink)?;
            let Some((start, mlen)) = self.find_reply(&buf[..n], seq, cmd, skip)? else {
                continue;
            };
            if exact && n > SMALL_REPLY {
                // A large reply (an export's queues) becomes the caller's where the
                // kernel wrote it: one copy, from the kernel. The allocation shrinks
                // in place to the reply.
                let mut own = std::mem::replace(&mut *buf, Vec::with_capacity(self.max_reply));
                own.truncate(start + mlen);
                own.shrink_to_fit();
                return Ok((own, start + NLMSG_HEADER + skip));
            }
            let out = buf[start + NLMSG_HEADER + skip..start + mlen].to_vec();
            // An export's kTLS keys leave this reused buffer with the copy.
            if cmd == Command::SockExport && crate::state::has_tls(&out) {
                crate::state::wipe(&mut buf[..n]);
            }
            return Ok((out, 0));
        }
    }

    /// Where in `datagram` the reply to request `seq` is (offset and length of its
    /// netlink message), the kernel's error for it, or `None` if it holds neither.
    fn find_reply(
        &self,
        datagram: &[u8],
        seq: u32,
        cmd: Command,
        skip: usize,
    ) -> Result<Option<(usize, usize)>> {
        let n = datagram.len();
        let word = |at: usize| {
            u32::from_ne_bytes([datagram[at], datagram[at + 1], datagram[at + 2], datagram[at + 3]])
        };
        let mut off = 0;
        while off + NLMSG_HEADER <= n {
            let mlen = word(off) as usize;
            if mlen < NLMSG_HEADER || off + mlen > n {
                return Err(proto("malformed netlink message in the reply"));
            }
            let start = off;
            off += (mlen + 3) & !3;
            let kind = u16::from_ne_bytes([datagram[start + 4], datagram[start + 5]]);
            let msg = &datagram[start..start + mlen];
            if word(start + 8) != seq {
                continue;
            }
            if kind == libc::NLMSG_ERROR as u16 {
                // Error 0: the acknowledgement of a request without a reply.
                if !cmd.replies() && mlen >= NLMSG_HEADER + 4 && word(start + NLMSG_HEADER) == 0 {
                    return Ok(Some((start, mlen)));
                }
                // An error: let neli read the extended acknowledgement.
                let parsed = NlBuffer::<u16, Buffer>::from_bytes_with_input(&mut Cursor::new(msg), mlen)
                    .map_err(netlink)?;
                for m in parsed {
                    if let NlPayload::Err(e) = m.nl_payload() {
                        return Err(kernel_error(e));
                    }
                }
                return Err(proto(format!("{cmd:?} was acknowledged without a reply")));
            }
            if kind == self.family {
                if mlen < NLMSG_HEADER + GENL_HEADER.max(skip) {
                    return Err(proto(format!("{cmd:?} reply shorter than its header")));
                }
                return Ok(Some((start, mlen)));
            }
        }
        Ok(None)
    }

    fn ensure_sndbuf(&self, need: usize) -> Result<()> {
        if need <= self.sndbuf.get() {
            return Ok(());
        }
        set_buf(
            self.sock.as_raw_fd(),
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            need * 2,
        )
        .map_err(|e| {
            Error::Netlink(format!(
                "cannot grow the netlink send buffer to {need} bytes: {e}"
            ))
        })?;
        self.sndbuf.set(need);
        Ok(())
    }
}
