//! Carrying a migration to another host: a [`Handoff`] (the exported state, the module's
//! blob byte for byte, plus the request bytes the application had already read) and
//! length-delimited frames for a control connection between hosts.

use crate::backend::Exported;
use crate::error::{Error, Result};
use std::io::{self, IoSlice, Read, Write};

/// Largest frame [`read_frame`] accepts unless told otherwise: a state blob with full
/// queues plus a request fits well below it.
pub const MAX_FRAME: usize = 64 << 20;

const MAGIC: &[u8; 4] = b"PRHO";
const VERSION: u8 = 1;

/// Everything the next owner of a connection needs: the socket's state and the bytes
/// of the request that made the current owner hand it on (already read from the
/// socket, so not in the state's receive queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// The exported socket (a module blob is carried byte for byte).
    pub state: Exported,
    /// Request bytes the application read but did not answer.
    pub request: Vec<u8>,
}

impl Handoff {
    /// Encodes as `PRHO`, version, then the state and the request, each with a
    /// big-endian u32 length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let state = self.state.to_bytes();
        let mut out = Vec::with_capacity(13 + state.len() + self.request.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(state.len() as u32).to_be_bytes());
        out.extend_from_slice(&state);
        out.extend_from_slice(&(self.request.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.request);
        out
    }

    /// Decodes what [`Handoff::to_bytes`] produced; anything else is
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::Malformed(format!("hand-off: {why}"));
        let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| bad("no PRHO magic"))?;
        let (&version, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        if version != VERSION {
            return Err(bad(&format!("version {version}, this library reads {VERSION}")));
        }
        let (state, rest) = take_len_prefixed(rest).ok_or_else(|| bad("truncated state"))?;
        let (request, rest) = take_len_prefixed(rest).ok_or_else(|| bad("truncated request"))?;
        if !rest.is_empty() {
            return Err(bad(&format!("{} trailing bytes", rest.len())));
        }
        Ok(Handoff {
            state: Exported::from_bytes(state)?,
            request: request.to_vec(),
        })
    }
}

fn take_len_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Writes one frame: a big-endian u32 length, then `payload`.
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let header = frame_header(payload)?;
    // Header and payload in one write where the writer takes vectors: on a TCP_NODELAY
    // socket two writes are two segments, and two wake-ups of the reader.
    let mut done = 0;
    while done < FRAME_HEADER + payload.len() {
        let n = if done < FRAME_HEADER {
            w.write_vectored(&[IoSlice::new(&header[done..]), IoSlice::new(payload)])
        } else {
            w.write(&payload[done - FRAME_HEADER..])
        };
        match n {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

/// Bytes of a frame's length header.
pub(crate) const FRAME_HEADER: usize = 4;

/// The length header of a frame carrying `payload`.
pub(crate) fn frame_header(payload: &[u8]) -> io::Result<[u8; FRAME_HEADER]> {
    u32::try_from(payload.len())
        .map(u32::to_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame longer than 4 GiB"))
}

/// Reads one frame of at most `max` bytes; `Ok(None)` when the peer closed cleanly
/// between frames. A longer frame is refused with `InvalidData` before it is read.
pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; FRAME_HEADER];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = frame_len(len, max)?;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

pub(crate) fn frame_len(header: [u8; 4], max: usize) -> io::Result<usize> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes, the limit is {max}"),
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each write it takes, accepting at most `limit` bytes at a time.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        limit: usize,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.limit);
            self.writes.push(buf[..n].to_vec());
            Ok(n)
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            self.write(&all)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_frame_is_one_write_and_survives_short_writes() {
        let mut whole = Recorder {
            writes: Vec::new(),
            limit: usize::MAX,
        };
        write_frame(&mut whole, b"payload").unwrap();
        assert_eq!(whole.writes, [b"\0\0\0\x07payload".to_vec()]);
        let mut short = Recorder {
            writes: Vec::new(),
            limit: 3,
        };
        write_frame(&mut short, b"payload").unwrap();
        assert_eq!(short.writes.concat(), whole.writes.concat());
        assert_eq!(
            read_frame(&mut short.writes.concat().as_slice(), 16).unwrap(),
            Some(b"payload".to_vec())
        );
    }

    fn sample() -> Handoff {
        Handoff {
            state: Exported::Module(crate::MigrationState::from_bytes(vec![1, 2, 3, 4, 5])),
            request: b"GET /objects/a HTTP/1.1\r\n\r\n".to_vec(),
        }
    }

    #[test]
    fn handoff_round_trips_and_keeps_the_blob_byte_for_byte() {
        let h = sample();
        let back = Handoff::from_bytes(&h.to_bytes()).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.state.to_bytes(), &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn damaged_handoffs_are_refused() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Handoff::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Handoff::from_bytes(&long).is_err());
        let mut wrong = bytes;
        wrong[4] = 9;
        let err = Handoff::from_bytes(&wrong).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }

    #[test]
    fn frames_round_trip_and_oversize_is_refused() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello").unwrap();
        write_frame(&mut wire, b"").unwrap();
        let mut r = wire.as_slice();
        assert_eq!(read_frame(&mut r, 16).unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).unwrap().unwrap(), b"");
        assert!(read_frame(&mut r, 16).unwrap().is_none());
        let mut r = wire.as_slice();
        let err = read_frame(&mut r, 4).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
