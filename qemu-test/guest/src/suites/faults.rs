//! Faults and races. An export or an import that fails at any point leaves nothing
//! broken, and two exports of one socket at once give its state to exactly one.
//!
//! The calling thread's `fail-nth` (CONFIG_FAULT_INJECTION, with failslab and
//! fail_page_alloc counting GFP_KERNEL allocations) fails the n-th fault point of one
//! call, for n = 1, 2, ... until a call passes all of them: every allocation on the
//! way, in the kernel and in the module, and the module's own points (a reply that
//! cannot be queued). A failed export must leave the socket as it was, a failed import
//! nothing at all; the same state then moves for real and every byte is checked.

use super::common::loaded;
use super::export::{connect_via_topology, wait_for};
use super::migration::hold_client_acks;
use crate::check;
use crate::harness::{Env, Log, Test, TestResult};
use crate::migrate::{expect_stream, flow_sockets, no_rst_since, rsts_all, send_stream, Cluster};
use crate::sockopt::queued;
use crate::topology::in_ns;
use crate::topology::{Topology, NODES};
use prism_sock::{Client, ImportOptions, MigrationState};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Barrier;
use std::time::Duration;

pub fn tests() -> Vec<Test> {
    vec![
        Test {
            name: "fault_every_point_of_export_and_import",
            run: every_point,
        },
        Test {
            name: "export_same_socket_from_two_threads",
            run: two_exporters,
        },
    ]
}

const PORT: u16 = 8095;
/// Bytes of the request fe leaves unread, and of the response it has started: small
/// enough that an import request fits one page, so the netlink request is never a
/// vmalloc (whose injected failures would print allocation warnings).
const REQUEST: usize = 300;
const RESPONSE: usize = 2_200;
/// More points than an export or import has; reaching it is a failure.
const MAX_POINTS: u32 = 400;

/// The calling thread's fault-injection file `name` (fail-nth, make-it-fail).
fn thread_fault_file(name: &str) -> Result<File, String> {
    File::options()
        .read(true)
        .write(true)
        .open(format!("/proc/thread-self/{name}"))
        .map_err(|e| format!("{name} (CONFIG_FAULT_INJECTION): {e}"))
}

/// The calling thread's `fail-nth`: armed with n, the thread's n-th fault point fails.
struct FailNth(File);

impl FailNth {
    fn open() -> Result<Self, String> {
        thread_fault_file("fail-nth").map(Self)
    }

    fn arm(&self, n: u32) -> TestResult {
        self.0
            .write_at(n.to_string().as_bytes(), 0)
            .map(|_| ())
            .map_err(|e| format!("arm fail-nth: {e}"))
    }

    /// Disarms; whether the armed fault was injected.
    fn injected(&self) -> Result<bool, String> {
        let mut buf = [0u8; 16];
        let n = self
            .0
            .read_at(&mut buf, 0)
            .map_err(|e| format!("read fail-nth: {e}"))?;
        let left: u32 = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("fail-nth unreadable")?;
        self.arm(0)?;
        Ok(left == 0)
    }
}

/// The calling thread's `make-it-fail`: while set, the fault-injection knobs with
/// `task-filter` apply to it.
pub(super) struct MakeItFail(File);

impl MakeItFail {
    pub(super) fn open() -> Result<Self, String> {
        thread_fault_file("make-it-fail").map(Self)
    }

    pub(super) fn set(&self, on: bool) -> TestResult {
        self.0
            .write_at(if on { b"1" } else { b"0" }, 0)
            .map(|_| ())
            .map_err(|e| format!("make-it-fail: {e}"))
    }
}

impl Drop for MakeItFail {
    fn drop(&mut self) {
        let _ = self.set(false);
    }
}

/// Fault-injection knobs under debugfs, each set to a value for a test and back to the
/// kernel's default when dropped.
pub(super) struct Knobs(&'static [(&'static str, &'static str, &'static str)]);

/// failslab and fail_page_alloc set to count the allocations that may sleep, silently
/// (for `fail-nth`).
const FAIL_NTH: [(&str, &str, &str); 5] = [
    ("failslab/ignore-gfp-wait", "N", "Y"),
    ("failslab/verbose", "0", "2"),
    ("fail_page_alloc/ignore-gfp-wait", "N", "Y"),
    ("fail_page_alloc/min-order", "0", "1"),
    ("fail_page_alloc/verbose", "0", "2"),
];

impl Knobs {
    /// Sets `knobs` (path under /sys/kernel/debug, value, default).
    pub(super) fn set(
        log: &mut Log,
        knobs: &'static [(&'static str, &'static str, &'static str)],
    ) -> Result<Self, String> {
        let root = std::path::Path::new("/sys/kernel/debug");
        if !root.join("failslab").exists() {
            crate::harness::sh(log, "mount", &["-t", "debugfs", "none", "/sys/kernel/debug"])?;
        }
        // Set before checking, so that a failure still restores what was set.
        let set = Self(knobs);
        for (knob, on, _) in knobs {
            std::fs::write(root.join(knob), on).map_err(|e| format!("{knob}: {e}"))?;
        }
        Ok(set)
    }
}

impl Drop for Knobs {
    fn drop(&mut self) {
        for (knob, _, off) in self.0 {
            let _ = std::fs::write(std::path::Path::new("/sys/kernel/debug").join(knob), off);
        }
    }
}

/// What a run with the n-th point failing came to.
enum Outcome<T> {
    /// The call failed at the injected fault.
    Failed(String),
    /// A fault was injected and the call still succeeded (the failure was tolerated).
    Tolerated(T),
    /// The call has fewer than n points.
    Passed(T),
}

fn with_fault<T, E: std::fmt::Display>(
    fail: &FailNth,
    n: u32,
    call: impl FnOnce() -> Result<T, E>,
) -> Result<Outcome<T>, String> {
    fail.arm(n)?;
    let r = call();
    let injected = fail.injected()?;
    match (r, injected) {
        (Err(e), true) => Ok(Outcome::Failed(e.to_string())),
        (Err(e), false) => Err(format!("failed with no fault injected: {e}")),
        (Ok(v), true) => Ok(Outcome::Tolerated(v)),
        (Ok(v), false) => Ok(Outcome::Passed(v)),
    }
}

/// Counts of one operation's runs.
#[derive(Default, Debug)]
struct Tally {
    failed: u32,
    tolerated: u32,
    /// Fault points of one call: known once a run passes them all.
    points: Option<u32>,
}

impl Tally {
    fn record<T>(&mut self, n: u32, what: &str, log: &mut Log, o: Outcome<T>) -> Option<T> {
        match o {
            Outcome::Failed(e) => {
                self.failed += 1;
                log.line(format!("{what}, point {n} failing: {e}"));
                None
            }
            Outcome::Tolerated(v) => {
                self.tolerated += 1;
                Some(v)
            }
            Outcome::Passed(v) => {
                self.points = Some(n - 1);
                Some(v)
            }
        }
    }
}

fn every_point(env: &Env, log: &mut Log) -> TestResult {
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let knobs = Knobs::set(log, &FAIL_NTH)?;
    let fail = FailNth::open()?;
    let rst_before = rsts_all()?;
    let (mut export, mut import) = (Tally::default(), Tally::default());
    let mut ports = Vec::new();
    let mut n = 0;
    while export.points.is_none() || import.points.is_none() {
        n += 1;
        check!(
            n <= MAX_POINTS,
            "more than {MAX_POINTS} fault points: {export:?} {import:?}"
        );
        let seed = 100 * u64::from(n);
        let (mut client, mut server) = connect_via_topology(false, PORT, Some(1024))?;
        ports.push(client.local_addr().map_err(|e| e.to_string())?.port());

        // Data both ways: the request unread on fe, the response partly sent (the
        // client's ACKs are held) and, beyond the client's small window, partly unsent.
        send_stream(&mut client, seed, REQUEST)?;
        wait_for("the request in fe's receive queue", || {
            queued(server.as_fd(), false) == REQUEST as i32
        })?;
        hold_client_acks(log, true, PORT)?;
        send_stream(&mut server, seed + 1, RESPONSE)?;
        std::thread::sleep(Duration::from_millis(50));

        let fe = cluster.nl("fe");
        let state = if export.points.is_none() {
            let o = with_fault(&fail, n, || fe.export_detach(server.as_fd()))?;
            export.record(n, "export", log, o)
        } else {
            None
        };
        // A failed export left the socket as it was: it exports now.
        let state = match state {
            Some(s) => s,
            None => fe
                .export_detach(server.as_fd())
                .map_err(|e| format!("export after a failed one: {e}"))?,
        };
        drop(server);
        let d = state.decode().map_err(|e| e.to_string())?;
        let sent = d.snd_nxt.wrapping_sub(d.snd_una);
        check!(
            d.recv_queue.len() == REQUEST && sent > 0,
            "state without data both ways: recv {} sent {sent}",
            d.recv_queue.len()
        );
        if n == 1 {
            log.line(format!(
                "state: {} bytes unread, {sent} sent and unacknowledged, {} unsent",
                d.recv_queue.len(),
                d.write_seq.wrapping_sub(d.snd_nxt)
            ));
        }

        let carried = MigrationState::from_bytes(state.as_bytes().to_vec());
        let be1 = cluster.nl("be1");
        let opts = ImportOptions::default();
        let owned = if import.points.is_none() {
            let o = with_fault(&fail, n, || be1.import_stream(&carried, &opts))?;
            import.record(n, "import", log, o)
        } else {
            None
        };
        // A failed import left nothing behind: the same state imports now.
        let mut owned = match owned {
            Some((s, _)) => s,
            None => {
                be1.import_stream(&carried, &opts)
                    .map_err(|e| format!("import after a failed one (point {n}): {e}"))?
                    .0
            }
        };
        Topology::steer_flow(log, false, *ports.last().unwrap_or(&0), "be1", true)?;
        hold_client_acks(log, false, PORT)?;

        expect_stream(&mut owned, seed, REQUEST)?;
        let reader = std::thread::spawn(move || -> Result<TcpStream, String> {
            expect_stream(&mut client, seed + 1, RESPONSE)?;
            expect_stream(&mut client, seed + 2, 1_000)?;
            Ok(client)
        });
        send_stream(&mut owned, seed + 2, 1_000)?;
        let mut client = reader.join().map_err(|_| "reader panicked".to_string())??;
        send_stream(&mut client, seed + 3, 1_000)?;
        expect_stream(&mut owned, seed + 3, 1_000)?;
        client.shutdown(Shutdown::Both).map_err(|e| e.to_string())?;
        owned.shutdown(Shutdown::Both).map_err(|e| e.to_string())?;
    }
    drop(knobs);
    log.line(format!(
        "{n} runs; export: {export:?}; import: {import:?}; every stream intact"
    ));
    check!(
        export.failed > 0 && import.failed > 0,
        "no injected fault made a call fail"
    );
    for port in ports {
        for node in NODES {
            wait_for(&format!("{node}'s sockets of port {port} to finish"), || {
                flow_sockets(node, port).map(|v| v.is_empty()).unwrap_or(false)
            })?;
        }
    }
    no_rst_since(&rst_before)?;
    for node in ["fe", "be1"] {
        let info = cluster.nl(node).info().map_err(|e| e.to_string())?;
        log.line(format!(
            "{node}: {} tracked, guard {:?}",
            info.tracked, info.departed
        ));
    }
    Ok(())
}

/// Two threads export the same socket with DETACH at the same moment, 30 times: one
/// gets the state and the other a refusal, never both or neither, and the winner's
/// state moves the connection whole.
fn two_exporters(env: &Env, log: &mut Log) -> TestResult {
    const ROUNDS: u64 = 30;
    let _t = Topology::up()?;
    let _c = loaded(env, log)?;
    let cluster = Cluster::new(false)?;
    let mut racers = Vec::new();
    for _ in 0..2 {
        racers.push(in_ns("fe", Client::connect)?.map_err(|e| format!("netlink in fe: {e}"))?);
    }
    let rst_before = rsts_all()?;
    let mut refusals: BTreeMap<String, u32> = BTreeMap::new();
    for round in 0..ROUNDS {
        let seed = 7000 + 4 * round;
        let (mut client, server) = connect_via_topology(false, PORT + 1, None)?;
        let port = client.local_addr().map_err(|e| e.to_string())?.port();
        send_stream(&mut client, seed, REQUEST)?;
        wait_for("the request in fe's receive queue", || {
            queued(server.as_fd(), false) == REQUEST as i32
        })?;
        let barrier = Barrier::new(2);
        let results: Vec<Result<MigrationState, String>> = std::thread::scope(|s| {
            let runs: Vec<_> = racers
                .iter_mut()
                .map(|c| {
                    let (barrier, server) = (&barrier, &server);
                    s.spawn(move || {
                        barrier.wait();
                        c.export_detach(server.as_fd()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            runs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("exporter panicked".into())))
                .collect()
        });
        let mut states = Vec::new();
        for r in results {
            match r {
                Ok(s) => states.push(s),
                Err(e) => *refusals.entry(e).or_default() += 1,
            }
        }
        check!(
            states.len() == 1,
            "round {round}: {} exports succeeded",
            states.len()
        );
        drop(server);
        let (mut owned, _) = cluster
            .nl("be1")
            .import_stream(&states[0], &ImportOptions::default())
            .map_err(|e| format!("import of the winner's state: {e}"))?;
        Topology::steer_flow(log, false, port, "be1", true)?;
        expect_stream(&mut owned, seed, REQUEST)?;
        send_stream(&mut owned, seed + 1, 3_000)?;
        expect_stream(&mut client, seed + 1, 3_000)?;
        client.shutdown(Shutdown::Both).map_err(|e| e.to_string())?;
        owned.shutdown(Shutdown::Both).map_err(|e| e.to_string())?;
    }
    log.line(format!(
        "{ROUNDS} rounds, one export each; the other got: {refusals:?}"
    ));
    no_rst_since(&rst_before)?;
    Ok(())
}
