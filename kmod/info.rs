// SPDX-License-Identifier: GPL-2.0

//! `GET_INFO`: module version, protocol version and counters.

use crate::bindings as b;
use crate::departed;
use crate::genl::{errno, AttrSink, Request};
use crate::guard;
use crate::stats::{Stats, STATS};
use crate::tracker;
use crate::uapi::{self, attr, cmd};
use kernel::c_str;
use kernel::prelude::*;

pub(crate) fn get_info(req: &Request<'_>) -> Result {
    if let Some((version, a)) = req.attr_u32(attr::PROTO_VERSION) {
        if version == 0 {
            req.set_err(Some(a), c_str!("proto-version must be at least 1"));
            return Err(EINVAL);
        }
        if version > uapi::PROTO_VERSION {
            req.set_err(
                Some(a),
                c_str!("caller speaks a newer protocol than this module"),
            );
            return Err(errno(b::EPROTONOSUPPORT));
        }
    }
    // Sized to what it holds: a default-size reply is copied to trim it on the way out.
    let mut msg = req.reply_sized(cmd::GET_INFO, 512)?;
    msg.put_str(attr::MODULE_VERSION, uapi::MODULE_VERSION)?;
    msg.put_u32(attr::PROTO_VERSION, uapi::PROTO_VERSION)?;
    msg.put_u64(attr::EXPORTS, Stats::get(&STATS.exports), attr::PAD)?;
    msg.put_u64(attr::IMPORTS, Stats::get(&STATS.imports), attr::PAD)?;
    msg.put_u64(attr::RELEASES, Stats::get(&STATS.releases), attr::PAD)?;
    msg.put_u64(attr::ERRORS, Stats::get(&STATS.errors), attr::PAD)?;
    msg.put_u32(attr::MAX_QUEUE_BYTES, uapi::MAX_QUEUE_BYTES)?;
    if let Some(t) = guard::table() {
        msg.put_u32(attr::DEPARTED_ACTIVE, t.active() as u32)?;
        msg.put_u32(attr::DEPARTED_CAPACITY, t.capacity() as u32)?;
        msg.put_u32(attr::DEPARTED_TIMEOUT_MS, departed::TIMEOUT_MS)?;
        msg.put_u64(attr::DEPARTED_DROPPED, Stats::get(&t.dropped), attr::PAD)?;
        msg.put_u64(attr::DEPARTED_EXPIRED, Stats::get(&t.expired), attr::PAD)?;
        msg.put_u64(attr::DEPARTED_FULL, Stats::get(&t.full), attr::PAD)?;
        msg.put_u64(
            attr::DEPARTED_FORWARDED,
            Stats::get(&t.forwarded),
            attr::PAD,
        )?;
        msg.put_u64(
            attr::DEPARTED_FORWARDED_BYTES,
            Stats::get(&t.forwarded_bytes),
            attr::PAD,
        )?;
        msg.put_u64(
            attr::DEPARTED_FORWARD_FAILED,
            Stats::get(&t.forward_failed),
            attr::PAD,
        )?;
        msg.put_u64(attr::FORWARDED_UNOWNED, Stats::get(&t.unowned), attr::PAD)?;
    }
    if let Some(t) = tracker::get() {
        msg.put_u32(attr::TRACKED, t.tracked() as u32)?;
        msg.put_u64(attr::EVENTS_SENT, Stats::get(&t.sent), attr::PAD)?;
        msg.put_u64(attr::EVENTS_LOST, Stats::get(&t.lost), attr::PAD)?;
    }
    msg.send_reply()
}
