//! Connections that move more than once, many connections moving one after another or at
//! once, and the throughput of a connection right after it moved.

use super::common::loaded;
use super::export::{connect_via_topology, wait_for};
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};
use crate::migrate::{
    counters, expect_stream, flow_sockets, no_rst_since, pattern_at, rsts_all, send_stream, Cluster, HopTimes,
};
use crate::topology::{self, in_ns, Topology};
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "prismctl_export_decode_import_hop",
            run: prismctl_hop,
        },
        Test {
            name: "migrate_v4_hop_back",
            run: |e, l| chain(e, l, false, &["fe", "be1", "fe"]),
        },
        Test {
            name: "migrate_v6_chain_20_hops",
            run: |e, l| {
                let route: Vec<&'static str> = (0..=20).map(|i| topology::NODES[i % 3]).collect();
                chain(e, l, true, &route)
            },
        },
        Test {
            name: "migrate_v4_chain_20_hops",
            run: |e, l| {
                let route: Vec<&'static str> = (0..=20).map(|i| topology::NODES[(i * 2) % 3]).collect();
                chain(e, l, false, &route)
            },
        },
        Test {
            name: "migrate_1000_sequential",
            run: sequential,
        },
        Test {
            name: "migrate_32_concurrent",
            run: concurrent,
        },
        Test {
            name: "migrate_throughput_after_import",
            run: throughput,
        },
        Test {
            name: "migrate_syscalls_per_hop",
            run: syscalls,
        },
        Test {
            name: "migrate_v4_rcv_wnd_beyond_its_scale",
            run: rcv_wnd_beyond_scale,
        },
        Test {
            name: "migrate_v4_locked_buffers_keep_their_size_with_full_queues",
            run: locked_buffers,
        },
    ]
}

/// An application's SO_SNDBUF/SO_RCVBUF bound the queues a connection holds, hop after
/// hop: with both queues full at every export (the client writes and does not read),
/// each import ends with the sizes the application set. The module once kept the room
/// it made for restoring the queues, so buffers, window and queues grew at every hop
/// until an export exceeded max-queue-bytes. Every byte is checked both ways.
fn locked_buffers(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let rst_before = rsts_all()?;
    let (mut client, mut sock) = connect_via_topology(false, PORT + 3, Some(16 << 10))?;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        crate::sockopt::set_int(sock.as_fd(), libc::SOL_SOCKET, opt, 64 << 10)
            .map_err(|e| format!("setsockopt: {e}"))?;
    }
    let sizes = |s: &TcpStream| -> Result<(i32, i32), String> {
        let get = |opt| crate::sockopt::get_int(s.as_fd(), libc::SOL_SOCKET, opt);
        Ok((
            get(libc::SO_SNDBUF).map_err(|e| format!("SO_SNDBUF: errno {e}"))?,
            get(libc::SO_RCVBUF).map_err(|e| format!("SO_RCVBUF: errno {e}"))?,
        ))
    };
    let set = sizes(&sock)?;
    let (mut up, mut down) = (0u64, 0u64);
    for pair in ["fe", "be1", "be2", "fe"].windows(2) {
        fill(&mut client, 91, &mut up)?;
        fill(&mut sock, 92, &mut down)?;
        let queues = (
            crate::sockopt::queued(sock.as_fd(), true),
            crate::sockopt::queued(sock.as_fd(), false),
        );
        log.line(format!(
            "{}: send and receive queues {queues:?} bytes, buffers {:?}",
            pair[0],
            sizes(&sock)?
        ));
        check!(
            queues.0 > 0 && queues.1 > 0,
            "the queues are not both in use: {queues:?}"
        );
        sock = cluster.hop(log, sock, pair[0], pair[1], &[])?.0;
        let now = sizes(&sock)?;
        check!(
            now == set,
            "{}: (SO_SNDBUF, SO_RCVBUF) {now:?} after the hop, {set:?} set",
            pair[1]
        );
    }
    let timeout = Some(Duration::from_secs(60));
    sock.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    client.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    std::thread::scope(|s| -> Result<(), String> {
        let reader = s.spawn(move || expect_stream(&mut client, 92, down as usize));
        expect_stream(&mut sock, 91, up as usize).map_err(|e| format!("owner: {e}"))?;
        reader
            .join()
            .map_err(|_| "reader panicked")?
            .map_err(|e| format!("client: {e}"))?;
        Ok(())
    })?;
    log.line(format!("{up} bytes up and {down} bytes down checked"));
    no_rst_since(&rst_before)?;
    Ok(())
}

/// Writes stream `seed` from byte `*off` until the socket takes no more (three tries
/// 50 ms apart), without blocking.
fn fill(sock: &mut TcpStream, seed: u64, off: &mut u64) -> Result<(), String> {
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut idle = 0;
    while idle < 3 {
        match sock.write(&pattern_at(seed, *off, 16 << 10)) {
            Ok(n) => {
                *off += n as u64;
                idle = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                idle += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("write at byte {off}: {e}")),
        }
    }
    sock.set_nonblocking(false).map_err(|e| e.to_string())
}

/// A listener with SO_RCVBUF set gets a small window scale, and tcp_select_window()
/// keeps the window it chose before clamping what it advertises to that scale: a live
/// socket's rcv_wnd can exceed 65535 << rcv_wscale. Such a socket must move (the module
/// once refused it, and a proxy would have lost the connection).
fn rcv_wnd_beyond_scale(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let vip = SocketAddr::new(topology::vip(false), PORT + 1);
    let listener = in_ns("fe", move || -> std::io::Result<TcpListener> {
        let l = TcpListener::bind(vip)?;
        crate::sockopt::set_int(
            std::os::fd::AsFd::as_fd(&l),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            212_992,
        )?;
        Ok(l)
    })?
    .map_err(|e| format!("listen: {e}"))?;
    let mut client =
        in_ns("client", move || TcpStream::connect(vip))?.map_err(|e| format!("connect: {e}"))?;
    let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
    let len = 64 << 10;
    let sent = send_stream(&mut client, 77, len)?;
    wait_for("the request queued on fe", || {
        crate::sockopt::queued(std::os::fd::AsFd::as_fd(&sock), false) == len as i32
    })?;
    let d = cluster
        .nl("fe")
        .export_snapshot(&sock)
        .and_then(|s| s.decode())
        .map_err(|e| format!("snapshot: {e}"))?;
    log.line(format!("rcv_wnd {} with rcv_wscale {}", d.rcv_wnd, d.rcv_wscale));
    check!(
        u64::from(d.rcv_wnd) > 65535u64 << d.rcv_wscale,
        "the case is not reached: rcv_wnd {} fits scale {}",
        d.rcv_wnd,
        d.rcv_wscale
    );
    let (mut moved, _, _) = cluster.hop(log, sock, "fe", "be1", &[])?;
    moved
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    check!(
        expect_stream(&mut moved, 77, len)? == sent,
        "be1 read other bytes"
    );
    let back = send_stream(&mut moved, 78, 100_000)?;
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    check!(
        expect_stream(&mut client, 78, 100_000)? == back,
        "the client read other bytes"
    );
    Ok(())
}

const PORT: u16 = 8081;

/// One connection moved along `route` (route[0] is fe, where it starts), with requests
/// and responses between hops; even hops carry the request in the blob's receive queue,
/// odd ones over the control connection.
fn chain(env: &Env, log: &mut Log, v6: bool, route: &[&'static str]) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(v6)?;
    let rst_before = rsts_all()?;
    let (mut client, mut sock) = connect_via_topology(v6, PORT, None)?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    for (i, pair) in route.windows(2).enumerate() {
        let seed = 1000 + 2 * i as u64;
        let len = 2_000 + 777 * i;
        send_stream(&mut client, seed, len)?;
        let forwarded = if i % 2 == 0 {
            wait_for("the request queued on the owner", || {
                crate::sockopt::queued(std::os::fd::AsFd::as_fd(&sock), false) == len as i32
            })?;
            Vec::new()
        } else {
            let mut r = vec![0; len];
            std::io::Read::read_exact(&mut sock, &mut r).map_err(|e| e.to_string())?;
            r
        };
        let (mut owned, got, _) = cluster.hop(log, sock, pair[0], pair[1], &forwarded)?;
        if i % 2 == 0 {
            expect_stream(&mut owned, seed, len)?;
        } else {
            check!(got == forwarded, "request changed in transit");
        }
        send_stream(&mut owned, seed + 1, 10_000 + i)?;
        expect_stream(&mut client, seed + 1, 10_000 + i)?;
        sock = owned;
    }
    log.line(format!("{} hops, every byte checked both ways", route.len() - 1));
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut sock, &mut rest).map_err(|e| e.to_string())?;
    drop(sock);
    std::io::Read::read_to_end(&mut client, &mut rest).map_err(|e| e.to_string())?;
    check!(rest.is_empty(), "stray bytes at the end");
    drop(client);
    for node in topology::NODES {
        wait_for(&format!("{node}'s sockets of the flow to finish"), || {
            flow_sockets(node, port).map(|v| v.is_empty()).unwrap_or(false)
        })?;
    }
    no_rst_since(&rst_before)?;
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One request/response on a fresh connection, handed from fe to be1 in between.
fn one_migration(
    log: &mut Log,
    cluster: &mut Cluster,
    listener: &TcpListener,
    vip: SocketAddr,
    seed: u64,
    client_port: u16,
) -> Result<HopTimes, String> {
    let mut client =
        in_ns("client", move || connect_from(client_port, vip))?.map_err(|e| format!("connect: {e}"))?;
    let (mut server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    send_stream(&mut client, seed, 300)?;
    let mut req = vec![0; 300];
    std::io::Read::read_exact(&mut server, &mut req).map_err(|e| e.to_string())?;
    let (mut owned, _, times) = cluster.hop(log, server, "fe", "be1", &req)?;
    send_stream(&mut owned, seed + 1, 2_000)?;
    expect_stream(&mut client, seed + 1, 2_000)?;
    // The owner closes first; the client sees the end of the stream.
    drop(owned);
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut client, &mut rest).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err("stray bytes".into());
    }
    Ok(times)
}

/// A connection to `to` from local port `port`.
pub(crate) fn connect_from(port: u16, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket creation; ownership passes to OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own.
    let s = unsafe { OwnedFd::from_raw_fd(fd) };
    let local = super::export::sockaddr_bytes(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port));
    let remote = super::export::sockaddr_bytes(to);
    // SAFETY: valid address buffers and lengths.
    unsafe {
        if libc::bind(s.as_raw_fd(), local.0.as_ptr().cast(), local.1) != 0
            || libc::connect(s.as_raw_fd(), remote.0.as_ptr().cast(), remote.1) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(TcpStream::from(s))
}

/// Waits until `node` holds no TCP socket but `keep` (listeners, control connections).
fn no_leak(node: &str, keep: u64) -> TestResult {
    wait_for(&format!("{node}'s sockets to close (keeping {keep})"), || {
        counters(node).map(|c| c.tcp_inuse == keep).unwrap_or(false)
    })
    .map_err(|e| format!("{e}: {:?}", counters(node)))
}

fn sequential(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let vip = SocketAddr::new(topology::vip(false), PORT);
    let listener = in_ns("fe", move || TcpListener::bind(vip))?.map_err(|e| e.to_string())?;
    let rst_before = rsts_all()?;
    let start = Instant::now();
    let mut quiet = Log::default();
    let (mut exports, mut imports) = (Vec::new(), Vec::new());
    for i in 0..1000u64 {
        // Each flow its own client port: a port used again would still be steered to be1.
        let t = one_migration(
            &mut quiet,
            &mut cluster,
            &listener,
            vip,
            5000 + 2 * i,
            40000 + i as u16,
        )
        .map_err(|e| format!("migration {i}: {e}\n{}", quiet.text()))?;
        exports.push(t.export);
        imports.push(t.import);
        if i < 3 {
            log.line(quiet.text());
        }
        quiet = Log::default();
    }
    log.line(format!(
        "1000 migrations in {:?}; median export {:?}, median import {:?}",
        start.elapsed(),
        median(&mut exports),
        median(&mut imports)
    ));
    no_leak("be1", cluster.control_sockets("be1"))?;
    no_leak("fe", cluster.control_sockets("fe") + 1)?;
    no_rst_since(&rst_before)?;
    // Each side's requests count in its own namespace.
    let exports = cluster.nl("fe").info().map_err(|e| e.to_string())?.exports;
    let imports = cluster.nl("be1").info().map_err(|e| e.to_string())?.imports;
    log.line(format!("fe exported {exports}, be1 imported {imports}"));
    check!(
        exports >= 1000 && imports >= 1000,
        "counters: fe exported {exports}, be1 imported {imports}"
    );
    Ok(())
}

fn concurrent(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let vip = SocketAddr::new(topology::vip(false), PORT);
    let listener = Arc::new(in_ns("fe", move || TcpListener::bind(vip))?.map_err(|e| e.to_string())?);
    let rst_before = rsts_all()?;
    const N: usize = 32;
    let barrier = Arc::new(Barrier::new(N));
    let accepting = Arc::new(std::sync::Mutex::new(()));
    let workers: Vec<_> = (0..N)
        .map(|i| {
            let barrier = barrier.clone();
            let listener = listener.clone();
            let accepting = accepting.clone();
            std::thread::spawn(move || -> Result<Log, String> {
                let mut log = Log::default();
                let mut cluster = Cluster::with_ports(false, 9200 + 10 * i as u16)?;
                // Connect and accept in turn, so each worker accepts its own connection.
                let (mut client, mut server) = {
                    let _turn = accepting.lock().map_err(|_| "lock poisoned".to_string())?;
                    let client = in_ns("client", move || TcpStream::connect(vip))?
                        .map_err(|e| format!("connect: {e}"))?;
                    let (server, _) = listener.accept().map_err(|e| e.to_string())?;
                    (client, server)
                };
                send_stream(&mut client, 7000 + i as u64, 4_000)?;
                let mut req = vec![0; 4_000];
                std::io::Read::read_exact(&mut server, &mut req).map_err(|e| e.to_string())?;
                barrier.wait();
                let (mut owned, _, _) = cluster.hop(&mut log, server, "fe", "be1", &req)?;
                send_stream(&mut owned, 8000 + i as u64, 50_000)?;
                expect_stream(&mut client, 8000 + i as u64, 50_000)?;
                drop(owned);
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut client, &mut rest).map_err(|e| e.to_string())?;
                if !rest.is_empty() {
                    return Err("stray bytes".into());
                }
                Ok(log)
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        match w.join().map_err(|_| "worker panicked".to_string())? {
            Ok(l) => {
                if i == 0 {
                    log.line(l.text());
                }
            }
            Err(e) => failures.push(format!("worker {i}: {e}")),
        }
    }
    check!(failures.is_empty(), "{}", failures.join("\n"));
    log.line(format!("{N} concurrent migrations, every byte checked"));
    // The workers' control connections closed with their clusters.
    no_leak("be1", 0)?;
    no_leak("fe", 1)?;
    no_rst_since(&rst_before)?;
    Ok(())
}

/// Receives `len` bytes of stream `seed`; returns the rate in MB/s.
fn timed_receive(client: &mut TcpStream, seed: u64, len: usize) -> Result<f64, String> {
    let start = Instant::now();
    expect_stream(client, seed, len)?;
    Ok(len as f64 / start.elapsed().as_secs_f64() / 1e6)
}

fn throughput(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let rounds = throughput_rounds(log, 2, PORT + 10)?;
    let best = |f: fn(&(f64, f64)) -> f64| rounds.iter().map(f).fold(0.0, f64::max);
    let (best_still, best_moved) = (best(|r| r.0), best(|r| r.1));
    log.line(format!(
        "best of 2: moved {best_moved:.1} MB/s = {:.0}% of never moved {best_still:.1} MB/s",
        100.0 * best_moved / best_still
    ));
    let kept = best_moved / best_still >= 0.8;
    check!(
        kept,
        "moved connection reached only {:.0}% of the unmoved one",
        100.0 * best_moved / best_still
    );
    Ok(())
}

/// Receive rates (MB/s) of 64 MiB over a connection that never moved (fe sends) and
/// over one warmed on fe and moved to be1 (be1 sends), side by side, `rounds` times;
/// the VIP ports used start at `first_port`. The module must be loaded and the
/// topology up.
pub fn throughput_rounds(log: &mut Log, rounds: u16, first_port: u16) -> Result<Vec<(f64, f64)>, String> {
    let mut cluster = Cluster::new(false)?;
    const WARM: usize = 8 << 20;
    const BIG: usize = 64 << 20;
    let mut out = Vec::new();
    for round in 0..rounds {
        // A connection that never moves: fe sends.
        let (mut client, mut server) = connect_via_topology(false, first_port + 2 * round, None)?;
        let s = std::thread::spawn(move || -> Result<TcpStream, String> {
            send_stream(&mut server, 1, WARM)?;
            send_stream(&mut server, 2, BIG)?;
            Ok(server)
        });
        expect_stream(&mut client, 1, WARM)?;
        let still = timed_receive(&mut client, 2, BIG)?;
        s.join().map_err(|_| "sender panicked".to_string())??;

        // The same, warmed on fe, then moved to be1 which sends the 64 MiB.
        let (mut client2, mut server2) = connect_via_topology(false, first_port + 1 + 2 * round, None)?;
        let s = std::thread::spawn(move || -> Result<TcpStream, String> {
            send_stream(&mut server2, 3, WARM)?;
            Ok(server2)
        });
        expect_stream(&mut client2, 3, WARM)?;
        let server2 = s.join().map_err(|_| "sender panicked".to_string())??;
        let (mut owned, _, _) = cluster.hop(log, server2, "fe", "be1", b"")?;
        let s = std::thread::spawn(move || -> Result<TcpStream, String> {
            send_stream(&mut owned, 4, BIG)?;
            Ok(owned)
        });
        let moved = timed_receive(&mut client2, 4, BIG)?;
        s.join().map_err(|_| "sender panicked".to_string())??;
        log.line(format!(
            "round {round}: never moved {still:.1} MB/s, moved {moved:.1} MB/s"
        ));
        out.push((still, moved));
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(out)
}

/// Marks the start and end of the counted part of a probe's trace: a write strace shows.
fn marker(what: &str) {
    // SAFETY: writing to an invalid fd has no effect but the traced system call.
    unsafe { libc::write(-1, what.as_ptr().cast(), what.len()) };
}

/// Child side of `migrate_syscalls_per_hop`, FE role: exports the inherited socket `fd`
/// with DETACH, closes it and writes the blob to `out`.
pub fn hop_export_probe(fd: i32, out: &str) -> Result<(), String> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let c = prism_sock::Client::connect().map_err(|e| e.to_string())?;
    // SAFETY: the parent handed us this fd, open and ours alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    marker("prism-begin");
    let state = c
        .export_detach(std::os::fd::AsFd::as_fd(&sock))
        .map_err(|e| e.to_string())?;
    drop(sock);
    marker("prism-end");
    std::fs::write(out, state.as_bytes()).map_err(|e| e.to_string())
}

/// Child side of `migrate_syscalls_per_hop`, BE role: imports the blob in `file` and
/// answers `reply` on the new socket.
pub fn hop_import_probe(file: &str, reply: &str) -> Result<(), String> {
    let c = prism_sock::Client::connect().map_err(|e| e.to_string())?;
    let blob = prism_sock::MigrationState::from_bytes(std::fs::read(file).map_err(|e| e.to_string())?);
    marker("prism-begin");
    let (mut s, _) = c
        .import_stream(&blob, &Default::default())
        .map_err(|e| e.to_string())?;
    marker("prism-end");
    std::io::Write::write_all(&mut s, reply.as_bytes()).map_err(|e| e.to_string())
}

/// System calls between the probe's markers in an strace output file.
fn counted(trace: &str) -> Result<(usize, Vec<String>), String> {
    let text = std::fs::read_to_string(trace).map_err(|e| format!("{trace}: {e}"))?;
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines
        .iter()
        .position(|l| l.contains("prism-begin"))
        .ok_or("no begin marker")?;
    let end = lines
        .iter()
        .position(|l| l.contains("prism-end"))
        .ok_or("no end marker")?;
    let calls: Vec<String> = lines[begin + 1..end].iter().map(|l| l.to_string()).collect();
    Ok((calls.len(), calls))
}

/// One hand-off with each side in its own traced process: how many system calls the
/// FE and the BE make for one migration with empty queues.
fn syscalls(env: &Env, log: &mut Log) -> TestResult {
    use std::os::fd::AsRawFd;
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let (_client, server) = connect_via_topology(false, PORT, None)?;
    let fd = server.as_raw_fd();
    // SAFETY: clears FD_CLOEXEC so the traced child inherits the socket.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.to_string_lossy().to_string();
    let fd_arg = fd.to_string();
    crate::harness::sh(
        log,
        "strace",
        &[
            "-f",
            "-o",
            "/tmp/prism-fe.strace",
            &me,
            "hop-export-probe",
            &fd_arg,
            "/tmp/prism-hop.blob",
        ],
    )?;
    drop(server);
    crate::harness::sh(
        log,
        "ip",
        &[
            "netns",
            "exec",
            "be1",
            "strace",
            "-f",
            "-o",
            "/tmp/prism-be.strace",
            &me,
            "hop-import-probe",
            "/tmp/prism-hop.blob",
            "hello from be1",
        ],
    )?;
    let (fe_n, fe_calls) = counted("/tmp/prism-fe.strace")?;
    let (be_n, be_calls) = counted("/tmp/prism-be.strace")?;
    log.line(format!(
        "FE: {fe_n} system calls for export + close:\n  {}",
        fe_calls.join("\n  ")
    ));
    log.line(format!(
        "BE: {be_n} system calls for import:\n  {}",
        be_calls.join("\n  ")
    ));
    // Export: the request, its reply, the close. Import: the request and its reply.
    check!(fe_n <= 3, "FE made {fe_n} system calls");
    check!(be_n <= 2, "BE made {be_n} system calls");
    Ok(())
}

/// A hop done with prismctl alone: a Python server on fe holds the accepted socket with
/// the client's unread request; `prismctl export --pid --fd --detach --decode` takes it
/// out of that process, `prismctl decode` reads the file, and `prismctl import -- CMD`
/// on be1 gives it to another Python process as fd 3, which reads the request and
/// answers the client.
fn prismctl_hop(env: &Env, log: &mut Log) -> TestResult {
    use crate::harness::sh;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    loaded(env, log)?;
    let _t = Topology::up()?;
    let bin = env.repo()?.join("target/release/prismctl");
    let bin = bin.to_string_lossy().into_owned();
    let server = "import socket, time\n\
s = socket.socket(); s.bind(('10.100.0.1', 9400)); s.listen()\n\
c, _ = s.accept(); print(c.fileno(), flush=True); time.sleep(120)\n";
    let mut py = Command::new("ip")
        .args(["netns", "exec", "fe", "python3", "-c", server])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_for("the Python server", || {
        sh(&mut Log::default(), "ip", &["netns", "exec", "fe", "ss", "-Hltn"])
            .is_ok_and(|o| o.contains(":9400"))
    })?;
    let vip: SocketAddr = "10.100.0.1:9400".parse().expect("literal");
    let mut client = in_ns("client", move || TcpStream::connect(vip))?.map_err(|e| e.to_string())?;
    client.write_all(b"GET /x\n").map_err(|e| e.to_string())?;
    let mut fd = String::new();
    BufReader::new(py.stdout.take().ok_or("no stdout")?)
        .read_line(&mut fd)
        .map_err(|e| e.to_string())?;
    let fd = fd.trim().to_string();
    let pid = py.id().to_string();
    // `ip netns exec` execs the command: the child is the server itself.
    wait_for("the request in the server's receive queue", || {
        sh(
            &mut Log::default(),
            "ip",
            &["netns", "exec", "fe", "ss", "-Htn", "sport", "= :9400"],
        )
        .is_ok_and(|o| o.split_whitespace().nth(1) == Some("7"))
    })?;
    let blob = std::env::temp_dir().join(format!("prismctl-hop-{}.bin", std::process::id()));
    let blob_s = blob.to_string_lossy().into_owned();
    let out = sh(
        log,
        "ip",
        &[
            "netns", "exec", "fe", &bin, "export", "--pid", &pid, "--fd", &fd, "--detach", "--out", &blob_s,
            "--decode",
        ],
    )?;
    let decoded: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("--decode: {e}"))?;
    check!(
        decoded["local"] == "10.100.0.1:9400",
        "decoded local {}",
        decoded["local"]
    );
    check!(
        decoded["recv_queue_bytes"] == 7,
        "decoded receive queue {}",
        decoded["recv_queue_bytes"]
    );
    let again: serde_json::Value =
        serde_json::from_str(&sh(log, &bin, &["decode", &blob_s])?).map_err(|e| e.to_string())?;
    check!(again == decoded, "prismctl decode differs from export --decode");
    let _ = py.kill();
    let _ = py.wait();
    topology::Topology::route_vip(log, "be1")?;
    let answer =
        "import socket\ns = socket.socket(fileno=3)\nreq = s.recv(7)\ns.sendall(b'got ' + req)\ns.close()\n";
    let out = sh(
        log,
        "ip",
        &[
            "netns", "exec", "be1", &bin, "import", &blob_s, "--", "python3", "-c", answer,
        ],
    )?;
    log.line(out);
    let mut reply = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    client
        .read_to_end(&mut reply)
        .map_err(|e| format!("client read: {e}"))?;
    check!(
        reply == b"got GET /x\n",
        "client got {:?}",
        String::from_utf8_lossy(&reply)
    );
    let missing = sh(&mut Log::default(), &bin, &["decode", "/nonexistent"]).unwrap_err();
    check!(
        missing.contains("No such file"),
        "decode of a missing file: {missing}"
    );
    let _ = std::fs::remove_file(&blob);
    Ok(())
}
