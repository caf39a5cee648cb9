//! Mutual TLS on the TCP transport, over real sockets on loopback, with certificates made in
//! each test: who is refused (another CA, an expired certificate, one without a node id, node
//! 2's certificate claiming node 3 either way, plaintext against TLS and back), that the good
//! peers keep talking meanwhile, rotation without a restart, and that a flood of idle
//! connections does not keep a real peer out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use yggr::core::{Message, Rpc, VoteResponse};
use yggr::{Bytes, TcpOptions, TcpStats, TcpTransport, Term, TlsConfig, TlsError, Transport};

use crate::common::{Recorder, id, test_config};

/// How long a test waits for something that should happen within milliseconds.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Certificates

/// Now, as a certificate's validity counts it.
fn now() -> time::OffsetDateTime {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    rcgen::date_time_ymd(1970, 1, 1) + since_epoch
}

/// A certificate authority made for the test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A node's certificate and key, in PEM.
struct NodeCertificate {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate naming `uris` as URI SANs, valid from an hour ago until `not_after`.
    fn issue(&self, uris: &[String], not_after: time::OffsetDateTime) -> NodeCertificate {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = uris
            .iter()
            .map(|uri| SanType::URI(uri.clone().try_into().unwrap()))
            .collect();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now() - Duration::from_secs(3600);
        params.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        NodeCertificate {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Node `raw`'s certificate, valid for a day.
    fn node(&self, raw: u64) -> NodeCertificate {
        self.issue(
            &[format!("yggr://node/{raw}")],
            now() + Duration::from_secs(86_400),
        )
    }

    /// Node `raw`'s TLS configuration, its certificate valid for a day.
    fn config(&self, raw: u64) -> TlsConfig {
        self.config_of(&self.node(raw))
    }

    fn config_of(&self, certificate: &NodeCertificate) -> TlsConfig {
        TlsConfig::from_pem(
            certificate.cert.as_bytes(),
            certificate.key.as_bytes(),
            self.pem().as_bytes(),
        )
        .unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// Transports

fn options(tls: Option<TlsConfig>) -> TcpOptions {
    let mut options = TcpOptions::default();
    options.reconnect_backoff_min = Duration::from_millis(10);
    options.reconnect_backoff_max = Duration::from_millis(200);
    options.tls = tls;
    options
}

async fn node_with(raw: u64, options: TcpOptions) -> TcpTransport {
    TcpTransport::start_with(id(raw), "127.0.0.1:0".parse().unwrap(), [], options)
        .await
        .unwrap()
}

async fn tls_node(raw: u64, tls: TlsConfig) -> TcpTransport {
    node_with(raw, options(Some(tls))).await
}

async fn plaintext_node(raw: u64) -> TcpTransport {
    node_with(raw, options(None)).await
}

/// Puts `b` in `a`'s address book as `b_id`, and `a` in `b`'s as `a_id`.
fn introduce(a: &TcpTransport, a_id: u64, b: &TcpTransport, b_id: u64) {
    a.handle().add_peer(id(b_id), b.local_addr());
    b.handle().add_peer(id(a_id), a.local_addr());
}

fn vote(from: u64) -> Message<Bytes> {
    Message {
        from: id(from),
        term: Term::new(1),
        rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    }
}

/// Sends from `from` (node `sender`) to node `receiver` until a message from `sender`
/// arrives at `to`, or `PATIENCE` runs out. A refused writer backs off and drops what queued
/// meanwhile, so it sends again on every poll. Messages from others (late copies from an
/// earlier call) are skipped.
async fn delivered(
    from: &mut TcpTransport,
    sender: u64,
    to: &mut TcpTransport,
    receiver: u64,
) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        from.send(id(receiver), vote(sender));
        let poll = tokio::time::Instant::now() + Duration::from_millis(50);
        while let Ok(Some(message)) = tokio::time::timeout_at(poll, to.recv()).await {
            if message.from == id(sender) {
                return true;
            }
        }
    }
    false
}

/// Sends from `from` (node `sender`) to node `receiver` until `counted` reports what `seen`
/// looks for, or `PATIENCE` runs out.
async fn refused(
    from: &mut TcpTransport,
    sender: u64,
    receiver: u64,
    counted: &yggr::TcpHandle,
    seen: impl Fn(&TcpStats) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        from.send(id(receiver), vote(sender));
        if seen(&counted.stats()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Polls `check` until it holds, or `PATIENCE` runs out.
async fn eventually(check: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Nothing from `sender` arrives at `to` (what arrived from others is ignored).
async fn nothing_from(to: &mut TcpTransport, sender: u64) -> bool {
    while let Some(message) = to.try_recv() {
        if message.from == id(sender) {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Raw peers: what a forger or a misconfigured program would do, byte by byte

/// The yggr handshake (version 2) naming `sender`, with all identities unknown.
fn handshake(sender: u64) -> Vec<u8> {
    let mut bytes = b"YGGRNET1".to_vec();
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(&sender.to_le_bytes());
    bytes.extend_from_slice(&[0; 24]);
    bytes
}

/// `message` as a frame.
fn frame(message: &Message<Bytes>) -> Vec<u8> {
    let payload = yggr::core::wire::encode_message(message, |command: &Bytes| command.to_vec());
    let mut bytes = (payload.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

#[allow(deprecated)] // rustls deprecated the ring provider, which is what builds here
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server verifier that accepts anything: a forger does not care whom it reaches.
#[derive(Debug)]
struct AcceptAnything;

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn chain_and_key(
    certificate: &NodeCertificate,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(certificate.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(certificate.key.as_bytes()).unwrap();
    (chain, key)
}

/// A TLS connection to `address` presenting `certificate`, whatever the server presents.
async fn raw_tls_client(
    address: SocketAddr,
    certificate: &NodeCertificate,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let (chain, key) = chain_and_key(certificate);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let stream = TcpStream::connect(address).await?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(address.ip().into()), stream)
        .await
}

/// A TLS server on loopback presenting `certificate` to whoever connects (asking for no
/// client certificate), reading and discarding what it is sent. Returns its address.
async fn raw_tls_server(certificate: &NodeCertificate) -> SocketAddr {
    let (chain, key) = chain_and_key(certificate);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut stream) = acceptor.accept(stream).await {
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink).await;
                }
            });
        }
    });
    address
}

/// Whether `stream`'s peer closed it (within `PATIENCE`) without sending anything.
async fn closed_by_peer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_peers_of_one_ca_exchange_messages_both_ways() {
    let ca = Ca::new("cluster CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, ca.config(2)).await;
    introduce(&one, 1, &two, 2);
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
    for transport in [&one, &two] {
        let stats = transport.handle().stats();
        assert!(stats.connections_accepted >= 1, "{stats:?}");
        assert_eq!(stats.connections_rejected, 0, "{stats:?}");
        assert_eq!(stats.refused_server_certificates, 0, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_certificate_another_ca_issued_is_refused_both_ways_and_the_good_peers_still_talk()
 {
    let ca = Ca::new("cluster CA");
    let other_ca = Ca::new("another CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, ca.config(2)).await;
    let mut stranger = tls_node(3, other_ca.config(3)).await;
    introduce(&one, 1, &two, 2);
    introduce(&one, 1, &stranger, 3);

    // As a client: node 1 refuses the stranger's certificate in the TLS handshake.
    let one_counted = one.handle();
    assert!(
        refused(&mut stranger, 3, 1, &one_counted, |stats| {
            stats.refused_tls_handshakes > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    // As a server: node 1 refuses to connect to it.
    assert!(
        refused(&mut one, 1, 3, &one_counted, |stats| {
            stats.refused_server_certificates > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
    assert!(nothing_from(&mut one, 3).await);
    assert!(nothing_from(&mut stranger, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_an_expired_certificate_is_refused_both_ways_and_the_good_peers_still_talk() {
    let ca = Ca::new("cluster CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, ca.config(2)).await;
    let expired = ca.issue(
        &["yggr://node/3".to_owned()],
        now() - Duration::from_secs(60),
    );
    let mut late = tls_node(3, ca.config_of(&expired)).await;
    introduce(&one, 1, &two, 2);
    introduce(&one, 1, &late, 3);

    let one_counted = one.handle();
    assert!(
        refused(&mut late, 3, 1, &one_counted, |stats| {
            stats.refused_tls_handshakes > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    assert!(
        refused(&mut one, 1, 3, &one_counted, |stats| {
            stats.refused_server_certificates > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
    assert!(nothing_from(&mut one, 3).await);
    assert!(nothing_from(&mut late, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_exactly_one_node_id_is_refused_when_loaded_and_when_presented() {
    let ca = Ca::new("cluster CA");
    let day = now() + Duration::from_secs(86_400);
    let anonymous = ca.issue(&["https://example.invalid/".to_owned()], day);
    let twice = ca.issue(
        &["yggr://node/2".to_owned(), "yggr://node/3".to_owned()],
        day,
    );
    let malformed = ca.issue(&["yggr://node/03".to_owned()], day);
    for certificate in [&anonymous, &twice, &malformed] {
        let loaded = TlsConfig::from_pem(
            certificate.cert.as_bytes(),
            certificate.key.as_bytes(),
            ca.pem().as_bytes(),
        );
        assert!(matches!(loaded, Err(TlsError::NodeId(_))), "{loaded:?}");
    }

    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, ca.config(2)).await;
    introduce(&one, 1, &two, 2);

    // As a client: refused in the TLS handshake, before a yggr handshake is read.
    for certificate in [&anonymous, &twice] {
        let before = one.handle().stats().refused_tls_handshakes;
        // TLS 1.3: the client finishes before the server has checked its certificate.
        if let Ok(mut stream) = raw_tls_client(one.local_addr(), certificate).await {
            let _ = stream.write_all(&handshake(2)).await;
            assert!(closed_by_peer(&mut stream).await);
        }
        let handle = one.handle();
        assert!(
            eventually(|| handle.stats().refused_tls_handshakes > before).await,
            "{:?}",
            handle.stats()
        );
    }
    assert_eq!(one.handle().stats().connections_accepted, 0);

    // As a server: node 1 does not connect to it.
    let server = raw_tls_server(&anonymous).await;
    one.handle().add_peer(id(3), server);
    let one_counted = one.handle();
    assert!(
        refused(&mut one, 1, 3, &one_counted, |stats| {
            stats.refused_server_certificates > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_2s_certificate_claiming_node_3_as_a_client_is_refused() {
    let ca = Ca::new("cluster CA");
    let node_two = ca.node(2);
    let mut one = tls_node(1, ca.config(1)).await;
    let mut three = tls_node(3, ca.config(3)).await;
    introduce(&one, 1, &three, 3);
    one.handle().add_peer(id(2), "127.0.0.1:9".parse().unwrap());

    // Node 2's key, a handshake claiming node 3, then a message from "node 3".
    let mut forger = raw_tls_client(one.local_addr(), &node_two).await.unwrap();
    let mut bytes = handshake(3);
    bytes.extend(frame(&vote(3)));
    forger.write_all(&bytes).await.unwrap();
    forger.flush().await.unwrap();
    assert!(closed_by_peer(&mut forger).await);
    let stats = one.handle().stats();
    assert_eq!(stats.refused_certificate_mismatch, 1, "{stats:?}");
    assert_eq!(stats.frames_received, 0, "{stats:?}");

    // Node 2's key and its own id in the handshake, then a message from "node 3": the
    // sender check closes it.
    let mut forger = raw_tls_client(one.local_addr(), &node_two).await.unwrap();
    let mut bytes = handshake(2);
    bytes.extend(frame(&vote(3)));
    forger.write_all(&bytes).await.unwrap();
    forger.flush().await.unwrap();
    assert!(closed_by_peer(&mut forger).await);
    let handle = one.handle();
    assert!(eventually(|| handle.stats().malformed_frames == 1).await);
    assert_eq!(handle.stats().frames_received, 0);
    assert!(nothing_from(&mut one, 3).await);

    // The real node 3 still gets through.
    assert!(delivered(&mut three, 3, &mut one, 1).await);
    assert!(delivered(&mut one, 1, &mut three, 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_2s_certificate_serving_as_node_3_is_refused() {
    let ca = Ca::new("cluster CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, ca.config(2)).await;
    introduce(&one, 1, &two, 2);
    // Node 1 is told node 3 lives where node 2 does (a hijacked address, a stale book).
    one.handle().add_peer(id(3), two.local_addr());
    two.handle().add_peer(id(3), "127.0.0.1:9".parse().unwrap());
    let one_counted = one.handle();
    assert!(
        refused(&mut one, 1, 3, &one_counted, |stats| {
            stats.refused_server_certificates > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
    // Every message node 2 received came as node 1's, none meant for node 3 got through.
    assert!(nothing_from(&mut two, 3).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_peer_against_a_tls_node_and_a_tls_peer_against_a_plaintext_node_are_refused() {
    let ca = Ca::new("cluster CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, ca.config(2)).await;
    let mut plain = plaintext_node(3).await;
    introduce(&one, 1, &two, 2);
    introduce(&one, 1, &plain, 3);

    let one_counted = one.handle();
    assert!(
        refused(&mut plain, 3, 1, &one_counted, |stats| {
            stats.refused_transport_mismatch > 0
        })
        .await,
        "{:?}",
        one_counted.stats()
    );
    let plain_counted = plain.handle();
    assert!(
        refused(&mut one, 1, 3, &plain_counted, |stats| {
            stats.refused_transport_mismatch > 0
        })
        .await,
        "{:?}",
        plain_counted.stats()
    );
    // Neither was mistaken for a malformed peer.
    assert_eq!(one.handle().stats().malformed_frames, 0);
    assert_eq!(plain.handle().stats().malformed_frames, 0);
    assert!(nothing_from(&mut one, 3).await);
    assert!(nothing_from(&mut plain, 1).await);
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_material_for_another_node_or_for_a_plaintext_transport_is_refused() {
    let ca = Ca::new("cluster CA");
    let started = TcpTransport::start_with(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [],
        options(Some(ca.config(2))),
    )
    .await;
    let error = started.expect_err("node 1 started with node 2's certificate");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("names node 2"), "{error}");

    let one = tls_node(1, ca.config(1)).await;
    let wrong = one.handle().set_tls(ca.config(2));
    assert!(
        matches!(wrong, Err(TlsError::WrongNode { .. })),
        "{wrong:?}"
    );
    let from_bytes = one.handle().reload_tls();
    assert!(
        matches!(from_bytes, Err(TlsError::NotFromFiles)),
        "{from_bytes:?}"
    );
    let plain = plaintext_node(2).await;
    let not_enabled = plain.handle().set_tls(ca.config(2));
    assert!(
        matches!(not_enabled, Err(TlsError::NotEnabled)),
        "{not_enabled:?}"
    );

    let directory = tempfile::tempdir().unwrap();
    let missing = TlsConfig::from_pem_files(
        directory.path().join("node.pem"),
        directory.path().join("node.key"),
        directory.path().join("ca.pem"),
    );
    assert!(matches!(missing, Err(TlsError::Read { .. })), "{missing:?}");
}

/// Node 2's certificate expires during the run. The connections it made before go on; new
/// ones are refused both ways; once its files hold a fresh certificate and it reloads them,
/// new connections work again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_during_the_run_is_rotated_without_a_restart() {
    let ca = Ca::new("cluster CA");
    let directory = tempfile::tempdir().unwrap();
    let cert_path = directory.path().join("node-2.pem");
    let key_path = directory.path().join("node-2.key");
    let ca_path = directory.path().join("ca.pem");
    let write = |certificate: &NodeCertificate| {
        std::fs::write(&cert_path, &certificate.cert).unwrap();
        std::fs::write(&key_path, &certificate.key).unwrap();
    };
    std::fs::write(&ca_path, ca.pem()).unwrap();
    // Validity ends on a whole second; a few seconds leave time to connect before then.
    let expiry = now() + Duration::from_secs(4);
    write(&ca.issue(&["yggr://node/2".to_owned()], expiry));
    let two_tls = TlsConfig::from_pem_files(&cert_path, &key_path, &ca_path).unwrap();

    let mut one = tls_node(1, ca.config(1)).await;
    let mut two = tls_node(2, two_tls).await;
    introduce(&one, 1, &two, 2);
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
    assert!(now() < expiry, "the test machine is too slow for this test");
    let opened = (
        one.handle().stats().connections_opened,
        two.handle().stats().connections_opened,
    );

    // Waiting for the real expiry: the certificate is checked against the wall clock.
    let left = (expiry - now()).unsigned_abs() + Duration::from_secs(1);
    tokio::time::sleep(left).await;

    // The connections made before the expiry keep going.
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
    let reopened = (
        one.handle().stats().connections_opened,
        two.handle().stats().connections_opened,
    );
    assert_eq!(reopened, opened, "the old connections carried them");

    // A new peer refuses node 2 both ways.
    let mut three = tls_node(3, ca.config(3)).await;
    introduce(&two, 2, &three, 3);
    let three_counted = three.handle();
    assert!(
        refused(&mut three, 3, 2, &three_counted, |stats| {
            stats.refused_server_certificates > 0
        })
        .await,
        "{:?}",
        three_counted.stats()
    );
    assert!(
        refused(&mut two, 2, 3, &three_counted, |stats| {
            stats.refused_tls_handshakes > 0
        })
        .await,
        "{:?}",
        three_counted.stats()
    );

    // Rotation: a fresh certificate in the same files, read again.
    write(&ca.node(2));
    two.handle().reload_tls().unwrap();
    assert!(delivered(&mut three, 3, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut three, 3).await);
    assert!(delivered(&mut one, 1, &mut two, 2).await);
    assert!(delivered(&mut two, 2, &mut one, 1).await);
}

/// Opens `count` connections to `address` that never send a byte, one every `pause`.
async fn idle_connections(address: SocketAddr, count: usize, pause: Duration) -> Vec<TcpStream> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(stream) = TcpStream::connect(address).await {
            connections.push(stream);
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_does_not_keep_a_real_peer_out() {
    let ca = Ca::new("cluster CA");
    for tls in [true, false] {
        let with = |raw: u64| {
            let mut options = options(tls.then(|| ca.config(raw)));
            // Long enough that the timeout is not what frees the places, and fewer slots than
            // the flood has connections: without a bound on handshakes it would take them all.
            options.handshake_timeout = Duration::from_secs(60);
            options.max_inbound_connections = 128;
            options
        };
        let mut one = node_with(1, with(1)).await;
        let mut two = node_with(2, with(2)).await;
        introduce(&one, 1, &two, 2);
        let limit = with(1).max_pending_handshakes;
        let flood = idle_connections(one.local_addr(), 300, Duration::ZERO).await;
        let handle = one.handle();
        assert!(
            eventually(|| handle.stats().handshakes_evicted >= (300 - limit) as u64).await,
            "tls: {tls}: {:?}",
            handle.stats()
        );
        // More keep coming while the real peer connects.
        let address = one.local_addr();
        let more = tokio::spawn(idle_connections(address, 300, Duration::from_millis(5)));
        assert!(delivered(&mut two, 2, &mut one, 1).await, "tls: {tls}");
        assert!(delivered(&mut one, 1, &mut two, 2).await, "tls: {tls}");
        let stats = one.handle().stats();
        assert_eq!(stats.connections_accepted, 1, "tls: {tls}: {stats:?}");
        drop(more.await.unwrap());
        drop(flood);
    }
}

/// A log that a test reads: every line the transport writes at warn or above.
#[derive(Clone, Default)]
struct Log(Arc<std::sync::Mutex<Vec<u8>>>);

impl Log {
    /// Captures this thread's lines at warn and above until the guard is dropped.
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    /// The first line holding `words`; panics with the whole log if none does.
    fn line_with(&self, words: &str) -> String {
        let text = self.text();
        let line = text.lines().find(|line| line.contains(words));
        line.unwrap_or_else(|| panic!("no line with {words:?} in:\n{text}"))
            .to_owned()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// On one thread, so that the subscriber set for it sees every task's lines.
#[tokio::test(flavor = "current_thread")]
async fn a_transport_mismatch_is_logged_as_such_with_the_peer_address_and_not_as_a_bad_frame() {
    let (log, _guard) = Log::capture();

    let ca = Ca::new("cluster CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let mut plain = plaintext_node(3).await;
    introduce(&one, 1, &plain, 3);
    let one_counted = one.handle();
    assert!(
        refused(&mut plain, 3, 1, &one_counted, |stats| {
            stats.refused_transport_mismatch > 0
        })
        .await
    );
    let plain_counted = plain.handle();
    assert!(
        refused(&mut one, 1, 3, &plain_counted, |stats| {
            stats.refused_transport_mismatch > 0
        })
        .await
    );
    let text = log.text();
    let plaintext_refused = text
        .lines()
        .find(|line| line.contains("refusing a plaintext yggr connection: this node requires TLS"));
    let plaintext_refused = plaintext_refused.unwrap_or_else(|| panic!("{text}"));
    assert!(
        plaintext_refused.contains("127.0.0.1:"),
        "{plaintext_refused}"
    );
    let tls_refused = text.lines().find(|line| {
        line.contains("refusing a TLS connection: this node is not configured for TLS")
    });
    let tls_refused = tls_refused.unwrap_or_else(|| panic!("{text}"));
    assert!(tls_refused.contains("127.0.0.1:"), "{tls_refused}");
    assert!(!text.contains("bad handshake magic"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn certificate_refusals_are_logged_with_the_peer_address_and_the_ids() {
    let (log, _guard) = Log::capture();
    let ca = Ca::new("cluster CA");
    let mut one = tls_node(1, ca.config(1)).await;
    let two = tls_node(2, ca.config(2)).await;
    one.handle().add_peer(id(2), two.local_addr());
    one.handle().add_peer(id(3), two.local_addr());
    let one_counted = one.handle();
    assert!(
        refused(&mut one, 1, 3, &one_counted, |stats| {
            stats.refused_server_certificates > 0
        })
        .await
    );
    let line = log.line_with("refusing the peer's TLS certificate");
    assert!(
        line.contains("the certificate names node 2, not node 3"),
        "{line}"
    );
    assert!(line.contains(&two.local_addr().to_string()), "{line}");

    let mut forger = raw_tls_client(one.local_addr(), &ca.node(2)).await.unwrap();
    forger.write_all(&handshake(3)).await.unwrap();
    forger.flush().await.unwrap();
    assert!(closed_by_peer(&mut forger).await);
    let line = log.line_with("claims node 3 but whose certificate names node 2");
    assert!(line.contains("127.0.0.1:"), "{line}");

    let stranger = Ca::new("another CA").node(3);
    if let Ok(mut stream) = raw_tls_client(one.local_addr(), &stranger).await {
        assert!(closed_by_peer(&mut stream).await);
    }
    let line = log.line_with("client certificate is refused");
    assert!(
        line.contains("not issued by a CA of this node's CA bundle"),
        "{line}"
    );

    // The refused side hears of it too: TLS 1.3 tells it by an alert after its handshake.
    // It trusts node 1's CA, but its own certificate comes from another.
    let outsider_certificate = Ca::new("a third CA").node(4);
    let outsider_tls = TlsConfig::from_pem(
        outsider_certificate.cert.as_bytes(),
        outsider_certificate.key.as_bytes(),
        ca.pem().as_bytes(),
    )
    .unwrap();
    let mut outsider = tls_node(4, outsider_tls).await;
    outsider.handle().add_peer(id(1), one.local_addr());
    one.handle().add_peer(id(4), "127.0.0.1:9".parse().unwrap());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let words = "the peer refused this node's TLS handshake";
    while !log.text().contains(words) && tokio::time::Instant::now() < deadline {
        outsider.send(id(1), vote(4));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = log.line_with(words);
    assert!(line.contains(&one.local_addr().to_string()), "{line}");

    // A node started with an expired certificate of its own is warned at once.
    let expired = ca.issue(
        &["yggr://node/5".to_owned()],
        now() - Duration::from_secs(60),
    );
    let _late = tls_node(5, ca.config_of(&expired)).await;
    log.line_with("this node's TLS certificate is expired or not yet valid");
}

/// The attack of issue 19, under TLS: a forged AppendEntries of term 1000 "from the leader"
/// reaches no node, whether the forger holds a follower's certificate or one from another CA;
/// the cluster keeps its term and its leader, and serves writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_append_entries_in_the_leaders_name_does_not_move_a_tls_cluster() {
    let ca = Ca::new("cluster CA");
    let ids = [1, 2, 3];
    let mut transports = Vec::new();
    for raw in ids {
        transports.push(tls_node(raw, ca.config(raw)).await);
    }
    for (index, raw) in ids.iter().enumerate() {
        for (other_index, other) in ids.iter().enumerate() {
            if other != raw {
                let address = transports[other_index].local_addr();
                transports[index].handle().add_peer(id(*other), address);
            }
        }
    }
    let addresses: Vec<SocketAddr> = transports.iter().map(|t| t.local_addr()).collect();
    let handles: Vec<yggr::TcpHandle> = transports.iter().map(|t| t.handle()).collect();
    let mut nodes = Vec::new();
    for (raw, transport) in ids.into_iter().zip(transports) {
        let peers = ids.into_iter().filter(|other| *other != raw).map(id);
        let config = test_config(id(raw), peers);
        let node = yggr::Node::start(
            config,
            Recorder::default(),
            yggr::MemStorage::new(),
            transport,
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    let leader = crate::common::leader_among(&nodes).await;
    leader.write(1).await.unwrap();
    let leader_id = leader.id();
    let term = leader.status().await.unwrap().current_term;
    let follower = nodes
        .iter()
        .position(|node| node.id() != leader_id)
        .unwrap();
    let holder = nodes
        .iter()
        .find(|node| node.id() != leader_id && node.id() != nodes[follower].id())
        .unwrap()
        .id();

    let forged = Message {
        from: leader_id,
        term: Term::new(1000),
        rpc: Rpc::AppendEntries(yggr::core::AppendEntries {
            prev_log_index: yggr::LogIndex::new(0),
            prev_log_term: Term::new(0),
            entries: Vec::new(),
            leader_commit: yggr::LogIndex::new(0),
            round: 0,
        }),
    };
    let target = &handles[follower];
    let before = target.stats();
    // A follower's own certificate, claiming the leader's id.
    let mut forger = raw_tls_client(addresses[follower], &ca.node(holder.get()))
        .await
        .unwrap();
    let mut bytes = handshake(leader_id.get());
    bytes.extend(frame(&forged));
    forger.write_all(&bytes).await.unwrap();
    forger.flush().await.unwrap();
    assert!(closed_by_peer(&mut forger).await);
    // A certificate from another CA, naming the leader.
    let stranger = Ca::new("another CA").node(leader_id.get());
    if let Ok(mut forger) = raw_tls_client(addresses[follower], &stranger).await {
        let _ = forger.write_all(&bytes).await;
        let _ = forger.flush().await;
        assert!(closed_by_peer(&mut forger).await);
    }
    assert!(
        eventually(|| {
            let now = target.stats();
            now.refused_certificate_mismatch > before.refused_certificate_mismatch
                && now.refused_tls_handshakes > before.refused_tls_handshakes
        })
        .await,
        "{:?}",
        target.stats()
    );

    // The cluster serves (through whoever leads: a busy machine may have seen an election).
    let served = crate::common::eventually(PATIENCE, || async {
        crate::common::leader_among(&nodes)
            .await
            .write(2)
            .await
            .ok()
    })
    .await;
    assert!(served.is_some());
    for node in &nodes {
        let status = node.status().await.unwrap();
        assert!(status.current_term >= term, "node {}", node.id());
        assert!(
            status.current_term < Term::new(1000),
            "node {} took the forged term: {:?}",
            node.id(),
            status.current_term
        );
    }
    for node in nodes {
        let _ = node.shutdown().await;
    }
}
