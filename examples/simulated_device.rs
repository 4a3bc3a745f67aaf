//! The device side of Microsoft's tutorial "Send cloud-to-device messages with IoT Hub"
//! (`SimulatedDevice.py`): connects as a device over MQTT and prints every cloud-to-device
//! message it receives, with its data and properties, and how many it has received.
//!
//! ```sh
//! IOTHUB_DEVICE_CONNECTION_STRING='HostName=…;DeviceId=…;SharedAccessKey=…' \
//!     cargo run --example simulated_device
//! ```
//!
//! Environment:
//! - `IOTHUB_DEVICE_CONNECTION_STRING` (required): the device's connection string.
//! - `IOTHUB_CA_FILE` (optional): a PEM file of a CA to trust besides the system's, such as
//!   the one `iothub-local` writes. (`SSL_CERT_FILE` pointing at it works too, in place of the
//!   system's roots.)
//!
//! Options: `--count N` exits after N messages. Ctrl-C disconnects and exits.

use std::process::ExitCode;
use std::time::SystemTime;

use iothub::Message;
use iothub::device::DeviceClient;

const CONNECTION_STRING_VAR: &str = "IOTHUB_DEVICE_CONNECTION_STRING";
const CA_FILE_VAR: &str = "IOTHUB_CA_FILE";

const USAGE: &str = "usage: simulated_device [--count N]
environment: IOTHUB_DEVICE_CONNECTION_STRING (required), IOTHUB_CA_FILE (optional)";

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

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("simulated_device: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `--count N`, if given.
fn parse_args() -> Result<Option<u64>, Failure> {
    let mut count = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--count" => args.next(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => match other.strip_prefix("--count=") {
                Some(value) => Some(value.to_owned()),
                None => return Err(setup(format!("unknown argument '{other}'\n{USAGE}"))),
            },
        };
        let value = value.ok_or_else(|| setup("--count needs a number"))?;
        match value.parse::<u64>() {
            Ok(n) if n > 0 => count = Some(n),
            _ => {
                return Err(setup(format!(
                    "--count: '{value}' is not a positive number"
                )));
            }
        }
    }
    Ok(count)
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

async fn run() -> Result<(), Failure> {
    let count = parse_args()?;
    let connection_string = required_var(CONNECTION_STRING_VAR)?;
    // The error names what is wrong in the string, never the key.
    let mut builder = DeviceClient::from_connection_string(&connection_string)
        .map_err(|e| setup(format!("{CONNECTION_STRING_VAR}: {e}")))?;
    if let Some(pem) = ca_pem()? {
        builder = builder.trust_ca_pem(pem);
    }

    println!("Starting the Rust IoT Hub C2D Messaging device sample...");
    let client = builder
        .connect()
        .await
        .map_err(|e| runtime(format!("cannot connect: {e}")))?;
    println!("Waiting for C2D messages, press Ctrl-C to exit");

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut received = 0u64;
    let result = loop {
        if count.is_some_and(|count| received >= count) {
            break Ok(());
        }
        tokio::select! {
            message = client.receive_message() => match message {
                Ok(message) => {
                    received += 1;
                    print_message(&message);
                    println!("Total calls received: {received}");
                }
                Err(e) => break Err(runtime(format!("the client stopped: {e}"))),
            },
            _ = &mut ctrl_c => {
                println!("IoT Hub C2D Messaging device sample stopped");
                break Ok(());
            }
        }
    };
    // A clean MQTT DISCONNECT, so the hub sees the device leave at once.
    let _ = client.close().await;
    result
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
