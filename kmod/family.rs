// SPDX-License-Identifier: GPL-2.0

//! The `prism_sock` generic netlink family: its operations, their policies and the
//! `events` and `releases` multicast groups, registered for the module's lifetime.

use crate::bindings as b;
use crate::compat;
use crate::export;
use crate::forward;
use crate::genl::{self, Handler};
use crate::import;
use crate::info;
use crate::list;
use crate::uapi::{self, cmd, policy, GROUP_EVENTS, GROUP_RELEASES, N_GROUPS};
use core::ffi::c_int;
use kernel::prelude::*;
use kernel::str::CStr;

const N_OPS: usize = 5;
const INFO_MAXATTR: u16 = policy::GET_INFO_MAXATTR;
const EXPORT_MAXATTR: u16 = policy::SOCK_EXPORT_MAXATTR;
const IMPORT_MAXATTR: u16 = policy::SOCK_IMPORT_MAXATTR;
const FORWARD_MAXATTR: u16 = policy::SOCK_FORWARD_MAXATTR;

/// Everything genetlink keeps pointers to, in one allocation whose address is stable
/// from registration to unregistration.
struct Definition {
    family: b::genl_family,
    ops: [b::genl_ops; N_OPS],
    groups: [b::genl_multicast_group; N_GROUPS],
    info_policy: [b::nla_policy; INFO_MAXATTR as usize + 1],
    export_policy: [b::nla_policy; EXPORT_MAXATTR as usize + 1],
    import_policy: [b::nla_policy; IMPORT_MAXATTR as usize + 1],
    forward_policy: [b::nla_policy; FORWARD_MAXATTR as usize + 1],
}

/// The registered family; dropping it unregisters the family.
pub(crate) struct Family {
    def: KBox<Definition>,
}

// SAFETY: after registration the definition is only read, by genetlink, under its own
// locking; this type exposes no access to it.
unsafe impl Send for Family {}
// SAFETY: as above, nothing is reachable through a shared reference.
unsafe impl Sync for Family {}

fn copy_name(dst: &mut [core::ffi::c_char], name: &CStr) {
    for (d, s) in dst.iter_mut().zip(compat::cstr_bytes(name)) {
        *d = *s as core::ffi::c_char;
    }
}

/// A policy of `N` entries with the `(attribute, type, max length)` rows set, the
/// others `NLA_UNSPEC`.
fn table<const N: usize>(rows: &[(u16, u32, u16)]) -> [b::nla_policy; N] {
    let mut p = [b::nla_policy::default(); N];
    for &(attr, type_, len) in rows {
        if let Some(e) = p.get_mut(usize::from(attr)) {
            e.type_ = type_ as u8;
            e.len = len;
        }
    }
    p
}

/// A `doit` callback for `handler`, validated against a policy of `MAXATTR + 1` entries.
macro_rules! doit {
    ($handler:path, $maxattr:expr) => {{
        /// # Safety
        ///
        /// Called by genetlink only, for a request validated against the policy.
        unsafe extern "C" fn doit(_skb: *mut b::sk_buff, info: *mut b::genl_info) -> c_int {
            const H: Handler = $handler;
            // SAFETY: genetlink calls this with the request's `genl_info`, parsed with the
            // policy registered below for this operation.
            unsafe { genl::dispatch(info, $maxattr, H) }
        }
        doit
    }};
}

impl Family {
    /// Registers the family; the module is pinned while any request runs in it.
    pub(crate) fn register(module: &'static ThisModule) -> Result<Self> {
        let mut def = KBox::new(
            Definition {
                family: Default::default(),
                ops: Default::default(),
                groups: Default::default(),
                // The spec's request attributes and their types (`make uapi`).
                info_policy: table(policy::GET_INFO),
                export_policy: table(policy::SOCK_EXPORT),
                import_policy: table(policy::SOCK_IMPORT),
                forward_policy: table(policy::SOCK_FORWARD),
            },
            GFP_KERNEL,
        )?;

        let d = &mut *def;
        d.ops[0].cmd = cmd::GET_INFO;
        d.ops[0].doit = Some(doit!(info::get_info, INFO_MAXATTR));
        d.ops[0].policy = d.info_policy.as_ptr();
        d.ops[0].maxattr = INFO_MAXATTR.into();

        // Touches sockets: CAP_NET_ADMIN in the caller's user namespace.
        d.ops[1].cmd = cmd::SOCK_EXPORT;
        d.ops[1].doit = Some(doit!(export::sock_export, EXPORT_MAXATTR));
        d.ops[1].policy = d.export_policy.as_ptr();
        d.ops[1].maxattr = EXPORT_MAXATTR.into();
        d.ops[1].flags = b::GENL_UNS_ADMIN_PERM as u8;

        d.ops[2].cmd = cmd::SOCK_IMPORT;
        d.ops[2].doit = Some(doit!(import::sock_import, IMPORT_MAXATTR));
        d.ops[2].policy = d.import_policy.as_ptr();
        d.ops[2].maxattr = IMPORT_MAXATTR.into();
        d.ops[2].flags = b::GENL_UNS_ADMIN_PERM as u8;

        // The departed tuple as the blob names it, and the new owner.
        d.ops[3].cmd = cmd::SOCK_FORWARD;
        d.ops[3].doit = Some(doit!(forward::sock_forward, FORWARD_MAXATTR));
        d.ops[3].policy = d.forward_policy.as_ptr();
        d.ops[3].maxattr = FORWARD_MAXATTR.into();
        d.ops[3].flags = b::GENL_UNS_ADMIN_PERM as u8;

        // Lists what the `events` group reports: the same privilege as joining it.
        d.ops[4].cmd = cmd::SOCK_LIST;
        d.ops[4].dumpit = Some(list::sock_list);
        d.ops[4].flags = b::GENL_UNS_ADMIN_PERM as u8;

        // `releases` carries SOCK_RELEASED only: what a proxy that only removes steering
        // entries needs, without a wake-up for every import and export.
        for (group, name) in [
            (GROUP_EVENTS, uapi::MCGRP_EVENTS),
            (GROUP_RELEASES, uapi::MCGRP_RELEASES),
        ] {
            copy_name(&mut d.groups[group as usize].name, name);
            d.groups[group as usize].flags = b::PRISM_GENL_MCAST_CAP_NET_ADMIN;
        }

        let f = &mut d.family;
        copy_name(&mut f.name, uapi::FAMILY_NAME);
        f.version = uapi::PROTO_VERSION;
        f.set_netnsok(1);
        f.set_parallel_ops(1);
        f.module = module.as_ptr().cast();
        f.ops = d.ops.as_ptr();
        f.n_ops = N_OPS as u8;
        f.mcgrps = d.groups.as_ptr();
        f.n_mcgrps = d.groups.len() as u8;

        // SAFETY: the definition is fully initialised, lives in a heap allocation that
        // is neither moved nor freed before `drop` unregisters the family.
        genl::to_result(unsafe { b::genl_register_family(&mut def.family) })?;
        Ok(Self { def })
    }
}

impl Family {
    /// The registered family, for notifications.
    pub(crate) fn as_ptr(&self) -> *const b::genl_family {
        &self.def.family
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        // SAFETY: the family was registered in `register`; unregistering waits for
        // running requests, after which genetlink holds no pointer into `def`.
        let ret = unsafe { b::genl_unregister_family(&self.def.family) };
        if ret != 0 {
            pr_err!("unregistering the family failed: {}\n", ret);
        }
    }
}
