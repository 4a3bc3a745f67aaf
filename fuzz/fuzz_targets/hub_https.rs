//! The hub's HTTPS router (REST API and WebSocket routes): any method, path, query, headers
//! and body give a response, never a panic or a hang, and never a 5xx other than the ones the
//! hub answers on purpose (none: a malformed request is the client's error).
//!
//! Input layout: byte 0 picks the method, byte 1 the `Authorization` header (none, a valid
//! `iothubowner` token, a valid device token, or the input's own), then text lines: the path
//! and query, then `name: value` headers up to an empty line, then the body.
#![no_main]

use iothub::local_hub::fuzzing::{HttpsInput, device_token, https_request, owner_token};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 8] = ["GET", "PUT", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"];

fuzz_target!(|data: &[u8]| {
    let [method, auth, rest @ ..] = data else {
        return;
    };
    let mut input = HttpsInput {
        method: METHODS[usize::from(*method) % METHODS.len()].to_owned(),
        ..HttpsInput::default()
    };
    match auth % 4 {
        1 => input
            .headers
            .push(("authorization".into(), owner_token().into_bytes())),
        2 => input
            .headers
            .push(("authorization".into(), device_token().into_bytes())),
        _ => {}
    }
    let mut lines = rest.split(|&b| b == b'\n');
    let Some(uri) = lines.next() else {
        return;
    };
    let Ok(uri) = std::str::from_utf8(uri) else {
        return;
    };
    input.uri = uri.to_owned();
    let mut consumed = uri.len() + 1;
    for line in lines.by_ref() {
        consumed += line.len() + 1;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii().to_vec();
        input.headers.push((name.trim().to_owned(), value));
    }
    input.body = rest.get(consumed..).unwrap_or_default().to_vec();
    if let Some(status) = https_request(&input) {
        assert!(status < 500, "{status} for {input:?}");
    }
});
