// SPDX-License-Identifier: GPL-2.0

//! `GET_INFO`: module version, protocol version, limits, and the caller's namespace's
//! counters.

use crate::bindings as b;
use crate::departed::{self, netns_quota};
use crate::genl::{errno, AttrSink, Request};
use crate::guard;
use crate::pernet;
use crate::stats::Stats;
use crate::uapi::{self, cmd, info as attr};
use core::sync::atomic::Ordering;
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
    // SAFETY: the request's namespace lives while it is handled.
    let data = unsafe { pernet::net_data(req.net()) }.ok_or(ENODEV)?;
    let table = guard::table().ok_or(ENODEV)?;
    let s = &data.stats;
    // Sized to what it holds: a default-size reply is copied to trim it on the way out.
    let mut msg = req.reply_sized(cmd::GET_INFO, 512)?;
    msg.put_str(attr::MODULE_VERSION, uapi::MODULE_VERSION)?;
    msg.put_u32(attr::PROTO_VERSION, uapi::PROTO_VERSION)?;
    msg.put_u32(attr::MAX_QUEUE_BYTES, uapi::MAX_QUEUE_BYTES)?;
    msg.put_u32(attr::DEPARTED_CAPACITY, table.capacity() as u32)?;
    msg.put_u32(attr::DEPARTED_QUOTA, netns_quota(table.capacity()))?;
    msg.put_u32(attr::DEPARTED_TIMEOUT_MS, departed::TIMEOUT_MS)?;
    // The caller's namespace only.
    let gauges = [
        (attr::DEPARTED_ACTIVE, &data.departed),
        (attr::TRACKED, &data.tracked),
    ];
    for (kind, gauge) in gauges {
        msg.put_u32(kind, gauge.load(Ordering::Relaxed))?;
    }
    let counters = [
        (attr::EXPORTS, &s.exports),
        (attr::IMPORTS, &s.imports),
        (attr::RELEASES, &s.releases),
        (attr::ERRORS, &s.errors),
        (attr::DEPARTED_DROPPED, &s.departed_dropped),
        (attr::DEPARTED_EXPIRED, &s.departed_expired),
        (attr::DEPARTED_FULL, &s.departed_full),
        (attr::DEPARTED_FORWARDED, &s.forwarded),
        (attr::DEPARTED_FORWARDED_BYTES, &s.forwarded_bytes),
        (attr::DEPARTED_FORWARD_FAILED, &s.forward_failed),
        (attr::FORWARDED_UNOWNED, &s.unowned),
        (attr::EVENTS_SENT, &s.events_sent),
        (attr::EVENTS_LOST, &s.events_lost),
    ];
    for (kind, counter) in counters {
        msg.put_u64(kind, Stats::get(counter), attr::PAD)?;
    }
    msg.send_reply()
}
