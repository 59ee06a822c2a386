//! Requests generated from the YNL spec, most of them hostile: for every operation that
//! takes attributes, a well-formed request (for sock-import a real blob) is mutated
//! with wrong lengths, boundary and random values, attributes dropped, duplicated,
//! unknown, flagged nested or byte-swapped and filled with garbage, truncated headers
//! and oversized binaries; unknown commands and dumps go in between. Every request must
//! be answered, the module must keep working, and the run must leave no splat (and, on
//! the debug kernel, no leak). `PRISM_FUZZ_REQUESTS` sets the count (`make fuzz`).

use super::common::loaded;
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};
use crate::topology::{in_ns, Topology};
use prism_sock::Client;
use prism_uapi_gen::{Attr, Spec};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

pub fn tests() -> Vec<Test> {
    vec![Test {
        name: "fuzz_requests_from_spec",
        run: fuzz,
    }]
}

/// Requests of the suite's run; `make fuzz` sends more.
const SUITE_REQUESTS: u64 = 20_000;

const NLA_F_NESTED: u16 = 1 << 15;
const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// splitmix64: a fixed seed makes a failing run repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// One attribute of a request being built: its type field (flags included) and payload.
#[derive(Clone)]
struct Tlv {
    kind: u16,
    payload: Vec<u8>,
}

fn encode(tlvs: &[Tlv]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tlvs {
        out.extend_from_slice(&((4 + t.payload.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&t.kind.to_ne_bytes());
        out.extend_from_slice(&t.payload);
        out.resize((out.len() + 3) & !3, 0);
    }
    out
}

fn decode(mut attrs: &[u8]) -> Vec<Tlv> {
    let mut out = Vec::new();
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        if len < 4 || len > attrs.len() {
            break;
        }
        out.push(Tlv {
            kind: u16::from_ne_bytes([attrs[2], attrs[3]]),
            payload: attrs[4..len].to_vec(),
        });
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    out
}

/// Width of a fixed-size attribute type; `None` for variable-size ones.
fn width(ty: &str) -> Option<usize> {
    Some(match ty {
        "u8" => 1,
        "u16" => 2,
        "u32" => 4,
        "u64" => 8,
        "flag" | "pad" => 0,
        _ => return None,
    })
}

/// A value of `a`'s type: plausible, at a boundary, or random.
fn value(a: &Attr, rng: &mut Rng) -> Vec<u8> {
    if let Some(w) = width(&a.ty) {
        let max = if w == 8 { u64::MAX } else { (1u64 << (8 * w)) - 1 };
        let v = match rng.below(6) {
            0 => 0,
            1 => 1,
            2 => max,
            3 => max >> 1,
            4 => (max >> 1) + 1,
            _ => rng.next() & max,
        };
        return v.to_ne_bytes()[..w].to_vec();
    }
    let max = a.max_len.unwrap_or(64) as usize;
    let len = match rng.below(4) {
        0 => max,
        1 => max + 1 + rng.below(8) as usize,
        _ => rng.below(max as u64 + 1) as usize,
    };
    let mut v = rng.bytes(len);
    if a.ty == "string" && !v.is_empty() && rng.chance(70) {
        let last = v.len() - 1;
        v[last] = 0;
    }
    v
}

/// An operation that takes attributes, resolved from the spec.
struct Target {
    name: String,
    cmd: u8,
    attrs: Vec<Attr>,
    /// Highest attribute number of its set.
    max_attr: u16,
}

fn targets(spec: &Spec) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for op in &spec.ops {
        let (Some(names), Some(set)) = (&op.request, &op.set) else {
            continue;
        };
        let set = spec
            .sets
            .iter()
            .find(|s| &s.name == set)
            .ok_or_else(|| format!("{}: no set {set}", op.entry.name))?;
        let attrs = names
            .iter()
            .map(|n| {
                set.attrs
                    .iter()
                    .find(|a| &a.entry.name == n)
                    .cloned()
                    .ok_or_else(|| format!("{}: no attribute {n}", op.entry.name))
            })
            .collect::<Result<Vec<_>, String>>()?;
        out.push(Target {
            name: op.entry.name.clone(),
            cmd: op.entry.value as u8,
            attrs,
            max_attr: set.attrs.iter().map(|a| a.entry.value).max().unwrap_or(0) as u16,
        });
    }
    Ok(out)
}

/// One mutation of a request's attributes.
fn mutate(t: &Target, tlvs: &mut Vec<Tlv>, rng: &mut Rng) {
    let pick = |rng: &mut Rng, n: usize| rng.below(n as u64) as usize;
    match rng.below(9) {
        // A wrong length.
        0 if !tlvs.is_empty() => {
            let i = pick(rng, tlvs.len());
            let len = tlvs[i].payload.len();
            let new = match rng.below(4) {
                0 => 0,
                1 => len.saturating_sub(1),
                2 => len + 1,
                _ => rng.below(64) as usize,
            };
            tlvs[i].payload.resize(new, 0xa5);
        }
        // A boundary or random value of the attribute's type.
        1 | 2 if !tlvs.is_empty() => {
            let i = pick(rng, tlvs.len());
            if let Some(a) = t
                .attrs
                .iter()
                .find(|a| a.entry.value as u16 == tlvs[i].kind & 0x3fff)
            {
                tlvs[i].payload = value(a, rng);
            }
        }
        // Missing.
        3 if !tlvs.is_empty() => {
            let i = pick(rng, tlvs.len());
            tlvs.remove(i);
        }
        // Duplicated.
        4 if !tlvs.is_empty() => {
            let i = pick(rng, tlvs.len());
            let dup = tlvs[i].clone();
            tlvs.insert(pick(rng, tlvs.len() + 1), dup);
        }
        // Unknown.
        5 => {
            let kind = match rng.below(3) {
                0 => 0,
                1 => t.max_attr + 1 + rng.below(4) as u16,
                _ => rng.below(0x3fff) as u16,
            };
            let len = rng.below(40) as usize;
            tlvs.insert(
                pick(rng, tlvs.len() + 1),
                Tlv {
                    kind,
                    payload: rng.bytes(len),
                },
            );
        }
        // Nested or byte-order flag, with garbage or a nest of attributes inside.
        6 if !tlvs.is_empty() => {
            let i = pick(rng, tlvs.len());
            let flag = if rng.chance(50) {
                NLA_F_NESTED
            } else {
                NLA_F_NET_BYTEORDER
            };
            tlvs[i].kind |= flag;
            if rng.chance(50) {
                let inner: Vec<Tlv> = (0..rng.below(4))
                    .map(|_| {
                        let kind = rng.below(u64::from(t.max_attr) + 2) as u16;
                        let len = rng.below(12) as usize;
                        Tlv {
                            kind,
                            payload: rng.bytes(len),
                        }
                    })
                    .collect();
                tlvs[i].payload = encode(&inner);
            } else {
                let len = rng.below(24) as usize;
                tlvs[i].payload = rng.bytes(len);
            }
        }
        // An oversized binary.
        7 => {
            if let Some(a) = t.attrs.iter().find(|a| a.ty == "binary") {
                let len = [17, 4096, 32 << 10, 32 << 10 | 1, 60_000][pick(rng, 5)];
                tlvs.push(Tlv {
                    kind: a.entry.value as u16,
                    payload: rng.bytes(len),
                });
            }
        }
        // Attributes of the other operations' sets.
        _ => {
            if let Some(a) = t.attrs.get(pick(rng, t.attrs.len().max(1))) {
                tlvs.push(Tlv {
                    kind: a.entry.value as u16,
                    payload: value(a, rng),
                });
            }
        }
    }
}

/// A generic netlink socket that sends one request at a time and reads to its end.
struct Nl {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// How the kernel answered one request.
#[derive(Default)]
struct Answer {
    errno: i32,
    /// fds a successful import installed in this process.
    fds: Vec<RawFd>,
}

impl Nl {
    fn open() -> Result<Self, String> {
        // SAFETY: plain socket creation; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(format!("netlink socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        let big: libc::c_int = 4 << 20;
        // SAFETY: option values of the right types and sizes.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const libc::c_int).cast(),
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&big as *const libc::c_int).cast(),
                4,
            );
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; 2 << 20],
        })
    }

    /// Sends `body` (generic netlink header and attributes) with `len_delta` added to
    /// the netlink length, and reads the answer: the acknowledgement, or for a dump its
    /// end. `fd_attr` is the attribute whose u32 is an installed fd.
    fn transact(
        &mut self,
        family: u16,
        body: &[u8],
        dump: bool,
        len_delta: i32,
        fd_attr: u16,
    ) -> Result<Answer, String> {
        self.seq += 1;
        let mut flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        if dump {
            flags |= libc::NLM_F_DUMP as u16;
        }
        let len = ((16 + body.len()) as i32 + len_delta).max(0) as u32;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: a zeroed sockaddr_nl addresses the kernel.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buffer and address valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            // The kernel refused the message itself (too short a header, say).
            let e = std::io::Error::last_os_error();
            return Ok(Answer {
                errno: e.raw_os_error().unwrap_or(0),
                fds: Vec::new(),
            });
        }
        let mut answer = Answer::default();
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(format!(
                    "request {} unanswered: {}",
                    self.seq,
                    std::io::Error::last_os_error()
                ));
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let word =
                    |at: usize| u32::from_ne_bytes(self.buf[at..at + 4].try_into().unwrap_or_default());
                let mlen = word(off) as usize;
                if mlen < 16 || off + mlen > n {
                    return Err(format!("malformed answer to request {}", self.seq));
                }
                let kind = u16::from_ne_bytes([self.buf[off + 4], self.buf[off + 5]]);
                let seq = word(off + 8);
                if seq == self.seq {
                    match kind {
                        NLMSG_ERROR => {
                            answer.errno = -(word(off + 16) as i32);
                            return Ok(answer);
                        }
                        NLMSG_DONE => return Ok(answer),
                        k if k == family && mlen >= 20 => {
                            for t in decode(&self.buf[off + 20..off + mlen]) {
                                if t.kind == fd_attr && t.payload.len() == 4 && !dump {
                                    answer.fds.push(u32::from_ne_bytes(
                                        t.payload[..4].try_into().unwrap_or_default(),
                                    ) as RawFd);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                off += (mlen + 3) & !3;
            }
        }
    }
}

/// Sockets the export requests name: a live connection (replaced once an export
/// detached it), a listener, a UDP socket, a pipe.
struct Fds {
    listener: TcpListener,
    conn: (TcpStream, TcpStream),
    udp: std::net::UdpSocket,
    pipe: (OwnedFd, OwnedFd),
}

fn connection(listener: &TcpListener) -> Result<(TcpStream, TcpStream), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (mut s, _) = listener.accept().map_err(|e| e.to_string())?;
    // A little unread data each way, so blobs carry queues.
    c.write_all(b"request bytes").map_err(|e| e.to_string())?;
    s.write_all(b"response bytes").map_err(|e| e.to_string())?;
    let mut b = [0u8; 14];
    c.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok((c, s))
}

impl Fds {
    fn new() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let conn = connection(&listener)?;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let mut p = [0; 2];
        // SAFETY: `p` has room for two fds.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err("pipe".into());
        }
        // SAFETY: fresh fds we own.
        let pipe = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        Ok(Self {
            listener,
            conn,
            udp,
            pipe,
        })
    }

    fn pick(&self, rng: &mut Rng) -> u32 {
        match rng.below(8) {
            0 => self.listener.as_raw_fd() as u32,
            1 => self.udp.as_raw_fd() as u32,
            2 => self.pipe.0.as_raw_fd() as u32,
            3 => [0, 1, 2, 9999, u32::MAX, i32::MAX as u32][rng.below(6) as usize],
            4 => self.conn.0.as_raw_fd() as u32,
            _ => self.conn.1.as_raw_fd() as u32,
        }
    }
}

/// What the run saw, per operation: answers by errno.
type Tally = BTreeMap<String, BTreeMap<i32, u64>>;

/// Sends `requests` requests from the calling thread's namespace; what they came to,
/// the imports that succeeded and the namespace's error count they added.
fn run(spec: &Spec, family: u16, requests: u64, seed: u64) -> Result<(Tally, u64, u64), String> {
    let targets = targets(spec)?;
    let state_set = spec
        .sets
        .iter()
        .find(|s| s.name == "state")
        .ok_or("no state set")?;
    let num = |name: &str| {
        state_set
            .attrs
            .iter()
            .find(|a| a.entry.name == name)
            .map(|a| a.entry.value as u16)
            .ok_or_else(|| format!("no attribute {name}"))
    };
    let (fd_attr, detach_attr) = (num("fd")?, num("detach")?);
    let export_cmd = targets
        .iter()
        .find(|t| t.name == "sock-export")
        .ok_or("no sock-export")?
        .cmd;
    let list_cmd = spec
        .ops
        .iter()
        .find(|o| o.entry.name == "sock-list")
        .map(|o| o.entry.value as u8)
        .ok_or("no sock-list")?;
    let mut nl = Nl::open()?;
    let mut rng = Rng(seed);
    let mut fds = Fds::new()?;
    // Real blobs to mutate: a snapshot of a live connection, and a detached one whose
    // tuple is free to import again.
    let client = Client::connect().map_err(|e| e.to_string())?;
    let errors_before = client.info().map_err(|e| e.to_string())?.errors;
    let blob = |fds: &Fds, detach: bool| -> Result<Vec<u8>, String> {
        let c = &client;
        let s = if detach {
            c.export_detach(std::os::fd::AsFd::as_fd(&fds.conn.1))
        } else {
            c.export_snapshot(std::os::fd::AsFd::as_fd(&fds.conn.1))
        }
        .map_err(|e| format!("base blob: {e}"))?;
        Ok(s.as_bytes().to_vec())
    };
    let snapshot = decode(&blob(&fds, false)?);
    let detached = decode(&blob(&fds, true)?);
    fds.conn = connection(&fds.listener)?;
    let mut tally = Tally::new();
    let mut imported = 0u64;
    for _ in 0..requests {
        let r = rng.below(100);
        let (name, body, dump, len_delta) = if r < 3 {
            // An unknown command, or a truncated or inflated header.
            let cmd = [0u8, 200, 255][rng.below(3) as usize];
            // Never below the netlink header nor beyond the message: the kernel drops
            // those without an answer.
            let delta = [0i32, -1, -2, -3][rng.below(4) as usize];
            ("unknown".to_string(), vec![cmd, 1, 0, 0], false, delta)
        } else if r < 6 {
            let len = if rng.chance(50) { rng.below(16) as usize } else { 0 };
            let attrs = rng.bytes(len);
            let mut body = vec![list_cmd, 1, 0, 0];
            body.extend_from_slice(&attrs);
            ("sock-list".to_string(), body, true, 0)
        } else {
            let t = &targets[rng.below(targets.len() as u64) as usize];
            let mut tlvs: Vec<Tlv> = match t.name.as_str() {
                "sock-import" => {
                    if rng.chance(50) {
                        detached.clone()
                    } else {
                        snapshot.clone()
                    }
                }
                "sock-export" => {
                    let mut v = vec![Tlv {
                        kind: fd_attr,
                        payload: fds.pick(&mut rng).to_ne_bytes().to_vec(),
                    }];
                    if rng.chance(30) {
                        v.push(Tlv {
                            kind: detach_attr,
                            payload: Vec::new(),
                        });
                    }
                    v
                }
                _ => {
                    let mut v = Vec::new();
                    for a in &t.attrs {
                        if rng.chance(80) {
                            v.push(Tlv {
                                kind: a.entry.value as u16,
                                payload: value(a, &mut rng),
                            });
                        }
                    }
                    v
                }
            };
            for _ in 0..1 + rng.below(3) {
                mutate(t, &mut tlvs, &mut rng);
            }
            let mut body = vec![t.cmd, if rng.chance(3) { 2 } else { 1 }, 0, 0];
            let mut attrs = encode(&tlvs);
            if rng.chance(3) {
                // A torn last attribute.
                let cut = rng.below(attrs.len().min(7) as u64 + 1) as usize;
                attrs.truncate(attrs.len() - cut);
            }
            body.extend_from_slice(&attrs);
            (t.name.clone(), body, false, 0)
        };
        let answer = nl.transact(family, &body, dump, len_delta, fd_attr)?;
        *tally
            .entry(name.clone())
            .or_default()
            .entry(answer.errno)
            .or_default() += 1;
        for fd in answer.fds {
            imported += 1;
            // SAFETY: the kernel installed this fd in our table for us.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if answer.errno == 0 && body.first() == Some(&export_cmd) {
            // A detached end exports no more: a new connection replaces the pair.
            let aborted = |fd: RawFd| {
                let mut probe = [0u8; 1];
                // SAFETY: a non-blocking peek into a local buffer on our own socket.
                let n = unsafe {
                    libc::recv(
                        fd,
                        probe.as_mut_ptr().cast(),
                        1,
                        libc::MSG_PEEK | libc::MSG_DONTWAIT,
                    )
                };
                n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECONNABORTED)
            };
            if aborted(fds.conn.0.as_raw_fd()) || aborted(fds.conn.1.as_raw_fd()) {
                fds.conn = connection(&fds.listener)?;
            }
        }
    }
    let errors = client.info().map_err(|e| e.to_string())?.errors - errors_before;
    Ok((tally, imported, errors))
}

fn fuzz(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let c = loaded(env, log)?;
    let spec_text = std::fs::read_to_string(&env.spec).map_err(|e| format!("{}: {e}", env.spec.display()))?;
    let spec = Spec::parse(&spec_text)?;
    let requests = std::env::var("PRISM_FUZZ_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SUITE_REQUESTS);
    let seed = 0x5eed_0000 + requests;
    let family = c.family_id();
    let start = Instant::now();
    let (tally, imported, errors) = in_ns("fe", move || run(&spec, family, requests, seed))??;
    log.line(format!(
        "{requests} requests (seed {seed:#x}) in {:?}; {imported} imports succeeded, {errors} errors counted",
        start.elapsed()
    ));
    for (op, by) in &tally {
        log.line(format!("  {op}: answers by errno {by:?}"));
    }
    let answered: u64 = tally.values().flat_map(|m| m.values()).sum();
    check!(answered == requests, "{answered} of {requests} requests answered");
    for op in ["sock-import", "sock-export", "sock-forward", "get-info"] {
        let by = tally.get(op).ok_or(format!("no {op} request sent"))?;
        check!(by.keys().any(|e| *e != 0), "{op}: no request refused: {by:?}");
    }
    // The module still answers, and counted the refusals in the fuzzed namespace.
    check!(errors > 0, "errors counter did not move");
    c.info().map_err(|e| e.to_string())?;
    Ok(())
}
