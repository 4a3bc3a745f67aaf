//! Bad input gives a typed error, never a panic, and never echoes a secret.

use iothub::auth::{
    DeviceConnectionString, SasKey, SasToken, ServiceConnectionString, TokenSource,
};
use iothub::protocol::{PropertyBag, parse_c2d_topic, parse_telemetry_topic};
use iothub::{ErrorKind, Message};

const SECRET: &str = "c2VjcmV0LWtleS1ieXRlcw==";

fn device_err(text: &str) -> iothub::Error {
    let err = text.parse::<DeviceConnectionString>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConnectionString, "{text}");
    assert!(!err.to_string().contains(SECRET), "{err}");
    assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
    err
}

#[test]
fn connection_string_errors_name_the_problem_not_the_secret() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        (
            &format!("DeviceId=d;SharedAccessKey={SECRET}") as &str,
            "missing 'HostName'",
        ),
        (
            &format!("HostName=h;SharedAccessKey={SECRET}"),
            "missing 'DeviceId'",
        ),
        (
            &format!("HostName=h;DeviceId=d;DeviceId=e;SharedAccessKey={SECRET}"),
            "duplicate key 'DeviceId'",
        ),
        (
            &format!("HostName=h;DeviceId=d;Colour=blue;SharedAccessKey={SECRET}"),
            "unknown key 'Colour'",
        ),
        (
            &format!("hostname=h;DeviceId=d;SharedAccessKey={SECRET}"),
            "unknown key 'hostname'",
        ),
        (
            &format!("HostName=h;DeviceId=d;SharedAccessKey={SECRET};x509=true"),
            "mixed authentication",
        ),
        (
            &format!("HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessSignature={SECRET}"),
            "SharedAccessKeyName is given without SharedAccessKey",
        ),
        ("HostName=h;DeviceId=d;x509=false", "x509 must be 'true'"),
        ("HostName=h;DeviceId=d", "needs one of"),
        (
            &format!("HostName=h;;DeviceId=d;SharedAccessKey={SECRET}"),
            "empty segment",
        ),
        (
            &format!("HostName=h;DeviceId=d;SharedAccessKey={SECRET};;"),
            "empty segment",
        ),
        (
            &format!("HostName=h;DeviceId;SharedAccessKey={SECRET}"),
            "not of the form Key=value",
        ),
        (
            &format!("HostName=h;DeviceId=;SharedAccessKey={SECRET}"),
            "'DeviceId' has an empty value",
        ),
        (
            &format!("HostName=h;DeviceId=d;SharedAccessKey={SECRET};GatewayHostName=g:99999"),
            "port",
        ),
        (
            &format!("HostName=h;DeviceId=d;SharedAccessKey={SECRET};GatewayHostName=:80"),
            "empty host",
        ),
        (
            &format!("HostName=h;DeviceId=d;SharedAccessSignature={SECRET}"),
            "SharedAccessSignature is malformed",
        ),
    ];
    for (text, expected) in cases {
        let err = device_err(text);
        assert!(err.to_string().contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn a_key_that_is_not_base64_is_an_invalid_key_without_its_text() {
    for key in ["not a key!", "YWJjx", "@@@@@@@@", "Zm9v YmFy", "%%%%"] {
        let err = format!("HostName=h;DeviceId=d;SharedAccessKey={key}")
            .parse::<DeviceConnectionString>()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConnectionString);
        assert!(err.to_string().contains("not valid base64"), "{err}");
        assert!(!err.to_string().contains(key), "{err}");
        let source = std::error::Error::source(&err).expect("the key error is chained");
        assert!(!source.to_string().contains(key));

        let err = SasKey::from_base64(key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey);
        assert!(!err.to_string().contains(key));
    }
    assert_eq!(
        SasKey::from_base64("").unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
}

#[test]
fn service_strings_reject_device_keys_and_incomplete_credentials() {
    let cases = [
        (
            format!("HostName=h;DeviceId=d;SharedAccessKey={SECRET}"),
            "device connection string?",
        ),
        (
            format!("HostName=h;SharedAccessKey={SECRET}"),
            "needs SharedAccessKeyName",
        ),
        (
            "HostName=h;SharedAccessKeyName=p".to_owned(),
            "needs SharedAccessKey or SharedAccessSignature",
        ),
        (
            format!("SharedAccessKeyName=p;SharedAccessKey={SECRET}"),
            "missing 'HostName'",
        ),
        (
            format!(
                "HostName=h;SharedAccessKeyName=p;SharedAccessKey={SECRET};SharedAccessSignature=SharedAccessSignature sr=h&sig=x&se=1"
            ),
            "mixed authentication",
        ),
    ];
    for (text, expected) in cases {
        let err = text.parse::<ServiceConnectionString>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConnectionString);
        assert!(err.to_string().contains(expected), "{text}: {err}");
        assert!(!err.to_string().contains(SECRET), "{err}");
    }
}

#[test]
fn token_errors_are_typed_and_hide_the_signature() {
    let sig = "c2lnbmF0dXJlLWJ5dGVzLWhlcmU%3D";
    let cases = [
        (
            "SharedAccessSignature sr=h&se=1".to_owned(),
            "'sig' is missing",
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=soon"),
            "'se' must be seconds",
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=-1"),
            "'se' must be seconds",
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=99999999999999999999999"),
            "out of range",
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}"),
            "'se' is missing",
        ),
        (
            format!("SharedAccessSignature sig={sig}&se=1"),
            "'sr' is missing",
        ),
        (
            format!("SharedAccessSignature sr=&sig={sig}&se=1"),
            "'sr' is missing or empty",
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&sig={sig}"),
            "'sig' appears twice",
        ),
        (
            format!("SharedAccessSignature sr=h&sig={sig}&se=1&foo=bar"),
            "unknown field 'foo'",
        ),
        (
            format!("SharedAccessSignature sr=h&sig{sig}&se=1"),
            "has no '='",
        ),
        (
            format!("sharedaccesssignature sr=h&sig={sig}&se=1"),
            "must start with",
        ),
        (
            format!("SharedAccessSignature  sr=h&sig={sig}&se=1"),
            "without spaces",
        ),
        ("SharedAccessSignature ".to_owned(), "without spaces"),
        (String::new(), "must start with"),
    ];
    for (text, expected) in cases {
        let err = text.parse::<SasToken>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidToken, "{text}");
        assert!(err.to_string().contains(expected), "{text}: {err}");
        assert!(!err.to_string().contains("c2lnbmF0dXJl"), "{err}");
    }
}

#[test]
fn an_expired_fixed_token_is_unauthorized_and_a_bad_signature_does_not_verify() {
    let key = SasKey::from_bytes(b"device key");
    let token = key.token(&iothub::auth::ResourceUri::device("h", "d"), None, 1000);
    let source = TokenSource::fixed(token.clone());
    let at = |s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
    assert_eq!(source.token_at(at(999)).unwrap().token, token);
    assert_eq!(source.token_at(at(999)).unwrap().renew_at, None);
    assert_eq!(
        source.token_at(at(1001)).unwrap_err().kind(),
        ErrorKind::Unauthorized
    );

    assert!(token.verify(&key));
    assert!(!token.verify(&SasKey::from_bytes(b"other key")));
    let tampered: SasToken = token
        .as_str()
        .replace("se=1000", "se=1001")
        .parse()
        .unwrap();
    assert!(!tampered.verify(&key));
    let garbage: SasToken = "SharedAccessSignature sr=h&sig=%zz&se=1".parse().unwrap();
    assert!(!garbage.verify(&key));
}

#[test]
fn x509_strings_have_no_token_source() {
    let cs: DeviceConnectionString = "HostName=h;DeviceId=d;x509=true".parse().unwrap();
    let err = TokenSource::for_device(&cs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConnectionString);
}

#[test]
fn bad_bags_and_topics_are_typed_errors() {
    for bag in ["a=%zz", "%zz=1", "a=%", "a=%4", "k=%FF%FE"] {
        let err = PropertyBag::decode(bag).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPropertyBag, "{bag}");
        let err = parse_c2d_topic(&format!("devices/d/messages/devicebound/{bag}"), "".into())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPropertyBag, "{bag}");
    }
    let err =
        parse_c2d_topic("devices/d/messages/devicebound/%24.exp=soon", "".into()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);

    for topic in [
        "",
        "devices/",
        "devices//messages/devicebound/",
        "devices/d/messages/events/",
        "devices/d/messages/deviceboundx",
        "devices/d/messages/devicebound",
        "devices/d/modules/m/messages/devicebound/",
        "$iothub/twin/res/200/?$rid=1",
    ] {
        let result = parse_c2d_topic(topic, "".into());
        if topic == "devices/d/messages/devicebound" {
            assert!(result.is_ok(), "the bag may be absent");
            continue;
        }
        assert_eq!(
            result.unwrap_err().kind(),
            ErrorKind::InvalidTopic,
            "{topic:?}"
        );
    }
    for topic in [
        "devices/d/messages/devicebound/",
        "devices/d/modules//messages/events/",
        "devices/d/modules/m/messages/eventsx",
        "devices/d/messages/events/%zz",
    ] {
        assert!(parse_telemetry_topic(topic, "".into()).is_err(), "{topic}");
    }
}

#[test]
fn messages_that_cannot_be_written_faithfully_are_refused() {
    let reserved = Message::new("x").with_property("$.mid", "spoof");
    let err = iothub::protocol::c2d_topic("d", &reserved).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);

    let ack_as_property = Message::new("x").with_property("iothub-ack", "full");
    assert!(iothub::protocol::telemetry_topic("d", None, &ack_as_property).is_err());

    let unnamed = Message::new("x").with_bare_property("");
    assert!(iothub::protocol::c2d_topic("d", &unnamed).is_err());

    let far_future = std::time::UNIX_EPOCH + std::time::Duration::from_secs(300_000_000_000);
    let err =
        iothub::protocol::c2d_topic("d", &Message::new("x").with_expiry(far_future)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMessage);
}

#[test]
fn debug_output_hides_secrets_and_bodies() {
    let cs: DeviceConnectionString = format!("HostName=h;DeviceId=d;SharedAccessKey={SECRET}")
        .parse()
        .unwrap();
    let source = TokenSource::for_device(&cs).unwrap();
    let issued = source.token().unwrap();
    let sig_start = issued.token.as_str().find("sig=").unwrap() + 4;
    let sig = &issued.token.as_str()[sig_start..sig_start + 20];
    for debug in [
        format!("{cs:?}"),
        format!("{:?}", cs.credential()),
        format!("{source:?}"),
        format!("{issued:?}"),
        format!("{:?}", SasKey::from_base64(SECRET).unwrap()),
    ] {
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains(sig), "{debug}");
    }
    let body = "the quick brown fox";
    let debug = format!("{:?}", Message::new(body));
    assert!(
        !debug.contains(body) && debug.contains("body_len: 19"),
        "{debug}"
    );
}

#[test]
fn extreme_times_are_errors_or_clamped_never_panics() {
    use std::time::{Duration, UNIX_EPOCH};
    let key = SasKey::from_bytes(b"k");
    let token = key.token(
        &iothub::auth::ResourceUri::service("h"),
        Some("p"),
        u64::MAX,
    );
    assert!(token.expiry() > UNIX_EPOCH);
    assert!(!token.is_expired_at(std::time::SystemTime::now()));

    let source = TokenSource::signing(key, iothub::auth::ResourceUri::service("h"), None)
        .with_ttl(Duration::MAX);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let issued = source.token_at(now).unwrap();
    assert_eq!(
        issued.token.expiry_secs(),
        1_700_000_000 + iothub::auth::MAX_TOKEN_TTL.as_secs()
    );
    let before_1970 = UNIX_EPOCH - Duration::from_secs(10_000_000);
    let err = source
        .with_ttl(Duration::from_secs(60))
        .token_at(before_1970)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidToken);
}
