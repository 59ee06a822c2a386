//! The connection after a move is the connection it was: segment size, timestamp clock
//! and round-trip estimate survive the hop, and ACKs lost during the hop cost no
//! retransmission timeout.

use super::common::loaded;
use super::export::{connect_via_topology, wait_for};
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};
use crate::migrate::{expect_stream, send_stream, tcp_ext_counter, Cluster};
use crate::sockopt::{get_int, queued, tcp_info_ext};
use crate::topology::Topology;
use prism_sock::ImportOptions;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "state_v4_mss_kept",
            run: |e, l| mss_kept(e, l, false),
        },
        Test {
            name: "state_v6_mss_kept",
            run: |e, l| mss_kept(e, l, true),
        },
        Test {
            name: "state_v4_usec_timestamps_to_ms_route",
            run: |e, l| timestamp_clock(e, l, "fe"),
        },
        Test {
            name: "state_v4_ms_timestamps_to_usec_route",
            run: |e, l| timestamp_clock(e, l, "be1"),
        },
        Test {
            name: "state_v4_acks_lost_in_hop_recover_fast",
            run: |e, l| acks_lost(e, l, false),
        },
        Test {
            name: "state_v6_acks_lost_in_hop_recover_fast",
            run: |e, l| acks_lost(e, l, true),
        },
        Test {
            name: "state_v4_idle_hop_sends_no_window_probe",
            run: |e, l| idle_hop(e, l, false),
        },
    ]
}

const PORT: u16 = 8090;

/// A connection through the VIP that has carried a request and a response, so its
/// MSS, window and round-trip estimate are settled; (client, fe's socket).
fn settled(v6: bool) -> Result<(TcpStream, TcpStream), String> {
    let (mut client, mut server) = connect_via_topology(v6, PORT, None)?;
    send_stream(&mut client, 40, 3_000)?;
    expect_stream(&mut server, 40, 3_000)?;
    send_stream(&mut server, 41, 100_000)?;
    expect_stream(&mut client, 41, 100_000)?;
    Ok((client, server))
}

/// The imported socket sends segments of the size the exported one used (TCP_INFO
/// snd_mss, the MSS clamp a second export shows, and the mean payload of the data
/// segments that carry 1 MiB).
fn mss_kept(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(v6)?;
    let (mut client, server) = settled(v6)?;
    let before = tcp_info_ext(server.as_fd());
    let exported = cluster
        .nl("fe")
        .export_snapshot(server.as_fd())
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let (mut owned, _, _) = cluster.hop(log, server, "fe", "be1", &[])?;
    let after = tcp_info_ext(owned.as_fd());
    let again = cluster
        .nl("be1")
        .export_snapshot(owned.as_fd())
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    log.line(format!(
        "snd_mss {} -> {}, mss_clamp {} -> {}",
        before.snd_mss, after.snd_mss, exported.mss_clamp, again.mss_clamp
    ));
    check!(
        after.snd_mss == before.snd_mss,
        "snd_mss {} after the hop, {} before",
        after.snd_mss,
        before.snd_mss
    );
    check!(
        again.mss_clamp == exported.mss_clamp,
        "mss_clamp {} after the hop, {} before",
        again.mss_clamp,
        exported.mss_clamp
    );

    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        expect_stream(&mut client, 42, 1 << 20)?;
        Ok(client)
    });
    send_stream(&mut owned, 42, 1 << 20)?;
    let _client = reader.join().map_err(|_| "reader panicked".to_string())??;
    let sent = tcp_info_ext(owned.as_fd());
    let segs = sent.data_segs_out - after.data_segs_out;
    let bytes = sent.bytes_sent - after.bytes_sent;
    let mean = bytes / u64::from(segs.max(1));
    log.line(format!(
        "1 MiB after the hop: {bytes} bytes in {segs} data segments, {mean} on average"
    ));
    // Pushes at write boundaries leave a few short segments; a clamp of 536 would make
    // every one at most 524 bytes.
    check!(
        mean * 100 >= u64::from(before.snd_mss) * 90,
        "segments of {mean} bytes on average, snd_mss was {}",
        before.snd_mss
    );
    Ok(())
}

/// `TCP_TIMESTAMP` as the socket reports it: clock value with the offset, low bit set
/// when the clock counts microseconds.
fn ts_value(sock: &TcpStream) -> Result<u32, String> {
    get_int(sock.as_fd(), libc::IPPROTO_TCP, libc::TCP_TIMESTAMP)
        .map(|v| v as u32)
        .map_err(|e| format!("TCP_TIMESTAMP: errno {e}"))
}

/// Only `usec_node`'s route to the client has `features tcp_usec_ts`. The connection
/// keeps the clock it started with on fe: after the import on be1 the socket reports
/// the same clock, continuing from fe's value, and the client drops no more segments
/// as PAWS-old than reordering explains.
fn timestamp_clock(env: &Env, log: &mut Log, usec_node: &str) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    Topology::client_route_usec_ts(usec_node, false)?;
    let mut cluster = Cluster::new(false)?;
    let (mut client, server) = settled(false)?;
    let usec = usec_node == "fe";
    let ts_fe = ts_value(&server)?;
    check!(
        (ts_fe & 1 == 1) == usec,
        "fe's clock: TCP_TIMESTAMP {ts_fe:#x}, microseconds expected: {usec}"
    );
    let paws_before = tcp_ext_counter("client", "PAWSEstab")?;
    let probes_before = tcp_ext_counter("be1", "TCPLossProbes")?;
    let (mut owned, _, _) = cluster.hop(log, server, "fe", "be1", &[])?;
    let ts_be1 = ts_value(&owned)?;
    let ahead = ts_be1.wrapping_sub(ts_fe) as i32;
    log.line(format!(
        "TCP_TIMESTAMP fe {ts_fe:#x}, be1 after import {ts_be1:#x}, {ahead} ticks later"
    ));
    check!(
        (ts_be1 & 1) == (ts_fe & 1),
        "clock changed in the hop: {ts_fe:#x} -> {ts_be1:#x}"
    );
    // Ticks are microseconds or milliseconds; the hop took well under 30 s of either.
    let limit = if usec { 30_000_000 } else { 30_000 };
    check!(
        (0..limit).contains(&ahead),
        "timestamp jumped by {ahead} ticks in the hop"
    );
    let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
        expect_stream(&mut client, 43, 300_000)?;
        send_stream(&mut client, 44, 50_000)?;
        Ok(client)
    });
    send_stream(&mut owned, 43, 300_000)?;
    expect_stream(&mut owned, 44, 50_000)?;
    let _client = reader.join().map_err(|_| "reader panicked".to_string())??;
    let paws = tcp_ext_counter("client", "PAWSEstab")? - paws_before;
    let probes = tcp_ext_counter("be1", "TCPLossProbes")? - probes_before;
    log.line(format!(
        "segments the client dropped as PAWS-old: {paws}; be1's loss probes: {probes}"
    ));
    // A clock that ran behind fe's would make the client drop every segment of be1's
    // until it caught up: hundreds for these 300 KB, and a stalled stream. One or two
    // are ordinary: an original transmission that the emulated network reordered
    // behind its (early, RTT-timed) retransmission carries the older timestamp.
    check!(paws <= 2, "the client dropped {paws} segments as PAWS-old");
    Ok(())
}

/// Bytes in flight while the client's ACKs are held.
const IN_FLIGHT: usize = 12_000;

/// fe's response is unacknowledged when it exports, and the client's ACKs for it never
/// arrive anywhere (dropped at the client while fe hands off). The owner's window probe
/// at the end of repair, or a loss probe timed by the restored RTT, gets them again at
/// once instead of after a 1 s retransmission timeout.
fn acks_lost(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(v6)?;
    let (mut client, mut server) = settled(v6)?;
    let rtt = crate::sockopt::tcp_info(server.as_fd()).tcpi_rtt;
    super::migration::hold_client_acks(log, true, PORT)?;
    // Within the initial window: the nft call above may take longer than an RTO under
    // TCG, and after that idle time the window restarts from ten segments.
    send_stream(&mut server, 45, IN_FLIGHT)?;
    wait_for("fe's response to reach the client", || {
        std::thread::sleep(Duration::from_millis(20));
        queued(client.as_fd(), false) == IN_FLIGHT as i32
    })?;
    check!(
        queued(server.as_fd(), true) == IN_FLIGHT as i32,
        "fe saw ACKs through the hold"
    );
    let peer = server.peer_addr().map_err(|e| e.to_string())?;
    let state = cluster
        .nl("fe")
        .export_detach(server.as_fd())
        .map_err(|e| e.to_string())?;
    drop(server);
    super::migration::hold_client_acks(log, false, PORT)?;
    // The flow reaches be1 before the socket exists there; the client is silent.
    Topology::steer_flow(log, v6, peer.port(), "be1", true)?;
    let start = Instant::now();
    let probes = tcp_ext_counter("be1", "TCPWinProbe")?;
    let (owned, _) = cluster
        .nl("be1")
        .import_stream(&state, &ImportOptions::default())
        .map_err(|e| e.to_string())?;
    let probes = tcp_ext_counter("be1", "TCPWinProbe")? - probes;
    check!(probes == 1, "the import sent {probes} window probes, not 1");
    let mut waited = Duration::ZERO;
    while queued(owned.as_fd(), true) != 0 {
        waited = start.elapsed();
        check!(
            waited < Duration::from_secs(5),
            "the response is still unacknowledged after 5 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let info = tcp_info_ext(owned.as_fd());
    log.line(format!(
        "acknowledged {waited:?} after the import (rtt before {rtt} us, retransmissions {})",
        info.total_retrans
    ));
    check!(
        waited < Duration::from_millis(400),
        "the owner waited {waited:?} for ACKs the hop lost"
    );
    expect_stream(&mut client, 45, IN_FLIGHT)?;
    let mut owned = owned;
    send_stream(&mut owned, 46, 10_000)?;
    expect_stream(&mut client, 46, 10_000)?;
    Ok(())
}

/// With nothing in flight and the peer's window open, the peer's answer to a window
/// probe would teach the imported socket nothing: the import leaves repair mode without
/// one, and the connection carries data both ways at once.
fn idle_hop(env: &Env, log: &mut Log, v6: bool) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(v6)?;
    let (mut client, server) = settled(v6)?;
    wait_for("fe's response to be acknowledged", || {
        std::thread::sleep(Duration::from_millis(5));
        queued(server.as_fd(), true) == 0
    })?;
    let peer = server.peer_addr().map_err(|e| e.to_string())?;
    let state = cluster
        .nl("fe")
        .export_detach(server.as_fd())
        .map_err(|e| e.to_string())?;
    drop(server);
    Topology::steer_flow(log, v6, peer.port(), "be1", true)?;
    let probes = tcp_ext_counter("be1", "TCPWinProbe")?;
    let (mut owned, _) = cluster
        .nl("be1")
        .import_stream(&state, &ImportOptions::default())
        .map_err(|e| e.to_string())?;
    let probes = tcp_ext_counter("be1", "TCPWinProbe")? - probes;
    check!(
        probes == 0,
        "an idle connection's import sent {probes} window probes"
    );
    let start = Instant::now();
    send_stream(&mut client, 47, 5_000)?;
    expect_stream(&mut owned, 47, 5_000)?;
    send_stream(&mut owned, 48, 50_000)?;
    expect_stream(&mut client, 48, 50_000)?;
    let took = start.elapsed();
    check!(
        took < Duration::from_millis(400),
        "a request and response after the hop took {took:?}"
    );
    Ok(())
}
