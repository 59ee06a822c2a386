//! What a front end and its back ends do in the migration tests: each node has a netlink
//! client in its own namespace; nodes hand a connection over a control connection
//! (length-prefixed frames: state blob, then the request bytes); the test steers the
//! client's flow in l4 to the new owner.

use crate::harness::Log;
use crate::topology::{self, in_ns, Topology};
use prism_sock::{Client, ImportOptions, MigrationState};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// A TCP connection between two nodes' namespaces that carries frames one way.
pub struct Control {
    tx: TcpStream,
    rx: TcpStream,
}

fn frame_err(e: std::io::Error) -> String {
    format!("control connection: {e}")
}

impl Control {
    /// Connects `from` to a listener in `to` on the nodes' own addresses.
    pub fn between(from: &str, to: &str, port: u16) -> Result<Self, String> {
        let at = SocketAddr::new(topology::addr(to, false), port);
        let listener = in_ns(to, move || TcpListener::bind(at))?.map_err(frame_err)?;
        let tx = in_ns(from, move || TcpStream::connect(at))?.map_err(frame_err)?;
        let (rx, _) = listener.accept().map_err(frame_err)?;
        tx.set_nodelay(true).map_err(frame_err)?;
        Ok(Self { tx, rx })
    }

    /// Sends `frames` from one end and returns what the other end read.
    pub fn carry(&mut self, frames: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
        let Self { tx, rx } = self;
        std::thread::scope(|s| {
            let writer = s.spawn(move || -> std::io::Result<()> {
                for f in frames {
                    tx.write_all(&(f.len() as u32).to_be_bytes())?;
                    tx.write_all(f)?;
                }
                Ok(())
            });
            let mut out = Vec::new();
            for _ in frames {
                let mut len = [0u8; 4];
                rx.read_exact(&mut len).map_err(frame_err)?;
                let mut buf = vec![0; u32::from_be_bytes(len) as usize];
                rx.read_exact(&mut buf).map_err(frame_err)?;
                out.push(buf);
            }
            writer
                .join()
                .map_err(|_| "control writer panicked".to_string())?
                .map_err(frame_err)?;
            Ok(out)
        })
    }
}

/// Time one export and one import took, for the figures of a test's log.
#[derive(Default, Clone, Copy)]
pub struct HopTimes {
    pub export: Duration,
    pub import: Duration,
}

/// The three nodes, their netlink clients and the control connections between them.
pub struct Cluster {
    nl: HashMap<&'static str, Client>,
    links: HashMap<(&'static str, &'static str), Control>,
    next_port: u16,
    /// Client ports that already have a steering rule.
    steered: std::collections::HashSet<u16>,
    pub v6: bool,
}

impl Cluster {
    /// Netlink clients in every node; control connections listen from `first_port` on.
    pub fn with_ports(v6: bool, first_port: u16) -> Result<Self, String> {
        let mut c = Self::new(v6)?;
        c.next_port = first_port;
        Ok(c)
    }

    /// Sockets the control connections keep open in `node`.
    pub fn control_sockets(&self, node: &str) -> u64 {
        self.links
            .keys()
            .filter(|(a, b)| *a == node || *b == node)
            .count() as u64
    }

    pub fn new(v6: bool) -> Result<Self, String> {
        let mut nl = HashMap::new();
        for node in topology::NODES {
            let c = in_ns(node, Client::connect)?.map_err(|e| format!("netlink in {node}: {e}"))?;
            nl.insert(node, c);
        }
        Ok(Self {
            nl,
            links: HashMap::new(),
            next_port: 9100,
            steered: Default::default(),
            v6,
        })
    }

    /// The netlink client of `node`.
    pub fn nl(&self, node: &str) -> &Client {
        &self.nl[node]
    }

    fn link(&mut self, from: &'static str, to: &'static str) -> Result<&mut Control, String> {
        if !self.links.contains_key(&(from, to)) {
            self.next_port += 1;
            let c = Control::between(from, to, self.next_port)?;
            self.links.insert((from, to), c);
        }
        Ok(self.links.get_mut(&(from, to)).expect("inserted above"))
    }

    /// Moves `sock` (owned by `from`) to `to`: export with DETACH, state and `request`
    /// over the control connection, import, then steer the client's flow to `to`.
    /// Returns the new socket, the request as `to` received it, and the timings.
    pub fn hop(
        &mut self,
        log: &mut Log,
        sock: TcpStream,
        from: &'static str,
        to: &'static str,
        request: &[u8],
    ) -> Result<(TcpStream, Vec<u8>, HopTimes), String> {
        self.hop_with(log, sock, from, to, request, &ImportOptions::default())
    }

    /// `hop` with these import options on `to`.
    pub fn hop_with(
        &mut self,
        log: &mut Log,
        sock: TcpStream,
        from: &'static str,
        to: &'static str,
        request: &[u8],
        opts: &ImportOptions,
    ) -> Result<(TcpStream, Vec<u8>, HopTimes), String> {
        let peer = sock.peer_addr().map_err(|e| e.to_string())?;
        let moved = self.move_socket(sock, from, to, request, opts, &mut once)?;
        Topology::steer_flow(log, self.v6, peer.port(), to, self.steered.insert(peer.port()))?;
        log.line(format!(
            "hop {from} -> {to}: migration {:#x}, blob {} bytes, export {:?}, import {:?}",
            moved.id,
            moved.state.as_bytes().len(),
            moved.times.export,
            moved.times.import
        ));
        Ok((moved.stream, moved.request, moved.times))
    }

    /// Moves `sock` from `from` to `to` as `hop` does (no request), with `arm(true)`
    /// right before each export and import call and `arm(false)` right after it, so
    /// that those calls alone meet what `arm` sets up (injected allocation failures). A
    /// failed export leaves the socket as it was and a failed import leaves nothing, so
    /// each is made again, up to `tries` times; `retries` counts them and their errors.
    pub fn hop_retrying(
        &mut self,
        log: &mut Log,
        sock: TcpStream,
        (from, to): (&'static str, &'static str),
        tries: u32,
        arm: &dyn Fn(bool) -> Result<(), String>,
        retries: &mut Retries,
    ) -> Result<TcpStream, String> {
        let peer = sock.peer_addr().map_err(|e| e.to_string())?;
        let mut attempt = |what: &str, call: &mut dyn FnMut() -> Result<(), String>| {
            for _ in 0..tries {
                arm(true)?;
                let r = call();
                arm(false)?;
                match r {
                    Ok(()) => return Ok(()),
                    Err(e) => *retries.errors.entry(format!("{what}: {e}")).or_default() += 1,
                }
            }
            Err(format!("{what} failed {tries} times: {:?}", retries.errors))
        };
        let moved = self.move_socket(sock, from, to, &[], &ImportOptions::default(), &mut attempt)?;
        retries.hops += 1;
        Topology::steer_flow(log, self.v6, peer.port(), to, self.steered.insert(peer.port()))?;
        Ok(moved.stream)
    }

    /// Export with DETACH on `from`, the state and `request` over the control
    /// connection, import on `to`; l4 is not touched. `attempt` makes the export call
    /// and the import call (named "export on fe", ...): [`once`], or again after a
    /// failure.
    fn move_socket(
        &mut self,
        sock: TcpStream,
        from: &'static str,
        to: &'static str,
        request: &[u8],
        opts: &ImportOptions,
        attempt: Attempt<'_>,
    ) -> Result<Moved, String> {
        let t0 = Instant::now();
        let mut state = None;
        let nl_from = &self.nl[from];
        attempt(&format!("export on {from}"), &mut || {
            state = Some(nl_from.export_detach(sock.as_fd()).map_err(|e| e.to_string())?);
            Ok(())
        })?;
        let state = state.ok_or("no state")?;
        let export = t0.elapsed();
        drop(sock);
        let mut frames = self.link(from, to)?.carry(&[state.as_bytes(), request])?;
        let request = frames.pop().ok_or("no request frame")?;
        let carried = MigrationState::from_bytes(frames.pop().ok_or("no state frame")?);
        let t1 = Instant::now();
        let mut imported = None;
        let nl_to = &self.nl[to];
        attempt(&format!("import on {to}"), &mut || {
            imported = Some(nl_to.import_stream(&carried, opts).map_err(|e| e.to_string())?);
            Ok(())
        })?;
        let (stream, id) = imported.ok_or("no stream")?;
        let import = t1.elapsed();
        Ok(Moved {
            stream,
            request,
            state,
            id,
            times: HopTimes { export, import },
        })
    }
}

/// How [`Cluster::move_socket`] makes a call: given the call's name and the call.
type Attempt<'a> = &'a mut dyn FnMut(&str, &mut dyn FnMut() -> Result<(), String>) -> Result<(), String>;

/// Makes the call once; its error names it.
fn once(what: &str, call: &mut dyn FnMut() -> Result<(), String>) -> Result<(), String> {
    call().map_err(|e| format!("{what}: {e}"))
}

/// What [`Cluster::hop_retrying`] met: hops made, and each error with how often a call
/// failed with it and was made again.
#[derive(Default, Debug)]
pub struct Retries {
    pub hops: u32,
    pub errors: std::collections::BTreeMap<String, u32>,
}

impl Retries {
    /// Calls that failed and were made again.
    pub fn failed(&self, what: &str) -> u32 {
        self.errors
            .iter()
            .filter(|(e, _)| e.starts_with(what))
            .map(|(_, n)| n)
            .sum()
    }
}

/// A socket moved by [`Cluster::move_socket`].
struct Moved {
    stream: TcpStream,
    /// The request as the new owner received it.
    request: Vec<u8>,
    /// The state the old owner exported.
    state: MigrationState,
    id: u64,
    times: HopTimes,
}

impl Cluster {
    /// Moves `sock` from `from` to `to` as `hop` does, but l4 is left as it is: `from`
    /// forwards the client's packets that still reach it to `to` (SOCK_FORWARD, once
    /// `to` has imported). Returns the new socket, the request as `to` received it and
    /// the state `from` exported.
    pub fn hop_forwarded(
        &mut self,
        log: &mut Log,
        sock: TcpStream,
        from: &'static str,
        to: &'static str,
        request: &[u8],
    ) -> Result<(TcpStream, Vec<u8>, MigrationState), String> {
        let moved = self.move_socket(sock, from, to, request, &ImportOptions::default(), &mut once)?;
        let IpAddr::V4(owner) = topology::addr(to, false) else {
            return Err("an IPv4 node address".into());
        };
        self.nl(from)
            .forward(&moved.state, owner)
            .map_err(|e| format!("forward on {from}: {e}"))?;
        log.line(format!(
            "hop {from} -> {to}: migration {:#x}; {from} forwards the flow's packets to {owner}, l4 unchanged",
            moved.id
        ));
        Ok((moved.stream, moved.request, moved.state))
    }
}

/// Running checksum of a byte stream (FNV-1a), as CRIU's zdtm tests keep one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        for b in data {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Deterministic test bytes: `len` bytes of stream `seed` starting at `offset`.
pub fn pattern_at(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let x = (offset + i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
            (x >> 29) as u8
        })
        .collect()
}

/// Writes `len` bytes of stream `seed` to `sock`; returns their checksum.
pub fn send_stream(sock: &mut TcpStream, seed: u64, len: usize) -> Result<Checksum, String> {
    let mut sum = Checksum::default();
    let mut off = 0;
    while off < len {
        let n = (len - off).min(64 << 10);
        let chunk = pattern_at(seed, off as u64, n);
        sum.update(&chunk);
        sock.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
        off += n;
    }
    Ok(sum)
}

/// Reads `len` bytes and checks they are stream `seed`, byte for byte.
pub fn expect_stream(sock: &mut TcpStream, seed: u64, len: usize) -> Result<Checksum, String> {
    let mut sum = Checksum::default();
    let mut off = 0;
    let mut buf = vec![0u8; 64 << 10];
    while off < len {
        let want = (len - off).min(buf.len());
        let n = sock
            .read(&mut buf[..want])
            .map_err(|e| format!("read at byte {off} of {len}: {e}"))?;
        if n == 0 {
            return Err(format!("end of stream at byte {off} of {len}"));
        }
        let expected = pattern_at(seed, off as u64, n);
        if buf[..n] != expected[..] {
            let at = buf[..n]
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!("byte {} of {len} corrupted", off + at));
        }
        sum.update(&buf[..n]);
        off += n;
    }
    Ok(sum)
}

/// TCP counters of a namespace from /proc/net/snmp and /proc/net/sockstat.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NsCounters {
    pub out_rsts: u64,
    /// Connections reset while ESTABLISHED or CLOSE_WAIT (Tcp EstabResets).
    pub estab_resets: u64,
    pub tcp_inuse: u64,
}

pub fn counters(ns: &str) -> Result<NsCounters, String> {
    in_ns(ns, || -> Result<NsCounters, String> {
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").map_err(|e| e.to_string())?;
        let tcp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
        let (names, values) = match tcp.as_slice() {
            [n, v] => (n.split_whitespace(), v.split_whitespace()),
            _ => return Err("no Tcp lines in snmp".into()),
        };
        let mut c = NsCounters::default();
        for (n, v) in names.zip(values) {
            if n == "OutRsts" {
                c.out_rsts = v.parse().map_err(|_| "OutRsts".to_string())?;
            }
            if n == "EstabResets" {
                c.estab_resets = v.parse().map_err(|_| "EstabResets".to_string())?;
            }
        }
        let stat = std::fs::read_to_string("/proc/thread-self/net/sockstat").map_err(|e| e.to_string())?;
        let tcp = stat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .ok_or("no TCP line in sockstat")?;
        let mut words = tcp.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inuse" {
                c.tcp_inuse = words.next().and_then(|v| v.parse().ok()).ok_or("inuse")?;
            }
        }
        Ok(c)
    })?
}

/// TCP states (as /proc/net/tcp numbers them) of `ns`'s sockets whose peer port is
/// `peer_port`, TIME_WAIT (6) left out.
pub fn flow_sockets(ns: &str, peer_port: u16) -> Result<Vec<u8>, String> {
    in_ns(ns, move || -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for f in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let (Some(rem), Some(st)) = (cols.get(2), cols.get(3)) else {
                    continue;
                };
                let port = rem
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok());
                let st = u8::from_str_radix(st, 16).unwrap_or(0);
                if port == Some(peer_port) && st != 6 {
                    out.push(st);
                }
            }
        }
        Ok(out)
    })?
}

/// RST counters of every host, to compare before and after a test.
pub fn rsts_all() -> Result<Vec<(&'static str, u64)>, String> {
    topology::HOSTS
        .iter()
        .chain([topology::L4].iter())
        .map(|h| Ok((*h, counters(h)?.out_rsts)))
        .collect()
}

/// Fails when a host sent an RST since `before` was taken with [`rsts_all`].
pub fn no_rst_since(before: &[(&'static str, u64)]) -> Result<(), String> {
    let after = rsts_all()?;
    if after != before {
        return Err(format!("a host sent RST: {before:?} -> {after:?}"));
    }
    Ok(())
}

/// One `TcpExt` counter of namespace `ns` (/proc/net/netstat), e.g. `PAWSEstab`.
pub fn tcp_ext_counter(ns: &str, name: &'static str) -> Result<u64, String> {
    in_ns(ns, move || -> Result<u64, String> {
        let text = std::fs::read_to_string("/proc/thread-self/net/netstat").map_err(|e| e.to_string())?;
        let ext: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        let [names, values] = ext.as_slice() else {
            return Err("no TcpExt lines in netstat".into());
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| format!("no TcpExt counter {name}"))
    })?
}
