//! TLS for the clients: the system's roots, as rustls-native-certs finds them (it honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), plus an optional extra CA such as the local hub's, and
//! optionally a client certificate (X.509 device authentication).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, ErrorKind, Result};

/// A rustls client configuration trusting the system roots and `extra_ca_pem`.
///
/// Configurations are made once per process and extra CA, and shared: the system's roots are
/// a few hundred certificates, and a copy per client was most of a `DeviceClient`'s memory
/// (measured in `benches/device.rs`).
pub(crate) fn client_config(extra_ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>> {
    static CONFIGS: OnceLock<Mutex<HashMap<Option<String>, Arc<rustls::ClientConfig>>>> =
        OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    let key = extra_ca_pem.map(str::to_owned);
    if let Some(config) = configs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(config.clone());
    }
    let config = Arc::new(
        builder()?
            .with_root_certificates(roots(extra_ca_pem)?)
            .with_no_client_auth(),
    );
    configs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, config.clone());
    Ok(config)
}

/// A configuration that also presents `chain` and proves it holds `key` (X.509 device
/// authentication). Each certificate gets its own configuration; the roots are shared with
/// every other configuration of the same extra CA.
#[cfg(feature = "device")]
pub(crate) fn client_config_with_certificate(
    extra_ca_pem: Option<&str>,
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ClientConfig>> {
    let config = builder()?
        .with_root_certificates(roots(extra_ca_pem)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidCertificate,
                "the private key does not suit the certificate, or its algorithm is not \
                 supported (RSA, ECDSA P-256/P-384 and Ed25519 keys are)",
            )
            .with_source(e)
        })?;
    Ok(Arc::new(config))
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Transport, "TLS set-up failed").with_source(e))
}

/// The trusted roots for `extra_ca_pem`, made once per process and extra CA.
fn roots(extra_ca_pem: Option<&str>) -> Result<Arc<rustls::RootCertStore>> {
    static ROOTS: OnceLock<Mutex<HashMap<Option<String>, Arc<rustls::RootCertStore>>>> =
        OnceLock::new();
    let cache = ROOTS.get_or_init(Default::default);
    let key = extra_ca_pem.map(str::to_owned);
    if let Some(roots) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(roots.clone());
    }
    let roots = Arc::new(build_roots(extra_ca_pem)?);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, roots.clone());
    Ok(roots)
}

fn build_roots(extra_ca_pem: Option<&str>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                Error::new(ErrorKind::Transport, "the extra CA is not valid PEM").with_source(e)
            })?;
            roots.add(cert).map_err(|e| {
                Error::new(
                    ErrorKind::Transport,
                    "the extra CA certificate is not usable",
                )
                .with_source(e)
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(Error::new(
                ErrorKind::Transport,
                "the extra CA PEM holds no certificate",
            ));
        }
    }
    if roots.is_empty() {
        return Err(Error::new(
            ErrorKind::Transport,
            "no trusted root certificate: the system has none and no extra CA was given",
        ));
    }
    Ok(roots)
}
