//! The module's multicast groups: `events` (imports, exports and releases of migrated
//! sockets) and `releases` (releases only), as a blocking iterator.

use crate::client::Client;
use crate::error::{Error, KernelError, Result};
use crate::uapi::{Command, EventAttr};
use neli::consts::nl::NlmF;
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::genl::Genlmsghdr;
use neli::nl::NlPayload;
use neli::socket::synchronous::NlSocketHandle;
use neli::types::NlBuffer;
use neli::utils::Groups;
use neli::FromBytesWithInput;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// What happened to a tracked socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// `SOCK_IMPORT` built it on this host; it is tracked from now on.
    Imported,
    /// It was exported again with DETACH and left this host.
    Exported,
    /// The kernel is done with it on this host: the steering entry may go (after
    /// [`Event::time_wait_ms`]).
    Released,
}

/// Why a tracked socket left this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// FIN handshake completed both ways.
    Fin,
    /// The peer reset the connection.
    Rst,
    /// Retransmissions or keepalives timed out.
    Timeout,
    /// Closed locally without the handshake (RST sent, SO_LINGER 0, unread data...).
    Abort,
    /// Exported again.
    Exported,
    /// A reason this library does not know.
    Other(u8),
}

impl From<u8> for Reason {
    fn from(v: u8) -> Self {
        use crate::uapi::reason;
        match v {
            reason::FIN => Reason::Fin,
            reason::RST => Reason::Rst,
            reason::TIMEOUT => Reason::Timeout,
            reason::ABORT => Reason::Abort,
            reason::EXPORTED => Reason::Exported,
            o => Reason::Other(o),
        }
    }
}

/// A multicast group of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Every event: imports, exports and releases.
    Events,
    /// Releases only: what removing steering entries needs, without a wake-up for
    /// every import and export. Sequence numbers are those of the `events` group, so
    /// they grow with gaps for the events this group does not carry.
    Releases,
}

impl Group {
    /// The group's name in the family.
    pub fn name(self) -> &'static str {
        match self {
            Group::Events => crate::uapi::MCGRP_EVENTS,
            Group::Releases => crate::uapi::MCGRP_RELEASES,
        }
    }
}

/// One event of the `events` or the `releases` group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// Per-namespace sequence number, from 1, counted over the `events` group: a gap
    /// there means the listener lost events (a `releases` listener sees gaps for the
    /// imports and exports in between; a lost event shows as ENOBUFS).
    pub seq: u64,
    /// Id of the hand-off that brought the socket to this host.
    pub migration_id: u64,
    /// The socket's cookie (as `SO_COOKIE` reports it).
    pub sock_cookie: u64,
    /// The network namespace's cookie.
    pub netns_cookie: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Peer address and port.
    pub peer: SocketAddr,
    /// TCP state number: the current one for `Imported`, the one it left otherwise.
    pub tcp_state: u8,
    /// Why it left (not for `Imported`).
    pub reason: Option<Reason>,
    /// Bytes the peer acknowledged since the import.
    pub bytes_acked: u64,
    /// Bytes received since the import.
    pub bytes_received: u64,
    /// Time since the import.
    pub duration: Duration,
    /// How long a TIME_WAIT (or FIN_WAIT2) mini-socket may still answer the flow on this
    /// host (`Released` only): keep steering the flow here that long.
    pub time_wait_ms: u32,
    /// Whether the peer's FIN arrived (`Released` only).
    pub peer_fin: bool,
}

/// Receive buffer of a listener: room for a burst of thousands of events.
const LISTENER_RCVBUF: usize = 8 << 20;

/// A subscription to a group of the caller's network namespace.
pub struct EventListener {
    sock: NlSocketHandle,
    family: u16,
    pending: std::collections::VecDeque<Event>,
    /// Receive buffer, allocated once (see [`crate::client`]'s).
    buf: Vec<u8>,
}

/// The largest datagram of events taken at once.
const EVENT_BUF: usize = 64 << 10;

fn netlink(e: impl std::fmt::Display) -> Error {
    Error::Netlink(e.to_string())
}

fn proto(e: impl std::fmt::Display) -> Error {
    Error::Protocol(e.to_string())
}

impl EventListener {
    /// Joins the `events` group. Needs CAP_NET_ADMIN in the namespace: others get
    /// [`Error::Kernel`] with EPERM.
    pub fn open() -> Result<Self> {
        Self::join(Group::Events)
    }

    /// Joins `group`. Needs CAP_NET_ADMIN in the namespace: others get
    /// [`Error::Kernel`] with EPERM.
    pub fn join(group: Group) -> Result<Self> {
        let client = Client::connect()?;
        let group_id = client.group_id(group)?;
        let sock = NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty()).map_err(netlink)?;
        let _ = crate::client::set_buf(
            sock.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            LISTENER_RCVBUF,
        );
        // Tell the sender when this listener misses an event, so the module counts it
        // (`events-lost`); without it netlink drops silently on the sender's side.
        let on: libc::c_int = 1;
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_BROADCAST_ERROR,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        sock.add_mcast_membership(Groups::new_groups(&[group_id]))
            .map_err(|e| match e {
                SocketError::Io(io) => Error::Kernel(KernelError {
                    errno: io.raw_os_error().unwrap_or(0),
                    message: Some(format!("cannot join the {} group: {io}", group.name())),
                    bad_attr_offset: None,
                }),
                e => netlink(e),
            })?;
        Ok(Self {
            sock,
            family: client.family_id(),
            pending: Default::default(),
            buf: vec![0; EVENT_BUF],
        })
    }

    /// Sets the receive buffer (SO_RCVBUF; SO_RCVBUFFORCE with CAP_NET_ADMIN). A burst
    /// larger than the buffer, unread, loses events: see [`Event::seq`].
    pub fn set_receive_buffer(&self, bytes: usize) -> Result<()> {
        crate::client::set_buf(
            self.sock.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            bytes,
        )
        .map_err(netlink)
    }

    /// Waits at most `timeout` (None: forever) for the next event; `Ok(None)` on timeout.
    /// A listener whose buffer overflowed gets ENOBUFS once, then the events after the
    /// gap (see [`Event::seq`]).
    pub fn next_timeout(&mut self, timeout: Option<Duration>) -> Result<Option<Event>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        let tv = libc::timeval {
            tv_sec: timeout.map_or(0, |t| t.as_secs() as libc::time_t),
            tv_usec: timeout.map_or(0, |t| t.subsec_micros().max(1) as libc::suseconds_t),
        };
        // SAFETY: `tv` is a valid timeval for the duration of the call.
        unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        self.receive()
    }

    /// Takes what the socket holds now; `Ok(None)` when a receive timed out or (on a
    /// non-blocking socket) found nothing.
    pub(crate) fn receive(&mut self) -> Result<Option<Event>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        loop {
            let n = match crate::client::recv_datagram(self.sock.as_raw_fd(), &mut self.buf) {
                Ok(n) => n,
                Err(io) => {
                    return match io.raw_os_error() {
                        Some(libc::EAGAIN) => Ok(None),
                        Some(libc::ENOBUFS) => Err(Error::Kernel(KernelError {
                            errno: libc::ENOBUFS,
                            message: Some("listener overran: events were lost".into()),
                            bad_attr_offset: None,
                        })),
                        _ => Err(netlink(io)),
                    };
                }
            };
            let msgs = NlBuffer::<u16, Genlmsghdr<u8, u16>>::from_bytes_with_input(
                &mut std::io::Cursor::new(&self.buf[..n]),
                n,
            )
            .map_err(netlink)?;
            for m in msgs {
                if *m.nl_type() != self.family || m.nl_flags().contains(NlmF::ACK) {
                    continue;
                }
                if let NlPayload::Payload(p) = m.nl_payload() {
                    self.pending.push_back(decode(p)?);
                }
            }
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
        }
    }
}

impl AsRawFd for EventListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl Iterator for EventListener {
    type Item = Result<Event>;

    /// Blocks until the next event.
    fn next(&mut self) -> Option<Self::Item> {
        self.next_timeout(None).transpose()
    }
}

fn addr(family: u16, bytes: &[u8], port: u16) -> Result<SocketAddr> {
    let ip = match (i32::from(family), bytes.len()) {
        (libc::AF_INET, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        (libc::AF_INET6, 16) => {
            let a: [u8; 16] = bytes.try_into().map_err(proto)?;
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => {
            return Err(proto(format!(
                "event address of family {family}, {} bytes",
                bytes.len()
            )))
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// A socket the module tracks in the caller's namespace, as
/// [`Client::list_tracked`](crate::Client::list_tracked) reports it (`SOCK_LIST`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackedSocket {
    /// Id of the hand-off that brought the socket to this host.
    pub migration_id: u64,
    /// The namespace's last event sequence number when this entry was listed: events
    /// numbered above it came later.
    pub seq: u64,
    /// The socket's cookie (as `SO_COOKIE` reports it).
    pub sock_cookie: u64,
    /// The network namespace's cookie.
    pub netns_cookie: u64,
    /// Local address and port.
    pub local: SocketAddr,
    /// Peer address and port.
    pub peer: SocketAddr,
    /// TCP state number now.
    pub tcp_state: u8,
    /// Time since the import.
    pub since_import: Duration,
}

/// Decodes one message of a `SOCK_LIST` dump.
pub(crate) fn decode_tracked(p: &Genlmsghdr<u8, u16>) -> Result<TrackedSocket> {
    if Command::from(*p.cmd()) != Command::SockList {
        return Err(proto(format!("unexpected command {} in a listing", p.cmd())));
    }
    let ev = decode_attrs(p, EventKind::Imported)?;
    Ok(TrackedSocket {
        migration_id: ev.migration_id,
        seq: ev.seq,
        sock_cookie: ev.sock_cookie,
        netns_cookie: ev.netns_cookie,
        local: ev.local,
        peer: ev.peer,
        tcp_state: ev.tcp_state,
        since_import: ev.duration,
    })
}

/// Decodes one message of the `events` group.
pub(crate) fn decode(p: &Genlmsghdr<u8, u16>) -> Result<Event> {
    let kind = match Command::from(*p.cmd()) {
        Command::SockImported => EventKind::Imported,
        Command::SockExported => EventKind::Exported,
        Command::SockReleased => EventKind::Released,
        _ => return Err(proto(format!("unknown event command {}", p.cmd()))),
    };
    decode_attrs(p, kind)
}

/// The attributes of an event (or a listing) as an [`Event`] of `kind`.
fn decode_attrs(p: &Genlmsghdr<u8, u16>, kind: EventKind) -> Result<Event> {
    let find = |a: EventAttr| -> Option<&[u8]> {
        let t = u16::from(a);
        p.attrs()
            .iter()
            .find(|x| *x.nla_type().nla_type() == t)
            .map(|x| x.nla_payload().as_ref())
    };
    let need = |a: EventAttr| find(a).ok_or_else(|| proto(format!("event without {a:?}")));
    let int = |a: EventAttr| -> Result<u64> {
        let b = need(a)?;
        Ok(match b.len() {
            1 => u64::from(b[0]),
            2 => u64::from(u16::from_ne_bytes([b[0], b[1]])),
            4 => u64::from(u32::from_ne_bytes(b.try_into().map_err(proto)?)),
            8 => u64::from_ne_bytes(b.try_into().map_err(proto)?),
            n => return Err(proto(format!("{a:?} of {n} bytes"))),
        })
    };
    let opt = |a: EventAttr| if find(a).is_some() { int(a) } else { Ok(0) };
    let family = int(EventAttr::Family)? as u16;
    Ok(Event {
        kind,
        seq: int(EventAttr::Seq)?,
        migration_id: int(EventAttr::MigrationId)?,
        sock_cookie: int(EventAttr::SockCookie)?,
        netns_cookie: int(EventAttr::NetnsCookie)?,
        local: addr(family, need(EventAttr::Saddr)?, int(EventAttr::Sport)? as u16)?,
        peer: addr(family, need(EventAttr::Daddr)?, int(EventAttr::Dport)? as u16)?,
        tcp_state: int(EventAttr::TcpState)? as u8,
        reason: find(EventAttr::Reason).map(|b| Reason::from(b.first().copied().unwrap_or(0))),
        bytes_acked: opt(EventAttr::BytesAcked)?,
        bytes_received: opt(EventAttr::BytesReceived)?,
        duration: Duration::from_nanos(opt(EventAttr::DurationNs)?),
        time_wait_ms: opt(EventAttr::TimeWaitMs)? as u32,
        peer_fin: opt(EventAttr::PeerFin)? != 0,
    })
}
