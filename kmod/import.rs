// SPDX-License-Identifier: GPL-2.0

//! `SOCK_IMPORT`: a live TCP socket rebuilt from a `SOCK_EXPORT` blob in the caller's
//! network namespace, installed as a new fd of the caller.
//!
//! Order (see docs/design/migration.md): every resource first (socket, file, fd), then
//! the state. Before connect: repair mode and queue sequence numbers (set directly, as
//! the TCP_REPAIR setsockopts do), congestion control and socket options (through the
//! kernel's setsockopt paths), bind. Connect in repair mode (no
//! SYN) happens under our socket lock, which stays held while the rest goes in: a packet
//! of the flow that arrives meanwhile waits in the backlog instead of meeting a
//! half-restored socket. After connect, because connect derives them from the route:
//! timestamp clock and offset, MSS clamp and the other negotiated options, window; then
//! the receive queue, the round-trip estimate, the sent data, congestion state. Repair
//! mode ends under the same lock, the unsent data is queued (and may go out) and the
//! reply is queued to the caller: until then a failure puts the socket back into repair
//! mode and tears it down before the lock is released, so the peer has seen nothing but
//! segments of the exported state and the blob imports again with no gap. Only then is
//! the lock released (the peer's packets are processed from here on) and, when sent data
//! is unacknowledged or the peer's window was closed, a window probe sent through the
//! kernel's own `TCP_REPAIR_OFF`. The fd is installed last.

use crate::bindings as b;
use crate::blob::put_cc_name;
use crate::blob::Blob;
use crate::compat;
use crate::departed::Tuple;
use crate::fault;
use crate::genl::{errno, to_result, AttrSink, Request};
use crate::guard;
use crate::ktls::{self, Tls};
use crate::pernet;
use crate::socket::SockLock;
use crate::tcp_state::cc_name;
use crate::tracker;
use crate::uapi::{cmd, state as a, BUF_LOCK_RCV, BUF_LOCK_SND};
use core::ffi::{c_int, c_void};
use core::ptr::NonNull;
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CStr;

/// A failure: errno and the extended-ack message.
type Failure = (Error, &'static CStr);

fn fail(e: Error, msg: &'static CStr) -> Failure {
    (e, msg)
}

/// `struct sockaddr_in` or `struct sockaddr_in6`, built byte by byte.
#[repr(C, align(4))]
struct SockAddr {
    bytes: [u8; 28],
    len: c_int,
}

impl SockAddr {
    fn new(family: u16, addr: &[u8; 16], port: u16) -> Self {
        let mut s = Self {
            bytes: [0; 28],
            len: 16,
        };
        s.bytes[..2].copy_from_slice(&family.to_ne_bytes());
        s.bytes[2..4].copy_from_slice(&port.to_be_bytes());
        if u32::from(family) == b::AF_INET {
            s.bytes[4..8].copy_from_slice(&addr[..4]);
        } else {
            s.bytes[8..24].copy_from_slice(addr);
            s.len = 28;
        }
        s
    }

    fn as_ptr(&mut self) -> *mut compat::SockAddr {
        self.bytes.as_mut_ptr().cast()
    }
}

/// A socket being built, with its file and reserved fd. Dropping it before `commit`
/// tears it down without a packet to the peer.
struct Building {
    sock: NonNull<b::socket>,
    sk: NonNull<b::sock>,
    file: *mut b::file,
    fd: c_int,
}

impl Building {
    fn create(net: *mut b::net, blob: &Blob<'_>) -> Result<Self, Failure> {
        let mut sock: *mut b::socket = core::ptr::null_mut();
        // SAFETY: `net` is the requester's namespace, alive during the request; `kern`
        // is 0: a user socket, holding a reference on its namespace and subject to
        // the LSM checks of the caller.
        let ret = unsafe {
            b::__sock_create(
                net,
                c_int::from(blob.family),
                c_int::from(b::PRISM_SOCK_STREAM),
                b::IPPROTO_TCP as c_int,
                &mut sock,
                0,
            )
        };
        to_result(ret).map_err(|e| fail(e, c_str!("cannot create a TCP socket")))?;
        let sock = NonNull::new(sock).ok_or(fail(ENOMEM, c_str!("cannot create a TCP socket")))?;
        // SAFETY: a created socket has its `sk`.
        let Some(sk) = NonNull::new(unsafe { (*sock.as_ptr()).sk }) else {
            // SAFETY: created above, not shared.
            unsafe { b::sock_release(sock.as_ptr()) };
            return Err(fail(ENOMEM, c_str!("cannot create a TCP socket")));
        };
        let flags = if blob.nonblock {
            b::PRISM_O_NONBLOCK
        } else {
            0
        };
        // SAFETY: `sock` is ours; on failure `sock_alloc_file` releases it (nothing
        // was sent: the socket is not connected yet).
        let file = unsafe { b::sock_alloc_file(sock.as_ptr(), flags as c_int, core::ptr::null()) };
        let file = kernel::error::from_err_ptr(file)
            .map_err(|e| fail(e, c_str!("cannot allocate a file")))?;
        // SAFETY: plain call; the fd is reserved, not visible until `fd_install`.
        let fd = unsafe { b::get_unused_fd_flags(b::PRISM_O_CLOEXEC) };
        let this = Self { sock, sk, file, fd };
        if fd < 0 {
            return Err(fail(
                Error::from_errno(fd),
                c_str!("no free file descriptor"),
            ));
        }
        Ok(this)
    }

    fn tp(&self) -> *mut b::tcp_sock {
        self.sk.as_ptr().cast()
    }

    fn setsockopt_bytes(&self, level: u32, name: u32, val: &[u8]) -> Result {
        // SAFETY: `val` outlives the call; the kernel sockptr tells the setsockopt path
        // to copy from kernel memory.
        let ret = unsafe {
            b::do_sock_setsockopt(
                self.sock.as_ptr(),
                false,
                level as c_int,
                name as c_int,
                b::prism_kernel_sockptr(val.as_ptr().cast_mut().cast::<c_void>()),
                val.len() as c_int,
            )
        };
        to_result(ret)
    }

    fn setsockopt(&self, level: u32, name: u32, val: u32) -> Result<(), Failure> {
        self.setsockopt_bytes(level, name, &(val as c_int).to_ne_bytes())
            .map_err(|e| fail(e, c_str!("restoring a socket option failed")))
    }

    /// The connection's socket options, through the setters the kernel exports for
    /// in-kernel socket users: the values are checked as setsockopt checks them,
    /// without a copy from a sockptr or a security hook per option (the caller's
    /// CAP_NET_ADMIN covers SO_MARK's check).
    fn set_options(&self, blob: &Blob<'_>, v6: bool) -> Result<(), Failure> {
        let sk = self.sk.as_ptr();
        let bad = |ret: c_int| {
            to_result(ret).map_err(|e| fail(e, c_str!("restoring a socket option failed")))
        };
        let int = |v: u32| c_int::try_from(v).unwrap_or(-1);
        // SAFETY: the socket is ours and not yet reachable by anyone else; each setter
        // takes the socket lock itself where it needs it.
        unsafe {
            if blob.mark != 0 {
                b::sock_set_mark(sk, blob.mark);
            }
            if blob.tos != 0 && !v6 {
                b::ip_sock_set_tos(sk, blob.tos.into());
            }
            if blob.keepidle != 0 {
                bad(b::tcp_sock_set_keepidle(sk, int(blob.keepidle)))?;
            }
            if blob.keepintvl != 0 {
                bad(b::tcp_sock_set_keepintvl(sk, int(blob.keepintvl)))?;
            }
            if blob.keepcnt != 0 {
                bad(b::tcp_sock_set_keepcnt(sk, int(blob.keepcnt)))?;
            }
            if blob.user_timeout != 0 {
                bad(b::tcp_sock_set_user_timeout(sk, int(blob.user_timeout)))?;
            }
            if blob.notsent_lowat != 0 {
                // What TCP_NOTSENT_LOWAT stores; no data is queued to wake a writer for.
                (*self.tp()).notsent_lowat = blob.notsent_lowat;
            }
            if blob.keepalive {
                b::sock_set_keepalive(sk);
            }
            if blob.nodelay {
                b::tcp_sock_set_nodelay(sk);
            }
            if blob.cork {
                b::tcp_sock_set_cork(sk, true);
            }
        }
        Ok(())
    }

    /// Everything that goes before connect but the socket options.
    fn prepare(&self, blob: &Blob<'_>) -> Result<Bufs, Failure> {
        let tcp = b::SOL_TCP;
        // What TCP_REPAIR_ON and the two TCP_QUEUE_SEQ calls do, written directly: the
        // socket is fresh (TCP_CLOSE, empty queues) and the family already required
        // the CAP_NET_ADMIN that `tcp_can_repair_sock` checks.
        // SAFETY: the socket is not hashed and not reachable by anyone but us yet.
        unsafe {
            let t = &mut *self.tp();
            t.set_repair(1);
            t.repair_queue = b::TCP_NO_QUEUE as u8;
            (*self.sk.as_ptr())
                .__sk_common
                .set_skc_reuse(b::PRISM_SK_FORCE_REUSE);
            t.rcv_nxt = blob.recv_start();
            t.copied_seq = blob.recv_start();
            t.write_seq = blob.snd_una;
        }
        // An algorithm this host lacks falls back to the namespace default; the reply
        // names the one in effect.
        let name_len = blob.cc_name.iter().position(|c| *c == 0).unwrap_or(0);
        let name = &blob.cc_name[..name_len];
        // SAFETY: the socket is not reachable by anyone but us yet.
        let current = unsafe { cc_name(&*self.tp()) };
        let current_len = current
            .iter()
            .position(|c| *c == 0)
            .unwrap_or(current.len());
        if name == &current[..current_len] {
            // What TCP_CONGESTION does when asked for the algorithm in place: mark it
            // chosen, so a route's `congctl` does not replace it at connect.
            // SAFETY: as above.
            unsafe { (*self.tp()).inet_conn.set_icsk_ca_setsockopt(1) };
        } else {
            let _ = self.setsockopt_bytes(tcp, b::TCP_CONGESTION, name);
        }
        let v6 = u32::from(blob.family) == b::AF_INET6;
        // IPV6_TCLASS, IP_FREEBIND and IP_TRANSPARENT have no exported setter (and the
        // last two check privileges of their own): the setsockopt path.
        if blob.tos != 0 && v6 {
            self.setsockopt(b::SOL_IPV6, b::IPV6_TCLASS, blob.tos.into())?;
        }
        if blob.freebind {
            let (level, opt) = if v6 {
                (b::SOL_IPV6, b::IPV6_FREEBIND)
            } else {
                (b::SOL_IP, b::IP_FREEBIND)
            };
            self.setsockopt(level, opt, 1)?;
        }
        if blob.transparent {
            let (level, opt) = if v6 {
                (b::SOL_IPV6, b::IPV6_TRANSPARENT)
            } else {
                (b::SOL_IP, b::IP_TRANSPARENT)
            };
            self.setsockopt(level, opt, 1)?;
        }
        self.set_options(blob, v6)?;

        let sk = self.sk.as_ptr();
        let (snd_locked, rcv_locked) = (
            blob.buf_locks & BUF_LOCK_SND != 0,
            blob.buf_locks & BUF_LOCK_RCV != 0,
        );
        // SAFETY: capability check of the calling task, without an audit record for
        // the (ordinary) case of a caller who lacks it; `init_user_ns` is static.
        let force = unsafe {
            b::ns_capable_noaudit(
                core::ptr::addr_of_mut!(b::init_user_ns),
                b::PRISM_CAP_NET_ADMIN as c_int,
            )
        };
        // SAFETY: sysctl reads; `sk` is our own socket.
        let (snd_cap, rcv_cap) = unsafe {
            (
                buf_cap(
                    snd_locked,
                    b::prism_sysctl_wmem_max(),
                    b::prism_tcp_wmem_max(sk),
                ),
                buf_cap(
                    rcv_locked,
                    b::prism_sysctl_rmem_max(),
                    b::prism_tcp_rmem_max(sk),
                ),
            )
        };
        // The exported sizes, within what this caller could set here (beyond that only
        // with SO_*BUFFORCE's right).
        let bufs = if force {
            Bufs {
                snd: blob.sndbuf as c_int,
                rcv: blob.rcvbuf as c_int,
            }
        } else {
            Bufs {
                snd: (blob.sndbuf as c_int).min(snd_cap),
                rcv: (blob.rcvbuf as c_int).min(rcv_cap),
            }
        };
        // SAFETY: the socket is not hashed and not reachable by anyone but us yet.
        unsafe {
            // Restoring goes through the buffer checks (`tcp_try_rmem_schedule`, the
            // send path's free space), so it gets room for the queues the blob brings;
            // `finish` puts the exported sizes back, or each hop would grow the
            // buffers, and with them the window and the queues the next export carries.
            let snd_need = (2 * blob.send_len + (64 << 10)) as c_int;
            let rcv_need = (2 * blob.recv_len + (64 << 10)) as c_int;
            (*sk).sk_sndbuf = bufs.snd.max(snd_need);
            (*sk).sk_rcvbuf = bufs.rcv.max(rcv_need);
            let mut locks = u32::from((*sk).sk_userlocks);
            if snd_locked {
                locks |= b::SOCK_SNDBUF_LOCK;
            }
            if rcv_locked {
                locks |= b::SOCK_RCVBUF_LOCK;
            }
            (*sk).sk_userlocks = locks as u8;
        }

        let local = blob.bind_addr.as_ref().unwrap_or(&blob.saddr);
        let mut addr = SockAddr::new(blob.family, local, blob.sport);
        // SAFETY: `addr` is a valid sockaddr of `addr.len` bytes.
        let ret = unsafe { b::kernel_bind(self.sock.as_ptr(), addr.as_ptr(), addr.len) };
        to_result(ret).map_err(|e| {
            if e == errno(b::EADDRNOTAVAIL) {
                fail(
                    e,
                    c_str!(
                        "local address is not configured here (ask for freebind or transparent)"
                    ),
                )
            } else {
                fail(e, c_str!("binding the local address failed"))
            }
        })?;
        Ok(bufs)
    }

    /// Connects in repair mode (no SYN) and restores everything but the unsent data,
    /// all under `lock`.
    fn restore(&self, lock: &SockLock<'_>, blob: &Blob<'_>) -> Result<(), Failure> {
        let mut peer = SockAddr::new(blob.family, &blob.daddr, blob.dport);
        // SAFETY: the socket lock is held, as `__inet_stream_connect` requires; the
        // address is valid for its length.
        let ret =
            unsafe { b::__inet_stream_connect(self.sock.as_ptr(), peer.as_ptr(), peer.len, 0, 0) };
        to_result(ret).map_err(|e| {
            let v4 = u32::from(blob.family) == b::AF_INET;
            if e == errno(b::EADDRNOTAVAIL) || e == errno(b::EADDRINUSE) {
                fail(
                    errno(b::EADDRINUSE),
                    c_str!("the connection's tuple is already in use in this namespace"),
                )
            } else if v4 && blob.freebind && !blob.transparent {
                // IP_FREEBIND lets the bind take the address; IPv4's output routing
                // still refuses a source that is not local unless the socket is
                // transparent (FLOWI_FLAG_ANYSRC).
                fail(
                    e,
                    c_str!("IPv4 routes no packet from a non-local address with freebind alone: ask for transparent"),
                )
            } else {
                fail(
                    e,
                    c_str!("connecting in repair mode failed (no route to the peer?)"),
                )
            }
        })?;
        let sk = lock.sk();
        let tp = self.tp();
        // SAFETY: we hold the socket lock; the socket is a connected TCP socket whose
        // fields are ours to set until the lock is released.
        unsafe {
            let t = &mut *tp;
            // Connect chose the timestamp clock from this route and reset the MSS clamp
            // to the protocol minimum: both are the connection's, not this host's. The
            // offset is computed for the clock the peer has seen all along.
            let usec = blob.ts_now & 1 != 0;
            t.set_tcp_usec_ts(usec.into());
            t.tsoffset = blob.ts_now.wrapping_sub(b::prism_tcp_clock_ts(usec));
            t.rx_opt.mss_clamp = blob.mss_clamp;
            t.rx_opt.set_wscale_ok(blob.wscale_ok.into());
            t.rx_opt.set_snd_wscale(blob.snd_wscale.into());
            t.rx_opt.set_rcv_wscale(blob.rcv_wscale.into());
            t.rx_opt.set_sack_ok(if blob.sack {
                b::PRISM_TCP_SACK_SEEN.into()
            } else {
                0
            });
            t.rx_opt.set_tstamp_ok(blob.timestamps.into());
            t.rx_opt.ts_recent = blob.ts_recent;
            t.rx_opt.ts_recent_stamp = b::ktime_get_seconds() as c_int;
            // Connect sized the header by the sysctl, not by what the peer agreed to.
            t.tcp_header_len = (20
                + if blob.timestamps {
                    b::PRISM_TCPOLEN_TSTAMP_ALIGNED
                } else {
                    0
                }) as u16;
            compat::mtup_init(sk);
            if let Some(sync) = t.inet_conn.icsk_sync_mss {
                sync(sk, t.inet_conn.icsk_pmtu_cookie);
            }

            t.snd_wl1 = blob.snd_wl1;
            t.snd_wnd = blob.snd_wnd;
            t.max_window = blob.max_window;
            t.rcv_wnd = blob.rcv_wnd;
            t.rcv_wup = blob.rcv_wup;
            if blob.window_clamp != 0 {
                t.window_clamp = blob.window_clamp;
            }
            if blob.rcv_ssthresh != 0 {
                t.rcv_ssthresh = blob.rcv_ssthresh.min(t.window_clamp);
            }
        }

        self.queue(
            lock,
            b::TCP_RECV_QUEUE,
            blob.recv_queue.iter().copied(),
            blob.recv_len,
        )?;
        // SAFETY: as above.
        unsafe {
            let t = &mut *tp;
            if blob.fin_received {
                // The FIN is part of the last queued segment, as it was on the old host,
                // so a reader meets end-of-file right after the data.
                let tail = b::prism_skb_peek_tail(&mut (*sk).sk_receive_queue);
                if tail.is_null() {
                    t.copied_seq = t.copied_seq.wrapping_add(1);
                } else {
                    let cb = &mut *b::prism_tcp_skb_cb(tail);
                    compat::set_tcp_flag(cb, b::PRISM_TCPHDR_FIN);
                    cb.end_seq = cb.end_seq.wrapping_add(1);
                }
                t.rcv_nxt = t.rcv_nxt.wrapping_add(1);
                (*sk).sk_shutdown |= b::RCV_SHUTDOWN as u8;
                b::prism_sock_set_flag_done(sk);
                compat::enter_close_wait(sk);
                b::prism_inet_csk_enter_pingpong_mode(sk);
            }
            if t.rcv_nxt != blob.rcv_nxt {
                return Err(fail(EIO, c_str!("receive queue was not restored whole")));
            }
        }

        // The round-trip estimate goes in before the sent data: replaying it arms the
        // retransmission and loss-probe timers from `icsk_rto` and `srtt_us`.
        // SAFETY: as above.
        unsafe {
            let t = &mut *tp;
            if blob.srtt_us != 0 {
                t.srtt_us = blob.srtt_us;
                t.mdev_us = blob.mdev_us;
                t.rttvar_us = blob.mdev_us.max(b::prism_tcp_rto_min_us(sk));
                t.mdev_max_us = t.rttvar_us;
                let rto = b::prism_usecs_to_jiffies((t.srtt_us >> 3) + t.rttvar_us);
                t.inet_conn.icsk_rto = (rto as u32).min(b::PRISM_TCP_RTO_MAX);
            }
        }
        self.queue(
            lock,
            b::TCP_SEND_QUEUE,
            cut(&blob.send_queue, blob.sent_len(), true),
            blob.sent_len(),
        )?;
        // SAFETY: as above.
        unsafe {
            let t = &mut *tp;
            if t.snd_nxt != blob.snd_nxt || t.snd_una != blob.snd_una {
                return Err(fail(EIO, c_str!("sent data was not restored whole")));
            }
            t.snd_cwnd = blob.snd_cwnd;
            t.snd_ssthresh = blob.snd_ssthresh;
            // Not idle: the connection was busy a moment ago on the other host.
            let now = b::prism_jiffies() as u32;
            t.lsndtime = now;
            t.snd_cwnd_stamp = now;
            t.repair_queue = b::TCP_NO_QUEUE as u8;
        }
        Ok(())
    }

    /// Attaches kTLS through the kernel's own setsockopt paths (the tls ULP, then
    /// TLS_TX and TLS_RX with the blob's keys and record sequences, then its options),
    /// as the application did on the exporting host. Called without the socket lock
    /// (those paths take it), in repair mode, while the guard drops the flow's packets:
    /// TLS_RX parses the restored receive queue, nothing reaches the peer.
    fn attach_tls(&self, tls: &Tls) -> Result<(), Failure> {
        self.setsockopt_bytes(b::SOL_TCP, b::TCP_ULP, b"tls")
            .map_err(|e| {
                if e == ENOENT {
                    fail(
                        e,
                        c_str!("kTLS is not available on this host (modprobe tls)"),
                    )
                } else {
                    fail(e, c_str!("attaching the tls upper-layer protocol failed"))
                }
            })?;
        // The keys reach TLS_TX/TLS_RX from a page of the importing process: for a
        // kernel pointer the kTLS setter copies with a `memcpy` that FORTIFY_SOURCE
        // reports as a field-spanning write (a WARNING on distribution kernels).
        let page = ktls::UserPage::map()
            .map_err(|e| fail(e, c_str!("cannot map a page for the kTLS keys")))?;
        for (keys, name) in [(&tls.tx, b::TLS_TX), (&tls.rx, b::TLS_RX)] {
            let Some(keys) = keys else { continue };
            let mut info = [0u8; ktls::INFO_MAX];
            let len = tls.info(keys, &mut info);
            let set = page.fill(&info[..len]).and_then(|()| {
                // SAFETY: the page is mapped in the caller's address space and holds
                // `len` bytes; the setsockopt path copies them with `copy_from_user`.
                let ret = unsafe {
                    b::do_sock_setsockopt(
                        self.sock.as_ptr(),
                        false,
                        b::PRISM_SOL_TLS as c_int,
                        name as c_int,
                        b::prism_user_sockptr(page.addr()),
                        len as c_int,
                    )
                };
                to_result(ret)
            });
            page.wipe();
            ktls::wipe(&mut info);
            set.map_err(|e| {
                fail(
                    e,
                    c_str!("setting the kTLS keys failed (is the cipher available on this host?)"),
                )
            })?;
        }
        if tls.tx_zerocopy {
            self.setsockopt(b::PRISM_SOL_TLS, b::TLS_TX_ZEROCOPY_RO, 1)?;
        }
        if tls.rx_no_pad {
            self.setsockopt(b::PRISM_SOL_TLS, b::TLS_RX_EXPECT_NO_PAD, 1)?;
        }
        Ok(())
    }

    /// Whether leaving repair mode must send a window probe. The probe (an old sequence
    /// number) makes the peer acknowledge at once: worth it when sent data is
    /// unacknowledged (its ACKs may have been dropped during the hop, and would
    /// otherwise cost a retransmission timeout) or the peer's window was closed (an
    /// opening it announced meanwhile would wait for the zero-window probe timer).
    /// Otherwise the peer's answer teaches the socket nothing, and the probe's round
    /// trip through the network stack would be the largest part of the import.
    fn needs_probe(blob: &Blob<'_>) -> bool {
        blob.sent_len() != 0 || blob.snd_wnd == 0
    }

    /// Sends the window probe of `TCP_REPAIR_OFF` through the kernel's own path (the
    /// probe's sender is not exported), on the live socket, unlocked: that path takes
    /// the lock. It also resets SO_REUSEADDR, which the connection's value then
    /// replaces. A failure costs only the quicker recovery the probe buys: the
    /// connection is whole either way, so it is not an import failure.
    fn send_window_probe(&self, reuseaddr: bool) {
        if self
            .setsockopt(b::SOL_TCP, b::TCP_REPAIR, b::TCP_REPAIR_OFF)
            .is_ok()
            && reuseaddr
        {
            // SAFETY: the socket is alive (its file holds it); the setter locks it.
            unsafe { b::sock_set_reuseaddr(self.sk.as_ptr()) };
        }
    }

    /// Leaves repair mode as `TCP_REPAIR_OFF_NO_WP` does (`finish` then restores the
    /// connection's SO_REUSEADDR), under the lock `restore` held.
    fn repair_off_silent(&self, _lock: &SockLock<'_>) {
        // SAFETY: the socket lock is held.
        unsafe { (*self.tp()).set_repair(0) };
    }

    /// Puts a socket that failed to go live back into repair mode and disconnects it,
    /// under the lock it was restored under: the peer's packets waiting in the backlog
    /// then meet a closed socket, and nothing they carry is acknowledged.
    fn silence(&self, lock: &SockLock<'_>) {
        // SAFETY: the socket lock is held; repair mode makes the disconnect silent.
        unsafe {
            (*self.tp()).set_repair(1);
            if u32::from((*lock.sk()).__sk_common.skc_state) != b::TCP_CLOSE {
                crate::socket::disconnect(lock.sk());
            }
        }
    }

    /// Queues the unsent data as new data and restores what leaving repair mode reset.
    fn finish(&self, lock: &SockLock<'_>, blob: &Blob<'_>, bufs: Bufs) -> Result<(), Failure> {
        // SAFETY: we hold the socket lock.
        unsafe {
            (*lock.sk())
                .__sk_common
                .set_skc_reuse(blob.reuseaddr.into())
        };
        let unsent_len = blob.write_seq.wrapping_sub(blob.snd_nxt);
        let unsent = cut(&blob.send_queue, blob.sent_len(), false);
        self.queue(lock, b::TCP_NO_QUEUE, unsent, unsent_len)?;
        // SAFETY: as above.
        if unsafe { (*self.tp()).write_seq } != blob.write_seq {
            return Err(fail(EIO, c_str!("unsent data was not restored whole")));
        }
        // Queues above these sizes drain as on the old host: the window shrinks and
        // writers wait until they are below.
        // SAFETY: we hold the socket lock.
        unsafe {
            (*lock.sk()).sk_sndbuf = bufs.snd;
            (*lock.sk()).sk_rcvbuf = bufs.rcv;
        }
        Ok(())
    }

    /// Writes `chunks` (`len` bytes) through `tcp_sendmsg_locked`: in repair mode to the
    /// receive queue or as already-sent data, outside it (`TCP_NO_QUEUE`) as new data.
    fn queue<'c>(
        &self,
        lock: &SockLock<'_>,
        queue: u32,
        chunks: impl Iterator<Item = &'c [u8]>,
        len: u32,
    ) -> Result<(), Failure> {
        if len == 0 {
            return Ok(());
        }
        let tp = self.tp();
        if queue != b::TCP_NO_QUEUE {
            // SAFETY: the socket lock is held.
            unsafe { (*tp).repair_queue = queue as u8 };
        }
        for chunk in chunks {
            let mut done = 0;
            while done < chunk.len() {
                let rest = &chunk[done..];
                let iov = b::kvec {
                    iov_base: rest.as_ptr().cast_mut().cast(),
                    iov_len: rest.len(),
                };
                let mut msg = b::msghdr {
                    msg_flags: b::PRISM_MSG_DONTWAIT,
                    ..Default::default()
                };
                // SAFETY: `iov` describes `rest`, which outlives the call; the socket
                // lock is held, as `tcp_sendmsg_locked` requires.
                let ret = unsafe {
                    b::iov_iter_kvec(&mut msg.msg_iter, b::PRISM_ITER_SOURCE, &iov, 1, rest.len());
                    b::tcp_sendmsg_locked(lock.sk(), &mut msg, rest.len())
                };
                if ret <= 0 {
                    let e = if ret < 0 {
                        Error::from_errno(ret)
                    } else {
                        errno(b::ENOBUFS)
                    };
                    return Err(fail(e, c_str!("queueing the connection's data failed")));
                }
                done += ret as usize;
            }
        }
        Ok(())
    }

    /// Tears the socket down without a packet to the peer.
    fn abort(&mut self) {
        // SAFETY: the socket is alive (its file holds it). Repair mode makes
        // `tcp_disconnect` and the final close silent.
        unsafe {
            let lock = SockLock::lock_raw(self.sk);
            (*self.tp()).set_repair(1);
            if u32::from((*self.sk.as_ptr()).__sk_common.skc_state) != b::TCP_CLOSE {
                crate::socket::disconnect(lock.sk());
            }
            drop(lock);
            if self.fd >= 0 {
                b::put_unused_fd(self.fd as u32);
            }
            b::fput(self.file);
        }
        self.fd = -1;
    }

    /// Hands the fd to the caller.
    fn commit(self) {
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: the fd was reserved for this file, which the table now owns.
        unsafe { b::fd_install(this.fd as u32, this.file) };
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        self.abort();
    }
}

/// The send and receive buffer sizes an imported socket ends with.
#[derive(Clone, Copy)]
struct Bufs {
    snd: c_int,
    rcv: c_int,
}

/// The largest buffer a caller without SO_*BUFFORCE's right can give a socket here: a
/// size the application locked came from SO_SNDBUF/SO_RCVBUF, which stop at twice the
/// core maximum; an unlocked one is TCP's autotuning, which grows to the namespace's
/// tcp_wmem/tcp_rmem maximum.
fn buf_cap(locked: bool, core_max: u32, tcp_max: c_int) -> c_int {
    let set = (2 * u64::from(core_max)).min(i32::MAX as u64 / 2) as c_int;
    if locked {
        set
    } else {
        set.max(tcp_max)
    }
}

/// The part of the send queue's `chunks` before byte `at` (already sent) or from it on
/// (not yet sent), as sub-slices of the chunks: nothing is allocated or copied.
fn cut<'c>(chunks: &'c [&'c [u8]], at: u32, sent: bool) -> impl Iterator<Item = &'c [u8]> {
    let at = at as usize;
    let mut start = 0usize;
    chunks.iter().filter_map(move |c| {
        let (lo, hi) = (start, start + c.len());
        start = hi;
        let (from, to) = if sent {
            (lo, hi.min(at))
        } else {
            (lo.max(at), hi)
        };
        (from < to).then(|| &c[from - lo..to - lo])
    })
}

pub(crate) fn sock_import(req: &Request<'_>) -> Result {
    let blob = Blob::decode(req).map_err(|(e, msg, at)| {
        req.set_err(at, msg);
        e
    })?;
    let table = guard::table().ok_or(ENODEV)?;
    let net = req.net();
    let report = |(e, msg): Failure| {
        req.set_err(None, msg);
        e
    };
    let building = Building::create(net, &blob).map_err(report)?;
    let bufs = building.prepare(&blob).map_err(report)?;
    // What can fail and does not need the live socket happens before it goes live: the
    // reply and the release tracking are allocated now. Once repair mode ends the
    // socket may acknowledge the peer's data, and tearing it down then would lose it.
    let mut msg = req.reply_sized(cmd::SOCK_IMPORT, 128)?;
    msg.put_u32(a::FD, building.fd as u32)?;
    msg.put_u64(a::MIGRATION_ID, blob.migration_id, a::PAD)?;
    // SAFETY: the socket is reachable by nobody but us until the fd is installed; its
    // congestion control was set by `prepare`.
    put_cc_name(&mut msg, &unsafe { cc_name(&*building.tp()) })?;
    let tracker = tracker::get().ok_or(ENODEV)?;
    let local = blob.bind_addr.as_ref().unwrap_or(&blob.saddr);
    // SAFETY: the socket is ours until the fd is installed.
    let prepared = unsafe {
        tracker.prepare(
            building.sk.as_ptr(),
            blob.migration_id,
            (blob.family, local, &blob.daddr, blob.sport, blob.dport),
        )
    }
    .inspect_err(|_| req.set_err(None, c_str!("cannot allocate the release tracking")))?;
    let tuple = Tuple::of_socket(
        net as usize,
        blob.family,
        local,
        &blob.daddr,
        blob.sport,
        blob.dport,
    );
    if blob.tls.is_some() {
        // kTLS attaches without the socket lock (below): until the import ends, the
        // guard keeps the peer's packets from a socket that could acknowledge them.
        // SAFETY: the request's namespace lives while it is handled.
        let quota = unsafe { table.quota(net) }.ok_or(ENODEV)?;
        if table.insert(&tuple, None, quota).is_err() {
            req.set_err(
                None,
                c_str!("departed-tuple table is full: cannot hold the flow while kTLS attaches"),
            );
            return Err(errno(b::ENOSPC));
        }
    }
    {
        // SAFETY: the socket lives as long as `building`, which outlives the lock.
        let mut lock = unsafe { SockLock::lock_raw(building.sk) };
        let mut restored = building.restore(&lock, &blob);
        if let (Ok(()), Some(tls)) = (&restored, &blob.tls) {
            drop(lock);
            restored = building.attach_tls(tls);
            // SAFETY: as above.
            lock = unsafe { SockLock::lock_raw(building.sk) };
        }
        let live = restored
            .and_then(|()| {
                // SAFETY: the socket is locked and ours; TLS_RX was set by `attach_tls`.
                unsafe { ktls::queue_decrypted(lock.sk(), &blob.tls_decrypted) }?;
                building.repair_off_silent(&lock);
                building.finish(&lock, &blob, bufs)
            })
            .map_err(report)
            .and_then(|()| {
                // The reply is queued before the lock goes: if it cannot be, the peer
                // has seen nothing the blob does not hold.
                if fault::injected() {
                    req.set_err(None, c_str!("the reply cannot be queued (fault injected)"));
                    return Err(errno(b::ENOBUFS));
                }
                msg.send_reply()
            });
        if let Err(e) = live {
            building.silence(&lock);
            return Err(e);
        }
        table.remove(&tuple);
        // SAFETY: prepared for this socket, which is locked; nothing fails after this.
        unsafe { tracker.track(lock.sk(), prepared) };
    }
    if Building::needs_probe(&blob) {
        building.send_window_probe(blob.reuseaddr);
    }
    building.commit();
    // SAFETY: the request's namespace lives while it is handled.
    unsafe { pernet::bump(req.net(), |s| &s.imports) };
    Ok(())
}
