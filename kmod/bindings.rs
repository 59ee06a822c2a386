// SPDX-License-Identifier: GPL-2.0

//! Bindings generated at build time from `bindings_helper.h` (see `Kbuild`), for the
//! kernel APIs that the in-tree `kernel` crate of 6.12 does not wrap.

#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub,
    missing_docs,
    improper_ctypes,
    unknown_lints,
    unnecessary_transmutes,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::as_underscore,
    clippy::cast_lossless,
    clippy::ptr_as_ptr,
    clippy::ref_as_ptr,
    clippy::undocumented_unsafe_blocks
)]

include!("bindings_generated.rs");
