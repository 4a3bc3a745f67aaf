//! Property bags and the MQTT topics that carry them: decoding never panics, and a decoded
//! bag encodes to text that decodes to an equal bag (except pairs with an empty key and no
//! value, which the text form cannot carry).
#![no_main]

use bytes::Bytes;
use iothub::protocol::{PropertyBag, parse_c2d_topic, parse_telemetry_topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(bag) = PropertyBag::decode(text) {
        if !bag.iter().any(|(key, _)| key.is_empty()) {
            let encoded = bag.encode();
            let again = PropertyBag::decode(&encoded)
                .unwrap_or_else(|e| panic!("re-decoding {encoded:?} failed: {e}"));
            assert_eq!(again, bag, "round trip through {encoded:?}");
        }
    }

    let payload = Bytes::from_static(b"payload");
    let _ = parse_c2d_topic(
        &format!("devices/d/messages/devicebound/{text}"),
        payload.clone(),
    );
    let _ = parse_telemetry_topic(&format!("devices/d/messages/events/{text}"), payload.clone());
    // The raw text as a whole topic too, to reach the topic splitting itself.
    let _ = parse_c2d_topic(text, payload.clone());
    let _ = parse_telemetry_topic(text, payload);
});
