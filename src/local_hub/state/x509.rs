//! X.509 device authentication: the verified CA certificates and the check of the certificate
//! a device presented in its TLS handshake when its CONNECT has no password.
//!
//! IoT Hub's rules (Microsoft Learn, "Authenticate identities with X.509 certificates",
//! `authenticate-authorize-x509.md`, and "Troubleshoot 401003 IoTHubUnauthorized"):
//! - `selfSigned`: the certificate's SHA-1 or SHA-256 thumbprint equals the registered primary
//!   or secondary thumbprint (hex, compared without regard to case: the Node e2e tests register
//!   openssl's upper-case SHA-1, azure-iot-sdk-node `e2etests/test/device_identity_helper.js`;
//!   the az CLI registers SHA-256). The subject is not checked (the Node e2e self-signed
//!   certificates carry pem's default CN, not the device id).
//! - `certificateAuthority`: the chain verifies up to a verified CA and the subject CN is the
//!   device id. Revocation is not checked (IoT Hub does not check CRLs either: disable the
//!   device instead).
//! - the certificate is inside its validity dates, by the hub's clock.
//! - a device registered with `sas` must send a SAS token; a certificate alone does not
//!   authenticate it.
//!
//! A refusal is IoT Hub's 401003 IoTHubUnauthorized; its text for a thumbprint mismatch is
//! "Thumbprint does not match configuration: Thumbprint: SHA1Hash=*, SHA2Hash=*;
//! Configuration: PrimaryThumbprint=*, SecondaryThumbprint=*".

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::HubState;
use super::identities::{DeviceAuthentication, DeviceStatus, Identity};
use crate::auth::x509::{CertificateInfo, Thumbprints, Validity, time_text};
use crate::local_hub::tls::crypto_provider;

/// The prefix of every refusal, as IoT Hub logs it.
const UNAUTHORIZED: &str = "401003 IotHubUnauthorized";

impl HubState {
    /// Adds a verified CA certificate: devices registered as `certificateAuthority` may
    /// present certificates it signed.
    pub fn add_x509_ca(&self, der: CertificateDer<'static>) {
        self.lock().x509_cas.push(der);
    }

    /// How a device authenticates; `None` for an unknown or disabled device, `Sas` for a
    /// module (modules authenticate with SAS tokens on this hub).
    pub fn device_authentication(&self, identity: &Identity) -> Option<DeviceAuthentication> {
        let inner = self.lock();
        let device = inner
            .devices
            .get(&identity.device_id)
            .filter(|d| d.record.status == DeviceStatus::Enabled)?;
        match &identity.module_id {
            None => Some(device.record.authentication.clone()),
            Some(module_id) => device
                .modules
                .contains_key(module_id)
                .then_some(DeviceAuthentication::Sas),
        }
    }

    /// Checks the certificate chain (leaf first) a device presented in place of a password;
    /// `Err` is the 401003 reason, for the log.
    pub fn authorize_certificate(
        &self,
        identity: &Identity,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let refuse = |why: String| Err(format!("{UNAUTHORIZED}: {why}"));
        let Some(authentication) = self.device_authentication(identity) else {
            return refuse(format!(
                "the hub does not contain an enabled identity {identity}"
            ));
        };
        if identity.module_id.is_some() {
            return refuse("modules authenticate with SAS tokens on this hub".to_owned());
        }
        let Some(leaf) = chain.first() else {
            return refuse("no password and no client certificate".to_owned());
        };
        if authentication == DeviceAuthentication::Sas {
            return refuse(
                "the device is registered with SAS authentication: it must send a SAS token \
                 as the MQTT password (a client certificate does not authenticate it)"
                    .to_owned(),
            );
        }
        let Ok(info) = CertificateInfo::from_der(leaf) else {
            return refuse("the client certificate cannot be parsed".to_owned());
        };
        let now = self.clock.now();
        match info.validity_at(now) {
            Validity::Valid => {}
            Validity::Expired => {
                return refuse(format!(
                    "the client certificate expired at {}",
                    time_text(info.not_after)
                ));
            }
            Validity::NotYetValid => {
                return refuse(format!(
                    "the client certificate is not valid before {}",
                    time_text(info.not_before)
                ));
            }
        }
        match authentication {
            DeviceAuthentication::Sas => unreachable!("refused above"),
            DeviceAuthentication::SelfSigned {
                primary_thumbprint,
                secondary_thumbprint,
            } => {
                let prints = Thumbprints::of_der(leaf);
                let matches = [&primary_thumbprint, &secondary_thumbprint]
                    .into_iter()
                    .flatten()
                    .any(|registered| prints.matches(registered));
                if matches {
                    Ok(())
                } else {
                    refuse(format!(
                        "Thumbprint does not match configuration: Thumbprint: SHA1Hash={}, \
                         SHA2Hash={}; Configuration: PrimaryThumbprint={}, \
                         SecondaryThumbprint={}",
                        prints.sha1,
                        prints.sha256,
                        primary_thumbprint.as_deref().unwrap_or(""),
                        secondary_thumbprint.as_deref().unwrap_or("")
                    ))
                }
            }
            DeviceAuthentication::CertificateAuthority => {
                if info.common_name.as_deref() != Some(identity.device_id.as_str()) {
                    return refuse(format!(
                        "the certificate's subject CN ({}) is not the device id",
                        info.common_name.as_deref().unwrap_or("none")
                    ));
                }
                let cas = self.lock().x509_cas.clone();
                verify_chain(&cas, chain, now).map_err(|why| format!("{UNAUTHORIZED}: {why}"))
            }
        }
    }
}

/// Verifies `chain` (leaf first, then intermediates) up to one of `cas` at `now`, with webpki's
/// client-certificate rules (signatures, validity dates, CA constraints, the client-auth key
/// usage when the certificate names usages).
fn verify_chain(
    cas: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    now: std::time::SystemTime,
) -> Result<(), String> {
    if cas.is_empty() {
        return Err("no verified CA certificate is configured on the hub".to_owned());
    }
    let mut roots = RootCertStore::empty();
    for ca in cas {
        // A CA that webpki cannot use was refused when it was configured.
        let _ = roots.add(ca.clone());
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map_err(|e| format!("the verified CAs are unusable: {e}"))?;
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
    verifier
        .verify_client_cert(
            leaf,
            intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
        )
        .map(|_| ())
        .map_err(|e| format!("the certificate does not chain to a verified CA: {e}"))
}
