//! Percent-encoding as IoT Hub uses it in property bags and SAS tokens.
//!
//! Encoding leaves only RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`) as they are
//! and writes everything else as `%XX` with uppercase hex, as Python's
//! `urllib.parse.quote(s, safe="")` does (py-device `mqtt_topic_iothub.py`,
//! `common/auth/sastoken.py`). Decoding accepts either hex case and never turns `+` into a
//! space (the NOTE on `quote_plus` at the top of py-device `mqtt_topic_iothub.py`), but rejects a `%` that is not followed by two hex digits.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but the unreserved characters `- . _ ~` and ASCII alphanumerics.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Appends the percent-encoded form of `text` to `out`.
pub(crate) fn encode_into(text: &str, out: &mut String) {
    for piece in utf8_percent_encode(text, COMPONENT) {
        out.push_str(piece);
    }
}

/// The percent-encoded form of `text`.
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    encode_into(text, &mut out);
    out
}

/// Why a percent-encoded text could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A `%` at this byte offset is not followed by two hex digits.
    BadEscape(usize),
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadEscape(at) => {
                write!(f, "'%' at byte {at} is not followed by two hex digits")
            }
            DecodeError::NotUtf8 => f.write_str("percent-decoded bytes are not UTF-8"),
        }
    }
}

/// Decodes `%XX` escapes (either hex case). `+` stays `+`. Borrows when there is no escape;
/// otherwise one pass into a buffer of the text's length (a device decodes every received
/// message's properties).
pub(crate) fn decode(text: &str) -> Result<Cow<'_, str>, DecodeError> {
    let bytes = text.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%') else {
        return Ok(Cow::Borrowed(text));
    };
    let hex = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut at = first;
    while let Some(&b) = bytes.get(at) {
        if b != b'%' {
            out.push(b);
            at += 1;
            continue;
        }
        match (hex(at + 1), hex(at + 2)) {
            // Two hex digits: at most 0xFF, so the cast is exact.
            (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
            _ => return Err(DecodeError::BadEscape(at)),
        }
        at += 3;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| DecodeError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reserved_and_non_ascii_with_uppercase_hex() {
        let mut out = String::new();
        encode_into("a/b&c=d%e f+g$h~i-j.k_l é", &mut out);
        assert_eq!(out, "a%2Fb%26c%3Dd%25e%20f%2Bg%24h~i-j.k_l%20%C3%A9");
    }

    #[test]
    fn decodes_either_case_and_keeps_plus() {
        assert_eq!(decode("%2f%2F+%24$").unwrap(), "//+$$");
        assert!(matches!(decode("plain").unwrap(), Cow::Borrowed("plain")));
    }

    #[test]
    fn rejects_bad_escapes_and_bad_utf8() {
        assert_eq!(decode("ab%zz"), Err(DecodeError::BadEscape(2)));
        assert_eq!(decode("%4"), Err(DecodeError::BadEscape(0)));
        assert_eq!(decode("x%"), Err(DecodeError::BadEscape(1)));
        assert_eq!(decode("%FF"), Err(DecodeError::NotUtf8));
    }
}
