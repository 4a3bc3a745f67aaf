//! An Azure IoT Hub on loopback, for tests, examples and demos.
//!
//! [`LocalHub`] speaks IoT Hub's real wire protocols — MQTT 3.1.1 over TLS and over
//! WebSockets for devices, AMQP 1.0 over TLS and over WebSockets for back ends (CBS, C2D sends,
//! feedback), HTTPS for the identity registry — with a CA and a server certificate
//! it generates at start, and keeps IoT Hub's rules: SAS tokens checked against device keys and
//! policies, device and module identities with their own keys, one connection per identity,
//! 50-message C2D queues with TTL, locks and delivery counts, and batched delivery feedback. The official Python and Node SDKs connect to it
//! unmodified; see `docs/local-hub.md`.
//!
//! ```no_run
//! # async fn demo() -> iothub::Result<()> {
//! use iothub::Message;
//! use iothub::local_hub::LocalHub;
//!
//! let hub = LocalHub::builder().start().await?;
//! let device = hub.create_device("dev1")?; // a device connection string
//! println!("connect with {device} trusting\n{}", hub.ca_pem());
//! hub.enqueue_c2d("dev1", Message::new("hello").with_message_id("m1"))?;
//! # Ok(()) }
//! ```

mod amqp;
mod builder;
mod c2d_queue;
mod clock;
pub(crate) mod event_hubs;
mod feedback_queue;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod https;
mod limits;
mod mqtt;
mod rewind;
mod state;
mod store;
mod streams;
mod telemetry_access;
mod telemetry_log;
mod tls;
mod twin_access;
mod x509_devices;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::{
    AccessPolicy, DeviceConnectionString, HostAndPort, SasKey, ServiceConnectionString,
};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::protocol::ports::{AMQP_TLS_PORT, MQTT_TLS_PORT};

pub use builder::LocalHubBuilder;
pub use c2d_queue::C2dLimits;
pub use limits::ConnectionLimits;
use state::{DeviceSpec, DeviceStatus, HubSettings, HubState, Identity, ModuleSpec, RegistryError};
pub use streams::{FeedbackStream, Telemetry, TelemetryStart, TelemetryStream};
use telemetry_log::LogSettings;
pub use telemetry_log::Retention as TelemetryRetention;
pub use x509_devices::X509Device;

/// A running local IoT Hub. Dropping it stops it; [`LocalHub::shutdown`] also closes device
/// connections first.
pub struct LocalHub {
    state: Arc<HubState>,
    ca_pem: String,
    owner_key: SasKey,
    mqtt_addr: SocketAddr,
    https_addr: SocketAddr,
    amqp_addr: SocketAddr,
    event_hubs_addr: SocketAddr,
    event_hubs_emulator_addr: SocketAddr,
    event_hub: String,
    tasks: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for LocalHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHub")
            .field("host_name", &self.state.settings.host_name)
            .field("mqtt_addr", &self.mqtt_addr)
            .field("https_addr", &self.https_addr)
            .field("amqp_addr", &self.amqp_addr)
            .field("event_hubs_addr", &self.event_hubs_addr)
            .field("event_hubs_emulator_addr", &self.event_hubs_emulator_addr)
            .finish_non_exhaustive()
    }
}

fn registry_error(e: RegistryError, device_id: &str) -> Error {
    match e {
        RegistryError::DeviceNotFound => Error::new(
            ErrorKind::DeviceNotFound,
            format!("device '{device_id}' is not registered"),
        ),
        RegistryError::DeviceAlreadyExists => Error::new(
            ErrorKind::DeviceAlreadyExists,
            format!("device '{device_id}' already exists"),
        ),
        RegistryError::PreconditionFailed => {
            Error::new(ErrorKind::PreconditionFailed, "the etag does not match")
        }
        RegistryError::InvalidId(text) => Error::new(ErrorKind::InvalidIdentityId, text),
        RegistryError::InvalidScope(text) => Error::new(ErrorKind::InvalidMessage, text),
    }
}

impl LocalHub {
    /// A builder with IoT Hub's defaults, listening on free ports of 127.0.0.1.
    pub fn builder() -> LocalHubBuilder {
        LocalHubBuilder::default()
    }

    /// The hub's host name.
    pub fn host_name(&self) -> &str {
        &self.state.settings.host_name
    }

    /// The CA certificate (PEM) that clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Where MQTT over TLS listens.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Where HTTPS, MQTT over WebSockets and AMQP over WebSockets listen.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// Where AMQP over TLS (the service endpoint: CBS, C2D sends, feedback) listens.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The `iothubowner` connection string, for back-end applications.
    pub fn service_connection_string(&self) -> ServiceConnectionString {
        ServiceConnectionString::with_key(self.host_name(), "iothubowner", self.owner_key.clone())
    }

    /// The `iothubowner` connection string for AMQP clients that take the port from
    /// `HostName`, as azure-iothub for Node does (`amqp.ts` connects to `'amqps://' + host`,
    /// port 5671 unless the URL has one): `HostName=localhost:PORT` when the AMQP port is not
    /// 5671. Tokens for it carry `sr=localhost:PORT`, which the hub accepts
    /// (the port is ignored when comparing scopes). Use [`LocalHub::service_connection_string`]
    /// for HTTPS clients, which do not parse a port there.
    pub fn amqp_connection_string(&self) -> ServiceConnectionString {
        let port = self.amqp_addr.port();
        if port == AMQP_TLS_PORT {
            return self.service_connection_string();
        }
        ServiceConnectionString::with_key(
            &format!("{}:{port}", self.host_name()),
            "iothubowner",
            self.owner_key.clone(),
        )
    }

    /// The connection string of one of the hub's shared access policies: `iothubowner`,
    /// `service`, `device`, `registryRead` or `registryReadWrite`.
    pub fn policy_connection_string(&self, policy: &str) -> Option<ServiceConnectionString> {
        let key = self.state.policy_key(policy)?;
        Some(ServiceConnectionString::with_key(
            self.host_name(),
            policy,
            key,
        ))
    }

    /// Registers a device with generated keys and returns its connection string.
    ///
    /// Errors: [`ErrorKind::DeviceAlreadyExists`], and [`ErrorKind::InvalidIdentityId`] for an
    /// id IoT Hub would refuse (1 to 128 ASCII letters, digits or
    /// `- . + % _ # * ? ! ( ) , : = @ $ '`; the error names the character).
    pub fn create_device(&self, device_id: &str) -> Result<DeviceConnectionString> {
        self.register(device_id, None)
    }

    /// Registers a device with `key` as its primary key.
    pub fn create_device_with_key(
        &self,
        device_id: &str,
        key: SasKey,
    ) -> Result<DeviceConnectionString> {
        self.register(device_id, Some(key))
    }

    fn register(&self, device_id: &str, key: Option<SasKey>) -> Result<DeviceConnectionString> {
        let record = self
            .state
            .put_device(
                DeviceSpec {
                    device_id: device_id.to_owned(),
                    status: DeviceStatus::Enabled,
                    status_reason: None,
                    primary_key: key,
                    secondary_key: None,
                    iot_edge: false,
                    authentication: Default::default(),
                },
                None,
            )
            .map_err(|e| registry_error(e, device_id))?;
        tracing::info!(device = device_id, "device registered");
        Ok(self.connection_string_for(device_id, record.primary_key))
    }

    /// The connection string of a registered device (primary key).
    pub fn device_connection_string(&self, device_id: &str) -> Option<DeviceConnectionString> {
        let record = self.state.get_device(device_id)?;
        Some(self.connection_string_for(device_id, record.primary_key))
    }

    /// Connection strings carry `GatewayHostName=localhost:PORT` when the hub is not on
    /// `localhost:8883`, so that the user name and SAS resource keep the plain `HostName`
    /// (the device SDKs dial `GatewayHostName` when present but name `HostName` in the user
    /// name and the token's `sr`: azure-iot-device `iothub/abstract_clients.py` and
    /// `common/pipeline/pipeline_stages_mqtt.py`; azure-iot-device-mqtt for Node connects to
    /// `'mqtts://' + (gatewayHostName || host)`).
    fn connection_string_for(&self, device_id: &str, key: SasKey) -> DeviceConnectionString {
        self.through_gateway(DeviceConnectionString::with_key(
            self.host_name(),
            device_id,
            key,
        ))
    }

    /// `cs` with the `GatewayHostName` it needs to reach this hub (see above).
    fn through_gateway(&self, cs: DeviceConnectionString) -> DeviceConnectionString {
        let port = self.mqtt_addr.port();
        if self.host_name() == "localhost" && port == MQTT_TLS_PORT {
            cs
        } else {
            let gateway = HostAndPort::parse(&format!("localhost:{port}"))
                .expect("localhost with a port is a valid gateway");
            cs.with_gateway(gateway)
        }
    }

    /// Queues a cloud-to-device message, as a back end's send would.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::QueueFull`] (50 pending) and
    /// [`ErrorKind::MessageTooLarge`] (over 64 KB).
    ///
    /// With a [state directory](LocalHubBuilder::state_dir), it returns once the message is
    /// written there (blocking the thread for that write).
    pub fn enqueue_c2d(&self, device_id: &str, message: Message) -> Result<()> {
        self.state.enqueue_c2d(device_id, message)?;
        match self.state.store() {
            Some(store) => store.durable_blocking(),
            None => Ok(()),
        }
    }

    /// The state directory, if the hub keeps one ([`LocalHubBuilder::state_dir`]).
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.state.store().map(store::Store::dir)
    }

    /// Waits until every change made so far (registrations included) is written to the
    /// state directory; at once without one. Error: [`ErrorKind::Transport`] when the
    /// directory cannot be written.
    pub async fn persisted(&self) -> Result<()> {
        self.state.persisted().await
    }

    /// Empties a device's cloud-to-device queue; returns how many messages it held.
    pub fn purge_c2d(&self, device_id: &str) -> Result<usize> {
        self.state
            .purge_c2d(device_id)
            .map_err(|e| registry_error(e, device_id))
    }

    /// Messages in a device's queue (delivered but not completed ones included).
    pub fn c2d_queue_len(&self, device_id: &str) -> Option<usize> {
        self.state.c2d_queue_len(device_id)
    }

    /// Closes the device's connection, as a hub failover or a network fault would. Returns
    /// whether it had one. Its modules' connections stay.
    pub fn disconnect_device(&self, device_id: &str) -> bool {
        self.state.disconnect_device(device_id)
    }

    /// Whether the device is connected now (its own connection, not its modules').
    pub fn is_connected(&self, device_id: &str) -> bool {
        self.state.is_connected(device_id)
    }

    /// Deletes a device with its modules, closing their connections and dropping its C2D
    /// queue. Error: [`ErrorKind::DeviceNotFound`].
    pub fn delete_device(&self, device_id: &str) -> Result<()> {
        self.state
            .delete_device(device_id, None)
            .map_err(|e| registry_error(e, device_id))?;
        tracing::info!(device = device_id, "device deleted");
        Ok(())
    }

    /// Registers a module of a registered device, with generated keys, and returns its
    /// connection string (`ModuleId=` included).
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::ModuleAlreadyExists`], and
    /// [`ErrorKind::InvalidIdentityId`] for a module id that breaks IoT Hub's rules (1 to 128
    /// ASCII letters, digits or `- . + % _ # * ? ! ( ) , : = @ $ '`).
    pub fn create_module(
        &self,
        device_id: &str,
        module_id: &str,
    ) -> Result<DeviceConnectionString> {
        self.register_module(device_id, module_id, None)
    }

    /// Registers a module of a registered device with `key` as its primary key; the errors are
    /// [`Self::create_module`]'s.
    pub fn create_module_with_key(
        &self,
        device_id: &str,
        module_id: &str,
        key: SasKey,
    ) -> Result<DeviceConnectionString> {
        self.register_module(device_id, module_id, Some(key))
    }

    fn register_module(
        &self,
        device_id: &str,
        module_id: &str,
        key: Option<SasKey>,
    ) -> Result<DeviceConnectionString> {
        let record = self.state.put_module(
            ModuleSpec {
                device_id: device_id.to_owned(),
                module_id: module_id.to_owned(),
                primary_key: key,
                secondary_key: None,
                managed_by: None,
            },
            None,
        )?;
        tracing::info!(device = device_id, module = module_id, "module registered");
        Ok(self
            .connection_string_for(device_id, record.primary_key)
            .with_module_id(module_id))
    }

    /// The connection string of a registered module (primary key).
    pub fn module_connection_string(
        &self,
        device_id: &str,
        module_id: &str,
    ) -> Option<DeviceConnectionString> {
        let record = self.state.get_module(device_id, module_id)?;
        Some(
            self.connection_string_for(device_id, record.primary_key)
                .with_module_id(module_id),
        )
    }

    /// Deletes a module, closing its connection.
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::ModuleNotFound`].
    pub fn delete_module(&self, device_id: &str, module_id: &str) -> Result<()> {
        self.state.delete_module(device_id, module_id, None)?;
        tracing::info!(device = device_id, module = module_id, "module deleted");
        Ok(())
    }

    /// Whether the module is connected now.
    pub fn is_module_connected(&self, device_id: &str, module_id: &str) -> bool {
        self.state
            .identity_connected(&Identity::module(device_id, module_id))
    }

    /// Closes the module's connection, as a network fault would. Returns whether it had one.
    /// Its device's and sibling modules' connections stay.
    pub fn disconnect_module(&self, device_id: &str, module_id: &str) -> bool {
        self.state
            .disconnect(&Identity::module(device_id, module_id))
    }

    /// Feedback batches as the hub releases them (64 records, or after the flush interval).
    /// Each batch is taken off the hub's feedback queue; with several receivers, each batch
    /// goes to one of them.
    pub fn feedback(&self) -> FeedbackStream {
        let (tx, rx) = mpsc::channel(1);
        let state = self.state.clone();
        tokio::spawn(async move {
            loop {
                while let Some(batch) = state.take_feedback() {
                    if let Err(returned) = tx.send(batch).await {
                        state.return_feedback(returned.0);
                        return;
                    }
                }
                tokio::select! {
                    _ = state.feedback_ready.notified() => {}
                    _ = tx.closed() => return,
                }
            }
        });
        FeedbackStream::new(rx)
    }

    /// Closes every connection and stops the listeners.
    pub async fn shutdown(mut self) {
        self.stop();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        self.state.kick_all();
        if let Some(store) = self.state.store() {
            store.close();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        self.stop();
    }
}
