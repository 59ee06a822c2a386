//! Numbers of the `prism_sock` generic netlink family, as in
//! `docs/netlink/prism_sock.yaml` (and `kmod/uapi.rs`).

/// Generic netlink family name.
pub const FAMILY_NAME: &str = "prism_sock";
/// Protocol version this library speaks.
pub const PROTO_VERSION: u32 = 1;
/// Name of the multicast group carrying migration events.
pub const MCGRP_EVENTS: &str = "events";

/// Commands of the family.
#[neli::neli_enum(serialized_type = "u8")]
pub enum Command {
    /// Module version, protocol version and counters.
    GetInfo = 1,
}
impl neli::consts::genl::Cmd for Command {}

/// Attributes of the `info` attribute set.
#[neli::neli_enum(serialized_type = "u16")]
pub enum InfoAttr {
    /// Padding for 64-bit attributes.
    Pad = 1,
    /// Module version string.
    ModuleVersion = 2,
    /// Protocol version (request: the caller's; reply: the module's).
    ProtoVersion = 3,
    /// Sockets exported since load.
    Exports = 4,
    /// Sockets imported since load.
    Imports = 5,
    /// Release events sent since load.
    Releases = 6,
    /// Requests that failed after validation.
    Errors = 7,
}
impl neli::consts::genl::NlAttrType for InfoAttr {}
