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
use crate::uapi::{self, attr, cmd, state, QUEUE_CHUNK};
use core::ffi::c_int;
use kernel::prelude::*;
use kernel::str::CStr;

/// Index of the `events` group (every event) in the family's group array.
pub(crate) const GROUP_EVENTS: u32 = 0;
/// Index of the `releases` group (`SOCK_RELEASED` only): what a proxy that only
/// removes steering entries needs, without a wake-up for every import and export.
pub(crate) const GROUP_RELEASES: u32 = 1;

const N_OPS: usize = 5;
const INFO_MAXATTR: u16 = attr::PROTO_VERSION;
const EXPORT_MAXATTR: u16 = state::FORWARD_TO;
const FORWARD_MAXATTR: u16 = state::FORWARD_TO;
const IMPORT_MAXATTR: u16 = state::MAX;

/// Everything genetlink keeps pointers to, in one allocation whose address is stable
/// from registration to unregistration.
struct Definition {
    family: b::genl_family,
    ops: [b::genl_ops; N_OPS],
    groups: [b::genl_multicast_group; 2],
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

/// The `state` set as `SOCK_IMPORT` takes it: the blob's attributes and the importer's.
/// Lengths are checked here; values in `blob.rs`.
fn import_policy(p: &mut [b::nla_policy; IMPORT_MAXATTR as usize + 1]) {
    use state::*;
    let mut set = |kinds: &[u16], ty: u32, len: u16| {
        for k in kinds {
            p[usize::from(*k)].type_ = ty as u8;
            p[usize::from(*k)].len = len;
        }
    };
    set(
        &[
            FD,
            BLOB_VERSION,
            SND_UNA,
            SND_NXT,
            WRITE_SEQ,
            RCV_NXT,
            TS_NOW,
            TS_RECENT,
            SND_WL1,
            SND_WND,
            MAX_WINDOW,
            RCV_WND,
            RCV_WUP,
            SND_CWND,
            SND_SSTHRESH,
            SRTT_US,
            MDEV_US,
            MARK,
            USER_TIMEOUT,
            NOTSENT_LOWAT,
            KEEPIDLE,
            KEEPINTVL,
            KEEPCNT,
            SNDBUF,
            RCVBUF,
            WINDOW_CLAMP,
            RCV_SSTHRESH,
        ],
        b::NLA_U32,
        0,
    );
    set(&[FAMILY, SPORT, DPORT, MSS_CLAMP], b::NLA_U16, 0);
    set(
        &[
            TCP_STATE,
            FIN_RECEIVED,
            SND_WSCALE,
            RCV_WSCALE,
            TIMESTAMPS,
            SACK,
            WSCALE_OK,
            NODELAY,
            CORK,
            KEEPALIVE,
            BUF_LOCKS,
            TOS,
            REUSEADDR,
        ],
        b::NLA_U8,
        0,
    );
    set(&[SADDR, DADDR, BIND_ADDR], b::NLA_BINARY, 16);
    set(&[SEND_QUEUE, RECV_QUEUE], b::NLA_BINARY, QUEUE_CHUNK as u16);
    // Checked in blob.rs, whose messages name the attribute.
    set(&[CC_NAME], b::NLA_BINARY, 16);
    set(&[MIGRATION_ID], b::NLA_U64, 0);
    // `pad` may sit before the 64-bit migration id; the others are the importer's flags.
    set(
        &[PAD, DETACH, FREEBIND, TRANSPARENT, NONBLOCK],
        b::NLA_FLAG,
        0,
    );
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
                export_policy: [b::nla_policy::default(); EXPORT_MAXATTR as usize + 1],
                import_policy: [b::nla_policy::default(); IMPORT_MAXATTR as usize + 1],
                forward_policy: [b::nla_policy::default(); FORWARD_MAXATTR as usize + 1],
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
        d.export_policy[state::DETACH as usize].type_ = b::NLA_FLAG as u8;
        d.export_policy[state::FORWARD_TO as usize].type_ = b::NLA_U32 as u8;
        d.ops[1].cmd = cmd::SOCK_EXPORT;
        d.ops[1].doit = Some(doit!(export::sock_export, EXPORT_MAXATTR));
        d.ops[1].policy = d.export_policy.as_ptr();
        d.ops[1].maxattr = EXPORT_MAXATTR.into();
        d.ops[1].flags = b::GENL_UNS_ADMIN_PERM as u8;

        import_policy(&mut d.import_policy);
        d.ops[2].cmd = cmd::SOCK_IMPORT;
        d.ops[2].doit = Some(doit!(import::sock_import, IMPORT_MAXATTR));
        d.ops[2].policy = d.import_policy.as_ptr();
        d.ops[2].maxattr = IMPORT_MAXATTR.into();
        d.ops[2].flags = b::GENL_UNS_ADMIN_PERM as u8;

        // The departed tuple as the blob names it, and the new owner.
        let p = &mut d.forward_policy;
        for (kind, type_, len) in [
            (state::FAMILY, b::NLA_U16, 0),
            (state::SADDR, b::NLA_BINARY, 16),
            (state::DADDR, b::NLA_BINARY, 16),
            (state::SPORT, b::NLA_U16, 0),
            (state::DPORT, b::NLA_U16, 0),
            (state::FORWARD_TO, b::NLA_U32, 0),
        ] {
            p[kind as usize].type_ = type_ as u8;
            p[kind as usize].len = len;
        }
        d.ops[3].cmd = cmd::SOCK_FORWARD;
        d.ops[3].doit = Some(doit!(forward::sock_forward, FORWARD_MAXATTR));
        d.ops[3].policy = d.forward_policy.as_ptr();
        d.ops[3].maxattr = FORWARD_MAXATTR.into();
        d.ops[3].flags = b::GENL_UNS_ADMIN_PERM as u8;

        // Lists what the `events` group reports: the same privilege as joining it.
        d.ops[4].cmd = cmd::SOCK_LIST;
        d.ops[4].dumpit = Some(list::sock_list);
        d.ops[4].flags = b::GENL_UNS_ADMIN_PERM as u8;

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
