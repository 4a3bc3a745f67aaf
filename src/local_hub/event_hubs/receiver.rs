//! Partition receivers: `{EntityPath}/ConsumerGroups/{group}/Partitions/{n}`.
//!
//! The source address is relative (azure-sdk-for-js
//! `sdk/eventhub/event-hubs/src/eventhubConnectionConfig.ts`) or a full
//! `amqps://host[:port]/…` URL (azure-sdk-for-python `azure/eventhub/_consumer_client.py`;
//! azure_messaging_eventhubs `src/consumer/mod.rs`); path segments compare
//! case-insensitively. The start position comes from the selector filter ([`super::filter`]).
//!
//! Events go out pre-settled, one at a time, each only when the client has granted credit:
//! a reader that grants none holds one event in memory, however large the backlog. Node
//! grants about 3 at a time, Python 300, fe2o3 300 (azure-sdk-for-js `partitionReceiver.ts`;
//! azure-sdk-for-python `azure/eventhub/_pyamqp/client.py`).
//!
//! Owner levels: a receiver may attach with the link property `com.microsoft:epoch` (a long).
//! A receiver with a higher epoch on the same partition and consumer group detaches the others
//! with `amqp:link:stolen`, which every SDK surfaces as "ownership lost" without retrying
//! (azure-sdk-for-python `azure/eventhub/_transport/_pyamqp_transport.py`; azure-sdk-for-js
//! `sdk/core/core-amqp/src/errors.ts`, `ReceiverDisconnectedError`); a receiver with a lower
//! epoch, or without one while an epoch receiver is attached, is refused the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fe2o3_amqp::Sender;
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp_types::definitions::{AmqpError, Error as AmqpErrorInfo, LinkError};
use fe2o3_amqp_types::performatives::Attach;
use fe2o3_amqp_types::primitives::{Symbol, Value};
use tokio::sync::Notify;

use super::event_message::event_message;
use super::filter::position_from_filter_set;
use super::{Conn, amqp_error};
use crate::local_hub::telemetry_log::{Cursor, Next, Position, PositionError};
use crate::protocol::amqp_error as conditions;

/// The link property carrying the owner level.
const EPOCH: &str = "com.microsoft:epoch";

/// A partition receiver's request, checked before the link is answered.
#[derive(Debug)]
pub(crate) struct PartitionRequest {
    key: (u32, String),
    cursor: Cursor,
    epoch: Option<i64>,
}

fn not_found(what: &str) -> AmqpErrorInfo {
    amqp_error(AmqpError::NotFound, what)
}

fn argument_error(what: &str) -> AmqpErrorInfo {
    AmqpErrorInfo::new(
        conditions::condition_from_symbol(conditions::ARGUMENT_ERROR),
        what.to_owned(),
        None,
    )
}

/// Checks the address, consumer group, partition, filter and epoch of a receiver's ATTACH.
pub(crate) fn request(
    conn: &Conn,
    path: &str,
    attach: &Attach,
) -> Result<PartitionRequest, AmqpErrorInfo> {
    let endpoint = &conn.endpoint;
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let [entity, groups, group, partitions, partition] = segments[..] else {
        return Err(not_found("no such node"));
    };
    if !entity.eq_ignore_ascii_case(&endpoint.event_hub)
        || !groups.eq_ignore_ascii_case("ConsumerGroups")
        || !partitions.eq_ignore_ascii_case("Partitions")
    {
        return Err(not_found(&format!(
            "the messaging entity '{path}' could not be found"
        )));
    }
    let group = endpoint
        .log
        .consumer_group(group)
        .ok_or_else(|| not_found(&format!("the consumer group '{group}' does not exist")))?;
    let partition: u32 = partition
        .parse()
        .ok()
        .filter(|p| *p < endpoint.log.partition_count())
        .ok_or_else(|| not_found(&format!("the partition '{partition}' does not exist")))?;
    let filters = attach.source.as_ref().and_then(|s| s.filter.as_ref());
    let position = position_from_filter_set(filters)
        .map_err(|e| argument_error(&e.to_string()))?
        .unwrap_or(Position::Earliest);
    let cursor = endpoint
        .log
        .cursor(partition, &position)
        .map_err(|e| match e {
            PositionError::UnknownPartition => not_found(&e.to_string()),
            PositionError::PastEnd { .. } => argument_error(&e.to_string()),
        })?;
    let epoch = attach
        .properties
        .as_ref()
        .and_then(|p| p.get(&Symbol::from(EPOCH)))
        .and_then(|v| match v {
            Value::Long(n) => Some(*n),
            Value::Int(n) => Some(i64::from(*n)),
            _ => None,
        });
    Ok(PartitionRequest {
        key: (partition, group.to_ascii_lowercase()),
        cursor,
        epoch,
    })
}

struct Owner {
    id: u64,
    epoch: Option<i64>,
    stolen: Arc<Notify>,
}

/// The receivers attached per partition and consumer group, for owner levels.
#[derive(Default)]
pub(crate) struct Owners {
    by_key: Mutex<HashMap<(u32, String), Vec<Owner>>>,
    next_id: AtomicU64,
}

impl Owners {
    /// Registers a receiver, detaching the ones it outranks; `Err` when it is outranked.
    fn claim(
        &self,
        key: &(u32, String),
        epoch: Option<i64>,
    ) -> Result<(u64, Arc<Notify>), AmqpErrorInfo> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let owners = by_key.entry(key.clone()).or_default();
        let highest = owners.iter().filter_map(|o| o.epoch).max();
        match (epoch, highest) {
            (Some(mine), Some(theirs)) if mine < theirs => {
                return Err(stolen(&format!(
                    "a receiver with a higher epoch ({theirs}) owns this partition"
                )));
            }
            (None, Some(theirs)) => {
                return Err(stolen(&format!(
                    "a receiver with epoch {theirs} owns this partition"
                )));
            }
            (Some(_), _) => {
                for owner in owners.drain(..) {
                    owner.stolen.notify_one();
                }
            }
            (None, None) => {}
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stolen = Arc::new(Notify::new());
        owners.push(Owner {
            id,
            epoch,
            stolen: stolen.clone(),
        });
        Ok((id, stolen))
    }

    fn release(&self, key: &(u32, String), id: u64) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owners) = by_key.get_mut(key) {
            owners.retain(|o| o.id != id);
            if owners.is_empty() {
                by_key.remove(key);
            }
        }
    }
}

fn stolen(description: &str) -> AmqpErrorInfo {
    amqp_error(LinkError::Stolen, description)
}

/// Why the delivery loop stopped.
enum End {
    Detached,
    Stolen,
    Lapsed,
}

/// Delivers the partition's events on `sender` until the client detaches, a higher epoch
/// takes over or the token lapses.
pub(crate) async fn run(mut sender: Sender, request: PartitionRequest, conn: Arc<Conn>) {
    let endpoint = conn.endpoint.clone();
    let (id, stolen_signal) = match endpoint.owners.claim(&request.key, request.epoch) {
        Ok(claimed) => claimed,
        Err(error) => {
            tracing::info!(peer = %conn.peer, partition = request.key.0, "Event Hubs receiver outranked");
            let _ = sender.close_with_error(error).await;
            return;
        }
    };
    let end = deliver(&mut sender, request.cursor, &conn, &stolen_signal).await;
    endpoint.owners.release(&request.key, id);
    let _ = match end {
        End::Detached => sender.close().await,
        End::Stolen => {
            tracing::info!(peer = %conn.peer, partition = request.key.0, "Event Hubs receiver stolen by a higher epoch");
            sender
                .close_with_error(stolen(
                    "a receiver with a higher epoch took over this partition",
                ))
                .await
        }
        End::Lapsed => {
            sender
                .close_with_error(amqp_error(
                    AmqpError::UnauthorizedAccess,
                    "the token has expired",
                ))
                .await
        }
    };
}

async fn deliver(sender: &mut Sender, mut cursor: Cursor, conn: &Conn, stolen: &Notify) -> End {
    let log = &conn.endpoint.log;
    let Some(mut appended) = log.watch(cursor.partition) else {
        return End::Detached;
    };
    loop {
        match log.next(&mut cursor) {
            Next::Event(event) => {
                let sendable = Sendable::builder()
                    .message(event_message(&event))
                    .settled(true)
                    .build();
                tokio::select! {
                    sent = sender.send(sendable) => if sent.is_err() { return End::Detached },
                    _ = stolen.notified() => return End::Stolen,
                    _ = conn.lapsed() => return End::Lapsed,
                }
            }
            Next::FellBehind { missed } => {
                tracing::warn!(peer = %conn.peer, partition = cursor.partition, missed, "Event Hubs receiver fell behind retention");
            }
            Next::Empty => {
                tokio::select! {
                    changed = appended.changed() => if changed.is_err() { return End::Detached },
                    _ = sender.on_detach() => return End::Detached,
                    _ = stolen.notified() => return End::Stolen,
                    _ = conn.lapsed() => return End::Lapsed,
                }
            }
        }
    }
}
