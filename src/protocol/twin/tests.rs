use serde_json::json;

use super::*;

fn object(value: Value) -> TwinCollection {
    match value {
        Value::Object(members) => members,
        _ => panic!("not an object"),
    }
}

#[test]
fn merge_deletes_nulls_and_merges_objects() {
    let mut target = object(json!({"a": 1, "b": {"x": 1, "y": 2}, "c": "keep", "d": 5}));
    let changed = merge_patch(
        &mut target,
        &object(json!({"a": null, "b": {"x": null, "z": 3}, "d": {"n": null, "m": 1}, "e": [1]})),
    );
    assert!(changed);
    assert_eq!(
        Value::Object(target.clone()),
        json!({"b": {"y": 2, "z": 3}, "c": "keep", "d": {"m": 1}, "e": [1]})
    );
    assert!(!merge_patch(
        &mut target,
        &object(json!({"c": "keep", "gone": null}))
    ));
}

#[test]
fn key_rules_refuse_dollar_dot_space_and_controls() {
    for bad in ["$version", "a.b", "a b", "a\u{1}", "a\u{85}", ""] {
        let patch = object(json!({ bad: 1 }));
        let err = check_patch(TwinSection::Desired, &patch).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{bad:?}");
    }
    let nested = object(json!({"ok": {"$bad": 1}}));
    assert!(check_patch(TwinSection::Reported, &nested).is_err());
    let long_key = "k".repeat(TwinLimits::KEY_BYTES + 1);
    assert!(check_patch(TwinSection::Tags, &object(json!({ long_key: 1 }))).is_err());
    assert!(check_patch(TwinSection::Tags, &object(json!({"ünï-_:code": null}))).is_ok());
}

#[test]
fn values_and_depth_are_bounded() {
    let mut deep = json!(1);
    for _ in 0..TwinLimits::MAX_DEPTH {
        deep = json!({ "k": deep });
    }
    // Ten nested objects: the innermost member is at depth 10.
    assert!(check_patch(TwinSection::Desired, &object(deep.clone())).is_ok());
    let deeper = json!({ "k": deep });
    assert!(check_patch(TwinSection::Desired, &object(deeper)).is_err());
    let long = "v".repeat(TwinLimits::STRING_BYTES + 1);
    assert!(check_patch(TwinSection::Reported, &object(json!({ "s": long }))).is_err());
    for bad in [json!(4_503_599_627_370_496_i64), json!(u64::MAX)] {
        assert!(check_patch(TwinSection::Reported, &object(json!({ "n": bad }))).is_err());
    }
    assert!(
        check_patch(
            TwinSection::Reported,
            &object(json!({"n": -4_503_599_627_370_496_i64, "f": 1.5}))
        )
        .is_ok()
    );
}

#[test]
fn size_counts_keys_and_values_as_iot_hub_does() {
    let doc = object(json!({"ab": "xyz", "n": 1, "t": true, "o": {"k": "v"}, "$version": 3}));
    // ab+xyz = 5, n+8 = 9, t+4 = 5, o + (k+v) = 3.
    assert_eq!(collection_size(&doc), 22);
    let mut big = TwinCollection::new();
    for i in 0..5 {
        big.insert(format!("k{i}"), json!("v".repeat(2000)));
    }
    assert!(check_collection(TwinSection::Desired, &big).is_ok());
    let err = check_collection(TwinSection::Tags, &big).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MessageTooLarge);
}

#[test]
fn twin_documents_round_trip() {
    let body = json!({
        "deviceId": "d", "moduleId": "m", "etag": "AAAAAAAAAAE=", "deviceEtag": "OTAw",
        "version": 3, "status": "enabled", "connectionState": "connected",
        "lastActivityTime": "0001-01-01T00:00:00", "tags": {"a": 1},
        "properties": {"desired": {"x": 1, "$version": 2}, "reported": {"$version": 1}},
        "unknownField": true
    });
    let twin: Twin = serde_json::from_value(body).unwrap();
    assert_eq!(twin.module_id.as_deref(), Some("m"));
    assert_eq!(
        twin.connection_state,
        Some(DeviceConnectionState::Connected)
    );
    assert_eq!(twin.properties.desired_version(), Some(2));
    assert_eq!(twin.properties.reported_version(), Some(1));
    let request = serde_json::to_value(Twin::new("d").with_tags(object(json!({"t": 1})))).unwrap();
    assert_eq!(
        request,
        json!({"deviceId": "d", "tags": {"t": 1}, "properties": {"desired": {}, "reported": {}}})
    );
    let device: TwinProperties =
        serde_json::from_slice(br#"{"desired":{"$version":1},"reported":{"r":2,"$version":4}}"#)
            .unwrap();
    assert_eq!(
        (device.desired_version(), device.reported_version()),
        (Some(1), Some(4))
    );
}

#[test]
fn patches_write_tags_and_desired() {
    let patch = TwinPatch::new()
        .tags(json!({"a": null}))
        .desired(Value::Null);
    assert_eq!(
        patch.to_json(),
        json!({"tags": {"a": null}, "properties": {"desired": null}})
    );
    assert_eq!(TwinPatch::new().to_json(), json!({}));
}

#[test]
fn bodies_must_be_objects() {
    assert!(parse_collection(b"{\"a\":1}", "patch").is_ok());
    for bad in [&b"[1]"[..], b"nope", b"", b"1"] {
        assert_eq!(
            parse_collection(bad, "patch").unwrap_err().kind(),
            ErrorKind::InvalidMessage
        );
    }
}
