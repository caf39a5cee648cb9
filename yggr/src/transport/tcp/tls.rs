//! Mutual TLS between nodes: [`TlsConfig`], the certificate verifiers that bind a node id to
//! a certificate, and the errors of loading the material.
//!
//! # Identity
//!
//! A node's certificate names its node id as a URI subject alternative name,
//! `yggr://node/<id>` (decimal, no sign, no leading zeros, not 0), exactly once: a
//! certificate that names no node id, or several, is refused wherever it is presented. Other
//! subject alternative names (DNS names, addresses) may be there too and are ignored. The
//! certificate must be usable both as a TLS server's and as a TLS client's (an extended key
//! usage extension, if present, allows both), since every node both accepts and makes
//! connections.
//!
//! - The connecting side checks that the server's certificate chains to the CA bundle, is
//!   valid now, and names the id it meant to reach (a DNS name or address in it is not
//!   checked: the id is what is authenticated, not where the peer was found).
//! - The accepting side checks that the client's certificate chains to the CA bundle, is
//!   valid now, and names a node id; the yggr handshake that follows must name the same id,
//!   and every message on the connection must name it as its sender. So a node holding node
//!   2's key can speak as node 2 and as no other.
//!
//! Only TLS 1.3 is spoken (its handshake encrypts the certificates, so a passive observer
//! does not learn which node connects), with the ring provider. Session resumption is off:
//! every connection presents and checks certificates in full.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use yggr_core::NodeId;

/// The prefix of the URI subject alternative name that names a node: `yggr://node/3` is
/// node 3.
pub const NODE_ID_URI_PREFIX: &str = "yggr://node/";

/// The first byte of every TLS connection (a handshake record), and of no yggr handshake
/// (which starts with `Y`): how a node tells a TLS peer from a plaintext one.
pub(crate) const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why TLS material was refused, by [`TlsConfig`]'s constructors, by
/// [`TcpTransport::start_with`](super::TcpTransport::start_with), or by
/// [`TcpHandle::set_tls`](super::TcpHandle::set_tls) and
/// [`TcpHandle::reload_tls`](super::TcpHandle::reload_tls) (which then keep the material
/// they had).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}", path = path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PEM that does not parse, or holds nothing of what was expected.
    #[error("the {what} is not usable PEM: {reason}")]
    Pem {
        /// "certificate chain", "private key" or "CA bundle".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The certificate and key, or the CA bundle, were refused by rustls: a key that does
    /// not match the certificate, a key of an unsupported kind, a CA certificate that does
    /// not parse.
    #[error("the {what} was refused: {reason}")]
    Refused {
        /// "certificate and key" or "CA bundle".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The certificate does not name exactly one node id (see the module documentation).
    #[error("the certificate does not name one node id: {0}")]
    NodeId(String),
    /// The certificate names another node than the transport's.
    #[error("the certificate names node {certificate}, but this is node {node}")]
    WrongNode {
        /// The id the certificate names.
        certificate: NodeId,
        /// The transport's node id.
        node: NodeId,
    },
    /// [`TcpHandle::reload_tls`](super::TcpHandle::reload_tls) on material that was not read
    /// from files.
    #[error("the TLS configuration was not read from files, so there is nothing to reload")]
    NotFromFiles,
    /// TLS material given to a transport started without TLS: a plaintext transport stays
    /// plaintext.
    #[error("this transport was started without TLS")]
    NotEnabled,
}

/// The files a [`TlsConfig`] was read from, to read again on a reload.
#[derive(Clone, Debug)]
struct TlsFiles {
    cert_chain: PathBuf,
    private_key: PathBuf,
    ca_bundle: PathBuf,
}

/// A node's TLS material: its certificate chain and private key, and the CA bundle its
/// peers' certificates must chain to. Given to a transport through [`TcpOptions::tls`]
/// (see the [TCP module documentation](super#tls) for what it checks). Cheap to clone.
///
/// [`TcpOptions::tls`]: super::TcpOptions::tls
#[derive(Clone)]
pub struct TlsConfig {
    material: Arc<Material>,
}

/// What a [`TlsConfig`] holds, parsed and checked once.
struct Material {
    node_id: NodeId,
    cert_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    server: Arc<ServerConfig>,
    files: Option<TlsFiles>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        formatter
            .debug_struct("TlsConfig")
            .field("node_id", &self.material.node_id)
            .field("cert_chain", &self.material.cert_chain.len())
            .field("ca_certificates", &self.material.roots.len())
            .field("files", &self.material.files)
            .finish_non_exhaustive()
    }
}

/// The ring provider. rustls 0.23.48 deprecated it for lacking post-quantum key exchange;
/// it is used anyway because aws-lc-rs, the provider that has it, needs a build toolchain
/// (cmake) that ring does not. Switching is a change of this function alone.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

impl TlsConfig {
    /// Builds the material from PEM bytes: `cert_chain` holds this node's certificate first,
    /// then any intermediates; `private_key` its key (PKCS#8, PKCS#1 or SEC1); `ca_bundle`
    /// one or more CA certificates that peers' certificates must chain to.
    ///
    /// # Errors
    /// [`TlsError::Pem`] for PEM that does not parse or lacks what it should hold,
    /// [`TlsError::NodeId`] for a certificate that does not name exactly one node id, and
    /// [`TlsError::Refused`] for a key that does not match the certificate, or a CA bundle
    /// rustls cannot use.
    pub fn from_pem(
        cert_chain: &[u8],
        private_key: &[u8],
        ca_bundle: &[u8],
    ) -> Result<TlsConfig, TlsError> {
        Material::parse(cert_chain, private_key, ca_bundle, None).map(|material| TlsConfig {
            material: Arc::new(material),
        })
    }

    /// [`from_pem`](Self::from_pem) with the PEM read from files, which
    /// [`TcpHandle::reload_tls`](super::TcpHandle::reload_tls) reads again.
    ///
    /// # Errors
    /// [`TlsError::Read`] for a file that cannot be read, and those of
    /// [`from_pem`](Self::from_pem).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
        ca_bundle: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        TlsFiles {
            cert_chain: cert_chain.as_ref().to_path_buf(),
            private_key: private_key.as_ref().to_path_buf(),
            ca_bundle: ca_bundle.as_ref().to_path_buf(),
        }
        .load()
    }

    /// The node id this configuration's certificate names.
    pub fn node_id(&self) -> NodeId {
        self.material.node_id
    }

    /// The same configuration read again from its files.
    ///
    /// # Errors
    /// [`TlsError::NotFromFiles`] for one built from bytes; otherwise those of
    /// [`from_pem_files`](Self::from_pem_files).
    pub fn reload(&self) -> Result<TlsConfig, TlsError> {
        self.material
            .files
            .as_ref()
            .ok_or(TlsError::NotFromFiles)?
            .clone()
            .load()
    }

    /// The configuration to accept connections with.
    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.material.server.clone()
    }

    /// The configuration to connect to `peer` with: its certificate must name it.
    ///
    /// # Errors
    /// Never in practice: the key was accepted when the configuration was built.
    pub(crate) fn client_config(&self, peer: NodeId) -> Result<Arc<ClientConfig>, rustls::Error> {
        let material = &self.material;
        let verifier = PeerServerVerifier {
            roots: material.roots.clone(),
            expected: peer,
        };
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(
                material.cert_chain.clone(),
                material.private_key.clone_key(),
            )?;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// Whether this node's certificate is outside its validity period now (by the wall
    /// clock): then every peer refuses it. Loading it is allowed (the clock may be what is
    /// wrong), but worth a warning.
    pub(crate) fn expired_or_not_yet_valid(&self) -> bool {
        x509_parser::parse_x509_certificate(&self.material.cert_chain[0])
            .is_ok_and(|(_, parsed)| !parsed.validity().is_valid())
    }

    /// Whether `self` and `other` are the same material (not merely equal).
    pub(crate) fn same_as(&self, other: &TlsConfig) -> bool {
        Arc::ptr_eq(&self.material, &other.material)
    }
}

impl TlsFiles {
    fn load(self) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_chain = read(&self.cert_chain)?;
        let private_key = read(&self.private_key)?;
        let ca_bundle = read(&self.ca_bundle)?;
        Material::parse(&cert_chain, &private_key, &ca_bundle, Some(self)).map(|material| {
            TlsConfig {
                material: Arc::new(material),
            }
        })
    }
}

impl Material {
    fn parse(
        cert_chain: &[u8],
        private_key: &[u8],
        ca_bundle: &[u8],
        files: Option<TlsFiles>,
    ) -> Result<Material, TlsError> {
        let cert_chain = certificates("certificate chain", cert_chain)?;
        let private_key =
            PrivateKeyDer::from_pem_slice(private_key).map_err(|error| TlsError::Pem {
                what: "private key",
                reason: error.to_string(),
            })?;
        let mut roots = RootCertStore::empty();
        for certificate in certificates("CA bundle", ca_bundle)? {
            roots.add(certificate).map_err(|error| TlsError::Refused {
                what: "CA bundle",
                reason: error.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let node_id = node_id_of(&cert_chain[0]).map_err(TlsError::NodeId)?;
        let server = server_config(&roots, &cert_chain, &private_key)?;
        Ok(Material {
            node_id,
            cert_chain,
            private_key,
            roots,
            server,
            files,
        })
    }
}

/// Every certificate in `pem`; at least one.
fn certificates(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem {
            what,
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "it holds no certificate".to_owned(),
        });
    }
    Ok(certificates)
}

fn server_config(
    roots: &Arc<RootCertStore>,
    cert_chain: &[CertificateDer<'static>],
    private_key: &PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|error| TlsError::Refused {
            what: "CA bundle",
            reason: error.to_string(),
        })?;
    let refused = |error: rustls::Error| TlsError::Refused {
        what: "certificate and key",
        reason: error.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(refused)?
        .with_client_cert_verifier(Arc::new(PeerClientVerifier { chain_verifier }))
        .with_single_cert(cert_chain.to_vec(), private_key.clone_key())
        .map_err(refused)?;
    // No resumption: every connection shows its certificate. And no tickets after the
    // handshake: the accepting side then never writes on a connection, which its writer
    // reads to learn of a close.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The node id a certificate (DER) names, or why it names none, or several.
///
/// # Errors
/// The reason, for an operator to read.
pub(crate) fn node_id_of(certificate: &[u8]) -> Result<NodeId, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|error| format!("the certificate does not parse: {error}"))?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|error| format!("its subject alternative names do not parse: {error}"))?;
    let mut ids = names
        .into_iter()
        .flat_map(|names| names.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(NODE_ID_URI_PREFIX),
            _ => None,
        });
    let Some(first) = ids.next() else {
        return Err(format!(
            "it has no {NODE_ID_URI_PREFIX}<id> subject alternative name"
        ));
    };
    if ids.next().is_some() {
        return Err(format!(
            "it has more than one {NODE_ID_URI_PREFIX}<id> subject alternative name"
        ));
    }
    parse_node_id(first)
        .ok_or_else(|| format!("{NODE_ID_URI_PREFIX}{first} does not name a node id"))
}

/// `digits` as a node id: decimal, no sign, no leading zero, not 0.
fn parse_node_id(digits: &str) -> Option<NodeId> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && !digits.starts_with('0');
    if !canonical {
        return None;
    }
    digits.parse().ok().and_then(NodeId::new)
}

/// The rustls error inside `error`, from a TLS handshake, if that is what failed it.
pub(crate) fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Why a certificate was refused, in an operator's words.
pub(crate) fn describe_certificate_error(error: &CertificateError) -> String {
    match error {
        CertificateError::Other(other) => other.0.to_string(),
        CertificateError::UnknownIssuer => {
            "it was not issued by a CA of this node's CA bundle".to_owned()
        }
        CertificateError::BadSignature => "its signature does not verify".to_owned(),
        other => other.to_string(),
    }
}

/// An [`rustls::Error`] refusing a certificate, with `reason` for the log.
fn refuse_certificate(reason: String) -> rustls::Error {
    #[derive(Debug)]
    struct Reason(String);
    impl fmt::Display for Reason {
        fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str(&self.0)
        }
    }
    impl std::error::Error for Reason {}
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Reason(
        reason,
    )))))
}

/// The connecting side's check of the server: its certificate chains to the CA and names
/// the node this side meant to reach. Unlike rustls's web verifier, it checks no DNS name:
/// the id is what is authenticated.
#[derive(Debug)]
struct PeerServerVerifier {
    roots: Arc<RootCertStore>,
    expected: NodeId,
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            algorithms().all,
        )?;
        let named = node_id_of(end_entity).map_err(refuse_certificate)?;
        if named != self.expected {
            return Err(refuse_certificate(format!(
                "the certificate names node {named}, not node {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The accepting side's check of the client: rustls's (a certificate is required and must
/// chain to the CA), and the certificate must name exactly one node id. That the id is the
/// one the yggr handshake names is checked after the TLS handshake.
#[derive(Debug)]
struct PeerClientVerifier {
    chain_verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for PeerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain_verifier.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        node_id_of(end_entity).map_err(refuse_certificate)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain_verifier.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_decimal_without_sign_or_leading_zero_and_not_zero() {
        assert_eq!(parse_node_id("3"), NodeId::new(3));
        assert_eq!(parse_node_id("18446744073709551615"), NodeId::new(u64::MAX));
        for refused in ["", "0", "03", "+3", "-3", "3 ", "x", "18446744073709551616"] {
            assert_eq!(parse_node_id(refused), None, "{refused:?}");
        }
    }
}
