// SPDX-License-Identifier: GPL-2.0

//! Departed tuples: connections this host exported with DETACH.
//!
//! Until the L4 layer steers a migrated flow to its new owner, the peer's packets
//! (retransmissions, ACKs, the next request) still arrive here, where no socket owns the
//! tuple and TCP would answer with RST. The guard (`guard.rs`) sends them on to the new
//! owner when the DETACH named one (`tunnel.rs`, set by `SOCK_FORWARD`), else drops them silently, while the
//! tuple is in this table. An entry leaves the table when the tuple is imported again
//! in the same namespace, when the peer opens a new connection on it (a SYN), when it
//! expires (found expired by a lookup, or by the reaper, a work item that sweeps the
//! table once a second while it holds entries), or when its namespace goes away. No
//! request walks the table. The table is bounded, and so is each namespace's share of
//! it (`departed_netns_quota`), so one tenant's detaches cannot starve another's: a
//! DETACH that finds either full is refused, leaving the socket untouched.

use crate::bh_lock::{BhGuard, BhLock};
use crate::bindings as b;
use crate::pernet::{self, NetData};
use crate::stats::Stats;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::alloc::KVVec;
use kernel::prelude::*;
use kernel::types::Opaque;

/// Upper bound of the `departed_capacity` module parameter: 1 Mi entries (about 64 MiB).
const MAX_CAPACITY: u32 = 1 << 20;
/// How long a departed tuple is protected, in milliseconds: far longer than a steering
/// update takes, short enough that a stale entry does not linger.
pub(crate) const TIMEOUT_MS: u32 = 30_000;
const BUCKETS: usize = 4096;
const NIL: u32 = u32::MAX;

/// A connection as packets arriving at this host name it. IPv4 (and v4-mapped IPv6)
/// addresses occupy the first 4 bytes with `v6` false, so both spellings match.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tuple {
    /// The namespace (`struct net *`), as an address: only compared, never dereferenced.
    pub(crate) net: usize,
    pub(crate) v6: bool,
    pub(crate) local: [u8; 16],
    pub(crate) remote: [u8; 16],
    pub(crate) lport: u16,
    pub(crate) rport: u16,
}

fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff
}

impl Tuple {
    /// The tuple of a socket: `family` AF_INET with 4-byte addresses first, or AF_INET6.
    pub(crate) fn of_socket(
        net: usize,
        family: u16,
        local: &[u8; 16],
        remote: &[u8; 16],
        lport: u16,
        rport: u16,
    ) -> Self {
        let mut t = Self {
            net,
            v6: u32::from(family) == b::AF_INET6,
            local: *local,
            remote: *remote,
            lport,
            rport,
        };
        if t.v6 && is_v4_mapped(&t.local) && is_v4_mapped(&t.remote) {
            t.v6 = false;
            t.local = [0; 16];
            t.remote = [0; 16];
            t.local[..4].copy_from_slice(&local[12..]);
            t.remote[..4].copy_from_slice(&remote[12..]);
        }
        t
    }

    /// The same connection seen from its other end: a packet this host sends names the
    /// local address as its source.
    pub(crate) fn reversed(&self) -> Self {
        Self {
            local: self.remote,
            remote: self.local,
            lport: self.rport,
            rport: self.lport,
            ..*self
        }
    }

    fn hash(&self, seed: u32) -> usize {
        // Word-wise multiply-rotate mixing from a random seed: the guard hashes every
        // TCP packet the host receives while the table holds entries, so a few
        // instructions per 8 bytes rather than one multiply per byte.
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = u64::from(seed) ^ K;
        let mut mix = |w: u64| h = (h ^ w).wrapping_mul(K).rotate_left(29);
        mix(self.net as u64);
        for half in Iterator::chain(self.local.chunks_exact(8), self.remote.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(half);
            mix(u64::from_ne_bytes(w));
        }
        mix(u64::from(self.lport) << 32 | u64::from(self.rport) << 16 | u64::from(self.v6));
        ((h ^ (h >> 32)) as usize) % BUCKETS
    }
}

#[derive(Clone, Copy)]
struct Entry {
    tuple: Tuple,
    expires: usize,
    /// The new owner's IPv4 address (network byte order), or zero: drop.
    forward: [u8; 4],
    /// Its namespace's data (`*const NetData`: quota count, counters), or zero.
    data: usize,
    next: u32,
}

/// Chained hash table in two flat arrays; free entries are chained through `next`.
struct Slots {
    heads: KVVec<u32>,
    entries: KVVec<Entry>,
    free: u32,
}

impl Entry {
    /// The data of the entry's namespace, while the entry is in the table.
    fn net_data(&self) -> Option<&NetData> {
        // SAFETY: a non-null `data` is the entry's namespace data, which is freed only
        // after the namespace's exit callback flushed its entries from the table.
        unsafe { (self.data as *const NetData).as_ref() }
    }

    /// Counts the entry's expiry in its namespace.
    fn count_expired(&self) {
        if let Some(d) = self.net_data() {
            Stats::bump(&d.stats.departed_expired);
        }
    }
}

impl Slots {
    /// Takes entry `i` (after `prev`, or first) out of `bucket`'s chain onto the free list.
    fn unlink(&mut self, bucket: usize, prev: u32, i: u32) {
        if let Some(d) = self.entries[i as usize].net_data() {
            d.departed.fetch_sub(1, Ordering::Relaxed);
        }
        let next = self.entries[i as usize].next;
        if prev == NIL {
            self.heads[bucket] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        self.entries[i as usize].next = self.free;
        self.free = i;
    }
}

/// What the guard does with a packet.
#[derive(PartialEq, Eq)]
pub(crate) enum Verdict {
    Accept,
    Drop,
    /// Send it to the new owner at this IPv4 address.
    Forward([u8; 4]),
}

/// Why an insertion failed.
pub(crate) enum Full {
    /// No free entry in the table.
    Table,
    /// The namespace holds its quota of entries.
    Namespace,
}

/// A namespace's share of the table: its data (entry count, counters), and the most
/// entries it may hold.
pub(crate) struct Quota<'a> {
    pub(crate) data: &'a NetData,
    pub(crate) limit: u32,
}

/// The quota of one namespace, from `departed_netns_quota` (0: half the capacity).
pub(crate) fn netns_quota(capacity: usize) -> u32 {
    // SAFETY: reads a module parameter, written only at load time.
    let set = unsafe { b::prism_departed_netns_quota() };
    let half = (capacity as u32 / 2).max(1);
    if set == 0 {
        half
    } else {
        set.min(capacity as u32)
    }
}

pub(crate) struct Departed {
    slots: BhLock<Slots>,
    seed: u32,
    capacity: usize,
    /// Live entries; read without the lock by the packet path to skip an empty table.
    count: AtomicUsize,
    /// Sweeps expired entries while the table is not empty.
    reaper: Opaque<b::delayed_work>,
}

// SAFETY: `slots` is only reached through `Locked`, which holds the spinlock.
unsafe impl Sync for Departed {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for Departed {}

fn expired(expires: usize, now: usize) -> bool {
    // jiffies wrap: compare as a signed distance, as time_after_eq() does.
    now.wrapping_sub(expires) as isize >= 0
}

fn now() -> usize {
    // SAFETY: reads the jiffies counter.
    unsafe { b::prism_jiffies() as usize }
}

struct Locked<'a> {
    t: &'a Departed,
    g: BhGuard<'a, Slots>,
}

impl Locked<'_> {
    fn slots(&mut self) -> &mut Slots {
        &mut self.g
    }

    /// Unlinks every entry for which `gone` says so; returns how many.
    fn remove_where(&mut self, mut gone: impl FnMut(&Entry) -> bool) -> usize {
        let s = self.slots();
        let mut removed = 0;
        for bucket in 0..BUCKETS {
            let mut prev = NIL;
            let mut i = s.heads[bucket];
            while i != NIL {
                let next = s.entries[i as usize].next;
                if gone(&s.entries[i as usize]) {
                    s.unlink(bucket, prev, i);
                    removed += 1;
                } else {
                    prev = i;
                }
                i = next;
            }
        }
        self.t.count.fetch_sub(removed, Ordering::Release);
        removed
    }

    /// Unlinks the expired entries, each counted in its namespace.
    fn remove_expired(&mut self) {
        let t = now();
        self.remove_where(|e| {
            let gone = expired(e.expires, t);
            if gone {
                e.count_expired();
            }
            gone
        });
    }

    fn find(&mut self, tuple: &Tuple) -> Option<(usize, u32, u32)> {
        let bucket = tuple.hash(self.t.seed);
        let s = self.slots();
        let mut prev = NIL;
        let mut i = s.heads[bucket];
        while i != NIL {
            if s.entries[i as usize].tuple == *tuple {
                return Some((bucket, prev, i));
            }
            prev = i;
            i = s.entries[i as usize].next;
        }
        None
    }

    fn unlink(&mut self, (bucket, prev, i): (usize, u32, u32)) {
        self.slots().unlink(bucket, prev, i);
        self.t.count.fetch_sub(1, Ordering::Release);
    }
}

impl Departed {
    pub(crate) fn new() -> Result<KBox<Self>> {
        // SAFETY: reads a module parameter, written only at load time.
        let capacity = unsafe { b::prism_departed_capacity() };
        if capacity == 0 || capacity > MAX_CAPACITY {
            pr_err!("departed_capacity must be within 1..{}\n", MAX_CAPACITY);
            return Err(EINVAL);
        }
        let capacity = capacity as usize;
        let mut heads = KVVec::with_capacity(BUCKETS, GFP_KERNEL)?;
        for _ in 0..BUCKETS {
            heads.push(NIL, GFP_KERNEL)?;
        }
        let mut entries = KVVec::with_capacity(capacity, GFP_KERNEL)?;
        for i in 0..capacity {
            let next = if i + 1 < capacity { i as u32 + 1 } else { NIL };
            entries.push(
                Entry {
                    tuple: Tuple::default(),
                    expires: 0,
                    forward: [0; 4],
                    data: 0,
                    next,
                },
                GFP_KERNEL,
            )?;
        }
        let t = KBox::new(
            Self {
                slots: BhLock::new(Slots {
                    heads,
                    entries,
                    free: 0,
                }),
                // SAFETY: plain call into the random pool.
                seed: unsafe { b::get_random_u32() },
                capacity,
                count: AtomicUsize::new(0),
                reaper: Opaque::uninit(),
            },
            GFP_KERNEL,
        )?;
        // SAFETY: the lock and the work live in the box, whose address does not change
        // until it is freed; `drop` cancels the work first.
        unsafe {
            crate::bh_lock::init_bh_lock!(t.slots, "prism_sock_departed");
            b::prism_init_delayed_work(t.reaper.get(), Some(reap));
        }
        Ok(t)
    }

    fn kick_reaper(&self) {
        // SAFETY: initialised in `new`, cancelled in `drop`. A pending work stays as it
        // is (this only sets it once).
        unsafe { b::prism_schedule_delayed_work(self.reaper.get(), b::PRISM_HZ.into()) };
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            t: self,
            g: self.slots.lock(),
        }
    }

    /// Entries the table holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Namespace `net`'s share of the table, for [`Departed::insert`]; `None` outside
    /// the module's lifetime.
    ///
    /// # Safety
    ///
    /// `net` must be alive for `'a`.
    pub(crate) unsafe fn quota<'a>(&self, net: *mut b::net) -> Option<Quota<'a>> {
        // SAFETY: the caller keeps `net` alive for `'a`.
        let data = unsafe { pernet::net_data(net) }?;
        Some(Quota {
            data,
            limit: netns_quota(self.capacity),
        })
    }

    pub(crate) fn active(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Protects `tuple` for `TIMEOUT_MS` from now (again, if it already is); its
    /// packets go to `forward` (an IPv4 address), or are dropped until `set_forward`
    /// names a new owner. A new entry counts against `quota`, which must be that of the
    /// tuple's namespace (its count goes down as the entry leaves).
    pub(crate) fn insert(
        &self,
        tuple: &Tuple,
        forward: Option<[u8; 4]>,
        quota: Quota<'_>,
    ) -> Result<(), Full> {
        // SAFETY: converts a constant.
        let expires = now().wrapping_add(unsafe { b::prism_msecs_to_jiffies(TIMEOUT_MS) } as usize);
        let forward = forward.unwrap_or([0; 4]);
        let mut l = self.lock();
        if let Some((_, _, i)) = l.find(tuple) {
            let e = &mut l.slots().entries[i as usize];
            e.expires = expires;
            e.forward = forward;
            return Ok(());
        }
        if l.slots().free == NIL {
            l.remove_expired();
        }
        let bucket = tuple.hash(self.seed);
        let s = l.slots();
        let i = s.free;
        let full = &quota.data.stats.departed_full;
        if i == NIL {
            Stats::bump(full);
            return Err(Full::Table);
        }
        // Counted under the table's lock, so count and entries agree.
        let used = &quota.data.departed;
        if used.load(Ordering::Relaxed) >= quota.limit {
            Stats::bump(full);
            return Err(Full::Namespace);
        }
        used.fetch_add(1, Ordering::Relaxed);
        let e = &mut s.entries[i as usize];
        s.free = e.next;
        *e = Entry {
            tuple: *tuple,
            expires,
            forward,
            data: core::ptr::from_ref(quota.data) as usize,
            next: s.heads[bucket],
        };
        s.heads[bucket] = i;
        self.count.fetch_add(1, Ordering::Release);
        drop(l);
        self.kick_reaper();
        Ok(())
    }

    /// Sends the packets of departed `tuple` to `to` (an IPv4 address) from now on;
    /// false if the tuple is not (or no longer) departed.
    pub(crate) fn set_forward(&self, tuple: &Tuple, to: [u8; 4]) -> bool {
        let mut l = self.lock();
        let Some(at) = l.find(tuple) else {
            return false;
        };
        let e = &mut l.slots().entries[at.2 as usize];
        if expired(e.expires, now()) {
            return false;
        }
        e.forward = to;
        true
    }

    /// Forgets `tuple`: it has an owner on this host again.
    pub(crate) fn remove(&self, tuple: &Tuple) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut l = self.lock();
        match l.find(tuple) {
            Some(at) => {
                l.unlink(at);
                true
            }
            None => false,
        }
    }

    /// Forgets every tuple of the namespace `net`, which is going away.
    pub(crate) fn flush_net(&self, net: usize) {
        self.lock().remove_where(|e| e.tuple.net == net);
    }

    /// Drops expired entries (the reaper's walk); again in a second while any are left.
    fn sweep(&self) {
        self.lock().remove_expired();
        if self.active() > 0 {
            self.kick_reaper();
        }
    }

    /// Decides the fate of a packet of `tuple`; `new_connection` is a SYN without ACK.
    pub(crate) fn check(&self, tuple: &Tuple, new_connection: bool) -> Verdict {
        if self.count.load(Ordering::Acquire) == 0 {
            return Verdict::Accept;
        }
        let mut l = self.lock();
        let Some(at) = l.find(tuple) else {
            return Verdict::Accept;
        };
        let e = l.slots().entries[at.2 as usize];
        if expired(e.expires, now()) {
            e.count_expired();
            l.unlink(at);
            return Verdict::Accept;
        }
        if new_connection {
            // The peer starts over on this tuple: the migrated connection is over for it.
            l.unlink(at);
            return Verdict::Accept;
        }
        match l.slots().entries[at.2 as usize].forward {
            [0, 0, 0, 0] => Verdict::Drop,
            to => Verdict::Forward(to),
        }
    }
}

impl Drop for Departed {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; waits for a running sweep and stops it from
        // queueing itself again.
        unsafe { b::cancel_delayed_work_sync(self.reaper.get()) };
    }
}

/// The reaper's work function.
///
/// # Safety
///
/// Called by the workqueue only.
unsafe extern "C" fn reap(work: *mut b::work_struct) {
    // A `delayed_work` starts with its `work_struct`, and `Opaque` has its content's
    // address: `work` is the table's `reaper`.
    let offset = core::mem::offset_of!(Departed, reaper);
    // SAFETY: the work is only queued by a `Departed`, which cancels it before it is
    // freed, so the table around it is alive while this runs.
    let table = unsafe { &*work.cast::<u8>().sub(offset).cast::<Departed>() };
    table.sweep();
}
