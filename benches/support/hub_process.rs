//! An `iothub-local` process for the benches that measure memory in a process of its own:
//! started on port 0 with deterministic devices, read until it prints `ready`, killed when
//! dropped (its CA file removed).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use iothub::auth::DeviceConnectionString;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::timeout;

use super::{Result, device_key};

/// A running `iothub-local`.
pub struct HubProcess {
    child: Child,
    pid: u32,
    ca_file: Option<PathBuf>,
    /// Kept open so that the hub never writes into a closed pipe.
    stdout: Lines<BufReader<ChildStdout>>,
    connection_strings: Vec<DeviceConnectionString>,
    ca_pem: String,
}

impl HubProcess {
    /// Starts `hub_exe` with `devices` devices named `{prefix}{i}`, each with the key
    /// `device_key(i)`, and waits at most `limit` for `ready`. Its connection bounds leave room
    /// for every device to connect from 127.0.0.1 (`--max-connections-per-address`, 1,000 by
    /// default). `RUST_LOG=warn`; its stderr is this process's.
    pub async fn start(
        hub_exe: &Path,
        prefix: &str,
        devices: usize,
        limit: Duration,
    ) -> Result<Self> {
        let mut command = Command::new(hub_exe);
        command
            .args(["--mqtt-port", "0", "--https-port", "0", "--amqp-port", "0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let room = devices + 100;
        command
            .arg(format!("--max-connections={}", room.max(10_000)))
            .arg(format!("--max-connections-per-address={}", room.max(1_000)));
        for i in 0..devices {
            command.arg(format!(
                "--device={prefix}{i}:{}",
                device_key(i).to_base64()
            ));
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", hub_exe.display()))?;
        let pid = child.id().ok_or("the hub process has no pid")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut hub = HubProcess {
            child,
            pid,
            ca_file: None,
            stdout: BufReader::new(stdout).lines(),
            connection_strings: Vec::with_capacity(devices),
            ca_pem: String::new(),
        };
        match timeout(limit, hub.read_until_ready(devices)).await {
            Ok(read) => read?,
            Err(_) => return Err(format!("the hub did not start in {} s", limit.as_secs()).into()),
        }
        if hub.connection_strings.len() != devices {
            return Err(format!(
                "the hub printed {} device connection strings for {devices} devices",
                hub.connection_strings.len()
            )
            .into());
        }
        let ca_file = hub
            .ca_file
            .as_ref()
            .ok_or("the hub printed no IOTHUB_CA_FILE")?;
        hub.ca_pem = std::fs::read_to_string(ca_file)?;
        Ok(hub)
    }

    /// Reads the hub's stdout (CA file, connection strings, then `ready`). Values are
    /// single-quoted for a shell.
    async fn read_until_ready(&mut self, devices: usize) -> Result<()> {
        for _ in 0..devices + 100 {
            let Some(line) = self.stdout.next_line().await? else {
                break;
            };
            if line == "ready" {
                return Ok(());
            } else if let Some(path) = line.strip_prefix("IOTHUB_CA_FILE=") {
                self.ca_file = Some(PathBuf::from(path.trim_matches('\'')));
            } else if let Some((_, cs)) = line
                .strip_prefix("IOTHUB_DEVICE_CONNECTION_STRING_")
                .and_then(|rest| rest.split_once('='))
            {
                let cs = cs.trim_matches('\'').parse::<DeviceConnectionString>()?;
                self.connection_strings.push(cs);
            }
        }
        Err("the hub exited before printing `ready`".into())
    }

    /// The hub's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The devices' connection strings, in the order of their index.
    pub fn connection_strings(&self) -> &[DeviceConnectionString] {
        &self.connection_strings
    }

    /// The hub's CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The MQTT port, from the connection strings' `GatewayHostName`.
    pub fn mqtt_port(&self) -> Result<u16> {
        self.connection_strings
            .first()
            .and_then(|cs| cs.gateway_host_name())
            .and_then(|gateway| gateway.port())
            .ok_or_else(|| "no GatewayHostName with a port in the device connection strings".into())
    }

    /// `Some` when the process has exited.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Kills the process and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(path) = &self.ca_file {
            let _ = std::fs::remove_file(path);
        }
    }
}
