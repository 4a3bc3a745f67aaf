//! The back end of Microsoft's quickstart "Send telemetry from a device to an IoT hub and read
//! it with a back-end application" (`ReadD2cMessages` in the C# samples,
//! `read_device_to_cloud_messages_sync.py` in the Python ones): it reads device-to-cloud
//! telemetry from the hub's built-in Event Hubs-compatible endpoint with the official Event Hubs
//! SDK for Rust, `azure_messaging_eventhubs`, and prints each event's body, the application
//! properties the device set and the system properties IoT Hub added
//! (`iothub-connection-device-id`, `iothub-enqueuedtime`, `x-opt-sequence-number`, …).
//!
//! On its own it starts a [`LocalHub`] and a simulated device (the quickstart's
//! `SimulatedDevice`: temperature and humidity with a `temperatureAlert` property), reads the
//! device's messages back and exits:
//!
//! ```sh
//! cargo run -p iothub-benches --example read_device_to_cloud_messages
//! ```
//!
//! Against a running `iothub-local`, set `EVENTHUB_CONNECTION_STRING` to the hub's
//! `EVENTHUB_EMULATOR_CONNECTION_STRING` (or export both as `iothub-local` prints them: the
//! emulator one is preferred); it then reads every partition from its oldest retained event
//! until Ctrl-C:
//!
//! ```sh
//! EVENTHUB_CONNECTION_STRING="$EVENTHUB_EMULATOR_CONNECTION_STRING" \
//!   cargo run -p iothub-benches --example read_device_to_cloud_messages
//! ```
//!
//! Plain AMQP only: the SDK's TLS transports (`fe2o3_amqp_rustls`) bring rustls with its default
//! crypto provider, aws-lc-rs, and this workspace keeps one provider (ring). The connection
//! string must therefore be the `UseDevelopmentEmulator=true` form, which the local hub serves
//! without TLS, as the Event Hubs emulator does; the SDK (0.16) takes only the host from
//! `Endpoint`, so the port is given to it as a custom endpoint `amqp://host:port`. Against an IoT
//! Hub in Azure, enable the SDK's default features and drop the custom endpoint.
//!
//! The example lives in the `iothub-benches` workspace member so that neither the library nor
//! the root crate's examples depend on the Event Hubs SDK.

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use azure_messaging_eventhubs::models::{AmqpSimpleValue, AmqpValue, MessageId, ReceivedEventData};
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, StartLocation, StartPosition,
};
use futures_util::StreamExt;
use iothub::Message;
use iothub::device::DeviceClient;
use iothub::local_hub::LocalHub;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// The simulated device of the embedded run.
const DEVICE_ID: &str = "myFirstDevice";
/// Messages the simulated device sends in the embedded run.
const MESSAGE_COUNT: usize = 5;
/// How long the embedded run waits for anything before it gives up.
const WAIT: Duration = Duration::from_secs(30);
/// The plain AMQP port of an Event Hubs emulator connection string without one.
const AMQP_PORT: u16 = 5672;

#[tokio::main]
async fn main() -> ExitCode {
    let connection_string = [
        "EVENTHUB_EMULATOR_CONNECTION_STRING",
        "EVENTHUB_CONNECTION_STRING",
    ]
    .into_iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    let result = match connection_string {
        Some(connection_string) => {
            // A connection string this example cannot use is a set-up error (exit code 2), as
            // in the repository's other examples.
            if let Err(e) = plain_amqp_endpoint(&connection_string) {
                eprintln!("read_device_to_cloud_messages: EVENTHUB_CONNECTION_STRING: {e}");
                return ExitCode::from(2);
            }
            read_until_ctrl_c(&connection_string).await
        }
        None => run_embedded().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("read_device_to_cloud_messages: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads and prints every event of every partition until Ctrl-C.
async fn read_until_ctrl_c(connection_string: &str) -> Result<(), String> {
    let mut reader = D2cReader::open(connection_string).await?;
    println!("Listening for messages on all partitions. Press Ctrl-C to exit.");
    loop {
        tokio::select! {
            event = reader.next() => match event {
                Some(event) => println!("{}", event?),
                None => return Err("every partition receiver stopped".to_owned()),
            },
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    reader.close().await;
    Ok(())
}

/// A local hub, the quickstart's simulated device, and the reader: the device's messages are
/// read back through the Event Hubs-compatible endpoint and printed.
async fn run_embedded() -> Result<(), String> {
    let hub = LocalHub::builder()
        .start()
        .await
        .map_err(|e| format!("cannot start the local hub: {e}"))?;
    println!(
        "Local IoT Hub '{}' running; Event Hubs-compatible endpoint (plain AMQP) on {}",
        hub.host_name(),
        hub.event_hubs_emulator_addr()
    );
    let device_connection_string = hub
        .create_device(DEVICE_ID)
        .map_err(|e| format!("cannot register {DEVICE_ID}: {e}"))?;
    let device = DeviceClient::builder(device_connection_string)
        .trust_ca_pem(hub.ca_pem())
        .connect()
        .await
        .map_err(|e| format!("the device cannot connect: {e}"))?;

    let mut reader = D2cReader::open(&hub.event_hubs_emulator_connection_string()).await?;
    for i in 0..MESSAGE_COUNT {
        let message = simulated_telemetry(i);
        println!(
            "Sending message: {}",
            message.body_str().unwrap_or_default()
        );
        device
            .send_message(message)
            .await
            .map_err(|e| format!("the device cannot send message {i}: {e}"))?;
    }
    println!("Listening for messages on all partitions.");
    for received in 1..=MESSAGE_COUNT {
        let event = tokio::time::timeout(WAIT, reader.next())
            .await
            .map_err(|_| format!("no event {received} within {WAIT:?}"))?
            .ok_or("every partition receiver stopped")??;
        println!("{event}");
    }
    reader.close().await;
    device
        .close()
        .await
        .map_err(|e| format!("cannot close the device: {e}"))?;
    hub.shutdown().await;
    println!("Done");
    Ok(())
}

/// Message `i` of the quickstart's simulated device: temperature and humidity as JSON, and the
/// `temperatureAlert` application property.
fn simulated_telemetry(i: usize) -> Message {
    let temperature = 20.0 + (i * 7 % 15) as f64;
    let humidity = 60.0 + (i * 11 % 20) as f64;
    Message::new(format!(
        "{{\"temperature\":{temperature:.1},\"humidity\":{humidity:.1}}}"
    ))
    .with_message_id(format!("message-{i}"))
    .with_content_type("application/json")
    .with_content_encoding("utf-8")
    .with_property(
        "temperatureAlert",
        if temperature > 30.0 { "true" } else { "false" },
    )
}

/// One event as the back end sees it.
#[derive(Debug, Clone)]
pub struct D2cEvent {
    /// The partition it was read from.
    pub partition: String,
    /// The telemetry message's body.
    pub body: Vec<u8>,
    /// The properties the device set (AMQP application properties).
    pub application_properties: BTreeMap<String, String>,
    /// What IoT Hub and Event Hubs added: every message annotation (`iothub-*`, `x-opt-*`) and
    /// the AMQP properties (`message-id`, `correlation-id`, `user-id`, `content-type`,
    /// `content-encoding`) that are set.
    pub system_properties: BTreeMap<String, String>,
}

impl D2cEvent {
    fn new(partition: &str, event: &ReceivedEventData) -> D2cEvent {
        let data = event.event_data();
        let raw = event.raw_amqp_message();
        let mut system = BTreeMap::new();
        if let Some(annotations) = &raw.message_annotations {
            for (key, value) in annotations.0.iter() {
                // A key is a symbol (`iothub-connection-device-id`) or a number.
                system.insert(amqp_text(&AmqpValue::from(key.clone())), amqp_text(value));
            }
        }
        if let Some(properties) = &raw.properties {
            let fields = [
                ("message-id", data.message_id().map(message_id_text)),
                ("correlation-id", data.correlation_id().map(message_id_text)),
                (
                    "user-id",
                    properties
                        .user_id
                        .as_deref()
                        .map(|id| String::from_utf8_lossy(id).into_owned()),
                ),
                (
                    "content-type",
                    properties.content_type.as_ref().map(|s| s.0.clone()),
                ),
                (
                    "content-encoding",
                    properties.content_encoding.as_ref().map(|s| s.0.clone()),
                ),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    system.insert(name.to_owned(), value);
                }
            }
        }
        D2cEvent {
            partition: partition.to_owned(),
            body: data.body().unwrap_or_default().to_vec(),
            application_properties: data
                .properties()
                .map(|p| p.iter().map(|(k, v)| (k.clone(), simple_text(v))).collect())
                .unwrap_or_default(),
            system_properties: system,
        }
    }
}

/// Printed as Microsoft's `ReadD2cMessages` prints an event, one line per property; each line
/// ends with a newline.
impl fmt::Display for D2cEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Message received on partition {}:", self.partition)?;
        writeln!(f, "\tMessage body: {}", String::from_utf8_lossy(&self.body))?;
        writeln!(f, "\tApplication properties (set by device):")?;
        for (name, value) in &self.application_properties {
            writeln!(f, "\t\t{name}: {value}")?;
        }
        writeln!(f, "\tSystem properties (set by IoT Hub):")?;
        for (name, value) in &self.system_properties {
            writeln!(f, "\t\t{name}: {value}")?;
        }
        Ok(())
    }
}

/// Every partition of the hub's Event Hubs-compatible endpoint, read from its oldest retained
/// event, with one `azure_messaging_eventhubs` receiver per partition feeding one channel.
pub struct D2cReader {
    consumer: ConsumerClient,
    events: mpsc::Receiver<Result<D2cEvent, String>>,
    receivers: JoinSet<()>,
}

impl D2cReader {
    /// Connects with an Event Hubs connection string in the `UseDevelopmentEmulator=true` form
    /// (see the module docs) and opens a receiver on each partition of consumer group
    /// `$Default`.
    pub async fn open(connection_string: &str) -> Result<D2cReader, String> {
        let endpoint = plain_amqp_endpoint(connection_string)?;
        let consumer = ConsumerClient::builder()
            .with_custom_endpoint(endpoint.clone())
            .open_with_connection_string(connection_string, None)
            .await
            .map_err(|e| format!("cannot connect to the Event Hubs endpoint {endpoint}: {e}"))?;
        let partitions = consumer
            .get_eventhub_properties()
            .await
            .map_err(|e| format!("cannot read the Event Hub's properties: {e}"))?
            .partition_ids;
        let (sender, events) = mpsc::channel(256);
        let mut receivers = JoinSet::new();
        for partition in partitions {
            let options = OpenReceiverOptions {
                start_position: Some(StartPosition {
                    location: StartLocation::Earliest,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let receiver = consumer
                .open_receiver_on_partition(partition.clone(), Some(options))
                .await
                .map_err(|e| format!("cannot open a receiver on partition {partition}: {e}"))?;
            let sender = sender.clone();
            receivers.spawn(async move {
                let mut stream = std::pin::pin!(receiver.stream_events());
                while let Some(item) = stream.next().await {
                    let item = item
                        .map(|event| D2cEvent::new(&partition, &event))
                        .map_err(|e| format!("partition {partition}: {e}"));
                    if sender.send(item).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(D2cReader {
            consumer,
            events,
            receivers,
        })
    }

    /// The next event of any partition, in each partition's order; `None` once every
    /// receiver has stopped.
    pub async fn next(&mut self) -> Option<Result<D2cEvent, String>> {
        self.events.recv().await
    }

    /// Stops the receivers and closes the connection.
    pub async fn close(mut self) {
        self.receivers.shutdown().await;
        let _ = self.consumer.close().await;
    }
}

/// `amqp://host:port` from the connection string's `Endpoint=sb://host[:port]/`, for a
/// `UseDevelopmentEmulator=true` connection string.
pub fn plain_amqp_endpoint(connection_string: &str) -> Result<String, String> {
    let field = |name: &str| {
        connection_string.split(';').find_map(|part| {
            let (key, value) = part.trim().split_once('=')?;
            key.eq_ignore_ascii_case(name).then_some(value)
        })
    };
    if !field("UseDevelopmentEmulator").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(
            "the connection string has no `UseDevelopmentEmulator=true`: this example \
                    reads over plain AMQP; use iothub-local's EVENTHUB_EMULATOR_CONNECTION_STRING \
                    (LocalHub::event_hubs_emulator_connection_string)"
                .to_owned(),
        );
    }
    let endpoint = field("Endpoint").ok_or("the connection string has no `Endpoint`")?;
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(format!("`Endpoint={endpoint}` is not `sb://host[:port]/`"));
    }
    Ok(match authority.rsplit_once(':') {
        Some(_) => format!("amqp://{authority}"),
        None => format!("amqp://{authority}:{AMQP_PORT}"),
    })
}

fn message_id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => u.to_string(),
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn amqp_text(value: &AmqpValue) -> String {
    match value {
        AmqpValue::String(s) => s.clone(),
        AmqpValue::Symbol(s) => s.0.clone(),
        AmqpValue::Boolean(b) => b.to_string(),
        AmqpValue::Int(n) => n.to_string(),
        AmqpValue::Long(n) => n.to_string(),
        AmqpValue::UInt(n) => n.to_string(),
        AmqpValue::ULong(n) => n.to_string(),
        AmqpValue::TimeStamp(t) => t.0.map_or_else(|| "(no time)".to_owned(), utc),
        AmqpValue::Uuid(u) => u.to_string(),
        other => format!("{other:?}"),
    }
}

fn simple_text(value: &AmqpSimpleValue) -> String {
    match value {
        AmqpSimpleValue::String(s) => s.clone(),
        AmqpSimpleValue::Symbol(s) => s.0.clone(),
        AmqpSimpleValue::Boolean(b) => b.to_string(),
        AmqpSimpleValue::Int(n) => n.to_string(),
        AmqpSimpleValue::Long(n) => n.to_string(),
        AmqpSimpleValue::TimeStamp(t) => t.0.map_or_else(|| "(no time)".to_owned(), utc),
        other => format!("{other:?}"),
    }
}

/// A time as ISO 8601 UTC.
fn utc(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{time:?}"))
}
