// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernel series the module builds against (`prism_kernel`,
//! set by `Kbuild` from the tree's version). Everything else calls one API.

use crate::bindings as b;
use kernel::str::CStr;

/// The TCP flags of a queued skb: 7.x widened `tcp_skb_cb.tcp_flags` to 16 bits
/// (AccECN's flag beside the TCP header's eight).
pub(crate) fn tcp_flags(cb: &b::tcp_skb_cb) -> u16 {
    #[cfg(prism_kernel = "6.12")]
    return u16::from(cb.tcp_flags);
    #[cfg(not(prism_kernel = "6.12"))]
    return cb.tcp_flags;
}

/// Sets TCP header flag `flag` (one of the eight) on a queued skb.
pub(crate) fn set_tcp_flag(cb: &mut b::tcp_skb_cb, flag: u8) {
    #[cfg(prism_kernel = "6.12")]
    {
        cb.tcp_flags |= flag;
    }
    #[cfg(not(prism_kernel = "6.12"))]
    {
        cb.tcp_flags |= u16::from(flag);
    }
}

/// The bytes of `s`, without its NUL: 6.12's own `CStr` type calls this `as_bytes`,
/// later series use `core::ffi::CStr`'s `to_bytes`.
pub(crate) fn cstr_bytes(s: &CStr) -> &[u8] {
    #[cfg(prism_kernel = "6.12")]
    return s.as_bytes();
    #[cfg(not(prism_kernel = "6.12"))]
    return s.to_bytes();
}

/// The bytes of `s` with its NUL (see [`cstr_bytes`]).
pub(crate) fn cstr_bytes_with_nul(s: &CStr) -> &[u8] {
    #[cfg(prism_kernel = "6.12")]
    return s.as_bytes_with_nul();
    #[cfg(not(prism_kernel = "6.12"))]
    return s.to_bytes_with_nul();
}

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

/// Moves a just-restored ESTABLISHED socket to CLOSE_WAIT (its peer's FIN was in the
/// blob). 7.x no longer exports `tcp_set_state`; for this transition it changes no
/// counter, and the socket, created by the import, has no BPF sock_ops callbacks, so
/// the state store (with its `inet_sock_set_state` tracepoint) is all it does.
///
/// # Safety
///
/// `sk` must be a locked, established TCP socket.
pub(crate) unsafe fn enter_close_wait(sk: *mut b::sock) {
    #[cfg(prism_kernel = "6.12")]
    // SAFETY: a locked TCP socket (caller).
    unsafe {
        b::tcp_set_state(sk, b::TCP_CLOSE_WAIT as core::ffi::c_int)
    };
    #[cfg(not(prism_kernel = "6.12"))]
    // SAFETY: as above.
    unsafe {
        b::inet_sk_set_state(sk, b::TCP_CLOSE_WAIT as core::ffi::c_int)
    };
}

/// `tcp_mtup_init`: the MTU probing range from the socket's (restored) MSS clamp and
/// the namespace's sysctls. 7.x no longer exports it; this is its body, on the
/// exported `tcp_mss_to_mtu`.
///
/// # Safety
///
/// `sk` must be a locked TCP socket.
pub(crate) unsafe fn mtup_init(sk: *mut b::sock) {
    #[cfg(prism_kernel = "6.12")]
    // SAFETY: a locked TCP socket (caller).
    unsafe {
        b::tcp_mtup_init(sk)
    };
    #[cfg(not(prism_kernel = "6.12"))]
    // SAFETY: a locked TCP socket (caller): a `tcp_sock`, whose connection-socket part
    // and address-family operations are set; its namespace lives as long.
    unsafe {
        let tp = sk.cast::<b::tcp_sock>();
        let icsk = &mut (*tp).inet_conn;
        let net = b::prism_sock_net(sk);
        let enabled = b::prism_tcp_mtu_probing(net) > 1;
        let header = i32::from((*icsk.icsk_af_ops).net_header_len);
        let mtup = &mut icsk.icsk_mtup;
        mtup.set_enabled(enabled.into());
        mtup.search_high = i32::from((*tp).rx_opt.mss_clamp) + 20 + header;
        mtup.search_low = b::tcp_mss_to_mtu(sk, b::prism_tcp_base_mss(net));
        mtup.set_probe_size(0);
        if enabled {
            mtup.probe_timestamp = b::prism_jiffies() as u32;
        }
    }
}

/// The largest plaintext of a kTLS transmit record: 7.x lets TLS_TX_MAX_PAYLOAD_LEN
/// lower it (RFC 8449), 6.12 always uses TLS_MAX_PAYLOAD_SIZE.
pub(crate) fn tls_tx_max_payload(ctx: &b::tls_context) -> u32 {
    #[cfg(prism_kernel = "6.12")]
    {
        let _ = ctx;
        b::PRISM_TLS_MAX_PAYLOAD_SIZE
    }
    #[cfg(not(prism_kernel = "6.12"))]
    return u32::from(ctx.tx_max_payload_len);
}

/// A TLS 1.3 KeyUpdate arrived and the receive side waits for the new key (7.x; 6.12
/// cannot change a receive key).
pub(crate) fn tls_key_update_pending(rx: &b::tls_sw_context_rx) -> bool {
    #[cfg(prism_kernel = "6.12")]
    {
        let _ = rx;
        false
    }
    #[cfg(not(prism_kernel = "6.12"))]
    // SAFETY: a plain bool of a live context, read as `READ_ONCE` does.
    return unsafe { core::ptr::read_volatile(core::ptr::addr_of!(rx.key_update_pending)) };
}
