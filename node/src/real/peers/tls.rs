//! TLS on peer links: TLS 1.3, both sides authenticated, each by a
//! certificate whose key *is* its ed25519 node key. The certificate is made
//! in memory from the node key at every start (nothing on disk, nothing to
//! rotate apart from the key), and a peer's is taken only if its key is in
//! the UNL: no certificate authority, the UNL pins every link.
//!
//! The signed handshake and the signed frames still run inside, unchanged;
//! a link is refused unless the key its certificate proved is the key the
//! handshake proved, so an insider cannot carry another node's handshake
//! over its own TLS session.

use crate::crypto::{Keypair, PubKey};
use std::sync::Arc;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::crypto::{ring, verify_tls13_signature, CryptoProvider};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::NoServerSessionStorage;
use tokio_rustls::rustls::version::TLS13;
use tokio_rustls::rustls::{
    ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName, Error as TlsError,
    PeerIncompatible, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// An Ed25519 private key's PKCS#8 (v1) DER, less the 32-byte seed that
/// ends it (RFC 8410).
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// An Ed25519 SubjectPublicKeyInfo's DER, less the 32-byte key that ends
/// it (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The name a dialer asks for; the certificate is checked by its key, not
/// by a name.
const SERVER_NAME: &str = "hotpocket-node";

#[derive(Debug, thiserror::Error)]
pub enum PeerTlsError {
    #[error("making the node's TLS certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS settings: {0}")]
    Config(#[from] TlsError),
}

/// Both ends of TLS for one node: dialling and accepting.
#[derive(Clone)]
pub struct PeerTls {
    pub connector: TlsConnector,
    pub acceptor: TlsAcceptor,
}

impl PeerTls {
    /// TLS for the node holding `key`, taking peers whose key is in `unl`
    /// (and its own: a node that dials itself is then told so by the
    /// handshake inside, as without TLS).
    pub fn new(key: &Keypair, unl: &[PubKey]) -> Result<PeerTls, PeerTlsError> {
        let (cert, pkcs8) = node_cert(key)?;
        let provider = provider();
        let mut keys = unl.to_vec();
        keys.push(key.public());
        let verifier = Arc::new(UnlKeys {
            unl: keys,
            provider: provider.clone(),
        });
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(pkcs8.clone_key()))?;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![cert], PrivateKeyDer::Pkcs8(pkcs8))?;
        // Links are long-lived and few: resuming sessions would only be
        // state kept and tickets sent for nothing.
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        client.resumption = Resumption::disabled();
        Ok(PeerTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
    }
}

/// The node's self-signed certificate, whose key is its node key, and that
/// key as PKCS#8.
fn node_cert(
    key: &Keypair,
) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), PeerTlsError> {
    let mut der = PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&key.seed());
    let pkcs8 = PrivatePkcs8KeyDer::from(der);
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?
        .self_signed(&signer)?
        .der()
        .clone();
    Ok((cert, pkcs8))
}

/// The node key the other end of a finished TLS handshake proved.
pub fn peer_key(conn: &CommonState) -> Option<PubKey> {
    key_of(conn.peer_certificates()?.first()?)
}

fn provider() -> Arc<CryptoProvider> {
    // Both ends are ours, so one key exchange, X25519, the cheapest: a
    // client with no key cannot make the node do P-384 for it before it
    // proves anything (the server's key exchange and signature come first).
    Arc::new(CryptoProvider {
        kx_groups: vec![ring::kx_group::X25519],
        ..crate::real::tls::ring_provider()
    })
}

/// The ed25519 key a certificate holds, if it holds one.
fn key_of(cert: &CertificateDer<'_>) -> Option<PubKey> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&SPKI_PREFIX[..])?;
    Some(PubKey(key.try_into().ok()?))
}

/// Takes a certificate whose key is a UNL member's, from either end.
#[derive(Debug)]
struct UnlKeys {
    unl: Vec<PubKey>,
    provider: Arc<CryptoProvider>,
}

impl UnlKeys {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
        match key_of(cert) {
            Some(k) if self.unl.contains(&k) => Ok(()),
            Some(_) => Err(TlsError::General("certificate key not in the UNL".into())),
            None => Err(TlsError::PeerIncompatible(
                PeerIncompatible::NoSignatureSchemesInCommon,
            )),
        }
    }

    fn no_tls12() -> Result<HandshakeSignatureValid, TlsError> {
        Err(TlsError::PeerIncompatible(
            PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        let algs = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algs)
    }
}

impl ServerCertVerifier for UnlKeys {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Self::no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for UnlKeys {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        Self::no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_holds_the_node_key() {
        let key = Keypair::from_seed([3; 32]);
        let (cert, _) = node_cert(&key).unwrap();
        assert_eq!(key_of(&cert), Some(key.public()));
        let unl = UnlKeys {
            unl: vec![key.public()],
            provider: provider(),
        };
        assert!(unl.check(&cert).is_ok());
        let other = UnlKeys {
            unl: vec![Keypair::from_seed([4; 32]).public()],
            provider: provider(),
        };
        assert!(other.check(&cert).is_err());
        assert!(PeerTls::new(&key, &[key.public()]).is_ok());
    }
}
