//! The control protocol between nodes and prism-steerd.
//!
//! A node connects over TCP; prism-steerd first sends a frame holding a fresh 16-byte
//! challenge. Every frame the node sends after that is a 32-byte HMAC-SHA256 tag over
//! (challenge || body) with the cluster secret, then the body: one JSON [`Envelope`]
//! whose `seq` must grow on the connection. So a frame cannot be forged without the
//! secret, nor replayed on another connection or twice on one. prism-steerd answers
//! each accepted envelope with a JSON [`Reply`], tagged the same way over
//! ("reply" || challenge || body), so a node believes no forged answer. Frames are the
//! length-delimited ones of `prism_sock::transfer`.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::net::SocketAddr;

/// Challenge length.
pub const NONCE_LEN: usize = 16;
/// Tag length (HMAC-SHA256).
pub const TAG_LEN: usize = 32;
/// Largest control frame either side accepts.
pub const MAX_FRAME: usize = 4096;

/// What a node asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Liveness; also sent first on every connection.
    Heartbeat,
    /// Drop the client's packets of `flow` at l4 while it is handed off.
    Hold {
        /// The client's address and port.
        flow: SocketAddr,
    },
    /// End a hold without steering: the flow keeps going where it went before (the
    /// hand-off did not happen).
    Unhold {
        /// The client's address and port.
        flow: SocketAddr,
    },
    /// Send `flow` to the requesting node from now on (ends a hold), unless a later
    /// generation of the flow was steered or released already.
    Steer {
        /// The client's address and port.
        flow: SocketAddr,
        /// Which owner of the connection asks (absent from older nodes: zero).
        #[serde(default)]
        generation: Generation,
    },
    /// The requesting node's socket of `flow` is gone (its `SOCK_RELEASED` event):
    /// remove the entry after `linger_ms`, if no later generation owns it.
    Release {
        /// The client's address and port.
        flow: SocketAddr,
        /// TIME_WAIT left on the node (from the event).
        linger_ms: u64,
        /// The generation that owned the released socket (zero if unknown).
        #[serde(default)]
        generation: Generation,
    },
}

/// Orders the owners of one flow. Nodes reach prism-steerd over separate connections
/// and queue requests while it restarts, so a steer can arrive after the steer of the
/// owner the connection moved on to; the later generation wins whatever the order of
/// arrival. A connection is numbered by its birth (when a node accepted it, µs since
/// the epoch; a new connection on the same client port is born later) and then by
/// its moves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Generation {
    /// When the connection was accepted, µs since the epoch.
    pub born_us: u64,
    /// Changes of owner since: hand-offs, and a sender taking its connection back.
    pub moves: u32,
}

impl Generation {
    /// A connection accepted now.
    pub fn born_now() -> Self {
        let born_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Generation { born_us, moves: 0 }
    }

    /// The generation `n` owner changes later.
    pub fn after(self, n: u32) -> Self {
        Generation {
            moves: self.moves.saturating_add(n),
            ..self
        }
    }

    /// Zero: sent by nodes that do not number their steers.
    pub fn is_unknown(self) -> bool {
        self == Self::default()
    }
}

/// One authenticated request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node's name.
    pub node: String,
    /// Grows by at least one per frame on a connection.
    pub seq: u64,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// prism-steerd's answer to one envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The envelope's seq.
    pub seq: u64,
    /// None when done, else why not.
    pub error: Option<String>,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Shorter than a tag.
    #[error("frame of {0} bytes is shorter than its tag")]
    Short(usize),
    /// The tag does not match: wrong secret, altered or replayed on another connection.
    #[error("bad tag (forged, altered, or sent with another secret or challenge)")]
    BadTag,
    /// Authentic but not an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], nonce: &[u8], body: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(nonce);
    m.update(body);
    m
}

/// Prefixes `body` with its tag under `secret` and `context` (a challenge, or a fixed
/// label for frames between nodes).
pub fn sign(secret: &[u8], context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut frame = mac(secret, context, body).finalize().into_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Checks a frame's tag in constant time and returns its body.
pub fn verify<'a>(secret: &[u8], context: &[u8], frame: &'a [u8]) -> Result<&'a [u8], Refusal> {
    if frame.len() < TAG_LEN {
        return Err(Refusal::Short(frame.len()));
    }
    let (tag, body) = frame.split_at(TAG_LEN);
    mac(secret, context, body)
        .verify_slice(tag)
        .map_err(|_| Refusal::BadTag)?;
    Ok(body)
}

/// Encodes `env` as a tagged frame body for the connection with challenge `nonce`.
pub fn seal(secret: &[u8], nonce: &[u8], env: &Envelope) -> Vec<u8> {
    sign(
        secret,
        nonce,
        &serde_json::to_vec(env).expect("envelopes always serialize"),
    )
}

/// Checks the tag before parsing anything, then parses.
pub fn open(secret: &[u8], nonce: &[u8], frame: &[u8]) -> Result<Envelope, Refusal> {
    let body = verify(secret, nonce, frame)?;
    serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// What a reply's tag covers besides the challenge: no request frame is a valid reply.
const REPLY_LABEL: &[u8] = b"reply";

/// Encodes `reply` as a tagged frame for the connection with challenge `nonce`.
pub fn seal_reply(secret: &[u8], nonce: &[u8], reply: &Reply) -> Vec<u8> {
    sign(
        secret,
        &[REPLY_LABEL, nonce].concat(),
        &serde_json::to_vec(reply).expect("replies always serialize"),
    )
}

/// Checks a reply's tag before parsing anything, then parses.
pub fn open_reply(secret: &[u8], nonce: &[u8], frame: &[u8]) -> Result<Reply, Refusal> {
    let body = verify(secret, &[REPLY_LABEL, nonce].concat(), frame)?;
    serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))
}

/// A fresh challenge from the kernel's random pool.
pub fn new_nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    // SAFETY: writes at most NONCE_LEN bytes into `n`.
    let got = unsafe { libc::getrandom(n.as_mut_ptr().cast(), NONCE_LEN, 0) };
    if got != NONCE_LEN as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            node: "be1".into(),
            seq: 7,
            request: Request::Steer {
                flow: "10.0.0.2:40000".parse().unwrap(),
                generation: Generation { born_us: 1, moves: 2 },
            },
        }
    }

    #[test]
    fn sealed_envelopes_open_with_the_same_secret_and_challenge_only() {
        let frame = seal(b"secret-secret-16", b"nonce-one", &env());
        assert_eq!(open(b"secret-secret-16", b"nonce-one", &frame), Ok(env()));
        assert_eq!(
            open(b"another-secret16", b"nonce-one", &frame),
            Err(Refusal::BadTag)
        );
        assert_eq!(
            open(b"secret-secret-16", b"nonce-two", &frame),
            Err(Refusal::BadTag)
        );
        let mut altered = frame.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(
            open(b"secret-secret-16", b"nonce-one", &altered),
            Err(Refusal::BadTag)
        );
        assert_eq!(open(b"k", b"n", &frame[..5]), Err(Refusal::Short(5)));
    }

    #[test]
    fn replies_open_only_as_replies_of_their_connection() {
        let (secret, nonce) = (b"secret-secret-16", b"nonce-one");
        let reply = Reply { seq: 3, error: None };
        let frame = seal_reply(secret, nonce, &reply);
        assert_eq!(open_reply(secret, nonce, &frame), Ok(reply));
        assert_eq!(open_reply(secret, b"nonce-two", &frame), Err(Refusal::BadTag));
        assert_eq!(
            open_reply(b"another-secret16", nonce, &frame),
            Err(Refusal::BadTag)
        );
        // A request's tag is no reply's, and the other way round.
        let request = seal(secret, nonce, &env());
        assert_eq!(open_reply(secret, nonce, &request), Err(Refusal::BadTag));
        assert_eq!(open(secret, nonce, &frame), Err(Refusal::BadTag));
    }

    #[test]
    fn requests_of_nodes_without_generations_still_parse() {
        let old: Request = serde_json::from_str(r#"{"op":"steer","flow":"10.0.0.2:4000"}"#).unwrap();
        let Request::Steer { generation, .. } = old else {
            panic!("{old:?}")
        };
        assert!(generation.is_unknown());
        let born = Generation::born_now();
        assert!(born.after(1) > born && born.after(1).after(1) == born.after(2));
        assert!(
            Generation {
                born_us: born.born_us + 1,
                moves: 0
            } > born.after(9),
            "a newer connection"
        );
    }

    #[test]
    fn authentic_garbage_is_malformed() {
        let body = br#"{"node": "be1", "seq": 1, "op": "steal"}"#;
        let mut frame = mac(b"k", b"n", body).finalize().into_bytes().to_vec();
        frame.extend_from_slice(body);
        assert!(matches!(open(b"k", b"n", &frame), Err(Refusal::Malformed(_))));
        let wire = String::from_utf8(seal(b"k", b"n", &env())[TAG_LEN..].to_vec()).unwrap();
        assert!(wire.contains(r#""op":"steer""#), "{wire}");
    }
}
