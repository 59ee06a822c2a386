// SPDX-License-Identifier: GPL-2.0

//! A socket named by a file descriptor of the caller, and its socket lock.

use crate::bindings as b;
use crate::genl::errno;
use core::ffi::c_int;
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::prelude::*;

/// A reference to the socket behind one of the caller's fds; drops the file reference.
pub(crate) struct FdSocket {
    sock: NonNull<b::socket>,
}

impl FdSocket {
    /// Looks up `fd` in the caller's file table: EBADF, or ENOTSOCK for a non-socket.
    pub(crate) fn lookup(fd: u32) -> Result<Self> {
        let fd = c_int::try_from(fd).map_err(|_| EBADF)?;
        let mut err: c_int = 0;
        // SAFETY: `sockfd_lookup` validates `fd` and takes a file reference on success.
        let sock = unsafe { b::sockfd_lookup(fd, &mut err) };
        NonNull::new(sock)
            .map(|sock| Self { sock })
            .ok_or_else(|| Error::from_errno(err))
    }

    /// The `struct sock`, present for every socket that was created successfully.
    pub(crate) fn sk(&self) -> Result<NonNull<b::sock>> {
        // SAFETY: the file reference keeps `sock` alive.
        NonNull::new(unsafe { (*self.sock.as_ptr()).sk }).ok_or_else(|| errno(b::ENOTCONN))
    }
}

impl Drop for FdSocket {
    fn drop(&mut self) {
        // SAFETY: drops the file reference `sockfd_lookup` took.
        unsafe { b::prism_sockfd_put(self.sock.as_ptr()) };
    }
}

/// The socket lock (`lock_sock`), held until dropped. While it is held the TCP receive
/// path only queues to the backlog, so the socket's state does not change under us.
pub(crate) struct SockLock<'a> {
    sk: NonNull<b::sock>,
    _owner: PhantomData<&'a ()>,
}

impl<'a> SockLock<'a> {
    pub(crate) fn lock(file: &'a FdSocket) -> Result<Self> {
        let sk = file.sk()?;
        // SAFETY: `sk` is alive as long as the file reference.
        Ok(unsafe { Self::lock_raw(sk) })
    }

    /// Locks a socket the caller keeps alive for `'a`.
    ///
    /// # Safety
    ///
    /// `sk` must stay valid for `'a`. `lock_sock` may sleep, which is allowed in a
    /// genetlink `doit`.
    pub(crate) unsafe fn lock_raw(sk: NonNull<b::sock>) -> Self {
        // SAFETY: the caller guarantees `sk` is valid.
        unsafe { b::prism_lock_sock(sk.as_ptr()) };
        Self {
            sk,
            _owner: PhantomData,
        }
    }

    pub(crate) fn sk(&self) -> *mut b::sock {
        self.sk.as_ptr()
    }
}

impl Drop for SockLock<'_> {
    fn drop(&mut self) {
        // SAFETY: the lock was taken in `lock` and is released exactly once.
        unsafe { b::release_sock(self.sk.as_ptr()) };
    }
}

/// `tcp_disconnect(sk, 0)`, through the socket's protocol as `tcp_close` calls it:
/// 7.x no longer exports it. For a kTLS socket, through the protocol kTLS saved (see
/// `ktls::release_for_disconnect`).
///
/// # Safety
///
/// `sk` must be a locked TCP socket.
pub(crate) unsafe fn disconnect(sk: *mut b::sock) {
    // SAFETY: a TCP socket's protocol is `tcp_prot` or `tcpv6_prot` (or kTLS's copy,
    // whose saved base is one of them), whose `disconnect` is `tcp_disconnect`; the
    // socket is locked (caller).
    unsafe {
        let prot = crate::ktls::release_for_disconnect(sk).unwrap_or((*sk).__sk_common.skc_prot);
        if let Some(disconnect) = (*prot).disconnect {
            disconnect(sk, 0);
        }
    }
}

impl SockLock<'_> {
    /// Ends the connection on this host without sending anything: in repair mode
    /// `tcp_disconnect` neither sends FIN nor RST, and unhashes the socket. The
    /// application's fd stays open on a closed socket whose next call reports
    /// ECONNABORTED.
    pub(crate) fn detach(self) {
        let sk = self.sk();
        let tp = sk.cast::<b::tcp_sock>();
        // SAFETY: the socket is locked and is a TCP socket (checked by the capture that
        // precedes every detach).
        unsafe {
            (*tp).set_repair(1);
            disconnect(sk);
            (*tp).set_repair(0);
            (*tp).repair_queue = b::TCP_NO_QUEUE as u8;
            let sock = b::prism_sk_socket(sk);
            if !sock.is_null() {
                (*sock).state = b::socket_state_SS_UNCONNECTED;
            }
        }
    }
}
