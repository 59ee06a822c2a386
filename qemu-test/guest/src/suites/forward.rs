//! SOCK_FORWARD: after a hand-off, l4 still sends the client's packets to the old
//! owner. The old owner's module forwards them to the new owner inside IPIP (6in4 for
//! IPv6), so the new owner answers at once: no packet waits for the steering update,
//! none is answered with RST, and a flow that is never steered still completes.

use super::common::{expect_refusal, loaded};
use super::export::connect_via_topology;
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};
use crate::migrate::{
    expect_stream, flow_sockets, no_rst_since, rsts_all, send_stream, tcp_ext_counter, Cluster,
};
use crate::stack::wait;
use crate::topology::Topology;
use prism_sock::uapi::{Command, StateAttr};
use std::io::Read;
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "forward_v4_keepalive_before_steer",
            run: |e, l| never_steered(e, l, false),
        },
        Test {
            name: "forward_v6_keepalive_before_steer",
            run: |e, l| never_steered(e, l, true),
        },
        Test {
            name: "forward_v4_from_detach_owner_drops_early_packets",
            run: |e, l| from_detach(e, l, false),
        },
        Test {
            name: "forward_v6_from_detach_owner_drops_early_packets",
            run: |e, l| from_detach(e, l, true),
        },
        Test {
            name: "forward_refusals",
            run: refusals,
        },
        Test {
            name: "forward_over_ynl_cli",
            run: over_ynl,
        },
        Test {
            name: "forward_loop_ends_at_ttl",
            run: forwarding_loop,
        },
    ]
}

const PORT: u16 = 8090;

/// A client connection to the VIP accepted on fe, and the `len`-byte request (stream
/// `seed`) fe has read from it.
fn requested(v6: bool, seed: u64, len: usize) -> Result<(TcpStream, TcpStream, Vec<u8>), String> {
    let (mut client, mut server) = connect_via_topology(v6, PORT, None)?;
    send_stream(&mut client, seed, len)?;
    let mut req = vec![0; len];
    server.read_exact(&mut req).map_err(|e| e.to_string())?;
    Ok((client, server, req))
}

/// RTO-driven retransmissions in the namespaces that hold the flow's ends.
fn timeouts() -> Result<[u64; 3], String> {
    Ok([
        tcp_ext_counter("client", "TCPTimeouts")?,
        tcp_ext_counter("be1", "TCPTimeouts")?,
        tcp_ext_counter("fe", "TCPTimeouts")?,
    ])
}

/// Packets the kernel's per-CPU input backlogs dropped so far (the second column of
/// /proc/net/softnet_stat, every namespace's veths included): an emulated CPU that
/// stalls in a burst overflows them.
fn backlog_drops() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum())
}

/// fe hands the connection to be1 and l4 never learns of it: every packet of the client
/// reaches be1 through fe. A keep-alive request right after the hop is answered within
/// milliseconds with no RTO anywhere, a megabyte moves each way in full-size segments
/// (fragmented in the tunnel), and the FIN handshake completes, with no RST anywhere
/// and no RTO unless the guest's input backlogs dropped packets (the megabyte is a
/// burst that a stalled emulated CPU can overflow them with; the module dropped
/// nothing if `forward_failed` stayed).
fn never_steered(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(v6)?;
    let rst_before = rsts_all()?;
    let rto_before = timeouts()?;
    let (mut client, server, req) = requested(v6, 40, 1_000)?;

    let before = cluster.nl("fe").info().map_err(|e| e.to_string())?.departed;
    let (mut owned, got, _) = cluster.hop_forwarded(log, server, "fe", "be1", &req)?;
    check!(got == req, "request changed on the control connection");

    // The answer to the first request: its ACKs come back through fe.
    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        expect_stream(&mut client, 41, 100_000)?;
        Ok(client)
    });
    send_stream(&mut owned, 41, 100_000)?;
    let mut client = reader.join().map_err(|_| "reader panicked".to_string())??;

    // A keep-alive request before any steering: it reaches be1 through fe.
    owned
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    send_stream(&mut client, 42, 500)?;
    expect_stream(&mut owned, 42, 500).map_err(|e| format!("be1 reads the keep-alive request: {e}"))?;
    let took = t0.elapsed();
    log.line(format!("keep-alive request forwarded to be1 in {took:?}"));
    check!(
        took < Duration::from_millis(200),
        "the keep-alive request took {took:?}: a retransmission timeout"
    );

    let rto_keepalive = timeouts()?;
    check!(
        rto_keepalive == rto_before,
        "retransmission timeouts before the megabyte: {rto_before:?} -> {rto_keepalive:?}"
    );
    let drops_before = backlog_drops()?;

    // A megabyte each way, in full-size segments: the tunnel fragments them.
    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        expect_stream(&mut owned, 43, 1 << 20)?;
        send_stream(&mut owned, 44, 1 << 20)?;
        Ok(owned)
    });
    send_stream(&mut client, 43, 1 << 20)?;
    expect_stream(&mut client, 44, 1 << 20)?;
    let mut owned = reader.join().map_err(|_| "writer panicked".to_string())??;

    // The close, never steered either.
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    owned
        .read_to_end(&mut rest)
        .map_err(|e| format!("be1 reads to EOF: {e}"))?;
    check!(rest.is_empty(), "{} stray bytes before EOF", rest.len());
    drop(owned);
    client
        .read_to_end(&mut rest)
        .map_err(|e| format!("client reads to EOF: {e}"))?;
    drop(client);
    for node in ["fe", "be1"] {
        wait(
            &format!("{node}'s sockets of the flow to finish"),
            Duration::from_secs(10),
            || flow_sockets(node, port).is_ok_and(|v| v.is_empty()),
        )?;
    }

    let after = cluster.nl("fe").info().map_err(|e| e.to_string())?.departed;
    log.line(format!("fe guard before {before:?}\nafter {after:?}"));
    let packets = after.forwarded - before.forwarded;
    let bytes = after.forwarded_bytes - before.forwarded_bytes;
    check!(
        bytes >= 1 << 20,
        "fe forwarded {bytes} bytes in {packets} packets, less than the client sent"
    );
    check!(after.forward_failed == before.forward_failed, "forwarding failed");
    no_rst_since(&rst_before)?;
    let rto_after = timeouts()?;
    let drops = backlog_drops()?.saturating_sub(drops_before);
    log.line(format!(
        "TCPTimeouts (client, be1, fe) {rto_before:?} -> {rto_keepalive:?} -> {rto_after:?}; \
         input backlogs dropped {drops} packets meanwhile"
    ));
    check!(
        rto_after == rto_keepalive || drops > 0,
        "retransmission timeouts with no packet dropped by an input backlog: \
         {rto_keepalive:?} -> {rto_after:?}"
    );
    Ok(())
}

/// Every malformed or pointless SOCK_FORWARD is refused with a reason.
fn refusals(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let (client, server, _req) = requested(false, 50, 100)?;
    let fe = cluster.nl("fe");
    let be1 = Ipv4Addr::new(10, 0, 2, 2);

    // A connection that is still here (a snapshot) is not departed.
    let snapshot = fe.export_snapshot(server.as_fd()).map_err(|e| e.to_string())?;
    expect_refusal(
        fe.forward(&snapshot, be1),
        libc::ENOENT,
        "no departed connection",
        log,
    )?;
    for bad in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST] {
        expect_refusal(fe.forward(&snapshot, bad), libc::EINVAL, "unicast IPv4", log)?;
    }
    let forward = u8::from(Command::SockForward);
    let attr = |kind: StateAttr, v: Vec<u8>| (u16::from(kind), v);
    let tuple = || {
        vec![
            attr(StateAttr::Family, (libc::AF_INET as u16).to_ne_bytes().to_vec()),
            attr(StateAttr::Saddr, vec![10, 100, 0, 1]),
            attr(StateAttr::Daddr, vec![10, 0, 0, 2]),
            attr(StateAttr::Sport, PORT.to_ne_bytes().to_vec()),
            attr(StateAttr::Dport, 40_000u16.to_ne_bytes().to_vec()),
        ]
    };
    expect_refusal(
        fe.raw_request(forward, &tuple()),
        libc::EINVAL,
        "missing attribute: forward-to",
        log,
    )?;
    let mut v6_len = tuple();
    v6_len[1].1 = vec![0; 16];
    v6_len.push(attr(StateAttr::ForwardTo, be1.octets().to_vec()));
    expect_refusal(
        fe.raw_request(forward, &v6_len),
        libc::EINVAL,
        "saddr: address length does not match the family",
        log,
    )?;
    let mut bad_family = tuple();
    bad_family[0].1 = 7u16.to_ne_bytes().to_vec();
    bad_family.push(attr(StateAttr::ForwardTo, be1.octets().to_vec()));
    expect_refusal(
        fe.raw_request(forward, &bad_family),
        libc::EAFNOSUPPORT,
        "family must be AF_INET or AF_INET6",
        log,
    )?;
    // Fixed-size attributes of the wrong size: the policy refuses them.
    for (at, len) in [(3usize, 4usize), (0, 1)] {
        let mut short = tuple();
        short[at].1 = vec![0; len];
        short.push(attr(StateAttr::ForwardTo, be1.octets().to_vec()));
        expect_refusal(
            fe.raw_request(forward, &short),
            libc::EINVAL,
            "invalid attribute length",
            log,
        )?;
    }
    let mut short_to = tuple();
    short_to.push(attr(StateAttr::ForwardTo, vec![10, 0]));
    expect_refusal(
        fe.raw_request(forward, &short_to),
        libc::EINVAL,
        "invalid attribute length",
        log,
    )?;
    // A blob attribute is not a SOCK_FORWARD attribute.
    let mut extra = tuple();
    extra.push(attr(StateAttr::ForwardTo, be1.octets().to_vec()));
    extra.push(attr(StateAttr::SndUna, 1u32.to_ne_bytes().to_vec()));
    let r = fe.raw_request(forward, &extra);
    log.line(format!("with snd-una: {r:?}"));
    check!(r.is_err(), "an attribute outside the request was accepted");

    // Departed, then imported back here: no longer departed.
    let state = fe.export_detach(server.as_fd()).map_err(|e| e.to_string())?;
    drop(server);
    fe.forward(&state, be1)
        .map_err(|e| format!("forward of a departed tuple: {e}"))?;
    let (back, _) = fe
        .import_stream(&state, &Default::default())
        .map_err(|e| e.to_string())?;
    expect_refusal(
        fe.forward(&state, be1),
        libc::ENOENT,
        "no departed connection",
        log,
    )?;
    // Another namespace's departed tuples are not this one's to forward.
    let state2 = fe.export_detach(back.as_fd()).map_err(|e| e.to_string())?;
    expect_refusal(
        cluster.nl("be1").forward(&state2, be1),
        libc::ENOENT,
        "no departed connection",
        log,
    )?;
    drop((back, client));
    Ok(())
}

/// fe forwards the flow to be1 and be1, which exported it again without an importer,
/// forwards it back to fe: each pass costs a packet one TTL, so it ends after at most
/// 64 passes, counted as a failed forward, and the hosts stay well.
fn forwarding_loop(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let (mut client, server, req) = requested(false, 60, 100)?;
    let (owned, _, _) = cluster.hop_forwarded(log, server, "fe", "be1", &req)?;
    let again = cluster
        .nl("be1")
        .export_detach(owned.as_fd())
        .map_err(|e| e.to_string())?;
    drop(owned);
    cluster
        .nl("be1")
        .forward(&again, Ipv4Addr::new(10, 0, 1, 2))
        .map_err(|e| e.to_string())?;
    let failed = || -> Result<u64, String> {
        let mut sum = 0;
        for node in ["fe", "be1"] {
            sum += cluster
                .nl(node)
                .info()
                .map_err(|e| e.to_string())?
                .departed
                .forward_failed;
        }
        Ok(sum)
    };
    let before = failed()?;
    send_stream(&mut client, 61, 10)?;
    wait(
        "the looping packet to run out of TTL",
        Duration::from_secs(10),
        || failed().is_ok_and(|f| f > before),
    )?;
    let info = |n: &str| cluster.nl(n).info().map(|i| i.departed);
    log.line(format!("fe {:?}\nbe1 {:?}", info("fe"), info("be1")));
    // The client's connection is abandoned with the topology; no host answered it
    // (the dmesg_clean test at the end of the run checks the kernel's log).
    Ok(())
}

/// The kernel's YNL CLI, reading only the spec, starts forwarding: the spec's encoding
/// of the tuple and of `forward-to` (a big-endian u32) is the module's.
fn over_ynl(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let (mut client, server, _req) = requested(false, 70, 100)?;
    let state = cluster
        .nl("fe")
        .export_detach(server.as_fd())
        .map_err(|e| e.to_string())?;
    drop(server);
    let (mut owned, _) = cluster
        .nl("be1")
        .import_stream(&state, &Default::default())
        .map_err(|e| e.to_string())?;
    let d = state.decode().map_err(|e| e.to_string())?;
    let (Some(local), Some(peer)) = (d.local, d.peer) else {
        return Err("the blob has no addresses".into());
    };
    let hex = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) => a.octets().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        std::net::IpAddr::V6(a) => a.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    let request = |to: u32| {
        format!(
            r#"{{"family": {}, "saddr": "{}", "daddr": "{}", "sport": {}, "dport": {}, "forward-to": {to}}}"#,
            libc::AF_INET,
            hex(local.ip()),
            hex(peer.ip()),
            local.port(),
            peer.port()
        )
    };
    let be1 = u32::from(Ipv4Addr::new(10, 0, 2, 2));
    let ns = ["ip", "netns", "exec", "fe"];
    super::foundation::ynl(env, log, &ns, &["--do", "sock-forward", "--json", &request(be1)])?;
    // The client's next bytes reach be1 through fe. At once: a CLI call takes seconds
    // under TCG, and the departed entry expires 30 s after the export.
    owned
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    send_stream(&mut client, 71, 3_000)?;
    expect_stream(&mut owned, 71, 3_000)?;
    let info = cluster.nl("fe").info().map_err(|e| e.to_string())?.departed;
    check!(info.forwarded > 0, "nothing forwarded: {info:?}");
    // Another tuple is not departed: the CLI reports the module's reason.
    let other = request(be1).replace(&format!("\"dport\": {}", peer.port()), "\"dport\": 1");
    let refused = super::foundation::ynl(env, log, &ns, &["--do", "sock-forward", "--json", &other]);
    // The CLI prints the error with the extack message, then fails (6.12's as
    // `extack: {'msg': ...}`, 7.x's as `Netlink error: MSG: ...`).
    check!(
        refused.is_err() && log.text().contains("no departed connection with this tuple here"),
        "sock-forward of an unknown tuple: {refused:?}"
    );
    Ok(())
}

/// fe's DETACH names be1, so forwarding starts before be1 has imported. What the client
/// sends in between reaches be1 through the tunnel and finds no socket: be1's module
/// drops it (no RST), and the client's retransmission is delivered after the import.
fn from_detach(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(v6)?;
    let rst_before = rsts_all()?;
    let (mut client, server, _req) = requested(v6, 80, 1_000)?;
    let before = cluster.nl("be1").info().map_err(|e| e.to_string())?.departed;
    let state = cluster
        .nl("fe")
        .export_detach_to(server.as_fd(), Ipv4Addr::new(10, 0, 2, 2))
        .map_err(|e| format!("export with forward-to: {e}"))?;
    drop(server);
    send_stream(&mut client, 81, 2_000)?;
    wait("be1 to drop the early packet", Duration::from_secs(10), || {
        cluster
            .nl("be1")
            .info()
            .is_ok_and(|i| i.departed.forwarded_unowned > before.forwarded_unowned)
    })?;
    let (mut owned, _) = cluster
        .nl("be1")
        .import_stream(&state, &Default::default())
        .map_err(|e| e.to_string())?;
    owned
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    expect_stream(&mut owned, 81, 2_000).map_err(|e| format!("be1 reads the retransmission: {e}"))?;
    send_stream(&mut owned, 82, 50_000)?;
    expect_stream(&mut client, 82, 50_000)?;
    let after = cluster.nl("be1").info().map_err(|e| e.to_string())?.departed;
    log.line(format!("guard before {before:?}\nafter {after:?}"));
    no_rst_since(&rst_before)?;
    Ok(())
}
