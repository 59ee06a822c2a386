//! The hot path to l4's kernel: set element changes go out as one nf_tables batch
//! over netlink, built with rustables, every message acknowledged. libnftables parses
//! text and refreshes its cache on every call (milliseconds under emulation); this is
//! one send and one receive on a socket kept open.

use super::table::Change;
use rustables::set::SetBuilder;
use rustables::{Batch, MsgType, ProtocolFamily, Table};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The table's name inside family `inet` (see [`super::table::TABLE`]).
const TABLE_NAME: &str = "prism";
/// Netlink message header: length, type, flags, sequence number, port id.
const NLMSG_HDRLEN: usize = 16;

/// A key of `ipv4_addr . inet_service`: each field of a concatenation fills whole
/// 32-bit registers, so the port is followed by two zero bytes.
fn key4(addr: [u8; 4], port: u16) -> [u8; 8] {
    let mut k = [0; 8];
    k[..4].copy_from_slice(&addr);
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k
}

/// A key of `ipv6_addr . inet_service`.
fn key6(addr: [u8; 16], port: u16) -> [u8; 20] {
    let mut k = [0; 20];
    k[..16].copy_from_slice(&addr);
    k[16..18].copy_from_slice(&port.to_be_bytes());
    k
}

/// The batch of `changes` in order (messages numbered from 1; begin is 0) and the
/// number of its last change message.
fn build(changes: &[Change]) -> Result<(Vec<u8>, u32), String> {
    let table = Table::new(ProtocolFamily::Inet).with_name(TABLE_NAME);
    let mut batch = Batch::new();
    for change in changes {
        let flow = change.flow;
        let set = change.set.name(flow.is_ipv4());
        let err = |e: rustables::error::BuilderError| format!("element of {set}: {e}");
        // Only the elements go out, not the set's description.
        let list = match flow.ip() {
            IpAddr::V4(a) => {
                let mut b = SetBuilder::<[u8; 8]>::new(set.clone(), &table).map_err(err)?;
                b.add(&key4(a.octets(), flow.port()));
                b.finish().1
            }
            IpAddr::V6(a) => {
                let mut b = SetBuilder::<[u8; 20]>::new(set.clone(), &table).map_err(err)?;
                b.add(&key6(a.octets(), flow.port()));
                b.finish().1
            }
        };
        let kind = if change.add { MsgType::Add } else { MsgType::Del };
        batch.add(&list, kind);
    }
    Ok((batch.finalize(), changes.len() as u32))
}

/// A netlink socket to nf_tables, kept across batches, with its receive buffer.
pub struct Nfnl {
    sock: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl Default for Nfnl {
    fn default() -> Self {
        Self::new()
    }
}

impl Nfnl {
    /// Not connected yet: the socket opens with the first batch.
    pub fn new() -> Self {
        Self {
            sock: None,
            buf: vec![0; 64 << 10],
        }
    }

    fn open() -> io::Result<OwnedFd> {
        // SAFETY: plain socket creation; the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Applies `changes`, in order, as one transaction: all or none.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), String> {
        if changes.is_empty() {
            return Ok(());
        }
        let (batch, last) = build(changes)?;
        let result = self.exchange(&batch, last);
        if result.is_err() {
            // A socket left with unread answers would mislead the next batch.
            self.sock = None;
        }
        result
    }

    fn exchange(&mut self, batch: &[u8], last: u32) -> Result<(), String> {
        if self.sock.is_none() {
            self.sock = Some(Self::open().map_err(|e| format!("nf_tables socket: {e}"))?);
        }
        let fd = self.sock.as_ref().expect("opened above").as_raw_fd();
        // SAFETY: `batch` is valid for its length; the kernel is the default destination.
        let sent = unsafe { libc::send(fd, batch.as_ptr().cast(), batch.len(), 0) };
        if sent < 0 || sent as usize != batch.len() {
            return Err(format!("nf_tables send: {}", io::Error::last_os_error()));
        }
        // Every change message asked for an acknowledgement; the kernel answers them in
        // order once the transaction is committed, or reports the first error.
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::recv(fd, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("nf_tables receive: {e}"));
            }
            let mut at = 0;
            let data = &self.buf[..n as usize];
            while at + NLMSG_HDRLEN <= data.len() {
                let word = |o: usize| u32::from_ne_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]);
                let len = word(at) as usize;
                if len < NLMSG_HDRLEN || at + len > data.len() {
                    return Err("nf_tables: malformed answer".into());
                }
                let kind = u16::from_ne_bytes([data[at + 4], data[at + 5]]);
                let seq = word(at + 8);
                if kind == libc::NLMSG_ERROR as u16 && len >= NLMSG_HDRLEN + 4 {
                    let code = word(at + NLMSG_HDRLEN) as i32;
                    if code != 0 {
                        return Err(format!(
                            "nf_tables refused the batch: {}",
                            io::Error::from_raw_os_error(-code)
                        ));
                    }
                    if seq >= last {
                        return Ok(());
                    }
                }
                at += (len + 3) & !3;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::SetKind;
    use super::*;

    #[test]
    fn keys_pad_the_port_to_a_register() {
        assert_eq!(key4([10, 0, 0, 2], 40000), [10, 0, 0, 2, 0x9c, 0x40, 0, 0]);
        let k = key6([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 443);
        assert_eq!(&k[16..], &[1, 0xbb, 0, 0]);
        assert_eq!(k[0], 0xfd);
    }

    #[test]
    fn a_batch_numbers_its_changes_from_one() {
        let change = |add, set| Change {
            add,
            set,
            flow: "10.0.0.2:40000".parse().unwrap(),
        };
        let (batch, last) = build(&[change(false, SetKind::Hold), change(true, SetKind::Flows(2))]).unwrap();
        assert_eq!(last, 2);
        // begin, two element messages, end; sequence numbers 0..=3.
        let mut at = 0;
        let mut seqs = Vec::new();
        while at < batch.len() {
            let len = u32::from_ne_bytes(batch[at..at + 4].try_into().unwrap()) as usize;
            seqs.push(u32::from_ne_bytes(batch[at + 8..at + 12].try_into().unwrap()));
            at += (len + 3) & !3;
        }
        assert_eq!(seqs, [0, 1, 2, 3]);
        let text = |needle: &[u8]| batch.windows(needle.len()).any(|w| w == needle);
        assert!(text(b"hold4") && text(b"flows4_2") && text(b"prism"));
    }
}
