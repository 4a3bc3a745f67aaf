//! `iothub-local`: an Azure IoT Hub on this machine, for the official SDKs, our examples and
//! your tests.
//!
//! It prints, one per line, `IOTHUB_CONNECTION_STRING=…`, `IOTHUB_AMQP_CONNECTION_STRING=…` (the
//! same with `HostName=host:PORT` when AMQP is not on 5671, for clients that take the port from
//! there, such as azure-iothub for Node), `IOTHUB_CA_FILE=…`, one
//! `IOTHUB_DEVICE_CONNECTION_STRING_<ID>=…` per `--device` (for `--device ID:x509` also
//! `IOTHUB_DEVICE_CERT_FILE_<ID>=…` and `IOTHUB_DEVICE_KEY_FILE_<ID>=…`), one
//! `IOTHUB_MODULE_CONNECTION_STRING_<DEVICE>_<MODULE>='…'` per `--module` (single-quoted, so the
//! line can be `source`d or `eval`ed by a shell despite the `;`s),
//! `EVENTHUB_CONNECTION_STRING="…"` (the built-in Event Hubs-compatible endpoint's connection
//! string as the portal shows it, over TLS; quoted so that the line can be `source`d),
//! `EVENTHUB_EMULATOR_CONNECTION_STRING="…"` (the same endpoint over plain TCP with
//! `UseDevelopmentEmulator=true`), `EVENTHUB_PORT=…` and `EVENTHUB_EMULATOR_PORT=…`, then `ready`; it logs connections,
//! C2D sends and their dispositions, and feedback deliveries to stderr (`RUST_LOG` sets the
//! level) and stops on Ctrl-C.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iothub::SasKey;
use iothub::local_hub::LocalHub;
use iothub::protocol::ports::{AMQP_TLS_PORT, HTTPS_PORT, MQTT_TLS_PORT};
use tracing_subscriber::prelude::*;

/// An Azure IoT Hub on loopback: MQTT (TLS and WebSockets) for devices, AMQP (TLS and
/// WebSockets) for C2D sends and feedback, HTTPS for the registry.
#[derive(Parser, Debug)]
#[command(name = "iothub-local", version, about)]
struct Args {
    /// The hub's host name, as clients write it in `HostName`.
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// MQTT over TLS port (0: any free port).
    #[arg(long, default_value_t = MQTT_TLS_PORT)]
    mqtt_port: u16,
    /// HTTPS and WebSocket port (0: any free port).
    #[arg(long, default_value_t = HTTPS_PORT)]
    https_port: u16,
    /// AMQP over TLS port, for the service endpoint (0: any free port).
    #[arg(long, default_value_t = AMQP_TLS_PORT)]
    amqp_port: u16,
    /// The built-in Event Hubs-compatible endpoint's TLS port (0: any free port; IoT Hub has
    /// it on 5671 of another host name, which the AMQP port takes here).
    #[arg(long, default_value_t = 0)]
    event_hubs_port: u16,
    /// The same endpoint over plain TCP, for `UseDevelopmentEmulator=true` connection strings
    /// (0: any free port; the Event Hubs emulator uses 5672).
    #[arg(long, default_value_t = 0)]
    event_hubs_emulator_port: u16,
    /// Partitions of the Event Hubs-compatible endpoint (IoT Hub's default: 4).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// A consumer group besides `$Default`; repeatable.
    #[arg(long = "consumer-group", value_name = "NAME")]
    consumer_groups: Vec<String>,
    /// Where to write the CA certificate (PEM) that clients must trust.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// The `iothubowner` policy key, base64 (default: generated).
    #[arg(long, value_name = "BASE64")]
    policy_key: Option<String>,
    /// How long feedback records wait to be batched, in milliseconds (IoT Hub: 15,000).
    #[arg(long, default_value_t = 15_000, value_name = "MS")]
    feedback_flush_ms: u64,
    /// Registers a device, with a key or a generated one; repeatable. `ID:x509` registers a
    /// self-signed X.509 device instead and writes its certificate and key files (PEM) next to
    /// the CA file.
    #[arg(long = "device", value_name = "ID[:BASE64KEY|:x509]")]
    devices: Vec<String>,
    /// A verified CA certificate (PEM file) for X.509 CA-signed devices; repeatable. Devices
    /// registered as `certificateAuthority` connect with a certificate it signed whose
    /// subject CN is the device id.
    #[arg(long = "x509-ca", value_name = "FILE")]
    x509_cas: Vec<PathBuf>,
    /// Registers a module of a device, with a key or a generated one; repeatable. The device
    /// is registered too (generated key) unless a `--device` names it.
    #[arg(long = "module", value_name = "DEVICE/MODULE[:BASE64KEY]")]
    modules: Vec<String>,
}

/// Writes `contents` to `path`, readable by the owner only (it may hold a private key).
fn write_private(path: &std::path::Path, contents: &str) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `DEVICE/MODULE[:KEY]`: neither id may contain `/` or `:` (IoT Hub's id rules allow neither).
fn module_spec(spec: &str) -> Result<(&str, &str, Option<SasKey>), String> {
    let (device_id, rest) = spec
        .split_once('/')
        .ok_or_else(|| format!("--module {spec}: expected DEVICE/MODULE[:BASE64KEY]"))?;
    let (module_id, key) = match rest.split_once(':') {
        Some((module_id, key)) => {
            let key = SasKey::from_base64(key)
                .map_err(|e| format!("--module {device_id}/{module_id}: {e}"))?;
            (module_id, Some(key))
        }
        None => (rest, None),
    };
    Ok((device_id, module_id, key))
}

fn env_name(device_id: &str) -> String {
    device_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

async fn run(args: Args) -> Result<(), String> {
    for spec in &args.modules {
        module_spec(spec)?;
    }
    let mut builder = LocalHub::builder()
        .host_name(&args.hostname)
        .bind_address(args.bind)
        .mqtt_port(args.mqtt_port)
        .https_port(args.https_port)
        .amqp_port(args.amqp_port)
        .event_hubs_port(args.event_hubs_port)
        .event_hubs_emulator_port(args.event_hubs_emulator_port)
        .event_hubs_partitions(args.partitions)
        .feedback_flush_interval(std::time::Duration::from_millis(args.feedback_flush_ms));
    for path in &args.x509_cas {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("--x509-ca {}: {e}", path.display()))?;
        builder = builder.x509_ca_pem(pem);
    }
    for group in &args.consumer_groups {
        builder = builder.consumer_group(group);
    }
    if let Some(key) = &args.policy_key {
        let key = SasKey::from_base64(key).map_err(|e| format!("--policy-key: {e}"))?;
        builder = builder.policy_key(key);
    }
    let hub = builder.start().await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        format!("{e}{cause}")
    })?;
    let ca_path = args.ca_out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("iothub-local-{}-ca.pem", std::process::id()))
    });
    std::fs::write(&ca_path, hub.ca_pem())
        .map_err(|e| format!("cannot write the CA to {}: {e}", ca_path.display()))?;
    let mut out = std::io::stdout().lock();
    let mut lines = vec![
        format!(
            "IOTHUB_CONNECTION_STRING={}",
            hub.service_connection_string()
        ),
        format!(
            "IOTHUB_AMQP_CONNECTION_STRING={}",
            hub.amqp_connection_string()
        ),
        format!("IOTHUB_CA_FILE={}", ca_path.display()),
    ];
    let files_dir = ca_path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    for spec in &args.devices {
        if let Some(id) = spec.strip_suffix(":x509") {
            let device = hub
                .create_x509_device(id)
                .map_err(|e| format!("--device {spec}: {e}"))?;
            let stem = format!("iothub-local-{}-{}", std::process::id(), env_name(id));
            let cert_path = files_dir.join(format!("{stem}.pem"));
            let key_path = files_dir.join(format!("{stem}.key"));
            write_private(&cert_path, &device.certificate_pem)?;
            write_private(&key_path, &device.private_key_pem)?;
            let name = env_name(id);
            lines.push(format!(
                "IOTHUB_DEVICE_CONNECTION_STRING_{name}={}",
                device.connection_string
            ));
            lines.push(format!(
                "IOTHUB_DEVICE_CERT_FILE_{name}={}",
                cert_path.display()
            ));
            lines.push(format!(
                "IOTHUB_DEVICE_KEY_FILE_{name}={}",
                key_path.display()
            ));
            continue;
        }
        let (id, key) = match spec.split_once(':') {
            Some((id, key)) => {
                let key = SasKey::from_base64(key).map_err(|e| format!("--device {id}: {e}"))?;
                (id, Some(key))
            }
            None => (spec.as_str(), None),
        };
        let cs = match key {
            Some(key) => hub.create_device_with_key(id, key),
            None => hub.create_device(id),
        }
        .map_err(|e| format!("--device {id}: {e}"))?;
        lines.push(format!(
            "IOTHUB_DEVICE_CONNECTION_STRING_{}={cs}",
            env_name(id)
        ));
    }
    for spec in &args.modules {
        let (device_id, module_id, key) = module_spec(spec)?;
        if hub.device_connection_string(device_id).is_none() {
            let cs = hub
                .create_device(device_id)
                .map_err(|e| format!("--module {device_id}/{module_id}: {e}"))?;
            lines.push(format!(
                "IOTHUB_DEVICE_CONNECTION_STRING_{}={cs}",
                env_name(device_id)
            ));
        }
        let cs = match key {
            Some(key) => hub.create_module_with_key(device_id, module_id, key),
            None => hub.create_module(device_id, module_id),
        }
        .map_err(|e| format!("--module {device_id}/{module_id}: {e}"))?;
        lines.push(format!(
            "IOTHUB_MODULE_CONNECTION_STRING_{}_{}='{cs}'",
            env_name(device_id),
            env_name(module_id)
        ));
    }
    lines.push(format!(
        "EVENTHUB_CONNECTION_STRING=\"{}\"",
        hub.event_hubs_connection_string()
    ));
    lines.push(format!(
        "EVENTHUB_EMULATOR_CONNECTION_STRING=\"{}\"",
        hub.event_hubs_emulator_connection_string()
    ));
    lines.push(format!("EVENTHUB_PORT={}", hub.event_hubs_addr().port()));
    lines.push(format!(
        "EVENTHUB_EMULATOR_PORT={}",
        hub.event_hubs_emulator_addr().port()
    ));
    lines.push("ready".to_owned());
    for line in lines {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    tracing::info!(
        mqtt = %hub.mqtt_addr(),
        https = %hub.https_addr(),
        amqp = %hub.amqp_addr(),
        event_hubs = %hub.event_hubs_addr(),
        event_hubs_emulator = %hub.event_hubs_emulator_addr(),
        "serving; Ctrl-C stops"
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    tracing::info!("stopping");
    hub.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    // tungstenite logs WebSocket frames whole at TRACE, SAS tokens included
    // (`iothub::log_targets`): those lines never reach the log, whatever RUST_LOG says.
    let hide_frames = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE
            && iothub::log_targets::websocket_frame_target(meta.target()))
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_filter(hide_frames),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("iothub-local: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iothub-local: {e}");
            ExitCode::FAILURE
        }
    }
}
