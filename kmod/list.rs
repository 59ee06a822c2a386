// SPDX-License-Identifier: GPL-2.0

//! `SOCK_LIST`: a dump of the caller's namespace's tracked migrated sockets, one message
//! each, so that a listener of the `events` group that lost events (ENOBUFS) can
//! rebuild its view and go on from the sequence number each entry carries.

use crate::bindings as b;
use crate::genl::{errno, DumpMsg, SkbAttrs};
use crate::pernet;
use crate::tracker::{self, Listed, BUCKETS};
use crate::uapi::{cmd, event as a};
use core::ffi::{c_int, c_long};
use kernel::prelude::*;

/// Entries copied out of the tracker per pass over a bucket.
const BATCH: usize = 8;

/// The dump callback. `cb->args[0]` is the next bucket, `args[1]` how many of the
/// namespace's entries of that bucket are already in earlier messages.
///
/// # Safety
///
/// Called by genetlink with the dump's skb and callback.
pub(crate) unsafe extern "C" fn sock_list(
    skb: *mut b::sk_buff,
    cb: *mut b::netlink_callback,
) -> c_int {
    let Some(tracker) = tracker::get() else {
        return errno(b::ENODEV).to_errno();
    };
    // SAFETY: `cb` is the live dump; its `args` (six longs, zeroed when the dump
    // started) belong to this family's callback until the dump ends.
    let args = unsafe { core::slice::from_raw_parts_mut(b::prism_dump_args(cb), 2) };
    // SAFETY: as above; the requester's socket holds its namespace.
    let net = unsafe { b::prism_dump_net(cb) };
    let (mut bucket, mut skip) = (args[0].max(0) as usize, args[1].max(0) as usize);
    let mut written = 0;
    let mut batch = [Listed::default(); BATCH];
    while bucket < BUCKETS {
        let (n, more) = tracker.list_bucket(net, bucket, skip, &mut batch);
        for (i, entry) in batch[..n].iter().enumerate() {
            // SAFETY: `net` is alive (above).
            let seq = unsafe { pernet::current_seq(net) };
            // SAFETY: the arguments of this dump call.
            let fits = unsafe { put(skb, cb, entry, net, seq) };
            if fits.is_err() {
                args[0] = bucket as c_long;
                args[1] = (skip + i) as c_long;
                return if written > 0 {
                    written
                } else {
                    errno(b::EMSGSIZE).to_errno()
                };
            }
            written += 1;
        }
        if more {
            skip += n;
        } else {
            bucket += 1;
            skip = 0;
        }
    }
    args[0] = BUCKETS as c_long;
    args[1] = 0;
    0
}

/// One entry as a message of the dump; `Err` (nothing left in `skb`) when it does not
/// fit.
///
/// # Safety
///
/// `skb` and `cb` must be the arguments of the running dump call; `net` alive.
unsafe fn put(
    skb: *mut b::sk_buff,
    cb: *mut b::netlink_callback,
    e: &Listed,
    net: *mut b::net,
    seq: u64,
) -> Result {
    // SAFETY: the caller's guarantees.
    let mut msg = unsafe { DumpMsg::begin(skb, cb, cmd::SOCK_LIST) }.ok_or(errno(b::EMSGSIZE))?;
    // SAFETY: the caller keeps `net` alive.
    unsafe { e.id.put(&mut msg, net, seq, e.tcp_state) }?;
    msg.put_u64(a::DURATION_NS, e.duration_ns, a::PAD)?;
    msg.end();
    Ok(())
}
