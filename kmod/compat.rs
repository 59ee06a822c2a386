// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernel series the module builds against (`prism_kernel`,
//! set by `Kbuild` from the tree's version). Everything else calls one API.

use crate::bindings as b;

/// The address type of `kernel_bind` and `__inet_stream_connect`: 7.x passes a
/// `struct sockaddr_unsized`, whose length travels beside it as before.
#[cfg(prism_kernel = "6.12")]
pub(crate) type SockAddr = b::sockaddr;
#[cfg(not(prism_kernel = "6.12"))]
pub(crate) type SockAddr = b::sockaddr_unsized;

/// The established (or TIME_WAIT) IPv4 TCP socket of namespace `net` for a segment
/// from `saddr:sport` to `daddr:hnum`, with a reference, or null. 7.x finds the hash
/// table from `net` itself.
///
/// # Safety
///
/// `net` must be alive; call under RCU.
pub(crate) unsafe fn lookup_established4(
    net: *mut b::net,
    saddr: u32,
    sport: u16,
    daddr: u32,
    hnum: u16,
) -> *mut b::sock {
    #[cfg(prism_kernel = "6.12")]
    // SAFETY: `net` is alive (caller); its TCP hash table lives as long.
    return unsafe {
        b::__inet_lookup_established(
            net,
            b::prism_tcp_hashinfo(net),
            saddr,
            sport,
            daddr,
            hnum,
            0,
            0,
        )
    };
    #[cfg(not(prism_kernel = "6.12"))]
    // SAFETY: `net` is alive (caller).
    return unsafe { b::__inet_lookup_established(net, saddr, sport, daddr, hnum, 0, 0) };
}

/// Like [`lookup_established4`] for IPv6; `saddr` and `daddr` are 16 bytes.
///
/// # Safety
///
/// As [`lookup_established4`]; the addresses must be valid for 16 bytes.
pub(crate) unsafe fn lookup_established6(
    net: *mut b::net,
    saddr: *const b::in6_addr,
    sport: u16,
    daddr: *const b::in6_addr,
    hnum: u16,
) -> *mut b::sock {
    #[cfg(prism_kernel = "6.12")]
    // SAFETY: as in `lookup_established4`; the addresses are valid (caller).
    return unsafe {
        b::__inet6_lookup_established(
            net,
            b::prism_tcp_hashinfo(net),
            saddr,
            sport,
            daddr,
            hnum,
            0,
            0,
        )
    };
    #[cfg(not(prism_kernel = "6.12"))]
    // SAFETY: as above.
    return unsafe { b::__inet6_lookup_established(net, saddr, sport, daddr, hnum, 0, 0) };
}
