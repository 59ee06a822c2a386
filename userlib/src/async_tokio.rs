//! tokio integration: the event subscription as a [`Stream`], imports straight to a
//! [`tokio::net::TcpStream`], and the control-connection frames over async I/O.
//!
//! Netlink requests themselves are blocking system calls that return in microseconds
//! (a few milliseconds for a socket with megabytes queued), so a server calls
//! [`Client`] methods on its runtime thread, as prism-node does: a trip through
//! `spawn_blocking` and back costs more than the call.

use crate::client::{Client, ImportOptions};
use crate::error::Result;
use crate::events::{Event, EventListener, Group};
use crate::state::MigrationState;
use crate::transfer::{frame_header, frame_len, FRAME_HEADER};
use futures_core::Stream;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A multicast group (`events` or `releases`) as a tokio [`Stream`] of [`Event`]s.
pub struct EventStream {
    inner: AsyncFd<EventListener>,
}

impl EventStream {
    /// Joins the `events` group (CAP_NET_ADMIN needed, see [`EventListener::open`]).
    /// Must be called inside a tokio runtime.
    pub fn open() -> Result<Self> {
        Self::join(Group::Events)
    }

    /// Joins `group` (CAP_NET_ADMIN needed, see [`EventListener::join`]). Must be
    /// called inside a tokio runtime.
    pub fn join(group: Group) -> Result<Self> {
        let listener = EventListener::join(group)?;
        set_nonblocking(listener.as_raw_fd())?;
        // SAFETY: the listener owns its netlink fd and neither closes nor replaces it
        // while the AsyncFd holds it (it is closed when the AsyncFd drops it).
        let inner = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(EventStream { inner })
    }

    /// The listener underneath, e.g. to size its receive buffer.
    pub fn listener(&self) -> &EventListener {
        self.inner.get_ref()
    }

    /// The next event already received, without waiting; `Ok(None)` when the socket
    /// holds none. After an overrun (ENOBUFS) the kernel drops further events silently
    /// until the socket's queue has been emptied: empty it with this, then rebuild the
    /// view from [`Client::list_tracked`].
    pub fn try_next(&mut self) -> Result<Option<Event>> {
        self.inner.get_mut().receive()
    }
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.inner.poll_read_ready_mut(cx))?;
            match guard.get_inner_mut().receive() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) => guard.clear_ready(),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with plain integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Client {
    /// Imports `state` as a [`tokio::net::TcpStream`] registered with the current
    /// runtime (the fd is created non-blocking whatever `options.nonblock` says).
    pub fn import_tokio(
        &self,
        state: &MigrationState,
        options: &ImportOptions,
    ) -> Result<(tokio::net::TcpStream, u64)> {
        let options = ImportOptions {
            nonblock: true,
            ..options.clone()
        };
        let imported = self.import(state, &options)?;
        let std_stream = std::net::TcpStream::from(imported.fd);
        Ok((
            tokio::net::TcpStream::from_std(std_stream)?,
            imported.migration_id,
        ))
    }
}

/// Writes one frame (big-endian u32 length, then `payload`) to an async writer.
///
/// Header and payload go out in one write where the writer takes vectors (a TCP
/// stream does): on a TCP_NODELAY socket two writes are two segments. Wrap the reading
/// half in a [`tokio::io::BufReader`] so that [`read_frame`] takes a frame in one read.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> io::Result<()> {
    let header = frame_header(payload)?;
    let mut done = 0;
    while done < FRAME_HEADER + payload.len() {
        let n = if done < FRAME_HEADER {
            w.write_vectored(&[IoSlice::new(&header[done..]), IoSlice::new(payload)])
                .await?
        } else {
            w.write(&payload[done - FRAME_HEADER..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    w.flush().await
}

/// Reads one frame of at most `max` bytes from an async reader; `Ok(None)` on a clean
/// close between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; FRAME_HEADER];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut payload = vec![0; frame_len(header, max)?];
    r.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn async_frames_interoperate_with_the_blocking_ones() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"one").await.unwrap();
        crate::transfer::write_frame(&mut wire, b"two").unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r, 8).await.unwrap().unwrap(), b"one");
        assert_eq!(crate::transfer::read_frame(&mut r, 8).unwrap().unwrap(), b"two");
        assert!(read_frame(&mut r, 8).await.unwrap().is_none());
    }
}
