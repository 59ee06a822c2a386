// SPDX-License-Identifier: GPL-2.0

//! `SOCK_FORWARD`: from now on, send the packets of a connection this host exported
//! with DETACH to its new owner (`tunnel.rs`) instead of dropping them; or to another
//! owner than the DETACH named. (The owner's guard drops what reaches it before its
//! import, so forwarding may start with the DETACH itself.)

use crate::bindings as b;
use crate::departed::Tuple;
use crate::genl::{errno, Request};
use crate::guard;
use crate::tunnel;
use crate::uapi::state as a;
use kernel::c_str;
use kernel::prelude::*;
use kernel::str::CStr;

/// The payload of a required attribute, or the extack message naming it.
fn required<'r>(
    req: &'r Request<'_>,
    kind: u16,
    name: &'static CStr,
) -> Result<(&'r [u8], &'r b::nlattr)> {
    req.attr_bytes(kind).ok_or_else(|| {
        req.set_err(None, name);
        EINVAL
    })
}

/// A 16-bit attribute (the policy checked its length; zero if it did not).
fn u16_of(data: &[u8]) -> u16 {
    data.first_chunk::<2>()
        .map_or(0, |b| u16::from_ne_bytes(*b))
}

pub(crate) fn sock_forward(req: &Request<'_>) -> Result {
    let (family, family_attr) = required(req, a::FAMILY, c_str!("missing attribute: family"))?;
    let family = u16_of(family);
    let alen = match u32::from(family) {
        b::AF_INET => 4,
        b::AF_INET6 => 16,
        _ => {
            req.set_err(
                Some(family_attr),
                c_str!("family must be AF_INET or AF_INET6"),
            );
            return Err(errno(b::EAFNOSUPPORT));
        }
    };
    let mut addrs = [[0u8; 16]; 2];
    for (addr, (kind, missing, bad)) in addrs.iter_mut().zip([
        (
            a::SADDR,
            c_str!("missing attribute: saddr"),
            c_str!("saddr: address length does not match the family"),
        ),
        (
            a::DADDR,
            c_str!("missing attribute: daddr"),
            c_str!("daddr: address length does not match the family"),
        ),
    ]) {
        let (data, at) = required(req, kind, missing)?;
        if data.len() != alen {
            req.set_err(Some(at), bad);
            return Err(EINVAL);
        }
        addr[..alen].copy_from_slice(data);
    }
    let (sport, _) = required(req, a::SPORT, c_str!("missing attribute: sport"))?;
    let (dport, _) = required(req, a::DPORT, c_str!("missing attribute: dport"))?;
    let Some((to, to_attr)) = req.attr_u32(a::FORWARD_TO) else {
        req.set_err(None, c_str!("missing attribute: forward-to"));
        return Err(EINVAL);
    };
    let to = to.to_ne_bytes();
    if !tunnel::is_unicast_v4(to) {
        req.set_err(
            Some(to_attr),
            c_str!("forward-to must be a unicast IPv4 address, not loopback"),
        );
        return Err(EINVAL);
    }
    let tuple = Tuple::of_socket(
        req.net() as usize,
        family,
        &addrs[0],
        &addrs[1],
        u16_of(sport),
        u16_of(dport),
    );
    let table = guard::table().ok_or(ENODEV)?;
    if !table.set_forward(&tuple, to) {
        req.set_err(
            None,
            c_str!("no departed connection with this tuple here: never detached, imported here again, or expired"),
        );
        return Err(ENOENT);
    }
    Ok(())
}
