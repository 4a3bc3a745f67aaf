//! Property tests: whatever we write, we read back the same.

use std::time::{Duration, UNIX_EPOCH};

use iothub::auth::{
    DeviceConnectionString, HostAndPort, ResourceUri, SasKey, SasToken, ServiceConnectionString,
};
use iothub::protocol::{
    PropertyBag, c2d_topic, parse_c2d_topic, parse_telemetry_topic, telemetry_topic,
};
use iothub::{Ack, Message};
use proptest::prelude::*;

/// Text that exercises the codec: the characters the bag must escape, plus any unicode.
fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof!["[/&=%+$ ?#a-z.~_-]{0,12}", any::<String>(), "\\PC{0,8}",]
}

fn property_name() -> impl Strategy<Value = String> {
    tricky_text().prop_filter("names are non-empty and not reserved", |k| {
        !k.is_empty()
            && !matches!(
                k.as_str(),
                "$.mid" | "$.cid" | "$.uid" | "$.ct" | "$.ce" | "$.exp" | "$.to" | "iothub-ack"
            )
    })
}

fn ack() -> impl Strategy<Value = Ack> {
    prop_oneof![
        Just(Ack::None),
        Just(Ack::Positive),
        Just(Ack::Negative),
        Just(Ack::Full)
    ]
}

prop_compose! {
    fn message()(
        body in proptest::collection::vec(any::<u8>(), 0..64),
        mid in proptest::option::of(tricky_text()),
        cid in proptest::option::of(tricky_text()),
        uid in proptest::option::of(tricky_text()),
        ct in proptest::option::of(tricky_text()),
        ce in proptest::option::of(tricky_text()),
        to in proptest::option::of(tricky_text()),
        // Whole 100 ns units between 1970 and 9999: the resolution of `$.exp`.
        exp in proptest::option::of(0u64..2_534_023_007_999_999_999 / 100),
        ack in proptest::option::of(ack()),
        props in proptest::collection::vec((property_name(), proptest::option::of(tricky_text())), 0..6),
    ) -> Message {
        let mut m = Message::new(body);
        if let Some(v) = mid { m = m.with_message_id(v); }
        if let Some(v) = cid { m = m.with_correlation_id(v); }
        if let Some(v) = uid { m = m.with_user_id(v); }
        if let Some(v) = ct { m = m.with_content_type(v); }
        if let Some(v) = ce { m = m.with_content_encoding(v); }
        if let Some(v) = to { m = m.with_to(v); }
        if let Some(v) = exp { m = m.with_expiry(UNIX_EPOCH + Duration::from_nanos(v * 100)); }
        if let Some(v) = ack { m = m.with_ack(v); }
        for (k, v) in props {
            m = match v {
                Some(v) => m.with_property(k, v),
                None => m.with_bare_property(k),
            };
        }
        m
    }
}

fn device_id() -> impl Strategy<Value = String> {
    // Ids allow `- . + % _ # * ? ! ( ) , : = @ $ '` (Microsoft Learn, "Understand the identity registry in your IoT hub").
    "[A-Za-z0-9.+%_#*?!(),:=@$'-]{1,20}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn c2d_topic_round_trips(id in device_id(), m in message()) {
        let topic = c2d_topic(&id, &m).unwrap();
        let (device, back) = parse_c2d_topic(&topic, m.body().clone()).unwrap();
        prop_assert_eq!(device, id);
        prop_assert_eq!(back, m);
    }

    #[test]
    fn telemetry_topic_round_trips(
        id in device_id(),
        module in proptest::option::of(device_id()),
        m in message(),
    ) {
        let topic = telemetry_topic(&id, module.as_deref(), &m).unwrap();
        let (from, back) = parse_telemetry_topic(&topic, m.body().clone()).unwrap();
        prop_assert_eq!(from.device_id, id);
        prop_assert_eq!(from.module_id, module);
        prop_assert_eq!(back, m);
    }

    /// The one-pass decode a device runs on every received message reads what the bag reads,
    /// and fails where it fails: on hub-written topics and on arbitrary (often broken) text
    /// with `$` and `%24` spellings, repeated and valueless system keys and bad escapes.
    #[test]
    fn one_pass_message_decode_matches_the_bag(
        id in device_id(),
        m in message(),
        raw in proptest::collection::vec(
            (
                prop_oneof![
                    Just("%24.mid".to_owned()), Just("$.mid".to_owned()), Just("%24.exp".to_owned()),
                    Just("%24.to".to_owned()), Just("%24.ct".to_owned()), Just("iothub-ack".to_owned()),
                    Just("%24.cdid".to_owned()), Just("%24".to_owned()), Just("%2".to_owned()),
                    "[a-z%$.=0-9A-F]{0,6}",
                ],
                proptest::option::of(prop_oneof![
                    Just("full".to_owned()), Just("%zz".to_owned()), Just("%C3%A9".to_owned()),
                    Just("%FF".to_owned()), Just("2017-01-06T23:37:00.669Z".to_owned()),
                    "[a-z%/+0-9A-F]{0,8}",
                ]),
            ),
            0..6,
        ),
    ) {
        let topic = c2d_topic(&id, &m).unwrap();
        let bag_text = &topic[topic.find("/devicebound/").unwrap() + "/devicebound/".len()..];
        let mut texts = vec![bag_text.to_owned()];
        texts.push(
            raw.iter()
                .map(|(k, v)| match v { Some(v) => format!("{k}={v}"), None => k.clone() })
                .collect::<Vec<_>>()
                .join("&"),
        );
        for text in texts {
            let one_pass = PropertyBag::decode_message(&text, m.body().clone());
            let two_pass = PropertyBag::decode(&text).and_then(|bag| bag.into_message(m.body().clone()));
            match (one_pass, two_pass) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "{text:?}: one pass {a:?}, two passes {b:?}"),
            }
        }
    }

    #[test]
    fn bag_round_trips_and_escapes_separators(
        pairs in proptest::collection::vec((tricky_text().prop_filter("non-empty", |k| !k.is_empty()), proptest::option::of(tricky_text())), 0..8)
    ) {
        let bag: PropertyBag = pairs.into_iter().collect();
        let text = bag.encode();
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%&=".contains(&b)));
        prop_assert!(!text.contains('/'));
        prop_assert_eq!(PropertyBag::decode(&text).unwrap(), bag);
    }

    #[test]
    fn token_round_trips(
        host in "[a-z0-9.-]{1,30}(:[0-9]{1,5})?",
        device in proptest::option::of(device_id()),
        module in proptest::option::of(device_id()),
        key_name in proptest::option::of(tricky_text().prop_filter("non-empty", |k| !k.is_empty())),
        key in proptest::collection::vec(any::<u8>(), 1..64),
        expiry in any::<u64>(),
    ) {
        let resource = match (&device, &module) {
            (Some(d), Some(m)) => ResourceUri::module(&host, d, m),
            (Some(d), None) => ResourceUri::device(&host, d),
            _ => ResourceUri::service(&host),
        };
        let key = SasKey::from_bytes(&key);
        let token = key.token(&resource, key_name.as_deref(), expiry);
        let parsed: SasToken = token.to_string().parse().unwrap();
        prop_assert_eq!(&parsed, &token);
        prop_assert!(parsed.verify(&key));
        prop_assert_eq!(parsed.expiry_secs(), expiry);
        prop_assert_eq!(parsed.key_name(), key_name);
        let expected_resource = match (&device, &module) {
            (Some(d), Some(m)) => format!("{host}/devices/{d}/modules/{m}"),
            (Some(d), None) => format!("{host}/devices/{d}"),
            _ => host.clone(),
        };
        prop_assert_eq!(parsed.resource().unwrap(), expected_resource);
    }

    #[test]
    fn token_fields_parse_in_any_order(
        order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
        expiry in any::<u64>(),
    ) {
        let key = SasKey::from_bytes(b"secret");
        let token = key.token(&ResourceUri::service("hub.example"), Some("service"), expiry);
        let fields: Vec<&str> = token.as_str()["SharedAccessSignature ".len()..].split('&').collect();
        let shuffled: Vec<&str> = order.iter().map(|&i| fields[i]).collect();
        let text = format!("SharedAccessSignature {}", shuffled.join("&"));
        let parsed: SasToken = text.parse().unwrap();
        prop_assert_eq!(parsed.to_string(), text);
        prop_assert!(parsed.verify(&key));
        prop_assert_eq!(parsed.expiry_secs(), expiry);
        prop_assert_eq!(parsed.key_name(), Some("service".to_owned()));
    }

    #[test]
    fn device_connection_string_round_trips(
        host in "[A-Za-z0-9.-]{1,30}",
        device in "[A-Za-z0-9.+%_#*?!(),:=@$'-]{1,20}",
        module in proptest::option::of("[A-Za-z0-9_-]{1,12}"),
        gateway in proptest::option::of(("[a-z0-9.-]{1,20}", proptest::option::of(1u16..))),
        credential in 0..4u8,
        key in proptest::collection::vec(any::<u8>(), 1..48),
    ) {
        let key = SasKey::from_bytes(&key);
        let mut text = format!("HostName={host};DeviceId={device}");
        if let Some(m) = &module { text += &format!(";ModuleId={m}"); }
        text += &match credential {
            0 => format!(";SharedAccessKey={}", key.to_base64()),
            1 => format!(";SharedAccessKeyName=device;SharedAccessKey={}", key.to_base64()),
            2 => format!(";SharedAccessSignature={}", key.token(&ResourceUri::device(&host, &device), None, 99)),
            _ => ";x509=true".to_owned(),
        };
        if let Some((h, p)) = &gateway {
            text += &match p { Some(p) => format!(";GatewayHostName={h}:{p}"), None => format!(";GatewayHostName={h}") };
        }
        let cs: DeviceConnectionString = text.parse().unwrap();
        prop_assert_eq!(cs.to_string(), text.clone());
        prop_assert_eq!(cs.to_string().parse::<DeviceConnectionString>().unwrap(), cs.clone());
        prop_assert_eq!(format!("{text};").parse::<DeviceConnectionString>().unwrap(), cs.clone());
        let expected_connect = match &gateway {
            Some((h, p)) => (h.as_str(), *p),
            None => (host.as_str(), None),
        };
        prop_assert_eq!(cs.connect_host(), expected_connect);
        if credential < 3 {
            let debug = format!("{:?}", cs);
            prop_assert!(!debug.contains(key.to_base64()));
        }
    }

    #[test]
    fn service_connection_string_round_trips(
        host in "[A-Za-z0-9.-]{1,30}(:[0-9]{1,5})?",
        policy in "[A-Za-z0-9_-]{1,20}",
        key in proptest::collection::vec(any::<u8>(), 1..48),
    ) {
        let cs = ServiceConnectionString::with_key(&host, &policy, SasKey::from_bytes(&key));
        let back: ServiceConnectionString = cs.to_string().parse().unwrap();
        prop_assert_eq!(&back, &cs);
        prop_assert_eq!(back.host_name(), host.as_str());
        let debug = format!("{:?}", back);
        prop_assert!(!debug.contains(SasKey::from_bytes(&key).to_base64()));
    }

    #[test]
    fn host_and_port_round_trips(host in "[a-z0-9.-]{1,20}", port in proptest::option::of(1u16..)) {
        let text = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
        let parsed = HostAndPort::parse(&text).unwrap();
        prop_assert_eq!(parsed.host(), host.as_str());
        prop_assert_eq!(parsed.port(), port);
        prop_assert_eq!(parsed.to_string(), text);
    }
}
