//! `SasToken` parsing: never panics; a parsed token writes back its exact input text and
//! reparses to an equal token; its accessors and `verify` never panic.
#![no_main]

use iothub::{SasKey, SasToken};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = text.parse::<SasToken>() else {
        return;
    };
    let written = token.to_string();
    assert_eq!(written, text, "Display must give back the exact token text");
    let again: SasToken = written
        .parse()
        .expect("a token's own text must parse again");
    assert_eq!(again, token, "reparsing must give an equal token");

    let _ = token.resource();
    let _ = token.key_name();
    let _ = token.expiry();
    let _ = token.verify(&SasKey::from_bytes(b"k"));
    let _ = format!("{token:?}");
});
