//! The back-end side of Microsoft's tutorial "Send cloud-to-device messages with IoT Hub"
//! (`SendCloudToDeviceMessage.py`): sends the tutorial's messages to a device, each asking for
//! full delivery feedback, then waits for the hub's feedback on every one of them.
//!
//! ```sh
//! IOTHUB_CONNECTION_STRING='HostName=…;SharedAccessKeyName=service;SharedAccessKey=…' \
//! IOTHUB_DEVICE_ID=dev1 \
//!     cargo run --example send_cloud_to_device_message
//! ```
//!
//! Environment:
//! - `IOTHUB_CONNECTION_STRING` (required): a connection string of a shared access policy
//!   with the *service connect* permission (`service` or `iothubowner`).
//! - `IOTHUB_DEVICE_ID` (required): the device to send to.
//! - `IOTHUB_CA_FILE` (optional): a PEM file of a CA to trust besides the system's, such as
//!   the one `iothub-local` writes. (`SSL_CERT_FILE` pointing at it works too, in place of the
//!   system's roots.)
//! - `IOTHUB_AMQP_PORT`, `IOTHUB_HTTPS_PORT` (optional): the hub's ports when they are not
//!   IoT Hub's 5671 and 443, as for an `iothub-local` started with other ports.
//!
//! Options: `--timeout SECS` (default 60) bounds the wait for feedback; `--no-feedback` exits
//! once the messages are sent.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iothub::service::{DeviceConnectionState, RegistryManager};
use iothub::{Ack, Message};

/// How many messages to send (the tutorial's `MESSAGE_COUNT`).
const MESSAGE_COUNT: usize = 2;
/// The tutorial's average wind speed; each message reports a little more.
const AVG_WIND_SPEED: f64 = 10.0;

const CONNECTION_STRING_VAR: &str = "IOTHUB_CONNECTION_STRING";
const DEVICE_ID_VAR: &str = "IOTHUB_DEVICE_ID";
const CA_FILE_VAR: &str = "IOTHUB_CA_FILE";
const AMQP_PORT_VAR: &str = "IOTHUB_AMQP_PORT";
const HTTPS_PORT_VAR: &str = "IOTHUB_HTTPS_PORT";

const USAGE: &str = "usage: send_cloud_to_device_message [--timeout SECS] [--no-feedback]
environment: IOTHUB_CONNECTION_STRING and IOTHUB_DEVICE_ID (required); IOTHUB_CA_FILE,
IOTHUB_AMQP_PORT, IOTHUB_HTTPS_PORT (optional)";

/// A failure, with the exit code it gives: 2 for a mistake in the set-up, 1 otherwise.
struct Failure {
    code: u8,
    message: String,
}

fn setup(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

fn runtime(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

struct Options {
    timeout: Duration,
    feedback: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("send_cloud_to_device_message: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn parse_args() -> Result<Options, Failure> {
    let mut options = Options {
        timeout: Duration::from_secs(60),
        feedback: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let timeout = match arg.as_str() {
            "--no-feedback" => {
                options.feedback = false;
                continue;
            }
            "--timeout" => args.next(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => match other.strip_prefix("--timeout=") {
                Some(value) => Some(value.to_owned()),
                None => return Err(setup(format!("unknown argument '{other}'\n{USAGE}"))),
            },
        };
        let timeout = timeout.ok_or_else(|| setup("--timeout needs a number of seconds"))?;
        match timeout.parse::<u64>() {
            Ok(secs) if secs > 0 => options.timeout = Duration::from_secs(secs),
            _ => {
                return Err(setup(format!(
                    "--timeout: '{timeout}' is not a positive number of seconds"
                )));
            }
        }
    }
    Ok(options)
}

/// A required environment variable.
fn required_var(name: &str) -> Result<String, Failure> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value),
        Ok(_) => Err(setup(format!("{name} is empty"))),
        Err(std::env::VarError::NotPresent) => Err(setup(format!("{name} is not set"))),
        Err(std::env::VarError::NotUnicode(_)) => Err(setup(format!("{name} is not UTF-8"))),
    }
}

/// An optional port number from the environment.
fn port_var(name: &str) -> Result<Option<u16>, Failure> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => match value.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(setup(format!("{name}: '{value}' is not a port number"))),
        },
        Err(std::env::VarError::NotUnicode(_)) => Err(setup(format!("{name} is not UTF-8"))),
    }
}

/// The PEM text of `IOTHUB_CA_FILE`, if it is set.
fn ca_pem() -> Result<Option<String>, Failure> {
    match std::env::var_os(CA_FILE_VAR) {
        None => Ok(None),
        Some(path) if path.is_empty() => Ok(None),
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                setup(format!(
                    "{CA_FILE_VAR}: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(setup(format!(
                    "{CA_FILE_VAR}: {} holds no PEM certificate",
                    path.display()
                )));
            }
            Ok(Some(pem))
        }
    }
}

/// IoT Hub's rule for device ids (the library's check: up to 128 ASCII letters, digits and
/// `-.+%_#*?!(),:=@$'`).
fn check_device_id(id: &str) -> Result<(), Failure> {
    iothub::protocol::check_device_id(id).map_err(|e| setup(format!("{DEVICE_ID_VAR}: {e}")))
}

/// Why feedback did not come, from the registry: a device that is not connected and still
/// has the messages queued never took them while this sample waited.
async fn why_no_feedback(registry: &RegistryManager, device_id: &str) -> String {
    match registry.get_device(device_id).await {
        Ok(device) if device.connection_state == DeviceConnectionState::Disconnected => format!(
            "device '{device_id}' is not connected and never took the messages while this \
             sample waited ({} still queued for it): start the device (for example `cargo run \
             --example simulated_device` with its connection string) and run this again; \
             queued messages wait for it until they expire",
            device.cloud_to_device_message_count
        ),
        Ok(device) => format!(
            "device '{device_id}' is connected but has not completed the messages ({} still \
             queued for it): check that it receives cloud-to-device messages",
            device.cloud_to_device_message_count
        ),
        Err(e) => format!("the device's state could not be read: {e}"),
    }
}

async fn run() -> Result<(), Failure> {
    let options = parse_args()?;
    let connection_string = required_var(CONNECTION_STRING_VAR)?;
    // The error names what is wrong in the string, never the key.
    let mut builder = RegistryManager::from_connection_string(&connection_string)
        .map_err(|e| setup(format!("{CONNECTION_STRING_VAR}: {e}")))?;
    let device_id = required_var(DEVICE_ID_VAR)?;
    check_device_id(&device_id)?;
    if let Some(pem) = ca_pem()? {
        builder = builder.trust_ca_pem(pem);
    }
    if let Some(port) = port_var(AMQP_PORT_VAR)? {
        builder = builder.amqp_port(port);
    }
    if let Some(port) = port_var(HTTPS_PORT_VAR)? {
        builder = builder.https_port(port);
    }
    let registry = builder
        .build()
        .map_err(|e| setup(format!("cannot set up the service client: {e}")))?;

    println!("Starting the Rust IoT Hub C2D Messaging service sample...");
    let mut waiting = BTreeSet::new();
    for i in 0..MESSAGE_COUNT {
        println!("Sending message: {i}");
        let message = tutorial_message(i);
        waiting.extend(message.message_id().map(str::to_owned));
        registry
            .send_c2d_message(&device_id, message)
            .await
            .map_err(|e| runtime(format!("cannot send message {i}: {e}")))?;
    }
    if !options.feedback {
        println!("Messages sent; not waiting for feedback (--no-feedback)");
        return Ok(());
    }

    println!(
        "Waiting up to {} s for delivery feedback",
        options.timeout.as_secs()
    );
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut feedback = registry.feedback_receiver();
    while !waiting.is_empty() {
        let next = tokio::time::timeout_at(deadline, feedback.recv())
            .await
            .map_err(|_| {
                let missing: Vec<_> = waiting.iter().map(String::as_str).collect();
                format!(
                    "timed out after {} s without feedback for {}",
                    options.timeout.as_secs(),
                    missing.join(", ")
                )
            });
        let next = match next {
            Ok(next) => next,
            Err(timed_out) => {
                let why = why_no_feedback(&registry, &device_id).await;
                return Err(runtime(format!("{timed_out}: {why}")));
            }
        };
        let batch = match next {
            Some(Ok(batch)) => batch,
            // The receiver reconnects by itself; tell the user why it is waiting.
            Some(Err(e)) => {
                eprintln!("feedback receiver: {e}");
                continue;
            }
            None => return Err(runtime("the feedback receiver stopped")),
        };
        for record in batch.records() {
            println!(
                "Feedback for {}: {} (device {})",
                record.original_message_id, record.status_code, record.device_id
            );
            if record.device_id == device_id {
                waiting.remove(&record.original_message_id);
            }
        }
        // Completing the batch removes it from the hub's feedback queue.
        batch
            .complete()
            .await
            .map_err(|e| runtime(format!("cannot complete the feedback batch: {e}")))?;
    }
    println!("Every message has its feedback");
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

/// A number in [0, 1), random enough for a simulated wind speed.
fn random_unit() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1_000_000) / 1_000_000.0
}
