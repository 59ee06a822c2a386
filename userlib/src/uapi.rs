//! Names and numbers of the `prism_sock` generic netlink family, generated from
//! `docs/netlink/prism_sock.yaml` by `make uapi` (tools/uapi-gen), as the module's are:
//! commands, attribute sets as neli enums with the spec's docs, and the spec's
//! constants and enums.

#[rustfmt::skip]
#[path = "uapi_generated.rs"]
mod generated;

pub use generated::*;
