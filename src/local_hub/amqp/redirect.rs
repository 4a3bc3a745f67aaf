//! The service endpoint's answer to a receiver on `/messages/events/…`: IoT Hub does not
//! serve device-to-cloud events itself but refuses the attach with `amqp:link:redirect`
//! pointing at its Event Hubs-compatible endpoint ("the service client first needs to connect
//! to the IoT hub endpoint and receive a redirection address", MicrosoftDocs
//! `iot-hub-amqp-support.md`, "Receive telemetry messages (service client)").
//!
//! The error's info map carries `hostname`, `network-host`, `port` and `address`, the keys the
//! Python client parses (azure-sdk-for-python `azure/eventhub/_pyamqp/error.py`,
//! `AMQPLinkRedirect`). `address` keeps the requested suffix after the Event Hub name and
//! includes the port: the az CLI takes the Event Hub name from it
//! (azure-iot-cli-extension `azext_iot/monitor/builders/hub_target_builder.py`) and the
//! azure-sdk-for-js sample `iothubConnectionString.ts` matches `:\d+/(.*)/\$management`.

use fe2o3_amqp_types::definitions::{Error as AmqpErrorInfo, Fields, LinkError};
use fe2o3_amqp_types::primitives::{Symbol, Value};

use crate::local_hub::event_hubs::event_hub_name;
use crate::local_hub::state::HubState;

/// The path prefix of IoT Hub's device-to-cloud event links.
const EVENTS_PREFIX: &str = "/messages/events";

/// Whether `path` (lower-cased, without scheme and host) is an event link IoT Hub redirects.
pub(super) fn is_events_path(path: &str) -> bool {
    path.strip_prefix(EVENTS_PREFIX)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `amqp:link:redirect` for a receiver whose source was `source`, pointing at the same node
/// (`/ConsumerGroups/{cg}/Partitions/{p}` or `/$management`) on the Event Hubs endpoint.
pub(super) fn to_event_hubs(state: &HubState, source: &str) -> AmqpErrorInfo {
    let host = &state.settings.host_name;
    let port = state.event_hubs_port().unwrap_or(5671);
    // The suffix as the client spelled it (consumer group names keep their case).
    let suffix = source
        .to_ascii_lowercase()
        .find(EVENTS_PREFIX)
        .map_or("", |i| &source[i + EVENTS_PREFIX.len()..]);
    let address = format!("amqps://{host}:{port}/{}{suffix}", event_hub_name(host));
    let mut info = Fields::new();
    for (key, value) in [
        ("hostname", Value::String(host.clone())),
        ("network-host", Value::String(host.clone())),
        ("port", Value::Int(i32::from(port))),
        ("address", Value::String(address)),
    ] {
        info.insert(Symbol::from(key), value);
    }
    AmqpErrorInfo::new(
        LinkError::Redirect,
        "read device-to-cloud events from the Event Hubs-compatible endpoint".to_owned(),
        Some(info),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_event_links_redirect() {
        assert!(is_events_path(
            "/messages/events/consumergroups/$default/partitions/0"
        ));
        assert!(is_events_path("/messages/events/$management"));
        assert!(!is_events_path("/messages/events"));
        assert!(!is_events_path("/messages/eventsx/$management"));
        assert!(!is_events_path("/messages/devicebound"));
    }
}
