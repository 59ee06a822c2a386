// SPDX-License-Identifier: GPL-2.0

//! The generic netlink contract of the `prism_sock` family.
//!
//! Names, numbers and request policies come from `docs/netlink/prism_sock.yaml`
//! (`uapi_generated.rs`, written by `make uapi`); what is left here are this module's
//! own values, which the spec does not fix.

#[rustfmt::skip]
#[path = "uapi_generated.rs"]
mod generated;

pub(crate) use generated::*;

use kernel::c_str;
use kernel::str::CStr;

/// Version of this module, reported by `GET_INFO`.
pub(crate) const MODULE_VERSION: &CStr = c_str!("0.1.0");

/// Largest send + receive queue, in bytes, that one export carries.
pub(crate) const MAX_QUEUE_BYTES: u32 = 1 << 20;

/// `buf-locks` bits: the buffer size was set by the application (SO_SNDBUF/SO_RCVBUF).
pub(crate) const BUF_LOCK_SND: u8 = 1;
pub(crate) const BUF_LOCK_RCV: u8 = 2;
