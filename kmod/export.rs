// SPDX-License-Identifier: GPL-2.0

//! `SOCK_EXPORT`: the whole state of one of the caller's TCP sockets, as a blob of
//! attributes that `SOCK_IMPORT` takes back unchanged. The socket is left as it was, or
//! with DETACH, finished on this host without a packet to the peer.

use crate::bindings as b;
use crate::blob;
use crate::departed::{Full, Tuple};
use crate::fault;
use crate::genl::{errno, AttrSize, Request};
use crate::guard;
use crate::ktls;
use crate::pernet;
use crate::socket::{FdSocket, SockLock};
use crate::tcp_state::TcpState;
use crate::tracker;
use crate::uapi::{cmd, state as a};
use kernel::c_str;
use kernel::prelude::*;

/// Attribute bytes of an export reply besides the queues: 47 attributes of at most 8
/// bytes plus headers, two 16-byte addresses, the congestion control name and the
/// 64-bit migration id with its pad.
const REPLY_FIXED: usize = 47 * 12 + 2 * 20 + 24 + 16;

/// The spec's `queue-chunk`: most bytes one queue attribute carries.
const QUEUE_CHUNK: usize = crate::uapi::QUEUE_CHUNK as usize;

/// Reply attribute bytes for `queued` bytes of queues in chunks of `QUEUE_CHUNK`.
fn reply_size(queued: usize) -> usize {
    REPLY_FIXED + queued + (queued / QUEUE_CHUNK + 2) * 4
}

pub(crate) fn sock_export(req: &Request<'_>) -> Result {
    let Some((fd, fd_attr)) = req.attr_u32(a::FD) else {
        req.set_err(None, c_str!("missing attribute: fd"));
        return Err(EINVAL);
    };
    let detach = req.attr(a::DETACH).is_some();
    let forward = match req.attr_u32(a::FORWARD_TO) {
        None => None,
        Some((_, at)) if !detach => {
            req.set_err(Some(at), c_str!("forward-to needs detach"));
            return Err(EINVAL);
        }
        Some((to, at)) => {
            let to = to.to_ne_bytes();
            if !crate::tunnel::is_unicast_v4(to) {
                req.set_err(
                    Some(at),
                    c_str!("forward-to must be a unicast IPv4 address, not loopback"),
                );
                return Err(EINVAL);
            }
            Some(to)
        }
    };
    let file = FdSocket::lookup(fd).inspect_err(|_| {
        req.set_err(
            Some(fd_attr),
            c_str!("fd is not an open socket of the caller"),
        );
    })?;
    let sk = file.sk()?;
    // The socket may come from another namespace (fd passing): TCP_REPAIR's own rule,
    // CAP_NET_ADMIN over the socket's network namespace, applies.
    // SAFETY: `sk` is alive while `file` holds its reference.
    if !unsafe { b::ns_capable(b::prism_sock_user_ns(sk.as_ptr()), b::PRISM_CAP_NET_ADMIN) } {
        req.set_err(
            Some(fd_attr),
            c_str!("needs CAP_NET_ADMIN in the socket's network namespace"),
        );
        return Err(EPERM);
    }
    // The reply (up to 1 MiB of queues, a high-order allocation) is allocated before the
    // socket lock, sized exactly for the queues as they are now; a socket whose queues
    // grew meanwhile gets a reply sized again under the lock. No slack for what may
    // arrive: netlink copies a reply that is more than half slack (`netlink_trim`), so
    // room for one more segment would cost every idle export a copy.
    let tls_hint = if TcpState::ulp_unlocked(sk) {
        ktls::ENCODED_MAX
    } else {
        0
    };
    let room = reply_size(TcpState::queued_unlocked(sk)) + tls_hint;
    let mut msg = req.reply_sized(cmd::SOCK_EXPORT, room)?;
    let lock = SockLock::lock(&file)?;
    let st = TcpState::capture(&lock).map_err(|(e, msg)| {
        req.set_err(Some(fd_attr), msg);
        e
    })?;
    let need = reply_size((st.send_len + st.recv_len) as usize)
        + st.tls.as_ref().map_or(0, |t| t.reply_room());
    if need > room {
        msg = req.reply_sized(cmd::SOCK_EXPORT, need)?;
    }
    // SAFETY: plain call into the random pool.
    let migration_id = unsafe { b::get_random_u64() };
    // The fixed attributes go into one reservation, sized by a dry run.
    let mut size = AttrSize::default();
    blob::encode(&st, &mut size)?;
    let fits = msg.block(size.0).and_then(|mut blk| {
        blob::encode(&st, &mut blk)?;
        if blk.full() {
            Ok(())
        } else {
            Err(errno(b::EMSGSIZE))
        }
    });
    fits.and_then(|()| msg.put_u64(a::MIGRATION_ID, migration_id, a::PAD))
        .inspect_err(|_| req.set_err(None, c_str!("state does not fit the reply")))?;
    st.write_queues(&lock, &mut msg, (a::SEND_QUEUE, a::RECV_QUEUE, QUEUE_CHUNK))
        .map_err(|(e, m)| {
            req.set_err(Some(fd_attr), m);
            e
        })?;
    if !detach {
        drop(lock);
        msg.send_reply()?;
        // SAFETY: the request's namespace lives while it is handled.
        unsafe { pernet::bump(req.net(), |s| &s.exports) };
        return Ok(());
    }

    // DETACH: the tuple is guarded before the socket lets go of it, and the socket lets
    // go only once the reply (the state) is queued to the caller. All of it under the
    // socket lock, so the state cannot change between the copy and the end.
    let table = guard::table().ok_or(ENODEV)?;
    // SAFETY: the socket is locked; its namespace is fixed for its lifetime.
    let net = unsafe { (*lock.sk()).__sk_common.skc_net.net };
    let tuple = Tuple::of_socket(
        net as usize,
        st.family,
        &st.saddr,
        &st.daddr,
        st.sport,
        st.dport,
    );
    // SAFETY: the socket holds its namespace for the duration of the call.
    let quota = unsafe { table.quota(net) }.ok_or(ENODEV)?;
    match table.insert(&tuple, forward, quota) {
        Ok(()) => {}
        Err(Full::Table) => {
            req.set_err(
                None,
                c_str!(
                    "departed-tuple table is full: cannot guard the tuple, socket left as it was"
                ),
            );
            return Err(errno(b::ENOSPC));
        }
        Err(Full::Namespace) => {
            req.set_err(
                None,
                c_str!("this namespace holds its quota of departed tuples (departed_netns_quota): socket left as it was"),
            );
            return Err(errno(b::ENOSPC));
        }
    }
    let sent = if fault::injected() {
        req.set_err(None, c_str!("the reply cannot be queued (fault injected)"));
        Err(errno(b::ENOBUFS))
    } else {
        msg.send_reply()
    };
    if let Err(e) = sent {
        table.remove(&tuple);
        return Err(e);
    }
    if let Some(t) = tracker::get() {
        // SAFETY: the socket is locked and not yet disconnected.
        unsafe { t.exported(lock.sk()) };
    }
    lock.detach();
    // SAFETY: as above.
    unsafe { pernet::bump(req.net(), |s| &s.exports) };
    Ok(())
}
