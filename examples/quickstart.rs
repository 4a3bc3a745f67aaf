//! The whole of Microsoft's tutorial "Send cloud-to-device messages with IoT Hub" in one
//! process, without an Azure subscription:
//!
//! ```sh
//! cargo run --features local-hub --example quickstart
//! ```
//!
//! It starts a [`LocalHub`] on free ports of 127.0.0.1, registers a device through the
//! registry (as `az iot hub device-identity create` would), connects a [`DeviceClient`] for
//! it, sends the tutorial's two messages with a [`RegistryManager`] asking for full delivery
//! feedback, prints each message the device receives with its data and every property, then
//! prints the delivery feedback the hub sends back for both; last, the device sends one
//! telemetry message and the quickstart reads it back from the hub's telemetry log (the one
//! its Event Hubs-compatible endpoint serves), and exits.
//!
//! `examples/simulated_device.rs` and `examples/send_cloud_to_device_message.rs` are the same
//! two sides as separate programs, for a hub in Azure or `iothub-local`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub::device::DeviceClient;
use iothub::local_hub::LocalHub;
use iothub::service::RegistryManager;
use iothub::{Ack, Message};

/// How many messages the back end sends (the tutorial's `MESSAGE_COUNT`).
const MESSAGE_COUNT: usize = 2;
/// The tutorial's average wind speed; each message reports a little more.
const AVG_WIND_SPEED: f64 = 10.0;
/// The device this quickstart registers.
const DEVICE_ID: &str = "quickstart-device";
/// How long the quickstart waits for anything before it gives up.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    // 1. An IoT Hub on this machine. IoT Hub batches feedback for up to 15 s; the local hub
    //    can release it sooner, so that the quickstart ends within a second or two.
    let hub = LocalHub::builder()
        .feedback_flush_interval(Duration::from_millis(200))
        .start()
        .await
        .map_err(|e| format!("cannot start the local hub: {e}"))?;
    println!(
        "Local IoT Hub '{}' running: MQTT {}, AMQP {}, HTTPS {}",
        hub.host_name(),
        hub.mqtt_addr(),
        hub.amqp_addr(),
        hub.https_addr()
    );

    // 2. The back end: a RegistryManager with the hub's `iothubowner` connection string. A
    //    hub in Azure needs only the connection string; this one has its own CA and ports.
    let registry = RegistryManager::builder(hub.service_connection_string())
        .trust_ca_pem(hub.ca_pem())
        .https_port(hub.https_addr().port())
        .amqp_port(hub.amqp_addr().port())
        .build()
        .map_err(|e| format!("cannot build the registry manager: {e}"))?;

    // 3. Register the device (HTTPS), and take its connection string as the portal shows it.
    registry
        .create_device(DEVICE_ID)
        .await
        .map_err(|e| format!("cannot register {DEVICE_ID}: {e}"))?;
    let device_connection_string = hub
        .device_connection_string(DEVICE_ID)
        .ok_or_else(|| format!("{DEVICE_ID} is not in the registry"))?;
    println!("Registered device '{DEVICE_ID}'");

    // 4. The device (SimulatedDevice): connect over MQTT and subscribe to its C2D messages.
    let device = DeviceClient::builder(device_connection_string)
        .trust_ca_pem(hub.ca_pem())
        .connect()
        .await
        .map_err(|e| format!("the device cannot connect: {e}"))?;
    println!("Device connected, waiting for C2D messages");
    // Telemetry the hub receives from now on (read in step 8).
    let mut telemetry = hub.telemetry();

    // 5. The back end (SendCloudToDeviceMessage): send the tutorial's messages, each asking
    //    for full delivery feedback. `send_c2d_message` returns once the hub has queued it.
    for i in 0..MESSAGE_COUNT {
        println!("Sending message: {i}");
        registry
            .send_c2d_message(DEVICE_ID, tutorial_message(i))
            .await
            .map_err(|e| format!("cannot send message {i}: {e}"))?;
    }

    // 6. The device receives them. In the default `AckMode::Auto` each message is
    //    acknowledged (completed) as `receive_message` hands it over.
    for received in 1..=MESSAGE_COUNT {
        let message = tokio::time::timeout(WAIT, device.receive_message())
            .await
            .map_err(|_| format!("no message {received} within {WAIT:?}"))?
            .map_err(|e| format!("the device stopped: {e}"))?;
        print_message(&message);
        println!("Total calls received: {received}");
    }

    // 7. The hub reports each completion to the back end as a feedback record.
    println!();
    println!("Waiting for delivery feedback");
    let mut feedback = registry.feedback_receiver();
    let mut waiting: Vec<String> = (0..MESSAGE_COUNT).map(|i| format!("message_{i}")).collect();
    while !waiting.is_empty() {
        let batch = tokio::time::timeout(WAIT, feedback.recv())
            .await
            .map_err(|_| format!("no feedback for {} within {WAIT:?}", waiting.join(", ")))?
            .ok_or("the feedback receiver stopped")?
            .map_err(|e| format!("cannot receive feedback: {e}"))?;
        for record in batch.records() {
            println!(
                "Feedback for {}: {} (device {})",
                record.original_message_id, record.status_code, record.device_id
            );
            waiting.retain(|id| *id != record.original_message_id);
        }
        // Completing the batch removes it from the hub's feedback queue.
        batch
            .complete()
            .await
            .map_err(|e| format!("cannot complete the feedback batch: {e}"))?;
    }

    // 8. Device-to-cloud: the device reports how many messages it got; the back end reads the
    //    telemetry back, as an Event Hubs consumer of the built-in endpoint would.
    device
        .send_message(
            Message::new(format!("{{\"messagesReceived\": {MESSAGE_COUNT}}}"))
                .with_content_type("application/json"),
        )
        .await
        .map_err(|e| format!("the device cannot send telemetry: {e}"))?;
    let event = tokio::time::timeout(WAIT, telemetry.recv())
        .await
        .map_err(|_| format!("no telemetry within {WAIT:?}"))?
        .ok_or("the hub stopped")?;
    println!(
        "Telemetry from {} (partition {}, sequence number {}): {}",
        event.device_id,
        event.partition,
        event.sequence_number,
        event.message.body_str().unwrap_or("<binary>")
    );

    device
        .close()
        .await
        .map_err(|e| format!("cannot close the device: {e}"))?;
    hub.shutdown().await;
    println!("Done");
    Ok(())
}

/// Message `i` of the tutorial: a wind speed as JSON, with a message id, a correlation id, a
/// content type, one custom property, and a request for full delivery feedback.
fn tutorial_message(i: usize) -> Message {
    let wind_speed = AVG_WIND_SPEED + random_unit() * 4.0 + 2.0;
    Message::new(format!(
        "{{\"service client sent a message\": {wind_speed:.2}}}"
    ))
    .with_message_id(format!("message_{i}"))
    .with_correlation_id(format!("correlation_{i}"))
    .with_content_type("application/json")
    .with_property("testProperty", format!("PropMsg_{i}"))
    .with_ack(Ack::Full)
}

/// Prints a received message as the tutorial's device does: the data, then every system
/// property the message carries, then its custom properties.
fn print_message(message: &Message) {
    println!();
    println!("Message received:");
    match message.body_str() {
        Some(text) => println!("    data: {text}"),
        None => println!("    data: <{} bytes of binary>", message.body().len()),
    }
    let system = [
        ("message_id", message.message_id()),
        ("correlation_id", message.correlation_id()),
        ("user_id", message.user_id()),
        ("content_type", message.content_type()),
        ("content_encoding", message.content_encoding()),
        ("to", message.to()),
    ];
    for (name, value) in system {
        if let Some(value) = value {
            println!("    {name}: {value}");
        }
    }
    if let Some(expiry) = message.expiry() {
        println!("    expiry_time_utc: {}", utc(expiry));
    }
    if let Some(ack) = message.ack() {
        println!("    ack: {ack}");
    }
    for (name, value) in message.properties() {
        match value {
            Some(value) => println!("    custom property {name}: {value}"),
            None => println!("    custom property {name} (no value)"),
        }
    }
}

/// A time as ISO 8601 UTC.
fn utc(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{time:?}"))
}

/// A number in [0, 1), random enough for a simulated wind speed.
fn random_unit() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
