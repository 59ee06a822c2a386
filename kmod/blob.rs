// SPDX-License-Identifier: GPL-2.0

//! The state blob both ways: `encode` writes a captured state's fixed attributes into
//! a `SOCK_EXPORT` reply (the queues follow from `tcp_state.rs`), and `Blob::decode`
//! reads and validates a `SOCK_IMPORT` request: the blob, plus the importer's own
//! attributes. Everything is checked there, before a socket exists, so a refusal leaves
//! nothing behind.

use crate::bindings as b;
use crate::genl::{errno, AttrSink, Request};
use crate::ktls::{Cipher, Keys, Tls, REC_SEQ, RX_ATTRS, TX_ATTRS};
use crate::tcp_state::{Conn, TcpState};
use crate::uapi::policy::SOCK_IMPORT_MAXATTR as IMPORT_MAXATTR;
use crate::uapi::{state as a, BLOB_VERSION, MAX_QUEUE_BYTES};
use kernel::alloc::KVec;
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CStr;

/// A refusal: errno, extack message, and the attribute it is about.
pub(crate) type Invalid<'a> = (Error, &'static CStr, Option<&'a b::nlattr>);

/// Largest buffer size accepted for SO_SNDBUF/SO_RCVBUF (the kernel's own cap, INT_MAX/2).
const MAX_BUF: u32 = i32::MAX as u32 / 2;
/// RFC 7323: a window scale above 14 is an error.
const MAX_WSCALE: u8 = 14;
/// The kernel's bounds for an MSS (TCP_MIN_MSS, and the largest that fits an IPv4 packet).
const MSS_MIN: u16 = 88;
const MSS_MAX: u16 = 65535 - 40;
/// The largest window TCP can announce, and so the largest useful window clamp
/// (`tcp_select_initial_window` caps the clamp there).
const WINDOW_MAX: u32 = 65535 << MAX_WSCALE;
/// TCP_RTO_MAX (120 s) in the fixed-point units of `srtt_us` (<< 3) and `mdev_us` (<< 2).
const SRTT_MAX: u32 = 120_000_000 << 3;
const MDEV_MAX: u32 = 120_000_000 << 2;

macro_rules! names {
    ($($kind:ident => $name:literal),* $(,)?) => {
        fn missing(kind: u16) -> &'static CStr {
            match kind {
                $(a::$kind => c_str!(concat!("missing attribute: ", $name)),)*
                _ => c_str!("missing attribute"),
            }
        }
        fn duplicate(kind: u16) -> &'static CStr {
            match kind {
                $(a::$kind => c_str!(concat!("attribute given twice: ", $name)),)*
                _ => c_str!("attribute given twice"),
            }
        }
        fn bad_len(kind: u16) -> &'static CStr {
            match kind {
                $(a::$kind => c_str!(concat!($name, ": address length does not match the family")),)*
                _ => c_str!("address length does not match the family"),
            }
        }
        fn not_bool(kind: u16) -> &'static CStr {
            match kind {
                $(a::$kind => c_str!(concat!($name, " must be 0 or 1")),)*
                _ => c_str!("flag must be 0 or 1"),
            }
        }
    };
}

names! {
    BLOB_VERSION => "blob-version", FAMILY => "family", SADDR => "saddr", DADDR => "daddr",
    SPORT => "sport", DPORT => "dport", TCP_STATE => "tcp-state", SND_UNA => "snd-una",
    SND_NXT => "snd-nxt", WRITE_SEQ => "write-seq", RCV_NXT => "rcv-nxt",
    FIN_RECEIVED => "fin-received", MSS_CLAMP => "mss-clamp", SND_WSCALE => "snd-wscale",
    RCV_WSCALE => "rcv-wscale", TIMESTAMPS => "timestamps", SACK => "sack",
    WSCALE_OK => "wscale-ok", TS_NOW => "ts-now", TS_RECENT => "ts-recent",
    SND_WL1 => "snd-wl1", SND_WND => "snd-wnd", MAX_WINDOW => "max-window",
    RCV_WND => "rcv-wnd", RCV_WUP => "rcv-wup", SND_CWND => "snd-cwnd",
    SND_SSTHRESH => "snd-ssthresh", SRTT_US => "srtt-us", MDEV_US => "mdev-us",
    CC_NAME => "cc-name", NODELAY => "nodelay", CORK => "cork", KEEPALIVE => "keepalive",
    MARK => "mark", USER_TIMEOUT => "user-timeout", NOTSENT_LOWAT => "notsent-lowat",
    KEEPIDLE => "keepidle", KEEPINTVL => "keepintvl", KEEPCNT => "keepcnt",
    SNDBUF => "sndbuf", RCVBUF => "rcvbuf", BUF_LOCKS => "buf-locks", TOS => "tos",
    WINDOW_CLAMP => "window-clamp", RCV_SSTHRESH => "rcv-ssthresh", REUSEADDR => "reuseaddr",
    MIGRATION_ID => "migration-id", BIND_ADDR => "bind-addr", FD => "fd",
    TLS_VERSION => "tls-version", TLS_CIPHER => "tls-cipher", TLS_TX_KEY => "tls-tx-key",
    TLS_TX_IV => "tls-tx-iv", TLS_TX_SALT => "tls-tx-salt", TLS_TX_REC_SEQ => "tls-tx-rec-seq",
    TLS_RX_KEY => "tls-rx-key", TLS_RX_IV => "tls-rx-iv", TLS_RX_SALT => "tls-rx-salt",
    TLS_RX_REC_SEQ => "tls-rx-rec-seq", TLS_TX_ZEROCOPY => "tls-tx-zerocopy",
    TLS_RX_NO_PAD => "tls-rx-no-pad", TLS_RX_DECRYPTED => "tls-rx-decrypted",
}

/// Sequence number `x` is after `y` (modulo 2^32), as the kernel's `after()`.
pub(crate) fn after(x: u32, y: u32) -> bool {
    (y.wrapping_sub(x) as i32) < 0
}

/// A decoded, validated import request: the connection's state, its queues (chunks
/// pointing into the request skb) and the importer's own choices.
pub(crate) struct Blob<'a> {
    pub(crate) conn: Conn,
    pub(crate) migration_id: u64,
    pub(crate) send_queue: KVec<&'a [u8]>,
    pub(crate) recv_queue: KVec<&'a [u8]>,
    /// kTLS records decrypted but not read on the exporting host, in order.
    pub(crate) tls_decrypted: KVec<&'a [u8]>,
    /// Local address to bind instead of the exported one.
    pub(crate) bind_addr: Option<[u8; 16]>,
    pub(crate) freebind: bool,
    pub(crate) transparent: bool,
    pub(crate) nonblock: bool,
}

impl core::ops::Deref for Blob<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

/// One attribute of the request: its header (for extack) and payload.
struct Attr<'a> {
    nla: &'a b::nlattr,
    data: &'a [u8],
}

/// The request's attributes by type; queue chunks kept apart, in order.
struct Attrs<'a> {
    by_kind: [Option<Attr<'a>>; IMPORT_MAXATTR as usize + 1],
    send: KVec<&'a [u8]>,
    recv: KVec<&'a [u8]>,
    decrypted: KVec<&'a [u8]>,
}

fn nomem<'a>() -> Invalid<'a> {
    (ENOMEM, c_str!("no memory to decode the request"), None)
}

impl<'a> Attrs<'a> {
    fn collect(req: &'a Request<'a>) -> Result<Self, Invalid<'a>> {
        let mut out = Self {
            by_kind: [const { None }; IMPORT_MAXATTR as usize + 1],
            send: KVec::new(),
            recv: KVec::new(),
            decrypted: KVec::new(),
        };
        for nla in req.all_attrs() {
            // SAFETY: genetlink validated every attribute's header and length; the
            // payload follows the 4-byte header inside the request skb.
            let data = unsafe {
                core::slice::from_raw_parts(
                    core::ptr::from_ref(nla).cast::<u8>().add(4),
                    usize::from(nla.nla_len).saturating_sub(4),
                )
            };
            let kind = nla.nla_type & b::NLA_TYPE_MASK as u16;
            match kind {
                // Alignment padding before a 64-bit attribute; it carries nothing.
                a::PAD => {}
                // An empty chunk carries nothing, and accepting it would leave the
                // number of chunks (and the work to collect them) unbounded.
                a::SEND_QUEUE | a::RECV_QUEUE | a::TLS_RX_DECRYPTED if data.is_empty() => {
                    return Err((EINVAL, c_str!("empty queue chunk"), Some(nla)));
                }
                a::SEND_QUEUE => out.send.push(data, GFP_KERNEL).map_err(|_| nomem())?,
                a::RECV_QUEUE => out.recv.push(data, GFP_KERNEL).map_err(|_| nomem())?,
                a::TLS_RX_DECRYPTED => out.decrypted.push(data, GFP_KERNEL).map_err(|_| nomem())?,
                k if usize::from(k) < out.by_kind.len() => {
                    let slot = &mut out.by_kind[usize::from(k)];
                    if slot.is_some() {
                        return Err((EINVAL, duplicate(k), Some(nla)));
                    }
                    *slot = Some(Attr { nla, data });
                }
                _ => return Err((EINVAL, c_str!("unknown attribute"), Some(nla))),
            }
        }
        Ok(out)
    }

    fn get(&self, kind: u16) -> Result<&Attr<'a>, Invalid<'a>> {
        self.by_kind[usize::from(kind)]
            .as_ref()
            .ok_or((EINVAL, missing(kind), None))
    }

    fn nla(&self, kind: u16) -> Option<&'a b::nlattr> {
        self.by_kind[usize::from(kind)].as_ref().map(|x| x.nla)
    }

    fn bytes<const N: usize>(&self, kind: u16) -> Result<[u8; N], Invalid<'a>> {
        let at = self.get(kind)?;
        at.data.try_into().map_err(|_| {
            (
                EINVAL,
                c_str!("attribute has the wrong length"),
                Some(at.nla),
            )
        })
    }

    fn u8(&self, kind: u16) -> Result<u8, Invalid<'a>> {
        Ok(self.bytes::<1>(kind)?[0])
    }

    fn u16(&self, kind: u16) -> Result<u16, Invalid<'a>> {
        Ok(u16::from_ne_bytes(self.bytes(kind)?))
    }

    fn u32(&self, kind: u16) -> Result<u32, Invalid<'a>> {
        Ok(u32::from_ne_bytes(self.bytes(kind)?))
    }

    fn flag(&self, kind: u16) -> Result<bool, Invalid<'a>> {
        match self.u8(kind)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err((EINVAL, not_bool(kind), self.nla(kind))),
        }
    }

    /// Presence of a NLA_FLAG attribute.
    fn present(&self, kind: u16) -> bool {
        self.by_kind[usize::from(kind)].is_some()
    }

    fn addr(&self, kind: u16, len: usize) -> Result<[u8; 16], Invalid<'a>> {
        let at = self.get(kind)?;
        if at.data.len() != len {
            return Err((EINVAL, bad_len(kind), Some(at.nla)));
        }
        let mut out = [0u8; 16];
        out[..len].copy_from_slice(at.data);
        Ok(out)
    }
}

fn check<'a>(
    ok: bool,
    code: Error,
    msg: &'static CStr,
    at: Option<&'a b::nlattr>,
) -> Result<(), Invalid<'a>> {
    if ok {
        Ok(())
    } else {
        Err((code, msg, at))
    }
}

fn queue_len(chunks: &[&[u8]]) -> u64 {
    chunks.iter().map(|c| c.len() as u64).sum()
}

impl<'a> Blob<'a> {
    /// Decodes and validates the request; nothing is touched.
    pub(crate) fn decode(req: &'a Request<'a>) -> Result<Self, Invalid<'a>> {
        let mut at = Attrs::collect(req)?;
        let einval = EINVAL;
        let version = at.u32(a::BLOB_VERSION)?;
        check(
            version != 0,
            einval,
            c_str!("blob-version 0 does not exist"),
            at.nla(a::BLOB_VERSION),
        )?;
        // Attributes are in the exporting host's byte order, as netlink's are: a blob
        // from a host of the other order shows its version byte-swapped.
        let known = |v: u32| (1..=BLOB_VERSION).contains(&v);
        check(
            known(version) || !known(version.swap_bytes()),
            errno(b::EPROTONOSUPPORT),
            c_str!("blob was exported on a host of the other byte order"),
            at.nla(a::BLOB_VERSION),
        )?;
        check(
            version <= BLOB_VERSION,
            errno(b::EPROTONOSUPPORT),
            c_str!("blob-version is newer than this module understands"),
            at.nla(a::BLOB_VERSION),
        )?;
        let family = at.u16(a::FAMILY)?;
        let alen = match u32::from(family) {
            b::AF_INET => 4,
            b::AF_INET6 => 16,
            _ => {
                return Err((
                    errno(b::EAFNOSUPPORT),
                    c_str!("family must be AF_INET or AF_INET6"),
                    at.nla(a::FAMILY),
                ))
            }
        };
        let saddr = at.addr(a::SADDR, alen)?;
        let daddr = at.addr(a::DADDR, alen)?;
        let bind_addr = if at.present(a::BIND_ADDR) {
            Some(at.addr(a::BIND_ADDR, alen)?)
        } else {
            None
        };
        let sport = at.u16(a::SPORT)?;
        let dport = at.u16(a::DPORT)?;
        check(
            sport != 0,
            einval,
            c_str!("sport must not be 0"),
            at.nla(a::SPORT),
        )?;
        check(
            dport != 0,
            einval,
            c_str!("dport must not be 0"),
            at.nla(a::DPORT),
        )?;
        let tcp_state = u32::from(at.u8(a::TCP_STATE)?);
        check(
            tcp_state == b::TCP_ESTABLISHED || tcp_state == b::TCP_CLOSE_WAIT,
            errno(b::EOPNOTSUPP),
            c_str!("tcp-state must be ESTABLISHED or CLOSE_WAIT"),
            at.nla(a::TCP_STATE),
        )?;
        let fin_received = at.flag(a::FIN_RECEIVED)?;
        check(
            fin_received == (tcp_state == b::TCP_CLOSE_WAIT),
            einval,
            c_str!("fin-received must be set exactly in CLOSE_WAIT"),
            at.nla(a::FIN_RECEIVED),
        )?;

        let snd_una = at.u32(a::SND_UNA)?;
        let snd_nxt = at.u32(a::SND_NXT)?;
        let write_seq = at.u32(a::WRITE_SEQ)?;
        let rcv_nxt = at.u32(a::RCV_NXT)?;
        let send_len = queue_len(&at.send);
        let recv_len = queue_len(&at.recv);
        check(
            send_len + recv_len + queue_len(&at.decrypted) <= u64::from(MAX_QUEUE_BYTES),
            errno(b::E2BIG),
            c_str!("queues exceed the module's max-queue-bytes"),
            None,
        )?;
        check(
            snd_nxt.wrapping_sub(snd_una) <= write_seq.wrapping_sub(snd_una),
            einval,
            c_str!("snd-nxt must lie between snd-una and write-seq"),
            at.nla(a::SND_NXT),
        )?;
        check(
            u64::from(write_seq.wrapping_sub(snd_una)) == send_len,
            einval,
            c_str!("send-queue length must equal write-seq - snd-una"),
            at.nla(a::WRITE_SEQ),
        )?;

        let mss_clamp = at.u16(a::MSS_CLAMP)?;
        check(
            (MSS_MIN..=MSS_MAX).contains(&mss_clamp),
            einval,
            c_str!("mss-clamp must be within 88..65495"),
            at.nla(a::MSS_CLAMP),
        )?;
        let wscale_ok = at.flag(a::WSCALE_OK)?;
        let snd_wscale = at.u8(a::SND_WSCALE)?;
        let rcv_wscale = at.u8(a::RCV_WSCALE)?;
        check(
            snd_wscale <= MAX_WSCALE,
            errno(b::EFBIG),
            c_str!("snd-wscale must be at most 14"),
            at.nla(a::SND_WSCALE),
        )?;
        check(
            rcv_wscale <= MAX_WSCALE,
            errno(b::EFBIG),
            c_str!("rcv-wscale must be at most 14"),
            at.nla(a::RCV_WSCALE),
        )?;
        check(
            wscale_ok || (snd_wscale == 0 && rcv_wscale == 0),
            einval,
            c_str!("window scales must be 0 without wscale-ok"),
            at.nla(a::WSCALE_OK),
        )?;

        let snd_wl1 = at.u32(a::SND_WL1)?;
        let snd_wnd = at.u32(a::SND_WND)?;
        let max_window = at.u32(a::MAX_WINDOW)?;
        let rcv_wnd = at.u32(a::RCV_WND)?;
        let rcv_wup = at.u32(a::RCV_WUP)?;
        check(
            u64::from(snd_wnd) <= 65535u64 << snd_wscale,
            einval,
            c_str!("snd-wnd exceeds what the peer's window scale can express"),
            at.nla(a::SND_WND),
        )?;
        check(
            max_window >= snd_wnd,
            einval,
            c_str!("max-window must be at least snd-wnd"),
            at.nla(a::MAX_WINDOW),
        )?;
        // Not `65535 << rcv_wscale`: tcp_select_window() stores the window it chose
        // before clamping what it advertises to the scale, so a live socket (one with
        // SO_RCVBUF set, say) can hold more than its scale expresses.
        check(
            u64::from(rcv_wnd) <= 65535u64 << MAX_WSCALE,
            einval,
            c_str!("rcv-wnd exceeds the largest TCP window"),
            at.nla(a::RCV_WND),
        )?;
        check(
            !after(snd_wl1, rcv_nxt.wrapping_add(rcv_wnd)),
            einval,
            c_str!("snd-wl1 must not be after rcv-nxt + rcv-wnd"),
            at.nla(a::SND_WL1),
        )?;
        check(
            !after(rcv_wup, rcv_nxt),
            einval,
            c_str!("rcv-wup must not be after rcv-nxt"),
            at.nla(a::RCV_WUP),
        )?;
        let snd_cwnd = at.u32(a::SND_CWND)?;
        check(
            (1..=b::PRISM_TCP_INFINITE_SSTHRESH).contains(&snd_cwnd),
            einval,
            c_str!("snd-cwnd must be at least 1"),
            at.nla(a::SND_CWND),
        )?;
        let snd_ssthresh = at.u32(a::SND_SSTHRESH)?;
        check(
            (2..=b::PRISM_TCP_INFINITE_SSTHRESH).contains(&snd_ssthresh),
            einval,
            c_str!("snd-ssthresh must be within 2..TCP_INFINITE_SSTHRESH"),
            at.nla(a::SND_SSTHRESH),
        )?;
        let srtt_us = at.u32(a::SRTT_US)?;
        check(
            srtt_us <= SRTT_MAX,
            einval,
            c_str!("srtt-us exceeds TCP_RTO_MAX"),
            at.nla(a::SRTT_US),
        )?;
        let mdev_us = at.u32(a::MDEV_US)?;
        check(
            mdev_us <= MDEV_MAX,
            einval,
            c_str!("mdev-us exceeds TCP_RTO_MAX"),
            at.nla(a::MDEV_US),
        )?;
        let cc = at.get(a::CC_NAME)?;
        check(
            cc.data.len() >= 2
                && cc.data.len() <= 16
                && cc.data.iter().position(|c| *c == 0) == Some(cc.data.len() - 1),
            einval,
            c_str!("cc-name must be a NUL-terminated name of 1 to 15 bytes"),
            Some(cc.nla),
        )?;
        let mut cc_name = [0u8; 16];
        cc_name[..cc.data.len()].copy_from_slice(cc.data);

        let user_timeout = at.u32(a::USER_TIMEOUT)?;
        check(
            user_timeout <= i32::MAX as u32,
            einval,
            c_str!("user-timeout must fit an int"),
            at.nla(a::USER_TIMEOUT),
        )?;
        let notsent_lowat = at.u32(a::NOTSENT_LOWAT)?;
        check(
            notsent_lowat <= i32::MAX as u32,
            einval,
            c_str!("notsent-lowat must fit an int"),
            at.nla(a::NOTSENT_LOWAT),
        )?;
        let keepidle = at.u32(a::KEEPIDLE)?;
        let keepintvl = at.u32(a::KEEPINTVL)?;
        let keepcnt = at.u32(a::KEEPCNT)?;
        check(
            keepidle <= b::MAX_TCP_KEEPIDLE,
            einval,
            c_str!("keepidle must be at most 32767 seconds"),
            at.nla(a::KEEPIDLE),
        )?;
        check(
            keepintvl <= b::MAX_TCP_KEEPINTVL,
            einval,
            c_str!("keepintvl must be at most 32767 seconds"),
            at.nla(a::KEEPINTVL),
        )?;
        check(
            keepcnt <= b::MAX_TCP_KEEPCNT,
            einval,
            c_str!("keepcnt must be at most 127"),
            at.nla(a::KEEPCNT),
        )?;
        let sndbuf = at.u32(a::SNDBUF)?;
        let rcvbuf = at.u32(a::RCVBUF)?;
        check(
            sndbuf > 0 && sndbuf <= MAX_BUF,
            einval,
            c_str!("sndbuf must be within 1..INT_MAX/2"),
            at.nla(a::SNDBUF),
        )?;
        check(
            rcvbuf > 0 && rcvbuf <= MAX_BUF,
            einval,
            c_str!("rcvbuf must be within 1..INT_MAX/2"),
            at.nla(a::RCVBUF),
        )?;
        let buf_locks = at.u8(a::BUF_LOCKS)?;
        check(
            buf_locks & !3 == 0,
            einval,
            c_str!("buf-locks has unknown bits"),
            at.nla(a::BUF_LOCKS),
        )?;
        let window_clamp = at.u32(a::WINDOW_CLAMP)?;
        check(
            window_clamp <= WINDOW_MAX,
            einval,
            c_str!("window-clamp exceeds the largest window TCP can announce"),
            at.nla(a::WINDOW_CLAMP),
        )?;
        let migration_id = u64::from_ne_bytes(at.bytes(a::MIGRATION_ID)?);
        let tls = decode_tls(&at, tcp_state)?;
        check(
            at.decrypted.is_empty() || tls.as_ref().is_some_and(|t| t.rx.is_some()),
            einval,
            c_str!("tls-rx-decrypted without kTLS receive keys"),
            None,
        )?;

        let send_queue = core::mem::take(&mut at.send);
        let recv_queue = core::mem::take(&mut at.recv);
        let tls_decrypted = core::mem::take(&mut at.decrypted);
        Ok(Self {
            conn: Conn {
                family,
                saddr,
                daddr,
                sport,
                dport,
                fin_received,
                snd_una,
                snd_nxt,
                write_seq,
                rcv_nxt,
                mss_clamp,
                snd_wscale,
                rcv_wscale,
                timestamps: at.flag(a::TIMESTAMPS)?,
                sack: at.flag(a::SACK)?,
                wscale_ok,
                ts_now: at.u32(a::TS_NOW)?,
                ts_recent: at.u32(a::TS_RECENT)?,
                snd_wl1,
                snd_wnd,
                max_window,
                rcv_wnd,
                rcv_wup,
                snd_cwnd,
                snd_ssthresh,
                srtt_us,
                mdev_us,
                cc_name,
                nodelay: at.flag(a::NODELAY)?,
                cork: at.flag(a::CORK)?,
                keepalive: at.flag(a::KEEPALIVE)?,
                mark: at.u32(a::MARK)?,
                user_timeout,
                notsent_lowat,
                keepidle,
                keepintvl,
                keepcnt,
                sndbuf,
                rcvbuf,
                buf_locks,
                tos: at.u8(a::TOS)?,
                window_clamp,
                rcv_ssthresh: at.u32(a::RCV_SSTHRESH)?,
                reuseaddr: at.flag(a::REUSEADDR)?,
                send_len: send_len as u32,
                recv_len: recv_len as u32,
                tls,
            },
            migration_id,
            send_queue,
            recv_queue,
            tls_decrypted,
            bind_addr,
            freebind: at.present(a::FREEBIND),
            transparent: at.present(a::TRANSPARENT),
            nonblock: at.present(a::NONBLOCK),
        })
    }

    /// Bytes of the send queue already sent once (from `snd_una` to `snd_nxt`).
    pub(crate) fn sent_len(&self) -> u32 {
        self.snd_nxt.wrapping_sub(self.snd_una)
    }

    /// Where the receive queue starts: `rcv_nxt` less the queued bytes and the FIN.
    pub(crate) fn recv_start(&self) -> u32 {
        self.rcv_nxt
            .wrapping_sub(u32::from(self.fin_received))
            .wrapping_sub(self.recv_len)
    }
}

/// The kTLS attributes, if any: version and cipher known to kTLS, each direction's
/// fields all there or all absent, each of the cipher's size.
fn decode_tls<'a>(at: &Attrs<'a>, tcp_state: u32) -> Result<Option<Tls>, Invalid<'a>> {
    let [tk, ti, ts, tr] = TX_ATTRS;
    let [rk, ri, rs, rr] = RX_ATTRS;
    let kinds = [
        a::TLS_VERSION,
        a::TLS_CIPHER,
        a::TLS_TX_ZEROCOPY,
        a::TLS_RX_NO_PAD,
        tk,
        ti,
        ts,
        tr,
        rk,
        ri,
        rs,
        rr,
    ];
    let any = kinds.iter().find(|k| at.present(**k));
    let Some(first) = any else {
        return Ok(None);
    };
    let version = at.u16(a::TLS_VERSION)?;
    check(
        version == b::PRISM_TLS_1_2_VERSION || version == b::PRISM_TLS_1_3_VERSION,
        EINVAL,
        c_str!("tls-version must be 0x0303 (TLS 1.2) or 0x0304 (TLS 1.3)"),
        at.nla(a::TLS_VERSION),
    )?;
    let id = at.u16(a::TLS_CIPHER)?;
    let cipher = Cipher::find(id).ok_or((
        errno(b::EOPNOTSUPP),
        c_str!("tls-cipher is not a kTLS cipher this module knows"),
        at.nla(a::TLS_CIPHER),
    ))?;
    check(
        tcp_state == b::TCP_ESTABLISHED,
        errno(b::EOPNOTSUPP),
        c_str!("a kTLS connection imports only in ESTABLISHED"),
        at.nla(*first),
    )?;
    let keys = |kinds: [u16; 4]| -> Result<Option<Keys>, Invalid<'a>> {
        if !kinds.iter().any(|k| at.present(*k)) {
            return Ok(None);
        }
        let mut k = Keys::default();
        let sizes = [cipher.key, cipher.iv, cipher.salt, REC_SEQ];
        let fields: [&mut [u8]; 4] = [&mut k.key, &mut k.iv, &mut k.salt, &mut k.rec_seq];
        for ((kind, size), field) in kinds.into_iter().zip(sizes).zip(fields) {
            let x = at.get(kind)?;
            check(
                x.data.len() == size,
                EINVAL,
                c_str!("kTLS key, IV, salt or record sequence does not have the cipher's size"),
                Some(x.nla),
            )?;
            field[..size].copy_from_slice(x.data);
        }
        Ok(Some(k))
    };
    let tx = keys(TX_ATTRS)?;
    let rx = keys(RX_ATTRS)?;
    check(
        tx.is_some() || rx.is_some(),
        EINVAL,
        c_str!("tls-version without the keys of either direction"),
        at.nla(a::TLS_VERSION),
    )?;
    let tx_zerocopy = at.flag(a::TLS_TX_ZEROCOPY)?;
    let rx_no_pad = at.flag(a::TLS_RX_NO_PAD)?;
    check(
        !rx_no_pad || (rx.is_some() && version == b::PRISM_TLS_1_3_VERSION),
        EINVAL,
        c_str!("tls-rx-no-pad needs TLS 1.3 and receive keys"),
        at.nla(a::TLS_RX_NO_PAD),
    )?;
    Ok(Some(Tls {
        version,
        cipher,
        tx,
        rx,
        tx_zerocopy,
        rx_no_pad,
        // The blob's receive queue already holds such bytes; its decrypted records
        // are kept apart (`Blob::tls_decrypted`).
        rx_held: 0,
        rx_decrypted: (0, 0),
    }))
}

/// Puts a congestion control name as the NUL-terminated string `cc-name` carries.
pub(crate) fn put_cc_name(msg: &mut impl AttrSink, cc_name: &[u8; 16]) -> Result {
    let len = cc_name
        .iter()
        .position(|c| *c == 0)
        .unwrap_or(cc_name.len() - 1);
    let mut name = [0u8; 17];
    name[..len].copy_from_slice(&cc_name[..len]);
    msg.put(a::CC_NAME, &name[..=len])
}

/// The attributes of the state but its queues and migration id: the blob's fixed
/// part, as `Blob::decode` reads it back.
pub(crate) fn encode(st: &TcpState, msg: &mut impl AttrSink) -> Result {
    msg.put_u32(a::BLOB_VERSION, BLOB_VERSION)?;
    msg.put_u16(a::FAMILY, st.family)?;
    msg.put(a::SADDR, &st.saddr[..st.addr_len()])?;
    msg.put(a::DADDR, &st.daddr[..st.addr_len()])?;
    msg.put_u16(a::SPORT, st.sport)?;
    msg.put_u16(a::DPORT, st.dport)?;
    msg.put_u8(a::TCP_STATE, st.state)?;
    msg.put_u32(a::SND_UNA, st.snd_una)?;
    msg.put_u32(a::SND_NXT, st.snd_nxt)?;
    msg.put_u32(a::WRITE_SEQ, st.write_seq)?;
    msg.put_u32(a::RCV_NXT, st.rcv_nxt)?;
    msg.put_u8(a::FIN_RECEIVED, st.fin_received.into())?;
    msg.put_u16(a::MSS_CLAMP, st.mss_clamp)?;
    msg.put_u8(a::SND_WSCALE, st.snd_wscale)?;
    msg.put_u8(a::RCV_WSCALE, st.rcv_wscale)?;
    msg.put_u8(a::TIMESTAMPS, st.timestamps.into())?;
    msg.put_u8(a::SACK, st.sack.into())?;
    msg.put_u8(a::WSCALE_OK, st.wscale_ok.into())?;
    msg.put_u32(a::TS_NOW, st.ts_now)?;
    msg.put_u32(a::TS_RECENT, st.ts_recent)?;
    msg.put_u32(a::SND_WL1, st.snd_wl1)?;
    msg.put_u32(a::SND_WND, st.snd_wnd)?;
    msg.put_u32(a::MAX_WINDOW, st.max_window)?;
    msg.put_u32(a::RCV_WND, st.rcv_wnd)?;
    msg.put_u32(a::RCV_WUP, st.rcv_wup)?;
    msg.put_u32(a::SND_CWND, st.snd_cwnd)?;
    msg.put_u32(a::SND_SSTHRESH, st.snd_ssthresh)?;
    msg.put_u32(a::SRTT_US, st.srtt_us)?;
    msg.put_u32(a::MDEV_US, st.mdev_us)?;
    put_cc_name(msg, &st.cc_name)?;
    msg.put_u8(a::NODELAY, st.nodelay.into())?;
    msg.put_u8(a::CORK, st.cork.into())?;
    msg.put_u8(a::KEEPALIVE, st.keepalive.into())?;
    msg.put_u32(a::MARK, st.mark)?;
    msg.put_u32(a::USER_TIMEOUT, st.user_timeout)?;
    msg.put_u32(a::NOTSENT_LOWAT, st.notsent_lowat)?;
    msg.put_u32(a::KEEPIDLE, st.keepidle)?;
    msg.put_u32(a::KEEPINTVL, st.keepintvl)?;
    msg.put_u32(a::KEEPCNT, st.keepcnt)?;
    msg.put_u32(a::SNDBUF, st.sndbuf)?;
    msg.put_u32(a::RCVBUF, st.rcvbuf)?;
    msg.put_u8(a::BUF_LOCKS, st.buf_locks)?;
    msg.put_u8(a::TOS, st.tos)?;
    msg.put_u32(a::WINDOW_CLAMP, st.window_clamp)?;
    msg.put_u32(a::RCV_SSTHRESH, st.rcv_ssthresh)?;
    msg.put_u8(a::REUSEADDR, st.reuseaddr.into())?;
    if let Some(tls) = &st.tls {
        tls.encode(msg)?;
    }
    Ok(())
}
