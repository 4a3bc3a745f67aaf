//! X.509 client certificates, without I/O: thumbprints, PEM, the subject's common name and the
//! validity dates. The device client checks its own certificate with these before it
//! connects; the local hub applies IoT Hub's rules with the same functions.
//!
//! IoT Hub's rules (Microsoft Learn, "Authenticate identities with X.509 certificates",
//! `authenticate-authorize-x509.md`): a self-signed device is registered with the thumbprint
//! of its certificate, SHA-1 or SHA-256 in hex (the Node e2e helper registers openssl's SHA-1
//! fingerprint, upper case: azure-iot-sdk-node `e2etests/test/device_identity_helper.js`,
//! `createDeviceWithX509SelfSignedCert`; the az CLI's `certops.py` registers SHA-256); a
//! CA-signed device's certificate chains to a verified CA and its subject CN is the device id
//! (`{device}/{module}` for a module).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, ErrorKind, Result};

/// The two thumbprints IoT Hub computes of a certificate: SHA-1 and SHA-256 of its DER, in
/// upper-case hex (IoT Hub's 401003 text names both: Microsoft Learn, "Troubleshoot IoT Hub
/// error codes", 401003 IoTHubUnauthorized, "SHA1Hash=*, SHA2Hash=*").
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Thumbprints {
    /// SHA-1, 40 hex digits.
    pub sha1: String,
    /// SHA-256, 64 hex digits.
    pub sha256: String,
}

impl Thumbprints {
    /// The thumbprints of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Thumbprints {
            sha1: upper_hex(&Sha1::digest(der)),
            sha256: upper_hex(&Sha256::digest(der)),
        }
    }

    /// Whether `registered` (a registry thumbprint as the SDKs send it: hex, any case,
    /// optionally with `:` separators as openssl prints them) names this certificate.
    pub fn matches(&self, registered: &str) -> bool {
        let registered: String = registered
            .chars()
            .filter(|c| !matches!(c, ':' | ' '))
            .collect();
        !registered.is_empty()
            && (registered.eq_ignore_ascii_case(&self.sha1)
                || registered.eq_ignore_ascii_case(&self.sha256))
    }
}

fn upper_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// What the checks need from a certificate: its subject CN and validity dates.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The subject's first common name, if it has one.
    pub common_name: Option<String>,
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl fmt::Debug for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateInfo")
            .field("common_name", &self.common_name)
            .field("not_before", &time_text(self.not_before))
            .field("not_after", &time_text(self.not_after))
            .finish()
    }
}

/// Why a certificate is not valid at a given time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Validity {
    /// Inside its validity period.
    Valid,
    /// `notBefore` is later.
    NotYetValid,
    /// `notAfter` is earlier.
    Expired,
}

impl CertificateInfo {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| {
            Error::new(
                ErrorKind::InvalidCertificate,
                "the certificate is not a valid DER X.509 certificate",
            )
        })?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        let validity = cert.validity();
        Ok(CertificateInfo {
            common_name,
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
        })
    }

    /// Whether the certificate is valid at `now` (both ends inclusive, as RFC 5280 §4.1.2.5).
    pub fn validity_at(&self, now: SystemTime) -> Validity {
        if now < self.not_before {
            Validity::NotYetValid
        } else if now > self.not_after {
            Validity::Expired
        } else {
            Validity::Valid
        }
    }
}

fn system_time(unix_secs: i64) -> SystemTime {
    match u64::try_from(unix_secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_secs.unsigned_abs()),
    }
}

/// A time as RFC 3339 text (UTC, seconds), for messages.
pub(crate) fn time_text(at: SystemTime) -> String {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after 1970"))
}

/// The DER certificates of a PEM text, in order (leaf first, as TLS sends them). Blocks of
/// other kinds (a private key in the same file) are skipped.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut certs = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|_| {
            Error::new(
                ErrorKind::InvalidCertificate,
                "the certificate chain is not valid PEM",
            )
        })?;
        if block.label == "CERTIFICATE" {
            certs.push(block.contents);
        }
    }
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidCertificate,
            "the PEM holds no CERTIFICATE block",
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A self-signed certificate made once with `openssl req -x509` (CN=x509-fixture, 100 years),
    // with its openssl fingerprints:
    // `openssl x509 -noout -fingerprint -sha1` / `-sha256`.
    const PEM: &str = include_str!("../../tests/data/x509_self_signed.pem");
    const SHA1: &str = include_str!("../../tests/data/x509_self_signed.sha1");
    const SHA256: &str = include_str!("../../tests/data/x509_self_signed.sha256");

    #[test]
    fn thumbprints_match_openssl_in_any_case_and_with_colons() {
        let der = &certificates_from_pem(PEM.as_bytes()).unwrap()[0];
        let prints = Thumbprints::of_der(der);
        let sha1 = SHA1.trim().rsplit('=').next().unwrap();
        let sha256 = SHA256.trim().rsplit('=').next().unwrap();
        assert!(prints.matches(sha1), "openssl form with colons");
        assert!(prints.matches(&sha1.replace(':', "").to_lowercase()));
        assert!(prints.matches(&sha256.replace(':', "")));
        assert!(prints.matches(&sha256.replace(':', "").to_lowercase()));
        assert!(!prints.matches(""));
        assert!(!prints.matches(&"0".repeat(40)));
        assert_eq!(prints.sha1.len(), 40);
        assert_eq!(prints.sha256.len(), 64);
    }

    #[test]
    fn subject_common_name_and_dates_are_read() {
        let der = &certificates_from_pem(PEM.as_bytes()).unwrap()[0];
        let info = CertificateInfo::from_der(der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("x509-fixture"));
        assert_eq!(info.validity_at(info.not_before), Validity::Valid);
        assert_eq!(info.validity_at(info.not_after), Validity::Valid);
        assert_eq!(
            info.validity_at(info.not_before - Duration::from_secs(1)),
            Validity::NotYetValid
        );
        assert_eq!(
            info.validity_at(info.not_after + Duration::from_secs(1)),
            Validity::Expired
        );
    }

    #[test]
    fn bad_input_is_an_invalid_certificate_error() {
        for pem in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        ] {
            let err = certificates_from_pem(pem.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidCertificate, "{pem:?}");
        }
        assert_eq!(
            CertificateInfo::from_der(b"\x30\x03\x02\x01\x01")
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidCertificate
        );
    }
}
