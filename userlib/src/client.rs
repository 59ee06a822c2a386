//! A connection to the module's generic netlink family.

use crate::error::{Error, KernelError, Result};
use crate::uapi::{Command, InfoAttr, FAMILY_NAME, PROTO_VERSION};
use neli::consts::nl::{NlmF, NlmsgerrAttr};
use neli::consts::socket::NlFamily;
use neli::err::RouterError;
use neli::genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, NlattrBuilder, NoUserHeader};
use neli::nl::NlPayload;
use neli::router::synchronous::NlRouter;
use neli::types::{Buffer, GenlBuffer};
use neli::utils::Groups;
use serde::Serialize;

type Reply = Genlmsghdr<Command, InfoAttr>;

/// One attribute as raw bytes: `(type, payload)`.
pub type RawAttr = (u16, Vec<u8>);

/// What `GET_INFO` reports about the loaded module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// Version of the loaded module.
    pub module_version: String,
    /// Protocol version the module speaks.
    pub proto_version: u32,
    /// Sockets exported since load.
    pub exports: u64,
    /// Sockets imported since load.
    pub imports: u64,
    /// Release events sent since load.
    pub releases: u64,
    /// Requests that failed after validation.
    pub errors: u64,
}

/// A netlink connection to the `prism_sock` family.
pub struct Client {
    router: NlRouter,
    family: u16,
}

fn kernel_error<T, P>(e: RouterError<T, P>) -> Error
where
    RouterError<T, P>: std::fmt::Display,
{
    match e {
        RouterError::Nlmsgerr(err) => {
            let mut k = KernelError {
                errno: -*err.error(),
                message: None,
                bad_attr_offset: None,
            };
            for a in err.ext_ack().iter() {
                let payload = a.nla_payload().as_ref();
                match a.nla_type().nla_type() {
                    NlmsgerrAttr::Msg => {
                        let text = payload.split(|b| *b == 0).next().unwrap_or_default();
                        k.message = Some(String::from_utf8_lossy(text).into_owned());
                    }
                    NlmsgerrAttr::Offset if payload.len() == 4 => {
                        k.bad_attr_offset = Some(u32::from_ne_bytes([
                            payload[0], payload[1], payload[2], payload[3],
                        ]));
                    }
                    _ => {}
                }
            }
            Error::Kernel(k)
        }
        other => Error::Netlink(other.to_string()),
    }
}

impl Client {
    /// Opens a generic netlink socket and resolves the family; fails with
    /// [`Error::ModuleNotLoaded`] when the module is not loaded.
    pub fn connect() -> Result<Self> {
        let (router, _multicast) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
            .map_err(|e| Error::Netlink(e.to_string()))?;
        router
            .enable_ext_ack(true)
            .map_err(|e| Error::Netlink(e.to_string()))?;
        router
            .enable_strict_checking(true)
            .map_err(|e| Error::Netlink(e.to_string()))?;
        let family = match router.resolve_genl_family(FAMILY_NAME) {
            Ok(id) => id,
            Err(RouterError::Nlmsgerr(e)) if -*e.error() == libc_enoent() => {
                return Err(Error::ModuleNotLoaded)
            }
            Err(RouterError::Msg(_)) => return Err(Error::ModuleNotLoaded),
            Err(e) => return Err(kernel_error(e)),
        };
        Ok(Self { router, family })
    }

    /// The generic netlink family id the kernel assigned to `prism_sock`.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Sends `cmd` with raw attributes `(type, payload)` and returns the replies' attributes.
    ///
    /// Meant for diagnostics and for conformance tests of the module's validation: the
    /// attributes are sent as given, well-formed or not.
    pub fn raw_request(&self, cmd: u8, attrs: &[RawAttr]) -> Result<Vec<Vec<RawAttr>>> {
        let mut buf = GenlBuffer::<u16, Buffer>::new();
        for (kind, payload) in attrs {
            buf.push(
                NlattrBuilder::default()
                    .nla_type(
                        AttrTypeBuilder::default()
                            .nla_type(*kind)
                            .build()
                            .map_err(proto)?,
                    )
                    .nla_payload(payload.clone())
                    .build()
                    .map_err(proto)?,
            );
        }
        let msg = GenlmsghdrBuilder::<u8, u16, NoUserHeader>::default()
            .cmd(cmd)
            .version(PROTO_VERSION as u8)
            .attrs(buf)
            .build()
            .map_err(proto)?;
        let recv = self
            .router
            .send::<_, _, u16, Genlmsghdr<u8, u16>>(self.family, NlmF::ACK, NlPayload::Payload(msg))
            .map_err(kernel_error)?;
        let mut replies = Vec::new();
        for r in recv {
            let r = r.map_err(kernel_error)?;
            if let NlPayload::Payload(p) = r.nl_payload() {
                replies.push(
                    p.attrs()
                        .iter()
                        .map(|a| (*a.nla_type().nla_type(), a.nla_payload().as_ref().to_vec()))
                        .collect(),
                );
            }
        }
        Ok(replies)
    }

    /// Reads the module's version and counters (`GET_INFO`).
    pub fn info(&self) -> Result<ModuleInfo> {
        let attrs = std::iter::once(
            NlattrBuilder::default()
                .nla_type(
                    AttrTypeBuilder::default()
                        .nla_type(InfoAttr::ProtoVersion)
                        .build()
                        .map_err(proto)?,
                )
                .nla_payload(PROTO_VERSION)
                .build()
                .map_err(proto)?,
        )
        .collect::<GenlBuffer<_, _>>();
        let msg = GenlmsghdrBuilder::<Command, InfoAttr, NoUserHeader>::default()
            .cmd(Command::GetInfo)
            .version(PROTO_VERSION as u8)
            .attrs(attrs)
            .build()
            .map_err(proto)?;
        let recv = self
            .router
            .send::<_, _, u16, Reply>(self.family, NlmF::ACK, NlPayload::Payload(msg))
            .map_err(kernel_error)?;
        let mut info = None;
        for r in recv {
            let r = r.map_err(kernel_error)?;
            if let NlPayload::Payload(p) = r.nl_payload() {
                let h = p.attrs().get_attr_handle();
                let u64_of = |a| h.get_attr_payload_as::<u64>(a).map_err(proto);
                info = Some(ModuleInfo {
                    module_version: h
                        .get_attr_payload_as_with_len::<String>(InfoAttr::ModuleVersion)
                        .map_err(proto)?,
                    proto_version: h
                        .get_attr_payload_as::<u32>(InfoAttr::ProtoVersion)
                        .map_err(proto)?,
                    exports: u64_of(InfoAttr::Exports)?,
                    imports: u64_of(InfoAttr::Imports)?,
                    releases: u64_of(InfoAttr::Releases)?,
                    errors: u64_of(InfoAttr::Errors)?,
                });
            }
        }
        info.ok_or_else(|| Error::Protocol("GET_INFO returned no reply".into()))
    }
}

fn proto(e: impl std::fmt::Display) -> Error {
    Error::Protocol(e.to_string())
}

const fn libc_enoent() -> i32 {
    2
}
