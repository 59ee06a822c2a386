//! A connection to the module's generic netlink family.
//!
//! Built on neli's `NlSocketHandle` rather than its `NlRouter`: the router (0.7.5)
//! drops the extended-ack attributes when it converts an error to its typed form, and
//! the kernel's extack message is what tells a user why a request was refused.

use crate::error::{Error, KernelError, Result};
use crate::state::MigrationState;
use crate::uapi::{Command, InfoAttr, StateAttr, FAMILY_NAME, MCGRP_EVENTS, PROTO_VERSION};
use neli::consts::genl::{Cmd, CtrlAttr, CtrlAttrMcastGrp, CtrlCmd, Index, NlAttrType};
use neli::consts::nl::{GenlId, NlType, NlmF, NlmsgerrAttr};
use neli::consts::socket::NlFamily;
use neli::err::{Nlmsgerr, NlmsghdrErr};
use neli::genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, NlattrBuilder, NoUserHeader};
use neli::nl::{NlPayload, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::{Buffer, GenlBuffer};
use neli::utils::Groups;
use neli::{FromBytesWithInput, Size, ToBytes};
use serde::Serialize;
use std::cell::Cell;
use std::fmt::Debug;
use std::os::fd::{AsFd, AsRawFd};

/// One attribute as raw bytes: `(type, payload)`.
pub type RawAttr = (u16, Vec<u8>);

const ENOENT: i32 = 2;

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
    /// Largest send + receive queue one export carries.
    pub max_queue_bytes: u32,
}

/// A netlink connection to the `prism_sock` family. One request at a time; open one
/// client per thread.
pub struct Client {
    sock: NlSocketHandle,
    family: u16,
    events_group: u32,
    seq: Cell<u32>,
}

fn kernel_error<T, P>(err: &Nlmsgerr<NlmsghdrErr<T, P>>) -> Error {
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
            NlmsgerrAttr::Offset => {
                k.bad_attr_offset = payload.try_into().ok().map(u32::from_ne_bytes);
            }
            _ => {}
        }
    }
    Error::Kernel(k)
}

fn netlink(e: impl std::fmt::Display) -> Error {
    Error::Netlink(e.to_string())
}

fn proto(e: impl std::fmt::Display) -> Error {
    Error::Protocol(e.to_string())
}

/// A generic netlink request: command `cmd` at `version`, with `(type, payload)` attributes.
fn request<C: Cmd, A: NlAttrType>(
    cmd: C,
    version: u8,
    list: impl IntoIterator<Item = (A, Vec<u8>)>,
) -> Result<Genlmsghdr<C, A>> {
    let attrs = list
        .into_iter()
        .map(|(kind, payload)| {
            NlattrBuilder::default()
                .nla_type(AttrTypeBuilder::default().nla_type(kind).build().map_err(proto)?)
                .nla_payload(payload)
                .build()
                .map_err(proto)
        })
        .collect::<Result<GenlBuffer<A, Buffer>>>()?;
    GenlmsghdrBuilder::<C, A, NoUserHeader>::default()
        .cmd(cmd)
        .version(version)
        .attrs(attrs)
        .build()
        .map_err(proto)
}

impl Client {
    /// Opens a generic netlink socket and resolves the family and its `events` group;
    /// fails with [`Error::ModuleNotLoaded`] when the module is not loaded.
    pub fn connect() -> Result<Self> {
        let sock = NlSocketHandle::connect(NlFamily::Generic, None, Groups::empty()).map_err(netlink)?;
        sock.enable_ext_ack(true).map_err(netlink)?;
        sock.enable_strict_checking(true).map_err(netlink)?;
        let mut client = Client {
            sock,
            family: 0,
            events_group: 0,
            seq: Cell::new(1),
        };
        let request = request(
            CtrlCmd::Getfamily,
            2,
            [(CtrlAttr::FamilyName, format!("{FAMILY_NAME}\0").into_bytes())],
        )?;
        let replies = match client.transact::<_, _, Genlmsghdr<CtrlCmd, CtrlAttr>>(GenlId::Ctrl, request) {
            Err(Error::Kernel(k)) if k.errno == ENOENT => return Err(Error::ModuleNotLoaded),
            other => other?,
        };
        let reply = replies
            .first()
            .ok_or_else(|| proto("no CTRL_CMD_GETFAMILY reply"))?;
        let h = reply.attrs().get_attr_handle();
        client.family = h.get_attr_payload_as::<u16>(CtrlAttr::FamilyId).map_err(proto)?;
        let groups = h
            .get_nested_attributes::<Index>(CtrlAttr::McastGroups)
            .map_err(proto)?;
        client.events_group = groups
            .iter()
            .find_map(|g| {
                let g = g.get_attr_handle::<CtrlAttrMcastGrp>().ok()?;
                let name = g
                    .get_attr_payload_as_with_len::<String>(CtrlAttrMcastGrp::Name)
                    .ok()?;
                (name == MCGRP_EVENTS).then(|| g.get_attr_payload_as::<u32>(CtrlAttrMcastGrp::Id).ok())?
            })
            .ok_or_else(|| proto("family has no `events` multicast group"))?;
        Ok(client)
    }

    /// The generic netlink family id the kernel assigned to `prism_sock`.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// The multicast group id of the `events` group.
    pub fn events_group(&self) -> u32 {
        self.events_group
    }

    /// Sends one request and collects its replies up to the kernel's acknowledgement.
    fn transact<T, Q, R>(&self, nl_type: T, request: Q) -> Result<Vec<R>>
    where
        T: NlType + Debug,
        Q: Size + ToBytes + Debug,
        R: Size + FromBytesWithInput<Input = usize> + Clone + Debug,
    {
        let seq = self.seq.get();
        self.seq.set(seq.wrapping_add(1));
        let msg = NlmsghdrBuilder::default()
            .nl_type(nl_type)
            .nl_flags(NlmF::REQUEST | NlmF::ACK)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(request))
            .build()
            .map_err(proto)?;
        self.sock.send(&msg).map_err(netlink)?;
        let mut out = Vec::new();
        loop {
            let (msgs, _) = self.sock.recv::<T, R>().map_err(netlink)?;
            for m in msgs {
                let m = m.map_err(netlink)?;
                if *m.nl_seq() != seq {
                    continue;
                }
                match m.nl_payload() {
                    NlPayload::Payload(p) => out.push(p.clone()),
                    NlPayload::Err(e) => return Err(kernel_error(e)),
                    NlPayload::Ack(_) => return Ok(out),
                    NlPayload::DumpExtAck(_) | NlPayload::Empty => {}
                }
            }
        }
    }

    /// Sends `cmd` with raw attributes `(type, payload)` and returns the replies' attributes.
    ///
    /// Meant for diagnostics and for conformance tests of the module's validation: the
    /// attributes are sent as given, well-formed or not.
    pub fn raw_request(&self, cmd: u8, attributes: &[RawAttr]) -> Result<Vec<Vec<RawAttr>>> {
        let request = request(cmd, PROTO_VERSION as u8, attributes.iter().cloned())?;
        Ok(self
            .transact::<_, _, Genlmsghdr<u8, u16>>(self.family, request)?
            .iter()
            .map(|p| {
                p.attrs()
                    .iter()
                    .map(|a| (*a.nla_type().nla_type(), a.nla_payload().as_ref().to_vec()))
                    .collect()
            })
            .collect())
    }

    /// Reads the module's version and counters (`GET_INFO`).
    pub fn info(&self) -> Result<ModuleInfo> {
        let request = request(
            Command::GetInfo,
            PROTO_VERSION as u8,
            [(InfoAttr::ProtoVersion, PROTO_VERSION.to_ne_bytes().to_vec())],
        )?;
        let replies = self.transact::<_, _, Genlmsghdr<Command, InfoAttr>>(self.family, request)?;
        let reply = replies
            .first()
            .ok_or_else(|| proto("GET_INFO returned no reply"))?;
        let h = reply.attrs().get_attr_handle();
        let u64_of = |a| h.get_attr_payload_as::<u64>(a).map_err(proto);
        Ok(ModuleInfo {
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
            max_queue_bytes: h
                .get_attr_payload_as::<u32>(InfoAttr::MaxQueueBytes)
                .map_err(proto)?,
        })
    }

    /// Exports the whole state of the TCP socket `fd` (`SOCK_EXPORT`), captured
    /// atomically; the socket is left as it was.
    pub fn export_snapshot(&self, fd: impl AsFd) -> Result<MigrationState> {
        let raw = fd.as_fd().as_raw_fd() as u32;
        let request = request(
            Command::SockExport,
            PROTO_VERSION as u8,
            [(StateAttr::Fd, raw.to_ne_bytes().to_vec())],
        )?;
        // The reply is taken as raw bytes so the blob is the module's own, not re-encoded.
        let replies = self.transact::<_, _, Buffer>(self.family, request)?;
        let reply = replies
            .first()
            .ok_or_else(|| proto("SOCK_EXPORT returned no reply"))?;
        let genl_header = 4;
        let bytes = reply.as_ref();
        if bytes.len() < genl_header {
            return Err(proto("SOCK_EXPORT reply shorter than its header"));
        }
        Ok(MigrationState::from_bytes(bytes[genl_header..].to_vec()))
    }
}
