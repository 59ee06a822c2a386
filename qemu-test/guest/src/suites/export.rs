//! SOCK_EXPORT: the snapshot matches the live socket byte for byte, leaves it working,
//! and every kind of wrong fd or caller is refused with a meaningful errno and message.

use super::common::{expect_refusal, loaded, GET_INFO, WITHOUT_NET_ADMIN};
use crate::check;
use crate::harness::{sh, Env, Log, Test, TestResult};
use crate::module;
use crate::sockopt::{linger_zero, queued, set_int, tcp_info};
use crate::topology::{self, in_ns, Topology};
use prism_sock::uapi::{InfoAttr, StateAttr};
use prism_sock::{Client, DecodedState, ImportOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "export_snapshot_v4_recv_queue_and_options",
            run: |e, l| snapshot(e, l, false),
        },
        Test {
            name: "export_snapshot_v6_recv_queue_and_options",
            run: |e, l| snapshot(e, l, true),
        },
        Test {
            name: "export_snapshot_send_queue_unsent_window_closed",
            run: send_queue,
        },
        Test {
            name: "export_snapshot_in_flight_unacked",
            run: in_flight,
        },
        Test {
            name: "export_snapshot_close_wait",
            run: close_wait,
        },
        Test {
            name: "export_snapshot_recv_queue_with_overlapping_segments",
            run: overlapping_segments,
        },
        Test {
            name: "export_refuses_wrong_fds",
            run: wrong_fds,
        },
        Test {
            name: "export_refuses_malformed_requests",
            run: malformed,
        },
        Test {
            name: "export_refuses_caller_without_net_admin",
            run: unprivileged,
        },
        Test {
            name: "export_detach_refused_when_guard_table_full",
            run: guard_full,
        },
        Test {
            name: "get_info_counts_per_namespace",
            run: info_per_namespace,
        },
        Test {
            name: "export_detach_refused_when_namespace_quota_full",
            run: namespace_quota,
        },
        Test {
            name: "guard_v4_passes_syn_ack_of_new_connection_on_departed_tuple",
            run: guard_syn_ack,
        },
        Test {
            name: "guard_v4_holds_this_hosts_rst_on_departed_tuple",
            run: guard_holds_rst,
        },
        Test {
            name: "export_refuses_pending_urgent_data",
            run: urgent_pending,
        },
        Test {
            name: "export_refuses_md5_and_ao_signed_sockets",
            run: signed_sockets,
        },
        Test {
            name: "export_refuses_sockmap_and_mptcp_sockets",
            run: sockmap_and_mptcp,
        },
    ]
}

const SOCK_EXPORT: u8 = 2;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

pub(super) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> TestResult {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A connection from `client` to the VIP, accepted on `fe`; (client side, fe side).
pub(super) fn connect_via_topology(
    v6: bool,
    port: u16,
    client_rcvbuf: Option<i32>,
) -> Result<(TcpStream, TcpStream), String> {
    let vip = SocketAddr::new(topology::vip(v6), port);
    let listener = in_ns("fe", move || TcpListener::bind(vip))?.map_err(|e| format!("bind {vip}: {e}"))?;
    let client = in_ns("client", move || -> std::io::Result<TcpStream> {
        let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket creation; ownership passes to TcpStream below.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket we own.
        let s = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        if let Some(b) = client_rcvbuf {
            set_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, b)?;
        }
        let s = std::net::TcpStream::from(s);
        let sa = sockaddr_bytes(vip);
        // SAFETY: valid address buffer and length.
        let r = unsafe { libc::connect(s.as_raw_fd(), sa.0.as_ptr().cast(), sa.1) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    })?
    .map_err(|e| format!("connect {vip}: {e}"))?;
    let (server, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    Ok((client, server))
}

/// A sockaddr for `libc::connect`: bytes and length.
pub fn sockaddr_bytes(a: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match a {
        SocketAddr::V4(a) => {
            // SAFETY: zeroed sockaddr_in is valid.
            let mut s: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            s.sin_family = libc::AF_INET as u16;
            s.sin_port = a.port().to_be();
            s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: reading the bytes of a plain struct.
            let b = unsafe { std::slice::from_raw_parts((&s as *const libc::sockaddr_in).cast::<u8>(), 16) };
            (b.to_vec(), 16)
        }
        SocketAddr::V6(a) => {
            // SAFETY: zeroed sockaddr_in6 is valid.
            let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            s.sin6_family = libc::AF_INET6 as u16;
            s.sin6_port = a.port().to_be();
            s.sin6_addr.s6_addr = a.ip().octets();
            // SAFETY: reading the bytes of a plain struct.
            let b = unsafe { std::slice::from_raw_parts((&s as *const libc::sockaddr_in6).cast::<u8>(), 28) };
            (b.to_vec(), 28)
        }
    }
}

fn export(c: &Client, fd: impl AsFd, log: &mut Log) -> Result<DecodedState, String> {
    let state = c.export_snapshot(fd).map_err(|e| format!("export: {e}"))?;
    let d = state.decode().map_err(|e| e.to_string())?;
    log.line(format!("blob {} bytes: {d:?}", state.as_bytes().len()));
    Ok(d)
}

fn snapshot(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let c = loaded(env, log)?;
    let (mut client, mut server) = connect_via_topology(v6, 7000, None)?;
    // 60 000 unread bytes: two queue chunks in the blob.
    let request = pattern(60_000, 7);
    client.write_all(&request).map_err(|e| e.to_string())?;
    wait_for("the request in fe's receive queue", || {
        queued(server.as_fd(), false) == 60_000
    })?;
    server.write_all(b"response").map_err(|e| e.to_string())?;
    wait_for("fe's send queue to drain", || queued(server.as_fd(), true) == 0)?;
    set_int(server.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).map_err(|e| e.to_string())?;
    set_int(server.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, 42).map_err(|e| e.to_string())?;

    let d = export(&c, server.as_fd(), log)?;
    let info = tcp_info(server.as_fd());
    check!(
        d.local == Some(server.local_addr().unwrap()),
        "local {:?}",
        d.local
    );
    check!(
        d.peer == Some(server.peer_addr().unwrap()),
        "peer {:?} vs {:?}",
        d.peer,
        server.peer_addr()
    );
    check!(
        d.peer == Some(client.local_addr().unwrap()),
        "peer is not the client's address"
    );
    check!(d.tcp_state == 1, "state {}", d.tcp_state);
    check!(
        d.recv_queue == request,
        "receive queue differs ({} bytes)",
        d.recv_queue.len()
    );
    check!(d.send_queue.is_empty(), "send queue {} bytes", d.send_queue.len());
    check!(
        d.snd_una == d.snd_nxt && d.snd_nxt == d.write_seq,
        "seqs {} {} {}",
        d.snd_una,
        d.snd_nxt,
        d.write_seq
    );
    check!(!d.fin_received, "fin_received on an open connection");
    check!(
        d.nodelay && d.mark == 42,
        "options nodelay={} mark={}",
        d.nodelay,
        d.mark
    );
    check!(d.cc_name == "cubic", "cc {}", d.cc_name);
    check!(
        d.timestamps == (info.tcpi_options & 1 != 0),
        "timestamps {}",
        d.timestamps
    );
    check!(d.sack == (info.tcpi_options & 2 != 0), "sack {}", d.sack);
    check!(
        d.wscale_ok == (info.tcpi_options & 4 != 0),
        "wscale_ok {}",
        d.wscale_ok
    );
    let ws = info.tcpi_snd_rcv_wscale;
    check!(
        d.snd_wscale == ws & 0xf && d.rcv_wscale == ws >> 4,
        "wscales {} {} vs {ws:#x}",
        d.snd_wscale,
        d.rcv_wscale
    );
    check!(
        d.snd_cwnd == info.tcpi_snd_cwnd,
        "cwnd {} vs {}",
        d.snd_cwnd,
        info.tcpi_snd_cwnd
    );
    check!(d.mss_clamp >= 536, "mss clamp {}", d.mss_clamp);

    // A snapshot leaves the socket as it was: the request reads back intact, both ways work.
    let mut got = vec![0; request.len()];
    server.read_exact(&mut got).map_err(|e| e.to_string())?;
    check!(got == request, "request corrupted after export");
    let mut resp = [0u8; 8];
    client.read_exact(&mut resp).map_err(|e| e.to_string())?;
    check!(&resp == b"response", "response {resp:?}");
    let info = c.info().map_err(|e| e.to_string())?;
    check!(info.exports == 1 && info.errors == 0, "counters {info:?}");
    Ok(())
}

fn send_queue(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let c = loaded(env, log)?;
    // The client reads nothing and has a small buffer: fe's data piles up in flight and unsent.
    let (client, mut server) = connect_via_topology(false, 7001, Some(8192))?;
    set_int(server.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 65536).map_err(|e| e.to_string())?;
    let data = pattern(400_000, 3);
    let written = write_until_window_closes(&mut server, &data)?;
    let d = export(&c, server.as_fd(), log)?;
    let in_flight = d.snd_nxt.wrapping_sub(d.snd_una) as usize;
    log.line(format!(
        "written {written}, send queue {}, in flight {in_flight}",
        d.send_queue.len()
    ));
    check!(
        d.send_queue.len() == d.write_seq.wrapping_sub(d.snd_una) as usize,
        "queue length vs seqs"
    );
    check!(
        d.send_queue.len() > in_flight,
        "expected unsent data: the client's window is closed"
    );
    check!(
        d.send_queue[..] == data[written - d.send_queue.len()..written],
        "send queue bytes differ"
    );
    // Still a working connection: everything arrives in order at the client.
    let total = data.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; total];
        let mut client = client;
        client.read_exact(&mut got).map(|_| got)
    });
    server.write_all(&data[written..]).map_err(|e| e.to_string())?;
    let got = reader
        .join()
        .map_err(|_| "reader panicked")?
        .map_err(|e| e.to_string())?;
    check!(got == data, "data corrupted after export");
    Ok(())
}

/// Writes `data` to `sock` until all of it is written or the peer's window has stayed
/// closed for 5 s, then lets what is in flight settle; returns the bytes written. The
/// socket is blocking again afterwards.
pub(super) fn write_until_window_closes(sock: &mut TcpStream, data: &[u8]) -> Result<usize, String> {
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut written = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) && written < data.len() {
        match sock.write(&data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(written)
}

/// Runs one nft command in namespace `ns`.
fn nft(log: &mut Log, ns: &str, cmd: &str) -> Result<String, String> {
    sh(log, "ip", &["netns", "exec", ns, "nft", cmd])
}

fn in_flight(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let c = loaded(env, log)?;
    let (client, mut server) = connect_via_topology(false, 7003, None)?;
    // The client drops fe's segments for a while: what fe sends stays unacknowledged.
    nft(log, "client", "add table inet hold")?;
    nft(
        log,
        "client",
        "add chain inet hold in { type filter hook input priority 0; }",
    )?;
    nft(log, "client", "add rule inet hold in tcp sport 7003 drop")?;
    let data = pattern(20_000, 11);
    server.write_all(&data).map_err(|e| e.to_string())?;
    wait_for("fe to send everything", || {
        let i = tcp_info(server.as_fd());
        i.tcpi_unacked > 0 && queued(server.as_fd(), true) == 20_000
    })?;
    let d = export(&c, server.as_fd(), log)?;
    let in_flight = d.snd_nxt.wrapping_sub(d.snd_una) as usize;
    log.line(format!(
        "send queue {}, in flight {in_flight}",
        d.send_queue.len()
    ));
    check!(
        d.send_queue == data,
        "send queue differs ({} bytes)",
        d.send_queue.len()
    );
    check!(
        in_flight > 0,
        "nothing in flight: the retransmit queue was not exercised"
    );
    nft(log, "client", "delete table inet hold")?;
    // Retransmission delivers it all once the client listens again.
    let mut got = vec![0; data.len()];
    (&client).read_exact(&mut got).map_err(|e| e.to_string())?;
    check!(got == data, "data corrupted after export");
    Ok(())
}

/// A retransmission that starts before fe's `rcv_nxt` and ends after it is queued whole
/// next to the segment it overlaps; the export must hand over each byte once. The client
/// sends two small segments: fe takes the first (its ACKs dropped) and loses the second;
/// the client's timeout then retransmits both collapsed into one segment. The rules go
/// in before any data (an nft call can outlast an RTO here), told apart by IP length.
fn overlapping_segments(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let c = loaded(env, log)?;
    // No tail-loss probe: it would resend the second segment alone.
    sh(
        log,
        "ip",
        &[
            "netns",
            "exec",
            "client",
            "sysctl",
            "-qw",
            "net.ipv4.tcp_early_retrans=0",
        ],
    )?;
    let (client, server) = connect_via_topology(false, 7004, None)?;
    client.set_nodelay(true).map_err(|e| e.to_string())?;
    // IP lengths with timestamps: 352 (first), 552 (second), 852 (both).
    let data = pattern(800, 5);
    let (first, second) = data.split_at(300);
    let rules = "table inet hold {
        counter both {}
        chain out { type filter hook output priority 0; tcp sport 7004 drop; }
        chain in {
            type filter hook input priority 0;
            tcp dport 7004 ip length 500-600 drop;
            tcp dport 7004 ip length 800-900 counter name both;
        }
    }
";
    let path = "/tmp/prism-overlap.nft";
    std::fs::write(path, rules).map_err(|e| e.to_string())?;
    sh(log, "ip", &["netns", "exec", "fe", "nft", "-f", path])?;
    (&client).write_all(first).map_err(|e| e.to_string())?;
    (&client).write_all(second).map_err(|e| e.to_string())?;
    wait_for("the retransmission on fe", || {
        queued(server.as_fd(), false) == data.len() as i32
    })?;
    let counted = nft(log, "fe", "list counter inet hold both")?;
    nft(log, "fe", "delete table inet hold")?;
    let collapsed: u64 = counted
        .split("packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no packet count in {counted:?}"))?;
    check!(
        collapsed > 0,
        "no collapsed retransmission reached fe: the queue never overlapped"
    );
    let d = export(&c, server.as_fd(), log)?;
    check!(
        d.recv_queue == data,
        "receive queue {} bytes, {} expected, or differs",
        d.recv_queue.len(),
        data.len()
    );
    let mut got = vec![0; data.len()];
    (&server).read_exact(&mut got).map_err(|e| e.to_string())?;
    check!(got == data, "data corrupted after export");
    Ok(())
}

fn close_wait(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let c = loaded(env, log)?;
    let (client, server) = connect_via_topology(true, 7002, None)?;
    (&client).write_all(b"last words").map_err(|e| e.to_string())?;
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    wait_for("CLOSE_WAIT on fe", || tcp_info(server.as_fd()).tcpi_state == 8)?;
    let d = export(&c, server.as_fd(), log)?;
    check!(
        d.tcp_state == 8 && d.fin_received,
        "state {} fin {}",
        d.tcp_state,
        d.fin_received
    );
    check!(d.recv_queue == b"last words", "receive queue {:?}", d.recv_queue);
    Ok(())
}

fn wrong_fds(env: &Env, log: &mut Log) -> TestResult {
    let c = loaded(env, log)?;
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    expect_refusal(
        c.export_snapshot(udp.as_fd()),
        libc::EOPNOTSUPP,
        "not a TCP socket",
        log,
    )?;
    let (r, _w) = std::io::pipe().map_err(|e| e.to_string())?;
    expect_refusal(
        c.export_snapshot(r.as_fd()),
        libc::ENOTSOCK,
        "not an open socket",
        log,
    )?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    expect_refusal(
        c.export_snapshot(listener.as_fd()),
        libc::EINVAL,
        "listening socket",
        log,
    )?;
    // SAFETY: plain socket creation, closed by OwnedFd.
    let fresh = unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM,
            0,
        ))
    };
    expect_refusal(
        c.export_snapshot(fresh.as_fd()),
        libc::EOPNOTSUPP,
        "not ESTABLISHED",
        log,
    )?;
    // A connection with the kTLS upper-layer protocol attached but no keys (a keyed
    // one moves: suite tls).
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let tls = TcpStream::connect(l.local_addr().unwrap()).map_err(|e| e.to_string())?;
    let ulp = b"tls";
    // SAFETY: valid fd, option value and length.
    let r = unsafe {
        libc::setsockopt(
            tls.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            ulp.as_ptr().cast(),
            3,
        )
    };
    check!(r == 0, "TCP_ULP tls: {}", std::io::Error::last_os_error());
    expect_refusal(
        c.export_snapshot(tls.as_fd()),
        libc::EOPNOTSUPP,
        "neither TLS_TX nor TLS_RX",
        log,
    )?;
    // A closed descriptor number.
    let closed = (1 << 20) as u32;
    expect_refusal(
        c.raw_request(
            SOCK_EXPORT,
            &[(StateAttr::Fd.into(), closed.to_ne_bytes().to_vec())],
        ),
        libc::EBADF,
        "not an open socket",
        log,
    )?;
    let info = c.info().map_err(|e| e.to_string())?;
    check!(info.exports == 0 && info.errors == 6, "counters {info:?}");
    Ok(())
}

fn malformed(env: &Env, log: &mut Log) -> TestResult {
    let c = loaded(env, log)?;
    expect_refusal(
        c.raw_request(SOCK_EXPORT, &[]),
        libc::EINVAL,
        "missing attribute: fd",
        log,
    )?;
    expect_refusal(
        c.raw_request(SOCK_EXPORT, &[(StateAttr::Fd.into(), vec![1, 0])]),
        libc::EINVAL,
        "invalid attribute length",
        log,
    )?;
    // A blob or import attribute is not a SOCK_EXPORT request attribute; one past the
    // request's highest (forward-to) is unknown to it altogether.
    for kind in [StateAttr::SndUna, StateAttr::Nonblock] {
        expect_refusal(
            c.raw_request(SOCK_EXPORT, &[(kind.into(), vec![0; 4])]),
            libc::EINVAL,
            "Unsupported attribute",
            log,
        )?;
    }
    expect_refusal(
        c.raw_request(SOCK_EXPORT, &[(u16::from(StateAttr::ForwardTo) + 1, vec![])]),
        libc::EINVAL,
        "Unknown attribute type",
        log,
    )?;
    // forward-to only with detach, and only to another host's unicast address.
    let fd = |n: u32| (u16::from(StateAttr::Fd), n.to_ne_bytes().to_vec());
    let to = |a: [u8; 4]| (u16::from(StateAttr::ForwardTo), a.to_vec());
    let detach = (u16::from(StateAttr::Detach), Vec::new());
    let sock = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let n = sock.as_raw_fd() as u32;
    expect_refusal(
        c.raw_request(SOCK_EXPORT, &[fd(n), to([10, 0, 2, 2])]),
        libc::EINVAL,
        "forward-to needs detach",
        log,
    )?;
    for bad in [[0, 0, 0, 0], [127, 0, 0, 1], [224, 0, 0, 1], [255; 4]] {
        expect_refusal(
            c.raw_request(SOCK_EXPORT, &[fd(n), detach.clone(), to(bad)]),
            libc::EINVAL,
            "forward-to must be a unicast IPv4 address",
            log,
        )?;
    }
    Ok(())
}

fn unprivileged(env: &Env, log: &mut Log) -> TestResult {
    module::load(log, &env.module)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let me = me.to_string_lossy();
    let mut cmd: Vec<&str> = WITHOUT_NET_ADMIN.to_vec();
    cmd.extend([&*me, "export-probe"]);
    let out = sh(log, cmd[0], &cmd[1..])?;
    check!(
        out.trim() == format!("errno {}", libc::EPERM),
        "unprivileged export gave {out:?}"
    );
    Ok(())
}

/// Child side of `export_refuses_caller_without_net_admin`: exports a loopback
/// connection and prints how it failed.
pub fn export_probe() -> String {
    let run = || -> Result<String, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let s = TcpStream::connect(l.local_addr().unwrap()).map_err(|e| e.to_string())?;
        let c = Client::connect().map_err(|e| e.to_string())?;
        Ok(match c.export_snapshot(s.as_fd()) {
            Ok(_) => "exported".into(),
            Err(e) => format!("errno {}", e.errno().unwrap_or(0)),
        })
    };
    run().unwrap_or_else(|e| e)
}

/// Departed tuples a namespace may hold, in `namespace_quota`.
const QUOTA: usize = 3;

/// A user namespace's root (CAP_NET_ADMIN over its own network namespace) detaches
/// until its namespace's share of the guard table is used up, then is refused with
/// ENOSPC; host root's detaches in another namespace still succeed, and the tenant's
/// entries go with its namespace.
fn namespace_quota(env: &Env, log: &mut Log) -> TestResult {
    module::load_with(
        log,
        &env.module,
        &["departed_capacity=16", &format!("departed_netns_quota={QUOTA}")],
    )?;
    let c = Client::connect().map_err(|e| e.to_string())?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let probe = format!("ip link set lo up && exec {} quota-probe", me.to_string_lossy());
    let out = sh(log, "unshare", &["-Urn", "sh", "-c", &probe])?;
    let lines: Vec<&str> = out.lines().collect();
    check!(
        lines.len() == QUOTA + 1
            && lines[..QUOTA].iter().all(|l| *l == "detached")
            && lines[QUOTA].starts_with(&format!("errno {}", libc::ENOSPC))
            && lines[QUOTA].contains("quota of departed tuples"),
        "the tenant's detaches gave {lines:?}"
    );
    // Host root, in its own namespace, is not held back by the tenant.
    let mut kept = Vec::new();
    for _ in 0..QUOTA {
        let (client, server) = loopback_pair()?;
        c.export_detach(server.as_fd())
            .map_err(|e| format!("host root's detach: {e}"))?;
        kept.push((client, server));
    }
    // The tenant's namespace is gone with its process: its entries are flushed.
    wait_for("the tenant's entries to go with its namespace", || {
        c.info().is_ok_and(|i| i.departed.active as usize == QUOTA)
    })?;
    Ok(())
}

/// Child side of `export_detach_refused_when_namespace_quota_full`, in a network
/// namespace of its own with lo up: detaches loopback connections, one more than the
/// quota, and prints how each went.
pub fn quota_probe() -> Result<String, String> {
    let c = Client::connect().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut kept = Vec::new();
    for _ in 0..=QUOTA {
        let (client, server) = loopback_pair()?;
        out.push(match c.export_detach(server.as_fd()) {
            Ok(_) => "detached".to_string(),
            Err(e) => format!(
                "errno {}: {}",
                e.errno().unwrap_or(0),
                e.ext_ack_message().unwrap_or_default()
            ),
        });
        // An abortive close at exit: no FIN to retransmit keeps the namespace alive.
        let _ = linger_zero(client.as_fd());
        kept.push((client, server));
    }
    Ok(out.join("\n"))
}

/// With room for two departed tuples, a third DETACH is refused with ENOSPC and leaves its
/// socket exactly as it was; once a tuple is imported back its slot serves that DETACH;
/// a bad table size is refused at load time.
fn guard_full(env: &Env, log: &mut Log) -> TestResult {
    for bad in ["departed_capacity=0", "departed_capacity=2000000"] {
        check!(
            module::load_with(log, &env.module, &[bad]).is_err(),
            "insmod {bad} succeeded"
        );
        check!(!module::is_loaded(), "module loaded with {bad}");
    }
    module::load_with(
        log,
        &env.module,
        &["departed_capacity=2", "departed_netns_quota=2"],
    )?;
    let c = Client::connect().map_err(|e| e.to_string())?;
    let _t = Topology::up()?;
    let mut kept = Vec::new();
    let mut states = Vec::new();
    for port in [8095, 8096] {
        let (client, server) = connect_via_topology(false, port, None)?;
        states.push(c.export_detach(server.as_fd()).map_err(|e| e.to_string())?);
        kept.push((client, server));
    }
    let (mut client, mut server) = connect_via_topology(false, 8097, None)?;
    client.write_all(b"before").map_err(|e| e.to_string())?;
    wait_for("request queued", || queued(server.as_fd(), false) == 6)?;
    expect_refusal(
        c.export_detach(server.as_fd()),
        libc::ENOSPC,
        "departed-tuple table is full",
        log,
    )?;
    // The guard's figures are those of the connections' namespace, fe; the exports
    // count where the requests came from.
    let fe = in_ns("fe", Client::connect)?.map_err(|e| e.to_string())?;
    let guard = fe.info().map_err(|e| e.to_string())?.departed;
    log.line(format!("guard in fe: {guard:?}"));
    check!(
        guard.capacity == 2 && guard.quota == 2 && guard.active == 2 && guard.full == 1,
        "guard counters {guard:?}"
    );
    let info = c.info().map_err(|e| e.to_string())?;
    check!(info.exports == 2, "exports {}", info.exports);
    // The refused socket still owns its connection, with its queue, both ways.
    let mut buf = [0u8; 6];
    server.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"before", "server read {buf:?}");
    server.write_all(b"still here").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"still here", "client read {buf:?}");
    // The first connection comes back to fe: its slot leaves the table, and the DETACH
    // that was refused now gets that slot.
    let back = fe
        .import(&states[0], &ImportOptions::default())
        .map_err(|e| format!("import back: {e}"))?;
    let mut back = TcpStream::from(back.fd);
    back.write_all(b"back").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    kept[0].0.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"back", "client read {buf:?}");
    c.export_detach(server.as_fd())
        .map_err(|e| format!("detach after a slot was freed: {e}"))?;
    let guard = fe.info().map_err(|e| e.to_string())?.departed;
    check!(
        guard.active == 2 && guard.full == 1,
        "guard counters after the slot was reused {guard:?}"
    );
    Ok(())
}

/// Opens a TCP connection from `local` to `peer` in the current namespace, giving up
/// after `timeout`.
fn connect_from(local: SocketAddr, peer: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let domain = if local.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket creation; ownership passes to TcpStream below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket we own.
    let s = TcpStream::from(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    set_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    s.set_write_timeout(Some(timeout))?;
    let (sa, len) = sockaddr_bytes(local);
    // SAFETY: valid address buffer and length.
    if unsafe { libc::bind(s.as_raw_fd(), sa.as_ptr().cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (sa, len) = sockaddr_bytes(peer);
    // SAFETY: as above; SO_SNDTIMEO bounds a blocking connect.
    if unsafe { libc::connect(s.as_raw_fd(), sa.as_ptr().cast(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s)
}

/// A connection fe opens on a tuple it detached (the VIP port to the client's old
/// address and port) is not the departed one: the guard lets the client's SYN-ACK
/// through and forgets the tuple, so the connect completes at once instead of hanging
/// until the entry expires.
fn guard_syn_ack(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let c = Client::connect().map_err(|e| e.to_string())?;
    let (client, server) = connect_via_topology(false, 8098, None)?;
    let (old_client, vip) = (
        client.local_addr().map_err(|e| e.to_string())?,
        server.local_addr().map_err(|e| e.to_string())?,
    );
    c.export_detach(server.as_fd()).map_err(|e| e.to_string())?;
    drop(server);
    let fe = in_ns("fe", Client::connect)?.map_err(|e| e.to_string())?;
    check!(
        fe.info().map_err(|e| e.to_string())?.departed.active == 1,
        "no guard entry"
    );
    // The client aborts (its RST is dropped at fe) and listens on the same port.
    linger_zero(client.as_fd()).map_err(|e| format!("SO_LINGER: {e}"))?;
    drop(client);
    let listener = in_ns("client", move || TcpListener::bind(old_client))?
        .map_err(|e| format!("bind {old_client}: {e}"))?;
    let start = Instant::now();
    let mut out = in_ns("fe", move || {
        connect_from(vip, old_client, Duration::from_secs(3))
    })?
    .map_err(|e| format!("connect {vip} -> {old_client}: {e}"))?;
    let took = start.elapsed();
    log.line(format!("fe connected {vip} -> {old_client} in {took:?}"));
    check!(took < Duration::from_secs(1), "the connect took {took:?}");
    let (mut accepted, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    out.write_all(b"new connection").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 14];
    accepted.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"new connection", "client read {buf:?}");
    let info = fe.info().map_err(|e| e.to_string())?;
    check!(info.departed.active == 0, "guard entry left: {:?}", info.departed);
    Ok(())
}

/// The one's-complement sum of `data` as 16-bit big-endian words, folded, from `sum`.
fn ones_complement(mut sum: u32, data: &[u8]) -> u32 {
    for pair in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// A TCP RST from `from` to `to` with sequence number `seq`, IPv4 header included.
fn rst_packet(from: std::net::SocketAddrV4, to: std::net::SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[..2].copy_from_slice(&from.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&to.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x04;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&from.ip().octets());
    pseudo.extend_from_slice(&to.ip().octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8, 0, 20]);
    let sum = !(ones_complement(ones_complement(0, &pseudo), &tcp) as u16);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    // The kernel fills in the IP header's length, id and checksum (IP_HDRINCL).
    let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, libc::IPPROTO_TCP as u8, 0, 0];
    ip.extend_from_slice(&from.ip().octets());
    ip.extend_from_slice(&to.ip().octets());
    ip.extend_from_slice(&tcp);
    ip
}

/// Sends `packet` (IPv4 header included) from the current namespace.
fn send_raw_v4(packet: &[u8], to: std::net::Ipv4Addr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    let sent = sock.send_to(packet, &SocketAddr::new(to.into(), 0).into())?;
    if sent != packet.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            packet.len()
        )));
    }
    Ok(())
}

/// TCP answers a packet that passed the guard's LOCAL_IN hook just before its tuple
/// departed with RST from the listener (the export unhashed the socket meanwhile). The
/// guard's LOCAL_OUT hook keeps any RST of fe's on a departed tuple at home: here one
/// with the exact sequence number the client expects, sent from fe through a raw
/// socket (which goes through LOCAL_OUT as TCP's own RSTs do). Without the hook the
/// client's connection is reset.
fn guard_holds_rst(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let c = Client::connect().map_err(|e| e.to_string())?;
    let (client, server) = connect_via_topology(false, 8097, None)?;
    let (SocketAddr::V4(client_addr), SocketAddr::V4(vip)) = (
        client.local_addr().map_err(|e| e.to_string())?,
        server.local_addr().map_err(|e| e.to_string())?,
    ) else {
        return Err("not an IPv4 connection".into());
    };
    let state = c.export_detach(server.as_fd()).map_err(|e| e.to_string())?;
    let seq = state.decode().map_err(|e| e.to_string())?.snd_nxt;
    drop(server);
    let fe = in_ns("fe", Client::connect)?.map_err(|e| e.to_string())?;
    let before = fe.info().map_err(|e| e.to_string())?.departed;
    check!(before.active == 1, "no guard entry: {before:?}");
    let rst = rst_packet(vip, client_addr, seq);
    let sent = in_ns("fe", move || send_raw_v4(&rst, *client_addr.ip()))?;
    // A packet that a LOCAL_OUT hook drops fails its send with EPERM.
    log.line(format!("fe's raw send of the RST: {sent:?}"));
    match sent {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        Err(e) => return Err(format!("raw send: {e}")),
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = fe.info().map_err(|e| e.to_string())?.departed;
    log.line(format!("fe's guard before the RST: {before:?}; after: {after:?}"));
    // TCP_ESTABLISHED in include/net/tcp_states.h.
    const ESTABLISHED: u8 = 1;
    let state = tcp_info(client.as_fd()).tcpi_state;
    check!(
        state == ESTABLISHED,
        "the client's connection is in state {state} (1 = established): the RST left fe"
    );
    check!(
        after.dropped == before.dropped + 1,
        "fe's guard counted {} dropped packets, not one more than {}",
        after.dropped,
        before.dropped
    );
    Ok(())
}

/// GET_INFO shows the caller's namespace only: requests count where the netlink
/// socket that sent them lives, guarded tuples where their connection does, and
/// another namespace sees none of it.
fn info_per_namespace(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let host = loaded(env, log)?;
    let connect = |ns: &'static str| in_ns(ns, Client::connect)?.map_err(|e| format!("connect in {ns}: {e}"));
    let (fe, be1) = (connect("fe")?, connect("be1")?);
    let info = |c: &Client| c.info().map_err(|e| e.to_string());
    let be1_before = info(&be1)?;
    // fe: one refused request and one detach of its own connection.
    let zero = 0u32.to_ne_bytes().to_vec();
    check!(
        fe.raw_request(GET_INFO, &[(InfoAttr::ProtoVersion.into(), zero)])
            .is_err(),
        "proto-version 0 accepted"
    );
    let (_client, server) = connect_via_topology(false, 8099, None)?;
    fe.export_detach(server.as_fd()).map_err(|e| e.to_string())?;
    // Host root detaches another of fe's connections from its own namespace.
    let (_client2, server2) = connect_via_topology(false, 8100, None)?;
    host.export_detach(server2.as_fd()).map_err(|e| e.to_string())?;
    let (f, h, b) = (info(&fe)?, info(&host)?, info(&be1)?);
    log.line(format!("fe: {f:?}"));
    log.line(format!("host: {h:?}"));
    check!(
        f.exports == 1 && f.errors == 1 && f.departed.active == 2,
        "fe's counters: {f:?}"
    );
    check!(
        h.exports == 1 && h.errors == 0 && h.departed.active == 0,
        "the host's counters: {h:?}"
    );
    check!(
        f.departed.capacity == h.departed.capacity
            && f.departed.quota == f.departed.capacity / 2
            && f.departed.quota > 0,
        "limits: {:?}",
        f.departed
    );
    check!(b == be1_before, "be1 saw fe's activity: {be1_before:?} -> {b:?}");
    check!(
        b.exports == 0 && b.errors == 0 && b.departed.active == 0,
        "be1's counters: {b:?}"
    );
    Ok(())
}

/// An urgent byte (MSG_OOB) lives outside the queues and stays in the receive queue
/// until the reader passes it: until then the export is refused with EOPNOTSUPP and a
/// message, even after the byte was read with MSG_OOB, and the socket keeps working;
/// once the reader is past it, the connection exports.
fn urgent_pending(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let c = Client::connect().map_err(|e| e.to_string())?;
    let (mut client, mut server) = connect_via_topology(false, 8099, None)?;
    client.write_all(b"in band").map_err(|e| e.to_string())?;
    // SAFETY: one byte from a valid buffer on the client's own socket.
    let sent = unsafe { libc::send(client.as_raw_fd(), b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
    check!(sent == 1, "send MSG_OOB: {}", std::io::Error::last_os_error());
    client.write_all(b"after").map_err(|e| e.to_string())?;
    // SIOCINQ counts only up to the urgent mark: wait for the client's bytes to be
    // acknowledged instead.
    wait_for("the client's bytes to arrive", || {
        queued(server.as_fd(), false) == 7 && queued(client.as_fd(), true) == 0
    })?;
    let refused = "urgent (MSG_OOB) data is pending";
    expect_refusal(c.export_snapshot(server.as_fd()), libc::EOPNOTSUPP, refused, log)?;
    let mut oob = [0u8; 1];
    // SAFETY: a one-byte buffer on fe's own socket.
    let got = unsafe { libc::recv(server.as_raw_fd(), oob.as_mut_ptr().cast(), 1, libc::MSG_OOB) };
    check!(got == 1 && &oob == b"!", "recv MSG_OOB: {got} {oob:?}");
    // Read with MSG_OOB, the byte is still ahead of the reader in the queue.
    expect_refusal(c.export_snapshot(server.as_fd()), libc::EOPNOTSUPP, refused, log)?;
    // The reader stops at the urgent mark, then skips the byte.
    let mut data = Vec::new();
    while data.len() < 12 {
        let mut buf = [0u8; 32];
        let n = server.read(&mut buf).map_err(|e| e.to_string())?;
        check!(n > 0, "end of stream after {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    }
    check!(
        data == b"in bandafter",
        "read {:?}",
        String::from_utf8_lossy(&data)
    );
    let state = c
        .export_snapshot(server.as_fd())
        .map_err(|e| format!("export once the reader is past the urgent byte: {e}"))?;
    let decoded = state.decode().map_err(|e| e.to_string())?;
    check!(
        decoded.recv_queue.is_empty(),
        "receive queue {:?}",
        decoded.recv_queue
    );
    client.write_all(b"still here").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 10];
    server.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"still here", "server read {buf:?}");
    Ok(())
}

/// A BPF sockmap of one socket (`bpf(2)` with no library: three commands).
struct Sockmap(std::os::fd::OwnedFd);

impl Sockmap {
    const MAP_CREATE: libc::c_long = 0;
    const MAP_UPDATE_ELEM: libc::c_long = 2;
    const MAP_DELETE_ELEM: libc::c_long = 3;
    const TYPE_SOCKMAP: u64 = 15;

    /// `bpf(cmd)` with `attr` as the leading words of a zeroed `union bpf_attr`.
    fn bpf(cmd: libc::c_long, attr: &[u64]) -> std::io::Result<libc::c_long> {
        let mut buf = [0u64; 16];
        buf[..attr.len()].copy_from_slice(attr);
        // SAFETY: `buf` is a valid, fully initialised `bpf_attr` of the size passed;
        // the pointers in it point to live values of the caller.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, buf.as_mut_ptr(), 128) };
        if ret < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    fn new() -> Result<Self, String> {
        // map_type, key_size | value_size, max_entries (little-endian words).
        let fd = Self::bpf(Self::MAP_CREATE, &[Self::TYPE_SOCKMAP | 4 << 32, 4 | 1 << 32])
            .map_err(|e| format!("BPF_MAP_CREATE sockmap: {e}"))?;
        // SAFETY: a new fd that nothing else owns.
        Ok(Self(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Puts `sock` in slot 0 (the kernel attaches a psock to it).
    fn insert(&self, sock: &impl AsRawFd) -> Result<(), String> {
        let (key, value) = (0u32, sock.as_raw_fd() as u32);
        let attr = [
            self.0.as_raw_fd() as u64,
            &key as *const u32 as u64,
            &value as *const u32 as u64,
        ];
        Self::bpf(Self::MAP_UPDATE_ELEM, &attr)
            .map(drop)
            .map_err(|e| format!("BPF_MAP_UPDATE_ELEM: {e}"))
    }

    /// Empties slot 0.
    fn remove(&self) -> Result<(), String> {
        let key = 0u32;
        let attr = [self.0.as_raw_fd() as u64, &key as *const u32 as u64];
        Self::bpf(Self::MAP_DELETE_ELEM, &attr)
            .map(drop)
            .map_err(|e| format!("BPF_MAP_DELETE_ELEM: {e}"))
    }
}

/// A connected pair of MPTCP sockets over loopback; (client, accepted).
fn mptcp_pair() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), String> {
    let socket = || {
        // SAFETY: plain socket creation; the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP) };
        if fd < 0 {
            return Err(format!("MPTCP socket: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    };
    let at = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 8199u16.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let (listener, client) = (socket()?, socket()?);
    // SAFETY: valid address and length for each call on our own sockets.
    let ok = unsafe {
        libc::bind(
            listener.as_raw_fd(),
            (&at as *const libc::sockaddr_in).cast(),
            len,
        ) == 0
            && libc::listen(listener.as_raw_fd(), 1) == 0
            && libc::connect(client.as_raw_fd(), (&at as *const libc::sockaddr_in).cast(), len) == 0
    };
    check!(ok, "MPTCP connect: {}", std::io::Error::last_os_error());
    // SAFETY: accept on our listener; the new fd is owned right away.
    let fd = unsafe { libc::accept(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    check!(fd >= 0, "MPTCP accept: {}", std::io::Error::last_os_error());
    // SAFETY: a new fd that nothing else owns.
    Ok((client, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
}

/// A socket in a BPF sockmap carries a psock that diverts its data: refused, and
/// exported again once it left the map, its stream intact. An MPTCP socket is not TCP:
/// refused too.
fn sockmap_and_mptcp(env: &Env, log: &mut Log) -> TestResult {
    let c = loaded(env, log)?;
    let (mut client, mut server) = loopback_pair()?;
    let map = Sockmap::new()?;
    map.insert(&server)?;
    expect_refusal(
        c.export_snapshot(server.as_fd()),
        libc::EOPNOTSUPP,
        "attached to an in-kernel user (sockmap/psock)",
        log,
    )?;
    map.remove()?;
    // The psock lets go of the socket after an RCU grace period.
    wait_for("the socket to export once out of the map", || {
        c.export_snapshot(server.as_fd()).is_ok()
    })?;
    client.write_all(b"still one stream").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    server.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"still one stream", "server read {buf:?}");
    let (_mptcp_client, mptcp) = mptcp_pair()?;
    expect_refusal(
        c.export_snapshot(mptcp.as_fd()),
        libc::EOPNOTSUPP,
        "not a TCP socket",
        log,
    )?;
    Ok(())
}

/// A loopback connection in the test's namespace: (client, server).
fn loopback_pair() -> Result<(TcpStream, TcpStream), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let client = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let (server, _) = l.accept().map_err(|e| e.to_string())?;
    Ok((client, server))
}

/// `setsockopt(IPPROTO_TCP, opt)` with a struct's bytes.
fn set_tcp_struct(sock: &impl AsRawFd, opt: i32, value: &[u8]) -> Result<(), String> {
    // SAFETY: `value` is valid for reads of its length for the call.
    let ret = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            opt,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    check!(ret == 0, "setsockopt {opt}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// 127.0.0.1 as a `sockaddr_storage`'s first bytes.
fn loopback_storage() -> [u8; 128] {
    let mut a = [0u8; 128];
    a[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
    a[4..8].copy_from_slice(&[127, 0, 0, 1]);
    a
}

/// `struct tcp_md5sig` for peer 127.0.0.1 (`key` empty: delete the key).
fn md5sig(key: &[u8]) -> Vec<u8> {
    // addr[128], flags u8, prefixlen u8, keylen u16, ifindex i32, key[80]
    let mut v = loopback_storage().to_vec();
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&(key.len() as u16).to_ne_bytes());
    v.extend_from_slice(&0i32.to_ne_bytes());
    let mut k = [0u8; 80];
    k[..key.len()].copy_from_slice(key);
    v.extend_from_slice(&k);
    v
}

/// `struct tcp_ao_add`: an HMAC-SHA1 key for peer 127.0.0.1/32, ids 100/100.
fn ao_add(key: &[u8]) -> Vec<u8> {
    // addr[128], alg_name[64], ifindex i32, set_current:1 set_rnext:1 reserved:30 u32,
    // reserved2 u16, prefix, sndid, rcvid, maclen, keyflags, keylen u8, key[80]
    let mut v = loopback_storage().to_vec();
    let mut alg = [0u8; 64];
    alg[..10].copy_from_slice(b"hmac(sha1)");
    v.extend_from_slice(&alg);
    v.extend_from_slice(&0i32.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&0u16.to_ne_bytes());
    v.extend_from_slice(&[32, 100, 100, 0, 0, key.len() as u8]);
    let mut k = [0u8; 80];
    k[..key.len()].copy_from_slice(key);
    v.extend_from_slice(&k);
    v
}

/// TCP_AO_ADD_KEY (not in the libc crate).
const TCP_AO_ADD_KEY: i32 = 38;

/// A socket that signs its segments (TCP-MD5, TCP-AO) is refused: the keys cannot be
/// read back, and an imported socket without them would send segments its peer drops.
/// Deleting the MD5 key makes the socket exportable again; the AO connection keeps
/// carrying data after the refusal.
fn signed_sockets(env: &Env, log: &mut Log) -> TestResult {
    let _c = loaded(env, log)?;
    let c = Client::connect().map_err(|e| e.to_string())?;

    let (_client, server) = loopback_pair()?;
    c.export_snapshot(server.as_fd())
        .map_err(|e| format!("export before any key: {e}"))?;
    set_tcp_struct(&server, libc::TCP_MD5SIG, &md5sig(b"0123456789abcdef"))?;
    expect_refusal(
        c.export_snapshot(server.as_fd()),
        libc::EOPNOTSUPP,
        "TCP-MD5",
        log,
    )?;
    set_tcp_struct(&server, libc::TCP_MD5SIG, &md5sig(b""))?;
    c.export_snapshot(server.as_fd())
        .map_err(|e| format!("export after the MD5 key was deleted: {e}"))?;

    // Both ends keyed before the handshake, so the connection runs signed.
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let key = b"prism-ao-test-key";
    set_tcp_struct(&l, TCP_AO_ADD_KEY, &ao_add(key))?;
    // SAFETY: plain socket creation; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    check!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nobody else owns.
    let mut client = TcpStream::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    set_tcp_struct(&client, TCP_AO_ADD_KEY, &ao_add(key))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    // SAFETY: a zeroed sockaddr_in is valid; family, port and address are set below.
    let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    to.sin_family = libc::AF_INET as libc::sa_family_t;
    to.sin_port = port.to_be();
    to.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
    // SAFETY: `to` is a valid sockaddr_in of the length passed.
    let ret = unsafe {
        libc::connect(
            client.as_raw_fd(),
            (&to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    check!(ret == 0, "AO connect: {}", std::io::Error::last_os_error());
    let (mut server, _) = l.accept().map_err(|e| e.to_string())?;
    expect_refusal(c.export_snapshot(server.as_fd()), libc::EOPNOTSUPP, "TCP-AO", log)?;
    client.write_all(b"signed").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 6];
    server.read_exact(&mut buf).map_err(|e| e.to_string())?;
    check!(&buf == b"signed", "the AO connection after the refusal: {buf:?}");
    Ok(())
}
