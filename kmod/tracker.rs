// SPDX-License-Identifier: GPL-2.0

//! The release notifier: every socket `SOCK_IMPORT` built is tracked until it reaches
//! TCP_CLOSE (FIN handshake done, reset, timed out or aborted: `SOCK_RELEASED`) or is
//! exported again (`SOCK_EXPORTED`).
//!
//! The end is seen through the `inet_sock_set_state` tracepoint, found by name (it is
//! not exported to modules) and probed for the module's lifetime. Nothing is hooked
//! into the sockets themselves, so unloading leaves them working, merely untracked.
//! The probe runs in softirq or under the socket's spinlock: it only moves the
//! preallocated event to a queue; a work item assigns the per-namespace sequence
//! number and sends, in queue order, from process context.

use crate::bh_lock::{BhGuard, BhLock};
use crate::bindings as b;
use crate::compat;
use crate::events::{self, classify, Event, NetRef, SocketId};
use crate::pernet;
use crate::uapi::{cmd, reason};
use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use kernel::alloc::KVVec;
use kernel::prelude::*;
use kernel::types::Opaque;

pub(crate) const BUCKETS: usize = 4096;

/// A tracked socket: what its events need, with its `SOCK_RELEASED` preallocated.
struct Tracked {
    sk: usize,
    next: *mut Tracked,
    acked_at_import: u64,
    received_at_import: u64,
    imported_ns: u64,
    event: KBox<Event>,
}

/// Guarded by `Tracker::lock`.
struct Slots {
    heads: KVVec<*mut Tracked>,
    pending_head: *mut Event,
    pending_tail: *mut Event,
    /// Set at unload: nothing is queued any more.
    stopped: bool,
}

pub(crate) struct Tracker {
    slots: BhLock<Slots>,
    /// Tracked sockets; read without the lock by the probe to skip the common case.
    count: AtomicUsize,
    work: Opaque<b::work_struct>,
    family: AtomicPtr<b::genl_family>,
    tracepoint: AtomicPtr<b::tracepoint>,
}

// SAFETY: `slots` is only reached with the spinlock held; the rest is atomic or set
// before the tracker is shared.
unsafe impl Sync for Tracker {}
// SAFETY: as above.
unsafe impl Send for Tracker {}

/// The tracker while the module is loaded.
static CURRENT: AtomicPtr<Tracker> = AtomicPtr::new(core::ptr::null_mut());

/// The tracker; `None` outside the module's lifetime. Command handlers run only while
/// the family is registered, inside the tracker's lifetime.
pub(crate) fn get() -> Option<&'static Tracker> {
    // SAFETY: a non-null pointer is the live tracker, freed only after the family.
    unsafe { CURRENT.load(Ordering::Acquire).as_ref() }
}

fn bucket(sk: usize) -> usize {
    // Sockets are cache-line aligned slab objects: drop the low bits, mix the rest.
    ((sk >> 6).wrapping_mul(0x9e37_79b9)) % BUCKETS
}

fn now_ns() -> u64 {
    // SAFETY: plain clock read.
    unsafe { b::prism_ktime_get_ns() }
}

/// The table locked, with the tracker's counters at hand.
struct Locked<'a> {
    t: &'a Tracker,
    g: BhGuard<'a, Slots>,
}

impl Locked<'_> {
    fn slots(&mut self) -> &mut Slots {
        &mut self.g
    }

    /// Takes `sk`'s entry out of the table.
    fn remove(&mut self, sk: usize) -> Option<KBox<Tracked>> {
        let s = self.slots();
        let mut link: *mut *mut Tracked = &mut s.heads[bucket(sk)];
        // SAFETY: every pointer in a chain is a leaked `KBox<Tracked>` owned by the table.
        unsafe {
            while !(*link).is_null() {
                let e = *link;
                if (*e).sk == sk {
                    *link = (*e).next;
                    self.t.count.fetch_sub(1, Ordering::Release);
                    let t = KBox::from_raw(e);
                    // The event holds a reference on the namespace.
                    if let Some(d) = pernet::net_data(t.event.net.as_ptr()) {
                        d.tracked.fetch_sub(1, Ordering::Relaxed);
                    }
                    return Some(t);
                }
                link = &mut (*e).next;
            }
        }
        None
    }

    /// Appends `ev` to the pending queue; false (and `ev` freed) once stopped.
    fn push(&mut self, ev: KBox<Event>) -> bool {
        let s = self.slots();
        if s.stopped {
            return false;
        }
        let ev = KBox::into_raw(ev);
        if s.pending_tail.is_null() {
            s.pending_head = ev;
        } else {
            // SAFETY: the tail is a queued event owned by the queue.
            unsafe { (*s.pending_tail).next = ev };
        }
        s.pending_tail = ev;
        true
    }
}

/// A socket ready to be tracked, its allocations done.
pub(crate) struct Prepared {
    tracked: KBox<Tracked>,
    /// `SOCK_IMPORTED`, built only when the `events` group had a listener as the import
    /// began: a hop nobody watches allocates no event.
    imported: Option<KBox<Event>>,
}

impl Tracker {
    pub(crate) fn new() -> Result<KBox<Self>> {
        let mut heads = KVVec::with_capacity(BUCKETS, GFP_KERNEL)?;
        for _ in 0..BUCKETS {
            heads.push(core::ptr::null_mut(), GFP_KERNEL)?;
        }
        let t = KBox::new(
            Self {
                slots: BhLock::new(Slots {
                    heads,
                    pending_head: core::ptr::null_mut(),
                    pending_tail: core::ptr::null_mut(),
                    stopped: false,
                }),
                count: AtomicUsize::new(0),
                work: Opaque::uninit(),
                family: AtomicPtr::new(core::ptr::null_mut()),
                tracepoint: AtomicPtr::new(core::ptr::null_mut()),
            },
            GFP_KERNEL,
        )?;
        // SAFETY: both live in the box, whose address is stable until it is freed.
        unsafe {
            crate::bh_lock::init_bh_lock!(t.slots, "prism_sock_tracker");
            b::prism_init_work(t.work.get(), Some(run));
        }
        CURRENT.store(core::ptr::from_ref(&*t).cast_mut(), Ordering::Release);
        Ok(t)
    }

    /// Starts tracking: events go out through `family`, which stays registered until
    /// `stop` has returned.
    pub(crate) fn start(&self, family: *const b::genl_family) -> Result {
        self.family.store(family.cast_mut(), Ordering::Release);
        let mut found: *mut b::tracepoint = core::ptr::null_mut();
        // SAFETY: `find` only compares names and writes `found`, which outlives the call.
        unsafe {
            b::for_each_kernel_tracepoint(Some(find), core::ptr::from_mut(&mut found).cast())
        };
        if found.is_null() {
            pr_err!("tracepoint inet_sock_set_state not found\n");
            return Err(ENOENT);
        }
        // SAFETY: `probe` has the tracepoint's signature; `self` outlives the
        // registration (`stop` unregisters before the tracker is freed).
        let ret = unsafe {
            b::tracepoint_probe_register(
                found,
                probe as *const () as *mut c_void,
                core::ptr::from_ref(self).cast_mut().cast(),
            )
        };
        crate::genl::to_result(ret)?;
        self.tracepoint.store(found, Ordering::Release);
        Ok(())
    }

    /// Unhooks the probe, waits for running probes, sends what is queued, and queues
    /// nothing after. Tracked sockets keep working, untracked. Idempotent.
    pub(crate) fn stop(&self) {
        let tp = self
            .tracepoint
            .swap(core::ptr::null_mut(), Ordering::AcqRel);
        if !tp.is_null() {
            // SAFETY: registered in `start` with these arguments.
            unsafe {
                b::tracepoint_probe_unregister(
                    tp,
                    probe as *const () as *mut c_void,
                    core::ptr::from_ref(self).cast_mut().cast(),
                );
                b::prism_tracepoint_synchronize_unregister();
            }
        }
        self.lock().slots().stopped = true;
        // SAFETY: initialised in `new`; nothing queues the work once stopped.
        unsafe { b::flush_work(self.work.get()) };
        self.drain();
        // The family goes next: later drains (none is expected) must not reach it.
        self.family.store(core::ptr::null_mut(), Ordering::Release);
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            t: self,
            g: self.slots.lock(),
        }
    }

    /// Allocates what tracking `sk` (built from a blob with `migration_id` and this
    /// tuple) needs, before the import commits.
    ///
    /// # Safety
    ///
    /// `sk` must be a live TCP socket the caller holds.
    pub(crate) unsafe fn prepare(
        &self,
        sk: *mut b::sock,
        migration_id: u64,
        tuple: (u16, &[u8; 16], &[u8; 16], u16, u16),
    ) -> Result<Prepared> {
        let mut cookie = [0u32; 2];
        // SAFETY: the caller holds `sk`.
        let net = unsafe {
            b::sock_diag_save_cookie(sk, cookie.as_mut_ptr());
            b::prism_sock_net(sk)
        };
        let (family, saddr, daddr, sport, dport) = tuple;
        let event = |cmd| Event {
            cmd,
            // SAFETY: the socket holds a reference on its namespace.
            net: unsafe { NetRef::get(net) },
            id: SocketId {
                migration_id,
                sock_cookie: u64::from(cookie[0]) | u64::from(cookie[1]) << 32,
                family,
                saddr: *saddr,
                daddr: *daddr,
                sport,
                dport,
            },
            tcp_state: 0,
            reason: 0,
            bytes_acked: 0,
            bytes_received: 0,
            duration_ns: 0,
            time_wait_ms: 0,
            peer_fin: false,
            next: core::ptr::null_mut(),
        };
        let released = KBox::new(event(cmd::SOCK_RELEASED), GFP_KERNEL)?;
        // SAFETY: the socket holds a reference on its namespace.
        let imported = if unsafe { self.listening(net, cmd::SOCK_IMPORTED) } {
            Some(KBox::new(event(cmd::SOCK_IMPORTED), GFP_KERNEL)?)
        } else {
            None
        };
        let tracked = KBox::new(
            Tracked {
                sk: sk as usize,
                next: core::ptr::null_mut(),
                acked_at_import: 0,
                received_at_import: 0,
                imported_ns: 0,
                event: released,
            },
            GFP_KERNEL,
        )?;
        Ok(Prepared { tracked, imported })
    }

    /// Tracks the imported socket and announces it. Under the socket lock, so its state
    /// cannot move between the check and the insertion: a socket that already reached
    /// TCP_CLOSE is announced released at once.
    ///
    /// # Safety
    ///
    /// `sk` must be the socket `p` was prepared for, locked by the caller.
    pub(crate) unsafe fn track(&self, sk: *mut b::sock, p: Prepared) {
        let Prepared {
            mut tracked,
            imported,
        } = p;
        let tp = sk.cast::<b::tcp_sock>();
        // SAFETY: the caller holds the locked socket.
        let state = unsafe {
            tracked.acked_at_import = (*tp).bytes_acked;
            tracked.received_at_import = (*tp).bytes_received;
            (*sk).__sk_common.skc_state
        };
        tracked.imported_ns = now_ns();
        let imported = imported.map(|mut ev| {
            ev.tcp_state = state;
            ev
        });
        let mut l = self.lock();
        let queued = imported.is_some_and(|ev| l.push(ev));
        if state == b::TCP_CLOSE as u8 {
            drop(l);
            // SAFETY: as above.
            let ev = unsafe { finish(tracked, sk, b::TCP_CLOSE as c_int) };
            self.queue(ev);
        } else if !l.slots().stopped {
            let head = &mut l.slots().heads[bucket(sk as usize)];
            tracked.next = *head;
            // SAFETY: the event holds a reference on the namespace.
            if let Some(d) = unsafe { pernet::net_data(tracked.event.net.as_ptr()) } {
                d.tracked.fetch_add(1, Ordering::Relaxed);
            }
            *head = KBox::into_raw(tracked);
            self.count.fetch_add(1, Ordering::Release);
            drop(l);
        }
        if queued {
            self.kick();
        }
    }

    /// A tracked socket leaves with DETACH: `SOCK_EXPORTED` instead of a release.
    ///
    /// # Safety
    ///
    /// `sk` must be a TCP socket locked by the caller, before it is disconnected.
    pub(crate) unsafe fn exported(&self, sk: *mut b::sock) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let Some(tracked) = self.lock().remove(sk as usize) else {
            return;
        };
        // Nobody to tell (a `releases` listener is not told of exports): the entry goes
        // without building its event.
        // SAFETY: the event holds a reference on its namespace.
        if !unsafe { self.listening(tracked.event.net.as_ptr(), cmd::SOCK_EXPORTED) } {
            return;
        }
        // SAFETY: the caller holds the locked socket.
        let mut ev = unsafe { finish(tracked, sk, (*sk).__sk_common.skc_state.into()) };
        ev.cmd = cmd::SOCK_EXPORTED;
        ev.reason = reason::EXPORTED;
        ev.time_wait_ms = 0;
        self.queue(ev);
    }

    /// Queues `ev` for sending, or frees it at once when nobody listens: an event is
    /// built and sent only for listeners, so a hop nobody watches schedules no work.
    fn queue(&self, ev: KBox<Event>) {
        if ev.cmd == cmd::SOCK_RELEASED {
            // SAFETY: the event holds a reference on its namespace.
            unsafe { pernet::bump(ev.net.as_ptr(), |s| &s.releases) };
        }
        // SAFETY: the event holds a reference on its namespace.
        if unsafe { self.listening(ev.net.as_ptr(), ev.cmd) } && self.lock().push(ev) {
            self.kick();
        }
    }

    /// Whether a group that carries events `cmd` has a listener (see
    /// [`events::has_listeners`]). Callable in softirq.
    ///
    /// # Safety
    ///
    /// `net` must be alive.
    unsafe fn listening(&self, net: *mut b::net, cmd: u8) -> bool {
        let family = self.family.load(Ordering::Acquire);
        // SAFETY: the family stays registered while it is stored here (`stop` clears
        // it before the family goes); the caller keeps `net` alive.
        !family.is_null() && unsafe { events::has_listeners(family, net, cmd) }
    }

    fn kick(&self) {
        // SAFETY: initialised in `new`; `stop` flushes it before the tracker goes.
        unsafe { b::prism_schedule_work(self.work.get()) };
    }

    /// Sends every queued event, oldest first. Process context.
    fn drain(&self) {
        let family = self.family.load(Ordering::Acquire);
        loop {
            let mut ev = {
                let mut l = self.lock();
                let s = l.slots();
                let head = s.pending_head;
                s.pending_head = core::ptr::null_mut();
                s.pending_tail = core::ptr::null_mut();
                head
            };
            if ev.is_null() {
                return;
            }
            while !ev.is_null() {
                // SAFETY: queued events are leaked boxes now owned by this loop.
                let e = unsafe { KBox::from_raw(ev) };
                ev = e.next;
                // SAFETY: the event holds a reference on its namespace.
                let seq = unsafe { pernet::next_seq(e.net.as_ptr()) };
                let ret = if family.is_null() {
                    -(b::ENODEV as c_int)
                } else {
                    // SAFETY: the family is unregistered only after `stop`, which
                    // drains before it returns.
                    unsafe { e.send(family, seq) }
                };
                let delivered = ret == 0 || ret == -(b::ESRCH as c_int);
                // SAFETY: the event holds a reference on its namespace.
                unsafe {
                    pernet::bump(e.net.as_ptr(), |s| {
                        if delivered {
                            &s.events_sent
                        } else {
                            &s.events_lost
                        }
                    })
                };
            }
        }
    }
}

/// A tracked socket as `SOCK_LIST` reports it.
#[derive(Clone, Copy, Default)]
pub(crate) struct Listed {
    pub(crate) id: SocketId,
    pub(crate) tcp_state: u8,
    pub(crate) duration_ns: u64,
}

impl Tracker {
    /// Copies the tracked sockets of namespace `net` in `bucket`, past the first
    /// `skip`, into `out`, as many as fit; returns how many, and whether more of the
    /// namespace's remain in the bucket. A dump walks the buckets in order with this,
    /// holding the lock only while it copies.
    pub(crate) fn list_bucket(
        &self,
        net: *mut b::net,
        bucket: usize,
        skip: usize,
        out: &mut [Listed],
    ) -> (usize, bool) {
        let now = now_ns();
        let mut l = self.lock();
        let Some(&head) = l.slots().heads.get(bucket) else {
            return (0, false);
        };
        let (mut seen, mut n) = (0, 0);
        let mut e = head;
        // SAFETY: every pointer in a chain is a leaked `KBox<Tracked>` owned by the
        // table, which the lock keeps in place.
        while let Some(t) = unsafe { e.as_ref() } {
            e = t.next;
            if t.event.net.as_ptr() != net {
                continue;
            }
            seen += 1;
            if seen <= skip {
                continue;
            }
            let Some(slot) = out.get_mut(n) else {
                return (n, true);
            };
            // SAFETY: an entry leaves the table (under this lock) before its socket
            // reaches TCP_CLOSE, so a socket found here is not freed yet; its state
            // is one byte, read without its lock.
            let tcp_state = unsafe { (*(t.sk as *const b::sock)).__sk_common.skc_state };
            *slot = Listed {
                id: t.event.id,
                tcp_state,
                duration_ns: now.wrapping_sub(t.imported_ns),
            };
            n += 1;
        }
        (n, false)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop();
        CURRENT.store(core::ptr::null_mut(), Ordering::Release);
        let s = self.slots.get_mut();
        for head in s.heads.iter_mut() {
            // Not `mem::take`: raw pointers implement `Default` only from Rust 1.88 on,
            // and Debian's kernel is built with 1.85.
            let mut e = *head;
            *head = core::ptr::null_mut();
            while !e.is_null() {
                // SAFETY: chains hold leaked boxes; the probe is gone, nobody else
                // reaches them.
                let t = unsafe { KBox::from_raw(e) };
                e = t.next;
            }
        }
    }
}

/// Fills `t`'s release event for `sk`, which leaves state `old`.
///
/// # Safety
///
/// `sk` must be the live TCP socket `t` tracks.
unsafe fn finish(t: KBox<Tracked>, sk: *const b::sock, old: c_int) -> KBox<Event> {
    let tp = sk.cast::<b::tcp_sock>();
    let Tracked {
        acked_at_import,
        received_at_import,
        imported_ns,
        mut event,
        ..
    } = KBox::into_inner(t);
    // SAFETY: the caller guarantees `sk` is live and tracked.
    let (why, time_wait_ms, peer_fin) = unsafe { classify(sk, old) };
    event.tcp_state = old as u8;
    event.reason = why;
    event.time_wait_ms = time_wait_ms;
    event.peer_fin = peer_fin;
    // SAFETY: as above.
    unsafe {
        event.bytes_acked = (*tp).bytes_acked.wrapping_sub(acked_at_import);
        event.bytes_received = (*tp).bytes_received.wrapping_sub(received_at_import);
    }
    event.duration_ns = now_ns().wrapping_sub(imported_ns);
    event
}

/// Looks for `inet_sock_set_state` among the kernel's tracepoints.
///
/// # Safety
///
/// Called by `for_each_kernel_tracepoint` only, with the `found` pointer `start` gave.
unsafe extern "C" fn find(tp: *mut b::tracepoint, found: *mut c_void) {
    // SAFETY: `for_each_kernel_tracepoint` passes live tracepoints with C-string names.
    let name = unsafe { kernel::str::CStr::from_char_ptr(b::prism_tracepoint_name(tp).cast()) };
    if compat::cstr_bytes(name) == b"inet_sock_set_state" {
        // SAFETY: `found` is the `*mut *mut tracepoint` given by `start`.
        unsafe { *found.cast::<*mut b::tracepoint>() = tp };
    }
}

/// The tracepoint probe: `sk` moves from `old` to `new`. Runs for every inet socket's
/// state change on the host, so the common case is two compares.
///
/// # Safety
///
/// Called by the tracepoint only, with the tracker registered as `data`.
unsafe extern "C" fn probe(data: *mut c_void, sk: *const b::sock, old: c_int, new: c_int) {
    if new != b::TCP_CLOSE as c_int {
        return;
    }
    // SAFETY: `data` is the tracker registered with the probe, alive until the probe is
    // unregistered and running probes have finished.
    let t = unsafe { &*data.cast::<Tracker>() };
    if t.count.load(Ordering::Acquire) == 0 {
        return;
    }
    let Some(tracked) = t.lock().remove(sk as usize) else {
        return;
    };
    // SAFETY: the tracepoint fires for a live socket, which we tracked.
    let ev = unsafe { finish(tracked, sk, old) };
    t.queue(ev);
}

/// The event work function.
///
/// # Safety
///
/// Called by the workqueue only.
unsafe extern "C" fn run(_work: *mut b::work_struct) {
    if let Some(t) = get() {
        t.drain();
    }
}
