//! IoT Hub's MQTT topics for device twins, both directions.
//!
//! | Step | Topic |
//! |---|---|
//! | get the twin (device → hub) | `$iothub/twin/GET/?$rid={rid}` |
//! | update reported properties (device → hub) | `$iothub/twin/PATCH/properties/reported/?$rid={rid}` |
//! | response (hub → device) | `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]` |
//! | desired-properties patch (hub → device) | `$iothub/twin/PATCH/properties/desired/?$version={v}` |
//!
//! A device subscribes to `$iothub/twin/res/#` and `$iothub/twin/PATCH/properties/desired/#`.
//! Sources: Microsoft Learn "Communicate with an IoT hub using the MQTT protocol" (device
//! twins); azure-iot-sdk-python `azure/iot/device/iothub/pipeline/mqtt_topic_iothub.py`
//! (`get_twin_topic_for_publish`, `get_twin_request_id_from_topic`,
//! `get_twin_status_code_from_topic`, `get_twin_response_topic_for_subscribe`,
//! `get_twin_patch_topic_for_subscribe`); azure-iot-sdk-c
//! `iothub_client/src/iothubtransport_mqtt_common.c` (`TOPIC_GET_DESIRED_STATE`,
//! `TOPIC_NOTIFICATION_STATE`, `REPORTED_PROPERTIES_TOPIC`, `GET_PROPERTIES_TOPIC`).
//!
//! The request id is opaque text, percent-encoded in the topic as the Python SDK does.

use crate::error::Result;
use crate::protocol::topic_query::{
    push_request_id, request_id, split_query, topic_error, version,
};

/// The filter for twin responses.
pub const TWIN_RESPONSE_SUBSCRIPTION: &str = "$iothub/twin/res/#";
/// The filter for desired-properties patches.
pub const DESIRED_PATCH_SUBSCRIPTION: &str = "$iothub/twin/PATCH/properties/desired/#";

const RESPONSE_PREFIX: &str = "$iothub/twin/res/";
const DESIRED_PATH: &str = "$iothub/twin/PATCH/properties/desired";
const GET_PATH: &str = "$iothub/twin/GET";
const REPORTED_PATH: &str = "$iothub/twin/PATCH/properties/reported";

/// What a twin request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TwinRequestKind {
    /// `GET`: the whole twin document.
    Get,
    /// `PATCH properties/reported`: update the reported properties with the payload.
    PatchReported,
}

/// A twin request topic, read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwinRequestTopic {
    /// What is asked.
    pub kind: TwinRequestKind,
    /// The request id (`$rid`), decoded.
    pub request_id: String,
}

/// A twin response topic, read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwinResponseTopic {
    /// The HTTP-style status: 200 for a GET, 204 for a reported patch, 4xx/5xx on failure.
    pub status: u16,
    /// The request id (`$rid`) of the request this answers.
    pub request_id: String,
    /// The new reported-properties version, on a reported patch's response.
    pub version: Option<u64>,
}

/// A desired-properties patch topic, read.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DesiredPatchTopic {
    /// The desired properties' version after the patch (also `$version` in the body).
    pub version: Option<u64>,
}

/// The topic that asks for the whole twin (`$iothub/twin/GET/?$rid={rid}`).
pub fn twin_get_topic(request_id: &str) -> String {
    twin_request_topic(TwinRequestKind::Get, request_id)
}

/// The topic that updates the reported properties
/// (`$iothub/twin/PATCH/properties/reported/?$rid={rid}`).
pub fn twin_patch_reported_topic(request_id: &str) -> String {
    twin_request_topic(TwinRequestKind::PatchReported, request_id)
}

/// The topic of a twin request of `kind`.
pub fn twin_request_topic(kind: TwinRequestKind, request_id: &str) -> String {
    let mut topic = String::with_capacity(64 + request_id.len());
    topic.push_str(match kind {
        TwinRequestKind::Get => GET_PATH,
        TwinRequestKind::PatchReported => REPORTED_PATH,
    });
    topic.push('/');
    push_request_id(&mut topic, request_id);
    topic
}

/// Reads a twin request topic (what a device publishes), for the hub.
///
/// ```
/// use iothub::protocol::{TwinRequestKind, parse_twin_request_topic};
///
/// let request = parse_twin_request_topic("$iothub/twin/PATCH/properties/reported/?$rid=7")?;
/// assert_eq!(request.kind, TwinRequestKind::PatchReported);
/// assert_eq!(request.request_id, "7");
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn parse_twin_request_topic(topic: &str) -> Result<TwinRequestTopic> {
    let (path, query) = split_query(topic);
    let kind = match path {
        GET_PATH => TwinRequestKind::Get,
        REPORTED_PATH => TwinRequestKind::PatchReported,
        _ => {
            return Err(topic_error(
                "not a twin request topic (expected '$iothub/twin/GET/?$rid=' or \
                 '$iothub/twin/PATCH/properties/reported/?$rid=')",
            ));
        }
    };
    Ok(TwinRequestTopic {
        kind,
        request_id: request_id(query, "twin request")?,
    })
}

/// The topic that answers twin request `request_id` with `status` (and the new reported
/// version after a reported patch), for the hub.
pub fn twin_response_topic(status: u16, request_id: &str, version: Option<u64>) -> String {
    let mut topic = format!("{RESPONSE_PREFIX}{status}/");
    push_request_id(&mut topic, request_id);
    if let Some(version) = version {
        topic.push_str("&$version=");
        topic.push_str(&version.to_string());
    }
    topic
}

/// Reads a twin response topic.
///
/// ```
/// use iothub::protocol::parse_twin_response_topic;
///
/// let response = parse_twin_response_topic("$iothub/twin/res/204/?$rid=1&$version=6")?;
/// assert_eq!((response.status, response.request_id.as_str()), (204, "1"));
/// assert_eq!(response.version, Some(6));
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn parse_twin_response_topic(topic: &str) -> Result<TwinResponseTopic> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX).ok_or_else(|| {
        topic_error("not a twin response topic (expected '$iothub/twin/res/{status}/?$rid=')")
    })?;
    let (status, query) = split_query(rest);
    let status = status
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=999).contains(s))
        .ok_or_else(|| {
            topic_error(format!(
                "twin response topic with a status that is not a 3-digit number: '{status}'"
            ))
        })?;
    Ok(TwinResponseTopic {
        status,
        request_id: request_id(query, "twin response")?,
        version: version(query, "twin response")?,
    })
}

/// The topic that carries a desired-properties patch of `version`, for the hub.
pub fn desired_patch_topic(version: u64) -> String {
    format!("{DESIRED_PATH}/?$version={version}")
}

/// Reads a desired-properties patch topic. The version is optional here: the SDKs read it from
/// the body (`$version`), so a topic without it is still a patch.
pub fn parse_desired_patch_topic(topic: &str) -> Result<DesiredPatchTopic> {
    let (path, query) = split_query(topic);
    if path != DESIRED_PATH {
        return Err(topic_error(
            "not a desired-properties topic (expected '$iothub/twin/PATCH/properties/desired/')",
        ));
    }
    Ok(DesiredPatchTopic {
        version: version(query, "desired-properties")?,
    })
}

/// Whether `topic` is under `$iothub/twin/res/`.
pub(crate) fn is_twin_response(topic: &str) -> bool {
    topic.starts_with(RESPONSE_PREFIX)
}

/// Whether `topic` is a desired-properties patch (path exactly the desired path).
pub(crate) fn is_desired_patch(topic: &str) -> bool {
    split_query(topic).0 == DESIRED_PATH
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn builds_request_topics_with_encoded_request_ids() {
        // py-device tests/unit/iothub/pipeline/test_mqtt_topic_iothub.py
        // (TestGetTwinTopicForPublish).
        assert_eq!(
            twin_get_topic("3226c2f7-3d30-425c-b83b-0c34335f8220"),
            "$iothub/twin/GET/?$rid=3226c2f7-3d30-425c-b83b-0c34335f8220"
        );
        assert_eq!(
            twin_get_topic("invalid request id"),
            "$iothub/twin/GET/?$rid=invalid%20request%20id"
        );
        // azure-sdk-for-c sdk/tests/iot/hub/test_az_iot_hub_client_twin.c.
        assert_eq!(
            twin_patch_reported_topic("id_one"),
            "$iothub/twin/PATCH/properties/reported/?$rid=id_one"
        );
    }

    #[test]
    fn request_topics_round_trip() {
        for kind in [TwinRequestKind::Get, TwinRequestKind::PatchReported] {
            for rid in ["1", "a/b?c&d=e f", "ü"] {
                let parsed = parse_twin_request_topic(&twin_request_topic(kind, rid)).unwrap();
                assert_eq!((parsed.kind, parsed.request_id.as_str()), (kind, rid));
            }
        }
    }

    #[test]
    fn response_topics_round_trip() {
        let topic = twin_response_topic(204, "r/1", Some(16));
        assert_eq!(topic, "$iothub/twin/res/204/?$rid=r%2F1&$version=16");
        let parsed = parse_twin_response_topic(&topic).unwrap();
        assert_eq!(
            parsed,
            TwinResponseTopic {
                status: 204,
                request_id: "r/1".into(),
                version: Some(16)
            }
        );
        assert_eq!(
            desired_patch_topic(8),
            "$iothub/twin/PATCH/properties/desired/?$version=8"
        );
        assert_eq!(
            parse_desired_patch_topic(&desired_patch_topic(8))
                .unwrap()
                .version,
            Some(8)
        );
    }

    #[test]
    fn bad_topics_are_invalid_topic_errors() {
        for topic in [
            "$iothub/twin/res/%24%24%24/?rid=1", // py-device test: status '$$$'
            "$iothub/twin/res/abc/?$rid=1",
            "$iothub/twin/res/99/?$rid=1",
            "$iothub/twin/res//?$rid=1",
            "$iothub/twin/res/200/",
            "$iothub/twin/res/200/?$version=3",
            "$iothub/twin/res/200/?$rid=1&$version=x",
            "$iothub/twn/res/200?rid=1",
        ] {
            let err = parse_twin_response_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{topic}");
        }
        for topic in [
            "$iothub/twin/PATCH/properties/desired/?$version=id_one",
            "$iothub/twin/PATCH/properties/dsiered/?$version=1",
        ] {
            let err = parse_desired_patch_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{topic}");
        }
        for topic in [
            "$iothub/twin/GET/",
            "$iothub/twin/POST/properties/reported/?$rid=1",
            "$iothub/twin/GET/x/?$rid=1",
        ] {
            let err = parse_twin_request_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTopic, "{topic}");
        }
    }
}
