//! Which feature a topic a device receives belongs to: the one router of incoming PUBLISHes.
//!
//! A device (or module) receives on five kinds of topics: cloud-to-device messages, a module's
//! input messages, twin responses, desired-properties patches and direct-method requests
//! (Microsoft Learn "Communicate with an IoT hub using the MQTT protocol"). The official SDKs
//! tell them apart by prefix: azure-iot-sdk-python `mqtt_topic_iothub.py` (`is_c2d_topic`,
//! `is_input_topic`, `is_method_topic`, `is_twin_response_topic`,
//! `is_twin_desired_property_patch_topic`), azure-iot-sdk-node
//! `device/transport/mqtt/src/mqtt.ts` (`_dispatchMqttMessage`), azure-iot-sdk-c
//! `iothub_client/src/iothubtransport_mqtt_common.c` (`TOPIC_DEVICE_TWIN_PREFIX`,
//! `TOPIC_DEVICE_METHOD_PREFIX`).

use crate::error::Result;
use crate::protocol::method_topic::{self, MethodRequestTopic, parse_method_request_topic};
use crate::protocol::topic::{split_c2d, split_input};
use crate::protocol::topic_query::decode;
use crate::protocol::twin_topic::{
    self, DesiredPatchTopic, TwinResponseTopic, parse_desired_patch_topic,
    parse_twin_response_topic,
};

/// A topic a device receives, classified. Message kinds keep their property bag undecoded
/// (decode it with [`crate::protocol::PropertyBag::decode`]) so that a bag that cannot be
/// decoded still leaves the message's kind and body known.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceivedTopic<'a> {
    /// `devices/{device_id}/messages/devicebound/{properties}`.
    CloudToDevice {
        /// The device id, as written in the topic.
        device_id: &'a str,
        /// The property bag, still encoded (may be empty).
        properties: &'a str,
    },
    /// `devices/{device_id}/modules/{module_id}/inputs/{input}/{properties}`.
    ModuleInput {
        /// The device id, as written in the topic.
        device_id: &'a str,
        /// The module id, as written in the topic.
        module_id: &'a str,
        /// The input name, decoded.
        input: String,
        /// The property bag, still encoded (may be empty).
        properties: &'a str,
    },
    /// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
    TwinResponse(TwinResponseTopic),
    /// `$iothub/twin/PATCH/properties/desired/?$version={v}`.
    DesiredPatch(DesiredPatchTopic),
    /// `$iothub/methods/POST/{name}/?$rid={rid}`.
    MethodRequest(MethodRequestTopic),
    /// Anything else (a device never subscribes to it).
    Other,
}

/// Classifies a topic a device received.
///
/// A topic of a known kind whose parts cannot be read (a twin response without `$rid`, a
/// status that is not a number, a bad percent escape) is an [`crate::ErrorKind::InvalidTopic`]
/// error; a topic of no known kind is [`ReceivedTopic::Other`]. Never panics.
///
/// ```
/// use iothub::protocol::{ReceivedTopic, classify_received_topic};
///
/// match classify_received_topic("$iothub/methods/POST/reboot/?$rid=7")? {
///     ReceivedTopic::MethodRequest(request) => assert_eq!(request.name, "reboot"),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn classify_received_topic(topic: &str) -> Result<ReceivedTopic<'_>> {
    if twin_topic::is_twin_response(topic) {
        return parse_twin_response_topic(topic).map(ReceivedTopic::TwinResponse);
    }
    if twin_topic::is_desired_patch(topic) {
        return parse_desired_patch_topic(topic).map(ReceivedTopic::DesiredPatch);
    }
    if method_topic::is_method_request(topic) {
        return parse_method_request_topic(topic).map(ReceivedTopic::MethodRequest);
    }
    if let Some((device_id, properties)) = split_c2d(topic) {
        return Ok(ReceivedTopic::CloudToDevice {
            device_id,
            properties,
        });
    }
    if let Some(parts) = split_input(topic) {
        return Ok(ReceivedTopic::ModuleInput {
            device_id: parts.device_id,
            module_id: parts.module_id,
            input: decode(parts.input, "the input name")?.into_owned(),
            properties: parts.bag,
        });
    }
    Ok(ReceivedTopic::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn classifies_each_kind() {
        // Topics from py-device tests/unit/iothub/pipeline/test_mqtt_topic_iothub.py.
        assert_eq!(
            classify_received_topic(
                "devices/fake_device/messages/devicebound/%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound"
            )
            .unwrap(),
            ReceivedTopic::CloudToDevice {
                device_id: "fake_device",
                properties: "%24.mid=6b822696-f75a-46f5-8b02-0680db65abf5&%24.to=%2Fdevices%2Ffake_device%2Fmessages%2Fdevicebound",
            }
        );
        assert_eq!(
            classify_received_topic("devices/d/messages/devicebound").unwrap(),
            ReceivedTopic::CloudToDevice {
                device_id: "d",
                properties: ""
            }
        );
        assert_eq!(
            classify_received_topic(
                "devices/fake_device/modules/fake_module/inputs/fake%24input/%24.mid=1"
            )
            .unwrap(),
            ReceivedTopic::ModuleInput {
                device_id: "fake_device",
                module_id: "fake_module",
                input: "fake$input".into(),
                properties: "%24.mid=1",
            }
        );
        assert!(matches!(
            classify_received_topic("$iothub/twin/res/200/?$rid=d9d7ce4d-3be9-498b-abde-913b81b880e5").unwrap(),
            ReceivedTopic::TwinResponse(r) if r.status == 200 && r.request_id == "d9d7ce4d-3be9-498b-abde-913b81b880e5"
        ));
        assert!(matches!(
            classify_received_topic("$iothub/twin/PATCH/properties/desired/?$version=1").unwrap(),
            ReceivedTopic::DesiredPatch(p) if p.version == Some(1)
        ));
        assert!(matches!(
            classify_received_topic("$iothub/methods/POST/fake_method/?$rid=1").unwrap(),
            ReceivedTopic::MethodRequest(m) if m.name == "fake_method" && m.request_id == "1"
        ));
        for other in [
            "not a topic",
            "devices/fake_device/msgs/devicebound/x",
            "$iothub/mthds/POST/fake_method/?$rid=1",
            "$iothub/twin/rs/200/?$rid=1",
            "$iothub/twin/PATCH/properties/dsiered/?$version=1",
            "devices/fake_device/inputs/fake_input/x",
            "devices//messages/devicebound/",
        ] {
            assert_eq!(
                classify_received_topic(other).unwrap(),
                ReceivedTopic::Other,
                "{other}"
            );
        }
    }

    #[test]
    fn malformed_known_kinds_are_typed_errors() {
        for topic in [
            "$iothub/twin/res/200/?$version=1",
            "$iothub/twin/res/OK/?$rid=1",
            "$iothub/twin/PATCH/properties/desired/?$version=v",
            "$iothub/methods/POST/m/",
            "devices/d/modules/m/inputs/bad%zz/",
        ] {
            let err = classify_received_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{topic}");
        }
    }

    proptest! {
        #[test]
        fn random_topics_never_panic(topic in "\\PC{0,80}") {
            let _ = classify_received_topic(&topic);
        }

        #[test]
        fn random_topics_under_known_prefixes_never_panic(
            prefix in prop::sample::select(vec![
                "$iothub/twin/res/",
                "$iothub/twin/PATCH/properties/desired/",
                "$iothub/methods/POST/",
                "devices/d/messages/devicebound/",
                "devices/d/modules/m/inputs/",
            ]),
            tail in "[a-z0-9%$?&=/+.]{0,40}",
        ) {
            let topic = format!("{prefix}{tail}");
            let _ = classify_received_topic(&topic);
        }
    }
}
