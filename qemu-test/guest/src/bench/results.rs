//! What `make bench` measures, as written to bench.json and read back by the report.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A distribution of times, in µs.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Dist {
    pub n: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Dist {
    pub fn of_durations(samples: &[Duration]) -> Self {
        let us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        Self::of(us)
    }

    pub fn of(mut us: Vec<f64>) -> Self {
        if us.is_empty() {
            return Self::default();
        }
        us.sort_by(f64::total_cmp);
        let at = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)];
        Self {
            n: us.len(),
            median_us: at(0.5),
            p99_us: at(0.99),
            mean_us: us.iter().sum::<f64>() / us.len() as f64,
        }
    }
}

/// One way of moving a socket, with this much queued in each direction.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HopCase {
    /// `module`, `repair`, or `getinfo` (a GET_INFO round trip on each side: the floor).
    pub backend: String,
    /// Bytes queued in each direction (unread by the server; unacknowledged by the client).
    pub queued: usize,
    /// Export (and close) on one node plus import on the other.
    pub hop: Dist,
    pub export: Dist,
    pub import: Dist,
    /// System calls of one export and close / one import, counted (min and max over
    /// the counted hops).
    pub syscalls_export: (u64, u64),
    pub syscalls_import: (u64, u64),
    /// Size of the exported state.
    pub state_bytes: usize,
}

/// Hop cost with this many migrated sockets alive in the module.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LiveCase {
    pub live: usize,
    pub hop: Dist,
}

/// The front node parsed a request -> the owner's first response byte, with this many
/// wrk connections (1: one request at a time).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HandoffCase {
    pub backend: String,
    pub object_size: usize,
    #[serde(default)]
    pub connections: usize,
    pub latency: Dist,
    #[serde(default)]
    pub steps: Option<StepDists>,
    /// Requests wrk counted as failed (a 503 after a failed hand-off, a timeout).
    #[serde(default)]
    pub errors: u64,
}

/// The hand-offs of a case step by step (see prism-node's `Steps`), and the owners'
/// steer round trips to prism-steerd.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StepDists {
    pub export: Dist,
    pub frame: Dist,
    pub import: Dist,
    pub to_first_byte: Dist,
    /// `to_first_byte` in three: the answer to the sender, serving the request, and
    /// the first response write.
    #[serde(default)]
    pub answer: Dist,
    #[serde(default)]
    pub serve: Dist,
    #[serde(default)]
    pub write: Dist,
    pub steer: Dist,
}

/// One load run through the VIP (or straight to the owners).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct DsrCase {
    /// `nginx`, `prism` (the owner changes at every request), `prism-affine` (each
    /// connection's keys have one owner) or `direct`.
    pub mode: String,
    pub object_size: usize,
    pub connections: usize,
    pub secs: f64,
    pub requests: u64,
    /// Non-2xx answers, socket errors and timeouts wrk saw.
    pub errors: u64,
    /// The client namespace's Tcp EstabResets: connections that ended by a reset, in
    /// either direction (wrk aborts the connections still waiting when its time is up).
    #[serde(default)]
    pub client_resets: u64,
    /// RSTs the nodes (fe, be1, be2) sent: for prism, a client connection reset by the
    /// service; nginx also resets its upstream connection of an aborted request.
    #[serde(default)]
    pub node_rsts: u64,
    pub req_per_s: f64,
    /// Response bytes (headers and bodies) per second, in Gbit.
    pub gbit_per_s: f64,
    /// CPU time of the front node's processes per request, in ms.
    pub fe_cpu_ms_per_request: f64,
    /// Bytes the front node's link sent per request (responses it relayed, hand-offs,
    /// upstream requests).
    pub fe_tx_bytes_per_request: f64,
}

/// Everything one `make bench` run measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Results {
    pub kernel: String,
    pub cpus: usize,
    /// `tcg` or `kvm`.
    pub accel: String,
    pub hops: Vec<HopCase>,
    pub live: Vec<LiveCase>,
    pub handoff: Vec<HandoffCase>,
    pub dsr: Vec<DsrCase>,
    /// 64 MiB over a connection that never moved and over one that moved, side by side.
    #[serde(default)]
    pub throughput: Vec<ThroughputCase>,
}

/// One round of the moved-connection throughput comparison, in MB/s.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ThroughputCase {
    pub never_moved_mbs: f64,
    pub moved_mbs: f64,
}

#[cfg(test)]
mod tests {
    use super::Dist;

    #[test]
    fn percentiles_of_a_known_sample() {
        let d = Dist::of((1..=100).map(f64::from).collect());
        assert_eq!((d.n, d.median_us, d.p99_us, d.mean_us), (100, 51.0, 100.0, 50.5));
        assert_eq!(Dist::of(Vec::new()).n, 0);
    }
}
