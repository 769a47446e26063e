//! wss for users. hpcore serves its users over TLS, and its client takes a
//! self-signed certificate: `hotpocket new` makes one per node, under
//! hpcore's names (`cfg/tlscert.pem`, `cfg/tlskey.pem`); an operator may put
//! one of their own there instead. The prototype's clients speak plain ws
//! on the same port: a connection whose first byte opens a TLS handshake
//! gets TLS, any other the websocket handshake as it is.
//!
//! `hotpocket client` dials wss as hpcore's client does: it takes any
//! certificate, since a node's is self-signed; what it trusts is the node
//! key that signs its challenge in hpcore's handshake.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::pki_types::{ServerName, UnixTime};
use tokio_rustls::rustls::SignatureScheme;
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, Error as TlsError, ServerConfig};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The first byte of a TLS record that carries a handshake (a ClientHello
/// here); an HTTP request starts with a letter.
const HANDSHAKE_RECORD: u8 = 0x16;

pub fn cert_path(dir: &Path) -> PathBuf {
    dir.join("cfg").join("tlscert.pem")
}

pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("cfg").join("tlskey.pem")
}

/// Whether a connection that starts with `first` asks for TLS.
pub fn is_tls(first: u8) -> bool {
    first == HANDSHAKE_RECORD
}

/// Writes a new self-signed certificate and its key for the node in `dir`
/// (whose `cfg/` exists); the key is readable by its owner only.
pub fn make_cert(dir: &Path) -> anyhow::Result<()> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let made = rcgen::generate_simple_self_signed(names).context("making a TLS certificate")?;
    let (cert, key) = (cert_path(dir), key_path(dir));
    // The key first, and never over another: a pair is never half replaced.
    write_private(&key, made.key_pair.serialize_pem().as_bytes())
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&cert, made.cert.pem()).with_context(|| format!("writing {}", cert.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The TLS side of the user port for the node in `dir`; `None` when the
/// node has neither file (made before nodes had certificates): its users
/// then have plain ws only. One file without the other is an error.
pub fn acceptor(dir: &Path) -> anyhow::Result<Option<TlsAcceptor>> {
    let (cert, key) = (cert_path(dir), key_path(dir));
    match (cert.exists(), key.exists()) {
        (false, false) => return Ok(None),
        (true, true) => {}
        (true, false) => anyhow::bail!("{} exists but {} does not", cert.display(), key.display()),
        (false, true) => anyhow::bail!("{} exists but {} does not", key.display(), cert.display()),
    }
    let certs = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let private = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .with_context(|| format!("{} does not fit {}", key.display(), cert.display()))?;
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider())
}

/// rustls's ring provider, for users' wss and peer links alike: ring
/// builds with the Rust toolchain alone (aws-lc-rs wants cmake); rustls
/// deprecates it for lacking post-quantum key exchange, which hpcore's
/// client does not offer anyway.
pub(crate) fn ring_provider() -> CryptoProvider {
    #[allow(deprecated)]
    ring::default_provider()
}

/// Takes any certificate, checking only that the server holds its key (the
/// handshake's signatures still verify): a node's certificate is
/// self-signed, and who the node is comes from hpcore's handshake.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algs = &self.0.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client side of wss to a node: any certificate (see the module).
pub fn any_cert_connector() -> anyhow::Result<TlsConnector> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_loads_and_half_a_pair_is_refused() {
        let dir = std::env::temp_dir().join(format!("hp-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cfg")).unwrap();
        assert!(acceptor(&dir).unwrap().is_none(), "no files: plain ws");
        make_cert(&dir).unwrap();
        assert!(acceptor(&dir).unwrap().is_some());
        assert!(make_cert(&dir).is_err(), "never overwrites a key");
        std::fs::remove_file(key_path(&dir)).unwrap();
        let Err(err) = acceptor(&dir) else {
            panic!("half a pair loaded");
        };
        let err = err.to_string();
        assert!(err.contains("tlskey.pem"), "{err}");
        std::fs::write(key_path(&dir), "not a key").unwrap();
        assert!(acceptor(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(is_tls(0x16) && !is_tls(b'G'));
    }
}
