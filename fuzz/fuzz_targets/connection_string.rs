//! Device and service connection strings: parsing never panics; a parsed string writes back
//! text that parses to an equal value; and an error never repeats the value given after
//! `SharedAccessKey=` (when that value is at least 8 characters long).
#![no_main]

use std::error::Error as _;
use std::fmt::Debug;
use std::str::FromStr;

use iothub::{DeviceConnectionString, Error, ServiceConnectionString};
use libfuzzer_sys::fuzz_target;

const KEY_PREFIX: &str = "SharedAccessKey=";
const MIN_SECRET_CHARS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check::<DeviceConnectionString>(text);
    check::<ServiceConnectionString>(text);
});

fn check<T>(text: &str)
where
    T: FromStr<Err = Error> + ToString + PartialEq + Debug,
{
    match text.parse::<T>() {
        Ok(cs) => {
            let written = cs.to_string();
            let again = written.parse::<T>().unwrap_or_else(|e| {
                panic!("{written:?} (written from {text:?}) does not parse again: {e}")
            });
            assert_eq!(again, cs, "round trip of {text:?} through {written:?}");
        }
        Err(err) => {
            assert_no_secret(text, &err.to_string(), |t| {
                t.parse::<T>().err().map(|e| e.to_string())
            }, "Display");
            // Also the whole chain, as `{:#}`-style loggers print it.
            assert_no_secret(text, &chain(&err), |t| t.parse::<T>().err().map(|e| chain(&e)), "source chain");
        }
    }
}

/// The error and its sources, joined.
fn chain(err: &Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Panics when `rendered` (the error text for `text`) contains a value that follows
/// `SharedAccessKey=` in `text`.
///
/// To tell a real leak from a coincidence (the same characters also appear in the error's
/// fixed wording, or elsewhere in the input, for example inside an unknown key name that the
/// error rightly quotes), the input is parsed again with that one value replaced by a variant
/// of the same length and base64 character classes: if the new error still contains the
/// original value, those characters did not come from the secret, and this is not reported.
fn assert_no_secret(
    text: &str,
    rendered: &str,
    render: impl Fn(&str) -> Option<String>,
    what: &str,
) {
    for (at, _) in text.match_indices(KEY_PREFIX) {
        let start = at + KEY_PREFIX.len();
        let end = text[start..].find(';').map_or(text.len(), |i| start + i);
        let secret = &text[start..end];
        if secret.chars().count() < MIN_SECRET_CHARS || !rendered.contains(secret) {
            continue;
        }
        let variant = variant_of(secret);
        let modified = format!("{}{variant}{}", &text[..start], &text[end..]);
        let coincidence = variant != secret && render(&modified).is_some_and(|r| r.contains(secret));
        assert!(
            coincidence,
            "error text ({what}) leaks the SharedAccessKey value {secret:?}\n  input: {text:?}\n  error: {rendered:?}"
        );
    }
}

/// Another character of the same class: base64 letters and digits stay base64, `+` and `/`
/// swap, `=` (padding) stays, and anything else becomes another non-base64 character (of the
/// same UTF-8 length for non-ASCII), so the variant is exactly as (in)valid as the original.
fn rotate(c: char) -> char {
    match c {
        'A'..='Y' | 'a'..='y' | '0'..='8' => char::from(c as u8 + 1),
        'Z' => 'A',
        'z' => 'a',
        '9' => '0',
        '+' => '/',
        '/' => '+',
        '=' => '=',
        '!' => '?',
        c if c.is_ascii() => '!',
        c => char::from_u32(c as u32 ^ 1).unwrap_or('!'),
    }
}

/// The value with every character changed; a value of only `=` (never valid base64) becomes
/// `!`s.
fn variant_of(secret: &str) -> String {
    if secret.chars().all(|c| c == '=') {
        return "!".repeat(secret.len());
    }
    secret.chars().map(rotate).collect()
}
