//! Shared access signatures: the key, the token, and the resource a token grants.
//!
//! A token is `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]`
//! where `signature = base64(HMAC-SHA256(base64decode(key), sr + "\n" + se))`, computed over the
//! `sr` text exactly as written in the token (protocol.md §1.1–§1.2; MicrosoftDocs
//! `authenticate-authorize-sas.md`). We write the fields in the order the Python and C SDKs use
//! (`sr, sig, se, skn`; py-device `common/auth/sastoken.py`, sdk-for-c `az_iot_hub_client_sas.c`)
//! and read them in any order, as the hub does.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::percent;

type HmacSha256 = Hmac<Sha256>;

/// The token prefix, with its single space (protocol.md §1.1).
const PREFIX: &str = "SharedAccessSignature ";

/// Standard base64 that, like Node's `Buffer.from(s, 'base64')`, accepts missing padding and
/// non-zero trailing bits (protocol.md §1.2: the Node vectors sign with the key text `"key"`),
/// yet rejects characters outside the alphabet and impossible lengths (py-device
/// `test_signing_mechanism.py`: `"not a key"` and `"YWJjx"` are errors).
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A shared access key, ready to sign.
///
/// The key is decoded from base64 once, and the HMAC-SHA256 inner and outer states are
/// computed once, so signing a token costs two SHA-256 blocks and no key set-up. `Debug`
/// never shows the key.
///
/// ```
/// use iothub::auth::{ResourceUri, SasKey};
///
/// let key: SasKey = "cGFzc3dvcmQ=".parse()?;
/// let resource = ResourceUri::device("myiothub.azure-devices.net", "my_device");
/// let token = key.token(&resource, None, 1578941692);
/// assert_eq!(
///     token.to_string(),
///     "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device\
///      &sig=DTUpME%2Fc%2BX9Cvy%2B3r0ZNtHukhBGykBpAx8L30%2BISNuY%3D&se=1578941692"
/// );
/// # Ok::<(), iothub::Error>(())
/// ```
#[derive(Clone)]
pub struct SasKey {
    mac: HmacSha256,
    encoded: Box<str>,
}

impl SasKey {
    /// Decodes a base64 key as found in connection strings and the registry.
    ///
    /// Missing `=` padding is accepted, as Node's SDK accepts it; anything that is not base64
    /// is an [`ErrorKind::InvalidKey`] error whose text does not contain the key.
    pub fn from_base64(text: &str) -> Result<Self> {
        let bytes = LENIENT_BASE64.decode(text).map_err(|_| {
            Error::new(
                ErrorKind::InvalidKey,
                "the shared access key is not valid base64",
            )
        })?;
        if bytes.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidKey,
                "the shared access key is empty",
            ));
        }
        Ok(SasKey {
            mac: hmac_for(&bytes),
            encoded: text.into(),
        })
    }

    /// Builds a key from raw key bytes (its base64 form is computed for [`SasKey::to_base64`]).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        SasKey {
            mac: hmac_for(bytes),
            encoded: base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        }
    }

    /// The key as base64 text, as it was given. This is the secret itself.
    pub fn to_base64(&self) -> &str {
        &self.encoded
    }

    /// HMAC-SHA256 of `message` under this key.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }

    /// HMAC-SHA256 of `sr + "\n" + se`, the string a token signs, without building it.
    fn sign_parts(&self, sr: &str, se: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(sr.as_bytes());
        mac.update(b"\n");
        mac.update(se.as_bytes());
        mac
    }

    /// Signs a token for `resource` that expires at `expiry` (seconds since the Unix epoch).
    ///
    /// Give `key_name` for a shared access policy key (it becomes `skn`); leave it `None` for
    /// a device or module key, whose tokens carry no `skn` (MicrosoftDocs
    /// `authenticate-authorize-sas.md`).
    pub fn token(&self, resource: &ResourceUri, key_name: Option<&str>, expiry: u64) -> SasToken {
        let mut se = itoa::Buffer::new();
        let se = se.format(expiry);
        let digest = self
            .sign_parts(&resource.encoded, se)
            .finalize()
            .into_bytes();
        let mut sig = [0u8; 44];
        let len = base64::engine::general_purpose::STANDARD
            .encode_slice(digest, &mut sig)
            .expect("32 bytes always fit 44 base64 characters");
        let sig = std::str::from_utf8(&sig[..len]).expect("base64 is ASCII");
        SasToken::assemble(&resource.encoded, sig, se, expiry, key_name)
    }
}

fn hmac_for(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

impl FromStr for SasKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        SasKey::from_base64(text)
    }
}

impl PartialEq for SasKey {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl Eq for SasKey {}

impl fmt::Debug for SasKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SasKey(<redacted>)")
    }
}

/// The `sr` of a token: the URI of what the token grants, already percent-encoded.
///
/// Device and module URIs are encoded as the Python SDK does (`quote(uri, safe="")`: uppercase
/// hex, `/` as `%2F`; py-device `common/auth/sastoken.py`), giving for example
/// `myhub.azure-devices.net%2Fdevices%2Fdev1`. A service policy's URI is the bare host name
/// (node-hub `src/client.ts`, c-sdk `iothub_messaging_ll.c`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ResourceUri {
    encoded: String,
}

impl ResourceUri {
    /// `{host}/devices/{device_id}`, for a device key or a policy acting for one device.
    pub fn device(host: &str, device_id: &str) -> Self {
        Self::from_segments(&[host, "devices", device_id])
    }

    /// `{host}/devices/{device_id}/modules/{module_id}`, for a module key.
    pub fn module(host: &str, device_id: &str, module_id: &str) -> Self {
        Self::from_segments(&[host, "devices", device_id, "modules", module_id])
    }

    /// `{host}`, for a service policy such as `iothubowner` or `service`.
    pub fn service(host: &str) -> Self {
        ResourceUri {
            encoded: host.to_owned(),
        }
    }

    /// A resource written exactly as given (it is signed as is).
    pub fn from_encoded(text: impl Into<String>) -> Self {
        ResourceUri {
            encoded: text.into(),
        }
    }

    fn from_segments(segments: &[&str]) -> Self {
        let mut encoded = String::with_capacity(segments.iter().map(|s| s.len() + 3).sum());
        for (i, segment) in segments.iter().enumerate() {
            if i > 0 {
                encoded.push_str("%2F");
            }
            percent::encode_into(segment, &mut encoded);
        }
        ResourceUri { encoded }
    }

    /// The encoded text, as it goes after `sr=`.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encoded)
    }
}

impl fmt::Debug for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceUri({:?})", self.encoded)
    }
}

/// The string a token signs: `sr` as written, a newline, `se` in decimal.
pub fn string_to_sign(resource: &str, expiry: u64) -> String {
    format!("{resource}\n{expiry}")
}

/// A shared access signature token.
///
/// Parsing accepts the fields in any order (Node writes `skn` before `se`, Python after), keeps
/// the text exactly as received, and checks only its form; [`SasToken::verify`] checks the
/// signature. `Display` writes the exact token text (what goes into an MQTT password or an
/// `Authorization` header); `Debug` hides the signature.
///
/// ```
/// use iothub::auth::{SasKey, SasToken};
///
/// let token: SasToken = "SharedAccessSignature sr=host&sig=88JmrIsVYOGmRSjCO1x1LLbv0K001Gikh1rjfJqbQXA%3D&skn=policy&se=12345"
///     .parse()?;
/// assert_eq!(token.resource()?, "host");
/// assert_eq!(token.key_name().as_deref(), Some("policy"));
/// assert_eq!(token.expiry_secs(), 12345);
/// assert!(token.verify(&SasKey::from_base64("key")?));
/// assert!(!format!("{token:?}").contains("88Jmr"));
/// # Ok::<(), iothub::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SasToken {
    text: String,
    sr: Range<usize>,
    sig: Range<usize>,
    se: Range<usize>,
    skn: Option<Range<usize>>,
    expiry: u64,
}

impl SasToken {
    /// Builds a token from a signature computed elsewhere (base64 text, padded or not).
    pub fn from_parts(
        resource: &ResourceUri,
        signature_base64: &str,
        expiry: u64,
        key_name: Option<&str>,
    ) -> Self {
        let mut se = itoa::Buffer::new();
        Self::assemble(
            &resource.encoded,
            signature_base64,
            se.format(expiry),
            expiry,
            key_name,
        )
    }

    fn assemble(sr: &str, sig: &str, se: &str, expiry: u64, key_name: Option<&str>) -> Self {
        let mut text = String::with_capacity(
            PREFIX.len()
                + 16
                + sr.len()
                + sig.len() * 3
                + se.len()
                + key_name.map_or(0, |k| k.len() * 3 + 5),
        );
        text.push_str(PREFIX);
        text.push_str("sr=");
        let sr_range = push_range(&mut text, |t| t.push_str(sr));
        text.push_str("&sig=");
        let sig_range = push_range(&mut text, |t| push_encoded_base64(sig, t));
        text.push_str("&se=");
        let se_range = push_range(&mut text, |t| t.push_str(se));
        let skn_range = key_name.map(|name| {
            text.push_str("&skn=");
            push_range(&mut text, |t| percent::encode_into(name, t))
        });
        SasToken {
            text,
            sr: sr_range,
            sig: sig_range,
            se: se_range,
            skn: skn_range,
            expiry,
        }
    }

    /// The token text. This is a credential: do not log it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `sr` exactly as written in the token (the text the signature covers).
    pub fn resource_raw(&self) -> &str {
        &self.text[self.sr.clone()]
    }

    /// `sr` percent-decoded (either hex case), e.g. `myhub.azure-devices.net/devices/dev1`.
    pub fn resource(&self) -> Result<String> {
        percent::decode(self.resource_raw())
            .map(|s| s.into_owned())
            .map_err(|e| Error::new(ErrorKind::InvalidToken, format!("field 'sr': {e}")))
    }

    /// `skn` percent-decoded, present only for tokens signed with a policy key.
    pub fn key_name(&self) -> Option<String> {
        let raw = &self.text[self.skn.clone()?];
        Some(percent::decode(raw).map_or_else(|_| raw.to_owned(), |s| s.into_owned()))
    }

    /// `se`: the expiry in seconds since the Unix epoch.
    pub fn expiry_secs(&self) -> u64 {
        self.expiry
    }

    /// `se` as a point in time (a time past what the platform can hold reads as the last
    /// second of the year 9999).
    pub fn expiry(&self) -> SystemTime {
        const END_OF_9999: u64 = 253_402_300_799;
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.expiry))
            .unwrap_or_else(|| UNIX_EPOCH + Duration::from_secs(END_OF_9999))
    }

    /// Whether the token has expired at `now` (IoT Hub rejects tokens whose `se` is in the
    /// past; c-util `sastoken.c::SASToken_Validate`).
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expiry() < now
    }

    /// Whether `key` produced this token's signature, compared in constant time.
    ///
    /// The HMAC is computed over `sr` and `se` as written, so tokens from every SDK verify:
    /// uppercase, lowercase or unencoded `sr` alike (protocol.md §1.5). The signature may be
    /// percent-encoded in either hex case, or not at all, and padded or not.
    pub fn verify(&self, key: &SasKey) -> bool {
        let Ok(sig) = percent::decode(&self.text[self.sig.clone()]) else {
            return false;
        };
        let Ok(sig) = LENIENT_BASE64.decode(sig.as_bytes()) else {
            return false;
        };
        key.sign_parts(self.resource_raw(), &self.text[self.se.clone()])
            .verify_slice(&sig)
            .is_ok()
    }
}

fn push_range(text: &mut String, write: impl FnOnce(&mut String)) -> Range<usize> {
    let start = text.len();
    write(text);
    start..text.len()
}

/// Percent-encodes the three base64 characters that need it (`+ / =`), uppercase hex.
fn push_encoded_base64(sig: &str, out: &mut String) {
    for c in sig.chars() {
        match c {
            '+' => out.push_str("%2B"),
            '/' => out.push_str("%2F"),
            '=' => out.push_str("%3D"),
            c => out.push(c),
        }
    }
}

fn invalid_token(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidToken, detail)
}

impl FromStr for SasToken {
    type Err = Error;

    /// Parses a token. Errors name the field at fault, never its value.
    fn from_str(text: &str) -> Result<Self> {
        let fields = text.strip_prefix(PREFIX).ok_or_else(|| {
            invalid_token("a token must start with 'SharedAccessSignature' and one space")
        })?;
        if fields.is_empty() || fields.chars().any(char::is_whitespace) {
            return Err(invalid_token(
                "the fields after 'SharedAccessSignature ' must be one run without spaces",
            ));
        }
        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        let mut start = PREFIX.len();
        for part in fields.split('&') {
            let part_start = start;
            start += part.len() + 1;
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| invalid_token("a token field has no '='"))?;
            let value_start = part_start + name.len() + 1;
            let range = value_start..value_start + value.len();
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                other => {
                    return Err(invalid_token(format!(
                        "unknown field '{}'",
                        other.escape_debug()
                    )));
                }
            };
            if slot.replace(range).is_some() {
                return Err(invalid_token(format!("field '{name}' appears twice")));
            }
        }
        let require = |field: Option<Range<usize>>, name: &str| {
            field
                .filter(|r| !r.is_empty())
                .ok_or_else(|| invalid_token(format!("field '{name}' is missing or empty")))
        };
        let sr = require(sr, "sr")?;
        let sig = require(sig, "sig")?;
        let se = require(se, "se")?;
        let se_text = &text[se.clone()];
        if !se_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid_token(
                "field 'se' must be seconds since the Unix epoch",
            ));
        }
        let expiry = se_text
            .parse::<u64>()
            .map_err(|_| invalid_token("field 'se' is out of range"))?;
        Ok(SasToken {
            text: text.to_owned(),
            sr,
            sig,
            se,
            skn,
            expiry,
        })
    }
}

impl fmt::Display for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("sr", &self.resource_raw())
            .field("sig", &"<redacted>")
            .field("se", &self.expiry)
            .field("skn", &self.key_name())
            .finish()
    }
}
