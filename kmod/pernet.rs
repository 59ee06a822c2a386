// SPDX-License-Identifier: GPL-2.0

//! What the module keeps per network namespace: its event sequence, its share of the
//! departed table, its tracked sockets and its counters (`stats.rs`). The data is the
//! pernet subsystem's that the guard registers (`guard.rs`), found by the id the kernel
//! assigned; every other part reaches it from here, below them all.

use crate::bindings as b;
use crate::stats::Stats;
use core::ffi::c_uint;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What the module keeps per network namespace (zeroed at its creation, freed after
/// the namespace's exit callbacks).
#[derive(Default)]
pub(crate) struct NetData {
    /// The namespace's last event sequence number.
    seq: AtomicU64,
    /// Its entries in the departed table.
    pub(crate) departed: AtomicU32,
    /// Its tracked migrated sockets.
    pub(crate) tracked: AtomicU32,
    /// Its counters, for `GET_INFO`.
    pub(crate) stats: Stats,
}

/// The pernet id while the data is registered, 0 otherwise (the kernel's ids start
/// above 0: the first slots of `struct net_generic` are its header).
static ID: AtomicU32 = AtomicU32::new(0);

/// Where `register_pernet_subsys` writes the id it assigns.
pub(crate) fn id_slot() -> *mut c_uint {
    ID.as_ptr()
}

/// The data is gone (after `unregister_pernet_subsys`).
pub(crate) fn forget() {
    ID.store(0, Ordering::Release);
}

/// Bytes of data per namespace, for the registration.
pub(crate) const SIZE: usize = core::mem::size_of::<NetData>();

/// The module's data of namespace `net`, while it is registered.
///
/// # Safety
///
/// `net` must be alive for `'a`.
pub(crate) unsafe fn net_data<'a>(net: *mut b::net) -> Option<&'a NetData> {
    let id = ID.load(Ordering::Acquire);
    if id == 0 {
        return None;
    }
    // SAFETY: `net` is alive and the pernet data is registered, so its data (zeroed,
    // sized for a `NetData`, freed after the namespace) exists.
    let data = unsafe { b::prism_net_generic(net, id) };
    // SAFETY: as above; zero bytes are a valid `NetData` (atomics only).
    unsafe { data.cast::<NetData>().as_ref() }
}

/// Takes the next event sequence number of namespace `net` (from 1).
///
/// # Safety
///
/// `net` must be alive.
pub(crate) unsafe fn next_seq(net: *mut b::net) -> u64 {
    // SAFETY: the caller keeps `net` alive.
    unsafe { net_data(net) }.map_or(0, |d| d.seq.fetch_add(1, Ordering::Relaxed) + 1)
}

/// The last event sequence number namespace `net` gave (0: none yet).
///
/// # Safety
///
/// `net` must be alive.
pub(crate) unsafe fn current_seq(net: *mut b::net) -> u64 {
    // SAFETY: the caller keeps `net` alive.
    unsafe { net_data(net) }.map_or(0, |d| d.seq.load(Ordering::Relaxed))
}

/// Adds one to the counter `pick` chooses in namespace `net`'s set (none outside the
/// module's lifetime).
///
/// # Safety
///
/// `net` must be alive.
pub(crate) unsafe fn bump(net: *mut b::net, pick: impl FnOnce(&Stats) -> &AtomicU64) {
    // SAFETY: the caller keeps `net` alive.
    if let Some(d) = unsafe { net_data(net) } {
        Stats::bump(pick(&d.stats));
    }
}
