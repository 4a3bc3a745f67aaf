//! IoT Hub's MQTT topics for direct methods, both directions.
//!
//! - Request (hub → device): `$iothub/methods/POST/{method name}/?$rid={rid}`; a device
//!   subscribes to `$iothub/methods/POST/#`.
//! - Response (device → hub): `$iothub/methods/res/{status}/?$rid={rid}`, `status` an integer.
//!
//! Sources: Microsoft Learn "Communicate with an IoT hub using the MQTT protocol" (respond to a
//! direct method) and "Understand and invoke direct methods from IoT Hub";
//! azure-iot-sdk-python `azure/iot/device/iothub/pipeline/mqtt_topic_iothub.py`
//! (`get_method_topic_for_subscribe`, `get_method_topic_for_publish`,
//! `get_method_name_from_topic`, `get_method_request_id_from_topic`); azure-iot-sdk-c
//! `iothub_client/src/iothubtransport_mqtt_common.c` (`TOPIC_DEVICE_METHOD_SUBSCRIBE`,
//! `DEVICE_METHOD_RESPONSE_TOPIC "$iothub/methods/res/%d/?$rid=%s"`); azure-iot-sdk-node
//! `device/transport/mqtt/src/mqtt.ts` (`_parseMessage`, which also accepts the request topic
//! without the `/` before `?`).

use crate::error::Result;
use crate::protocol::percent;
use crate::protocol::topic_query::{decode, push_request_id, request_id, split_query, topic_error};

/// The filter for direct-method requests.
pub const METHOD_REQUEST_SUBSCRIPTION: &str = "$iothub/methods/POST/#";

const REQUEST_PREFIX: &str = "$iothub/methods/POST/";
const RESPONSE_PREFIX: &str = "$iothub/methods/res/";

/// A direct-method request topic, read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodRequestTopic {
    /// The method name, decoded.
    pub name: String,
    /// The request id (`$rid`) the response must carry.
    pub request_id: String,
}

/// A direct-method response topic, read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodResponseTopic {
    /// The status the device chose (any integer; the service passes it on).
    pub status: i32,
    /// The request id (`$rid`) of the request this answers.
    pub request_id: String,
}

/// The topic that invokes method `name` on a device, for the hub.
pub fn method_request_topic(name: &str, request_id: &str) -> String {
    let mut topic = String::with_capacity(REQUEST_PREFIX.len() + name.len() + 16);
    topic.push_str(REQUEST_PREFIX);
    percent::encode_into(name, &mut topic);
    topic.push('/');
    push_request_id(&mut topic, request_id);
    topic
}

/// Reads a direct-method request topic.
///
/// ```
/// use iothub::protocol::parse_method_request_topic;
///
/// let request = parse_method_request_topic("$iothub/methods/POST/fake%24method/?$rid=1")?;
/// assert_eq!((request.name.as_str(), request.request_id.as_str()), ("fake$method", "1"));
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn parse_method_request_topic(topic: &str) -> Result<MethodRequestTopic> {
    let rest = topic.strip_prefix(REQUEST_PREFIX).ok_or_else(|| {
        topic_error("not a method request topic (expected '$iothub/methods/POST/{name}/?$rid=')")
    })?;
    let (name, query) = split_query(rest);
    if name.is_empty() || name.contains('/') {
        return Err(topic_error(
            "method request topic without a method name in '$iothub/methods/POST/{name}/'",
        ));
    }
    Ok(MethodRequestTopic {
        name: decode(name, "the method name")?.into_owned(),
        request_id: request_id(query, "method request")?,
    })
}

/// The topic that answers method request `request_id` with `status`.
pub fn method_response_topic(status: i32, request_id: &str) -> String {
    let mut topic = format!("{RESPONSE_PREFIX}{status}/");
    push_request_id(&mut topic, request_id);
    topic
}

/// Reads a direct-method response topic (what a device publishes), for the hub.
pub fn parse_method_response_topic(topic: &str) -> Result<MethodResponseTopic> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX).ok_or_else(|| {
        topic_error("not a method response topic (expected '$iothub/methods/res/{status}/?$rid=')")
    })?;
    let (status, query) = split_query(rest);
    let status = status.parse::<i32>().map_err(|_| {
        topic_error(format!(
            "method response topic with a status that is not an integer: '{status}'"
        ))
    })?;
    Ok(MethodResponseTopic {
        status,
        request_id: request_id(query, "method response")?,
    })
}

/// Whether `topic` is under `$iothub/methods/POST/`.
pub(crate) fn is_method_request(topic: &str) -> bool {
    topic.starts_with(REQUEST_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn reads_request_topics_as_the_sdks_do() {
        // py-device test_mqtt_topic_iothub.py (TestGetMethodNameFromTopic,
        // TestGetMethodRequestIdFromTopic): decoded, '+' kept.
        let cases = [
            (
                "$iothub/methods/POST/fake_method/?$rid=1",
                "fake_method",
                "1",
            ),
            (
                "$iothub/methods/POST/fake+method/?$rid=1",
                "fake+method",
                "1",
            ),
            (
                "$iothub/methods/POST/fake_method/?$rid=fake+request+id",
                "fake_method",
                "fake+request+id",
            ),
            // node-device _mqtt_receiver_test.js: no '/' before '?', extra properties.
            ("$iothub/methods/POST/Reboot?$rid=1&k1=v1", "Reboot", "1"),
        ];
        for (topic, name, rid) in cases {
            let parsed = parse_method_request_topic(topic).unwrap();
            assert_eq!(
                (parsed.name.as_str(), parsed.request_id.as_str()),
                (name, rid)
            );
        }
    }

    #[test]
    fn request_and_response_topics_round_trip() {
        for (name, rid) in [("reboot", "1"), ("a b/c$", "x/y z")] {
            let parsed = parse_method_request_topic(&method_request_topic(name, rid)).unwrap();
            assert_eq!(
                (parsed.name.as_str(), parsed.request_id.as_str()),
                (name, rid)
            );
        }
        for (status, rid) in [(200, "2"), (65535, "2"), (-1, "a/b")] {
            let parsed = parse_method_response_topic(&method_response_topic(status, rid)).unwrap();
            assert_eq!((parsed.status, parsed.request_id.as_str()), (status, rid));
        }
    }

    #[test]
    fn bad_topics_are_invalid_topic_errors() {
        for topic in [
            "$iothub/methods/POST//?$rid=1",
            "$iothub/methods/POST/name/",
            "$iothub/methods/POST/a/b/?$rid=1",
            "$iothub/methdos/POST/fake_method/?$rid=1",
            "$iothub/methods/POST/bad%zz/?$rid=1",
        ] {
            let err = parse_method_request_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{topic}");
        }
        for topic in [
            "$iothub/methods/res/invalid%24status/?$rid=1",
            "$iothub/methods/res/200/",
            "$iothub/methods/res//?$rid=1",
        ] {
            let err = parse_method_response_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{topic}");
        }
    }
}
