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
