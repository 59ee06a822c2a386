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
//! request walks the table, and the packet hook finds entries under RCU without taking
//! the table's lock (only to remove one). The table is bounded, and so is each namespace's share of
//! it (`departed_netns_quota`), so one tenant's detaches cannot starve another's: a
//! DETACH that finds either full is refused, leaving the socket untouched.

use crate::bh_lock::{BhGuard, BhLock};
use crate::bindings as b;
use crate::guard::NetData;
use crate::stats::Stats;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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

/// One slot of the table. The packet hook reads chains without the lock, under RCU:
/// it follows `next` and reads `tuple`, `expires` and `forward`. Every write is made
/// under the lock, and a slot taken out of its chain rests in limbo for an RCU grace
/// period before it is reused, so a reader still on it sees its old values and walks
/// on to the end of a chain.
struct Entry {
    /// Written only while the slot is free (unreachable by readers), then published
    /// by the release store that links it.
    tuple: UnsafeCell<Tuple>,
    expires: AtomicUsize,
    /// The new owner's IPv4 address (network byte order, as stored), or zero: drop.
    forward: AtomicU32,
    /// Its namespace's data (`*const NetData`: quota count, counters), or zero.
    data: AtomicUsize,
    /// The next slot of its chain.
    next: AtomicU32,
    /// The next slot of the free list or of limbo (under the lock).
    spare: AtomicU32,
}

impl Entry {
    fn new(spare: u32) -> Self {
        Self {
            tuple: UnsafeCell::new(Tuple::default()),
            expires: AtomicUsize::new(0),
            forward: AtomicU32::new(0),
            data: AtomicUsize::new(0),
            next: AtomicU32::new(NIL),
            spare: AtomicU32::new(spare),
        }
    }

    fn tuple(&self) -> Tuple {
        // SAFETY: the tuple is written only while the slot is free, which is after an
        // RCU grace period since it left its chain (no reader can be on it) and before
        // the release store that links it again; readers load that link with acquire.
        unsafe { *self.tuple.get() }
    }

    fn forward(&self) -> [u8; 4] {
        self.forward.load(Ordering::Relaxed).to_ne_bytes()
    }

    /// The data of the entry's namespace, while the entry is in the table.
    fn net_data(&self) -> Option<&NetData> {
        let data = self.data.load(Ordering::Relaxed) as *const NetData;
        // SAFETY: a non-null `data` of a linked entry is its namespace's data, which is
        // freed only after the namespace's exit callback unlinked its entries.
        unsafe { data.as_ref() }
    }

    /// Counts the entry's expiry in its namespace.
    fn count_expired(&self) {
        if let Some(d) = self.net_data() {
            Stats::bump(&d.stats.departed_expired);
        }
    }
}

/// The writers' side, under the table's lock: the free list, and limbo (slots out of
/// their chains, waiting for a grace period).
struct Spare {
    free: u32,
    limbo: u32,
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
    /// First slot of each bucket's chain.
    heads: KVVec<AtomicU32>,
    entries: KVVec<Entry>,
    /// Taken for every change of a chain or a slot.
    spare: BhLock<Spare>,
    seed: u32,
    capacity: usize,
    /// Live entries; read without the lock by the packet path to skip an empty table.
    count: AtomicUsize,
    /// Sweeps expired entries and recycles limbo while either is not empty.
    reaper: Opaque<b::delayed_work>,
}

// SAFETY: slots change only under `spare`'s lock; lock-free readers read atomics, and
// tuples only of slots that no writer touches (see `Entry`).
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
    g: BhGuard<'a, Spare>,
}

impl Locked<'_> {
    fn entry(&self, i: u32) -> &Entry {
        &self.t.entries[i as usize]
    }

    /// Unlinks every entry for which `gone` says so; returns how many.
    fn remove_where(&mut self, mut gone: impl FnMut(&Entry) -> bool) -> usize {
        let mut removed = 0;
        for bucket in 0..BUCKETS {
            let mut prev = NIL;
            let mut i = self.t.heads[bucket].load(Ordering::Relaxed);
            while i != NIL {
                let next = self.entry(i).next.load(Ordering::Relaxed);
                if gone(self.entry(i)) {
                    self.unlink((bucket, prev, i));
                    removed += 1;
                } else {
                    prev = i;
                }
                i = next;
            }
        }
        removed
    }

    /// Unlinks the expired entries, each counted in its namespace.
    fn remove_expired(&mut self) {
        let t = now();
        self.remove_where(|e| {
            let gone = expired(e.expires.load(Ordering::Relaxed), t);
            if gone {
                e.count_expired();
            }
            gone
        });
    }

    fn find(&self, tuple: &Tuple) -> Option<(usize, u32, u32)> {
        let bucket = tuple.hash(self.t.seed);
        let mut prev = NIL;
        let mut i = self.t.heads[bucket].load(Ordering::Relaxed);
        while i != NIL {
            if self.entry(i).tuple() == *tuple {
                return Some((bucket, prev, i));
            }
            prev = i;
            i = self.entry(i).next.load(Ordering::Relaxed);
        }
        None
    }

    /// Takes entry `i` (after `prev`, or first) out of `bucket`'s chain into limbo. Its
    /// own `next` stays as it is for readers still on it.
    fn unlink(&mut self, (bucket, prev, i): (usize, u32, u32)) {
        let e = self.entry(i);
        if let Some(d) = e.net_data() {
            d.departed.fetch_sub(1, Ordering::Relaxed);
        }
        e.data.store(0, Ordering::Relaxed);
        let next = e.next.load(Ordering::Relaxed);
        match prev {
            NIL => self.t.heads[bucket].store(next, Ordering::Release),
            p => self.entry(p).next.store(next, Ordering::Release),
        }
        e.spare.store(self.g.limbo, Ordering::Relaxed);
        self.g.limbo = i;
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
            heads.push(AtomicU32::new(NIL), GFP_KERNEL)?;
        }
        let mut entries = KVVec::with_capacity(capacity, GFP_KERNEL)?;
        for i in 0..capacity {
            let spare = if i + 1 < capacity { i as u32 + 1 } else { NIL };
            entries.push(Entry::new(spare), GFP_KERNEL)?;
        }
        let t = KBox::new(
            Self {
                heads,
                entries,
                spare: BhLock::new(Spare {
                    free: 0,
                    limbo: NIL,
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
            t.spare.init();
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
            g: self.spare.lock(),
        }
    }

    /// Entries the table holds at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn active(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Moves the slots in limbo to the free list once no reader can be on them any
    /// more. Process context: waits for an RCU grace period.
    fn recycle(&self) {
        let limbo = core::mem::replace(&mut self.lock().g.limbo, NIL);
        if limbo == NIL {
            return;
        }
        // SAFETY: plain call; process context, no lock held.
        unsafe { b::synchronize_rcu() };
        let mut l = self.lock();
        let mut i = limbo;
        while i != NIL {
            let e = l.entry(i);
            let next = e.spare.load(Ordering::Relaxed);
            e.spare.store(l.g.free, Ordering::Relaxed);
            l.g.free = i;
            i = next;
        }
    }

    /// Protects `tuple` for `TIMEOUT_MS` from now (again, if it already is); its
    /// packets go to `forward` (an IPv4 address), or are dropped until `set_forward`
    /// names a new owner. A new entry counts against `quota`, which must be that of the
    /// tuple's namespace (its count goes down as the entry leaves). Process context: a
    /// full table waits for the slots in limbo.
    pub(crate) fn insert(
        &self,
        tuple: &Tuple,
        forward: Option<[u8; 4]>,
        quota: Quota<'_>,
    ) -> Result<(), Full> {
        // SAFETY: converts a constant.
        let expires = now().wrapping_add(unsafe { b::prism_msecs_to_jiffies(TIMEOUT_MS) } as usize);
        let forward = u32::from_ne_bytes(forward.unwrap_or([0; 4]));
        let mut l = self.lock();
        if let Some((_, _, i)) = l.find(tuple) {
            let e = l.entry(i);
            e.expires.store(expires, Ordering::Relaxed);
            e.forward.store(forward, Ordering::Relaxed);
            return Ok(());
        }
        if l.g.free == NIL {
            l.remove_expired();
            if l.g.free == NIL && l.g.limbo != NIL {
                drop(l);
                self.recycle();
                l = self.lock();
                // Another insert may have guarded the tuple meanwhile.
                if let Some((_, _, i)) = l.find(tuple) {
                    let e = l.entry(i);
                    e.expires.store(expires, Ordering::Relaxed);
                    e.forward.store(forward, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        let i = l.g.free;
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
        let bucket = tuple.hash(self.seed);
        let e = &self.entries[i as usize];
        l.g.free = e.spare.load(Ordering::Relaxed);
        // SAFETY: a free slot: a grace period has passed since it left its chain (or
        // it never was in one), so no reader can be on it, and the lock keeps writers
        // out; the release store below publishes the tuple.
        unsafe { *e.tuple.get() = *tuple };
        e.expires.store(expires, Ordering::Relaxed);
        e.forward.store(forward, Ordering::Relaxed);
        e.data
            .store(core::ptr::from_ref(quota.data) as usize, Ordering::Relaxed);
        e.next.store(
            self.heads[bucket].load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.heads[bucket].store(i, Ordering::Release);
        self.count.fetch_add(1, Ordering::Release);
        drop(l);
        self.kick_reaper();
        Ok(())
    }

    /// Sends the packets of departed `tuple` to `to` (an IPv4 address) from now on;
    /// false if the tuple is not (or no longer) departed.
    pub(crate) fn set_forward(&self, tuple: &Tuple, to: [u8; 4]) -> bool {
        let l = self.lock();
        let Some((_, _, i)) = l.find(tuple) else {
            return false;
        };
        let e = l.entry(i);
        if expired(e.expires.load(Ordering::Relaxed), now()) {
            return false;
        }
        e.forward.store(u32::from_ne_bytes(to), Ordering::Relaxed);
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
        if self.lock().remove_where(|e| e.tuple().net == net) > 0 {
            self.kick_reaper();
        }
    }

    /// Drops expired entries and recycles limbo (the reaper's walk); again in a second
    /// while any entry is left.
    fn sweep(&self) {
        self.lock().remove_expired();
        self.recycle();
        if self.active() > 0 {
            self.kick_reaper();
        }
    }

    /// The slot of `tuple`, found without the lock.
    ///
    /// # Safety
    ///
    /// The caller is inside an RCU read-side critical section.
    unsafe fn lookup(&self, tuple: &Tuple) -> Option<&Entry> {
        let mut i = self.heads[tuple.hash(self.seed)].load(Ordering::Acquire);
        // A chain is never longer than the table; the bound only guards the walk.
        for _ in 0..self.capacity {
            let e = self.entries.get(i as usize)?;
            if e.tuple() == *tuple {
                return Some(e);
            }
            i = e.next.load(Ordering::Acquire);
        }
        None
    }

    /// Decides the fate of a packet of `tuple`; `new_connection` is a SYN without ACK.
    /// Takes no lock unless the entry must go.
    ///
    /// # Safety
    ///
    /// The caller is inside an RCU read-side critical section (netfilter hooks are).
    pub(crate) unsafe fn check(&self, tuple: &Tuple, new_connection: bool) -> Verdict {
        if self.count.load(Ordering::Acquire) == 0 {
            return Verdict::Accept;
        }
        // SAFETY: the caller holds the RCU read lock.
        let Some(e) = (unsafe { self.lookup(tuple) }) else {
            return Verdict::Accept;
        };
        let stale = expired(e.expires.load(Ordering::Relaxed), now());
        if stale || new_connection {
            // Expired, or the peer starts over on this tuple (the migrated connection is
            // over for it): the entry goes, if it is still there.
            let mut l = self.lock();
            if let Some(at) = l.find(tuple) {
                let e = l.entry(at.2);
                if expired(e.expires.load(Ordering::Relaxed), now()) {
                    e.count_expired();
                    l.unlink(at);
                } else if new_connection {
                    l.unlink(at);
                }
            }
            return Verdict::Accept;
        }
        match e.forward() {
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
unsafe extern "C" fn reap(_work: *mut b::work_struct) {
    // The table outlives its reaper (`drop` cancels it), and while the module is loaded
    // `table()` is that table.
    if let Some(t) = crate::guard::table() {
        t.sweep();
    }
}
