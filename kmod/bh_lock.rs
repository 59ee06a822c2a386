// SPDX-License-Identifier: GPL-2.0

//! A spinlock taken with bottom halves disabled, and the data it guards: for state shared
//! between process context and softirq (the netfilter hook, the tracepoint probe). The
//! 6.12 `kernel::sync::SpinLock` has no `_bh` flavour.

use crate::bindings as b;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use kernel::str::CStr;
use kernel::types::Opaque;

/// A lockdep class. Each `BhLock` gets its own through [`init_bh_lock!`], so lockdep
/// tells the module's locks apart (a lock taken under another is not "recursive").
pub(crate) struct LockClass(Opaque<b::lock_class_key>);

// SAFETY: only lockdep reads or writes the key, under its own locking; Rust code never
// looks inside.
unsafe impl Sync for LockClass {}

impl LockClass {
    /// A class for a `static`: lockdep registers static keys itself.
    pub(crate) const fn new() -> Self {
        Self(Opaque::uninit())
    }
}

/// Initialises `$lock` (a `BhLock` at its final address) in a lockdep class of its own,
/// named `$name`.
///
/// # Safety
///
/// As [`BhLock::init`]; the macro expands to that unsafe call.
macro_rules! init_bh_lock {
    ($lock:expr, $name:literal) => {{
        static CLASS: $crate::bh_lock::LockClass = $crate::bh_lock::LockClass::new();
        $lock.init(kernel::c_str!($name), &CLASS)
    }};
}
pub(crate) use init_bh_lock;

pub(crate) struct BhLock<T> {
    lock: Opaque<b::spinlock_t>,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is only reached through `BhGuard`, which holds the spinlock.
unsafe impl<T: Send> Sync for BhLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for BhLock<T> {}

impl<T> BhLock<T> {
    /// An uninitialised lock around `data`; see `init`.
    pub(crate) fn new(data: T) -> Self {
        Self {
            lock: Opaque::uninit(),
            data: UnsafeCell::new(data),
        }
    }

    /// Initialises the spinlock where it will stay, in lockdep class `class`; use
    /// [`init_bh_lock!`], which gives each call site its own class.
    ///
    /// # Safety
    ///
    /// Called once, before `lock`, and the lock must not move afterwards (it lives in a
    /// heap allocation).
    pub(crate) unsafe fn init(&self, name: &'static CStr, class: &'static LockClass) {
        let name = crate::compat::cstr_bytes_with_nul(name).as_ptr().cast();
        // SAFETY: the caller guarantees a single initialisation at the final address;
        // the name and the key are static, as lockdep keeps pointers to both.
        unsafe { b::prism_spin_lock_init(self.lock.get(), name, class.0.get()) };
    }

    /// Takes the lock; safe from process context and softirq alike.
    pub(crate) fn lock(&self) -> BhGuard<'_, T> {
        // SAFETY: initialised by `init` (the owner's constructor) before it is shared.
        unsafe { b::prism_spin_lock_bh(self.lock.get()) };
        BhGuard { l: self }
    }

    /// The data, without locking: nobody else can reach it through `&mut self`.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// The lock held; releases it on drop.
pub(crate) struct BhGuard<'a, T> {
    l: &'a BhLock<T>,
}

impl<T> Deref for BhGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the spinlock is held while the guard lives.
        unsafe { &*self.l.data.get() }
    }
}

impl<T> DerefMut for BhGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the spinlock is held while the guard lives, and the guard is borrowed
        // mutably: no other reference to the data exists.
        unsafe { &mut *self.l.data.get() }
    }
}

impl<T> Drop for BhGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: taken in `lock`, released once.
        unsafe { b::prism_spin_unlock_bh(self.l.lock.get()) };
    }
}
