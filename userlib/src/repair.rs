//! The `repair` backend: the same export and import in user space with TCP_REPAIR
//! socket options, for hosts without the module (and as the benchmarks' baseline).
//! What CRIU's libsoccr does, in its order: sequence numbers before `connect`, queues
//! and options after it, the window last, repair off (one window probe) and only then
//! the bytes that were never sent.
//!
//! Differences from the module: about twenty system calls per side instead of one,
//! the capture is not atomic (the caller must keep the socket still), there is no RST
//! guard (the L4 layer must hold the flow during the hand-off), only ESTABLISHED
//! sockets are taken, and congestion state and socket options are not carried.

use crate::client::ImportOptions;
use crate::error::{Error, Result};
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

const TCP_REPAIR: libc::c_int = 19;
const TCP_REPAIR_QUEUE: libc::c_int = 20;
const TCP_QUEUE_SEQ: libc::c_int = 21;
const TCP_REPAIR_OPTIONS: libc::c_int = 22;
const TCP_TIMESTAMP: libc::c_int = 24;
const TCP_REPAIR_WINDOW: libc::c_int = 29;
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const SIOCINQ: libc::c_ulong = 0x541b;
const SIOCOUTQ: libc::c_ulong = 0x5411;
const SIOCOUTQNSD: libc::c_ulong = 0x894b;

const MAGIC: &[u8; 4] = b"PRRP";

/// `struct tcp_repair_window`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RepairWindow {
    snd_wl1: u32,
    snd_wnd: u32,
    max_window: u32,
    rcv_wnd: u32,
    rcv_wup: u32,
}

/// A connection captured with TCP_REPAIR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairState {
    /// Local address and port.
    pub local: SocketAddr,
    /// Peer address and port.
    pub peer: SocketAddr,
    /// Sequence number of the first send-queue byte (snd_una).
    pub send_seq: u32,
    /// Sequence number of the first receive-queue byte.
    pub recv_seq: u32,
    /// Sent-but-unacknowledged bytes, then unsent ones.
    pub send_queue: Vec<u8>,
    /// How many bytes at the end of `send_queue` were never sent.
    pub unsent: u32,
    /// Received bytes the application did not read.
    pub recv_queue: Vec<u8>,
    /// MSS to announce.
    pub mss: u32,
    /// Window scales (peer's, ours), if negotiated.
    pub wscale: Option<(u8, u8)>,
    /// SACK negotiated.
    pub sack: bool,
    /// The timestamp clock the peer sees, if timestamps were negotiated.
    pub timestamp: Option<u32>,
    window: RepairWindow,
}

fn os(what: &str) -> Error {
    let e = io::Error::last_os_error();
    Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}

fn set<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: &T, what: &str) -> Result<()> {
    // SAFETY: `val` is a valid T for the duration of the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os(what));
    }
    Ok(())
}

fn get<T: Default>(fd: RawFd, level: libc::c_int, opt: libc::c_int, what: &str) -> Result<T> {
    let mut val = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` has room for `len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, opt, (&mut val as *mut T).cast(), &mut len) };
    if r != 0 {
        return Err(os(what));
    }
    Ok(val)
}

fn tcp_set(fd: RawFd, opt: libc::c_int, val: libc::c_int, what: &str) -> Result<()> {
    set(fd, libc::IPPROTO_TCP, opt, &val, what)
}

fn ioctl_int(fd: RawFd, req: libc::c_ulong, what: &str) -> Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: the request writes one int.
    if unsafe { libc::ioctl(fd, req, &mut n) } != 0 {
        return Err(os(what));
    }
    Ok(n as usize)
}

/// Peeks `len` bytes of the selected repair queue.
fn peek(fd: RawFd, len: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    // SAFETY: `buf` has room for `len` bytes.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(os(what));
    }
    if n as usize != len {
        return Err(Error::Protocol(format!("{what}: peeked {n} of {len} bytes")));
    }
    Ok(buf)
}

fn sockaddr(fd: RawFd, peer: bool) -> Result<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; the call fills at most its size.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: `p` points to `len` writable bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return Err(os(if peer { "getpeername" } else { "getsockname" }));
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { *(p as *const libc::sockaddr_in) };
            Ok(SocketAddr::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { *(p as *const libc::sockaddr_in6) };
            Ok(SocketAddr::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr).into(),
                u16::from_be(a.sin6_port),
            ))
        }
        f => Err(Error::Protocol(format!("not an IP socket (family {f})"))),
    }
}

fn raw_sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain data, filled below.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let s = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = v4.port().to_be();
            s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = v6.port().to_be();
            s.sin6_addr.s6_addr = v6.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Captures the ESTABLISHED socket `fd` and finishes it here without a packet to the
/// peer. From the capture on, the socket drops every packet that reaches it (a socket
/// filter, attached first, so nothing arrives that the state misses, and nothing is
/// acknowledged) and stays in repair mode, so closing `fd` sends nothing. Keep `fd`
/// open until L4 has moved the flow: the peer's packets that were already on their way
/// here then meet this socket, which drops them (the peer retransmits them to the new
/// owner), instead of the listener, which would answer them with RST. The module's RST
/// guard does this in the kernel; here the socket itself holds the tuple. Close `fd`
/// before importing the state back on this host. If the capture fails, the filter and
/// repair mode go and the socket goes on untouched.
pub fn export_detach(fd: impl AsFd) -> Result<RepairState> {
    let fd = fd.as_fd().as_raw_fd();
    let info = established_info(fd)?;
    drop_incoming(fd)?;
    if let Err(e) = tcp_set(fd, TCP_REPAIR, 1, "TCP_REPAIR on (needs CAP_NET_ADMIN)") {
        accept_incoming(fd);
        return Err(e);
    }
    let captured = capture(fd, &info);
    if captured.is_err() {
        let _ = tcp_set(fd, TCP_REPAIR, -1, "TCP_REPAIR off");
        accept_incoming(fd);
    }
    captured
}

/// Captures the ESTABLISHED socket `fd` in CRIU libsoccr's order, for a caller that
/// already keeps the peer's packets away from it (CRIU locks the network; an L4 layer
/// can hold the flow): TCP_REPAIR on and the capture, no socket filter. The socket
/// stays in repair mode, so closing `fd` sends nothing. Without such a hold, use
/// [`export_detach`]: a segment taken during the capture would be missing from the
/// state. If the capture fails, repair mode goes and the socket goes on untouched.
pub fn export_held(fd: impl AsFd) -> Result<RepairState> {
    let fd = fd.as_fd().as_raw_fd();
    let info = established_info(fd)?;
    tcp_set(fd, TCP_REPAIR, 1, "TCP_REPAIR on (needs CAP_NET_ADMIN)")?;
    let captured = capture(fd, &info);
    if captured.is_err() {
        let _ = tcp_set(fd, TCP_REPAIR, -1, "TCP_REPAIR off");
    }
    captured
}

/// Attaches a socket filter that drops every packet: TCP checks it before it takes a
/// segment, so the socket's state stops changing (packets already queued behind the
/// socket lock are taken when this call releases it).
fn drop_incoming(fd: RawFd) -> Result<()> {
    // BPF_RET | BPF_K with 0: keep 0 bytes, that is, drop.
    let mut drop_all = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    // `prog` points to one valid instruction while `set` runs; the kernel copies it.
    set(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &prog,
        "SO_ATTACH_FILTER",
    )
}

/// Removes the filter of [`drop_incoming`] (the socket goes on as before).
fn accept_incoming(fd: RawFd) {
    let _ = set(
        fd,
        libc::SOL_SOCKET,
        libc::SO_DETACH_FILTER,
        &0 as &libc::c_int,
        "SO_DETACH_FILTER",
    );
}

/// TCP_INFO of `fd`, which must be ESTABLISHED (the only state taken here) and have
/// no upper-layer protocol: kTLS keeps keys and record state TCP_REPAIR cannot read,
/// and its queues hold ciphertext, so such a socket moves only with the module.
fn established_info(fd: RawFd) -> Result<libc::tcp_info> {
    let info = get_info(fd)?;
    if info.tcpi_state != 1 {
        return Err(Error::Protocol(format!(
            "TCP state {} is not ESTABLISHED",
            info.tcpi_state
        )));
    }
    if let Some(ulp) = upper_layer(fd)? {
        return Err(Error::Protocol(format!(
            "the socket has the {ulp} upper-layer protocol (kTLS): the TCP_REPAIR backend cannot carry its state; use the module's export"
        )));
    }
    Ok(info)
}

/// The name of `fd`'s upper-layer protocol (TCP_ULP), if it has one.
fn upper_layer(fd: RawFd) -> Result<Option<String>> {
    let mut name = [0u8; 16];
    let mut len = name.len() as libc::socklen_t;
    // SAFETY: `name` has room for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(os("TCP_ULP"));
    }
    let name = &name[..(len as usize).min(name.len())];
    let name = name.split(|c| *c == 0).next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()))
}

fn get_info(fd: RawFd) -> Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain data.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` has room for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(os("TCP_INFO"));
    }
    Ok(info)
}

fn capture(fd: RawFd, info: &libc::tcp_info) -> Result<RepairState> {
    let local = sockaddr(fd, false)?;
    let peer = sockaddr(fd, true)?;
    tcp_set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE recv")?;
    let rcv_nxt: u32 = get(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ recv")?;
    let inq = ioctl_int(fd, SIOCINQ, "SIOCINQ")?;
    let recv_queue = peek(fd, inq, "peek receive queue")?;
    tcp_set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send")?;
    let write_seq: u32 = get(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, "TCP_QUEUE_SEQ send")?;
    let outq = ioctl_int(fd, SIOCOUTQ, "SIOCOUTQ")?;
    let unsent = ioctl_int(fd, SIOCOUTQNSD, "SIOCOUTQNSD")?;
    let send_queue = peek(fd, outq, "peek send queue")?;
    let window: RepairWindow = get(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, "TCP_REPAIR_WINDOW")?;
    let timestamp = if info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0 {
        Some(get::<u32>(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP")?)
    } else {
        None
    };
    // tcpi_snd_wscale (low nibble) and tcpi_rcv_wscale share one byte.
    let wscales = (info.tcpi_snd_rcv_wscale & 0x0f, info.tcpi_snd_rcv_wscale >> 4);
    Ok(RepairState {
        local,
        peer,
        send_seq: write_seq.wrapping_sub(outq as u32),
        recv_seq: rcv_nxt.wrapping_sub(inq as u32),
        send_queue,
        unsent: unsent as u32,
        recv_queue,
        mss: info.tcpi_snd_mss,
        wscale: (info.tcpi_options & TCPI_OPT_WSCALE != 0).then_some(wscales),
        sack: info.tcpi_options & TCPI_OPT_SACK != 0,
        timestamp,
        window,
    })
}

fn send_all(fd: RawFd, mut data: &[u8], what: &str) -> Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for its length.
        let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL) };
        if n <= 0 {
            return Err(os(what));
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Rebuilds `state` as a live socket in this process's namespace.
pub fn import(state: &RepairState, options: &ImportOptions) -> Result<OwnedFd> {
    let family = if state.local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket creation; ownership passes to OwnedFd.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(os("socket"));
    }
    // SAFETY: fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = sock.as_raw_fd();
    // Repair mode lets bind share the port with a listener (SK_FORCE_REUSE); setting
    // SO_REUSEADDR afterwards would take that back.
    tcp_set(fd, TCP_REPAIR, 1, "TCP_REPAIR on (needs CAP_NET_ADMIN)")?;
    if options.freebind {
        set(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, &1, "IP_FREEBIND")?;
    }
    if options.transparent {
        set(fd, libc::IPPROTO_IP, libc::IP_TRANSPARENT, &1, "IP_TRANSPARENT")?;
    }
    // Room for the whole send queue: in repair mode nothing drains it.
    let room = (state.send_queue.len() * 2 + 65536).min(i32::MAX as usize) as libc::c_int;
    set(
        fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUFFORCE,
        &room,
        "SO_SNDBUFFORCE",
    )?;
    let rroom = (state.recv_queue.len() * 2 + 65536).min(i32::MAX as usize) as libc::c_int;
    set(
        fd,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &rroom,
        "SO_RCVBUFFORCE",
    )?;
    tcp_set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send")?;
    set(
        fd,
        libc::IPPROTO_TCP,
        TCP_QUEUE_SEQ,
        &state.send_seq,
        "TCP_QUEUE_SEQ send",
    )?;
    tcp_set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE recv")?;
    set(
        fd,
        libc::IPPROTO_TCP,
        TCP_QUEUE_SEQ,
        &state.recv_seq,
        "TCP_QUEUE_SEQ recv",
    )?;
    if let Some(ts) = state.timestamp {
        set(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, &ts, "TCP_TIMESTAMP")?;
    }
    let local = match options.bind_addr {
        Some(a) => SocketAddr::new(a, state.local.port()),
        None => state.local,
    };
    let (ss, len) = raw_sockaddr(local);
    // SAFETY: valid sockaddr of `len` bytes.
    if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(os(&format!("bind {local}")));
    }
    let (ss, len) = raw_sockaddr(state.peer);
    // SAFETY: as above; in repair mode connect sends no SYN.
    if unsafe { libc::connect(fd, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(os(&format!("connect {} (repair)", state.peer)));
    }
    let mut opts: Vec<[u32; 2]> = vec![[TCPOPT_MSS, state.mss]];
    if let Some((snd, rcv)) = state.wscale {
        opts.push([TCPOPT_WINDOW, u32::from(snd) | (u32::from(rcv) << 16)]);
    }
    if state.sack {
        opts.push([TCPOPT_SACK_PERM, 0]);
    }
    if state.timestamp.is_some() {
        opts.push([TCPOPT_TIMESTAMP, 0]);
    }
    // SAFETY: `opts` is a valid array of struct tcp_repair_opt of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            TCP_REPAIR_OPTIONS,
            opts.as_ptr().cast(),
            (opts.len() * size_of::<[u32; 2]>()) as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(os("TCP_REPAIR_OPTIONS"));
    }
    // Unread bytes go to the receive queue, sent ones to the send queue as sent.
    tcp_set(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE recv")?;
    send_all(fd, &state.recv_queue, "restore receive queue")?;
    let sent = state.send_queue.len() - (state.unsent as usize).min(state.send_queue.len());
    tcp_set(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE send")?;
    send_all(fd, &state.send_queue[..sent], "restore send queue")?;
    set(
        fd,
        libc::IPPROTO_TCP,
        TCP_REPAIR_WINDOW,
        &state.window,
        "TCP_REPAIR_WINDOW",
    )?;
    tcp_set(fd, TCP_REPAIR, 0, "TCP_REPAIR off")?;
    send_all(fd, &state.send_queue[sent..], "send unsent bytes")?;
    if options.nonblock {
        // SAFETY: fcntl on our fd with integer arguments.
        unsafe {
            libc::fcntl(
                fd,
                libc::F_SETFL,
                libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
            )
        };
    }
    Ok(sock)
}

impl RepairState {
    /// Encodes as `PRRP` and fixed big-endian fields, the queues length-prefixed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for a in [self.local, self.peer] {
            match a.ip() {
                IpAddr::V4(v4) => {
                    out.push(4);
                    out.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    out.push(6);
                    out.extend_from_slice(&v6.octets());
                }
            }
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        let w = self.window;
        let (snd, rcv) = self.wscale.unwrap_or((0xff, 0xff));
        for v in [
            self.send_seq,
            self.recv_seq,
            self.unsent,
            self.mss,
            self.timestamp.unwrap_or(0),
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for v in [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&[snd, rcv, u8::from(self.sack), u8::from(self.timestamp.is_some())]);
        for q in [&self.send_queue, &self.recv_queue] {
            out.extend_from_slice(&(q.len() as u32).to_be_bytes());
            out.extend_from_slice(q);
        }
        out
    }

    /// Decodes what [`RepairState::to_bytes`] produced.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| Error::Malformed("repair state: no PRRP magic".into()))?;
        Reader(body)
            .state()
            .ok_or_else(|| Error::Malformed("repair state: truncated or damaged".into()))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        (self.0.len() >= n).then(|| {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        })
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn addr(&mut self) -> Option<SocketAddr> {
        let ip: IpAddr = match self.take(1)?[0] {
            4 => <[u8; 4]>::try_from(self.take(4)?).ok()?.into(),
            6 => <[u8; 16]>::try_from(self.take(16)?).ok()?.into(),
            _ => return None,
        };
        Some(SocketAddr::new(
            ip,
            u16::from_be_bytes(self.take(2)?.try_into().ok()?),
        ))
    }

    fn queue(&mut self) -> Option<Vec<u8>> {
        let len = self.u32()? as usize;
        Some(self.take(len)?.to_vec())
    }

    fn state(mut self) -> Option<RepairState> {
        let local = self.addr()?;
        let peer = self.addr()?;
        let mut v = [0u32; 10];
        for x in v.iter_mut() {
            *x = self.u32()?;
        }
        let flags = self.take(4)?;
        let send_queue = self.queue()?;
        let recv_queue = self.queue()?;
        if !self.0.is_empty() || v[2] as usize > send_queue.len() {
            return None;
        }
        Some(RepairState {
            local,
            peer,
            send_seq: v[0],
            recv_seq: v[1],
            unsent: v[2],
            mss: v[3],
            timestamp: (flags[3] != 0).then_some(v[4]),
            window: RepairWindow {
                snd_wl1: v[5],
                snd_wnd: v[6],
                max_window: v[7],
                rcv_wnd: v[8],
                rcv_wup: v[9],
            },
            wscale: (flags[0] != 0xff).then_some((flags[0], flags[1])),
            sack: flags[2] != 0,
            send_queue,
            recv_queue,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let s = RepairState {
            local: "10.100.0.1:80".parse().unwrap(),
            peer: "[fd00::2]:40000".parse().unwrap(),
            send_seq: 1,
            recv_seq: 2,
            send_queue: b"sent and unsent".to_vec(),
            unsent: 6,
            recv_queue: b"GET /".to_vec(),
            mss: 1448,
            wscale: Some((7, 9)),
            sack: true,
            timestamp: Some(12345),
            window: RepairWindow {
                snd_wl1: 3,
                snd_wnd: 4,
                max_window: 5,
                rcv_wnd: 6,
                rcv_wup: 7,
            },
        };
        let bytes = s.to_bytes();
        assert_eq!(RepairState::from_bytes(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(RepairState::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let plain = RepairState {
            wscale: None,
            timestamp: None,
            sack: false,
            ..s
        };
        assert_eq!(RepairState::from_bytes(&plain.to_bytes()).unwrap(), plain);
    }
}
