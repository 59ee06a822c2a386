//! Generic netlink round trips with no library at all: the floor that userlib's calls
//! are compared with. One socket, one request buffer built once, one receive buffer.

use prism_sock::uapi::{Command, InfoAttr, PROTO_VERSION};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

/// A bound generic netlink socket.
pub struct Socket {
    fd: OwnedFd,
    buf: Vec<u8>,
}

fn err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// A request: netlink header, generic netlink header, one attribute.
fn request(kind: u16, cmd: u8, version: u8, attr: u16, payload: &[u8]) -> Vec<u8> {
    let attr_len = 4 + payload.len();
    let len = 16 + 4 + ((attr_len + 3) & !3);
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[cmd, version, 0, 0]);
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&attr.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(len, 0);
    m
}

impl Socket {
    pub fn open() -> Result<Self, String> {
        // SAFETY: plain socket creation; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(err("netlink socket"));
        }
        Ok(Self {
            // SAFETY: a fresh fd we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: vec![0; 8192],
        })
    }

    /// Sends `req` and receives one reply into the kept buffer; an error message is
    /// an error.
    pub fn round_trip(&mut self, req: &[u8]) -> Result<(), String> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: `req` is valid for its length; the kernel is the default destination.
        if unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) } < 0 {
            return Err(err("netlink send"));
        }
        let buf = &mut self.buf;
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 20 {
            return Err(err("netlink recv"));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if kind == libc::NLMSG_ERROR as u16 {
            let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            return Err(format!("netlink error {code}"));
        }
        Ok(())
    }
}

/// nlctrl's CTRL_CMD_GETFAMILY for `prism_sock`.
pub fn get_family_request() -> Vec<u8> {
    request(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        1,
        CTRL_ATTR_FAMILY_NAME,
        b"prism_sock\0",
    )
}

/// The module's GET_INFO, byte for byte as userlib sends it.
pub fn get_info_request(family: u16) -> Vec<u8> {
    request(
        family,
        u8::from(Command::GetInfo),
        PROTO_VERSION as u8,
        u16::from(InfoAttr::ProtoVersion),
        &PROTO_VERSION.to_ne_bytes(),
    )
}
