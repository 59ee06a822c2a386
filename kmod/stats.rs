// SPDX-License-Identifier: GPL-2.0

//! The counters `GET_INFO` reports, one set per network namespace (in the module's
//! per-namespace data, `pernet.rs`), so that a namespace's GET_INFO shows its own
//! activity and nothing of another's. Requests count in the namespace of the netlink
//! socket that sent them; the guard's packets and the tracked sockets' events in the
//! namespace of the connection.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counters; relaxed ordering is enough, they are statistics with no ordering duty.
/// Zero bytes are a valid `Stats` (the pernet data is zeroed at its creation).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) exports: AtomicU64,
    pub(crate) imports: AtomicU64,
    pub(crate) releases: AtomicU64,
    /// Requests that reached a command handler and failed there.
    pub(crate) errors: AtomicU64,
    pub(crate) departed_dropped: AtomicU64,
    pub(crate) departed_expired: AtomicU64,
    pub(crate) departed_full: AtomicU64,
    /// Packets, and their bytes, sent on to a new owner; and those that could not be.
    pub(crate) forwarded: AtomicU64,
    pub(crate) forwarded_bytes: AtomicU64,
    pub(crate) forward_failed: AtomicU64,
    /// Packets another host forwarded here for a connection with no socket here
    /// (not imported yet, or gone), dropped instead of answered with RST.
    pub(crate) unowned: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) events_lost: AtomicU64,
}

impl Stats {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }
}
