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
/// Multicast group carrying every event.
pub(crate) const MCGRP_EVENTS: &CStr = c_str!("events");
/// Multicast group carrying `SOCK_RELEASED` only.
pub(crate) const MCGRP_RELEASES: &CStr = c_str!("releases");
/// Version of this module, reported by `GET_INFO`.
pub(crate) const MODULE_VERSION: &CStr = c_str!("0.1.0");

/// Commands (`operations` in the spec).
pub(crate) mod cmd {
    pub(crate) const GET_INFO: u8 = 1;
    pub(crate) const SOCK_EXPORT: u8 = 2;
    pub(crate) const SOCK_IMPORT: u8 = 3;
    /// Events on the `events` group (`SOCK_RELEASED` also on `releases`).
    pub(crate) const SOCK_IMPORTED: u8 = 4;
    pub(crate) const SOCK_EXPORTED: u8 = 5;
    pub(crate) const SOCK_RELEASED: u8 = 6;
    pub(crate) const SOCK_FORWARD: u8 = 7;
    pub(crate) const SOCK_LIST: u8 = 8;
}

/// Version of the state blob format returned by `SOCK_EXPORT`.
pub(crate) const BLOB_VERSION: u32 = 1;
/// Largest send + receive queue, in bytes, that one export carries.
pub(crate) const MAX_QUEUE_BYTES: u32 = 1 << 20;
/// Queue bytes per attribute (an attribute holds at most 64 KiB).
pub(crate) const QUEUE_CHUNK: usize = 32 << 10;

/// Attributes of the `info` attribute set.
pub(crate) mod attr {
    pub(crate) const PAD: u16 = 1;
    pub(crate) const MODULE_VERSION: u16 = 2;
    pub(crate) const PROTO_VERSION: u16 = 3;
    pub(crate) const EXPORTS: u16 = 4;
    pub(crate) const IMPORTS: u16 = 5;
    pub(crate) const RELEASES: u16 = 6;
    pub(crate) const ERRORS: u16 = 7;
    pub(crate) const MAX_QUEUE_BYTES: u16 = 8;
    pub(crate) const DEPARTED_ACTIVE: u16 = 9;
    pub(crate) const DEPARTED_CAPACITY: u16 = 10;
    pub(crate) const DEPARTED_TIMEOUT_MS: u16 = 11;
    pub(crate) const DEPARTED_DROPPED: u16 = 12;
    pub(crate) const DEPARTED_EXPIRED: u16 = 13;
    pub(crate) const DEPARTED_FULL: u16 = 14;
    pub(crate) const TRACKED: u16 = 15;
    pub(crate) const EVENTS_SENT: u16 = 16;
    pub(crate) const EVENTS_LOST: u16 = 17;
    pub(crate) const DEPARTED_FORWARDED: u16 = 18;
    pub(crate) const DEPARTED_FORWARDED_BYTES: u16 = 19;
    pub(crate) const DEPARTED_FORWARD_FAILED: u16 = 20;
    pub(crate) const FORWARDED_UNOWNED: u16 = 21;
    pub(crate) const DEPARTED_QUOTA: u16 = 22;
}

/// Attributes of the `event` attribute set (the `events` group's messages).
pub(crate) mod event {
    pub(crate) const PAD: u16 = 1;
    pub(crate) const MIGRATION_ID: u16 = 2;
    pub(crate) const SEQ: u16 = 3;
    pub(crate) const SOCK_COOKIE: u16 = 4;
    pub(crate) const NETNS_COOKIE: u16 = 5;
    pub(crate) const FAMILY: u16 = 6;
    pub(crate) const SADDR: u16 = 7;
    pub(crate) const DADDR: u16 = 8;
    pub(crate) const SPORT: u16 = 9;
    pub(crate) const DPORT: u16 = 10;
    pub(crate) const TCP_STATE: u16 = 11;
    pub(crate) const REASON: u16 = 12;
    pub(crate) const BYTES_ACKED: u16 = 13;
    pub(crate) const BYTES_RECEIVED: u16 = 14;
    pub(crate) const DURATION_NS: u16 = 15;
    pub(crate) const TIME_WAIT_MS: u16 = 16;
    pub(crate) const PEER_FIN: u16 = 17;
}

/// Why a tracked socket left this host (`reason` of an event).
pub(crate) mod reason {
    pub(crate) const FIN: u8 = 1;
    pub(crate) const RST: u8 = 2;
    pub(crate) const TIMEOUT: u8 = 3;
    pub(crate) const ABORT: u8 = 4;
    pub(crate) const EXPORTED: u8 = 5;
}

/// Attributes of the `state` attribute set: the blob `SOCK_EXPORT` returns, and the
/// request attributes of `SOCK_EXPORT` and `SOCK_IMPORT` around it.
pub(crate) mod state {
    pub(crate) const FD: u16 = 1;
    pub(crate) const BLOB_VERSION: u16 = 2;
    pub(crate) const FAMILY: u16 = 3;
    pub(crate) const SADDR: u16 = 4;
    pub(crate) const DADDR: u16 = 5;
    pub(crate) const SPORT: u16 = 6;
    pub(crate) const DPORT: u16 = 7;
    pub(crate) const TCP_STATE: u16 = 8;
    pub(crate) const SND_UNA: u16 = 9;
    pub(crate) const SND_NXT: u16 = 10;
    pub(crate) const WRITE_SEQ: u16 = 11;
    pub(crate) const RCV_NXT: u16 = 12;
    pub(crate) const SEND_QUEUE: u16 = 13;
    pub(crate) const RECV_QUEUE: u16 = 14;
    pub(crate) const FIN_RECEIVED: u16 = 15;
    pub(crate) const MSS_CLAMP: u16 = 16;
    pub(crate) const SND_WSCALE: u16 = 17;
    pub(crate) const RCV_WSCALE: u16 = 18;
    pub(crate) const TIMESTAMPS: u16 = 19;
    pub(crate) const SACK: u16 = 20;
    pub(crate) const WSCALE_OK: u16 = 21;
    pub(crate) const TS_NOW: u16 = 22;
    pub(crate) const TS_RECENT: u16 = 23;
    pub(crate) const SND_WL1: u16 = 24;
    pub(crate) const SND_WND: u16 = 25;
    pub(crate) const MAX_WINDOW: u16 = 26;
    pub(crate) const RCV_WND: u16 = 27;
    pub(crate) const RCV_WUP: u16 = 28;
    pub(crate) const SND_CWND: u16 = 29;
    pub(crate) const SND_SSTHRESH: u16 = 30;
    pub(crate) const SRTT_US: u16 = 31;
    pub(crate) const MDEV_US: u16 = 32;
    pub(crate) const CC_NAME: u16 = 33;
    pub(crate) const NODELAY: u16 = 34;
    pub(crate) const CORK: u16 = 35;
    pub(crate) const KEEPALIVE: u16 = 36;
    pub(crate) const MARK: u16 = 37;
    pub(crate) const USER_TIMEOUT: u16 = 38;
    pub(crate) const NOTSENT_LOWAT: u16 = 39;
    pub(crate) const KEEPIDLE: u16 = 40;
    pub(crate) const KEEPINTVL: u16 = 41;
    pub(crate) const KEEPCNT: u16 = 42;
    pub(crate) const SNDBUF: u16 = 43;
    pub(crate) const RCVBUF: u16 = 44;
    pub(crate) const BUF_LOCKS: u16 = 45;
    pub(crate) const TOS: u16 = 46;
    pub(crate) const WINDOW_CLAMP: u16 = 47;
    pub(crate) const RCV_SSTHRESH: u16 = 48;
    pub(crate) const REUSEADDR: u16 = 49;
    pub(crate) const PAD: u16 = 50;
    pub(crate) const MIGRATION_ID: u16 = 51;
    pub(crate) const DETACH: u16 = 52;
    pub(crate) const BIND_ADDR: u16 = 53;
    pub(crate) const FREEBIND: u16 = 54;
    pub(crate) const TRANSPARENT: u16 = 55;
    pub(crate) const NONBLOCK: u16 = 56;
    /// Highest attribute of a blob and of a `SOCK_IMPORT` request.
    pub(crate) const MAX: u16 = NONBLOCK;
    /// `SOCK_EXPORT` (with DETACH) and `SOCK_FORWARD` requests.
    pub(crate) const FORWARD_TO: u16 = 57;
}

/// `buf-locks` bits: the buffer size was set by the application (SO_SNDBUF/SO_RCVBUF).
pub(crate) const BUF_LOCK_SND: u8 = 1;
pub(crate) const BUF_LOCK_RCV: u8 = 2;
