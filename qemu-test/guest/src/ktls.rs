//! Kernel TLS from user space, for the tests: both ends of a connection get their keys
//! straight through TLS_TX/TLS_RX (no handshake), so the client is a plain kTLS socket
//! that knows nothing of a move and checks every record's authentication tag.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub const TLS_1_2: u16 = 0x0303;
pub const TLS_1_3: u16 = 0x0304;
const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
pub const TLS_TX_ZEROCOPY_RO: libc::c_int = 3;
pub const TLS_RX_EXPECT_NO_PAD: libc::c_int = 4;
const TCP_ULP: libc::c_int = 31;

/// A kTLS cipher and its field sizes (`tls12_crypto_info_*`).
#[derive(Clone, Copy, Debug)]
pub struct Cipher {
    pub name: &'static str,
    pub id: u16,
    iv: usize,
    key: usize,
    salt: usize,
}

/// Every cipher kTLS offers in software.
pub const CIPHERS: [Cipher; 8] = [
    Cipher {
        name: "AES-GCM-128",
        id: 51,
        iv: 8,
        key: 16,
        salt: 4,
    },
    Cipher {
        name: "AES-GCM-256",
        id: 52,
        iv: 8,
        key: 32,
        salt: 4,
    },
    Cipher {
        name: "AES-CCM-128",
        id: 53,
        iv: 8,
        key: 16,
        salt: 4,
    },
    Cipher {
        name: "ChaCha20-Poly1305",
        id: 54,
        iv: 12,
        key: 32,
        salt: 0,
    },
    Cipher {
        name: "SM4-GCM",
        id: 55,
        iv: 8,
        key: 16,
        salt: 4,
    },
    Cipher {
        name: "SM4-CCM",
        id: 56,
        iv: 8,
        key: 16,
        salt: 4,
    },
    Cipher {
        name: "ARIA-GCM-128",
        id: 57,
        iv: 8,
        key: 16,
        salt: 4,
    },
    Cipher {
        name: "ARIA-GCM-256",
        id: 58,
        iv: 8,
        key: 32,
        salt: 4,
    },
];

/// One direction's keys and the sequence number of its first record.
#[derive(Clone, Debug)]
pub struct Keys {
    key: Vec<u8>,
    iv: Vec<u8>,
    salt: Vec<u8>,
    pub rec_seq: u64,
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: a buffer of `len` bytes.
    let n = unsafe { libc::getrandom(v.as_mut_ptr().cast(), len, 0) };
    assert_eq!(n, len as isize, "getrandom");
    v
}

impl Keys {
    /// Random key, IV and salt; records start at `rec_seq`.
    pub fn random(c: &Cipher, rec_seq: u64) -> Self {
        Self {
            key: random(c.key),
            iv: random(c.iv),
            salt: random(c.salt),
            rec_seq,
        }
    }
}

/// The `tls12_crypto_info_*` TLS_TX/TLS_RX take.
fn info(version: u16, c: &Cipher, k: &Keys) -> Vec<u8> {
    let mut v = version.to_ne_bytes().to_vec();
    v.extend_from_slice(&c.id.to_ne_bytes());
    v.extend_from_slice(&k.iv);
    v.extend_from_slice(&k.key);
    v.extend_from_slice(&k.salt);
    v.extend_from_slice(&k.rec_seq.to_be_bytes());
    v
}

fn setsockopt(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, val: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, value and length.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, val.as_ptr().cast(), val.len() as u32) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attaches the tls ULP alone (no keys).
pub fn attach_ulp(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TCP, TCP_ULP, b"tls")
}

/// Attaches kTLS to `fd` with these keys for each direction.
pub fn attach(fd: BorrowedFd<'_>, version: u16, c: &Cipher, tx: &Keys, rx: &Keys) -> io::Result<()> {
    attach_ulp(fd)?;
    setsockopt(fd, SOL_TLS, TLS_TX, &info(version, c, tx))?;
    setsockopt(fd, SOL_TLS, TLS_RX, &info(version, c, rx))
}

/// Sets a TLS-level int option (TLS_TX_ZEROCOPY_RO, TLS_RX_EXPECT_NO_PAD).
pub fn set_option(fd: BorrowedFd<'_>, name: libc::c_int, v: u32) -> io::Result<()> {
    setsockopt(fd, SOL_TLS, name, &v.to_ne_bytes())
}

/// The keys of both ends of one connection: what one sends, the other receives.
pub struct Pair {
    pub version: u16,
    pub cipher: Cipher,
    /// Keys of the client's sending direction (the server's receiving one).
    pub up: Keys,
    /// Keys of the server's sending direction.
    pub down: Keys,
}

impl Pair {
    /// Random keys; the record sequences start at large random values, so that a
    /// sequence number the move did not carry shows at once.
    pub fn new(version: u16, cipher: Cipher) -> Self {
        let start = |b: Vec<u8>| u64::from_ne_bytes(b[..8].try_into().unwrap()) >> 16;
        Self {
            version,
            cipher,
            up: Keys::random(&cipher, start(random(8))),
            down: Keys::random(&cipher, start(random(8))),
        }
    }

    pub fn client(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        attach(fd, self.version, &self.cipher, &self.up, &self.down)
    }

    pub fn server(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        attach(fd, self.version, &self.cipher, &self.down, &self.up)
    }
}

/// Reads a TLS-level int option.
pub fn get_option(fd: BorrowedFd<'_>, name: libc::c_int) -> io::Result<u32> {
    let mut v = 0u32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: valid fd, 4-byte value and its length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_TLS,
            name,
            (&mut v as *mut u32).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;

/// Sends `data` as one record of TLS content type `kind` (21 alert, 22 handshake).
pub fn send_typed(fd: BorrowedFd<'_>, kind: u8, data: &[u8]) -> io::Result<()> {
    let mut cbuf = [0u64; 4];
    let iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; the control buffer holds one cmsg with one byte.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = (&iov as *const libc::iovec).cast_mut();
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = libc::CMSG_SPACE(1) as _;
        let c = libc::CMSG_FIRSTHDR(&mh);
        (*c).cmsg_level = SOL_TLS;
        (*c).cmsg_type = TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = kind;
        if libc::sendmsg(fd.as_raw_fd(), &mh, 0) != data.len() as isize {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads one record with its TLS content type.
pub fn recv_typed(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    let mut cbuf = [0u64; 4];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is valid; buffers outlive the call.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = (&iov as *const libc::iovec).cast_mut();
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = libc::recvmsg(fd.as_raw_fd(), &mut mh, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&mh);
        if c.is_null() || (*c).cmsg_level != SOL_TLS || (*c).cmsg_type != TLS_GET_RECORD_TYPE {
            return Err(io::Error::other("no record type"));
        }
        Ok((*libc::CMSG_DATA(c), n as usize))
    }
}
