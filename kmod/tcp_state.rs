// SPDX-License-Identifier: GPL-2.0

//! Capture of a TCP socket's whole state, queues included, under its socket lock.

use crate::bindings as b;
use crate::compat;
use crate::genl::{errno, ChunkedAttr, Message};
use crate::ktls::Tls;
use crate::socket::SockLock;
use crate::uapi::{BUF_LOCK_RCV, BUF_LOCK_SND, MAX_QUEUE_BYTES};
use core::ptr::{addr_of, NonNull};
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CStr;

/// Why a socket cannot be exported: errno and the extended-ack message.
pub(crate) type Refusal = (Error, &'static CStr);

/// The state of a connection as the blob carries it: what `capture` reads from a socket
/// and `Blob::decode` reads back from a request, one definition for both sides.
pub(crate) struct Conn {
    pub(crate) family: u16,
    /// Local and peer address: 4 bytes for AF_INET, 16 for AF_INET6.
    pub(crate) saddr: [u8; 16],
    pub(crate) daddr: [u8; 16],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) snd_una: u32,
    pub(crate) snd_nxt: u32,
    pub(crate) write_seq: u32,
    pub(crate) rcv_nxt: u32,
    /// The peer's FIN was received (it is counted in `rcv_nxt`, not in the queue).
    pub(crate) fin_received: bool,
    pub(crate) mss_clamp: u16,
    pub(crate) snd_wscale: u8,
    pub(crate) rcv_wscale: u8,
    pub(crate) timestamps: bool,
    pub(crate) sack: bool,
    pub(crate) wscale_ok: bool,
    /// The socket's timestamp clock as the peer sees it (offset included; low bit: the
    /// clock counts microseconds).
    pub(crate) ts_now: u32,
    pub(crate) ts_recent: u32,
    pub(crate) snd_wl1: u32,
    pub(crate) snd_wnd: u32,
    pub(crate) max_window: u32,
    pub(crate) rcv_wnd: u32,
    pub(crate) rcv_wup: u32,
    pub(crate) snd_cwnd: u32,
    pub(crate) snd_ssthresh: u32,
    pub(crate) srtt_us: u32,
    pub(crate) mdev_us: u32,
    pub(crate) cc_name: [u8; 16],
    pub(crate) nodelay: bool,
    pub(crate) cork: bool,
    pub(crate) keepalive: bool,
    pub(crate) mark: u32,
    pub(crate) user_timeout: u32,
    pub(crate) notsent_lowat: u32,
    /// Keepalive idle time, probe interval (seconds) and probe count; 0: the sysctl.
    pub(crate) keepidle: u32,
    pub(crate) keepintvl: u32,
    pub(crate) keepcnt: u32,
    pub(crate) sndbuf: u32,
    pub(crate) rcvbuf: u32,
    /// `BUF_LOCK_*` bits: which buffer sizes the application fixed.
    pub(crate) buf_locks: u8,
    /// IP_TOS or IPV6_TCLASS.
    pub(crate) tos: u8,
    pub(crate) window_clamp: u32,
    pub(crate) rcv_ssthresh: u32,
    pub(crate) reuseaddr: bool,
    /// Bytes from `snd_una` to `write_seq`: the first `snd_nxt - snd_una` were sent.
    pub(crate) send_len: u32,
    /// Bytes received, not yet read by the application, from `copied_seq` on.
    pub(crate) recv_len: u32,
    /// kTLS state, for a socket with the tls upper-layer protocol.
    pub(crate) tls: Option<Tls>,
}

impl Conn {
    pub(crate) fn addr_len(&self) -> usize {
        if u32::from(self.family) == b::AF_INET {
            4
        } else {
            16
        }
    }
}

/// Everything SOCK_EXPORT reports about a connection: its state, and where in the
/// socket that state was read.
pub(crate) struct TcpState {
    pub(crate) conn: Conn,
    pub(crate) state: u8,
    /// Where the unread data starts.
    copied_seq: u32,
}

impl core::ops::Deref for TcpState {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

fn refuse(code: u32, msg: &'static CStr) -> Refusal {
    (errno(code), msg)
}

/// Appends the payload of `skb` from sequence number `*from` on to `out` and moves
/// `*from` past it; returns whether the segment carried a FIN.
///
/// Segments of a receive queue may overlap: a retransmission that starts before
/// `rcv_nxt` and ends after it is queued whole (`tcp_data_queue`, "partial packet"), and
/// `tcp_recvmsg` skips what it already passed. The cursor does the same, so every byte is
/// copied once.
///
/// # Safety
///
/// `skb` must be a TCP skb on a queue of a socket whose lock the caller holds.
unsafe fn copy_payload(
    skb: *mut b::sk_buff,
    from: &mut u32,
    out: &mut ChunkedAttr<'_, '_>,
) -> Result<bool, Refusal> {
    // SAFETY: TCP queue skbs carry a `tcp_skb_cb` in their control buffer.
    let cb = unsafe { &*b::prism_tcp_skb_cb(skb) };
    let flags = compat::tcp_flags(cb);
    let fin = flags & u16::from(b::PRISM_TCPHDR_FIN) != 0;
    if flags & u16::from(b::PRISM_TCPHDR_SYN) != 0 {
        return Err(refuse(
            b::EBUSY,
            c_str!("a SYN is still queued: handshake not finished"),
        ));
    }
    let end = cb.end_seq.wrapping_sub(u32::from(fin));
    // Sequence arithmetic is modulo 2^32: a positive distance from the segment's start
    // to `from` is the part already acknowledged, read or copied that is skipped.
    let before = from.wrapping_sub(cb.seq) as i32;
    let span = end.wrapping_sub(cb.seq);
    if before < 0 && span > 0 {
        return Err(refuse(
            b::EIO,
            c_str!("queue has a hole in its sequence numbers"),
        ));
    }
    let skip = before.max(0) as u32;
    if skip >= span {
        return Ok(fin);
    }
    *from = end;
    let len = (span - skip) as usize;
    // SAFETY: the skb (locked queue, caller) holds `span` payload bytes.
    unsafe { out.append_skb(skb, skip as usize, len) }.map_err(|_| {
        refuse(
            b::EIO,
            c_str!("queue holds more bytes than its sequence numbers say"),
        )
    })?;
    Ok(fin)
}

/// Walks a `sk_buff_head` list.
///
/// # Safety
///
/// `head` must be a queue of a socket whose lock the caller holds.
unsafe fn copy_list(
    head: *mut b::sk_buff_head,
    from: u32,
    out: &mut ChunkedAttr<'_, '_>,
) -> Result<bool, Refusal> {
    let end = head.cast::<b::sk_buff>();
    let mut from = from;
    let mut fin = false;
    // SAFETY: the queue is a circular list headed by `head`, stable under the lock.
    let mut skb = unsafe { (*head).__bindgen_anon_1.__bindgen_anon_1.next };
    while skb != end {
        // SAFETY: as above; each element is a TCP skb of this socket.
        fin |= unsafe { copy_payload(skb, &mut from, out)? };
        // SAFETY: as above; `next` is the first field of `struct sk_buff` (its list
        // linkage), which is why `sk_buff` can stay opaque in the bindings.
        skb = unsafe { *skb.cast::<*mut b::sk_buff>() };
    }
    Ok(fin)
}

/// The congestion control algorithm's name (NUL-padded; empty if none is set).
///
/// # Safety
///
/// `tp` must be a socket whose lock the caller holds, or that only the caller can reach.
pub(crate) unsafe fn cc_name(tp: &b::tcp_sock) -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: the ops, when set, are a registered algorithm that outlives the socket.
    if let Some(ops) = unsafe { tp.inet_conn.icsk_ca_ops.as_ref() } {
        for (d, s) in name.iter_mut().zip(ops.name.iter()) {
            *d = *s as u8;
        }
    }
    name
}

impl TcpState {
    /// Captures the state of the locked socket.
    pub(crate) fn capture(lock: &SockLock<'_>) -> Result<Self, Refusal> {
        let sk = lock.sk();
        let tp = sk.cast::<b::tcp_sock>();
        // SAFETY: the socket lock is held for the whole function: the fields read below
        // are stable (the receive path defers to the backlog). `tp` is only used after
        // the type and protocol checks show `sk` is embedded in a `tcp_sock`.
        unsafe {
            if (*sk).sk_type != b::PRISM_SOCK_STREAM
                || u32::from((*sk).sk_protocol) != b::IPPROTO_TCP
            {
                return Err(refuse(b::EOPNOTSUPP, c_str!("fd is not a TCP socket")));
            }
            let common = &(*sk).__sk_common;
            let family = common.skc_family;
            let state = common.skc_state;
            match u32::from(state) {
                b::TCP_ESTABLISHED | b::TCP_CLOSE_WAIT => {}
                b::TCP_LISTEN => return Err(refuse(b::EINVAL, c_str!("fd is a listening socket"))),
                _ => {
                    return Err(refuse(
                        b::EOPNOTSUPP,
                        c_str!("TCP state is not ESTABLISHED or CLOSE_WAIT"),
                    ))
                }
            }
            // kTLS keeps its own state and puts ciphertext on the queues: the blob
            // carries that state, or the export is refused.
            let tls = Tls::capture(sk, state)?;
            if (*tp).repair() != 0 {
                return Err(refuse(b::EBUSY, c_str!("socket is in TCP_REPAIR mode")));
            }
            // An urgent byte's state (announced, arrived, read with MSG_OOB) lives
            // outside the queues, and the byte stays in the receive queue until the
            // reader passes it (TCP clears `urg_data` then): a blob would lose the
            // byte or hand it over in band.
            if (*tp).urg_data != 0 {
                return Err(refuse(
                    b::EOPNOTSUPP,
                    c_str!("urgent (MSG_OOB) data is pending: read up to and past it first"),
                ));
            }
            // A sockmap/psock (or another in-kernel user) keeps its own state on the
            // socket and diverts its data: the imported socket would have neither.
            if !(*sk).sk_user_data.is_null() {
                return Err(refuse(
                    b::EOPNOTSUPP,
                    c_str!("socket is attached to an in-kernel user (sockmap/psock)"),
                ));
            }
            // Signing keys do not travel and cannot be read back: the imported socket
            // would send unsigned segments, which the peer drops until the connection dies.
            if b::prism_tcp_md5_keys(sk) {
                return Err(refuse(
                    b::EOPNOTSUPP,
                    c_str!("socket signs its segments with TCP-MD5 keys, which cannot be carried"),
                ));
            }
            if b::prism_tcp_ao_keys(sk) {
                return Err(refuse(
                    b::EOPNOTSUPP,
                    c_str!("socket signs its segments with TCP-AO keys, which cannot be carried"),
                ));
            }
            let mut saddr = [0u8; 16];
            let mut daddr = [0u8; 16];
            match u32::from(family) {
                b::AF_INET => {
                    let a = &common.__bindgen_anon_1.__bindgen_anon_1;
                    saddr[..4].copy_from_slice(&a.skc_rcv_saddr.to_ne_bytes());
                    daddr[..4].copy_from_slice(&a.skc_daddr.to_ne_bytes());
                }
                b::AF_INET6 => {
                    saddr = common.skc_v6_rcv_saddr.in6_u.u6_addr8;
                    daddr = common.skc_v6_daddr.in6_u.u6_addr8;
                }
                _ => {
                    return Err(refuse(
                        b::EAFNOSUPPORT,
                        c_str!("socket is neither AF_INET nor AF_INET6"),
                    ))
                }
            }
            let ports = &common.__bindgen_anon_3.__bindgen_anon_1;

            let t = &*tp;
            let send_len = t.write_seq.wrapping_sub(t.snd_una);
            let held = tls.as_ref().map_or(0, |t| t.rx_held);
            let decrypted = tls.as_ref().map_or(0, |t| t.rx_decrypted.0);
            let recv_max = t.rcv_nxt.wrapping_sub(t.copied_seq);
            if u64::from(send_len) + u64::from(recv_max) + u64::from(held) + u64::from(decrypted)
                > u64::from(MAX_QUEUE_BYTES)
            {
                return Err(refuse(
                    b::E2BIG,
                    c_str!("queued bytes exceed the module's max-queue-bytes"),
                ));
            }
            // A FIN the application has not read yet ends the last queued segment; it
            // is not data (`fin_received` and `rcv_nxt` carry it).
            let tail = b::prism_skb_peek_tail(&mut (*sk).sk_receive_queue);
            let fin_unread = !tail.is_null()
                && compat::tcp_flags(&*b::prism_tcp_skb_cb(tail)) & u16::from(b::PRISM_TCPHDR_FIN)
                    != 0;
            let recv_len = recv_max.wrapping_sub(u32::from(fin_unread)) + held;

            let icsk = &t.inet_conn;
            let cc_name = cc_name(t);
            let rx = &t.rx_opt;
            let nonagle = u32::from(t.nonagle());
            let userlocks = u32::from((*sk).sk_userlocks);
            let mut buf_locks = 0;
            if userlocks & b::SOCK_SNDBUF_LOCK != 0 {
                buf_locks |= BUF_LOCK_SND;
            }
            if userlocks & b::SOCK_RCVBUF_LOCK != 0 {
                buf_locks |= BUF_LOCK_RCV;
            }
            let tos = if u32::from(family) == b::AF_INET6 {
                let np = b::prism_inet6_sk(sk);
                if np.is_null() {
                    0
                } else {
                    (*np).tclass
                }
            } else {
                icsk.icsk_inet.tos
            };
            Ok(Self {
                state,
                copied_seq: t.copied_seq,
                conn: Conn {
                    family,
                    saddr,
                    daddr,
                    sport: ports.skc_num,
                    dport: u16::from_be(ports.skc_dport),
                    snd_una: t.snd_una,
                    snd_nxt: t.snd_nxt,
                    write_seq: t.write_seq,
                    rcv_nxt: t.rcv_nxt,
                    fin_received: u32::from(state) == b::TCP_CLOSE_WAIT,
                    mss_clamp: rx.mss_clamp,
                    snd_wscale: rx.snd_wscale() as u8,
                    rcv_wscale: rx.rcv_wscale() as u8,
                    timestamps: rx.tstamp_ok() != 0,
                    sack: rx.sack_ok() != 0,
                    wscale_ok: rx.wscale_ok() != 0,
                    // As TCP_TIMESTAMP reports it: the clock read now, as the socket's
                    // cached one lags by the time since its last packet event and the
                    // imported clock would run that far behind (never below the cached
                    // value, which segments carried); the low bit says the clock counts
                    // microseconds, which TCP_TIMESTAMP's setter takes back.
                    ts_now: {
                        let usec = t.tcp_usec_ts() != 0;
                        let cached = b::prism_tcp_time_stamp_ts(tp);
                        let now = b::prism_tcp_clock_ts(usec);
                        let clock = if (now.wrapping_sub(cached) as i32) > 0 {
                            now
                        } else {
                            cached
                        };
                        let ts = clock.wrapping_add(t.tsoffset);
                        if usec {
                            ts | 1
                        } else {
                            ts & !1
                        }
                    },
                    ts_recent: rx.ts_recent,
                    snd_wl1: t.snd_wl1,
                    snd_wnd: t.snd_wnd,
                    max_window: t.max_window,
                    rcv_wnd: t.rcv_wnd,
                    rcv_wup: t.rcv_wup,
                    snd_cwnd: t.snd_cwnd,
                    snd_ssthresh: t.snd_ssthresh,
                    srtt_us: t.srtt_us,
                    mdev_us: t.mdev_us,
                    cc_name,
                    nodelay: nonagle & b::TCP_NAGLE_OFF != 0,
                    cork: nonagle & b::TCP_NAGLE_CORK != 0,
                    keepalive: b::prism_sock_flag_keepopen(sk),
                    mark: (*sk).sk_mark,
                    user_timeout: icsk.icsk_user_timeout,
                    notsent_lowat: t.notsent_lowat,
                    keepidle: t.keepalive_time / b::PRISM_HZ,
                    keepintvl: t.keepalive_intvl / b::PRISM_HZ,
                    keepcnt: u32::from(t.keepalive_probes),
                    sndbuf: (*sk).sk_sndbuf as u32,
                    rcvbuf: (*sk).sk_rcvbuf as u32,
                    buf_locks,
                    tos,
                    window_clamp: t.window_clamp,
                    rcv_ssthresh: t.rcv_ssthresh,
                    reuseaddr: common.skc_reuse() != 0,
                    send_len,
                    recv_len,
                    tls,
                },
            })
        }
    }

    /// Bytes queued on `sk` as read without its lock: a size hint for the reply, which
    /// `capture` then checks under the lock. 0 for a socket that is not TCP.
    pub(crate) fn queued_unlocked(sk: NonNull<b::sock>) -> usize {
        let sk = sk.as_ptr();
        // SAFETY: the caller's file reference keeps `sk` alive; type and protocol are
        // fixed at creation. The sequence numbers are read as `READ_ONCE` would: a torn
        // or stale value only makes the hint wrong, never the capture.
        unsafe {
            if (*sk).sk_type != b::PRISM_SOCK_STREAM
                || u32::from((*sk).sk_protocol) != b::IPPROTO_TCP
            {
                return 0;
            }
            let tp = sk.cast::<b::tcp_sock>();
            let read = |p: *const u32| core::ptr::read_volatile(p);
            let send = read(addr_of!((*tp).write_seq)).wrapping_sub(read(addr_of!((*tp).snd_una)));
            let recv = read(addr_of!((*tp).rcv_nxt)).wrapping_sub(read(addr_of!((*tp).copied_seq)));
            (u64::from(send) + u64::from(recv)).min(u64::from(MAX_QUEUE_BYTES)) as usize
        }
    }

    /// Whether `sk` has an upper-layer protocol (kTLS), read without its lock: a size
    /// hint for the reply, as `queued_unlocked`.
    pub(crate) fn ulp_unlocked(sk: NonNull<b::sock>) -> bool {
        let sk = sk.as_ptr();
        // SAFETY: as in `queued_unlocked`; the pointer is only compared with null.
        unsafe {
            (*sk).sk_type == b::PRISM_SOCK_STREAM
                && u32::from((*sk).sk_protocol) == b::IPPROTO_TCP
                && !core::ptr::read_volatile(addr_of!(
                    (*sk.cast::<b::inet_connection_sock>()).icsk_ulp_ops
                ))
                .is_null()
        }
    }

    /// Writes the send and receive queues of the socket this state was captured from
    /// as `send_kind` and `recv_kind` attributes of at most `chunk` bytes, copied
    /// straight from the socket's buffers into `msg`.
    pub(crate) fn write_queues(
        &self,
        lock: &SockLock<'_>,
        msg: &mut Message<'_>,
        (send_kind, recv_kind, chunk): (u16, u16, usize),
    ) -> Result<(), Refusal> {
        let sk = lock.sk();
        // SAFETY: the socket lock taken for `capture` is still held (`lock`), so the
        // queues are as `capture` measured them.
        unsafe {
            let mut out = ChunkedAttr::new(msg, send_kind, self.send_len as usize, chunk);
            let mut from = self.snd_una;
            let mut skb = b::prism_skb_rb_first(&mut (*sk).__bindgen_anon_2.tcp_rtx_queue);
            while !skb.is_null() {
                copy_payload(skb, &mut from, &mut out)?;
                skb = b::prism_skb_rb_next(skb);
            }
            copy_list(&mut (*sk).sk_write_queue, from, &mut out)?;
            if !out.complete() {
                return Err(refuse(
                    b::EIO,
                    c_str!("send queue does not match its sequence numbers"),
                ));
            }
            let mut out = ChunkedAttr::new(msg, recv_kind, self.recv_len as usize, chunk);
            // A kTLS record the parser copied out of the queue comes first.
            if let Some((held, len)) = crate::ktls::held_record(sk) {
                // The parser's skb holds `len` bytes; the socket lock is held.
                out.append_skb(held, 0, len as usize).map_err(|_| {
                    refuse(
                        b::EIO,
                        c_str!("the kTLS parser's record does not match its length"),
                    )
                })?;
            }
            copy_list(&mut (*sk).sk_receive_queue, self.copied_seq, &mut out)?;
            if !out.complete() {
                return Err(refuse(
                    b::EIO,
                    c_str!("receive queue does not match its sequence numbers"),
                ));
            }
            if self.tls.as_ref().is_some_and(|t| t.rx_decrypted.1 > 0) {
                crate::ktls::write_decrypted(sk, msg)?;
            }
        }
        Ok(())
    }
}
