//! `iothub-local`: an Azure IoT Hub on this machine, for the official SDKs, our examples and
//! your tests.
//!
//! It prints one `NAME='value'` line per setting, single-quoted so that the output can be
//! `source`d or `eval`ed by a POSIX shell despite the `;`s of connection strings, then
//! `ready`:
//! - `IOTHUB_CONNECTION_STRING` (the `iothubowner` policy) and `IOTHUB_AMQP_CONNECTION_STRING`
//!   (the same with `HostName=host:PORT` when AMQP is not on 5671, for clients that take the
//!   port from there, such as azure-iothub for Node);
//! - `IOTHUB_CA_FILE`, the CA certificate clients must trust: `--ca-out`, else `ca.pem` in
//!   the state directory, else a temporary file removed when the program stops;
//! - `IOTHUB_MQTT_PORT`, `IOTHUB_HTTPS_PORT`, `IOTHUB_AMQP_PORT`, `EVENTHUB_PORT`,
//!   `EVENTHUB_EMULATOR_PORT`: the ports actually listened on (port 0 picks free ones);
//! - `IOTHUB_DEVICE_ID` and `IOTHUB_DEVICE_CONNECTION_STRING` for the first device (what the
//!   examples read), and `IOTHUB_DEVICE_CONNECTION_STRING_<ID>` for each device (for an X.509
//!   device also `IOTHUB_DEVICE_CERT_FILE_<ID>` and `IOTHUB_DEVICE_KEY_FILE_<ID>`);
//! - `IOTHUB_MODULE_CONNECTION_STRING_<DEVICE>_<MODULE>` for each module;
//! - `EVENTHUB_CONNECTION_STRING` (the built-in Event Hubs-compatible endpoint, over TLS, as
//!   the portal shows it) and `EVENTHUB_EMULATOR_CONNECTION_STRING` (the same endpoint over
//!   plain TCP with `UseDevelopmentEmulator=true`);
//! - `IOTHUB_STATE_DIR` with `--state-dir`.
//!
//! `--env-out FILE` writes the same as `export` lines. `--config FILE` reads settings from JSON
//! (`config.rs`); flags override it. `--state-dir DIR` keeps the hub's state across restarts
//! (`iothub::local_hub::LocalHubBuilder::state_dir`). It logs to stderr (`RUST_LOG` sets the
//! level; colours only on a terminal, never with `NO_COLOR`) and stops on Ctrl-C or SIGTERM.

mod config;
mod output;

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use iothub::SasKey;
use iothub::local_hub::{
    C2dLimits, ConnectionLimits, LocalHub, LocalHubBuilder, TelemetryRetention,
};
use iothub::protocol::ports::{AMQP_TLS_PORT, HTTPS_PORT, MQTT_TLS_PORT};
use tracing_subscriber::prelude::*;

use config::{Authentication, Config, DeviceEntry, ModuleEntry};
use output::{TemporaryFiles, Variables, env_name, write_private};

/// An Azure IoT Hub on loopback: MQTT (TLS and WebSockets) for devices, AMQP (TLS and
/// WebSockets) for C2D sends and feedback, HTTPS for the registry.
#[derive(Parser, Debug)]
#[command(name = "iothub-local", version, about)]
struct Args {
    /// Settings from a JSON file (see docs/local-hub.md, "Config file"); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Keeps the CA, keys, devices, queued messages, feedback and telemetry in DIR across
    /// restarts (default: in memory only).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Also writes the printed settings to FILE as `export NAME='value'` lines.
    #[arg(long, value_name = "FILE")]
    env_out: Option<PathBuf>,
    /// The hub's host name, as clients write it in `HostName` [default: localhost].
    #[arg(long)]
    hostname: Option<String>,
    /// The address to listen on [default: 127.0.0.1].
    #[arg(long)]
    bind: Option<IpAddr>,
    /// MQTT over TLS port (0: any free port) [default: 8883].
    #[arg(long)]
    mqtt_port: Option<u16>,
    /// HTTPS and WebSocket port (0: any free port) [default: 443].
    #[arg(long)]
    https_port: Option<u16>,
    /// AMQP over TLS port, for the service endpoint (0: any free port) [default: 5671].
    #[arg(long)]
    amqp_port: Option<u16>,
    /// The built-in Event Hubs-compatible endpoint's TLS port (0: any free port; IoT Hub has
    /// it on 5671 of another host name, which the AMQP port takes here) [default: 0].
    #[arg(long)]
    event_hubs_port: Option<u16>,
    /// The same endpoint over plain TCP, for `UseDevelopmentEmulator=true` connection strings
    /// (0: any free port; the Event Hubs emulator uses 5672) [default: 0].
    #[arg(long)]
    event_hubs_emulator_port: Option<u16>,
    /// Partitions of the Event Hubs-compatible endpoint [default: 4, as IoT Hub].
    #[arg(long)]
    partitions: Option<u32>,
    /// A consumer group besides `$Default`; repeatable.
    #[arg(long = "consumer-group", value_name = "NAME")]
    consumer_groups: Vec<String>,
    /// Where to write the CA certificate (PEM) that clients must trust.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// The `iothubowner` policy key, base64 (default: generated, or the state directory's).
    #[arg(long, value_name = "BASE64")]
    policy_key: Option<String>,
    /// How long feedback records wait to be batched, in milliseconds [default: 15000, as
    /// IoT Hub].
    #[arg(long, value_name = "MS")]
    feedback_flush_ms: Option<u64>,
    /// Registers a device, with a key or a generated one; repeatable. `ID:x509` registers a
    /// self-signed X.509 device instead and writes its certificate and key files (PEM) next to
    /// the CA file. A device the state directory has already is kept as it is.
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
    /// Threads serving the connections [default: 1]. One thread costs the least CPU per
    /// message: a message's work (AMQP, state, MQTT) never hands off between threads. More
    /// threads spread many busy connections over cores.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// Open connections each listener admits [default: 10000]; past it, new connections are
    /// closed right after they are accepted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Open connections each listener admits from one source address [default: 1000]. A test
    /// rig that simulates more devices from one machine raises it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections_per_address: Option<u32>,
}

fn key(what: &str, text: &str) -> Result<SasKey, String> {
    SasKey::from_base64(text).map_err(|e| format!("{what}: {e}"))
}

/// `--device ID[:KEY|:x509]` as a config entry.
fn device_flag(spec: &str) -> DeviceEntry {
    let (id, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let (authentication, primary_key) = match rest {
        "" => (Authentication::Sas, None),
        "x509" => (Authentication::X509, None),
        key => (Authentication::Sas, Some(key.to_owned())),
    };
    DeviceEntry {
        id: id.to_owned(),
        primary_key,
        authentication,
        modules: Vec::new(),
    }
}

/// `--module DEVICE/MODULE[:KEY]`: neither id may contain `/` or `:`.
fn module_flag(spec: &str) -> Result<(String, ModuleEntry), String> {
    let (device_id, rest) = spec
        .split_once('/')
        .ok_or_else(|| format!("--module {spec}: expected DEVICE/MODULE[:BASE64KEY]"))?;
    let (id, primary_key) = match rest.split_once(':') {
        Some((module_id, key)) => (module_id, Some(key.to_owned())),
        None => (rest, None),
    };
    Ok((
        device_id.to_owned(),
        ModuleEntry {
            id: id.to_owned(),
            primary_key,
        },
    ))
}

/// The config file's devices, then `--device`s, with `--module`s attached (a module's device
/// is added when no entry names it).
fn devices(config: &mut Config, args: &Args) -> Result<Vec<DeviceEntry>, String> {
    let mut devices = std::mem::take(&mut config.devices);
    devices.extend(args.devices.iter().map(|s| device_flag(s)));
    for spec in &args.modules {
        let (device_id, module) = module_flag(spec)?;
        match devices.iter_mut().find(|d| d.id == device_id) {
            Some(device) => device.modules.push(module),
            None => devices.push(DeviceEntry {
                id: device_id,
                primary_key: None,
                authentication: Authentication::Sas,
                modules: vec![module],
            }),
        }
    }
    Ok(devices)
}

/// The builder from the config file, with the flags over it.
fn builder(config: &Config, args: &Args) -> Result<LocalHubBuilder, String> {
    let limits = &config.limits;
    let mut c2d = C2dLimits::new();
    if let Some(v) = limits.c2d_max_pending {
        c2d = c2d.with_max_pending(v);
    }
    if let Some(v) = limits.c2d_max_message_size {
        c2d = c2d.with_max_message_size(v);
    }
    if let Some(v) = limits.c2d_default_ttl_seconds {
        c2d = c2d.with_default_ttl(Duration::from_secs(v));
    }
    if let Some(v) = limits.c2d_max_delivery_count {
        c2d = c2d.with_max_delivery_count(v);
    }
    if let Some(v) = limits.c2d_lock_duration_seconds {
        c2d = c2d.with_lock_duration(Duration::from_secs(v));
    }
    let ports = &config.ports;
    let mut retention = TelemetryRetention::default();
    let r = &config.event_hubs.retention;
    retention.max_events = r.max_events.unwrap_or(retention.max_events);
    retention.max_bytes = r.max_bytes.unwrap_or(retention.max_bytes);
    retention.max_age = r
        .max_age_seconds
        .map_or(retention.max_age, Duration::from_secs);
    let defaults = ConnectionLimits::default();
    let connections = ConnectionLimits::new()
        .with_max_connections(
            (args.max_connections.map(|n| n as usize))
                .or(limits.max_connections)
                .unwrap_or(defaults.max_connections),
        )
        .with_max_connections_per_address(
            (args.max_connections_per_address.map(|n| n as usize))
                .or(limits.max_connections_per_address)
                .unwrap_or(defaults.max_connections_per_address),
        );
    let feedback_ms = args
        .feedback_flush_ms
        .or(limits.feedback_flush_ms)
        .unwrap_or(15_000);
    let mut builder = LocalHub::builder()
        .host_name(
            args.hostname
                .clone()
                .or(config.host_name.clone())
                .unwrap_or_else(|| "localhost".into()),
        )
        .bind_address(
            args.bind
                .or(config.bind)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
        )
        .mqtt_port(args.mqtt_port.or(ports.mqtt).unwrap_or(MQTT_TLS_PORT))
        .https_port(args.https_port.or(ports.https).unwrap_or(HTTPS_PORT))
        .amqp_port(args.amqp_port.or(ports.amqp).unwrap_or(AMQP_TLS_PORT))
        .event_hubs_port(args.event_hubs_port.or(ports.event_hubs).unwrap_or(0))
        .event_hubs_emulator_port(
            args.event_hubs_emulator_port
                .or(ports.event_hubs_emulator)
                .unwrap_or(0),
        )
        .event_hubs_partitions(
            args.partitions
                .or(config.event_hubs.partitions)
                .unwrap_or(4),
        )
        .telemetry_retention(retention)
        .c2d_limits(c2d)
        .connection_limits(connections)
        .feedback_flush_interval(Duration::from_millis(feedback_ms));
    for path in config.x509.ca_files.iter().chain(&args.x509_cas) {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("--x509-ca {}: {e}", path.display()))?;
        builder = builder.x509_ca_pem(pem);
    }
    for group in config
        .event_hubs
        .consumer_groups
        .iter()
        .chain(&args.consumer_groups)
    {
        builder = builder.consumer_group(group);
    }
    for policy in &config.policies {
        let what = format!("policy {}", policy.name);
        let secondary = policy
            .secondary_key
            .as_deref()
            .map(|k| key(&what, k))
            .transpose()?;
        builder = builder.policy_keys(&policy.name, key(&what, &policy.primary_key)?, secondary);
    }
    if let Some(k) = &args.policy_key {
        builder = builder.policy_key(key("--policy-key", k)?);
    }
    if let Some(dir) = args.state_dir.as_ref().or(config.state_dir.as_ref()) {
        builder = builder.state_dir(dir);
    }
    Ok(builder)
}

/// Where the program writes its files, and which of them go when it stops.
struct Files {
    ca: PathBuf,
    dir: PathBuf,
    /// Whether the files go when the program stops.
    temporary: bool,
    /// Whether device files are in the state directory (named by device, reused).
    in_state_dir: bool,
    cleanup: TemporaryFiles,
}

impl Files {
    fn new(ca_out: Option<PathBuf>, state_dir: Option<&Path>) -> Files {
        let pid = std::process::id();
        let (ca, temporary) = match (ca_out, state_dir) {
            (Some(path), _) => (path, false),
            (None, Some(dir)) => (dir.join("ca.pem"), false),
            (None, None) => (
                std::env::temp_dir().join(format!("iothub-local-{pid}-ca.pem")),
                true,
            ),
        };
        let dir = match state_dir {
            Some(dir) => dir.join("devices"),
            None => ca
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(std::env::temp_dir),
        };
        Files {
            ca,
            dir,
            temporary,
            in_state_dir: state_dir.is_some(),
            cleanup: TemporaryFiles::default(),
        }
    }

    fn write(&mut self, path: &Path, contents: &str) -> Result<(), String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        write_private(path, contents)?;
        if self.temporary {
            self.cleanup.add(path.to_owned());
        }
        Ok(())
    }

    fn device_stem(&self, id: &str) -> PathBuf {
        let name = if self.in_state_dir {
            env_name(id)
        } else {
            format!("iothub-local-{}-{}", std::process::id(), env_name(id))
        };
        self.dir.join(name)
    }
}

/// Registers (or, from the state directory, finds) a device and its modules, and sets their
/// variables.
fn register(
    hub: &LocalHub,
    device: &DeviceEntry,
    files: &mut Files,
    vars: &mut Variables,
) -> Result<(), String> {
    let id = device.id.as_str();
    let name = env_name(id);
    let what = format!("device {id}");
    let cs = match device.authentication {
        Authentication::X509 => {
            let stem = files.device_stem(id);
            let (cert, key_file) = (stem.with_extension("pem"), stem.with_extension("key"));
            let cs =
                if hub.device_connection_string(id).is_some() && cert.exists() && key_file.exists()
                {
                    x509_connection_string(hub, id)
                } else {
                    let x509 = hub
                        .create_x509_device(id)
                        .map_err(|e| format!("{what}: {e}"))?;
                    files.write(&cert, &x509.certificate_pem)?;
                    files.write(&key_file, &x509.private_key_pem)?;
                    x509.connection_string.to_string()
                };
            vars.set(format!("IOTHUB_DEVICE_CERT_FILE_{name}"), cert.display());
            vars.set(format!("IOTHUB_DEVICE_KEY_FILE_{name}"), key_file.display());
            cs
        }
        Authentication::Sas => match hub.device_connection_string(id) {
            Some(existing) => {
                if device.primary_key.is_some() {
                    tracing::warn!(
                        device = id,
                        "the device exists already: its stored key is kept"
                    );
                }
                existing.to_string()
            }
            None => match &device.primary_key {
                Some(k) => hub.create_device_with_key(id, key(&what, k)?),
                None => hub.create_device(id),
            }
            .map_err(|e| format!("{what}: {e}"))?
            .to_string(),
        },
    };
    if !vars.has("IOTHUB_DEVICE_CONNECTION_STRING") {
        vars.set("IOTHUB_DEVICE_ID", id);
        vars.set("IOTHUB_DEVICE_CONNECTION_STRING", &cs);
    }
    vars.set(format!("IOTHUB_DEVICE_CONNECTION_STRING_{name}"), cs);
    for module in &device.modules {
        let what = format!("module {id}/{}", module.id);
        let cs = match hub.module_connection_string(id, &module.id) {
            Some(existing) => existing,
            None => match &module.primary_key {
                Some(k) => hub.create_module_with_key(id, &module.id, key(&what, k)?),
                None => hub.create_module(id, &module.id),
            }
            .map_err(|e| format!("{what}: {e}"))?,
        };
        vars.set(
            format!(
                "IOTHUB_MODULE_CONNECTION_STRING_{name}_{}",
                env_name(&module.id)
            ),
            cs,
        );
    }
    Ok(())
}

/// The `x509=true` connection string of a device registered by an earlier run.
fn x509_connection_string(hub: &LocalHub, id: &str) -> String {
    let port = hub.mqtt_addr().port();
    let gateway = if hub.host_name() == "localhost" && port == MQTT_TLS_PORT {
        String::new()
    } else {
        format!(";GatewayHostName=localhost:{port}")
    };
    format!(
        "HostName={};DeviceId={id};x509=true{gateway}",
        hub.host_name()
    )
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let devices = devices(&mut config, &args)?;
    let hub = builder(&config, &args)?.start().await.map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        format!("{e}{cause}")
    })?;
    let state_dir = hub.state_dir().map(Path::to_path_buf);
    let mut files = Files::new(
        args.ca_out.clone().or(config.ca_out.clone()),
        state_dir.as_deref(),
    );
    let ca = files.ca.clone();
    files.write(&ca, hub.ca_pem())?;
    let mut vars = Variables::default();
    vars.set("IOTHUB_CONNECTION_STRING", hub.service_connection_string());
    vars.set(
        "IOTHUB_AMQP_CONNECTION_STRING",
        hub.amqp_connection_string(),
    );
    vars.set("IOTHUB_CA_FILE", ca.display());
    for device in &devices {
        register(&hub, device, &mut files, &mut vars)?;
    }
    vars.set(
        "EVENTHUB_CONNECTION_STRING",
        hub.event_hubs_connection_string(),
    );
    vars.set(
        "EVENTHUB_EMULATOR_CONNECTION_STRING",
        hub.event_hubs_emulator_connection_string(),
    );
    vars.set("IOTHUB_MQTT_PORT", hub.mqtt_addr().port());
    vars.set("IOTHUB_HTTPS_PORT", hub.https_addr().port());
    vars.set("IOTHUB_AMQP_PORT", hub.amqp_addr().port());
    vars.set("EVENTHUB_PORT", hub.event_hubs_addr().port());
    vars.set(
        "EVENTHUB_EMULATOR_PORT",
        hub.event_hubs_emulator_addr().port(),
    );
    if let Some(dir) = &state_dir {
        vars.set("IOTHUB_STATE_DIR", dir.display());
    }
    // Registrations are in the state directory before anyone is told about them.
    hub.persisted().await.map_err(|e| e.to_string())?;
    // Listening for Ctrl-C and SIGTERM before `ready`, so that a stop right after it is clean.
    let stop = Stop::listen()?;
    if let Some(path) = args.env_out.as_ref().or(config.env_out.as_ref()) {
        vars.write_env_file(path)?;
    }
    let mut out = std::io::stdout().lock();
    for line in vars.lines().chain(["ready".to_owned()]) {
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
    stop.wait().await;
    tracing::info!("stopping");
    hub.shutdown().await;
    drop(files);
    Ok(())
}

/// Ctrl-C and, on Unix, SIGTERM (what `docker stop` and `kill` send), listened for from
/// creation on.
struct Stop {
    #[cfg(unix)]
    signals: [tokio::signal::unix::Signal; 2],
}

impl Stop {
    fn listen() -> Result<Stop, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
            Ok(Stop {
                signals: [
                    listen(SignalKind::interrupt())?,
                    listen(SignalKind::terminate())?,
                ],
            })
        }
        #[cfg(not(unix))]
        Ok(Stop {})
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            let [mut interrupt, mut terminate] = self.signals;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // tungstenite logs WebSocket frames whole at TRACE, SAS tokens included
    // (`iothub::log_targets`): those lines never reach the log, whatever RUST_LOG says.
    let hide_frames = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE
            && iothub::log_targets::websocket_frame_target(meta.target()))
    });
    // Colours only for a person at a terminal (https://no-color.org).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_filter(hide_frames),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(args.worker_threads.unwrap_or(1)))
        .enable_all()
        .build()
    {
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
