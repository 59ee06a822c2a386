// SPDX-License-Identifier: GPL-2.0

//! prism_sock: moves live TCP connections between hosts through a generic netlink
//! family. See `docs/netlink/prism_sock.yaml` for the contract.

use kernel::prelude::*;

mod bh_lock;
mod bindings;
mod blob;
mod compat;
mod departed;
mod events;
mod export;
mod family;
mod fault;
mod forward;
mod genl;
mod guard;
mod import;
mod info;
mod ktls;
mod list;
mod pernet;
mod socket;
mod stats;
mod tcp_state;
mod tracker;
mod tunnel;
mod uapi;

// 6.12's `module!` takes one `author`, later series a list of `authors`.
#[cfg(prism_kernel = "6.12")]
module! {
    type: PrismSock,
    name: "prism_sock",
    author: "prism-sock developers",
    description: "Atomic TCP socket export/import over generic netlink",
    license: "GPL",
}

#[cfg(not(prism_kernel = "6.12"))]
module! {
    type: PrismSock,
    name: "prism_sock",
    authors: ["prism-sock developers"],
    description: "Atomic TCP socket export/import over generic netlink",
    license: "GPL",
}

struct PrismSock {
    // `drop` first stops the tracker (probe off, queued events sent); then, in this
    // order: no request runs once the family is gone, the tracker is freed, the guard
    // (hooks and per-namespace data) goes last.
    _family: family::Family,
    tracker: KBox<tracker::Tracker>,
    _guard: guard::Guard,
}

impl kernel::Module for PrismSock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let guard = guard::Guard::new()?;
        let tracker = tracker::Tracker::new()?;
        let family = family::Family::register(module)?;
        tracker.start(family.as_ptr())?;
        pr_info!(
            "loaded, generic netlink family prism_sock v{}\n",
            uapi::PROTO_VERSION
        );
        Ok(Self {
            _family: family,
            tracker,
            _guard: guard,
        })
    }
}

impl Drop for PrismSock {
    fn drop(&mut self) {
        pr_info!("unloading\n");
        self.tracker.stop();
    }
}
