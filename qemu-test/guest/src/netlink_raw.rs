//! Raw netlink requests, byte for byte: generic netlink for the malformed-message tests
//! that a well-behaved netlink library refuses to build, and the one rtnetlink request
//! (a policy rule) that per-flow steering needs thousands of times per test.

use std::io;

const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSG_ERROR: u16 = 2;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel's answer to a request: errno (0 for success) and extack message.
#[derive(Debug)]
pub struct Ack {
    pub errno: i32,
    pub message: Option<String>,
}

/// Sends `payload` (everything after the generic netlink header) as command `cmd` of
/// family `family`, with `len_delta` added to the netlink header's length field, and
/// returns the kernel's acknowledgement.
pub fn request(family: u16, cmd: u8, payload: &[u8], len_delta: i32) -> io::Result<Ack> {
    request_version(family, cmd, 1, payload, len_delta)
}

/// Like [`request`], with `version` in the generic netlink header.
pub fn request_version(family: u16, cmd: u8, version: u8, payload: &[u8], len_delta: i32) -> io::Result<Ack> {
    let mut body = vec![cmd, version, 0, 0];
    body.extend_from_slice(payload);
    transact(libc::NETLINK_GENERIC, family, 0, &body, len_delta)
}

/// Sends one rtnetlink request (`msg_type`, extra `flags`, body after the netlink
/// header) in the caller's network namespace and returns the kernel's answer.
pub fn rtnl(msg_type: u16, flags: u16, body: &[u8]) -> io::Result<Ack> {
    transact(libc::NETLINK_ROUTE, msg_type, flags, body, 0)
}

fn transact(
    protocol: libc::c_int,
    msg_type: u16,
    flags: u16,
    body: &[u8],
    len_delta: i32,
) -> io::Result<Ack> {
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we own and close below through OwnedFd.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let one: libc::c_int = 1;
    // SAFETY: valid option value of the right size.
    unsafe {
        libc::setsockopt(
            raw,
            libc::SOL_NETLINK,
            NETLINK_EXT_ACK,
            (&one as *const libc::c_int).cast(),
            4,
        );
    }
    let len = (16 + body.len()) as i32 + len_delta;
    let mut msg = Vec::new();
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&msg_type.to_ne_bytes());
    msg.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16 | flags).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(body);
    // SAFETY: `sa` is a zeroed sockaddr_nl addressed to the kernel.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: buffer and address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            raw,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let b = &buf[..n as usize];
        let mut off = 0;
        while off + 16 <= b.len() {
            let mlen = u32::from_ne_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            let mtype = u16::from_ne_bytes(b[off + 4..off + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(b[off + 6..off + 8].try_into().unwrap());
            if mlen < 16 || off + mlen > b.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad netlink reply"));
            }
            if mtype == NLMSG_ERROR {
                return Ok(parse_error(&b[off..off + mlen], flags));
            }
            off += (mlen + 3) & !3;
        }
    }
}

fn parse_error(m: &[u8], flags: u16) -> Ack {
    let errno = -i32::from_ne_bytes(m[16..20].try_into().unwrap());
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 && m.len() >= 36 {
        let orig_len = u32::from_ne_bytes(m[20..24].try_into().unwrap()) as usize;
        let mut off = 20
            + if flags & NLM_F_CAPPED != 0 {
                16
            } else {
                (orig_len + 3) & !3
            };
        while off + 4 <= m.len() {
            let alen = u16::from_ne_bytes(m[off..off + 2].try_into().unwrap()) as usize;
            let atype = u16::from_ne_bytes(m[off + 2..off + 4].try_into().unwrap());
            if alen < 4 || off + alen > m.len() {
                break;
            }
            if atype == NLMSGERR_ATTR_MSG {
                let text = &m[off + 4..off + alen];
                let text = text.split(|c| *c == 0).next().unwrap_or_default();
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
            off += (alen + 3) & !3;
        }
    }
    Ack { errno, message }
}
