//! A device's X.509 credential: its certificate chain and private key.
//!
//! With a certificate the device presents no SAS token: the TLS handshake carries the chain
//! and proves the key, and the MQTT CONNECT has a user name but no password (Microsoft Learn,
//! "Communicate with an IoT hub using the MQTT protocol": "set the username but not the
//! password"; azure-iot-sdk-python `azure/iot/device/common/pipeline/pipeline_stages_mqtt.py`
//! sends no password when the pipeline has an `x509` credential; azure-iot-sdk-node
//! `device/transport/mqtt/src/mqtt_base.ts` sets a password only for SAS). There is nothing to
//! renew: the certificate is valid until its `notAfter`.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::x509::{CertificateInfo, Thumbprints, Validity, time_text};
use crate::error::{Error, ErrorKind, Result};

/// A certificate chain (leaf first) and the leaf's private key, for X.509 authentication.
///
/// ```no_run
/// # async fn demo() -> iothub::Result<()> {
/// use iothub::device::{ClientCertificate, DeviceClient};
///
/// let cert = ClientCertificate::from_pem(
///     &std::fs::read_to_string("device.pem").unwrap(),
///     &std::fs::read_to_string("device.key").unwrap(),
/// )?;
/// println!("register thumbprint {}", cert.thumbprints().sha256);
/// let client = DeviceClient::from_connection_string(
///     "HostName=myhub.azure-devices.net;DeviceId=dev1;x509=true",
/// )?
/// .client_certificate(cert)
/// .connect()
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    info: CertificateInfo,
    thumbprints: Thumbprints,
}

impl ClientCertificate {
    /// Reads a PEM certificate chain (the device's certificate first, then any intermediates)
    /// and a PEM private key (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`).
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self> {
        let chain = crate::auth::x509::certificates_from_pem(cert_chain_pem.as_bytes())?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| {
            // The parser's error could quote the key: it is not passed on.
            Error::new(
                ErrorKind::InvalidCertificate,
                "the private key is not a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY",
            )
        })?;
        Self::from_der(chain, key)
    }

    /// Takes a DER chain (leaf first) and key, for callers that hold them in memory (rustls'
    /// own types).
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self> {
        let leaf = chain.first().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidCertificate,
                "the certificate chain is empty: give the device's certificate first",
            )
        })?;
        let info = CertificateInfo::from_der(leaf)?;
        let thumbprints = Thumbprints::of_der(leaf);
        Ok(ClientCertificate {
            chain,
            key: Arc::new(key),
            info,
            thumbprints,
        })
    }

    /// The device certificate's thumbprints, the form a self-signed device is registered with.
    pub fn thumbprints(&self) -> &Thumbprints {
        &self.thumbprints
    }

    /// The device certificate's subject CN and validity dates.
    pub fn info(&self) -> &CertificateInfo {
        &self.info
    }

    /// An error saying what to do if the device certificate is not valid at `now`.
    pub(crate) fn check_valid_at(&self, now: SystemTime) -> Result<()> {
        match self.info.validity_at(now) {
            Validity::Valid => Ok(()),
            Validity::Expired => Err(Error::new(
                ErrorKind::InvalidCertificate,
                format!(
                    "the device certificate expired at {} (thumbprint {}): issue a new one, \
                     register its thumbprint (self-signed) or sign it with the verified CA, \
                     and connect with it",
                    time_text(self.info.not_after),
                    self.thumbprints.sha1
                ),
            )),
            Validity::NotYetValid => Err(Error::new(
                ErrorKind::InvalidCertificate,
                format!(
                    "the device certificate is not valid before {} (thumbprint {}): check the \
                     device's clock or the certificate's dates",
                    time_text(self.info.not_before),
                    self.thumbprints.sha1
                ),
            )),
        }
    }

    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain.clone()
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("common_name", &self.info.common_name)
            .field("sha1_thumbprint", &self.thumbprints.sha1)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}
