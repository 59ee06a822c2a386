//! The user-space `repair` backend, with the module unloaded: a connection with bytes
//! in every queue (the client's unread request, the server's sent-but-unacked and
//! never-sent data behind a closed window) moves from fe to be1 with TCP_REPAIR alone.
//! l4 drops the flow during the hand-off (there is no RST guard without the module).

use super::export::{connect_via_topology, write_until_window_closes};
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};
use crate::migrate::{expect_stream, pattern_at, rsts_all, send_stream};
use crate::module;
use crate::topology::{in_ns, Topology};
use prism_sock::repair::{self, RepairState};
use prism_sock::{Client, Error, ImportOptions};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "repair_backend_unsent_behind_closed_window_v4",
            run: |e, l| migrate(e, l, false, false),
        },
        Test {
            name: "repair_backend_sent_unacked_v6",
            run: |e, l| migrate(e, l, true, true),
        },
    ]
}

/// `unacked`: the server's data is sent while l4 drops the client's ACKs, so the send
/// queue is all sent-but-unacknowledged; else it sits unsent behind a closed window.
fn migrate(_env: &Env, log: &mut Log, v6: bool, unacked: bool) -> TestResult {
    module::unload_if_loaded()?;
    check!(
        matches!(Client::connect(), Err(Error::ModuleNotLoaded)),
        "the module is still loaded"
    );
    check!(
        matches!(prism_sock::Backend::auto(), Ok(prism_sock::Backend::Repair)),
        "Backend::auto() did not pick repair without the module"
    );
    let _t = Topology::up()?;
    let port = 9500;
    let (mut client, mut server) = connect_via_topology(v6, port, (!unacked).then_some(4096))?;
    let request = pattern_at(1, 0, 3000);
    client.write_all(&request).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(300));
    let rsts = rsts_all()?;
    let client_port = client.local_addr().map_err(|e| e.to_string())?.port();
    let data = pattern_at(2, 0, 400_000);
    let written = if unacked {
        Topology::hold_flow(log, client_port, true)?;
        server.write_all(&data[..30_000]).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        30_000
    } else {
        // The client does not read: the window closes and the rest stays unsent.
        let n = write_until_window_closes(&mut server, &data)?;
        Topology::hold_flow(log, client_port, true)?;
        n
    };
    log.line(format!("server queued {written} bytes"));
    let state = repair::export_detach(&server).map_err(|e| format!("export: {e}"))?;
    log.line(format!(
        "exported: send queue {} ({} unsent), receive queue {}, mss {}, wscale {:?}, sack {}, ts {:?}",
        state.send_queue.len(),
        state.unsent,
        state.recv_queue.len(),
        state.mss,
        state.wscale,
        state.sack,
        state.timestamp
    ));
    check!(state.recv_queue == request, "receive queue is not the request");
    // The client acked (and buffers) the first bytes: the rest is the send queue.
    check!(
        !state.send_queue.is_empty() && state.send_queue.len() <= written,
        "send queue {} of {written}",
        state.send_queue.len()
    );
    if unacked {
        // ACKs dropped: part of the data went out (up to the congestion window) and
        // waits for an ACK, the rest was never sent.
        let sent = state.send_queue.len() - state.unsent as usize;
        check!(
            state.send_queue.len() == written && sent > 0 && state.unsent > 0,
            "expected {written} queued, sent and unsent: {} queued, {} unsent",
            state.send_queue.len(),
            state.unsent
        );
    } else {
        check!(
            state.unsent > 0,
            "nothing unsent: the closed-window case was not reached"
        );
    }
    drop(server);
    let bytes = state.to_bytes();
    crate::topology::Topology::route_vip(log, "be1")?;
    let mut moved = in_ns("be1", move || -> Result<TcpStream, String> {
        let state = RepairState::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let fd = repair::import(&state, &ImportOptions::default()).map_err(|e| format!("import: {e}"))?;
        Ok(TcpStream::from(fd))
    })??;
    Topology::hold_flow(log, client_port, false)?;
    let mut got = vec![0u8; request.len()];
    moved
        .read_exact(&mut got)
        .map_err(|e| format!("be1 reads the request: {e}"))?;
    check!(got == request, "be1 read another request");
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut seen = vec![0u8; written];
    client
        .read_exact(&mut seen)
        .map_err(|e| format!("client reads the queued data: {e}"))?;
    check!(
        seen == data[..written],
        "client got other bytes than the server queued"
    );
    let there = send_stream(&mut moved, 3, 200_000)?;
    let here = expect_stream(&mut client, 3, 200_000)?;
    check!(there == here, "after the move: bytes differ");
    let up = send_stream(&mut client, 4, 50_000)?;
    moved
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    check!(
        expect_stream(&mut moved, 4, 50_000)? == up,
        "client to be1 bytes differ"
    );
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    moved.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    drop(moved);
    let mut end = Vec::new();
    client
        .read_to_end(&mut end)
        .map_err(|e| format!("client sees the close: {e}"))?;
    let after = rsts_all()?;
    check!(
        after == rsts,
        "a host sent a RST: before {rsts:?}, after {after:?}"
    );
    Ok(())
}
