//! TLS for the clients: the system's roots, as rustls-native-certs finds them (it honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), plus an optional extra CA such as the local hub's, and
//! optionally a client certificate (X.509 device authentication).

use std::collections::HashMap;
use std::path::Path;
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

/// Checks the variables rustls-native-certs reads (`SSL_CERT_FILE`, `SSL_CERT_DIR`): when one
/// is set, the system's own roots are not read at all (rustls-native-certs `load_native_certs`,
/// `CertPaths::from_env`), so one that names nothing would leave the client trusting no
/// system root, silently. That is reported instead.
pub(crate) fn check_cert_variables(
    ssl_cert_file: Option<&std::ffi::OsStr>,
    ssl_cert_dir: Option<&std::ffi::OsStr>,
) -> Result<()> {
    fn set(value: Option<&std::ffi::OsStr>) -> Option<&Path> {
        value.filter(|v| !v.is_empty()).map(Path::new)
    }
    if let Some(file) = set(ssl_cert_file) {
        if !file.is_file() {
            return Err(Error::new(
                ErrorKind::Transport,
                format!(
                    "SSL_CERT_FILE={} is not a readable file, so no system root certificate \
                     would be trusted: point it at a PEM bundle (for iothub-local, the file \
                     it prints as IOTHUB_CA_FILE) or unset it",
                    file.display()
                ),
            ));
        }
    }
    if let Some(dir) = set(ssl_cert_dir) {
        // SSL_CERT_DIR may list several directories, as OpenSSL reads it.
        let separator = if cfg!(windows) { ';' } else { ':' };
        let text = dir.to_string_lossy();
        if !text.split(separator).any(|d| Path::new(d).is_dir()) {
            return Err(Error::new(
                ErrorKind::Transport,
                format!(
                    "SSL_CERT_DIR={text} names no directory, so no system root certificate \
                     would be trusted: point it at a directory of CA certificates or unset it"
                ),
            ));
        }
    }
    Ok(())
}

/// What to do about a failed TLS handshake, when `error` (or one of its sources) is rustls
/// refusing the hub's certificate; `None` for any other error. The text names the CA to
/// trust and the ways to give it.
pub(crate) fn trust_hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError;
    let certificate_error = match find_rustls_error(error) {
        Some(rustls::Error::InvalidCertificate(e)) => Some(e.clone()),
        _ => None,
    };
    // Some wrappers keep only the text: read the variant name from it then.
    let text = error.to_string();
    let unknown_issuer = matches!(certificate_error, Some(CertificateError::UnknownIssuer))
        || text.contains("UnknownIssuer");
    let bad_signature = matches!(certificate_error, Some(CertificateError::BadSignature))
        || text.contains("BadSignature");
    if unknown_issuer {
        Some(
            "the hub's certificate is not signed by a CA this client trusts: trust the hub's \
             CA (DeviceClientBuilder::trust_ca_pem / RegistryManagerBuilder::trust_ca_pem with \
             the PEM text; for iothub-local, the file it prints as IOTHUB_CA_FILE), or set \
             SSL_CERT_FILE to a PEM bundle that holds it",
        )
    } else if bad_signature {
        Some(
            "the hub's certificate does not verify against the CA this client trusts: the \
             hub now has another CA (iothub-local makes a new one at every start unless it \
             is given --state-dir): read its CA file (IOTHUB_CA_FILE) again and trust that",
        )
    } else if matches!(
        certificate_error,
        Some(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })
    ) {
        Some(
            "the hub's certificate does not name the host dialled: connect with the host name \
             the certificate was made for (iothub-local's names its --host-name, localhost \
             and 127.0.0.1)",
        )
    } else {
        None
    }
}

/// The rustls error behind `error`: itself, one of its sources, or the payload of an
/// `io::Error` among them (tokio-rustls reports handshake failures as `io::Error`s whose
/// `source()` skips the payload).
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

fn build_roots(extra_ca_pem: Option<&str>) -> Result<rustls::RootCertStore> {
    check_cert_variables(
        std::env::var_os("SSL_CERT_FILE").as_deref(),
        std::env::var_os("SSL_CERT_DIR").as_deref(),
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_cert_variable_naming_nothing_is_reported() {
        let missing = OsStr::new("/nonexistent/iothub-ca.pem");
        let err = check_cert_variables(Some(missing), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("SSL_CERT_FILE=/nonexistent/iothub-ca.pem"),
            "{err}"
        );
        assert!(err.to_string().contains("unset it"), "{err}");
        let err = check_cert_variables(None, Some(OsStr::new("/nonexistent-dir"))).unwrap_err();
        assert!(err.to_string().contains("SSL_CERT_DIR"), "{err}");
        assert!(check_cert_variables(None, None).is_ok());
        assert!(check_cert_variables(Some(OsStr::new("")), None).is_ok());
        let dir = std::env::temp_dir();
        assert!(check_cert_variables(None, Some(dir.as_os_str())).is_ok());
    }

    #[test]
    fn certificate_refusals_get_a_hint_naming_the_ca_to_trust() {
        let wrapped = |e: rustls::CertificateError| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(e),
            )
        };
        let hint = trust_hint(&wrapped(rustls::CertificateError::UnknownIssuer)).unwrap();
        assert!(
            hint.contains("IOTHUB_CA_FILE") && hint.contains("SSL_CERT_FILE"),
            "{hint}"
        );
        assert!(hint.contains("trust_ca_pem"), "{hint}");
        let hint = trust_hint(&wrapped(rustls::CertificateError::BadSignature)).unwrap();
        assert!(hint.contains("--state-dir"), "{hint}");
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(trust_hint(&other).is_none());
    }
}
