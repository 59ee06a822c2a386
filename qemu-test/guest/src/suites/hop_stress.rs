//! Hops under stress, one connection moving fe -> be1 -> be2 -> fe ... with the client
//! writing and reading all along and data unread and unacknowledged at every hop; every
//! byte is checked and no host may send a RST:
//! - over a bad link: `tc netem` drops, reorders and duplicates the client's packets
//!   both ways (`PRISM_NETEM_HOPS` sets the hop count; `make test-long` runs 10,000);
//! - with the client writing as fast as TCP takes it, so hops carry full windows;
//! - with failing allocations: failslab fails 3% of the kernel's slab allocations in
//!   the hop's export and import calls, which are made again until they pass (a failed
//!   export leaves the socket as it was, a failed import leaves nothing).

use super::common::loaded;
use super::export::connect_via_topology;
use super::faults::{Knobs, MakeItFail};
use crate::check;
use crate::harness::{sh, Env, Log, Test, TestResult};
use crate::migrate::{pattern_at, rsts_all, tcp_ext_counter, Cluster, Retries};
use crate::sockopt::{queued, set_int};
use crate::topology::Topology;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "hops_v4_under_loss_reordering_duplication",
            run: |e, l| hops_over(e, l, LOSSY),
        },
        Test {
            name: "hops_v4_while_client_sends_at_full_rate",
            run: |e, l| hops_over(e, l, FULL_RATE),
        },
        Test {
            name: "hops_v4_under_failing_allocations",
            run: |e, l| hops_over(e, l, FAILING_ALLOCATIONS),
        },
    ]
}

/// How the client and the link behave while the connection hops.
#[derive(Clone, Copy)]
struct Run {
    /// `tc netem` on the client's link, both ways.
    netem: bool,
    /// The client writes as fast as TCP takes it, instead of 700 bytes every 3 ms.
    full_rate: bool,
    /// failslab fails some of the export's and import's allocations.
    failing_allocations: bool,
    /// Hops of the suite's run (`PRISM_NETEM_HOPS` sets the lossy run's).
    hops: usize,
    port: u16,
}

const LOSSY: Run = Run {
    netem: true,
    full_rate: false,
    failing_allocations: false,
    hops: 60,
    port: 8096,
};
const FULL_RATE: Run = Run {
    netem: false,
    full_rate: true,
    failing_allocations: false,
    hops: 150,
    port: 8094,
};
const FAILING_ALLOCATIONS: Run = Run {
    netem: false,
    full_rate: false,
    failing_allocations: true,
    hops: 1_000,
    port: 8093,
};
/// failslab failing 3% of the slab allocations that may sleep of the tasks marked with
/// `make-it-fail`, silently. Page allocations are left alone: a failed page-table
/// allocation in a page fault would call the OOM killer. Queues stay small enough that
/// a netlink request never needs vmalloc, whose failure prints a warning.
const FAILSLAB: [(&str, &str, &str); 6] = [
    ("failslab/ignore-gfp-wait", "N", "Y"),
    ("failslab/verbose", "0", "2"),
    ("failslab/task-filter", "Y", "N"),
    ("failslab/interval", "1", "1"),
    ("failslab/times", "-1", "1"),
    ("failslab/probability", "3", "0"),
];
/// Calls that may fail in a row before the hop is given up.
const TRIES: u32 = 100;
/// The owner's receive buffer in the full-rate run: the window, not the owner's
/// reading, bounds what each hop carries (the module takes up to 1 MiB).
const FULL_RATE_RCVBUF: i32 = 128 << 10;
const UP: u64 = 61;
const DOWN: u64 = 62;
/// What the link does to every packet, each way.
const NETEM: &str = "loss 5% delay 2ms 1ms reorder 25% 50% duplicate 2%";

/// Reads what `sock` has now (non-blocking), checking it as stream `seed` from `*off`.
fn drain(sock: &mut TcpStream, seed: u64, off: &mut u64, buf: &mut [u8]) -> TestResult {
    loop {
        match sock.read(buf) {
            Ok(0) => return Err(format!("end of stream at byte {off}")),
            Ok(n) => {
                check!(
                    buf[..n] == pattern_at(seed, *off, n)[..],
                    "stream {seed} corrupted after byte {off}"
                );
                *off += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(format!("read at byte {off}: {e}")),
        }
    }
}

/// Writes up to `len` bytes of stream `seed` from `*off` without blocking.
fn feed(sock: &mut TcpStream, seed: u64, off: &mut u64, len: usize) -> TestResult {
    let data = pattern_at(seed, *off, len);
    match sock.write(&data) {
        Ok(n) => *off += n as u64,
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(format!("write at byte {off}: {e}")),
    }
    Ok(())
}

fn netem(log: &mut Log, ns: &str, dev: &str, on: bool) -> TestResult {
    let mut args = vec!["netns", "exec", ns, "tc", "qdisc"];
    if on {
        args.extend(["add", "dev", dev, "root", "netem"]);
        args.extend(NETEM.split_whitespace());
    } else {
        args.extend(["del", "dev", dev, "root"]);
    }
    sh(log, "ip", &args).map(|_| ())
}

fn hops_over(env: &Env, log: &mut Log, run: Run) -> TestResult {
    let hops = match std::env::var("PRISM_NETEM_HOPS") {
        Ok(v) if run.netem => v.parse().unwrap_or(run.hops),
        _ => run.hops,
    };
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let mut cluster = Cluster::new(false)?;
    let (client, server) = connect_via_topology(false, run.port, None)?;
    let port = client.local_addr().map_err(|e| e.to_string())?.port();
    if run.full_rate {
        set_int(
            server.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            FULL_RATE_RCVBUF,
        )
        .map_err(|e| e.to_string())?;
    }
    if run.netem {
        netem(log, "client", "eth0", true)?;
        netem(log, "l4", "l4-client", true)?;
    }
    let failing = if run.failing_allocations {
        Some((Knobs::set(log, &FAILSLAB)?, MakeItFail::open()?))
    } else {
        None
    };
    let mut retries = Retries::default();
    let rst_before = rsts_all()?;

    // The client writes its stream and reads the owners' all along.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = client.try_clone().map_err(|e| e.to_string())?;
    let stop_w = stop.clone();
    let writer = std::thread::spawn(move || -> Result<u64, String> {
        let mut off = 0u64;
        let chunk = if run.full_rate { 16 << 10 } else { 700 };
        while !stop_w.load(Ordering::Relaxed) {
            writer
                .write_all(&pattern_at(UP, off, chunk))
                .map_err(|e| format!("client write at byte {off}: {e}"))?;
            off += chunk as u64;
            if !run.full_rate {
                std::thread::sleep(Duration::from_millis(3));
            }
        }
        Ok(off)
    });
    let mut reader = client.try_clone().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> Result<u64, String> {
        let (mut off, mut buf) = (0u64, vec![0u8; 64 << 10]);
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(off),
                Ok(n) => {
                    if buf[..n] != pattern_at(DOWN, off, n)[..] {
                        return Err(format!("client: stream corrupted after byte {off}"));
                    }
                    off += n as u64;
                }
                Err(e) => return Err(format!("client read at byte {off}: {e}")),
            }
        }
    });

    let route = ["fe", "be1", "be2"];
    let (mut sock, mut up, mut down) = (server, 0u64, 0u64);
    // Unread bytes the hops carried: in all, and the most in one hop.
    let mut carried = (0u64, 0u64);
    let mut buf = vec![0u8; 64 << 10];
    let start = Instant::now();
    for hop in 0..hops {
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        // The owner serves a moment; some of the client's stream is read here, the
        // rest travels unread; some of this owner's answer goes out, the rest travels
        // unacknowledged or unsent. Like a server with a bounded buffer, it writes only
        // while little of its answer is queued: the lossy link and the ACKs each hop
        // loses hold the flow to a few segments per hop.
        // The full-rate client refills the window while the owner sleeps, so the hop
        // carries a full receive queue.
        if run.full_rate {
            drain(&mut sock, UP, &mut up, &mut buf)?;
        }
        std::thread::sleep(Duration::from_millis(5));
        if !run.full_rate {
            drain(&mut sock, UP, &mut up, &mut buf)?;
        }
        // Under failing allocations an import request must stay within a page.
        let (most, each) = if run.failing_allocations {
            (1_000, 500)
        } else {
            (32 << 10, 3_000)
        };
        if queued(sock.as_fd(), true) < most {
            feed(&mut sock, DOWN, &mut down, each)?;
        }
        let unread = queued(sock.as_fd(), false).max(0) as u64;
        carried = (carried.0 + unread, carried.1.max(unread));
        let (from, to) = (route[hop % 3], route[(hop + 1) % 3]);
        sock = match &failing {
            Some((_, fail)) => {
                let arm = |on| fail.set(on);
                cluster.hop_retrying(log, sock, (from, to), TRIES, &arm, &mut retries)?
            }
            None => cluster.hop(log, sock, from, to, &[])?.0,
        };
        if hop % 500 == 499 {
            log.line(format!(
                "{} hops in {:?}: {up} bytes up, {down} down",
                hop + 1,
                start.elapsed()
            ));
        }
    }

    // The end: the client stops writing, the last owner reads the rest and closes.
    stop.store(true, Ordering::Relaxed);
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    // The owner keeps reading while the writer finishes: a full window blocks it.
    while !writer.is_finished() {
        drain(&mut sock, UP, &mut up, &mut buf)?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let sent_up = writer
        .join()
        .map_err(|_| "client writer panicked".to_string())??;
    sock.set_nonblocking(false).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    while up < sent_up {
        let want = ((sent_up - up) as usize).min(buf.len());
        let n = sock
            .read(&mut buf[..want])
            .map_err(|e| format!("owner read at byte {up} of {sent_up}: {e}"))?;
        check!(n > 0, "end of stream at byte {up} of {sent_up}");
        check!(
            buf[..n] == pattern_at(UP, up, n)[..],
            "client's stream corrupted after byte {up}"
        );
        up += n as u64;
    }
    sock.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let got_down = reader
        .join()
        .map_err(|_| "client reader panicked".to_string())??;
    check!(
        got_down == down,
        "the client read {got_down} of the {down} bytes the owners wrote"
    );
    client.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = [0u8; 16];
    let n = sock
        .read(&mut rest)
        .map_err(|e| format!("owner read to EOF: {e}"))?;
    check!(n == 0, "{n} stray bytes after the client's stream");
    if run.netem {
        netem(log, "client", "eth0", false)?;
        netem(log, "l4", "l4-client", false)?;
    }
    let mut seen = Vec::new();
    for counter in ["TCPOFOQueue", "TCPDSACKOldSent", "TCPLossProbes"] {
        seen.push((counter, tcp_ext_counter("client", counter)?));
    }
    log.line(format!("what the link did, as the client counted it: {seen:?}"));
    if let Some((knobs, _)) = failing {
        drop(knobs);
        let (exports, imports) = (retries.failed("export"), retries.failed("import"));
        log.line(format!(
            "{} hops with failing allocations: {exports} exports and {imports} imports failed and were made again; errors: {:?}",
            retries.hops, retries.errors
        ));
        check!(
            exports > 0 && imports > 0,
            "no injected failure made an export and an import fail"
        );
    }
    let rst_after = rsts_all()?;
    log.line(format!(
        "unread bytes carried: {} in all, {} at most in one hop",
        carried.0, carried.1
    ));
    if run.full_rate {
        check!(
            carried.1 >= 16 << 10,
            "no hop carried a full window ({} bytes at most)",
            carried.1
        );
    }
    let link = if run.netem { NETEM } else { "no loss" };
    log.line(format!(
        "{hops} hops in {:?} over a link with {link}, client at {}: {up} bytes up and {down} down, all intact (client port {port})",
        start.elapsed(),
        if run.full_rate { "full rate" } else { "700 B every 3 ms" },
    ));
    check!(
        rst_after == rst_before,
        "a host sent RST: {rst_before:?} -> {rst_after:?}"
    );
    Ok(())
}
