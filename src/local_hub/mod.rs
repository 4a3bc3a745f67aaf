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
mod c2d_queue;
mod clock;
pub(crate) mod event_hubs;
mod feedback_queue;
mod https;
mod limits;
mod mqtt;
mod rewind;
mod state;
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

pub use c2d_queue::C2dLimits;
pub use limits::ConnectionLimits;
use state::{DeviceSpec, DeviceStatus, HubSettings, HubState, Identity, ModuleSpec, RegistryError};
pub use streams::{FeedbackStream, Telemetry, TelemetryStart, TelemetryStream};
use telemetry_log::LogSettings;
pub use telemetry_log::Retention as TelemetryRetention;
pub use x509_devices::X509Device;

/// Configures and starts a [`LocalHub`].
#[derive(Clone, Debug)]
pub struct LocalHubBuilder {
    host_name: String,
    bind: IpAddr,
    mqtt_port: u16,
    https_port: u16,
    amqp_port: u16,
    policy_key: Option<SasKey>,
    c2d: C2dLimits,
    feedback_flush_interval: Duration,
    x509_ca_pems: Vec<String>,
    connection_limits: ConnectionLimits,
    event_hubs_port: u16,
    event_hubs_emulator_port: u16,
    telemetry: LogSettings,
}

impl Default for LocalHubBuilder {
    fn default() -> Self {
        LocalHubBuilder {
            host_name: "localhost".to_owned(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            mqtt_port: 0,
            https_port: 0,
            amqp_port: 0,
            policy_key: None,
            c2d: C2dLimits::default(),
            feedback_flush_interval: Duration::from_secs(15),
            x509_ca_pems: Vec::new(),
            connection_limits: ConnectionLimits::default(),
            event_hubs_port: 0,
            event_hubs_emulator_port: 0,
            telemetry: LogSettings::default(),
        }
    }
}

impl LocalHubBuilder {
    /// The hub's host name (default `localhost`): what clients put in `HostName`, the MQTT user
    /// name and SAS resources. The certificate covers it, `localhost` and `127.0.0.1`.
    pub fn host_name(mut self, host_name: impl Into<String>) -> Self {
        self.host_name = host_name.into();
        self
    }

    /// The address to listen on (default 127.0.0.1).
    pub fn bind_address(mut self, address: IpAddr) -> Self {
        self.bind = address;
        self
    }

    /// The MQTT over TLS port; 0 (the default) picks a free one.
    pub fn mqtt_port(mut self, port: u16) -> Self {
        self.mqtt_port = port;
        self
    }

    /// The HTTPS and WebSocket port; 0 (the default) picks a free one.
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = port;
        self
    }

    /// The AMQP port, used by the AMQP service endpoint; 0 picks a free one.
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = port;
        self
    }

    /// The key of the `iothubowner` policy (default: generated).
    pub fn policy_key(mut self, key: SasKey) -> Self {
        self.policy_key = Some(key);
        self
    }

    /// The cloud-to-device limits (default: IoT Hub's).
    pub fn c2d_limits(mut self, limits: C2dLimits) -> Self {
        self.c2d = limits;
        self
    }

    /// How long feedback records wait to be batched (default 15 s, as IoT Hub).
    pub fn feedback_flush_interval(mut self, interval: Duration) -> Self {
        self.feedback_flush_interval = interval;
        self
    }

    /// Trusts the CA certificates of this PEM as verified X.509 CAs (IoT Hub's uploaded and
    /// proven CA certificates): a device registered as `certificateAuthority` connects with a
    /// certificate chaining to one of them whose subject CN is its device id. May be called
    /// more than once; [`LocalHub::add_x509_ca_pem`] adds more later.
    pub fn x509_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.x509_ca_pems.push(pem.into());
        self
    }

    /// Bounds on the AMQP and HTTPS listeners' connections and the deadlines of idle ones
    /// (default: [`ConnectionLimits::default`]). AMQP over WebSockets is bounded as HTTPS and
    /// has the default AMQP deadlines.
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connection_limits = limits;
        self
    }

    /// The port of the built-in Event Hubs-compatible endpoint over TLS (AMQP, as IoT Hub's
    /// on 5671 of its own host); 0 (the default) picks a free one.
    pub fn event_hubs_port(mut self, port: u16) -> Self {
        self.event_hubs_port = port;
        self
    }

    /// The port of the same endpoint over plain TCP, for connection strings with
    /// `UseDevelopmentEmulator=true` (the Event Hubs emulator's form, which the Python and
    /// Node Event Hubs SDKs dial without TLS); 0 (the default) picks a free one.
    pub fn event_hubs_emulator_port(mut self, port: u16) -> Self {
        self.event_hubs_emulator_port = port;
        self
    }

    /// The number of partitions of the telemetry log and the Event Hubs-compatible endpoint
    /// (default 4, as IoT Hub; at least 1). A device's messages always go to the same one.
    pub fn event_hubs_partitions(mut self, partitions: u32) -> Self {
        self.telemetry.partition_count = partitions.max(1);
        self
    }

    /// Adds a consumer group to the Event Hubs-compatible endpoint, besides `$Default`.
    pub fn consumer_group(mut self, name: impl Into<String>) -> Self {
        self.telemetry.consumer_groups.push(name.into());
        self
    }

    /// How much telemetry each partition keeps (default: 100,000 messages, 256 MiB, one day;
    /// the oldest go first).
    pub fn telemetry_retention(mut self, retention: TelemetryRetention) -> Self {
        self.telemetry.retention = retention;
        self
    }

    /// Binds the listeners and starts serving. Must be called inside a Tokio runtime.
    pub async fn start(self) -> Result<LocalHub> {
        let owner_key = self.policy_key.unwrap_or_else(state::generate_key);
        let mut policies = Vec::new();
        for name in [
            "iothubowner",
            "service",
            "device",
            "registryRead",
            "registryReadWrite",
        ] {
            policies.push(AccessPolicy {
                name: name.to_owned(),
                primary_key: if name == "iothubowner" {
                    owner_key.clone()
                } else {
                    state::generate_key()
                },
                secondary_key: state::generate_key(),
                permissions: AccessPolicy::default_permissions(name).expect("a default policy"),
            });
        }
        let state = Arc::new(HubState::new(
            HubSettings {
                host_name: self.host_name.clone(),
                c2d: self.c2d,
                feedback_flush_interval: self.feedback_flush_interval,
                feedback: feedback_queue::FeedbackLimits::default(),
                telemetry: self.telemetry.clone(),
            },
            policies,
        ));
        for pem in &self.x509_ca_pems {
            x509_devices::add_ca_pem(&state, pem)?;
        }
        let tls = tls::HubTls::generate(&self.host_name)?;
        let bind = |port: u16| async move {
            TcpListener::bind(SocketAddr::new(self.bind, port))
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Transport,
                        format!("cannot listen on port {port}"),
                    )
                    .with_source(e)
                })
        };
        let mqtt_listener = bind(self.mqtt_port).await?;
        let https_listener = bind(self.https_port).await?;
        let amqp_listener = bind(self.amqp_port).await?;
        let mqtt_addr = local_addr(&mqtt_listener)?;
        let https_addr = local_addr(&https_listener)?;
        let amqp_addr = local_addr(&amqp_listener)?;
        let event_hubs_listener = bind(self.event_hubs_port).await?;
        let event_hubs_emulator_listener = bind(self.event_hubs_emulator_port).await?;
        let event_hubs_addr = local_addr(&event_hubs_listener)?;
        let event_hubs_emulator_addr = local_addr(&event_hubs_emulator_listener)?;
        let event_hub = event_hubs::event_hub_name(&self.host_name);
        let endpoint = event_hubs::Endpoint::new(
            state.clone(),
            state.telemetry_log().clone(),
            event_hub.clone(),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(mqtt::serve(
                state.clone(),
                tls.device_acceptor.clone(),
                mqtt_listener,
            )),
            tokio::spawn(https::serve(
                https::router(state.clone()),
                tls.device_acceptor.clone(),
                https_listener,
                shutdown_rx,
                self.connection_limits.clone(),
            )),
            tokio::spawn(amqp::serve(
                state.clone(),
                tls.acceptor.clone(),
                amqp_listener,
                self.connection_limits.clone(),
            )),
            tokio::spawn(event_hubs::serve(
                endpoint.clone(),
                Some(tls.acceptor.clone()),
                event_hubs_listener,
            )),
            tokio::spawn(event_hubs::serve(
                endpoint,
                None,
                event_hubs_emulator_listener,
            )),
            tokio::spawn(sweep(state.clone())),
        ];
        tracing::info!(host = %self.host_name, %mqtt_addr, %https_addr, %amqp_addr, %event_hubs_addr, %event_hubs_emulator_addr, "local IoT Hub started");
        Ok(LocalHub {
            state,
            ca_pem: tls.ca_pem,
            owner_key,
            mqtt_addr,
            https_addr,
            amqp_addr,
            event_hubs_addr,
            event_hubs_emulator_addr,
            event_hub,
            tasks,
            shutdown,
        })
    }
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|e| Error::new(ErrorKind::Transport, "listener has no address").with_source(e))
}

/// Runs the hub's clock: expiries, lock timeouts and feedback batching.
async fn sweep(state: Arc<HubState>) {
    loop {
        let next = state.sweep();
        let wait = next
            .and_then(|at| at.duration_since(state.clock.now()).ok())
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(5), Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.sweep_wake.notified() => {}
        }
    }
}

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
    pub fn enqueue_c2d(&self, device_id: &str, message: Message) -> Result<()> {
        self.state.enqueue_c2d(device_id, message)
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
    /// [`ErrorKind::InvalidMessage`] for a module id that breaks IoT Hub's rules (1 to 128
    /// ASCII letters, digits or `- . + % _ # * ? ! ( ) , = @ $ '`).
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
