// SPDX-License-Identifier: GPL-2.0

//! prism_sock: moves live TCP connections between hosts through a generic netlink
//! family. See `docs/netlink/prism_sock.yaml` for the contract.

use kernel::prelude::*;

mod bindings;
mod export;
mod family;
mod genl;
mod info;
mod socket;
mod stats;
mod tcp_state;
mod uapi;

module! {
    type: PrismSock,
    name: "prism_sock",
    author: "prism-sock developers",
    description: "Atomic TCP socket export/import over generic netlink",
    license: "GPL",
}

struct PrismSock {
    _family: family::Family,
}

impl kernel::Module for PrismSock {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let family = family::Family::register(module)?;
        pr_info!(
            "loaded, generic netlink family prism_sock v{}\n",
            uapi::PROTO_VERSION
        );
        Ok(Self { _family: family })
    }
}

impl Drop for PrismSock {
    fn drop(&mut self) {
        pr_info!("unloading\n");
    }
}
