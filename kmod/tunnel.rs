// SPDX-License-Identifier: GPL-2.0

//! Forwarding a departed flow's packets to its new owner, as IPVS's tunnel mode does:
//! the packet, unchanged but for its TTL, inside an outer IPv4 header addressed to the
//! owner (IPIP for IPv4 flows, 6in4 for IPv6 flows). The owner's fallback tunnel
//! devices (`tunl0`, `sit0`) take the header off and deliver the packet to the imported
//! socket. Until L4 steers the flow, the client's ACKs and next request reach the owner
//! one hop later instead of being dropped, so the owner may answer at once.

use crate::bindings as b;
use crate::compat;
use crate::departed::Tuple;
use core::ffi::c_int;

/// Whether `a` (network byte order) can name another host: not unspecified, loopback,
/// multicast or limited broadcast. A route to it is looked up per packet.
pub(crate) fn is_unicast_v4(a: [u8; 4]) -> bool {
    a != [0; 4] && a[0] != 127 && a[0] < 224
}

/// Outer header: IPv4 without options.
const OUTER: usize = 20;
/// Headroom asked for: the outer header and a link-layer header in front of it.
const HEADROOM: u32 = OUTER as u32 + 32;
/// TTL of the outer header.
const OUTER_TTL: u8 = 64;

/// Why a packet was not forwarded; the caller drops it as without a forward address.
pub(crate) enum Failed {
    /// The packet is not laid out as a LOCAL_IN packet is.
    Layout,
    /// Its TTL (hop limit) ran out: a forwarding loop between hosts ends here.
    Ttl,
    /// No unicast route to the owner.
    NoRoute,
    /// No memory to make the header writable.
    NoMemory,
}

/// A route to `to`, from which the outer header's source address comes.
struct Route {
    rt: *mut b::rtable,
    saddr: u32,
}

impl Route {
    /// # Safety
    ///
    /// `net` must be alive.
    unsafe fn lookup(net: *mut b::net, to: u32, proto: u8) -> Result<Self, Failed> {
        let mut fl4 = b::flowi4 {
            daddr: to,
            ..Default::default()
        };
        fl4.__fl_common.flowic_proto = proto;
        // SAFETY: `net` is alive (caller) and `fl4` a valid flow key.
        let rt = unsafe { b::prism_ip_route_output_key(net, &mut fl4) };
        let rt = kernel::error::from_err_ptr(rt).map_err(|_| Failed::NoRoute)?;
        let route = Self {
            rt,
            saddr: fl4.saddr,
        };
        // A local or broadcast owner address would loop the packet back or spray it.
        // SAFETY: `rt` is a route this value holds a reference to.
        if u32::from(unsafe { b::prism_rtable_type(rt) }) != b::RTN_UNICAST {
            return Err(Failed::NoRoute);
        }
        Ok(route)
    }

    /// Hands the reference to `skb`.
    ///
    /// # Safety
    ///
    /// `skb` must be a packet without a route.
    unsafe fn attach(self, skb: *mut b::sk_buff) {
        let rt = self.rt;
        core::mem::forget(self);
        // SAFETY: the caller's `skb` has no route; it takes over the reference.
        unsafe { b::prism_skb_dst_set(skb, rt) };
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        // SAFETY: the reference `lookup` took and nobody was given.
        unsafe { b::prism_ip_rt_put(self.rt) };
    }
}

/// Sends `skb`, a packet of a departed IPv4 (`v6` false) or IPv6 flow that arrived in
/// namespace `net`, to `to` (an IPv4 address in network byte order) inside an outer
/// IPv4 header. `Ok` means the packet is consumed, with the inner packet's length;
/// on `Err` it is still the caller's (to drop).
///
/// # Safety
///
/// `skb` and `net` must be the packet and the namespace of a netfilter LOCAL_IN hook
/// call, which this call returns `NF_STOLEN` for on `Ok`.
pub(crate) unsafe fn forward(
    skb: *mut b::sk_buff,
    net: *mut b::net,
    to: [u8; 4],
    v6: bool,
) -> Result<u32, Failed> {
    // At LOCAL_IN the packet starts at its network header, linear up to the transport
    // header (ip_rcv and ipv6_rcv pulled it).
    // SAFETY: `skb` is valid during the hook.
    if unsafe { b::prism_skb_network_offset(skb) } != 0 {
        return Err(Failed::Layout);
    }
    let ttl_at = if v6 { 7 } else { 8 };
    // SAFETY: as above; the network header is linear.
    let ttl = unsafe { *b::prism_skb_network_header(skb).add(ttl_at) };
    if ttl <= 1 {
        return Err(Failed::Ttl);
    }
    let proto = if v6 { b::IPPROTO_IPV6 } else { b::IPPROTO_IPIP } as u8;
    // SAFETY: the hook's namespace is alive.
    let route = unsafe { Route::lookup(net, u32::from_ne_bytes(to), proto)? };
    // SAFETY: `skb` is valid; on failure it is unchanged but for its head's copy.
    if unsafe { b::prism_skb_cow_head(skb, HEADROOM) } != 0 {
        return Err(Failed::NoMemory);
    }
    // Marks the packet as encapsulated for GSO, or drops a checksum state that only
    // held for the packet as received; a partial checksum stays the owner's to finish.
    // SAFETY: as above.
    if unsafe { b::iptunnel_handle_offloads(skb, b::PRISM_SKB_GSO_IPXIP4 as c_int) } != 0 {
        return Err(Failed::NoMemory);
    }
    // From here on nothing fails: the packet is sent.
    // SAFETY: `skb_cow_head` made the header writable; it starts at the network header.
    let inner = unsafe { b::prism_skb_network_header(skb) };
    // SAFETY: `inner` is the writable IPv4 or IPv6 header checked above.
    let tos = unsafe {
        if v6 {
            *inner.add(7) -= 1;
            (*inner << 4) | (*inner.add(1) >> 4)
        } else {
            b::prism_ip_decrease_ttl(inner.cast());
            *inner.add(1)
        }
    };
    // SAFETY: `skb` is valid.
    let len = unsafe { b::prism_skb_len(skb) };
    // SAFETY: `skb` is valid. It leaves this host: no socket, route, conntrack entry,
    // control block or receive timestamp of its arrival may follow it out.
    unsafe {
        b::prism_skb_orphan(skb);
        b::prism_skb_dst_drop(skb);
        b::prism_nf_reset_ct(skb);
        b::prism_skb_clear_cb(skb);
        b::prism_skb_clear_tstamp(skb);
    }
    // SAFETY: `skb_cow_head` made room for `OUTER` bytes in front.
    let outer = unsafe { b::skb_push(skb, OUTER as u32) };
    let mut h = [0u8; OUTER];
    h[0] = 0x45;
    h[1] = tos;
    // Length, id and checksum are filled in below and by ip_local_out; no DF: an
    // inner packet of a full MTU is fragmented, and the owner reassembles it.
    h[8] = OUTER_TTL;
    h[9] = proto;
    h[12..16].copy_from_slice(&route.saddr.to_ne_bytes());
    h[16..20].copy_from_slice(&to);
    // SAFETY: `outer` points to `OUTER` writable bytes at the packet's start; the
    // route moves into the packet, which goes out through the namespace's stack.
    unsafe {
        core::ptr::copy_nonoverlapping(h.as_ptr(), outer.cast::<u8>(), OUTER);
        b::prism_skb_reset_network_header(skb);
        b::prism_skb_set_protocol(skb, b::PRISM_ETH_P_IP.to_be());
        route.attach(skb);
        b::prism_ip_select_ident(net, skb);
        b::ip_local_out(net, core::ptr::null_mut(), skb);
    }
    Ok(len)
}

/// Whether a packet came in through a tunnel device: IPIP, 6in4 or IPv6 tunnels, the
/// way a forwarded packet arrives.
///
/// # Safety
///
/// `dev` must be null or a device alive for the call.
pub(crate) unsafe fn arrived_tunneled(dev: *const b::net_device) -> bool {
    if dev.is_null() {
        return false;
    }
    // SAFETY: a live device (caller).
    let kind = u32::from(unsafe { b::prism_netdev_type(dev) });
    kind == b::ARPHRD_TUNNEL || kind == b::ARPHRD_TUNNEL6 || kind == b::ARPHRD_SIT
}

/// Whether namespace `net` has an established (or TIME_WAIT) TCP socket for `t`.
///
/// # Safety
///
/// `net` must be alive; call under RCU (a netfilter hook is).
pub(crate) unsafe fn has_socket(net: *mut b::net, t: &Tuple) -> bool {
    let sk = if t.v6 {
        // SAFETY: `net` is alive under RCU (caller); 16-byte addresses; the lookup takes
        // a reference on what it finds.
        unsafe {
            compat::lookup_established6(
                net,
                t.remote.as_ptr().cast(),
                t.rport.to_be(),
                t.local.as_ptr().cast(),
                t.lport,
            )
        }
    } else {
        let addr = |a: &[u8; 16]| u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        // SAFETY: as above.
        unsafe {
            compat::lookup_established4(
                net,
                addr(&t.remote),
                t.rport.to_be(),
                addr(&t.local),
                t.lport,
            )
        }
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: the reference the lookup took.
    unsafe { b::sock_gen_put(sk) };
    true
}
