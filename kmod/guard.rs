// SPDX-License-Identifier: GPL-2.0

//! The RST guard: a netfilter LOCAL_IN hook in every network namespace that takes the
//! packets of tuples in the departed table (`departed.rs`) before TCP can answer them
//! with RST: sent on to the flow's new owner (`tunnel.rs`) or dropped. On the owner's
//! side it drops what another host forwarded for a connection that has no socket here
//! (yet, or any more), for the same reason.
//!
//! A LOCAL_OUT hook drops any RST this host sends on a departed tuple. A packet that
//! passed the LOCAL_IN hook just before its tuple departed meets no socket in TCP's
//! lookup (the export unhashed it meanwhile) and the listener answers it with RST; the
//! entry is in the table by then, so the RST stays here and the peer retransmits into
//! the guard.

use crate::bindings as b;
use crate::departed::{Departed, Tuple, Verdict};
use crate::pernet;
use crate::stats::Stats;
use crate::tunnel;
use core::ffi::{c_int, c_uint, c_void};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::prelude::*;

/// Everything the hooks and the pernet callbacks reach, at a stable address.
struct Inner {
    table: KBox<Departed>,
    hooks: [b::nf_hook_ops; 4],
    pernet: b::pernet_operations,
}

/// The guard of this module instance: registered in `new`, unregistered on drop.
pub(crate) struct Guard {
    inner: KBox<Inner>,
}

// SAFETY: after registration `Inner` is only read (the table synchronises itself).
unsafe impl Send for Guard {}
// SAFETY: as above.
unsafe impl Sync for Guard {}

/// Set while the guard is registered; the pernet callbacks and the command handlers
/// reach the table through it. Command handlers only run while the family is
/// registered, which is inside the guard's lifetime.
static CURRENT: AtomicPtr<Inner> = AtomicPtr::new(core::ptr::null_mut());

/// The departed table; `None` only outside the module's lifetime.
pub(crate) fn table() -> Option<&'static Departed> {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: a non-null pointer is the registered `Inner`, which is freed only after
    // the family (whose handlers call this) and the hooks are gone.
    unsafe { p.as_ref() }.map(|i| &*i.table)
}

/// Reads `N` bytes at `offset` of the packet, linear or not.
///
/// # Safety
///
/// `skb` must be a valid packet for the duration of the call.
unsafe fn bytes<const N: usize>(skb: *const b::sk_buff, offset: c_int) -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    // SAFETY: `buf` has room for `N` bytes; the helper checks the packet's length.
    let p =
        unsafe { b::prism_skb_header_pointer(skb, offset, N as c_int, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null means `N` readable bytes, in the packet or copied into `buf`.
    Some(unsafe { *p.cast::<[u8; N]>() })
}

/// The tuple of a TCP packet as an incoming one names it (its source is the remote end),
/// and its TCP flags.
///
/// # Safety
///
/// `skb` and `state` must be the arguments of a netfilter hook call.
unsafe fn parse(skb: *const b::sk_buff, state: &b::nf_hook_state) -> Option<(Tuple, u8)> {
    let mut t = Tuple {
        net: state.net as usize,
        ..Default::default()
    };
    // SAFETY: `skb` is valid during the hook.
    let nh = unsafe { b::prism_skb_network_offset(skb) };
    let th = match u32::from(state.pf) {
        b::NFPROTO_IPV4 => {
            // SAFETY: as above.
            let ip: [u8; 20] = unsafe { bytes(skb, nh)? };
            let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            if u32::from(ip[9]) != b::IPPROTO_TCP || frag_offset != 0 {
                return None;
            }
            t.remote[..4].copy_from_slice(&ip[12..16]);
            t.local[..4].copy_from_slice(&ip[16..20]);
            nh + c_int::from(ip[0] & 0xf) * 4
        }
        b::NFPROTO_IPV6 => {
            // SAFETY: as above.
            let ip: [u8; 40] = unsafe { bytes(skb, nh)? };
            t.v6 = true;
            t.remote.copy_from_slice(&ip[8..24]);
            t.local.copy_from_slice(&ip[24..40]);
            let mut next = ip[6];
            let mut frag: b::__be16 = 0;
            // SAFETY: walks the extension headers of a valid packet.
            let off = unsafe { b::ipv6_skip_exthdr(skb, nh + 40, &mut next, &mut frag) };
            if off < 0 || u32::from(next) != b::IPPROTO_TCP || u16::from_be(frag) & !7 != 0 {
                return None;
            }
            off
        }
        _ => return None,
    };
    // SAFETY: as above.
    let tcp: [u8; 14] = unsafe { bytes(skb, th)? };
    t.rport = u16::from_be_bytes([tcp[0], tcp[1]]);
    t.lport = u16::from_be_bytes([tcp[2], tcp[3]]);
    Some((t, tcp[13]))
}

/// The LOCAL_IN hook.
///
/// # Safety
///
/// Called by netfilter only: `priv_` is the departed table, `skb` and `state` valid.
unsafe extern "C" fn hook(
    priv_: *mut c_void,
    skb: *mut b::sk_buff,
    state: *const b::nf_hook_state,
) -> c_uint {
    // SAFETY: `priv_` is the table registered with this hook; netfilter runs hooks under
    // RCU and the guard waits for an RCU grace period before freeing it.
    let table = unsafe { &*priv_.cast::<Departed>() };
    // SAFETY: netfilter passes a valid hook state.
    let state = unsafe { &*state };
    // SAFETY: `state.in_` is the receiving device, alive during the hook, or null.
    let tunneled = unsafe { tunnel::arrived_tunneled(state.in_) };
    if table.active() == 0 && !tunneled {
        return b::NF_ACCEPT;
    }
    // SAFETY: netfilter passes a valid packet and hook state.
    let Some((tuple, flags)) = (unsafe { parse(skb, state) }) else {
        return b::NF_ACCEPT;
    };
    let syn = flags & b::PRISM_TCPHDR_SYN != 0;
    let ack = flags & b::PRISM_TCPHDR_ACK != 0;
    // A SYN-ACK for a socket of this host that is connecting (SYN_SENT sockets are in
    // the established hash) answers a new outgoing connection that reuses a departed
    // tuple: the departed connection is over here, so its entry goes. A SYN-ACK with
    // no such socket may be a retransmission for the departed connection itself and
    // is treated like any of its packets.
    // SAFETY: the hook's namespace is alive.
    if syn && ack && unsafe { tunnel::has_socket(state.net, &tuple) } {
        table.remove(&tuple);
        return b::NF_ACCEPT;
    }
    let syn = syn && !ack;
    // SAFETY: the hook's namespace is alive.
    let stats = unsafe { pernet::net_data(state.net) }.map(|d| &d.stats);
    let count = |pick: fn(&Stats) -> &AtomicU64, n: u64| {
        if let Some(s) = stats {
            Stats::add(pick(s), n);
        }
    };
    match table.check(&tuple, syn) {
        // Another host forwarded it here ahead of the import (or after the socket
        // went): without a socket TCP would answer with RST.
        Verdict::Accept
            if tunneled
                && !syn
                // SAFETY: the hook's namespace is alive.
                && !unsafe { tunnel::has_socket(state.net, &tuple) } =>
        {
            count(|s| &s.unowned, 1);
            b::NF_DROP
        }
        Verdict::Accept => b::NF_ACCEPT,
        Verdict::Drop => {
            count(|s| &s.departed_dropped, 1);
            b::NF_DROP
        }
        // SAFETY: the packet and namespace of this LOCAL_IN call; on success the packet
        // is consumed and reported stolen.
        Verdict::Forward(to) => match unsafe { tunnel::forward(skb, state.net, to, tuple.v6) } {
            Ok(len) => {
                count(|s| &s.forwarded, 1);
                count(|s| &s.forwarded_bytes, len.into());
                b::NF_STOLEN
            }
            Err(_) => {
                count(|s| &s.forward_failed, 1);
                count(|s| &s.departed_dropped, 1);
                b::NF_DROP
            }
        },
    }
}

/// The LOCAL_OUT hook: drops this host's RSTs on departed tuples.
///
/// # Safety
///
/// Called by netfilter only: `priv_` is the departed table, `skb` and `state` valid.
unsafe extern "C" fn rst_hook(
    priv_: *mut c_void,
    skb: *mut b::sk_buff,
    state: *const b::nf_hook_state,
) -> c_uint {
    // SAFETY: as in `hook`.
    let table = unsafe { &*priv_.cast::<Departed>() };
    if table.active() == 0 {
        return b::NF_ACCEPT;
    }
    // SAFETY: netfilter passes a valid hook state.
    let state = unsafe { &*state };
    // SAFETY: netfilter passes a valid packet and hook state.
    let Some((tuple, flags)) = (unsafe { parse(skb, state) }) else {
        return b::NF_ACCEPT;
    };
    if flags & b::PRISM_TCPHDR_RST == 0 {
        return b::NF_ACCEPT;
    }
    match table.check(&tuple.reversed(), false) {
        Verdict::Accept => b::NF_ACCEPT,
        Verdict::Drop | Verdict::Forward(_) => {
            // SAFETY: the hook's namespace is alive.
            if let Some(d) = unsafe { pernet::net_data(state.net) } {
                Stats::add(&d.stats.departed_dropped, 1);
            }
            b::NF_DROP
        }
    }
}

/// Hooks a new namespace.
///
/// # Safety
///
/// Called by the pernet core only, with a namespace being set up.
unsafe extern "C" fn net_init(net: *mut b::net) -> c_int {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: pernet callbacks run between register and unregister, while `CURRENT`
    // points to the registered `Inner`.
    let Some(inner) = (unsafe { p.as_ref() }) else {
        return -(b::EINVAL as c_int);
    };
    // SAFETY: `net` is being set up; the hook array lives as long as the registration.
    unsafe { b::nf_register_net_hooks(net, inner.hooks.as_ptr(), inner.hooks.len() as c_uint) }
}

/// Unhooks a namespace that goes away and forgets its departed tuples.
///
/// # Safety
///
/// Called by the pernet core only, with a namespace being dismantled.
unsafe extern "C" fn net_exit(net: *mut b::net) {
    let p = CURRENT.load(Ordering::Acquire);
    // SAFETY: as in `net_init`.
    let Some(inner) = (unsafe { p.as_ref() }) else {
        return;
    };
    // SAFETY: the hooks were registered for `net` by `net_init`.
    unsafe { b::nf_unregister_net_hooks(net, inner.hooks.as_ptr(), inner.hooks.len() as c_uint) };
    inner.table.flush_net(net as usize);
}

impl Guard {
    /// Creates the departed table and hooks every present and future namespace.
    pub(crate) fn new() -> Result<Self> {
        let mut inner = KBox::new(
            Inner {
                table: Departed::new()?,
                hooks: Default::default(),
                pernet: Default::default(),
            },
            GFP_KERNEL,
        )?;
        let table = core::ptr::from_ref::<Departed>(&inner.table)
            .cast_mut()
            .cast();
        let (local_in, local_out) = (
            b::nf_inet_hooks_NF_INET_LOCAL_IN,
            b::nf_inet_hooks_NF_INET_LOCAL_OUT,
        );
        let hooks: [(b::nf_hookfn, u32, u32); 4] = [
            (Some(hook), b::NFPROTO_IPV4, local_in),
            (Some(hook), b::NFPROTO_IPV6, local_in),
            (Some(rst_hook), b::NFPROTO_IPV4, local_out),
            (Some(rst_hook), b::NFPROTO_IPV6, local_out),
        ];
        for (ops, (f, pf, hooknum)) in inner.hooks.iter_mut().zip(hooks) {
            ops.hook = f;
            ops.priv_ = table;
            ops.pf = pf as u8;
            ops.hooknum = hooknum;
            // Ahead of filter tables: a user's REJECT rule must not answer either.
            ops.priority = b::nf_ip_hook_priorities_NF_IP_PRI_RAW;
        }
        inner.pernet.init = Some(net_init);
        inner.pernet.exit = Some(net_exit);
        // The namespaces' data (`pernet.rs`) comes with the hooks.
        inner.pernet.id = pernet::id_slot();
        inner.pernet.size = pernet::SIZE;
        let p: *mut Inner = &mut *inner;
        CURRENT.store(p, Ordering::Release);
        // SAFETY: `pernet` lives in the box until `drop` unregisters it.
        let ret = unsafe { b::register_pernet_subsys(&mut inner.pernet) };
        if ret < 0 {
            pernet::forget();
            CURRENT.store(core::ptr::null_mut(), Ordering::Release);
            return Err(Error::from_errno(ret));
        }
        Ok(Self { inner })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: registered in `new`; this runs `net_exit` for every namespace.
        unsafe { b::unregister_pernet_subsys(&mut self.inner.pernet) };
        // A hook may still run on another CPU: wait for the RCU readers before freeing.
        // SAFETY: plain call; process context.
        unsafe { b::synchronize_rcu() };
        pernet::forget();
        CURRENT.store(core::ptr::null_mut(), Ordering::Release);
    }
}
