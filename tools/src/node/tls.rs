//! HTTPS on the VIP: TLS is terminated with rustls and the session then runs in kernel
//! TLS (userlib `tls::accept`), so the connection's TLS state moves with it when it is
//! handed to a key's owner, and the owner answers through its own kTLS socket.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A server configuration from PEM files: the certificate chain and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    prism_sock::tls::restrict_to_kernel(&mut provider);
    if provider.cipher_suites.is_empty() {
        return Err("this kernel's TLS offers none of rustls's ciphers (is the tls module loaded?)".into());
    }
    let provider = Arc::new(provider);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate: {e}"))?;
    config.enable_secret_extraction = true;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Completes the handshake of an accepted connection and switches it to kTLS: the
/// socket, and the request bytes that came with the handshake's last records.
pub async fn accept(
    stream: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Result<(tokio::net::TcpStream, Vec<u8>), String> {
    let stream = stream.into_std().map_err(|e| e.to_string())?;
    let done = tokio::task::spawn_blocking(move || {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let accepted = prism_sock::tls::accept(stream, config)?;
        accepted.stream.set_read_timeout(None)?;
        accepted.stream.set_nonblocking(true)?;
        Ok::<_, prism_sock::Error>((accepted.stream, accepted.early))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let stream = tokio::net::TcpStream::from_std(done.0).map_err(|e| e.to_string())?;
    Ok((stream, done.1))
}

/// A CA and a certificate for `names` (host names or IP addresses) signed by it, as PEM
/// files in `dir`: `ca.pem` for clients (`curl --cacert`), `cert.pem` and `key.pem` for
/// the nodes.
pub fn make_certificate(dir: &Path, names: &[String]) -> Result<(), String> {
    let err = |e: rcgen::Error| e.to_string();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "prism-sock demo CA");
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let ca = ca_params.self_signed(&ca_key).map_err(err)?;
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = rcgen::CertificateParams::new(names.to_vec())
        .map_err(err)?
        .signed_by(&key, &ca, &ca_key)
        .map_err(err)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (file, pem) in [
        ("ca.pem", ca.pem()),
        ("cert.pem", cert.pem()),
        ("key.pem", key.serialize_pem()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
