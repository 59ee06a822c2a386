//! What one hop costs: connections moved back and forth between fe and be1, export on
//! one and import on the other, by the module, by user-space TCP_REPAIR (libsoccr's order), and as the
//! floors a GET_INFO round trip on each side and raw generic netlink round trips with
//! no library. Each node's worker thread runs a whole batch of calls in a loop and
//! times each call where it runs, so no thread hand-off lands inside a figure. The
//! client's packets are held at l4 the whole time, so the queues stay as set up;
//! afterwards each flow is steered to its last owner and every queued byte is checked
//! both ways.

use super::raw;
use super::results::{Dist, HopCase, LiveCase};
use super::syscalls::SyscallCounter;
use crate::harness::Log;
use crate::migrate::{expect_stream, send_stream};
use crate::sockopt::{self, set_int};
use crate::topology::{self, in_ns, Topology};
use prism_sock::{repair, Backend, Client, Exported, ImportOptions};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

/// How a hop is made, or which round trip stands in for one as a floor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mech {
    Module,
    Repair,
    /// No move at all: one GET_INFO through userlib on each side.
    GetInfo,
    /// The same GET_INFO request over a raw netlink socket, no library.
    RawGetInfo,
    /// nlctrl CTRL_CMD_GETFAMILY over a raw netlink socket: generic netlink's floor.
    RawGenl,
}

impl Mech {
    pub fn name(self) -> &'static str {
        match self {
            Mech::Module => "module",
            Mech::Repair => "repair",
            Mech::GetInfo => "getinfo",
            Mech::RawGetInfo => "raw-getinfo",
            Mech::RawGenl => "raw-genl",
        }
    }

    fn is_floor(self) -> bool {
        matches!(self, Mech::GetInfo | Mech::RawGetInfo | Mech::RawGenl)
    }
}

/// The VIP port of the first [`Bench`]'s listener; each takes the next, since the
/// last one's connections may still be closing on it.
static NEXT_LISTEN_PORT: AtomicU16 = AtomicU16::new(8800);
/// Socket buffers big enough for the largest queue (set on the listener, inherited).
const BUF: i32 = 4 << 20;

enum Job {
    /// Export each socket with DETACH, in order.
    Export(Vec<OwnedFd>),
    Import(Vec<Exported>),
    /// `n` rounds of one round trip of each floor in turn (see [`floor_rounds`]).
    Floors(Vec<Mech>, usize),
    /// Count this worker's system calls from now on (or stop).
    Count(bool),
}

/// One call's result, how long it took, and its system calls if they were counted.
type Timed<T> = (T, Duration, Option<u64>);
/// Timed round trips of a floor.
type Calls = Vec<Timed<()>>;

enum Outcome {
    Exported(Vec<Timed<Exported>>),
    Imported(Vec<Timed<OwnedFd>>),
    /// Per floor asked for, its round trips.
    Floors(Vec<Calls>),
    Done,
}

type Reply = Result<Outcome, String>;

/// A thread in one node's namespace that exports and imports on request, so each side
/// runs with its own netlink socket, namespace and system-call counter.
struct Worker {
    jobs: Sender<Job>,
    done: Receiver<Reply>,
}

fn measure<T>(counter: Option<&SyscallCounter>, f: impl FnOnce() -> T) -> Result<Timed<T>, String> {
    let timed = || {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    };
    match counter {
        Some(c) => {
            let ((r, took), n) = c.count(timed).map_err(|e| format!("syscall counter: {e}"))?;
            Ok((r, took, Some(n)))
        }
        None => {
            let (r, took) = timed();
            Ok((r, took, None))
        }
    }
}

/// `n` rounds of one timed round trip of each floor in `mechs`, in turn. Side by side
/// call by call: the emulated guest runs a while fast, then a while slow (the same
/// call takes 12 or 23 us), and rounds of thousands of calls would put the floors in
/// different phases of that.
fn floor_rounds(
    client: Option<&Client>,
    counter: Option<&SyscallCounter>,
    mechs: &[Mech],
    n: usize,
) -> Result<Vec<Calls>, String> {
    let client = client.ok_or("the floors need the module")?;
    let info = raw::get_info_request(client.family_id());
    let ctrl = raw::get_family_request();
    let mut sock = raw::Socket::open()?;
    let mut out = vec![Vec::with_capacity(n); mechs.len()];
    for _ in 0..n {
        for (mech, calls) in mechs.iter().zip(&mut out) {
            let (r, t, k) = measure(counter, || match mech {
                Mech::GetInfo => client.info().map(drop).map_err(|e| format!("GET_INFO: {e}")),
                Mech::RawGetInfo => sock.round_trip(&info),
                Mech::RawGenl => sock.round_trip(&ctrl),
                Mech::Module | Mech::Repair => Err(format!("{} is not a floor", mech.name())),
            })?;
            r?;
            calls.push(((), t, k));
        }
    }
    Ok(out)
}

/// `hops` timed hops then `counted` counted ones on each of `benches`, batch by batch in
/// turn (a batch of the first, a batch of the second, ...), into its samples. Side by
/// side: the emulated guest runs a while fast, then a while slow, and whole rounds of
/// one mechanism would catch different phases of that.
pub fn side_by_side(
    log: &mut Log,
    benches: &mut [&mut Bench],
    queued: usize,
    hops: usize,
    counted: usize,
    into: &mut [Samples],
) -> Result<(), String> {
    let mut probes = Vec::new();
    for bench in benches.iter_mut() {
        probes.push(bench.probes(log, queued, hops)?);
    }
    for (total, counting) in [(hops, false), (counted, true)] {
        for bench in benches.iter() {
            bench.count(counting)?;
        }
        let mut done = 0;
        while done < total {
            let mut made = 0;
            for ((bench, p), s) in benches.iter().zip(&mut probes).zip(into.iter_mut()) {
                let take = p.len().min(total - done);
                made = bench.step(&mut p[..take], counting, s)?;
            }
            done += made;
        }
    }
    for bench in benches.iter() {
        bench.count(false)?;
    }
    for (bench, p) in benches.iter_mut().zip(probes) {
        bench.finish(log, p)?;
    }
    Ok(())
}

impl Worker {
    fn start(ns: &'static str, mech: Mech) -> Result<Self, String> {
        let (jobs, rx) = channel::<Job>();
        let (tx, done) = channel::<Reply>();
        let file = topology::netns(ns)?;
        std::thread::spawn(move || {
            if let Err(e) = topology::enter(&file) {
                let _ = tx.send(Err(format!("{ns}: {e}")));
                return;
            }
            let backend = match mech {
                Mech::Repair => Ok(Backend::Repair),
                _ => Client::connect().map(Backend::Module),
            };
            let backend = match backend {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(format!("{ns}: {e}")));
                    return;
                }
            };
            let _ = tx.send(Ok(Outcome::Done));
            let mut counter = None;
            for job in rx {
                let c = counter.as_ref();
                let client = match &backend {
                    Backend::Module(client) => Some(client),
                    Backend::Repair => None,
                };
                let reply = match job {
                    Job::Export(fds) => fds
                        .into_iter()
                        .map(|fd| {
                            let (r, t, n) = measure(c, || {
                                // l4 holds the flow, so the TCP_REPAIR baseline is
                                // libsoccr's order, without the guard's socket filter.
                                let r = match mech {
                                    Mech::Repair => repair::export_held(&fd).map(Exported::Repair),
                                    _ => backend.export_detach(&fd),
                                };
                                drop(fd);
                                r
                            })?;
                            Ok((r.map_err(|e| format!("export on {ns}: {e}"))?, t, n))
                        })
                        .collect::<Result<_, String>>()
                        .map(Outcome::Exported),
                    Job::Import(states) => states
                        .into_iter()
                        .map(|state| {
                            let (r, t, n) = measure(c, || backend.import(&state, &ImportOptions::default()))?;
                            let fd =
                                r.map_err(|e| format!("import on {ns}: {e}; state: {}", describe(&state)))?;
                            Ok((fd, t, n))
                        })
                        .collect::<Result<_, String>>()
                        .map(Outcome::Imported),
                    Job::Floors(mechs, n) => floor_rounds(client, c, &mechs, n).map(Outcome::Floors),
                    Job::Count(on) => {
                        counter = None;
                        if on {
                            match SyscallCounter::for_this_thread() {
                                Ok(c) => counter = Some(c),
                                Err(e) => {
                                    let _ = tx.send(Err(format!("syscall counter: {e}")));
                                    continue;
                                }
                            }
                        }
                        Ok(Outcome::Done)
                    }
                };
                if tx.send(reply).is_err() {
                    return;
                }
            }
        });
        let w = Self { jobs, done };
        w.recv()?;
        Ok(w)
    }

    fn recv(&self) -> Reply {
        self.done.recv().map_err(|_| "worker thread gone".to_string())?
    }

    fn run(&self, job: Job) -> Reply {
        self.jobs
            .send(job)
            .map_err(|_| "worker thread gone".to_string())?;
        self.recv()
    }

    fn export(&self, fds: Vec<OwnedFd>) -> Result<Vec<Timed<Exported>>, String> {
        match self.run(Job::Export(fds))? {
            Outcome::Exported(v) => Ok(v),
            _ => Err("export: unexpected reply".into()),
        }
    }

    fn import(&self, states: Vec<Exported>) -> Result<Vec<Timed<OwnedFd>>, String> {
        match self.run(Job::Import(states))? {
            Outcome::Imported(v) => Ok(v),
            _ => Err("import: unexpected reply".into()),
        }
    }

    fn floors(&self, mechs: &[Mech], n: usize) -> Result<Vec<Calls>, String> {
        match self.run(Job::Floors(mechs.to_vec(), n))? {
            Outcome::Floors(v) => Ok(v),
            _ => Err("floors: unexpected reply".into()),
        }
    }
}

/// fe and be1 workers and the VIP listener in fe.
pub struct Bench {
    fe: Worker,
    be: Worker,
    listener: TcpListener,
    port: u16,
    /// Connections that hop together, one batch per node and direction.
    batch: usize,
}

/// Client port of the next probe connection: below the ephemeral range, so the many
/// connections of the live-socket run never take a port that l4 has a rule for.
static NEXT_PORT: AtomicU16 = AtomicU16::new(20_000);

/// A held connection and where its server side is.
struct Probe {
    client: TcpStream,
    /// The server side (taken while it is between nodes).
    server: Option<OwnedFd>,
    /// `fe` or `be1`.
    at: &'static str,
    port: u16,
    queued: usize,
}

/// One hop's figures.
struct Hop {
    export: Duration,
    import: Duration,
    syscalls: (Option<u64>, Option<u64>),
}

/// Raw figures of one mechanism and queue size, gathered over one or more rounds.
#[derive(Default)]
pub struct Samples {
    export: Vec<Duration>,
    import: Vec<Duration>,
    hop: Vec<Duration>,
    sys_ex: Vec<u64>,
    sys_im: Vec<u64>,
    state_bytes: usize,
}

impl Samples {
    /// The distribution of every sample, also written to `log`.
    pub fn summary(self, log: &mut Log, mech: Mech, queued: usize) -> HopCase {
        let span = |v: &[u64]| {
            (
                v.iter().copied().min().unwrap_or(0),
                v.iter().copied().max().unwrap_or(0),
            )
        };
        let case = HopCase {
            backend: mech.name().into(),
            queued,
            hop: Dist::of_durations(&self.hop),
            export: Dist::of_durations(&self.export),
            import: Dist::of_durations(&self.import),
            syscalls_export: span(&self.sys_ex),
            syscalls_import: span(&self.sys_im),
            state_bytes: self.state_bytes,
        };
        log.line(format!(
            "{} queued {queued} x2: hop median {:.0} us p99 {:.0} us (export {:.0}, import {:.0}) over {} hops; syscalls export {:?} import {:?}; state {} B",
            case.backend, case.hop.median_us, case.hop.p99_us, case.export.median_us, case.import.median_us, case.hop.n, case.syscalls_export, case.syscalls_import, case.state_bytes
        ));
        case
    }
}

impl Bench {
    /// Workers for `mech` whose hops move `batch` connections at a time.
    pub fn new(mech: Mech, batch: usize) -> Result<Self, String> {
        // SO_RCVBUF/SO_SNDBUF are capped at these (global) limits.
        for knob in ["rmem_max", "wmem_max"] {
            let path = format!("/proc/sys/net/core/{knob}");
            std::fs::write(&path, (2 * BUF).to_string()).map_err(|e| format!("{path}: {e}"))?;
        }
        let port = NEXT_LISTEN_PORT.fetch_add(1, Ordering::Relaxed);
        let at = SocketAddr::new(topology::vip(false), port);
        let listener = in_ns("fe", move || -> std::io::Result<TcpListener> {
            let l = TcpListener::bind(at)?;
            set_int(l.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, BUF)?;
            set_int(l.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, BUF)?;
            Ok(l)
        })?
        .map_err(|e| format!("listen on {at}: {e}"))?;
        Ok(Self {
            fe: Worker::start("fe", mech)?,
            be: Worker::start("be1", mech)?,
            listener,
            port,
            batch: batch.max(1),
        })
    }

    /// Connections from the client to the VIP (fe), from `port` if given.
    fn connect(&self, count: usize, port: Option<u16>) -> Result<Vec<(TcpStream, TcpStream)>, String> {
        let vip = SocketAddr::new(topology::vip(false), self.port);
        let clients = in_ns("client", move || -> std::io::Result<Vec<TcpStream>> {
            (0..count)
                .map(|_| match port {
                    Some(p) => crate::suites::hops::connect_from(p, vip),
                    None => TcpStream::connect(vip),
                })
                .collect()
        })?
        .map_err(|e| format!("connect to {vip}: {e}"))?;
        clients
            .into_iter()
            .map(|c| {
                let (s, _) = self.listener.accept().map_err(|e| format!("accept: {e}"))?;
                Ok((c, s))
            })
            .collect()
    }

    /// A held connection with `queued` bytes unread on fe and `queued` bytes fe sent
    /// that the client has not acknowledged.
    fn probe(&mut self, log: &mut Log, queued: usize) -> Result<Probe, String> {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let (mut client, mut server) = self.connect(1, Some(port))?.pop().ok_or("no connection")?;
        send_stream(&mut client, 1, queued)?;
        crate::stack::wait(
            "the client's bytes to queue on fe",
            Duration::from_secs(30),
            || sockopt::queued(server.as_fd(), false) as usize >= queued,
        )?;
        Topology::hold_flow(log, port, true)?;
        send_stream(&mut server, 2, queued)?;
        Ok(Probe {
            client,
            server: Some(server.into()),
            at: "fe",
            port,
            queued,
        })
    }

    /// Lets every probe's flow go to the node that has its socket, then checks every
    /// queued byte and a fresh exchange both ways. All flows are let go first: a probe
    /// held while the others are checked would back its retransmission timer off for
    /// longer than a check waits.
    fn finish(&mut self, log: &mut Log, probes: Vec<Probe>) -> Result<(), String> {
        for p in &probes {
            Topology::steer_flow(log, false, p.port, p.at, true)?;
            Topology::hold_flow(log, p.port, false)?;
        }
        for probe in probes {
            let Probe {
                mut client,
                server,
                at: node,
                port,
                queued,
            } = probe;
            let server = server.ok_or("the probe's socket was lost in a hop")?;
            let mut server = TcpStream::from(server);
            // The client has had the first flight since before the hops; the rest
            // waits for the server's next retransmission. A probe that sat held while
            // the other batches hopped has backed its timer off for that long, up to
            // TCP_RTO_MAX (120 s): a 512 KiB run on a slow host left one silent for
            // more than 60 s.
            for s in [&client, &server] {
                s.set_read_timeout(Some(Duration::from_secs(150)))
                    .map_err(|e| e.to_string())?;
            }
            expect_stream(&mut server, 1, queued)
                .map_err(|e| format!("{node} reads the client's queued bytes: {e}"))?;
            expect_stream(&mut client, 2, queued).map_err(|e| {
                let i = sockopt::tcp_info(server.as_fd());
                format!(
                    "client reads the queued bytes: {e}; {node}'s socket: rto {} us, backoff {}, \
                     retransmits {}, unacked {} segments, last data sent {} ms ago",
                    i.tcpi_rto, i.tcpi_backoff, i.tcpi_retransmits, i.tcpi_unacked, i.tcpi_last_data_sent
                )
            })?;
            send_stream(&mut server, 3, 1000)?;
            expect_stream(&mut client, 3, 1000)?;
            send_stream(&mut client, 4, 1000)?;
            expect_stream(&mut server, 4, 1000)?;
            log.line(format!(
                "client port {port}: every byte arrived both ways on {node}"
            ));
        }
        Ok(())
    }

    /// Moves the probes' sockets to the other node, each batch of probes that sit on one
    /// node together: one export loop where they are, one import loop there.
    /// `state_len`: also the size of the first exported state.
    fn hop(&self, probes: &mut [Probe], mut state_len: Option<&mut usize>) -> Result<Vec<Hop>, String> {
        let mut hops = Vec::with_capacity(probes.len());
        // Where each probe is before this hop: a probe moves once per call.
        let starts: Vec<&'static str> = probes.iter().map(|p| p.at).collect();
        for here in ["fe", "be1"] {
            let (from, to, next) = if here == "fe" {
                (&self.fe, &self.be, "be1")
            } else {
                (&self.be, &self.fe, "fe")
            };
            let mut moving: Vec<&mut Probe> = probes
                .iter_mut()
                .zip(&starts)
                .filter(|(_, at)| **at == here)
                .map(|(p, _)| p)
                .collect();
            if moving.is_empty() {
                continue;
            }
            let fds = moving
                .iter_mut()
                .map(|p| p.server.take().ok_or("a probe's socket was lost in a hop"))
                .collect::<Result<Vec<_>, _>>()?;
            let exported = from.export(fds)?;
            if let Some(len) = state_len.take() {
                *len = exported.first().map_or(0, |(s, _, _)| s.to_bytes().len());
            }
            let mut exports = Vec::with_capacity(exported.len());
            let mut states = Vec::with_capacity(exported.len());
            for (state, t, n) in exported {
                exports.push((t, n));
                states.push(state);
            }
            let imported = to.import(states)?;
            for ((p, (fd, import, sys_import)), (export, sys_export)) in
                moving.iter_mut().zip(imported).zip(exports)
            {
                p.server = Some(fd);
                p.at = next;
                hops.push(Hop {
                    export,
                    import,
                    syscalls: (sys_export, sys_import),
                });
            }
        }
        Ok(hops)
    }

    /// `n` round trips of each floor in `mechs` on fe, then on be1, call by call side
    /// by side (see [`floor_rounds`]), added to `into` (one per floor).
    pub fn floor_samples(
        &mut self,
        mechs: &[Mech],
        n: usize,
        counted: usize,
        into: &mut [Samples],
    ) -> Result<(), String> {
        let both = |n| Ok::<_, String>((self.fe.floors(mechs, n)?, self.be.floors(mechs, n)?));
        let (fe, be) = both(n)?;
        for ((fe, be), s) in fe.into_iter().zip(be).zip(into.iter_mut()) {
            for ((_, e, _), (_, m, _)) in fe.into_iter().zip(be) {
                s.export.push(e);
                s.import.push(m);
                s.hop.push(e + m);
            }
        }
        self.count(true)?;
        let counted = both(counted);
        self.count(false)?;
        let (fe, be) = counted?;
        for ((fe, be), s) in fe.into_iter().zip(be).zip(into.iter_mut()) {
            s.sys_ex.extend(fe.into_iter().filter_map(|c| c.2));
            s.sys_im.extend(be.into_iter().filter_map(|c| c.2));
        }
        Ok(())
    }

    /// `hops` timed hops then `counted` hops with system calls counted, made by
    /// `batch` connections at a time (fewer if that is all the hops there are).
    pub fn case(
        &mut self,
        log: &mut Log,
        mech: Mech,
        queued: usize,
        hops: usize,
        counted: usize,
    ) -> Result<HopCase, String> {
        let mut samples = Samples::default();
        self.sample(log, mech, queued, hops, counted, &mut samples)?;
        Ok(samples.summary(log, mech, queued))
    }

    /// Adds `hops` timed hops and `counted` counted ones to `into`.
    pub fn sample(
        &mut self,
        log: &mut Log,
        mech: Mech,
        queued: usize,
        hops: usize,
        counted: usize,
        into: &mut Samples,
    ) -> Result<(), String> {
        if mech.is_floor() {
            return self.floor_samples(&[mech], hops, counted, std::slice::from_mut(into));
        }
        side_by_side(
            log,
            &mut [self],
            queued,
            hops,
            counted,
            std::slice::from_mut(into),
        )
    }

    /// Held connections for hops with `queued` bytes each way: one batch, or `hops`
    /// connections if that is fewer.
    fn probes(&mut self, log: &mut Log, queued: usize, hops: usize) -> Result<Vec<Probe>, String> {
        (0..self.batch.min(hops.max(1)))
            .map(|_| self.probe(log, queued))
            .collect()
    }

    /// One hop of each of `probes`, timed into `into` or, with `counted`, its system
    /// calls counted into it; how many hops that was.
    fn step(&self, probes: &mut [Probe], counted: bool, into: &mut Samples) -> Result<usize, String> {
        let first = !counted && into.state_bytes == 0;
        let hops = self.hop(probes, first.then_some(&mut into.state_bytes))?;
        let n = hops.len();
        for h in hops {
            if counted {
                into.sys_ex.extend(h.syscalls.0);
                into.sys_im.extend(h.syscalls.1);
            } else {
                into.export.push(h.export);
                into.import.push(h.import);
                into.hop.push(h.export + h.import);
            }
        }
        Ok(n)
    }

    /// Counts the workers' system calls from now on (or stops).
    fn count(&self, on: bool) -> Result<(), String> {
        self.fe.run(Job::Count(on))?;
        self.be.run(Job::Count(on))?;
        Ok(())
    }

    /// Hop cost of `batch` probe connections with 1, 1k, 10k... sockets migrated to
    /// be1 and alive there: the module tracks each until its release.
    pub fn live(
        &mut self,
        log: &mut Log,
        checkpoints: &[usize],
        hops: usize,
    ) -> Result<Vec<LiveCase>, String> {
        raise_fd_limit(2 * checkpoints.iter().copied().max().unwrap_or(0) + 1024)?;
        let mut probes = (0..self.batch.min(hops.max(1)))
            .map(|_| self.probe(log, 0))
            .collect::<Result<Vec<_>, _>>()?;
        let mut kept: Vec<(TcpStream, OwnedFd)> = Vec::new();
        let mut out = Vec::new();
        // Tracked sockets count in their own namespace, be1's.
        let info = crate::topology::in_ns("be1", Client::connect)?.map_err(|e| e.to_string())?;
        let tracked_before = info.info().map_err(|e| e.to_string())?.tracked as usize;
        for &live in checkpoints {
            while kept.len() < live {
                let batch = (live - kept.len()).min(100);
                let (clients, servers): (Vec<_>, Vec<OwnedFd>) = self
                    .connect(batch, None)?
                    .into_iter()
                    .map(|(c, s)| (c, s.into()))
                    .unzip();
                let states = self.fe.export(servers)?.into_iter().map(|(s, _, _)| s).collect();
                let fds = self.be.import(states)?.into_iter().map(|(fd, _, _)| fd);
                kept.extend(clients.into_iter().zip(fds));
            }
            let tracked = info.info().map_err(|e| e.to_string())?.tracked as usize;
            // The probes are tracked too while they are on an importing side.
            if tracked < tracked_before + live {
                return Err(format!(
                    "the module tracks {tracked} sockets, expected {live} more than {tracked_before}"
                ));
            }
            // Creating the sockets leaves softirq and timer work behind (their imports'
            // window probes, the client's answers dropped at fe): let it settle first.
            std::thread::sleep(Duration::from_secs(2));
            let mut times = Vec::with_capacity(hops);
            while times.len() < hops {
                let take = probes.len().min(hops - times.len());
                times.extend(
                    self.hop(&mut probes[..take], None)?
                        .into_iter()
                        .map(|h| h.export + h.import),
                );
            }
            let case = LiveCase {
                live,
                hop: Dist::of_durations(&times),
            };
            log.line(format!(
                "{live} live migrated sockets (module tracks {tracked}): hop median {:.0} us p99 {:.0} us",
                case.hop.median_us, case.hop.p99_us
            ));
            out.push(case);
        }
        // Abortive closes: no FIN retransmissions left behind to slow what runs next.
        for (c, s) in &kept {
            let _ = sockopt::linger_zero(c.as_fd());
            let _ = sockopt::linger_zero(s.as_fd());
        }
        drop(kept);
        self.finish(log, probes)?;
        Ok(out)
    }
}

/// The exported state's numbers, for an error message.
fn describe(state: &Exported) -> String {
    match state {
        Exported::Module(m) => m.decode().map_or_else(
            |e| e.to_string(),
            |d| serde_json::to_string(&d).unwrap_or_default(),
        ),
        Exported::Repair(r) => format!(
            "send queue {} ({} unsent), receive queue {}, wscale {:?}",
            r.send_queue.len(),
            r.unsent,
            r.recv_queue.len(),
            r.wscale
        ),
    }
}

fn raise_fd_limit(want: usize) -> Result<(), String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if lim.rlim_cur >= want as u64 {
        return Ok(());
    }
    lim.rlim_cur = want as u64;
    lim.rlim_max = lim.rlim_max.max(want as u64);
    // SAFETY: setrlimit reads the struct given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "RLIMIT_NOFILE {want}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
