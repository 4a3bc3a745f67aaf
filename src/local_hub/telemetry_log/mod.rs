//! The hub's retained, partitioned log of device telemetry: what the built-in Event
//! Hubs-compatible endpoint serves and what in-process readers follow.
//!
//! Every accepted telemetry message is appended to one partition, chosen from the device id
//! with IoT Hub's hash ([`partition_for`]), with what IoT Hub stamps on it (device and module
//! id, auth method, generation id, enqueued time, message source). Within a partition each
//! event gets the next sequence number (from 0) and an offset (the bytes stored before it,
//! given to clients as a decimal string, as Event Hubs does: "x-opt-offset" is an AMQP string,
//! azure-sdk-for-python `azure/eventhub/_common.py`, `EventData.offset`).
//!
//! Retention drops the oldest events of a partition once it holds more than the configured
//! count or bytes, or when they are older than the configured age; nothing else drops an
//! event. A reader holds a [`Cursor`] (the next sequence number it wants); when retention
//! passed it by, [`TelemetryLog::next`] says so ([`Next::FellBehind`]) instead of silently
//! skipping. Readers wait for new events with [`TelemetryLog::watch`].
//!
//! Sans-IO apart from the Tokio `watch` channels: time is passed in (the hub's clock).

mod partition_hash;
mod position;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::message::Message;

pub(crate) use partition_hash::partition_for;
pub(crate) use position::{Position, PositionError};

/// The consumer group every Event Hub has (MicrosoftDocs
/// `iot-hub-devguide-messages-read-builtin.md`).
pub(crate) const DEFAULT_CONSUMER_GROUP: &str = "$Default";

/// IoT Hub's `iothub-message-source` for device telemetry (MicrosoftDocs
/// `iot-hub-devguide-messages-construct.md`, "System properties").
pub(crate) const TELEMETRY_SOURCE: &str = "Telemetry";

/// How long and how much the log keeps, per partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Events kept per partition at most.
    pub max_events: usize,
    /// Stored bytes (bodies, properties, stamps) kept per partition at most.
    pub max_bytes: usize,
    /// Events older than this are dropped (IoT Hub's default retention is one day,
    /// MicrosoftDocs `iot-hub-devguide-messages-read-builtin.md`).
    pub max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// The log's shape: partitions, consumer groups and retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogSettings {
    /// The number of partitions (IoT Hub's default is 4; at least 1).
    pub partition_count: u32,
    /// Consumer groups besides `$Default`.
    pub consumer_groups: Vec<String>,
    /// What each partition keeps.
    pub retention: Retention,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            partition_count: 4,
            consumer_groups: Vec::new(),
            retention: Retention::default(),
        }
    }
}

/// How the sender authenticated, as IoT Hub writes it in `iothub-connection-auth-method`:
/// `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`
/// (MicrosoftDocs `iot-hub-devguide-messages-construct.md`, "Anti-spoofing properties").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AuthMethod {
    /// `device`, `module` or `hub` (a DeviceConnect policy token).
    pub scope: &'static str,
    /// `sas`, `symkey` or `x509`.
    pub kind: &'static str,
}

impl AuthMethod {
    /// The JSON text IoT Hub puts in the annotation.
    pub fn to_json(self) -> String {
        serde_json::json!({
            "scope": self.scope,
            "type": self.kind,
            "issuer": "iothub",
            "acceptingIpFilterRule": null,
        })
        .to_string()
    }
}

/// What IoT Hub stamps on a telemetry message when it accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamps {
    /// `iothub-connection-device-id`.
    pub device_id: String,
    /// `iothub-connection-module-id`, for module telemetry.
    pub module_id: Option<String>,
    /// `iothub-connection-auth-method`.
    pub auth_method: AuthMethod,
    /// `iothub-connection-auth-generation-id`: the identity's generation id.
    pub generation_id: String,
}

/// One retained event.
#[derive(Clone, Debug)]
pub(crate) struct TelemetryEvent {
    /// The partition it is in.
    pub partition: u32,
    /// Its sequence number in the partition (`x-opt-sequence-number`).
    pub sequence_number: i64,
    /// Its offset in the partition (`x-opt-offset`, sent as a string).
    pub offset: i64,
    /// When the hub accepted it (`x-opt-enqueued-time` and `iothub-enqueuedtime`).
    pub enqueued_time: SystemTime,
    /// What IoT Hub stamps.
    pub stamps: Stamps,
    /// `iothub-message-source`.
    pub source: &'static str,
    /// The device's message.
    pub message: Message,
}

/// Where a reader is: the next sequence number it wants from a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The partition read.
    pub partition: u32,
    /// The next sequence number to read.
    pub next_sequence: i64,
}

/// The outcome of [`TelemetryLog::next`].
#[derive(Clone, Debug)]
pub(crate) enum Next {
    /// The next event; the cursor moved past it.
    Event(Arc<TelemetryEvent>),
    /// Nothing new yet: wait on [`TelemetryLog::watch`].
    Empty,
    /// Retention dropped events the reader had not read; the cursor moved to the first
    /// retained one.
    FellBehind {
        /// Events the reader lost.
        missed: u64,
    },
}

/// A partition's figures, as the `$management` node reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PartitionInfo {
    /// The first retained sequence number (the next one when empty).
    pub begin_sequence_number: i64,
    /// The last sequence number given out, -1 if none.
    pub last_sequence_number: i64,
    /// The last event's offset, -1 if none.
    pub last_offset: i64,
    /// The last event's enqueued time.
    pub last_enqueued_time: Option<SystemTime>,
    /// Whether no event is retained.
    pub is_empty: bool,
}

struct Partition {
    events: VecDeque<Arc<TelemetryEvent>>,
    bytes: usize,
    /// The sequence number the next append gets.
    next_sequence: i64,
    /// The offset the next append gets.
    next_offset: i64,
    /// The last appended event's offset and enqueued time (kept after retention drops it).
    last: Option<(i64, SystemTime)>,
    /// Carries the next sequence number, so readers wake on appends.
    appended: watch::Sender<i64>,
}

/// The retained, partitioned telemetry log.
pub(crate) struct TelemetryLog {
    settings: LogSettings,
    partitions: Vec<Mutex<Partition>>,
    /// Counts appends to any partition, for readers of several partitions.
    appended_any: watch::Sender<u64>,
    /// Told of each append while its partition is locked (the state directory's hook).
    recorder: std::sync::OnceLock<Recorder>,
}

/// See [`TelemetryLog::set_recorder`].
pub(crate) type Recorder = Box<dyn Fn(&TelemetryEvent) + Send + Sync>;

/// The bytes an event counts for against retention.
fn stored_size(stamps: &Stamps, message: &Message) -> usize {
    let properties: usize = message
        .properties()
        .map(|(k, v)| k.len() + v.map_or(0, str::len))
        .sum();
    let ids = [
        message.message_id(),
        message.correlation_id(),
        message.user_id(),
        message.content_type(),
        message.content_encoding(),
        message.to(),
    ]
    .iter()
    .map(|v| v.map_or(0, str::len))
    .sum::<usize>();
    message.body().len()
        + properties
        + ids
        + stamps.device_id.len()
        + stamps.module_id.as_ref().map_or(0, String::len)
        + stamps.generation_id.len()
        // sequence number, offset, time, partition, auth method and bookkeeping
        + 64
}

/// `at` without its sub-millisecond part.
fn whole_millis(at: SystemTime) -> SystemTime {
    match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => std::time::UNIX_EPOCH + Duration::from_millis(d.as_millis() as u64),
        Err(_) => at,
    }
}

impl TelemetryLog {
    /// An empty log.
    pub fn new(mut settings: LogSettings) -> Self {
        settings.partition_count = settings.partition_count.max(1);
        let partitions = (0..settings.partition_count)
            .map(|_| {
                Mutex::new(Partition {
                    events: VecDeque::new(),
                    bytes: 0,
                    next_sequence: 0,
                    next_offset: 0,
                    last: None,
                    appended: watch::channel(0).0,
                })
            })
            .collect();
        TelemetryLog {
            settings,
            partitions,
            appended_any: watch::channel(0).0,
            recorder: std::sync::OnceLock::new(),
        }
    }

    /// The number of partitions.
    pub fn partition_count(&self) -> u32 {
        self.settings.partition_count
    }

    /// The consumer group as configured if it exists: names compare case-insensitively (the
    /// Python SDK's e2e helper defaults to `$default`, azure-iot-sdk-python
    /// `dev_utils/dev_utils/test_env.py`).
    pub fn consumer_group(&self, name: &str) -> Option<&str> {
        std::iter::once(DEFAULT_CONSUMER_GROUP)
            .chain(self.settings.consumer_groups.iter().map(String::as_str))
            .find(|g| g.eq_ignore_ascii_case(name))
    }

    fn partition(&self, partition: u32) -> Option<MutexGuard<'_, Partition>> {
        let p = self.partitions.get(usize::try_from(partition).ok()?)?;
        Some(p.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Appends a telemetry message accepted at `now`; returns the stored event.
    pub fn append(&self, stamps: Stamps, message: Message, now: SystemTime) -> Arc<TelemetryEvent> {
        let partition = partition_for(&stamps.device_id, self.settings.partition_count);
        let size = stored_size(&stamps, &message);
        let mut p = self
            .partition(partition)
            .expect("partition_for stays below the partition count");
        // Enqueued times are kept to the millisecond, as they go on the wire (an AMQP
        // timestamp), so that a time filter compares what the reader saw; and they never go
        // backwards within a partition, so time filters can bisect.
        let now = whole_millis(now);
        let enqueued_time = p.last.map_or(now, |(_, last)| last.max(now));
        let event = Arc::new(TelemetryEvent {
            partition,
            sequence_number: p.next_sequence,
            offset: p.next_offset,
            enqueued_time,
            stamps,
            source: TELEMETRY_SOURCE,
            message,
        });
        p.events.push_back(event.clone());
        if let Some(record) = self.recorder.get() {
            record(&event);
        }
        p.bytes += size;
        p.next_sequence += 1;
        p.next_offset += i64::try_from(size).unwrap_or(i64::MAX);
        p.last = Some((event.offset, enqueued_time));
        self.trim(&mut p, now);
        let next = p.next_sequence;
        p.appended.send_replace(next);
        drop(p);
        self.appended_any.send_modify(|n| *n = n.wrapping_add(1));
        event
    }

    /// Drops what retention no longer allows in every partition (appends do this for their own
    /// partition; call this from a timer for age-based retention of idle partitions).
    pub fn expire(&self, now: SystemTime) {
        for p in &self.partitions {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            self.trim(&mut p, now);
        }
    }

    fn trim(&self, p: &mut Partition, now: SystemTime) {
        let r = &self.settings.retention;
        while let Some(oldest) = p.events.front() {
            let too_old = now
                .duration_since(oldest.enqueued_time)
                .is_ok_and(|age| age > r.max_age);
            if p.events.len() <= r.max_events && p.bytes <= r.max_bytes && !too_old {
                break;
            }
            let size = stored_size(&oldest.stamps, &oldest.message);
            p.bytes = p.bytes.saturating_sub(size);
            p.events.pop_front();
        }
    }

    /// A cursor at `position` in `partition`, resolved now: `Latest` means "after what is
    /// there now"; positions before the first retained event start at it.
    pub fn cursor(&self, partition: u32, position: &Position) -> Result<Cursor, PositionError> {
        let p = self
            .partition(partition)
            .ok_or(PositionError::UnknownPartition)?;
        let first = p
            .events
            .front()
            .map_or(p.next_sequence, |e| e.sequence_number);
        let next_sequence = position.resolve(&p.events, first, p.next_sequence)?;
        Ok(Cursor {
            partition,
            next_sequence,
        })
    }

    /// The event at `cursor`, moving the cursor past it.
    pub fn next(&self, cursor: &mut Cursor) -> Next {
        let Some(p) = self.partition(cursor.partition) else {
            return Next::Empty;
        };
        let Some(first) = p.events.front().map(|e| e.sequence_number) else {
            if cursor.next_sequence < p.next_sequence {
                let missed = (p.next_sequence - cursor.next_sequence) as u64;
                cursor.next_sequence = p.next_sequence;
                return Next::FellBehind { missed };
            }
            return Next::Empty;
        };
        if cursor.next_sequence < first {
            let missed = (first - cursor.next_sequence) as u64;
            cursor.next_sequence = first;
            return Next::FellBehind { missed };
        }
        let index = usize::try_from(cursor.next_sequence - first).unwrap_or(usize::MAX);
        match p.events.get(index) {
            Some(event) => {
                cursor.next_sequence += 1;
                Next::Event(event.clone())
            }
            None => Next::Empty,
        }
    }

    /// A receiver that changes whenever `partition` gets an event (its value is the next
    /// sequence number); `None` for an unknown partition.
    pub fn watch(&self, partition: u32) -> Option<watch::Receiver<i64>> {
        Some(self.partition(partition)?.appended.subscribe())
    }

    /// A receiver that changes whenever any partition gets an event.
    pub fn watch_all(&self) -> watch::Receiver<u64> {
        self.appended_any.subscribe()
    }

    /// The partition's figures for `$management`; `None` for an unknown partition.
    pub fn partition_info(&self, partition: u32) -> Option<PartitionInfo> {
        let p = self.partition(partition)?;
        let begin = p
            .events
            .front()
            .map_or(p.next_sequence, |e| e.sequence_number);
        Some(PartitionInfo {
            begin_sequence_number: begin,
            last_sequence_number: p.next_sequence - 1,
            last_offset: p.last.map_or(-1, |(offset, _)| offset),
            last_enqueued_time: p.last.map(|(_, t)| t),
            is_empty: p.events.is_empty(),
        })
    }

    /// Events retained in `partition` (0 for an unknown one).
    pub fn retained(&self, partition: u32) -> usize {
        self.partition(partition).map_or(0, |p| p.events.len())
    }
}

/// The state directory's side (`local_hub::store`): a hook told of each append in sequence
/// order, and events read back at start.
impl TelemetryLog {
    /// The settings the log was made with.
    pub fn settings(&self) -> &LogSettings {
        &self.settings
    }

    /// Calls `recorder` with each appended event, in each partition's sequence order (it runs
    /// while the partition is locked: it must not block). Set once.
    pub fn set_recorder(&self, recorder: Recorder) {
        let _ = self.recorder.set(recorder);
    }

    /// Appends an event read back from the state directory, with its own sequence number,
    /// offset and time; events must come in sequence order, and one that does not follow the
    /// last is ignored. Call [`TelemetryLog::expire`] afterwards to apply retention.
    pub fn restore(&self, event: TelemetryEvent) {
        let Some(mut p) = self.partition(event.partition) else {
            return;
        };
        if event.sequence_number < p.next_sequence {
            return;
        }
        if event.sequence_number != p.next_sequence {
            // A gap: what came before it cannot be served in order; start again from here.
            p.events.clear();
            p.bytes = 0;
        }
        let size = stored_size(&event.stamps, &event.message);
        p.next_sequence = event.sequence_number + 1;
        p.next_offset = event
            .offset
            .saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
        p.last = Some((event.offset, event.enqueued_time));
        p.bytes += size;
        p.events.push_back(Arc::new(event));
        let next = p.next_sequence;
        p.appended.send_replace(next);
    }
}

#[cfg(test)]
mod tests;
