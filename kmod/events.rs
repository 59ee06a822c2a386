// SPDX-License-Identifier: GPL-2.0

//! Events of the `events` multicast group: what one tracked socket did on this host
//! (imported, exported again, released), and how an event is classified and encoded.
//! `SOCK_RELEASED` also goes to the `releases` group. Queueing and sending is the
//! tracker's (`tracker.rs`).

use crate::bindings as b;
use crate::genl::{AttrSink, Message, SkbAttrs};
use crate::uapi::{cmd, event as a, reason};
use crate::uapi::{GROUP_EVENTS, GROUP_RELEASES};
use core::ffi::c_int;
use kernel::prelude::*;

/// Attribute bytes of the largest event (`SOCK_RELEASED` over IPv6: seven padded u64s,
/// two addresses, seven small attributes), rounded up.
const EVENT_SIZE: usize = 256;

/// A counted reference to a network namespace.
pub(crate) struct NetRef(*mut b::net);

impl NetRef {
    /// Takes a reference on `net`.
    ///
    /// # Safety
    ///
    /// `net` must be alive (for example, the namespace of a socket we hold).
    pub(crate) unsafe fn get(net: *mut b::net) -> Self {
        // SAFETY: the caller guarantees `net` is alive, so its count is not zero.
        Self(unsafe { b::prism_get_net(net) })
    }

    pub(crate) fn as_ptr(&self) -> *mut b::net {
        self.0
    }
}

impl Drop for NetRef {
    fn drop(&mut self) {
        // SAFETY: the reference was taken in `get`; process or softirq context.
        unsafe { b::prism_put_net(self.0) };
    }
}

/// What names a tracked socket in its events and in a `SOCK_LIST` entry.
#[derive(Clone, Copy, Default)]
pub(crate) struct SocketId {
    pub(crate) migration_id: u64,
    pub(crate) sock_cookie: u64,
    pub(crate) family: u16,
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

impl SocketId {
    /// Puts the attributes every event and every `SOCK_LIST` entry begins with: the
    /// socket, the namespace's sequence number `seq`, and the TCP state.
    ///
    /// # Safety
    ///
    /// `net` must be alive.
    pub(crate) unsafe fn put(
        &self,
        msg: &mut impl SkbAttrs,
        net: *mut b::net,
        seq: u64,
        tcp_state: u8,
    ) -> Result {
        let alen = if u32::from(self.family) == b::AF_INET {
            4
        } else {
            16
        };
        msg.put_u64(a::MIGRATION_ID, self.migration_id, a::PAD)?;
        msg.put_u64(a::SEQ, seq, a::PAD)?;
        msg.put_u64(a::SOCK_COOKIE, self.sock_cookie, a::PAD)?;
        // SAFETY: the caller keeps `net` alive.
        let netns_cookie = unsafe { b::prism_net_cookie(net) };
        msg.put_u64(a::NETNS_COOKIE, netns_cookie, a::PAD)?;
        msg.put_u16(a::FAMILY, self.family)?;
        msg.put(a::SADDR, &self.saddr[..alen])?;
        msg.put(a::DADDR, &self.daddr[..alen])?;
        msg.put_u16(a::SPORT, self.sport)?;
        msg.put_u16(a::DPORT, self.dport)?;
        msg.put_u8(a::TCP_STATE, tcp_state)
    }
}

/// One event, complete but for its sequence number, which is given when it is sent.
pub(crate) struct Event {
    pub(crate) cmd: u8,
    pub(crate) net: NetRef,
    pub(crate) id: SocketId,
    pub(crate) tcp_state: u8,
    /// 0 for `SOCK_IMPORTED`.
    pub(crate) reason: u8,
    pub(crate) bytes_acked: u64,
    pub(crate) bytes_received: u64,
    pub(crate) duration_ns: u64,
    pub(crate) time_wait_ms: u32,
    pub(crate) peer_fin: bool,
    /// Link of the tracker's pending queue.
    pub(crate) next: *mut Event,
}

/// How a tracked socket that reached TCP_CLOSE from `old` ended: reason, how long a
/// TIME_WAIT (or FIN_WAIT2) mini-socket may still answer the flow here, and whether the
/// peer's FIN arrived.
///
/// # Safety
///
/// `sk` must be a live TCP socket, called from its state change to TCP_CLOSE.
pub(crate) unsafe fn classify(sk: *const b::sock, old: c_int) -> (u8, u32, bool) {
    let tp = sk.cast::<b::tcp_sock>();
    // SAFETY: the caller guarantees `sk` is a live TCP socket.
    let (err, shutdown, fin_acked, peer_fin) = unsafe {
        (
            (*sk).sk_err,
            u32::from((*sk).sk_shutdown),
            (*tp).snd_una == (*tp).write_seq,
            // SOCK_DONE: the peer's FIN was received (close() sets RCV_SHUTDOWN too, so
            // sk_shutdown cannot tell).
            b::prism_sock_flag_done(sk),
        )
    };
    let closing = [
        b::TCP_FIN_WAIT1,
        b::TCP_FIN_WAIT2,
        b::TCP_CLOSING,
        b::TCP_LAST_ACK,
    ]
    .iter()
    .any(|s| *s as c_int == old);
    let why = match err as u32 {
        0 if closing && fin_acked && shutdown & b::SEND_SHUTDOWN != 0 => reason::FIN,
        0 => reason::ABORT,
        b::ECONNRESET | b::EPIPE | b::ECONNREFUSED => reason::RST,
        _ => reason::TIMEOUT,
    };
    // Who closed first leaves a TIME_WAIT (or, if the application closed before the
    // peer's FIN came, a FIN_WAIT2 mini-socket), which lives at most TCP_TIMEWAIT_LEN.
    let time_wait = if why == reason::FIN && old != b::TCP_LAST_ACK as c_int {
        b::PRISM_TCP_TIMEWAIT_LEN_MS
    } else {
        0
    };
    (why, time_wait, peer_fin)
}

/// The groups that carry events `cmd`: every event goes to `events`, a release to
/// `releases` as well.
fn groups_of(cmd: u8) -> &'static [u32] {
    if cmd == cmd::SOCK_RELEASED {
        &[GROUP_EVENTS, GROUP_RELEASES]
    } else {
        &[GROUP_EVENTS]
    }
}

/// Whether a group that carries events `cmd` has a listener. Netlink keeps one
/// listener bitmap per group for the whole host, so this is true for every namespace
/// once any has a listener; the message then finds none in `net` (ESRCH). Callable
/// in softirq: the check reads the groups' bitmaps under RCU.
///
/// # Safety
///
/// `family` must be registered and `net` alive.
pub(crate) unsafe fn has_listeners(
    family: *const b::genl_family,
    net: *mut b::net,
    cmd: u8,
) -> bool {
    groups_of(cmd).iter().any(|&group| {
        // SAFETY: the caller keeps the family registered and `net` alive.
        unsafe { b::prism_genl_has_listeners(family, net, group) }
    })
}

impl Event {
    /// Sends the event with sequence number `seq` to the listeners of its groups in
    /// its namespace; the netlink result (0, ESRCH, ENOBUFS or an allocation failure;
    /// the first failure when the event goes to two groups).
    ///
    /// # Safety
    ///
    /// `family` must stay registered during the call.
    pub(crate) unsafe fn send(&self, family: *const b::genl_family, seq: u64) -> c_int {
        let mut result = -(b::ESRCH as c_int);
        for &group in groups_of(self.cmd) {
            // SAFETY: the caller keeps the family registered; the event holds a
            // reference on its namespace.
            if !unsafe { b::prism_genl_has_listeners(family, self.net.as_ptr(), group) } {
                continue;
            }
            // SAFETY: as above.
            let ret = unsafe { self.send_to(family, seq, group) };
            // The first failure stays; a delivery replaces "nobody listened".
            if result == -(b::ESRCH as c_int) || (result == 0 && ret != -(b::ESRCH as c_int)) {
                result = ret;
            }
        }
        result
    }

    /// # Safety
    ///
    /// `family` must stay registered during the call.
    unsafe fn send_to(&self, family: *const b::genl_family, seq: u64, group: u32) -> c_int {
        // SAFETY: the caller keeps the family registered.
        let msg = unsafe { Message::notification(family, self.cmd, EVENT_SIZE) };
        let Ok(mut msg) = msg else {
            return -(b::ENOMEM as c_int);
        };
        if self.encode(&mut msg, seq).is_err() {
            return -(b::EMSGSIZE as c_int);
        }
        // SAFETY: as above; the event's namespace reference keeps `net` alive.
        unsafe { msg.multicast(family, self.net.as_ptr(), group) }
    }

    fn encode(&self, msg: &mut Message<'_>, seq: u64) -> Result {
        // SAFETY: the event holds a reference on its namespace.
        unsafe { self.id.put(msg, self.net.as_ptr(), seq, self.tcp_state) }?;
        if self.cmd != cmd::SOCK_IMPORTED {
            msg.put_u8(a::REASON, self.reason)?;
            msg.put_u64(a::BYTES_ACKED, self.bytes_acked, a::PAD)?;
            msg.put_u64(a::BYTES_RECEIVED, self.bytes_received, a::PAD)?;
            msg.put_u64(a::DURATION_NS, self.duration_ns, a::PAD)?;
        }
        if self.cmd == cmd::SOCK_RELEASED {
            msg.put_u32(a::TIME_WAIT_MS, self.time_wait_ms)?;
            msg.put_u8(a::PEER_FIN, self.peer_fin.into())?;
        }
        Ok(())
    }
}
