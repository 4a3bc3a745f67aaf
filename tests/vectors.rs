//! Every SAS, connection-string and property-bag vector of `tests/data/vectors.json`, checked
//! byte for byte. Each entry of the file names the
//! official SDK test or document it comes from in its `source` field, and each assertion
//! message below repeats that source.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use iothub::auth::{
    DeviceConnectionString, DeviceCredential, ResourceUri, SasKey, SasToken,
    ServiceConnectionString, string_to_sign,
};
use iothub::protocol::{
    DESIRED_PATCH_SUBSCRIPTION, METHOD_REQUEST_SUBSCRIPTION, PropertyBag, ReceivedTopic,
    TWIN_RESPONSE_SUBSCRIPTION, TwinRequestKind, c2d_subscription, c2d_topic,
    classify_received_topic, input_subscription, method_response_topic, parse_c2d_topic,
    parse_desired_patch_topic, parse_input_topic, parse_method_request_topic,
    parse_method_response_topic, parse_twin_request_topic, parse_twin_response_topic,
    twin_get_topic,
};
use iothub::{Ack, ErrorKind, Message};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("data/vectors.json")).expect("vectors.json is JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn src(v: &Value) -> String {
    v["source"].as_str().unwrap_or("?").to_owned()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn sas_hmac_vectors() {
    let v = vectors();
    let cases = v["sas_hmac"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let key = SasKey::from_base64(s(case, "key_b64")).unwrap();
        let sig = key.sign(s(case, "message").as_bytes());
        assert_eq!(
            STANDARD.encode(sig),
            s(case, "expected_signature_b64"),
            "{}",
            src(case)
        );
        // The key decodes to the bytes the vector lists: same HMAC as the raw bytes.
        let raw = SasKey::from_bytes(&unhex(s(case, "key_bytes_hex")));
        assert_eq!(raw.sign(b"probe"), key.sign(b"probe"), "{}", src(case));
    }
}

#[test]
fn sas_hmac_vectors_as_whole_tokens() {
    let v = vectors();
    let by_id = |id: &str| {
        v["sas_hmac"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap()
            .clone()
    };
    // Node device token (node-device device/core/test/_shared_access_signature_test.js).
    let case = by_id("node-device-sas");
    let key = SasKey::from_base64(s(&case, "key_b64")).unwrap();
    let token = key.token(&ResourceUri::device("host", "device"), None, 12345);
    assert_eq!(token.as_str(), s(&case, "expected_token"), "{}", src(&case));

    // Node service token (node-hub test/_shared_access_signature_test.js). Node writes `skn`
    // before `se`; we write Python's order, so the signature must match and the Node text
    // must verify with the same key.
    let case = by_id("node-service-sas");
    let key = SasKey::from_base64(s(&case, "key_b64")).unwrap();
    let ours = key.token(&ResourceUri::service("host"), Some("policy"), 12345);
    let theirs: SasToken = s(&case, "expected_token").parse().unwrap();
    assert_eq!(
        ours.as_str(),
        "SharedAccessSignature sr=host&sig=88JmrIsVYOGmRSjCO1x1LLbv0K001Gikh1rjfJqbQXA%3D&se=12345&skn=policy",
        "{}",
        src(&case)
    );
    assert!(theirs.verify(&key), "{}", src(&case));
    assert_eq!(theirs.key_name().as_deref(), Some("policy"));

    // Node create("uri", 12345): the signature, URL-encoded, as in the token.
    let case = by_id("node-SharedAccessSignature.create-uri");
    let key = SasKey::from_base64(s(&case, "key_b64")).unwrap();
    let token = key.token(&ResourceUri::from_encoded("uri"), None, 12345);
    assert!(
        token.as_str().contains(&format!(
            "&sig={}&",
            s(&case, "expected_sig_field_urlencoded")
        )),
        "{}",
        src(&case)
    );
}

#[test]
fn sas_key_decoding_vectors() {
    let v = vectors();
    for case in v["sas_key_decoding"].as_array().unwrap() {
        let text = s(case, "key_b64");
        match case["decoded_hex"].as_str() {
            Some(decoded) => {
                let key = SasKey::from_base64(text).unwrap();
                let raw = SasKey::from_bytes(&unhex(decoded));
                assert_eq!(key.sign(b"m"), raw.sign(b"m"), "{}", src(case));
            }
            None => {
                let err = SasKey::from_base64(text).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidKey, "{}", src(case));
                assert!(!err.to_string().contains(text), "{}", src(case));
            }
        }
    }
}

fn resource_of(case: &Value) -> ResourceUri {
    match case["module_id"].as_str() {
        Some(module) => ResourceUri::module(s(case, "hub"), s(case, "device_id"), module),
        None => ResourceUri::device(s(case, "hub"), s(case, "device_id")),
    }
}

#[test]
fn sas_string_to_sign_vectors() {
    let v = vectors();
    for case in v["sas_string_to_sign"].as_array().unwrap() {
        let expiry = case["expiry"].as_u64().unwrap();
        let resource = match case["resource"].as_str() {
            Some(raw) => ResourceUri::from_encoded(raw),
            None => resource_of(case),
        };
        assert_eq!(
            string_to_sign(resource.as_str(), expiry),
            s(case, "expected"),
            "{}",
            src(case)
        );
    }
}

#[test]
fn sas_token_format_vectors() {
    let v = vectors();
    let mut checked = 0;
    for case in v["sas_token_format"].as_array().unwrap() {
        if let Some(name) = case["keyName"].as_str() {
            // Node encodes the policy name (common/core/test/_shared_access_signature_test.js).
            let token = SasToken::from_parts(&ResourceUri::service("h"), "c2ln", 1, Some(name));
            assert!(
                token
                    .as_str()
                    .ends_with(&format!("&skn={}", s(case, "expected_skn"))),
                "{}",
                src(case)
            );
            assert_eq!(token.key_name().as_deref(), Some(name));
            checked += 1;
            continue;
        }
        let token = SasToken::from_parts(
            &resource_of(case),
            s(case, "signature_b64"),
            case["expiry"].as_u64().unwrap(),
            case["key_name"].as_str(),
        );
        assert_eq!(token.as_str(), s(case, "expected"), "{}", src(case));
        let parsed: SasToken = s(case, "expected").parse().unwrap();
        assert_eq!(parsed, token, "{}", src(case));
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn sas_parse_vectors() {
    let v = vectors();
    for case in v["sas_parse"].as_array().unwrap() {
        let token = s(case, "token");
        let expect = s(case, "expect");
        let result = token.parse::<SasToken>();
        if expect.starts_with("ok") {
            // `se=expiry` is a placeholder in the Node test; we require a number, so check
            // the order-free parse with a numeric expiry instead.
            let numeric = token.replace("se=expiry", "se=12345");
            let parsed: SasToken = numeric
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
            assert_eq!(parsed.resource_raw(), "audience", "{}", src(case));
            assert_eq!(parsed.key_name().as_deref(), Some("keyname"));
            assert_eq!(parsed.expiry_secs(), 12345);
        } else if expect.contains("service parse") {
            // Valid as a device token; a service token must name its policy, which the
            // service client checks (no skn here).
            let parsed: SasToken = token.replace("se=expiry", "se=1").parse().unwrap();
            assert_eq!(parsed.key_name(), None, "{}", src(case));
        } else {
            let err = result.expect_err(&src(case));
            assert_eq!(err.kind(), ErrorKind::InvalidToken, "{}", src(case));
            // The same failure with a numeric expiry, so that the missing field is the cause.
            let numeric = token.replace("se=expiry", "se=1");
            assert!(numeric.parse::<SasToken>().is_err(), "{}", src(case));
        }
    }
}

#[test]
fn sas_doc_examples_parse_and_keep_their_text() {
    let v = vectors();
    for case in v["sas_doc_examples"].as_array().unwrap() {
        let text = s(case, "token");
        let token: SasToken = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
        assert_eq!(token.to_string(), text, "{}", src(case));
        assert!(
            token
                .resource()
                .unwrap()
                .starts_with("myhub.azure-devices.net")
        );
        let policy =
            s(case, "kind").starts_with("service") || s(case, "kind").starts_with("policy");
        assert_eq!(token.key_name().is_some(), policy, "{}", src(case));
    }
}

#[test]
fn sas_derived_vectors_sign_and_verify() {
    let v = vectors();
    for case in v["sas_derived"].as_array().unwrap() {
        let key = SasKey::from_base64(s(case, "key_b64")).unwrap();
        let sr = s(case, "sr");
        let se: u64 = s(case, "se").parse().unwrap();
        assert_eq!(string_to_sign(sr, se), s(case, "string_to_sign"));
        let policy = s(case, "token").contains("&skn=");
        let token = key.token(
            &ResourceUri::from_encoded(sr),
            policy.then_some("iothubowner"),
            se,
        );
        assert_eq!(token.as_str(), s(case, "token"), "{}", s(case, "id"));
        let parsed: SasToken = s(case, "token").parse().unwrap();
        assert!(parsed.verify(&key), "{}", s(case, "id"));
        assert!(
            !parsed.verify(&SasKey::from_bytes(b"other")),
            "{}",
            s(case, "id")
        );
        assert_eq!(
            parsed.resource().unwrap().to_lowercase(),
            sr.replace("%2F", "/").replace("%2f", "/").to_lowercase()
        );
    }
    // Our resource encoding is the uppercase one (Python's quote(uri, safe="")).
    assert_eq!(
        ResourceUri::device("myiothub.azure-devices.net", "my_device").as_str(),
        "myiothub.azure-devices.net%2Fdevices%2Fmy_device"
    );
}

#[test]
fn valid_connection_strings() {
    let v = vectors();
    let cases = v["connection_strings"]["valid"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let text = s(case, "cs");
        if s(case, "kind") == "service" {
            let cs: ServiceConnectionString = text
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
            assert_eq!(cs.to_string(), text, "{}", src(case));
            let parsed = &case["parsed"];
            assert_eq!(cs.host_name(), s(parsed, "HostName"));
            assert_eq!(cs.key_name(), Some(s(parsed, "SharedAccessKeyName")));
            assert!(text.parse::<DeviceConnectionString>().is_err());
            continue;
        }
        let cs: DeviceConnectionString = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
        assert_eq!(cs.to_string(), text, "written back as given: {}", src(case));
        assert_eq!(
            cs.to_string().parse::<DeviceConnectionString>().unwrap(),
            cs
        );
        let field = |key: &str| {
            text.split(';')
                .find_map(|p| p.strip_prefix(&format!("{key}=")))
        };
        assert_eq!(Some(cs.host_name()), field("HostName"), "{}", src(case));
        assert_eq!(Some(cs.device_id()), field("DeviceId"));
        assert_eq!(cs.module_id(), field("ModuleId"));
        assert_eq!(
            cs.gateway_host_name().map(|g| g.to_string()).as_deref(),
            field("GatewayHostName")
        );
        match cs.credential() {
            DeviceCredential::SharedAccessKey { key, key_name } => {
                assert_eq!(Some(key.to_base64()), field("SharedAccessKey"));
                assert_eq!(key_name.as_deref(), field("SharedAccessKeyName"));
            }
            DeviceCredential::X509 => {
                assert!(field("x509").is_some_and(|x| x.eq_ignore_ascii_case("true")))
            }
            DeviceCredential::SharedAccessSignature(_) => panic!("no vector uses a SAS"),
        }
        if let Some(parsed) = case.get("parsed") {
            assert_eq!(cs.module_id(), parsed["ModuleId"].as_str(), "{}", src(case));
        }
    }
}

#[test]
fn invalid_connection_strings() {
    let v = vectors();
    let cases = v["connection_strings"]["invalid"].as_array().unwrap();
    assert_eq!(cases.len(), 13);
    for case in cases {
        let text = s(case, "cs");
        let reason = s(case, "reason");
        let device = text
            .parse::<DeviceConnectionString>()
            .expect_err(&src(case));
        let service = text
            .parse::<ServiceConnectionString>()
            .expect_err(&src(case));
        for err in [&device, &service] {
            assert_eq!(err.kind(), ErrorKind::InvalidConnectionString, "{reason}");
            for secret in ["Zm9vYmFy", "mykeyname"] {
                if text.contains(&format!("SharedAccessKey={secret}")) {
                    assert!(!err.to_string().contains(secret), "{reason}: {err}");
                }
            }
        }
        let message = device.to_string();
        let expected = match reason {
            r if r.starts_with("Invalid key") => "unknown key 'InvalidKey'",
            r if r.starts_with("Duplicate") => "duplicate key 'HostName'",
            "missing HostName" => "missing 'HostName'",
            "missing DeviceId" => "missing 'DeviceId'",
            r if r.starts_with("Mixed") || r.contains(" and ") => "mixed authentication",
            r if r.starts_with("none of") => "needs one of",
            "Incomplete" => "missing 'DeviceId'",
            "Empty string" => "empty",
            _ => "",
        };
        assert!(message.contains(expected), "{reason}: {message}");
    }
}

#[test]
fn telemetry_topic_vectors() {
    let v = vectors();
    let mut bags = 0;
    for case in v["mqtt_telemetry_topics"].as_array().unwrap() {
        if let Some(topic) = case["topic"].as_str() {
            let device = s(case, "device_id");
            let module = case["module_id"].as_str();
            let (from, msg) = iothub::protocol::parse_telemetry_topic(topic, Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
            assert_eq!(from.device_id, device, "{}", src(case));
            assert_eq!(from.module_id.as_deref(), module, "{}", src(case));
            if case.get("app_properties_raw").is_none() {
                let built = iothub::protocol::telemetry_topic(device, module, &Message::new("x"));
                assert_eq!(built.unwrap(), topic, "{}", src(case));
            } else {
                assert_eq!(msg.property("key_two"), Some("value2"), "{}", src(case));
            }
        }
        if let Some(encodings) = case["property_bag_encoding_python"].as_array() {
            for enc in encodings {
                check_python_bag(enc, &src(case));
                bags += 1;
            }
        }
        if let Some(topics) = case["node_examples"].as_array() {
            for topic in topics {
                let (_, msg) = iothub::protocol::parse_telemetry_topic(
                    topic.as_str().unwrap(),
                    Default::default(),
                )
                .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
                assert!(msg.properties().len() >= 1, "{}", src(case));
                if topic.as_str().unwrap().contains("key%24") {
                    assert_eq!(msg.property("key$"), Some("value$"));
                    assert_eq!(msg.property("$.sub"), Some("abcd$"), "trailing '/' dropped");
                }
            }
        }
        if let Some(topic) = case["docs_example"].as_str() {
            let topic = topic.replace("{device-id}", "dev1");
            let (_, msg) = iothub::protocol::parse_telemetry_topic(&topic, Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", src(case)));
            assert_eq!(
                msg.content_type(),
                Some("application/json;charset=utf-8"),
                "raw '$' key"
            );
        }
    }
    assert_eq!(bags, 7);
}

/// Python's encoder: system properties in its order, then custom properties sorted as
/// strings (py-device `mqtt_topic_iothub.py::encode_message_properties_in_topic`).
fn check_python_bag(enc: &Value, source: &str) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut bag = PropertyBag::new();
    for key in ["on", "mid", "cid", "uid", "ct", "ce", "ifid", "exp"] {
        if let Some(value) = enc["system"].get(key) {
            bag.push(format!("$.{key}"), Some(text(value)));
        }
    }
    let mut custom: Vec<(String, String)> = enc["custom"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect();
    custom.sort();
    for (k, v) in custom {
        bag.push(k, Some(v));
    }
    let expected = s(enc, "encoded");
    assert_eq!(bag.encode(), expected, "{source}");
    assert_eq!(PropertyBag::decode(expected).unwrap(), bag, "{source}");

    // Through `Message`: the fields we model land where Python puts them.
    let (_, msg) = iothub::protocol::parse_telemetry_topic(
        &format!("devices/d/messages/events/{expected}"),
        Default::default(),
    )
    .unwrap();
    if let Some(mid) = enc["system"].get("mid") {
        assert_eq!(msg.message_id(), Some(text(mid).as_str()), "{source}");
    }
    if let Some(ifid) = enc["system"].get("ifid") {
        assert_eq!(
            msg.property("$.ifid"),
            Some(text(ifid).as_str()),
            "{source}"
        );
    }
    if enc["system"].get("on").is_none() && enc["system"].get("ifid").is_none() {
        // Without the keys we do not model, our own writer gives Python's bytes.
        let topic = iothub::protocol::telemetry_topic("d", None, &msg).unwrap();
        assert_eq!(
            topic,
            format!("devices/d/messages/events/{expected}"),
            "{source}"
        );
    }
}

fn expect_field(msg: &Message, key: &str, value: &str, source: &str) {
    let actual = match key {
        "$.mid" => msg.message_id(),
        "$.cid" => msg.correlation_id(),
        "$.uid" => msg.user_id(),
        "$.ct" => msg.content_type(),
        "$.ce" => msg.content_encoding(),
        "$.to" => msg.to(),
        "iothub-ack" => msg.ack().map(Ack::as_str),
        "$.exp" => {
            assert!(msg.expiry().is_some(), "{source}");
            return;
        }
        other => msg.property(other),
    };
    assert_eq!(actual, Some(value), "{key} in {source}");
}

#[test]
fn c2d_topic_vectors() {
    let v = vectors();
    let mut checked = 0;
    for case in v["mqtt_c2d_received"].as_array().unwrap() {
        let source = src(case);
        if let Some(filter) = case["subscribe_filter"].as_str() {
            if filter.ends_with("/messages/devicebound/#") {
                assert_eq!(c2d_subscription("my_device"), filter, "{source}");
                checked += 1;
            }
            continue;
        }
        if let Some(table) = case["docs_property_value_table"].as_object() {
            // null → `key`, empty string → `key=`, value → `key=value`.
            let bag = s(case, "docs_example").trim_start_matches("/?");
            let msg = Message::new("")
                .with_bare_property("prop1")
                .with_property("prop2", "")
                .with_property("prop3", "a string");
            let topic = c2d_topic("d", &msg).unwrap();
            assert_eq!(
                topic,
                format!("devices/d/messages/devicebound/{bag}"),
                "{source}"
            );
            assert_eq!(
                parse_c2d_topic(&topic, "".into()).unwrap().1,
                msg,
                "{source}"
            );
            assert_eq!(table["null"], "key");
            checked += 1;
            continue;
        }
        let Some(topic) = case["topic"].as_str() else {
            continue;
        };
        let payload = case["payload"].as_str().unwrap_or("").to_owned();
        let (device, msg) = parse_c2d_topic(topic, payload.clone().into())
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(msg.body(), payload.as_bytes());
        assert!(topic.starts_with(&format!("devices/{device}/")), "{source}");
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(decoded) = case["decoded"].as_object() {
            pairs.extend(
                decoded
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().into())),
            );
        }
        if let Some(raw) = case["sdk_for_c_raw_pairs"].as_array() {
            if case.get("decoded").is_none() {
                for pair in raw {
                    pairs.push((
                        pair[0].as_str().unwrap().into(),
                        pair[1].as_str().unwrap().into(),
                    ));
                }
            }
            if raw.is_empty() {
                assert_eq!(msg, Message::new(payload.clone()), "{source}");
            }
        }
        for (k, v) in &pairs {
            expect_field(&msg, k, v, &source);
        }
        if let Some(py) = case["python_message"].as_object() {
            check_python_message(&msg, py, &source);
        }
        if let Some(node) = case["node_message"].as_object() {
            if let Some(props) = node.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    assert_eq!(msg.property(k), v.as_str(), "{source}");
                }
            }
            if let Some(exp) = node.get("expiryTimeUtc") {
                let expected = time_of(exp.as_str().unwrap());
                assert_eq!(msg.expiry(), Some(expected), "{source}");
            }
        }
        // Real captures round-trip byte for byte through our hub-side writer.
        if case["real_capture"] == true {
            assert_eq!(c2d_topic(&device, &msg).unwrap(), topic, "{source}");
        }
        checked += 1;
    }
    assert_eq!(checked, 17);
}

fn time_of(text: &str) -> std::time::SystemTime {
    // Only the forms in the vectors: `YYYY-MM-DDThh:mm:ss[.fff]Z`.
    let (date, rest) = text.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let rest = rest.trim_end_matches('Z');
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146097 + doe - 719468) as u64;
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().unwrap();
    UNIX_EPOCH + Duration::new(days * 86400 + t[0] * 3600 + t[1] * 60 + t[2], nanos)
}

fn check_python_message(msg: &Message, py: &serde_json::Map<String, Value>, source: &str) {
    let field = |name: &str| py.get(name).map(|v| v.as_str());
    let checks: [(&str, Option<&str>); 6] = [
        ("message_id", msg.message_id()),
        ("correlation_id", msg.correlation_id()),
        ("user_id", msg.user_id()),
        ("content_type", msg.content_type()),
        ("content_encoding", msg.content_encoding()),
        (
            "ack",
            msg.ack().map(Ack::as_str).or(msg.property("iothub-ack")),
        ),
    ];
    for (name, actual) in checks {
        if let Some(expected) = field(name) {
            assert_eq!(actual, expected, "{name} in {source}");
        }
    }
    if let Some(exp) = field("expiry_time_utc").flatten() {
        assert_eq!(msg.expiry(), Some(time_of(exp)), "{source}");
    }
    let custom = py["custom_properties"].as_object().unwrap();
    let ours: Vec<(&str, Option<&str>)> = msg
        .properties()
        .filter(|(k, _)| *k != "iothub-ack")
        .collect();
    assert_eq!(ours.len(), custom.len(), "{source}: {ours:?}");
    for (k, v) in custom {
        assert_eq!(msg.property(k), v.as_str(), "{k} in {source}");
    }
}

#[test]
fn input_topic_name_is_not_a_c2d_topic() {
    // Module inputs have their own topic (py-device test_mqtt_topic_iothub.py); the C2D
    // reader must not mistake one for a device's C2D message.
    let v = vectors();
    let case = v["mqtt_c2d_received"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c.get("input_topic").is_some())
        .unwrap();
    let err = parse_c2d_topic(s(case, "input_topic"), Default::default()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{}", src(case));
}

fn entries<'a>(v: &'a Value, section: &str) -> &'a Vec<Value> {
    v[section]
        .as_array()
        .unwrap_or_else(|| panic!("{section} missing"))
}

#[test]
fn twin_topic_vectors() {
    let v = vectors();
    let mut checked = 0;
    for case in entries(&v, "mqtt_twin") {
        let source = src(case);
        if let Some(filters) = case["subscribe"].as_array() {
            assert_eq!(filters[0], TWIN_RESPONSE_SUBSCRIPTION, "{source}");
            assert_eq!(filters[1], DESIRED_PATCH_SUBSCRIPTION, "{source}");
            checked += 1;
            continue;
        }
        let Some(topic) = case["topic"].as_str() else {
            continue; // body examples
        };
        match case["direction"].as_str() {
            Some("device->hub") => {
                let request = parse_twin_request_topic(topic).expect(&source);
                if let Some(rid) = case["request_id"].as_str() {
                    assert_eq!(request.request_id, rid, "{source}");
                    // The builder writes the same text (py-device quotes the request id).
                    assert_eq!(twin_get_topic(rid), topic, "{source}");
                }
                let expected = if topic.contains("/GET/") {
                    TwinRequestKind::Get
                } else {
                    TwinRequestKind::PatchReported
                };
                assert_eq!(request.kind, expected, "{source}");
            }
            Some("hub->device") if topic.contains("/res/") => {
                if let Some(status) = case["python_status"].as_str() {
                    // Python returns the decoded status text ('$$$'); a status that is not a
                    // number is an InvalidTopic error here.
                    assert_eq!(status, "$$$");
                    let err = parse_twin_response_topic(topic).unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{source}");
                } else {
                    let response = parse_twin_response_topic(topic).expect(&source);
                    let parsed = &case["parsed"];
                    if let Some(status) = parsed["status"].as_u64() {
                        assert_eq!(u64::from(response.status), status, "{source}");
                    }
                    if let Some(rid) = parsed["request_id"].as_str() {
                        assert_eq!(response.request_id, rid, "{source}");
                    }
                    if let Some(version) = parsed["version"].as_str() {
                        assert_eq!(response.version, version.parse().ok(), "{source}");
                    }
                    assert!(
                        matches!(
                            classify_received_topic(topic),
                            Ok(ReceivedTopic::TwinResponse(_))
                        ),
                        "{source}"
                    );
                }
            }
            Some("hub->device") => match case["parsed"]["version"].as_str() {
                // azure-sdk-for-c uses a placeholder version ('id_one'); IoT Hub writes an
                // integer, so anything else is an InvalidTopic error here.
                Some(version) if version.parse::<u64>().is_err() => {
                    let err = parse_desired_patch_topic(topic).unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{source}");
                }
                _ => {
                    let patch = parse_desired_patch_topic(topic).expect(&source);
                    assert!(patch.version.is_some(), "{source}");
                    assert!(
                        matches!(
                            classify_received_topic(topic),
                            Ok(ReceivedTopic::DesiredPatch(_))
                        ),
                        "{source}"
                    );
                }
            },
            other => panic!("direction {other:?} in {source}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 15);
}

#[test]
fn method_topic_vectors() {
    let v = vectors();
    let mut checked = 0;
    for case in entries(&v, "mqtt_methods") {
        let source = src(case);
        if let Some(filter) = case["subscribe"].as_str() {
            assert_eq!(filter, METHOD_REQUEST_SUBSCRIPTION, "{source}");
            checked += 1;
            continue;
        }
        let Some(topic) = case["topic"].as_str() else {
            continue; // notes
        };
        match case["direction"].as_str() {
            Some("hub->device") => {
                let request = parse_method_request_topic(topic).expect(&source);
                let name = case["python_name"]
                    .as_str()
                    .or(case["parsed"]["name"].as_str());
                if let Some(name) = name {
                    assert_eq!(request.name, name, "{source}");
                }
                let rid = case["python_request_id"]
                    .as_str()
                    .or(case["parsed"]["request_id"].as_str());
                if let Some(rid) = rid {
                    assert_eq!(request.request_id, rid, "{source}");
                }
                assert!(
                    matches!(
                        classify_received_topic(topic),
                        Ok(ReceivedTopic::MethodRequest(_))
                    ),
                    "{source}"
                );
            }
            Some("device->hub") => {
                let rid = s(case, "request_id");
                let status = case["status"]
                    .as_i64()
                    .or_else(|| case["status"].as_str().and_then(|t| t.parse().ok()));
                match status {
                    Some(status) => {
                        let status = i32::try_from(status).unwrap();
                        assert_eq!(method_response_topic(status, rid), topic, "{source}");
                        let parsed = parse_method_response_topic(topic).expect(&source);
                        assert_eq!((parsed.status, parsed.request_id.as_str()), (status, rid));
                    }
                    // Python accepts any text as the status; IoT Hub wants an integer.
                    None => {
                        let err = parse_method_response_topic(topic).unwrap_err();
                        assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{source}");
                    }
                }
            }
            other => panic!("direction {other:?} in {source}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 11);
}

#[test]
fn module_input_topic_vectors() {
    let v = vectors();
    let mut checked = 0;
    for case in entries(&v, "mqtt_module_inputs") {
        let source = src(case);
        if let Some(filter) = case["subscribe_filter"].as_str() {
            let built = input_subscription(s(case, "device_id"), s(case, "module_id"));
            assert_eq!(built, filter, "{source}");
        } else if let Some(topic) = case["not_input_topic"].as_str() {
            let err = parse_input_topic(topic, Default::default()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{source}");
            assert_eq!(
                classify_received_topic(topic).unwrap(),
                ReceivedTopic::Other
            );
        } else {
            let topic = s(case, "topic");
            let (to, input, message) = parse_input_topic(topic, "x".into()).expect(&source);
            assert_eq!(to.device_id, s(case, "device_id"), "{source}");
            assert_eq!(
                to.module_id.as_deref(),
                Some(s(case, "module_id")),
                "{source}"
            );
            assert_eq!(input, s(case, "input"), "{source}");
            assert_eq!(
                message.message_id(),
                Some(s(case, "message_id")),
                "{source}"
            );
            if let Some(custom) = case["custom"].as_object() {
                for (key, value) in custom {
                    assert_eq!(message.property(key), value.as_str(), "{source}");
                }
            }
            match classify_received_topic(topic).expect(&source) {
                ReceivedTopic::ModuleInput { input: name, .. } => assert_eq!(name, input),
                other => panic!("{other:?} in {source}"),
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}
