//! Shared access signatures: the key, the token, and the resource a token grants.
//!
//! A token is `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]`
//! where `signature = base64(HMAC-SHA256(base64decode(key), sr + "\n" + se))`, computed over the
//! `sr` text exactly as written in the token (Microsoft Learn, "Control access to IoT Hub
//! with shared access signatures", section "Security tokens"; node-device
//! `common/core/src/authorization.ts`, `hmacHash`). We write the fields in the order the Python and C SDKs use
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

/// The token prefix, with its single space (node-device
/// `common/core/src/shared_access_signature.ts`, `SharedAccessSignature.parse`, which splits the
/// prefix off at the whitespace).
const PREFIX: &str = "SharedAccessSignature ";

/// Standard base64 that, like Node's `Buffer.from(s, 'base64')`, accepts missing padding and
/// non-zero trailing bits (node-device `common/core/src/authorization.ts`, `hmacHash`, decodes
/// with `Buffer.from(key, 'base64')`, and Node's test vectors sign with the key text `"key"`),
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
/// computed once, so signing a token costs the SHA-256 blocks of the message and no key set-up. `Debug`
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
    /// a device or module key, whose tokens carry no `skn` (Microsoft Learn, "Control access
    /// to IoT Hub with shared access signatures": `skn` is absent for tokens that refer to
    /// device-registry credentials).
    pub fn token(&self, resource: &ResourceUri, key_name: Option<&str>, expiry: u64) -> SasToken {
        let mut se = itoa::Buffer::new();
        let se = se.format(expiry);
        let digest: [u8; 32] = self
            .sign_parts(&resource.encoded, se)
            .finalize()
            .into_bytes()
            .into();
        let mut sig = [0u8; ESCAPED_SIGNATURE_MAX];
        let len = escaped_base64_signature(&digest, &mut sig);
        SasToken::assemble(&resource.encoded, &sig[..len], se, expiry, key_name)
    }
}

/// The longest escaped signature: 43 base64 characters that could all be `+` or `/`, each
/// written as three, and the `=` padding as `%3D`.
const ESCAPED_SIGNATURE_MAX: usize = 43 * 3 + 3;

/// Writes base64(`digest`) with `+ / =` percent-encoded (`%2B %2F %3D`) in one pass: the hot
/// path of every token, where encoding and then escaping would cost more than the rest of the
/// token (see `benches/sas.rs`).
fn escaped_base64_signature(digest: &[u8; 32], out: &mut [u8; ESCAPED_SIGNATURE_MAX]) -> usize {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut len = 0;
    let mut put = |sextet: u32, out: &mut [u8; ESCAPED_SIGNATURE_MAX]| {
        let sextet = (sextet & 0x3f) as usize;
        if sextet >= 62 {
            out[len..len + 3].copy_from_slice(if sextet == 62 { b"%2B" } else { b"%2F" });
            len += 3;
        } else {
            out[len] = ALPHABET[sextet];
            len += 1;
        }
    };
    let mut chunks = digest.chunks_exact(3);
    for chunk in &mut chunks {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        put(n >> 18, out);
        put(n >> 12, out);
        put(n >> 6, out);
        put(n, out);
    }
    // 32 = 10 × 3 + 2: two bytes left, three characters and one `=`.
    let rest = chunks.remainder();
    let n = (u32::from(rest[0]) << 16) | (u32::from(rest[1]) << 8);
    put(n >> 18, out);
    put(n >> 12, out);
    put(n >> 6, out);
    out[len..len + 3].copy_from_slice(b"%3D");
    len + 3
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
        let mut escaped = Vec::with_capacity(signature_base64.len() * 3);
        push_escaped_base64(signature_base64.as_bytes(), &mut escaped);
        Self::assemble(
            &resource.encoded,
            &escaped,
            se.format(expiry),
            expiry,
            key_name,
        )
    }

    /// Writes the token text in one buffer: the hot path of every connect and renewal, so it
    /// copies runs of bytes rather than pushing characters (see `benches/sas.rs`).
    fn assemble(
        sr: &str,
        escaped_sig: &[u8],
        se: &str,
        expiry: u64,
        key_name: Option<&str>,
    ) -> Self {
        let mut text = Vec::with_capacity(
            PREFIX.len()
                + "sr=&sig=&se=".len()
                + sr.len()
                + escaped_sig.len()
                + se.len()
                + key_name.map_or(0, |k| "&skn=".len() + k.len() * 3),
        );
        text.extend_from_slice(PREFIX.as_bytes());
        text.extend_from_slice(b"sr=");
        let sr_range = text.len()..text.len() + sr.len();
        text.extend_from_slice(sr.as_bytes());
        text.extend_from_slice(b"&sig=");
        let sig_range = text.len()..text.len() + escaped_sig.len();
        text.extend_from_slice(escaped_sig);
        text.extend_from_slice(b"&se=");
        let se_range = text.len()..text.len() + se.len();
        text.extend_from_slice(se.as_bytes());
        let skn_range = key_name.map(|name| {
            text.extend_from_slice(b"&skn=");
            let start = text.len();
            text.extend_from_slice(percent::encode(name).as_bytes());
            start..text.len()
        });
        SasToken {
            text: String::from_utf8(text).expect("built from UTF-8 pieces and ASCII escapes"),
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
    /// uppercase, lowercase (the Learn page's examples) or unencoded `sr` (c-sdk, through
    /// azure-c-shared-utility `sastoken.c`, `SASToken_CreateString`) alike. The signature may be
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

/// Appends base64 text with the three characters that need it percent-encoded (`+ / =` as
/// `%2B %2F %3D`).
fn push_escaped_base64(base64: &[u8], out: &mut Vec<u8>) {
    out.reserve(base64.len() * 3);
    for &c in base64 {
        match c {
            b'+' => out.extend_from_slice(b"%2B"),
            b'/' => out.extend_from_slice(b"%2F"),
            b'=' => out.extend_from_slice(b"%3D"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_signature_matches_base64_then_escaping() {
        let mut digests = vec![[0u8; 32], [0xff; 32], [0xfb; 32], [0x3e; 32]];
        digests.extend(
            (0..=255u8).map(|b| std::array::from_fn(|i| b.wrapping_mul(i as u8 + 11) ^ 0x5a)),
        );
        for digest in digests {
            let mut out = [0u8; ESCAPED_SIGNATURE_MAX];
            let len = escaped_base64_signature(&digest, &mut out);
            let mut expected = Vec::new();
            let base64 = base64::engine::general_purpose::STANDARD.encode(digest);
            push_escaped_base64(base64.as_bytes(), &mut expected);
            assert_eq!(&out[..len], &expected[..]);
        }
    }

    #[test]
    fn signature_escaping_encodes_exactly_plus_slash_and_equals() {
        let mut out = Vec::new();
        push_escaped_base64(b"ab+/cd==", &mut out);
        assert_eq!(out, b"ab%2B%2Fcd%3D%3D");
        out.clear();
        push_escaped_base64(b"+", &mut out);
        assert_eq!(out, b"%2B");
        out.clear();
        push_escaped_base64(b"plain", &mut out);
        assert_eq!(out, b"plain");
    }
}
