//! SOCK_EXPORT with DETACH + SOCK_IMPORT across the topology: a client talks to the VIP,
//! fe hands the connection to be1 (and on), l4 steers the flow, every byte is checked,
//! no host sends a RST, nothing leaks.

use super::common::loaded;
use super::export::{connect_via_topology, wait_for, write_until_window_closes};
use crate::check;
use crate::harness::{sh, Env, Log, TestResult};
use crate::migrate::{expect_stream, flow_sockets, no_rst_since, rsts_all, send_stream, Cluster};
use crate::sockopt::queued;
use crate::topology::{self, Topology};
use prism_sock::{DecodedState, ImportOptions};
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

use crate::harness::Test;

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "migrate_v4_empty_queues",
            run: |e, l| scenario(e, l, &Case::default()),
        },
        Test {
            name: "migrate_v6_empty_queues",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        v6: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v4_unread_request",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        unread: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v6_unread_request",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        v6: true,
                        unread: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v4_in_flight_unacked",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        in_flight: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v6_in_flight_unacked",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        v6: true,
                        in_flight: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v4_unsent_window_closed",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        unsent: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v6_unsent_window_closed",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        v6: true,
                        unsent: true,
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v4_timestamps_off",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        sysctl: &["net.ipv4.tcp_timestamps=0"],
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v4_sack_off",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        sysctl: &["net.ipv4.tcp_sack=0"],
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v6_small_window_scale",
            run: |e, l| {
                scenario(
                    e,
                    l,
                    &Case {
                        v6: true,
                        client_rcvbuf: Some(4096),
                        wscale: Some(0),
                        ..Case::default()
                    },
                )
            },
        },
        Test {
            name: "migrate_v4_large_window_scale",
            run: |e, l| {
                let case = Case {
                    sysctl: &["net.ipv4.tcp_rmem=4096 131072 268435456"],
                    wscale: Some(13),
                    response: 4 << 20,
                    ..Case::default()
                };
                scenario(e, l, &case)
            },
        },
        Test {
            name: "migrate_v4_client_closes_right_after",
            run: |e, l| client_closes(e, l, false),
        },
        Test {
            name: "migrate_v6_client_closes_right_after",
            run: |e, l| client_closes(e, l, true),
        },
        Test {
            name: "migrate_v4_transparent_vip_not_local",
            run: |e, l| transparent(e, l, false),
        },
        Test {
            name: "migrate_v6_transparent_vip_not_local",
            run: |e, l| transparent(e, l, true),
        },
    ]
}

const PORT: u16 = 8080;

/// be2 does not hold the VIP. A TPROXY-style policy rule delivers the VIP's packets
/// locally without making it a local address, and the import owns the VIP with
/// IP_TRANSPARENT: refused without it, a working connection with it.
fn transparent(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let (fam, host) = if v6 { ("-6", 128) } else { ("-4", 32) };
    let vip = format!("{}/{host}", topology::vip(v6));
    for cmd in [
        format!("-n be2 {fam} addr del {vip} dev vip0"),
        format!("-n be2 {fam} rule add to {vip} lookup 200 pref 50"),
        format!("-n be2 {fam} route add local {vip} dev lo table 200"),
    ] {
        sh(log, "ip", &cmd.split(' ').collect::<Vec<_>>())?;
    }
    let mut cluster = Cluster::new(v6)?;
    let rst_before = rsts_all()?;
    let (mut client, mut server) = connect_via_topology(v6, PORT, None)?;
    send_stream(&mut client, 30, 2_000)?;
    let mut req = vec![0; 2_000];
    server.read_exact(&mut req).map_err(|e| e.to_string())?;

    let snapshot = cluster
        .nl("fe")
        .export_snapshot(server.as_fd())
        .map_err(|e| e.to_string())?;
    let refused = cluster.nl("be2").import(&snapshot, &ImportOptions::default());
    super::common::expect_refusal(refused, libc::EADDRNOTAVAIL, "freebind", log)?;
    if !v6 {
        // Freebind binds the address, but IPv4 routes nothing from it without
        // transparent: refused with the kernel's errno and a message that says so.
        let freebind = ImportOptions {
            freebind: true,
            ..ImportOptions::default()
        };
        let refused = cluster.nl("be2").import(&snapshot, &freebind);
        super::common::expect_refusal(refused, libc::ENETUNREACH, "ask for transparent", log)?;
    }

    let opts = ImportOptions {
        transparent: true,
        ..ImportOptions::default()
    };
    let (mut owned, got, _) = cluster.hop_with(log, server, "fe", "be2", &req, &opts)?;
    check!(got == req, "request changed on the control connection");
    check!(
        crate::sockopt::get_int(
            owned.as_fd(),
            if v6 { libc::SOL_IPV6 } else { libc::SOL_IP },
            if v6 {
                libc::IPV6_TRANSPARENT
            } else {
                libc::IP_TRANSPARENT
            },
        ) == Ok(1),
        "imported socket is not transparent"
    );
    let local = owned.local_addr().map_err(|e| e.to_string())?;
    check!(local.ip() == topology::vip(v6), "bound to {local}");
    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        expect_stream(&mut client, 31, 200_000)?;
        Ok(client)
    });
    send_stream(&mut owned, 31, 200_000)?;
    let mut client = reader.join().map_err(|_| "reader panicked".to_string())??;
    send_stream(&mut client, 32, 5_000)?;
    expect_stream(&mut owned, 32, 5_000)?;
    finish(log, client, owned, &rst_before, &cluster)
}

/// One migration scenario: what state the connection is in when fe hands it off.
#[derive(Default)]
struct Case {
    v6: bool,
    /// sysctls set in the client's namespace before it connects.
    sysctl: &'static [&'static str],
    client_rcvbuf: Option<i32>,
    /// fe leaves the request in its receive queue: it travels in the blob.
    unread: bool,
    /// fe's response is in flight, unacknowledged (the client's ACKs are held).
    in_flight: bool,
    /// fe's response does not fit the client's window: part of it is unsent.
    unsent: bool,
    /// The peer's window scale the blob must show.
    wscale: Option<u8>,
    /// Bytes be1 answers with (100 000 unless set).
    response: usize,
}

fn client_sysctls(log: &mut Log, sysctl: &[&str]) -> TestResult {
    for s in sysctl {
        sh(log, "ip", &["netns", "exec", "client", "sysctl", "-qw", s])?;
    }
    Ok(())
}

/// Holds (or releases) the client's outgoing segments to the VIP's `port`: its ACKs stop.
pub(super) fn hold_client_acks(log: &mut Log, hold: bool, port: u16) -> TestResult {
    if hold {
        let rules = format!(
            "add table inet hold\nadd chain inet hold out {{ type filter hook output priority 0; }}\n\
             add rule inet hold out tcp dport {port} drop\n"
        );
        let path = "/tmp/prism-hold.nft";
        std::fs::write(path, rules).map_err(|e| e.to_string())?;
        sh(log, "ip", &["netns", "exec", "client", "nft", "-f", path]).map(|_| ())
    } else {
        sh(
            log,
            "ip",
            &[
                "netns", "exec", "client", "nft", "delete", "table", "inet", "hold",
            ],
        )
        .map(|_| ())
    }
}

fn scenario(env: &Env, log: &mut Log, case: &Case) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    client_sysctls(log, case.sysctl)?;
    let mut cluster = Cluster::new(case.v6)?;
    let rst_before = rsts_all()?;
    let (mut client, mut server) = connect_via_topology(case.v6, PORT, case.client_rcvbuf)?;

    let request_len = if case.unread { 50_000 } else { 1_000 };
    send_stream(&mut client, 10, request_len)?;
    let forwarded = if case.unread {
        wait_for("the request in fe's receive queue", || {
            queued(server.as_fd(), false) == request_len as i32
        })?;
        Vec::new()
    } else {
        let mut r = vec![0; request_len];
        server.read_exact(&mut r).map_err(|e| e.to_string())?;
        r
    };

    // fe starts answering before the hand-off in the in-flight and unsent cases.
    let mut early = 0usize;
    if case.in_flight {
        hold_client_acks(log, true, PORT)?;
        early = 20_000;
        send_stream(&mut server, 11, early)?;
        wait_for("unacknowledged data on fe", || {
            std::thread::sleep(Duration::from_millis(100));
            queued(server.as_fd(), true) == early as i32
        })?;
    }
    if case.unsent {
        let data = crate::migrate::pattern_at(11, 0, 600_000);
        early += write_until_window_closes(&mut server, &data[early..])?;
    }

    let snapshot = cluster
        .nl("fe")
        .export_snapshot(server.as_fd())
        .map_err(|e| e.to_string())?;
    let d = snapshot.decode().map_err(|e| e.to_string())?;
    log.line(format!("state before the hand-off: {d:?}"));
    check_case(case, &d, request_len)?;

    let (mut owned, got_request, _) = cluster.hop(log, server, "fe", "be1", &forwarded)?;
    if case.in_flight {
        hold_client_acks(log, false, PORT)?;
    }
    if case.unread {
        expect_stream(&mut owned, 10, request_len)?;
    } else {
        check!(
            got_request == forwarded,
            "request changed on the control connection"
        );
    }

    // be1 answers from the VIP; the client reads fe's part first, then be1's.
    let response = if case.response == 0 {
        100_000
    } else {
        case.response
    };
    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        if early > 0 {
            expect_stream(&mut client, 11, early)?;
        }
        expect_stream(&mut client, 12, response)?;
        Ok(client)
    });
    send_stream(&mut owned, 12, response)?;
    let mut client = reader.join().map_err(|_| "reader panicked".to_string())??;
    log.line(format!("client got {early} + {response} bytes intact"));

    // The next request on the same connection reaches be1.
    send_stream(&mut client, 13, 5_000)?;
    expect_stream(&mut owned, 13, 5_000)?;
    send_stream(&mut owned, 14, 5_000)?;
    expect_stream(&mut client, 14, 5_000)?;

    finish(log, client, owned, &rst_before, &cluster)
}

/// Checks the blob shows the state the case set up.
fn check_case(case: &Case, d: &DecodedState, request_len: usize) -> TestResult {
    if case.unread {
        check!(
            d.recv_queue.len() == request_len,
            "recv queue {}",
            d.recv_queue.len()
        );
    } else {
        check!(d.recv_queue.is_empty(), "recv queue {}", d.recv_queue.len());
    }
    let sent = d.snd_nxt.wrapping_sub(d.snd_una);
    let unsent = d.write_seq.wrapping_sub(d.snd_nxt);
    if case.in_flight {
        check!(sent > 0, "nothing in flight");
    }
    if case.unsent {
        check!(unsent > 0, "nothing unsent (in flight {sent})");
    }
    if !case.in_flight && !case.unsent {
        check!(d.send_queue.is_empty(), "send queue {}", d.send_queue.len());
    }
    for s in case.sysctl {
        if s.contains("tcp_timestamps=0") {
            check!(!d.timestamps, "timestamps on");
        }
        if s.contains("tcp_sack=0") {
            check!(!d.sack, "sack on");
        }
    }
    if !case.sysctl.iter().any(|s| s.contains("tcp_timestamps=0")) {
        check!(d.timestamps, "timestamps off");
    }
    if let Some(ws) = case.wscale {
        check!(
            d.wscale_ok && d.snd_wscale == ws,
            "peer window scale {}",
            d.snd_wscale
        );
    }
    Ok(())
}

/// Client and owner close; checks the FIN exchange ended, no RST anywhere, no leak.
fn finish(
    log: &mut Log,
    mut client: TcpStream,
    mut owned: TcpStream,
    rst_before: &[(&str, u64)],
    cluster: &Cluster,
) -> TestResult {
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    owned
        .read_to_end(&mut rest)
        .map_err(|e| format!("owner read to EOF: {e}"))?;
    check!(rest.is_empty(), "{} stray bytes before EOF", rest.len());
    drop(owned);
    client
        .read_to_end(&mut rest)
        .map_err(|e| format!("client read to EOF: {e}"))?;
    check!(rest.is_empty(), "{} stray bytes before EOF", rest.len());
    drop(client);
    flow_gone(port)?;
    let rst_after = rsts_all()?;
    log.line(format!("RSTs sent before {rst_before:?} after {rst_after:?}"));
    check!(
        rst_after == rst_before,
        "a host sent RST: {rst_before:?} -> {rst_after:?}"
    );
    let info = cluster.nl("fe").info().map_err(|e| e.to_string())?;
    log.line(format!("fe guard: {:?}", info.departed));
    Ok(())
}

/// Waits until no node holds a socket of the client's flow (TIME_WAIT aside): the FIN
/// exchange completed and nothing leaked.
fn flow_gone(port: u16) -> TestResult {
    for node in crate::topology::NODES {
        wait_for(&format!("{node}'s sockets of the flow to finish"), || {
            flow_sockets(node, port).map(|v| v.is_empty()).unwrap_or(false)
        })?;
    }
    Ok(())
}

/// The client closes its side right after the hand-off: the FIN reaches be1, which
/// answers and closes; the FIN exchange completes there.
fn client_closes(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(v6)?;
    let rst_before = rsts_all()?;
    let (mut client, mut server) = connect_via_topology(v6, PORT, None)?;
    send_stream(&mut client, 20, 3_000)?;
    let mut req = vec![0; 3_000];
    server.read_exact(&mut req).map_err(|e| e.to_string())?;
    let (mut owned, _, _) = cluster.hop(log, server, "fe", "be1", &req)?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    owned
        .read_to_end(&mut rest)
        .map_err(|e| format!("be1 read to EOF: {e}"))?;
    check!(rest.is_empty(), "stray bytes");
    send_stream(&mut owned, 21, 50_000)?;
    drop(owned);
    expect_stream(&mut client, 21, 50_000)?;
    client.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    check!(rest.is_empty(), "stray bytes after the response");
    drop(client);
    flow_gone(port)?;
    no_rst_since(&rst_before)?;
    Ok(())
}
