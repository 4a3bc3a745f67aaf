//! X.509 devices on the local hub: registering them, issuing test certificates, and the
//! verified CA certificates.

use std::fmt;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;

use super::state::{DeviceAuthentication, DeviceSpec, DeviceStatus, HubState};
use super::{LocalHub, registry_error};
use crate::auth::DeviceConnectionString;
use crate::auth::x509::{Thumbprints, certificates_from_pem};
use crate::error::{Error, ErrorKind, Result};

/// A self-signed X.509 device the hub registered, with its certificate and key.
#[derive(Clone)]
pub struct X509Device {
    /// The device id (also the certificate's subject CN).
    pub device_id: String,
    /// `HostName=…;DeviceId=…;x509=true` (with `GatewayHostName` when the hub needs it).
    pub connection_string: DeviceConnectionString,
    /// The device certificate, PEM.
    pub certificate_pem: String,
    /// The certificate's private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// The certificate's thumbprints; the SHA-1 one is registered as the primary thumbprint.
    pub thumbprints: Thumbprints,
}

impl fmt::Debug for X509Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Device")
            .field("device_id", &self.device_id)
            .field("connection_string", &self.connection_string)
            .field("thumbprints", &self.thumbprints)
            .field("private_key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Adds the CA certificates of `pem` to the hub's verified CAs.
pub(super) fn add_ca_pem(state: &HubState, pem: &str) -> Result<()> {
    for der in certificates_from_pem(pem.as_bytes())? {
        let der = CertificateDer::from(der);
        // webpki must be able to use it as a trust anchor.
        rustls::RootCertStore::empty()
            .add(der.clone())
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidCertificate,
                    "an X.509 CA certificate is not usable as a trust anchor",
                )
                .with_source(e)
            })?;
        state.add_x509_ca(der);
    }
    Ok(())
}

/// A self-signed client certificate and its key for `common_name`, as the official Node e2e
/// helper makes for its self-signed devices (azure-iot-sdk-node
/// `e2etests/test/device_identity_helper.js`, `createDeviceWithX509SelfSignedCert`).
fn self_signed(common_name: &str) -> Result<(String, String, Thumbprints)> {
    let issue = |detail: &str, e: rcgen::Error| {
        Error::new(ErrorKind::InvalidCertificate, detail.to_owned()).with_source(e)
    };
    let key = KeyPair::generate().map_err(|e| issue("key generation failed", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| issue("certificate parameters", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params
        .self_signed(&key)
        .map_err(|e| issue("self-signing failed", e))?;
    let thumbprints = Thumbprints::of_der(cert.der());
    Ok((cert.pem(), key.serialize_pem(), thumbprints))
}

impl LocalHub {
    /// Issues a self-signed certificate with CN = `device_id`, registers the device as
    /// `selfSigned` with the certificate's SHA-1 thumbprint, and returns the certificate, its
    /// key and the `x509=true` connection string.
    pub fn create_x509_device(&self, device_id: &str) -> Result<X509Device> {
        let (certificate_pem, private_key_pem, thumbprints) = self_signed(device_id)?;
        let connection_string = self.create_self_signed_device(
            device_id,
            &thumbprints.sha1,
            Some(&thumbprints.sha256),
        )?;
        Ok(X509Device {
            device_id: device_id.to_owned(),
            connection_string,
            certificate_pem,
            private_key_pem,
            thumbprints,
        })
    }

    /// Registers a `selfSigned` device with these thumbprints (SHA-1 or SHA-256 hex, any
    /// case) and returns its `x509=true` connection string.
    pub fn create_self_signed_device(
        &self,
        device_id: &str,
        primary_thumbprint: &str,
        secondary_thumbprint: Option<&str>,
    ) -> Result<DeviceConnectionString> {
        self.register_x509(
            device_id,
            DeviceAuthentication::SelfSigned {
                primary_thumbprint: Some(primary_thumbprint.to_owned()),
                secondary_thumbprint: secondary_thumbprint.map(str::to_owned),
            },
        )
    }

    /// Registers a `certificateAuthority` device, which connects with a certificate signed by
    /// a verified CA ([`LocalHubBuilder::x509_ca_pem`](super::LocalHubBuilder::x509_ca_pem))
    /// with CN = `device_id`, and returns its `x509=true` connection string.
    pub fn create_ca_signed_device(&self, device_id: &str) -> Result<DeviceConnectionString> {
        self.register_x509(device_id, DeviceAuthentication::CertificateAuthority)
    }

    /// Adds the CA certificates of `pem` to the verified X.509 CAs.
    pub fn add_x509_ca_pem(&self, pem: &str) -> Result<()> {
        add_ca_pem(&self.state, pem)
    }

    fn register_x509(
        &self,
        device_id: &str,
        authentication: DeviceAuthentication,
    ) -> Result<DeviceConnectionString> {
        self.state
            .put_device(
                DeviceSpec {
                    device_id: device_id.to_owned(),
                    status: DeviceStatus::Enabled,
                    status_reason: None,
                    primary_key: None,
                    secondary_key: None,
                    iot_edge: false,
                    authentication,
                },
                None,
            )
            .map_err(|e| registry_error(e, device_id))?;
        tracing::info!(device = device_id, "X.509 device registered");
        let cs: DeviceConnectionString = format!(
            "HostName={};DeviceId={device_id};x509=true",
            self.host_name()
        )
        .parse()?;
        Ok(self.through_gateway(cs))
    }
}
