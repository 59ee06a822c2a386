// SPDX-License-Identifier: GPL-2.0

//! Module-wide counters reported by `GET_INFO`.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counters; relaxed ordering is enough, they are statistics with no ordering duty.
pub(crate) struct Stats {
    pub(crate) exports: AtomicU64,
    pub(crate) imports: AtomicU64,
    pub(crate) releases: AtomicU64,
    /// Requests that reached a command handler and failed there.
    pub(crate) errors: AtomicU64,
}

pub(crate) static STATS: Stats = Stats {
    exports: AtomicU64::new(0),
    imports: AtomicU64::new(0),
    releases: AtomicU64::new(0),
    errors: AtomicU64::new(0),
};

impl Stats {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
