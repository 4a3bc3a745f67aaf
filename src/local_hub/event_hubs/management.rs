//! The `$management` node: READ of the Event Hub (`com.microsoft:eventhub`) and of one
//! partition (`com.microsoft:partition`).
//!
//! Requests carry `operation` READ, `type`, `name`, `partition` and a `security_token`
//! application property; bodies differ per SDK and are ignored (azure-sdk-for-python
//! `azure/eventhub/_client_base.py`, `_get_eventhub_properties`; azure-sdk-for-js
//! `sdk/eventhub/event-hubs/src/managementClient.ts`). The reply has `status-code` 200 (the
//! only success fe2o3-amqp-management accepts, `src/operations/entity/read.rs`) and an AMQP
//! map with **string** keys, values typed as azure_messaging_eventhubs requires
//! (`sdk/eventhubs/azure_messaging_eventhubs/src/common/management.rs`): `created_at` a
//! timestamp, `partition_ids` an array of strings, sequence numbers longs, the offset a
//! string; a partition reply also carries `type` and `last_enqueued_sequence_number_epoch`,
//! without which the Rust client refuses it.

use std::sync::Arc;

use fe2o3_amqp::Receiver;
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::{Array, OrderedMap, Timestamp, Value};

use super::Conn;
use super::cbs::{Request, reply, text_property};
use super::event_message::timestamp;
use super::token::check_token;

/// "No time" as Event Hubs reports it for an empty partition: 0001-01-01T00:00:00Z, which the
/// Python and Rust clients map to "unset" (azure-sdk-for-python `azure/eventhub/_utils.py`).
const NO_TIME_MS: i64 = -62_135_596_800_000;

fn map(entries: Vec<(&str, Value)>) -> Value {
    let mut map = OrderedMap::new();
    for (k, v) in entries {
        map.insert(Value::String(k.to_owned()), v);
    }
    Value::Map(map)
}

/// The status, description and body answering `request`.
fn answer(conn: &Conn, request: &Request) -> (i32, String, Value) {
    let endpoint = &conn.endpoint;
    if let Some(token) = text_property(request, "security_token") {
        if let Err(refused) = check_token(&endpoint.state, &endpoint.event_hub, &token) {
            return (401, refused.to_string(), Value::Null);
        }
    }
    if !text_property(request, "operation").is_some_and(|op| op.eq_ignore_ascii_case("READ")) {
        return (400, "only READ is supported".to_owned(), Value::Null);
    }
    let name = text_property(request, "name").unwrap_or_default();
    if !name.eq_ignore_ascii_case(&endpoint.event_hub) {
        return (
            404,
            format!("the messaging entity '{name}' could not be found"),
            Value::Null,
        );
    }
    let log = &endpoint.log;
    match text_property(request, "type").as_deref() {
        Some("com.microsoft:eventhub") => {
            let ids = (0..log.partition_count())
                .map(|p| Value::String(p.to_string()))
                .collect::<Vec<_>>();
            let body = map(vec![
                ("name", Value::String(endpoint.event_hub.clone())),
                ("type", Value::String("com.microsoft:eventhub".to_owned())),
                (
                    "created_at",
                    Value::Timestamp(timestamp(endpoint.created_at)),
                ),
                ("partition_count", Value::Int(log.partition_count() as i32)),
                ("partition_ids", Value::Array(Array::from(ids))),
            ]);
            (200, "OK".to_owned(), body)
        }
        Some("com.microsoft:partition") => {
            let partition = text_property(request, "partition").unwrap_or_default();
            let info = partition
                .parse::<u32>()
                .ok()
                .and_then(|p| log.partition_info(p));
            let Some(info) = info else {
                return (
                    404,
                    format!("the partition '{partition}' does not exist"),
                    Value::Null,
                );
            };
            let last_time = info
                .last_enqueued_time
                .map_or(Timestamp::from_milliseconds(NO_TIME_MS), timestamp);
            let body = map(vec![
                ("name", Value::String(endpoint.event_hub.clone())),
                ("type", Value::String("com.microsoft:partition".to_owned())),
                ("partition", Value::String(partition)),
                (
                    "begin_sequence_number",
                    Value::Long(info.begin_sequence_number),
                ),
                (
                    "last_enqueued_sequence_number",
                    Value::Long(info.last_sequence_number),
                ),
                (
                    "last_enqueued_offset",
                    Value::String(info.last_offset.to_string()),
                ),
                ("last_enqueued_time_utc", Value::Timestamp(last_time)),
                ("is_partition_empty", Value::Bool(info.is_empty)),
                ("last_enqueued_sequence_number_epoch", Value::Long(0)),
            ]);
            (200, "OK".to_owned(), body)
        }
        other => (
            400,
            format!("unsupported type {:?}", other.unwrap_or("")),
            Value::Null,
        ),
    }
}

/// Serves READ requests on the client's `$management` sender link.
pub(crate) async fn requests(mut receiver: Receiver, conn: Arc<Conn>) {
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        let request = delivery.message();
        let (status, description, body) = answer(&conn, request);
        tracing::info!(peer = %conn.peer, status, description = %description, "Event Hubs management request");
        let answer = reply(request, status, &description, body);
        if receiver.accept(&delivery).await.is_err() {
            break;
        }
        if !conn.management.send(answer).await {
            tracing::info!(peer = %conn.peer, "Event Hubs management reply dropped: no response link");
        }
    }
}
