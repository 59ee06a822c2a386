// SPDX-License-Identifier: GPL-2.0

//! The generic netlink contract of the `prism_sock` family.
//!
//! Must stay in step with `docs/netlink/prism_sock.yaml`: names, numbers and types here
//! are the ones the spec gives (attribute numbering starts at 1, as YNL assigns it).

use kernel::c_str;
use kernel::str::CStr;

/// Family name, as resolved by `CTRL_CMD_GETFAMILY`.
pub(crate) const FAMILY_NAME: &CStr = c_str!("prism_sock");
/// Protocol version of the family; a caller speaking a newer one is refused.
pub(crate) const PROTO_VERSION: u32 = 1;
/// Multicast group carrying migration events.
pub(crate) const MCGRP_EVENTS: &CStr = c_str!("events");
/// Version of this module, reported by `GET_INFO`.
pub(crate) const MODULE_VERSION: &CStr = c_str!("0.1.0");

/// Commands (`operations` in the spec).
pub(crate) mod cmd {
    pub(crate) const GET_INFO: u8 = 1;
}

/// Attributes of the `info` attribute set.
pub(crate) mod attr {
    pub(crate) const PAD: u16 = 1;
    pub(crate) const MODULE_VERSION: u16 = 2;
    pub(crate) const PROTO_VERSION: u16 = 3;
    pub(crate) const EXPORTS: u16 = 4;
    pub(crate) const IMPORTS: u16 = 5;
    pub(crate) const RELEASES: u16 = 6;
    pub(crate) const ERRORS: u16 = 7;
}
