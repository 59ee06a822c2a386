//! TLS termination that ends in kernel TLS. rustls does the handshake on the socket;
//! then the session's keys and record sequence numbers go to the kernel (`TCP_ULP
//! "tls"`, `TLS_TX`, `TLS_RX`) and the socket carries plaintext for the application
//! from then on, with the TLS state in the kernel, where `SOCK_EXPORT` takes it along
//! when the connection moves (docs/design/tls.md).
//!
//! ```no_run
//! # fn main() -> prism_sock::Result<()> {
//! # let config: std::sync::Arc<rustls::ServerConfig> = unimplemented!();
//! let listener = std::net::TcpListener::bind("0.0.0.0:443")?;
//! let (tcp, _) = listener.accept()?;
//! let accepted = prism_sock::tls::accept(tcp, config)?;
//! // `accepted.stream` reads and writes plaintext; `accepted.early` is what the client
//! // sent along with its last handshake message.
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::state::wipe;
use rustls::{ConnectionTrafficSecrets, ProtocolVersion, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_1_2: u16 = 0x0303;
const TLS_1_3: u16 = 0x0304;
const CIPHER_AES_GCM_128: u16 = 51;
const CIPHER_AES_GCM_256: u16 = 52;
const CIPHER_CHACHA20_POLY1305: u16 = 54;
/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;

/// A TLS connection switched to kernel TLS.
#[derive(Debug)]
pub struct Accepted {
    /// The socket, reading and writing plaintext through kTLS.
    pub stream: TcpStream,
    /// Application data that arrived with the handshake's last records and that rustls
    /// already decrypted: the first bytes of the client's request.
    pub early: Vec<u8>,
    /// The TLS version (0x0303 or 0x0304).
    pub version: u16,
    /// The kTLS cipher number (`TLS_CIPHER_*`).
    pub cipher: u16,
}

fn tls_error(e: rustls::Error) -> Error {
    Error::Protocol(format!("TLS: {e}"))
}

/// Reads the socket one TLS record at a time, so that rustls never takes a byte past
/// the record that completes the handshake: what follows stays in the socket for kTLS.
struct RecordReader<'a> {
    stream: &'a TcpStream,
    header: [u8; RECORD_HEADER],
    /// Bytes of `header` already handed over (`RECORD_HEADER`: none pending).
    given: usize,
    /// Bytes of the current record's body still to hand over.
    left: usize,
}

impl Read for RecordReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.given == RECORD_HEADER && self.left == 0 {
            self.stream.read_exact(&mut self.header)?;
            self.given = 0;
            self.left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
        }
        if self.given < RECORD_HEADER {
            let n = (RECORD_HEADER - self.given).min(buf.len());
            buf[..n].copy_from_slice(&self.header[self.given..self.given + n]);
            self.given += n;
            return Ok(n);
        }
        let want = self.left.min(buf.len());
        let n = self.stream.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        Ok(n)
    }
}

impl RecordReader<'_> {
    /// A record is partly handed over.
    fn inside_record(&self) -> bool {
        self.given < RECORD_HEADER || self.left > 0
    }
}

/// Completes a TLS handshake as the server on `stream` with `config` (which must have
/// `enable_secret_extraction` set) and switches the socket to kernel TLS.
pub fn accept(stream: TcpStream, config: Arc<ServerConfig>) -> Result<Accepted> {
    if !config.enable_secret_extraction {
        return Err(Error::Protocol(
            "TLS: the ServerConfig needs enable_secret_extraction for kernel TLS".into(),
        ));
    }
    let mut conn = ServerConnection::new(config).map_err(tls_error)?;
    let mut records = RecordReader {
        stream: &stream,
        header: [0; RECORD_HEADER],
        given: RECORD_HEADER,
        left: 0,
    };
    let mut out = &stream;
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(&mut records)? == 0 {
            return Err(Error::Protocol(
                "TLS: the client closed during the handshake".into(),
            ));
        }
        conn.process_new_packets().map_err(tls_error)?;
    }
    // The rest of the record that ended the handshake, then what the server still has
    // to send (TLS 1.3 session tickets).
    while records.inside_record() {
        conn.read_tls(&mut records)?;
        conn.process_new_packets().map_err(tls_error)?;
    }
    while conn.wants_write() {
        conn.write_tls(&mut out)?;
    }
    out.flush()?;
    let mut early = Vec::new();
    match conn.reader().read_to_end(&mut early) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e.into()),
    }
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_2) => TLS_1_2,
        Some(ProtocolVersion::TLSv1_3) => TLS_1_3,
        v => return Err(Error::Protocol(format!("TLS: version {v:?} has no kernel TLS"))),
    };
    let secrets = conn.dangerous_extract_secrets().map_err(tls_error)?;
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    let cipher = cipher_of(&tx)?;
    let fd = stream.as_raw_fd();
    setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls").map_err(|e| {
        Error::Io(io::Error::new(
            e.kind(),
            format!("TCP_ULP tls (is the tls module loaded?): {e}"),
        ))
    })?;
    for (opt, seq, keys) in [(TLS_TX, tx_seq, &tx), (TLS_RX, rx_seq, &rx)] {
        let mut info = crypto_info(version, seq, keys)?;
        let set = setsockopt(fd, SOL_TLS, opt, &info);
        wipe(&mut info);
        set.map_err(|e| Error::Io(io::Error::new(e.kind(), format!("kTLS keys: {e}"))))?;
    }
    Ok(Accepted {
        stream,
        early,
        version,
        cipher,
    })
}

/// Keeps only the cipher suites of `provider` whose cipher this kernel's TLS offers
/// (probed once per cipher on a loopback connection), so that a handshake never
/// settles on a cipher the socket cannot then switch to. Without loopback networking
/// the provider is left as it is.
pub fn restrict_to_kernel(provider: &mut rustls::crypto::CryptoProvider) {
    let mut offered = std::collections::HashMap::new();
    provider.cipher_suites.retain(|suite| {
        let Some(cipher) = suite_cipher(suite) else {
            return false;
        };
        *offered
            .entry(cipher)
            .or_insert_with(|| kernel_offers(cipher).unwrap_or(true))
    });
}

/// The kTLS cipher of a rustls cipher suite.
fn suite_cipher(suite: &rustls::SupportedCipherSuite) -> Option<u16> {
    use rustls::CipherSuite as S;
    match suite.suite() {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(CIPHER_AES_GCM_128),
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(CIPHER_AES_GCM_256),
        S::TLS13_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(CIPHER_CHACHA20_POLY1305),
        _ => None,
    }
}

/// Whether kernel TLS takes `cipher`: TLS_TX with zero keys on a loopback connection.
fn kernel_offers(cipher: u16) -> io::Result<bool> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    let fd = client.as_raw_fd();
    setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls")?;
    let (iv, key, salt) = match cipher {
        CIPHER_AES_GCM_128 => (8, 16, 4),
        CIPHER_AES_GCM_256 => (8, 32, 4),
        _ => (12, 32, 0),
    };
    let mut info = TLS_1_3.to_ne_bytes().to_vec();
    info.extend_from_slice(&cipher.to_ne_bytes());
    info.resize(4 + iv + key + salt + 8, 0);
    Ok(setsockopt(fd, SOL_TLS, TLS_TX, &info).is_ok())
}

fn cipher_of(s: &ConnectionTrafficSecrets) -> Result<u16> {
    match s {
        ConnectionTrafficSecrets::Aes128Gcm { .. } => Ok(CIPHER_AES_GCM_128),
        ConnectionTrafficSecrets::Aes256Gcm { .. } => Ok(CIPHER_AES_GCM_256),
        ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => Ok(CIPHER_CHACHA20_POLY1305),
        _ => Err(Error::Protocol("TLS: a cipher kernel TLS does not offer".into())),
    }
}

/// The `tls12_crypto_info_*` for one direction: header, IV, key, salt, record
/// sequence. rustls's 12-byte IV is the kernel's salt (4 bytes) and IV (8) for
/// AES-GCM, and the IV alone for ChaCha20-Poly1305.
fn crypto_info(version: u16, seq: u64, s: &ConnectionTrafficSecrets) -> Result<Vec<u8>> {
    let (id, key, iv, salt_len) = match s {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (CIPHER_AES_GCM_128, key, iv, 4),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (CIPHER_AES_GCM_256, key, iv, 4),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (CIPHER_CHACHA20_POLY1305, key, iv, 0),
        _ => return Err(Error::Protocol("TLS: a cipher kernel TLS does not offer".into())),
    };
    let iv = iv.as_ref();
    let (salt, iv) = iv.split_at(salt_len);
    let mut info = Vec::with_capacity(4 + iv.len() + key.as_ref().len() + salt.len() + 8);
    info.extend_from_slice(&version.to_ne_bytes());
    info.extend_from_slice(&id.to_ne_bytes());
    info.extend_from_slice(iv);
    info.extend_from_slice(key.as_ref());
    info.extend_from_slice(salt);
    info.extend_from_slice(&seq.to_be_bytes());
    Ok(info)
}

fn setsockopt(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: &[u8]) -> io::Result<()> {
    // SAFETY: `val` is valid for its length during the call; the kernel copies it.
    let r = unsafe { libc::setsockopt(fd, level, opt, val.as_ptr().cast(), val.len() as libc::socklen_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
