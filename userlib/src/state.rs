//! The state of an exported TCP connection.

use crate::error::{Error, Result};
use crate::uapi::StateAttr;
use neli::types::{Buffer, GenlBuffer};
use neli::FromBytesWithInput;
use serde::Serialize;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Blob format version this library understands.
pub const BLOB_VERSION: u32 = 1;

/// The module's state blob, exactly as `SOCK_EXPORT` returned it: ship these bytes to
/// another host unchanged.
#[derive(Debug, Clone)]
pub struct MigrationState {
    /// The blob is `buf[start..]`: a reply is received whole into `buf`, so its headers
    /// stay in front instead of the blob being copied out of it.
    buf: Vec<u8>,
    start: usize,
}

impl Drop for MigrationState {
    /// A blob with kTLS keys is wiped before its memory is freed.
    fn drop(&mut self) {
        if has_tls(self.as_bytes()) {
            wipe(&mut self.buf);
        }
    }
}

impl PartialEq for MigrationState {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for MigrationState {}

/// A readable view of a [`MigrationState`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecodedState {
    /// Blob format version.
    pub blob_version: u32,
    /// Local address and port.
    pub local: Option<SocketAddr>,
    /// Peer address and port.
    pub peer: Option<SocketAddr>,
    /// TCP state (1 ESTABLISHED, 8 CLOSE_WAIT).
    pub tcp_state: u8,
    /// First unacknowledged sequence number.
    pub snd_una: u32,
    /// Next sequence number to send.
    pub snd_nxt: u32,
    /// Sequence number after the last byte the application wrote.
    pub write_seq: u32,
    /// Next sequence number expected from the peer.
    pub rcv_nxt: u32,
    /// Bytes from `snd_una` to `write_seq`.
    #[serde(skip)]
    pub send_queue: Vec<u8>,
    /// Received bytes not read by the application.
    #[serde(skip)]
    pub recv_queue: Vec<u8>,
    /// The peer's FIN was received.
    pub fin_received: bool,
    /// Negotiated MSS clamp.
    pub mss_clamp: u16,
    /// Peer's window scale.
    pub snd_wscale: u8,
    /// Our window scale.
    pub rcv_wscale: u8,
    /// Timestamps negotiated.
    pub timestamps: bool,
    /// SACK negotiated.
    pub sack: bool,
    /// Window scaling negotiated.
    pub wscale_ok: bool,
    /// Timestamp clock as the peer sees it.
    pub ts_now: u32,
    /// Timestamp to echo next.
    pub ts_recent: u32,
    /// Peer's last window advertisement (scaled).
    pub snd_wnd: u32,
    /// Largest window the peer advertised.
    pub max_window: u32,
    /// Our current receive window.
    pub rcv_wnd: u32,
    /// Congestion window, in segments.
    pub snd_cwnd: u32,
    /// Slow-start threshold.
    pub snd_ssthresh: u32,
    /// Smoothed RTT (microseconds << 3).
    pub srtt_us: u32,
    /// Congestion control algorithm.
    pub cc_name: String,
    /// TCP_NODELAY set.
    pub nodelay: bool,
    /// SO_KEEPALIVE set.
    pub keepalive: bool,
    /// SO_MARK.
    pub mark: u32,
    /// kTLS state, for a connection that carries it.
    pub tls: Option<DecodedTls>,
}

/// The kTLS part of a [`DecodedState`]. Keys, IVs and salts are secret: they are left
/// out of its `Serialize` output (see [`TlsSecrets`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DecodedTls {
    /// TLS version: 0x0303 (1.2) or 0x0304 (1.3).
    pub version: u16,
    /// `TLS_CIPHER_*` number of `<linux/tls.h>`.
    pub cipher: u16,
    /// Record sequence number of the next record sent, if TLS_TX is set.
    pub tx_rec_seq: Option<u64>,
    /// Record sequence number of the next record received, if TLS_RX is set.
    pub rx_rec_seq: Option<u64>,
    /// TLS_TX_ZEROCOPY_RO is set.
    pub tx_zerocopy: bool,
    /// TLS_RX_EXPECT_NO_PAD is set.
    pub rx_no_pad: bool,
    /// Bytes of records decrypted but not read yet, which the blob carries.
    pub rx_decrypted: usize,
    /// Key material; not serialized.
    #[serde(skip)]
    pub secrets: TlsSecrets,
}

/// Key, IV and salt of each direction, as the blob carries them.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsSecrets {
    /// Transmit key.
    #[serde(serialize_with = "hex")]
    pub tx_key: Vec<u8>,
    /// Transmit IV of the next record.
    #[serde(serialize_with = "hex")]
    pub tx_iv: Vec<u8>,
    /// Transmit salt.
    #[serde(serialize_with = "hex")]
    pub tx_salt: Vec<u8>,
    /// Receive key.
    #[serde(serialize_with = "hex")]
    pub rx_key: Vec<u8>,
    /// Receive IV of the next record.
    #[serde(serialize_with = "hex")]
    pub rx_iv: Vec<u8>,
    /// Receive salt.
    #[serde(serialize_with = "hex")]
    pub rx_salt: Vec<u8>,
}

impl std::fmt::Debug for TlsSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSecrets(..)")
    }
}

impl Drop for TlsSecrets {
    fn drop(&mut self) {
        for v in [
            &mut self.tx_key,
            &mut self.tx_iv,
            &mut self.tx_salt,
            &mut self.rx_key,
            &mut self.rx_iv,
            &mut self.rx_salt,
        ] {
            wipe(v);
        }
    }
}

fn hex<S: serde::Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&format_args!(
        "{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

/// Overwrites `bytes` with zeros in a way the compiler keeps.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: a valid, aligned byte of the slice.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Whether `bytes` (a blob's attributes) carry kTLS key material.
pub(crate) fn has_tls(bytes: &[u8]) -> bool {
    attributes(bytes).any(|(kind, _)| kind == u16::from(StateAttr::TlsVersion))
}

fn short(what: &str) -> Error {
    Error::Protocol(format!("state blob: malformed {what}"))
}

fn tls(d: &mut DecodedState) -> &mut DecodedTls {
    d.tls.get_or_insert_with(Default::default)
}

fn rec_seq(p: &[u8]) -> Result<u64> {
    p.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| short("TLS record sequence"))
}

fn ip(bytes: &[u8]) -> Result<IpAddr> {
    match bytes.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap()))),
        16 => Ok(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap()))),
        _ => Err(short("address")),
    }
}

/// The netlink attributes in `bytes` as (type, payload), in order; stops at the first
/// one whose length runs past the end. Nested-attribute and byte-order flags are
/// masked off the type.
pub(crate) fn attributes(bytes: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & 0x3fff;
        let payload = rest.get(4..len)?;
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, payload))
    })
}

impl MigrationState {
    /// Wraps bytes received from another host (checked when decoded or imported).
    pub fn from_bytes(blob: Vec<u8>) -> Self {
        Self { buf: blob, start: 0 }
    }

    /// The blob that starts at byte `start` of a received message.
    pub(crate) fn from_message(buf: Vec<u8>, start: usize) -> Self {
        let start = start.min(buf.len());
        Self { buf, start }
    }

    /// The blob, to send to another host.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Decodes the blob into readable fields.
    pub fn decode(&self) -> Result<DecodedState> {
        let attrs = GenlBuffer::<u16, Buffer>::from_bytes_with_input(
            &mut Cursor::new(self.as_bytes()),
            self.as_bytes().len(),
        )
        .map_err(|e| Error::Protocol(format!("state blob: {e}")))?;
        let mut d = DecodedState::default();
        let (mut saddr, mut daddr, mut sport, mut dport) = (None, None, 0, 0);
        for a in attrs.iter() {
            let p = a.nla_payload().as_ref();
            let u8v = || p.first().copied().ok_or_else(|| short("u8"));
            let u16v = || p.try_into().map(u16::from_ne_bytes).map_err(|_| short("u16"));
            let u32v = || p.try_into().map(u32::from_ne_bytes).map_err(|_| short("u32"));
            match StateAttr::from(*a.nla_type().nla_type()) {
                StateAttr::BlobVersion => d.blob_version = u32v()?,
                StateAttr::Saddr => saddr = Some(ip(p)?),
                StateAttr::Daddr => daddr = Some(ip(p)?),
                StateAttr::Sport => sport = u16v()?,
                StateAttr::Dport => dport = u16v()?,
                StateAttr::TcpState => d.tcp_state = u8v()?,
                StateAttr::SndUna => d.snd_una = u32v()?,
                StateAttr::SndNxt => d.snd_nxt = u32v()?,
                StateAttr::WriteSeq => d.write_seq = u32v()?,
                StateAttr::RcvNxt => d.rcv_nxt = u32v()?,
                StateAttr::SendQueue => d.send_queue.extend_from_slice(p),
                StateAttr::RecvQueue => d.recv_queue.extend_from_slice(p),
                StateAttr::FinReceived => d.fin_received = u8v()? != 0,
                StateAttr::MssClamp => d.mss_clamp = u16v()?,
                StateAttr::SndWscale => d.snd_wscale = u8v()?,
                StateAttr::RcvWscale => d.rcv_wscale = u8v()?,
                StateAttr::Timestamps => d.timestamps = u8v()? != 0,
                StateAttr::Sack => d.sack = u8v()? != 0,
                StateAttr::WscaleOk => d.wscale_ok = u8v()? != 0,
                StateAttr::TsNow => d.ts_now = u32v()?,
                StateAttr::TsRecent => d.ts_recent = u32v()?,
                StateAttr::SndWnd => d.snd_wnd = u32v()?,
                StateAttr::MaxWindow => d.max_window = u32v()?,
                StateAttr::RcvWnd => d.rcv_wnd = u32v()?,
                StateAttr::SndCwnd => d.snd_cwnd = u32v()?,
                StateAttr::SndSsthresh => d.snd_ssthresh = u32v()?,
                StateAttr::SrttUs => d.srtt_us = u32v()?,
                StateAttr::CcName => {
                    d.cc_name =
                        String::from_utf8_lossy(p.split(|c| *c == 0).next().unwrap_or_default()).into()
                }
                StateAttr::Nodelay => d.nodelay = u8v()? != 0,
                StateAttr::Keepalive => d.keepalive = u8v()? != 0,
                StateAttr::Mark => d.mark = u32v()?,
                StateAttr::TlsVersion => tls(&mut d).version = u16v()?,
                StateAttr::TlsCipher => tls(&mut d).cipher = u16v()?,
                StateAttr::TlsTxRecSeq => tls(&mut d).tx_rec_seq = Some(rec_seq(p)?),
                StateAttr::TlsRxRecSeq => tls(&mut d).rx_rec_seq = Some(rec_seq(p)?),
                StateAttr::TlsTxZerocopy => tls(&mut d).tx_zerocopy = u8v()? != 0,
                StateAttr::TlsRxNoPad => tls(&mut d).rx_no_pad = u8v()? != 0,
                StateAttr::TlsRxDecrypted => tls(&mut d).rx_decrypted += p.len(),
                StateAttr::TlsTxKey => tls(&mut d).secrets.tx_key = p.to_vec(),
                StateAttr::TlsTxIv => tls(&mut d).secrets.tx_iv = p.to_vec(),
                StateAttr::TlsTxSalt => tls(&mut d).secrets.tx_salt = p.to_vec(),
                StateAttr::TlsRxKey => tls(&mut d).secrets.rx_key = p.to_vec(),
                StateAttr::TlsRxIv => tls(&mut d).secrets.rx_iv = p.to_vec(),
                StateAttr::TlsRxSalt => tls(&mut d).secrets.rx_salt = p.to_vec(),
                _ => {}
            }
        }
        if d.blob_version != BLOB_VERSION {
            return Err(Error::Protocol(format!(
                "state blob version {} (this library reads {BLOB_VERSION})",
                d.blob_version
            )));
        }
        d.local = saddr.map(|a| SocketAddr::new(a, sport));
        d.peer = daddr.map(|a| SocketAddr::new(a, dport));
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::attributes;

    fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize((v.len() + 3) & !3, 0);
        v
    }

    #[test]
    fn attributes_are_walked_in_order_with_padding() {
        let mut bytes = attr(1, &7u32.to_ne_bytes());
        bytes.extend(attr(0x8000 | 2, b"abcde"));
        bytes.extend(attr(3, &[]));
        let got: Vec<(u16, &[u8])> = attributes(&bytes).collect();
        assert_eq!(
            got,
            vec![(1, &7u32.to_ne_bytes()[..]), (2, &b"abcde"[..]), (3, &[][..])]
        );
    }

    #[test]
    fn a_truncated_or_short_attribute_ends_the_walk() {
        let mut bytes = attr(1, &[1, 2, 3, 4]);
        bytes.extend_from_slice(&[20, 0, 2, 0, 9]);
        assert_eq!(attributes(&bytes).count(), 1);
        assert_eq!(attributes(&[2, 0, 1, 0]).count(), 0);
    }

    #[test]
    fn tls_state_decodes_with_its_secrets_kept_out_of_debug_and_serde() {
        use crate::uapi::StateAttr as A;
        let k = |a: A| u16::from(a);
        let mut bytes = attr(k(A::BlobVersion), &1u32.to_ne_bytes());
        bytes.extend(attr(k(A::TlsVersion), &0x0304u16.to_ne_bytes()));
        bytes.extend(attr(k(A::TlsCipher), &51u16.to_ne_bytes()));
        bytes.extend(attr(k(A::TlsTxKey), &[0xab; 16]));
        bytes.extend(attr(k(A::TlsTxIv), &[0xcd; 8]));
        bytes.extend(attr(k(A::TlsTxSalt), &[0xef; 4]));
        bytes.extend(attr(k(A::TlsTxRecSeq), &7u64.to_be_bytes()));
        bytes.extend(attr(k(A::TlsRxDecrypted), b"hello"));
        bytes.extend(attr(k(A::TlsRxDecrypted), b"!"));
        let state = super::MigrationState::from_bytes(bytes);
        let d = state.decode().expect("decodes");
        let tls = d.tls.clone().expect("kTLS state");
        assert_eq!(
            (tls.version, tls.cipher, tls.tx_rec_seq, tls.rx_rec_seq),
            (0x0304, 51, Some(7), None)
        );
        assert_eq!(tls.rx_decrypted, 6);
        assert_eq!(tls.secrets.tx_key, vec![0xab; 16]);
        let json = serde_json::to_string(&d).expect("serializes");
        let debug = format!("{d:?}");
        for shown in [&json, &debug] {
            assert!(
                !shown.contains("abababab") && !shown.contains("171, 171"),
                "{shown}"
            );
        }
        assert!(json.contains("\"cipher\":51"), "{json}");
        let secrets = serde_json::to_string(&tls.secrets).expect("serializes");
        assert!(secrets.contains(&"ab".repeat(16)), "{secrets}");
        assert!(super::has_tls(state.as_bytes()));
    }
}
