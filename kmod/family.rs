// SPDX-License-Identifier: GPL-2.0

//! The `prism_sock` generic netlink family: its operations, their policies and the
//! `events` multicast group, registered for the module's lifetime.

use crate::bindings as b;
use crate::export;
use crate::genl::{self, Handler};
use crate::info;
use crate::uapi::{self, attr, cmd, state};
use core::ffi::c_int;
use kernel::prelude::*;
use kernel::str::CStr;

/// Index of the `events` group in the family's group array.
pub(crate) const GROUP_EVENTS: u32 = 0;

const N_OPS: usize = 2;
const INFO_MAXATTR: u16 = attr::PROTO_VERSION;
const EXPORT_MAXATTR: u16 = state::FD;

/// Everything genetlink keeps pointers to, in one allocation whose address is stable
/// from registration to unregistration.
struct Definition {
    family: b::genl_family,
    ops: [b::genl_ops; N_OPS],
    groups: [b::genl_multicast_group; 1],
    info_policy: [b::nla_policy; INFO_MAXATTR as usize + 1],
    export_policy: [b::nla_policy; EXPORT_MAXATTR as usize + 1],
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
    for (d, s) in dst.iter_mut().zip(name.as_bytes()) {
        *d = *s as core::ffi::c_char;
    }
}

/// A `doit` callback for `handler`, validated against a policy of `MAXATTR + 1` entries.
macro_rules! doit {
    ($handler:path, $maxattr:expr) => {{
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
                info_policy: Default::default(),
                export_policy: Default::default(),
            },
            GFP_KERNEL,
        )?;

        let d = &mut *def;
        d.info_policy[attr::PROTO_VERSION as usize].type_ = b::NLA_U32 as u8;

        d.ops[0].cmd = cmd::GET_INFO;
        d.ops[0].doit = Some(doit!(info::get_info, INFO_MAXATTR));
        d.ops[0].policy = d.info_policy.as_ptr();
        d.ops[0].maxattr = INFO_MAXATTR.into();

        // Touches sockets: CAP_NET_ADMIN in the caller's user namespace.
        d.export_policy[state::FD as usize].type_ = b::NLA_U32 as u8;
        d.ops[1].cmd = cmd::SOCK_EXPORT;
        d.ops[1].doit = Some(doit!(export::sock_export, EXPORT_MAXATTR));
        d.ops[1].policy = d.export_policy.as_ptr();
        d.ops[1].maxattr = EXPORT_MAXATTR.into();
        d.ops[1].flags = b::GENL_UNS_ADMIN_PERM as u8;

        copy_name(
            &mut d.groups[GROUP_EVENTS as usize].name,
            uapi::MCGRP_EVENTS,
        );
        d.groups[GROUP_EVENTS as usize].flags = b::PRISM_GENL_MCAST_CAP_NET_ADMIN;

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
