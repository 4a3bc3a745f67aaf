//! Benchmarks for SAS token signing and the cloud-to-device property bag.
//!
//! Group `sas` (one run, one group, so the ratios between its members are comparable):
//!
//! - `full_device_token`: `SasKey::token` for a device resource, from a key parsed once and a
//!   `ResourceUri` built once: HMAC-SHA256 of `sr + "\n" + se`, base64, percent-encoding of
//!   the signature, and assembly of the whole token text (`SharedAccessSignature sr=…`).
//! - `naive_baseline`: what a naive implementation does on every call: base64-decode the key
//!   text, key a fresh `Hmac<Sha256>`, `format!` and percent-encode the resource URI,
//!   `format!` the string to sign, HMAC it, base64-encode and percent-encode the signature,
//!   and `format!` the token.
//! - `bare_hmac_floor`: only the HMAC-SHA256 of the string-to-sign bytes from a precomputed
//!   (already keyed) `Hmac<Sha256>` state: the cryptographic floor any implementation pays.
//!
//! Goals: `full_device_token` ≤ 1.5 × `bare_hmac_floor` (everything but the HMAC is cheap),
//! and `full_device_token` at least 2 × faster than `naive_baseline`.
//!
//! Group `property_bag`:
//!
//! - `c2d_topic_decode`: `protocol::parse_c2d_topic` on a realistic cloud-to-device topic
//!   (system properties `$.mid`, `$.to`, `$.cid`, `$.ct`, `$.ce`, plus `iothub-ack` and two
//!   application properties) with a small payload.
//! - `c2d_topic_encode`: `protocol::c2d_topic` for the decoded message.
//!
//! Run with `cargo bench -p iothub-benches --bench sas`.

use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use iothub::SasKey;
use iothub::auth::ResourceUri;
use iothub::protocol::{c2d_topic, parse_c2d_topic};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

const KEY: &str = "cGFzc3dvcmQ=";
const HOST: &str = "myiothub.azure-devices.net";
const DEVICE_ID: &str = "my_device";
const EXPIRY: u64 = 1578941692;
const STRING_TO_SIGN: &[u8] = b"myiothub.azure-devices.net%2Fdevices%2Fmy_device\n1578941692";
const EXPECTED_TOKEN: &str = "SharedAccessSignature sr=myiothub.azure-devices.net%2Fdevices%2Fmy_device\
     &sig=DTUpME%2Fc%2BX9Cvy%2B3r0ZNtHukhBGykBpAx8L30%2BISNuY%3D&se=1578941692";

/// Python's `quote(uri, safe="")`: everything but unreserved characters, as the crate encodes.
const URI_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const C2D_TOPIC: &str = "devices/my-device-1/messages/devicebound/%24.mid=aaefb161-9f06-4d34-8c72-90a10cbebabe&%24.to=%2Fdevices%2Fmy-device-1%2Fmessages%2FdeviceBound&%24.cid=correlation_1&%24.ct=application%2Fjson&%24.ce=utf-8&iothub-ack=full&testProperty=PropMsg_1&temperature=45";

/// A token the naive way: every step redone and every intermediate allocated on each call.
fn naive_token(key_text: &str, host: &str, device_id: &str, expiry: u64) -> String {
    let key_bytes = STANDARD.decode(key_text).expect("valid base64 key");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes).expect("any key length");
    let sr = utf8_percent_encode(&format!("{host}/devices/{device_id}"), URI_SET).to_string();
    let se = expiry.to_string();
    let to_sign = format!("{sr}\n{se}");
    mac.update(to_sign.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC).to_string();
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}")
}

fn sas(c: &mut Criterion) {
    let key: SasKey = KEY.parse().expect("valid key");
    let resource = ResourceUri::device(HOST, DEVICE_ID);
    let state = Hmac::<Sha256>::new_from_slice(&STANDARD.decode(KEY).expect("valid base64"))
        .expect("any key length");

    // The three measure the same work: check they agree before timing them.
    assert_eq!(key.token(&resource, None, EXPIRY).as_str(), EXPECTED_TOKEN);
    assert_eq!(naive_token(KEY, HOST, DEVICE_ID, EXPIRY), EXPECTED_TOKEN);
    let mut m = state.clone();
    m.update(STRING_TO_SIGN);
    assert_eq!(
        m.finalize().into_bytes().as_slice(),
        key.sign(STRING_TO_SIGN)
    );

    let mut group = c.benchmark_group("sas");
    group.bench_function("full_device_token", |b| {
        b.iter(|| {
            let token = black_box(&key).token(black_box(&resource), None, black_box(EXPIRY));
            black_box(token.as_str().len());
            token
        })
    });
    group.bench_function("naive_baseline", |b| {
        b.iter(|| {
            naive_token(
                black_box(KEY),
                black_box(HOST),
                black_box(DEVICE_ID),
                black_box(EXPIRY),
            )
        })
    });
    group.bench_function("bare_hmac_floor", |b| {
        b.iter(|| {
            let mut m = black_box(&state).clone();
            m.update(black_box(STRING_TO_SIGN));
            m.finalize()
        })
    });
    group.finish();
}

fn property_bag(c: &mut Criterion) {
    let payload = Bytes::from_static(br#"{"temperature":45,"humidity":60}"#);
    let (device_id, message) =
        parse_c2d_topic(C2D_TOPIC, payload.clone()).expect("valid c2d topic");
    assert_eq!(device_id, "my-device-1");

    let mut group = c.benchmark_group("property_bag");
    group.bench_function("c2d_topic_decode", |b| {
        b.iter(|| parse_c2d_topic(black_box(C2D_TOPIC), black_box(&payload).clone()))
    });
    group.bench_function("c2d_topic_encode", |b| {
        b.iter(|| c2d_topic(black_box("my-device-1"), black_box(&message)))
    });
    group.finish();
}

criterion_group!(benches, sas, property_bag);
criterion_main!(benches);
