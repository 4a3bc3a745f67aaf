//! `--config FILE`: the hub's settings as JSON, in the spirit of the Azure Event Hubs and
//! Service Bus emulators' `Config.json` (one file describing the namespace, its entities and
//! their limits). Every key is optional; unknown keys are refused with their name, so that a
//! typo does not pass silently. Command-line flags override the file. `docs/local-hub.md`
//! ("Config file") describes every key; `docs/iothub-local.config.json` is a sample.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The hub's host name (`--hostname`).
    pub host_name: Option<String>,
    /// The address to listen on (`--bind`).
    pub bind: Option<IpAddr>,
    /// The state directory (`--state-dir`), relative to the file's directory.
    pub state_dir: Option<PathBuf>,
    /// Where to write the CA certificate (`--ca-out`), relative to the file's directory.
    pub ca_out: Option<PathBuf>,
    /// Where to write the env file (`--env-out`), relative to the file's directory.
    pub env_out: Option<PathBuf>,
    /// The listeners' ports.
    #[serde(default)]
    pub ports: Ports,
    /// Keys of the shared access policies.
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// Devices to register (kept when they exist already).
    #[serde(default)]
    pub devices: Vec<DeviceEntry>,
    /// The Event Hubs-compatible endpoint.
    #[serde(default)]
    pub event_hubs: EventHubs,
    /// X.509 CA settings.
    #[serde(default)]
    pub x509: X509,
    /// Queue depths, TTLs and the feedback flush.
    #[serde(default)]
    pub limits: Limits,
}

/// `ports`: 0 picks a free port (kept across restarts with a state directory).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ports {
    /// MQTT over TLS (default 8883).
    pub mqtt: Option<u16>,
    /// HTTPS and WebSockets (default 443).
    pub https: Option<u16>,
    /// AMQP over TLS (default 5671).
    pub amqp: Option<u16>,
    /// The Event Hubs-compatible endpoint over TLS (default 0).
    pub event_hubs: Option<u16>,
    /// The same endpoint over plain TCP (default 0).
    pub event_hubs_emulator: Option<u16>,
}

/// One entry of `policies`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// `iothubowner`, `service`, `device`, `registryRead` or `registryReadWrite`.
    pub name: String,
    /// Base64.
    pub primary_key: String,
    /// Base64; generated when absent.
    pub secondary_key: Option<String>,
}

/// How a device of `devices` authenticates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Authentication {
    /// A symmetric key.
    #[default]
    Sas,
    /// A self-signed certificate the hub makes (`--device ID:x509`).
    X509,
}

/// One entry of `devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceEntry {
    /// The device id.
    pub id: String,
    /// Base64; generated when absent.
    pub primary_key: Option<String>,
    /// `sas` (default) or `x509`.
    #[serde(default)]
    pub authentication: Authentication,
    /// Its modules.
    #[serde(default)]
    pub modules: Vec<ModuleEntry>,
}

/// One module of a device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModuleEntry {
    /// The module id.
    pub id: String,
    /// Base64; generated when absent.
    pub primary_key: Option<String>,
}

/// `eventHubs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventHubs {
    /// Partitions (default 4).
    pub partitions: Option<u32>,
    /// Consumer groups besides `$Default`.
    #[serde(default)]
    pub consumer_groups: Vec<String>,
    /// Per-partition retention.
    #[serde(default)]
    pub retention: Retention,
}

/// `eventHubs.retention`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retention {
    /// Events per partition (default 100,000).
    pub max_events: Option<usize>,
    /// Bytes per partition (default 256 MiB).
    pub max_bytes: Option<usize>,
    /// Age in seconds (default one day).
    pub max_age_seconds: Option<u64>,
}

/// `x509`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct X509 {
    /// Verified CA certificates (PEM files) for CA-signed devices (`--x509-ca`).
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

/// `limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Messages a device's C2D queue holds (IoT Hub: 50).
    pub c2d_max_pending: Option<usize>,
    /// The largest C2D message in bytes (IoT Hub: 65,536).
    pub c2d_max_message_size: Option<usize>,
    /// TTL of a C2D message without an expiry, in seconds (3,600).
    pub c2d_default_ttl_seconds: Option<u64>,
    /// Deliveries before a C2D message is dead-lettered (10).
    pub c2d_max_delivery_count: Option<u32>,
    /// How long a delivered C2D message stays locked, in seconds (60).
    pub c2d_lock_duration_seconds: Option<u64>,
    /// How long feedback records wait to be batched, in milliseconds (15,000).
    pub feedback_flush_ms: Option<u64>,
    /// Open connections per listener (10,000; `--max-connections`).
    pub max_connections: Option<usize>,
    /// Open connections per listener from one source address (1,000;
    /// `--max-connections-per-address`).
    pub max_connections_per_address: Option<usize>,
}

impl Config {
    /// Reads `path`; relative paths in it are made relative to its directory.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        let mut config =
            Config::parse(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.state_dir,
            &mut config.ca_out,
            &mut config.env_out,
        ]
        .into_iter()
        .flatten()
        {
            *p = base.join(&*p);
        }
        for p in &mut config.x509.ca_files {
            *p = base.join(&*p);
        }
        Ok(config)
    }

    /// Parses the JSON text; an unknown key, or a connection count of 0 (which would refuse
    /// every connection), is an error that names it.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (key, value) in [
            ("limits.maxConnections", config.limits.max_connections),
            (
                "limits.maxConnectionsPerAddress",
                config.limits.max_connections_per_address,
            ),
        ] {
            if value == Some(0) {
                return Err(format!("{key} is 0: a hub would refuse every connection"));
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_in_docs_loads_with_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/iothub-local.config.json");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.host_name.as_deref(), Some("localhost"));
        assert_eq!(config.ports.mqtt, Some(8883));
        assert!(config.state_dir.unwrap().ends_with("iothub-local-state"));
        assert_eq!(config.devices[0].id, "dev1");
        assert_eq!(config.devices[0].modules[0].id, "m1");
        assert_eq!(config.devices[1].authentication, Authentication::X509);
        assert_eq!(config.event_hubs.consumer_groups, ["analytics"]);
        assert_eq!(config.limits.c2d_max_pending, Some(50));
        assert_eq!(config.limits.max_connections_per_address, Some(1_000));
        assert_eq!(config.policies[0].name, "iothubowner");
    }

    #[test]
    fn a_connection_count_of_zero_is_refused_by_name() {
        let error = Config::parse(r#"{"limits": {"maxConnectionsPerAddress": 0}}"#).unwrap_err();
        assert!(error.contains("limits.maxConnectionsPerAddress"), "{error}");
        let config = Config::parse(r#"{"limits": {"maxConnections": 20000}}"#).unwrap();
        assert_eq!(config.limits.max_connections, Some(20_000));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = Config::parse(r#"{"limits": {"c2dMaxPendin": 5}}"#).unwrap_err();
        assert!(error.contains("c2dMaxPendin"), "{error}");
        let error = Config::parse(r#"{"hostname": "x"}"#).unwrap_err();
        assert!(
            error.contains("`hostname`") && error.contains("hostName"),
            "{error}"
        );
    }
}
