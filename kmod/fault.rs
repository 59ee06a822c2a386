// SPDX-License-Identifier: GPL-2.0

//! Failure points that no allocation stands for, for the fault-injection tests. Each
//! counts in the calling task's `fail-nth` (CONFIG_FAULT_INJECTION) as an allocation
//! does; without fault injection in the kernel nothing ever fails here.

use crate::bindings as b;

/// Whether to fail at this point.
pub(crate) fn injected() -> bool {
    // SAFETY: no arguments; it reads and counts down the current task's fail-nth.
    unsafe { b::prism_should_fail() }
}
