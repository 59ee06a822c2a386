//! A node's counters, served as JSON on its admin port.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Hand-off times kept for `/stats/handoffs` (4 MiB); later ones are not recorded.
const MAX_SAMPLES: usize = 1 << 20;

/// CLOCK_MONOTONIC in ns: one clock for every node of one host (the guest's nodes are
/// network namespaces of one kernel), so a sender's stamp can be read by the owner.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What a node did since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Responses this node wrote, by status.
    pub responses_200: AtomicU64,
    /// 404/400/405/431 answers.
    pub responses_4xx: AtomicU64,
    /// 503 answers after a failed hand-off.
    pub responses_503: AtomicU64,
    /// Body bytes of objects this node served itself.
    pub body_bytes: AtomicU64,
    /// Connections handed to another node.
    pub handoffs_out: AtomicU64,
    /// Connections taken over from another node.
    pub handoffs_in: AtomicU64,
    /// Hand-offs that failed and were imported back here.
    pub handoffs_back: AtomicU64,
    /// Hand-offs refused to a sender.
    pub handoffs_refused: AtomicU64,
    /// Hand-offs after which this node forwards the client's late packets to the owner
    /// (DETACH with `forward-to`).
    pub forwards: AtomicU64,
    /// SOCK_RELEASED events passed on to prism-steerd.
    pub releases: AtomicU64,
    /// Hand-offs taken over here: µs from the sender's parsed request to this node's
    /// first response byte.
    pub handoff_us: Mutex<Vec<u32>>,
    /// The same hand-offs step by step, in µs.
    pub steps: Mutex<Vec<Steps>>,
    /// Round trips of this node's steer requests to prism-steerd, in µs.
    pub steer_us: Mutex<Vec<u32>>,
}

/// When each step of a hand-off ended ([`mono_ns`]; one clock for the guest's nodes).
#[derive(Debug, Clone, Copy, Default)]
pub struct HandTimes {
    /// The sender parsed the request.
    pub parsed: u64,
    /// The sender's export returned.
    pub exported: u64,
    /// The owner read the hand-off frame.
    pub received: u64,
    /// The owner's import returned.
    pub imported: u64,
    /// The owner was free to serve: with forwarding, once it queued the answer to the
    /// sender and the steer; with the repair backend, once both were done.
    pub answered: u64,
    /// The owner's first response write began.
    pub writing: u64,
}

/// One hand-off's steps, in µs.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct Steps {
    /// Request parsed -> the sender's export returned.
    pub export: u32,
    /// Export -> the owner read the hand-off frame.
    pub frame: u32,
    /// The owner's import.
    pub import: u32,
    /// Import -> first response byte: queuing (with forwarding) or sending (without)
    /// the answer to the sender and the steer, and the response's start.
    pub to_first_byte: u32,
    /// Import -> the owner free to serve: the answer and the steer queued (with
    /// forwarding), or done (without).
    #[serde(default)]
    pub answer: u32,
    /// Answer -> the first response write begins (the request served from the buffer).
    #[serde(default)]
    pub serve: u32,
    /// The first response write: the system call carries the segments through the
    /// guest's veth pairs and l4's forwarding.
    #[serde(default)]
    pub write: u32,
    /// Request parsed on the sender -> first response byte from the owner.
    pub total: u32,
}

/// A copy of [`Stats`] for printing. `relayed_bytes` is what this node forwarded on
/// behalf of another node: prism-node never relays, the owner answers directly.
#[derive(Debug, Serialize)]
#[allow(missing_docs)]
pub struct Snapshot {
    pub node: String,
    pub responses_200: u64,
    pub responses_4xx: u64,
    pub responses_503: u64,
    pub body_bytes: u64,
    pub relayed_bytes: u64,
    pub handoffs_out: u64,
    pub handoffs_in: u64,
    pub handoffs_back: u64,
    pub handoffs_refused: u64,
    pub forwards: u64,
    pub releases: u64,
    pub handoffs_timed: u64,
    pub handoff_p50_us: u32,
    pub handoff_p99_us: u32,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a hand-off whose steps ended at `t` and whose first byte went out now.
    pub fn record_handoff(&self, t: HandTimes) {
        let now = mono_ns();
        let us = |from: u64, to: u64| (to.saturating_sub(from) / 1000).min(u64::from(u32::MAX)) as u32;
        let steps = Steps {
            export: us(t.parsed, t.exported),
            frame: us(t.exported, t.received),
            import: us(t.received, t.imported),
            to_first_byte: us(t.imported, now),
            answer: us(t.imported, t.answered),
            serve: us(t.answered, t.writing),
            write: us(t.writing, now),
            total: us(t.parsed, now),
        };
        let mut v = self.handoff_us.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_SAMPLES {
            v.push(steps.total);
            self.steps.lock().unwrap_or_else(|e| e.into_inner()).push(steps);
        }
    }

    /// Records a steer round trip that started at `since` ([`mono_ns`]).
    pub fn record_steer(&self, since: u64) {
        let us = (mono_ns().saturating_sub(since) / 1000).min(u64::from(u32::MAX)) as u32;
        let mut v = self.steer_us.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_SAMPLES {
            v.push(us);
        }
    }

    /// Every hand-off's steps kept, in arrival order.
    pub fn step_samples(&self) -> Vec<Steps> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every steer round trip kept, in µs.
    pub fn steer_samples(&self) -> Vec<u32> {
        self.steer_us.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every hand-off time kept, in µs, in arrival order.
    pub fn handoff_samples(&self) -> Vec<u32> {
        self.handoff_us.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads every counter.
    pub fn snapshot(&self, node: &str) -> Snapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut times = self.handoff_samples();
        times.sort_unstable();
        let pct = |p: usize| {
            times
                .get((times.len() * p / 100).min(times.len().saturating_sub(1)))
                .copied()
        };
        Snapshot {
            node: node.to_string(),
            responses_200: r(&self.responses_200),
            responses_4xx: r(&self.responses_4xx),
            responses_503: r(&self.responses_503),
            body_bytes: r(&self.body_bytes),
            relayed_bytes: 0,
            handoffs_out: r(&self.handoffs_out),
            handoffs_in: r(&self.handoffs_in),
            handoffs_back: r(&self.handoffs_back),
            handoffs_refused: r(&self.handoffs_refused),
            forwards: r(&self.forwards),
            releases: r(&self.releases),
            handoffs_timed: times.len() as u64,
            handoff_p50_us: pct(50).unwrap_or(0),
            handoff_p99_us: pct(99).unwrap_or(0),
        }
    }
}
