//! A node's counters, served as JSON on its admin port.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// SOCK_RELEASED events passed on to prism-steerd.
    pub releases: AtomicU64,
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
    pub releases: u64,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self, node: &str) -> Snapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
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
            releases: r(&self.releases),
        }
    }
}
