//! [`RegistryManager`]: the back end's handle to IoT Hub.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::auth::{HostAndPort, ServiceConnectionString, TokenSource};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::protocol::amqp_message::message_to_amqp;
use crate::protocol::check_device_id;
use crate::protocol::ports::{AMQP_TLS_PORT, HTTPS_PORT};
use crate::protocol::{Device, RegistryStatistics, c2d_address};
use crate::retry::RetryPolicy;
use crate::service::amqp::{self, AmqpConfig, SendRequest};
use crate::service::feedback::FeedbackReceiver;
use crate::service::http_registry::HttpRegistry;

/// How long one operation may take unless [`RegistryManagerBuilder::request_timeout`] says
/// otherwise.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Configures a [`RegistryManager`]: where the hub is, what to trust, how long an operation may
/// take and how the AMQP connections are re-opened.
///
/// Defaults: ports from the connection string or IoT Hub's (AMQP 5671, HTTPS 443), the system
/// roots, policy tokens valid for an hour, a 60 s request timeout and [`RetryPolicy::default`].
///
/// ```no_run
/// # fn demo() -> iothub::Result<()> {
/// use std::time::Duration;
/// use iothub::RetryPolicy;
/// use iothub::service::RegistryManager;
///
/// let registry = RegistryManager::from_connection_string(
///     "HostName=myhub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=...",
/// )?
/// .request_timeout(Duration::from_secs(10))
/// .retry_policy(RetryPolicy::default().with_max_attempts(Some(3)))
/// .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegistryManagerBuilder {
    pub(crate) connection_string: ServiceConnectionString,
    pub(crate) extra_ca_pem: Option<String>,
    pub(crate) https_port: Option<u16>,
    pub(crate) amqp_port: Option<u16>,
    pub(crate) amqp_over_websockets: bool,
    pub(crate) token_ttl: Option<Duration>,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

impl std::fmt::Debug for RegistryManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryManagerBuilder")
            .field("connection_string", &self.connection_string)
            .field("https_port", &self.https_port)
            .field("amqp_port", &self.amqp_port)
            .field("amqp_over_websockets", &self.amqp_over_websockets)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl RegistryManagerBuilder {
    /// Trusts this CA (PEM) besides the system roots, e.g. a local hub's.
    pub fn trust_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.extra_ca_pem = Some(pem.into());
        self
    }

    /// The HTTPS port (default 443).
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// The AMQP port (default: the port in `HostName=host:PORT` if any, else 5671; with
    /// WebSockets, the HTTPS port).
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// Carries AMQP over WebSockets (subprotocol `AMQPWSB10` at `/$iothub/websocket`) on the
    /// HTTPS port, for networks that block 5671.
    pub fn amqp_over_websockets(mut self, enabled: bool) -> Self {
        self.amqp_over_websockets = enabled;
        self
    }

    /// Lifetime of the policy tokens the manager signs (default 1 hour); they are renewed
    /// before they expire.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = Some(ttl);
        self
    }

    /// How long one operation may take in all (default 60 s): a cloud-to-device send, from
    /// connecting (with retries) to the hub's answer, or one registry request over HTTPS. When
    /// it runs out, the operation fails with [`ErrorKind::Timeout`], or with the last connection
    /// error ([`ErrorKind::Transport`]) when the hub could not be reached in that time.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How the AMQP connections are opened again after a failure (default
    /// [`RetryPolicy::default`]: 250 ms doubling up to 30 s, 20 % jitter, no attempt limit).
    ///
    /// A send that finds no connection makes attempts spaced by the policy's backoff until one
    /// succeeds, [`RetryPolicy::max_attempts`] attempts have failed, or the request timeout
    /// would pass; then it fails with the last error ([`ErrorKind::Transport`] for an
    /// unreachable hub). The backoff carries over between sends while the hub stays
    /// unreachable. The feedback receiver reconnects with the same backoff and ends its stream
    /// after `max_attempts` failures in a row. Refused credentials
    /// ([`ErrorKind::Unauthorized`]) are never retried; registry requests over HTTPS are not
    /// retried either.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub(crate) fn tokens(&self) -> TokenSource {
        let tokens = TokenSource::for_service(&self.connection_string);
        match self.token_ttl {
            Some(ttl) => tokens.with_ttl(ttl),
            None => tokens,
        }
    }

    /// Where to connect: `HostName`, whose `:PORT`, if any, is the AMQP port as Node's
    /// azure-iothub takes it (azure-iot-hub-node `src/common-amqp/amqp.ts`, `connect`, which
    /// uses the port of the `amqps://` URL and 5671 when there is none).
    fn dial(&self) -> Result<HostAndPort> {
        HostAndPort::parse(self.connection_string.host_name())
    }

    /// Builds the manager. Nothing connects yet: HTTPS requests and the AMQP connection are
    /// made when first needed.
    pub fn build(self) -> Result<RegistryManager> {
        let dial = self.dial()?;
        let tls = crate::client_tls::client_config(self.extra_ca_pem.as_deref())?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .pool_idle_timeout(Duration::from_secs(60))
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Transport, "HTTP client set-up failed").with_source(e)
            })?;
        let base = format!(
            "https://{}:{}",
            dial.host(),
            self.https_port.unwrap_or(HTTPS_PORT)
        );
        let registry = HttpRegistry::new(http, base, self.tokens());
        let default_port = if self.amqp_over_websockets {
            self.https_port.unwrap_or(HTTPS_PORT)
        } else {
            dial.port().unwrap_or(AMQP_TLS_PORT)
        };
        let amqp = AmqpConfig {
            host: dial.host().to_owned(),
            port: self.amqp_port.unwrap_or(default_port),
            websockets: self.amqp_over_websockets,
            tls,
            tokens: self.tokens(),
            audience: self.connection_string.host_name().to_owned(),
            retry: self.retry.clone(),
        };
        Ok(RegistryManager {
            shared: Arc::new(Shared {
                registry,
                amqp,
                sender: OnceCell::new(),
                builder: self,
            }),
        })
    }
}

struct Shared {
    registry: HttpRegistry,
    amqp: AmqpConfig,
    /// The C2D sender task, started by the first send.
    sender: OnceCell<mpsc::Sender<SendRequest>>,
    builder: RegistryManagerBuilder,
}

/// A back end's handle to IoT Hub: cloud-to-device messages and feedback over AMQP, the
/// identity registry over HTTPS.
///
/// A cheap `Clone` handle; clones share connections.
///
/// ```no_run
/// # async fn demo() -> iothub::Result<()> {
/// use iothub::service::RegistryManager;
///
/// let registry = RegistryManager::from_connection_string(
///     "HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=...",
/// )?
/// .build()?;
/// let device = registry.create_device("dev1").await?;
/// println!("created {} with etag {}", device.device_id, device.etag);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RegistryManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RegistryManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryManager")
            .field("host", &self.shared.builder.connection_string.host_name())
            .finish_non_exhaustive()
    }
}

impl RegistryManager {
    /// The HTTPS registry client (for the module, twin and method calls in sibling modules).
    pub(super) fn http(&self) -> &HttpRegistry {
        &self.shared.registry
    }

    /// The registry's request timeout.
    pub(super) fn request_timeout(&self) -> Duration {
        self.shared.builder.request_timeout
    }

    /// A builder for the hub and policy of `connection_string`.
    pub fn builder(connection_string: ServiceConnectionString) -> RegistryManagerBuilder {
        RegistryManagerBuilder {
            connection_string,
            extra_ca_pem: None,
            https_port: None,
            amqp_port: None,
            amqp_over_websockets: false,
            token_ttl: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Parses a service connection string into a builder.
    pub fn from_connection_string(connection_string: &str) -> Result<RegistryManagerBuilder> {
        Ok(Self::builder(connection_string.parse()?))
    }

    /// Sends a cloud-to-device message to `device_id`; resolves when the hub has queued it.
    ///
    /// The message keeps its id (a new UUID is given when it has none, so that feedback can
    /// name it), correlation id, content type and encoding, expiry, [`crate::Ack`] and custom
    /// properties; `to` is set to `/devices/{device_id}/messages/devicebound` (see
    /// [`c2d_address`](crate::protocol::c2d_address)). Many sends may be in flight at once,
    /// from any clone.
    ///
    /// Errors: [`ErrorKind::DeviceNotFound`], [`ErrorKind::QueueFull`] (50 messages wait for
    /// the device already), [`ErrorKind::MessageTooLarge`] (over 64 KB),
    /// [`ErrorKind::Unauthorized`], [`ErrorKind::Transport`] when the hub stays unreachable
    /// (see [`RegistryManagerBuilder::retry_policy`]; a later send connects again) and
    /// [`ErrorKind::Timeout`] when the hub does not answer within the request timeout.
    pub async fn send_c2d_message(&self, device_id: &str, message: Message) -> Result<()> {
        let to = c2d_address(device_id);
        let message = match message.message_id() {
            Some(_) => message,
            None => message.with_message_id(uuid::Uuid::new_v4().to_string()),
        }
        .with_to(to);
        let amqp = message_to_amqp(&message);
        let sender = self
            .shared
            .sender
            .get_or_init(|| async { amqp::spawn_sender(self.shared.amqp.clone()) })
            .await;
        let deadline = tokio::time::Instant::now() + self.shared.builder.request_timeout;
        let (done, result) = oneshot::channel();
        sender
            .send(SendRequest {
                message: amqp,
                done,
                deadline,
            })
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the AMQP sender stopped"))?;
        // The sender task hands back the link's settlement once the message is written; it is
        // awaited here, in the caller's task.
        let settlement = result
            .await
            .map_err(|_| Error::new(ErrorKind::Closed, "the AMQP sender stopped"))??;
        amqp::settled(settlement, deadline).await
    }

    /// A receiver of delivery feedback batches, on its own AMQP connection.
    pub fn feedback_receiver(&self) -> FeedbackReceiver {
        let (batches, settle) = amqp::spawn_feedback(self.shared.amqp.clone());
        FeedbackReceiver::new(batches, settle)
    }

    /// Registers a device with SAS keys generated by the hub.
    pub async fn create_device(&self, device_id: &str) -> Result<Device> {
        let device = Device {
            device_id: device_id.to_owned(),
            ..Device::default()
        };
        self.add_device(&device).await
    }

    /// Registers a device with the given base64 SAS keys.
    pub async fn create_device_with_keys(
        &self,
        device_id: &str,
        primary_key: &str,
        secondary_key: &str,
    ) -> Result<Device> {
        let device = Device::new(device_id).with_symmetric_keys(primary_key, secondary_key);
        self.add_device(&device).await
    }

    /// Registers `device` (empty keys are generated by the hub). An existing id is an
    /// [`ErrorKind::DeviceAlreadyExists`] error.
    ///
    /// A device id outside IoT Hub's rules is an [`ErrorKind::InvalidIdentityId`] error,
    /// before anything is sent ([`crate::protocol::check_device_id`]); so for every device
    /// call here.
    pub async fn add_device(&self, device: &Device) -> Result<Device> {
        check_device_id(&device.device_id)?;
        self.shared.registry.put_device(device, None).await
    }

    /// Reads a device; an unknown id is [`ErrorKind::DeviceNotFound`].
    pub async fn get_device(&self, device_id: &str) -> Result<Device> {
        check_device_id(device_id)?;
        self.shared.registry.get_device(device_id).await
    }

    /// Updates a device. With `device.etag` set, only if nobody changed it since it was read
    /// (else [`ErrorKind::PreconditionFailed`]); with an empty etag, unconditionally. As on
    /// IoT Hub, omitted keys are regenerated.
    pub async fn update_device(&self, device: &Device) -> Result<Device> {
        let tag = if device.etag.is_empty() {
            "*"
        } else {
            device.etag.as_str()
        };
        check_device_id(&device.device_id)?;
        self.shared.registry.put_device(device, Some(tag)).await
    }

    /// Deletes a device unconditionally (`If-Match: "*"`, as the official SDKs do).
    pub async fn delete_device(&self, device_id: &str) -> Result<()> {
        check_device_id(device_id)?;
        self.shared.registry.delete_device(device_id, "*").await
    }

    /// Deletes a device only if its etag is still `etag`.
    pub async fn delete_device_if_match(&self, device_id: &str, etag: &str) -> Result<()> {
        check_device_id(device_id)?;
        self.shared.registry.delete_device(device_id, etag).await
    }

    /// Every device in the registry.
    pub async fn list_devices(&self) -> Result<Vec<Device>> {
        self.shared.registry.list_devices(None).await
    }

    /// Empties a device's cloud-to-device queue; returns how many messages were removed.
    pub async fn purge_c2d_queue(&self, device_id: &str) -> Result<u64> {
        check_device_id(device_id)?;
        Ok(self
            .shared
            .registry
            .purge(device_id)
            .await?
            .total_messages_purged)
    }

    /// Device counts.
    pub async fn statistics(&self) -> Result<RegistryStatistics> {
        self.shared.registry.statistics().await
    }
}
