//! Socket queries the tests compare the module's export with.

use std::os::fd::{AsRawFd, BorrowedFd};

/// Bytes in the receive queue (SIOCINQ) or the send queue (SIOCOUTQ).
pub fn queued(fd: BorrowedFd<'_>, outq: bool) -> i32 {
    let mut n: libc::c_int = 0;
    let req = if outq { libc::TIOCOUTQ } else { libc::FIONREAD };
    // SAFETY: valid fd and output pointer.
    unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n) };
    n
}

/// `getsockopt(TCP_INFO)`.
pub fn tcp_info(fd: BorrowedFd<'_>) -> libc::tcp_info {
    // SAFETY: tcp_info is plain data; the length matches the buffer.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        info
    }
}

/// `setsockopt` with an int value.
pub fn set_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: valid fd, value and length.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (&v as *const libc::c_int).cast(), 4) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SO_LINGER with a zero timeout: closing the socket aborts it with a RST, and leaves
/// no FIN to retransmit behind.
pub fn linger_zero(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd, option value and length.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `getsockopt` of an int value; the errno on failure.
pub fn get_int(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int) -> Result<i32, i32> {
    let mut v: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: valid fd, value buffer and length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// The `struct tcp_info` fields past the ones `libc::tcp_info` declares.
#[derive(Debug, Clone, Copy)]
pub struct TcpInfoExt {
    pub snd_mss: u32,
    pub data_segs_out: u32,
    pub bytes_sent: u64,
    pub total_retrans: u32,
}

/// `getsockopt(TCP_INFO)` with the counters of newer kernels (offsets from
/// include/uapi/linux/tcp.h, stable ABI).
pub fn tcp_info_ext(fd: BorrowedFd<'_>) -> TcpInfoExt {
    let mut buf = [0u8; 232];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the buffer is valid for `len` bytes.
    unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        );
    }
    let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
    TcpInfoExt {
        snd_mss: u32_at(16),
        total_retrans: u32_at(100),
        data_segs_out: u32_at(156),
        bytes_sent: u64_at(200),
    }
}
