//! The hub's TLS: a CA and a server certificate made at start, and a rustls acceptor.
//!
//! The server certificate names the configured host name, `localhost` and `127.0.0.1`, as
//! every official client checks the host name (paho-mqtt in azure-iot-device sets
//! `check_hostname`; uamqp and Node's `tls.connect` verify the SAN). TLS 1.2 and 1.3 are both
//! offered: azure-iot-device 2.14.0 pins TLS 1.2 (py-device `mqtt_transport.py`); Node and
//! uamqp use 1.3. Keys are ECDSA P-256; the suites are rustls' ECDHE + AES-GCM/ChaCha20.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::{Error, ErrorKind, Result};
use crate::local_hub::limits::ConnectionGate;

/// The hub's certificates and TLS acceptor.
#[derive(Clone)]
pub(crate) struct HubTls {
    /// The CA certificate, PEM, for clients to trust.
    pub ca_pem: String,
    /// Accepts TLS connections with the server certificate (AMQP: service clients).
    pub acceptor: TlsAcceptor,
    /// The same, also asking for a client certificate without requiring one (the device
    /// endpoints: MQTT, and HTTPS for MQTT over WebSockets).
    pub device_acceptor: TlsAcceptor,
}

fn tls_error(detail: &str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Transport, detail.to_owned()).with_source(source)
}

/// The one crypto provider of the tree: ring.
pub(crate) fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl HubTls {
    /// Makes a server certificate for `host_name`, `localhost` and `127.0.0.1`, signed by
    /// `ca` (a new one at each start; the CA may come from the state directory).
    pub fn with_ca(host_name: &str, ca: &HubCa) -> Result<Self> {
        let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| tls_error("the CA key", e))?;
        let ca_params = HubCa::params()?;
        let ca_cert = ca;

        let mut names = vec![host_name.to_owned()];
        for name in ["localhost", "127.0.0.1"] {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_owned());
            }
        }
        let mut params =
            CertificateParams::new(names).map_err(|e| tls_error("server certificate names", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, host_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| tls_error("server key generation failed", e))?;
        let issuer = Issuer::new(ca_params, ca_key);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| tls_error("server certificate signing failed", e))?;

        // The chain as IoT Hub serves it: the server certificate and any intermediates, never
        // the self-signed root, which a client must already trust (RFC 8446 section 4.4.2: a
        // self-signed root "MAY be omitted"; RFC 5246 section 7.4.2 likewise). With the root in
        // the chain, Node reports SELF_SIGNED_CERT_IN_CHAIN to a client that does not trust it
        // where IoT Hub gives UNABLE_TO_VERIFY_LEAF_SIGNATURE.
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let versions: &[&rustls::SupportedProtocolVersion] =
            &[&rustls::version::TLS13, &rustls::version::TLS12];
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(versions)
            .map_err(|e| tls_error("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(|e| tls_error("server certificate", e))?;
        let device_config = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(versions)
            .map_err(|e| tls_error("TLS versions", e))?
            .with_client_cert_verifier(Arc::new(CertificateRequested::new()))
            .with_single_cert(chain, private)
            .map_err(|e| tls_error("server certificate", e))?;
        Ok(HubTls {
            ca_pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            device_acceptor: TlsAcceptor::from(Arc::new(device_config)),
        })
    }
}

/// The hub's CA: its certificate and key, PEM (the key is a secret: never logged).
#[derive(Clone)]
pub(crate) struct HubCa {
    /// The certificate clients trust.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl HubCa {
    /// The CA's parameters; the same at every start, so that a CA read back from the state
    /// directory signs server certificates whose issuer is that CA.
    fn params() -> Result<CertificateParams> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| tls_error("CA parameters", e))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "iothub-local test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(ca_params)
    }

    /// A new CA.
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key generation failed", e))?;
        let cert = Self::params()?
            .self_signed(&ca_key)
            .map_err(|e| tls_error("CA self-signing failed", e))?;
        Ok(HubCa {
            cert_pem: cert.pem(),
            key_pem: ca_key.serialize_pem(),
        })
    }

    /// A CA read back: its certificate and key, PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let _: CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| tls_error("the stored CA certificate", e))?;
        KeyPair::from_pem(key_pem).map_err(|e| tls_error("the stored CA key", e))?;
        Ok(HubCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    fn pem(&self) -> String {
        self.cert_pem.clone()
    }
}

/// Asks for a client certificate without requiring one, and checks only that the client holds
/// the certificate's key (the handshake signature). Who the certificate names is decided at
/// MQTT CONNECT (`state::x509`), where the hub knows the device: IoT Hub refuses a wrong
/// certificate there with CONNACK 5, which the SDKs report as an authorization error
/// (azure-iot-sdk-node `common/transport/mqtt/src/mqtt_translate_error.ts` maps "Not
/// authorized" to `UnauthorizedError`; azure-iot-sdk-python
/// `azure/iot/device/common/mqtt_transport.py` maps return code 5 to `UnauthorizedError`),
/// rather than failing the TLS handshake.
#[derive(Debug)]
struct CertificateRequested {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl CertificateRequested {
    fn new() -> Self {
        CertificateRequested {
            algorithms: crypto_provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for CertificateRequested {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate chain a TLS client presented on the HTTPS port, as a request extension for
/// the MQTT-over-WebSockets route.
#[derive(Clone, Debug)]
pub(crate) struct PeerCertificates(pub Vec<CertificateDer<'static>>);

/// The certificate chain a TLS client presented, leaf first (`None` when it presented none).
pub(crate) fn peer_certificates<S>(tls: &TlsStream<S>) -> Option<Vec<CertificateDer<'static>>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .filter(|certs| !certs.is_empty())
        .map(<[CertificateDer<'static>]>::to_vec)
}

/// Accepts TCP connections on `listener` within `gate`'s bounds until it fails for good: a
/// connection past them is closed right after `accept`; an admitted one finishes its TLS
/// handshake within `handshake_timeout`, runs `serve(stream, peer)` in a task of its own and
/// keeps its place until `serve` returns.
pub(crate) async fn accept_loop_bounded<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    protocol: &'static str,
    gate: ConnectionGate,
    handshake_timeout: Duration,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>, String) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer, admission) = gate.accept(&listener, protocol).await;
        let acceptor = acceptor.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            let _admission = admission;
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve(tls, peer.to_string()).await,
                Ok(Err(e)) => tracing::debug!(protocol, %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(protocol, %peer, "TLS handshake timed out"),
            }
        });
    }
}
