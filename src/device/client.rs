//! The device client handle and its builder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, MqttOptions, TlsConfiguration};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use crate::auth::{DeviceConnectionString, DeviceCredential, TokenSource};
use crate::device::client_certificate::ClientCertificate;
use crate::device::connection::receipts::Receipts;
use crate::device::connection::{Command, Task, filter_qos};
use crate::device::features::Features;
use crate::device::inbound::{Delivered, Sinks};
use crate::device::message_stream::MessageStream;
use crate::device::options::{AckMode, Transport};
use crate::device::pending_requests::PendingRequests;
use crate::device::state::{ConnectionState, closed_error};
use crate::device::subscriptions::Subscriptions;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Completer, Completion, Message};
use crate::protocol::{c2d_subscription, percent, telemetry_topic};
use crate::retry::RetryPolicy;

/// The largest telemetry message IoT Hub accepts: 256 KB (Microsoft Learn "IoT Hub quotas and
/// throttling"; azure-iot-sdk-python `azure/iot/device/constant.py`
/// `TELEMETRY_MESSAGE_SIZE_LIMIT = 262144`).
pub const MAX_TELEMETRY_SIZE: usize = 256 * 1024;

/// The largest packet the client reads: 256 KB plus 16 KB for the topic, as the hub allows.
/// It covers the largest things IoT Hub sends a device: a 64 KB cloud-to-device message, a
/// 128 KB direct-method payload, and twin documents (desired and reported properties up to
/// 32 KB each, tags 8 KB) (Microsoft Learn "IoT Hub quotas and throttling", "Understand and
/// invoke direct methods from IoT Hub", "Understand and use device twins in IoT Hub").
const MAX_INCOMING_PACKET: usize = 256 * 1024 + 16 * 1024;

/// The api-version in the MQTT user name (Microsoft Learn "Communicate with an IoT hub using
/// the MQTT protocol"; azure-iot-sdk-node `common/core/src/endpoint.ts`
/// `apiVersion = '2021-04-12'`).
const API_VERSION: &str = "2021-04-12";

/// What the `DeviceClientType` query parameter names: this crate and its version.
const CLIENT_TYPE: &str = concat!("iothub-rs/", env!("CARGO_PKG_VERSION"));

fn no_c2d_for_modules() -> Error {
    Error::new(
        ErrorKind::NotSupported,
        "modules have no cloud-to-device messages; this client is a module (ModuleId in its \
         connection string). Use a device connection string to receive them",
    )
}

/// Configures and connects a [`DeviceClient`].
#[derive(Clone)]
pub struct DeviceClientBuilder {
    connection_string: DeviceConnectionString,
    keep_alive: Duration,
    sas_ttl: Option<Duration>,
    retry: RetryPolicy,
    ack_mode: AckMode,
    extra_ca_pem: Option<String>,
    transport: Transport,
    buffer: usize,
    certificate: Option<ClientCertificate>,
    twin_timeout: Duration,
}

impl std::fmt::Debug for DeviceClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClientBuilder")
            .field("connection_string", &self.connection_string)
            .field("keep_alive", &self.keep_alive)
            .field("sas_ttl", &self.sas_ttl)
            .field("ack_mode", &self.ack_mode)
            .field("transport", &self.transport)
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl DeviceClientBuilder {
    /// MQTT keep-alive (default 60 s, as the Python SDK; at least 1 s). The hub closes a
    /// connection silent for 1.5 × this.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive.max(Duration::from_secs(1));
        self
    }

    /// Lifetime of the SAS tokens the client signs (default 1 hour); they are renewed after
    /// 80 % of it by a planned reconnect.
    pub fn sas_ttl(mut self, ttl: Duration) -> Self {
        self.sas_ttl = Some(ttl);
        self
    }

    /// How to reconnect after a lost connection.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// When received messages are acknowledged (default [`AckMode::Auto`]).
    pub fn ack_mode(mut self, ack_mode: AckMode) -> Self {
        self.ack_mode = ack_mode;
        self
    }

    /// Trusts this CA (PEM) besides the system roots, e.g. a local hub's.
    pub fn trust_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.extra_ca_pem = Some(pem.into());
        self
    }

    /// MQTT over TLS (default) or over WebSockets.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Authenticates with this X.509 certificate instead of a SAS token: use it with an
    /// `x509=true` connection string (`HostName=…;DeviceId=…;x509=true`, the form the official
    /// SDKs use). The hub checks the certificate's thumbprint (a self-signed device) or its
    /// chain to a verified CA and its CN (a CA-signed device). Nothing is renewed: the
    /// certificate is checked for its validity dates before each connection.
    pub fn client_certificate(mut self, certificate: ClientCertificate) -> Self {
        self.certificate = Some(certificate);
        self
    }

    /// Authenticates with a PEM certificate chain (device certificate first) and its PEM
    /// private key; see [`client_certificate`](Self::client_certificate).
    pub fn x509_pem(self, cert_chain_pem: &str, key_pem: &str) -> Result<Self> {
        let certificate = ClientCertificate::from_pem(cert_chain_pem, key_pem)?;
        Ok(self.client_certificate(certificate))
    }

    /// How many received messages wait for the application at most (default 64). When full,
    /// the client stops reading from the network until the application catches up; nothing is
    /// dropped.
    pub fn message_buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// How long a twin request ([`DeviceClient::get_twin`],
    /// [`DeviceClient::update_reported_properties`]) waits for the hub's answer (default
    /// [`crate::device::DEFAULT_TWIN_REQUEST_TIMEOUT`], 60 s).
    pub fn twin_request_timeout(mut self, timeout: Duration) -> Self {
        self.twin_timeout = timeout;
        self
    }

    /// Connects: returns once the hub has accepted the connection (CONNACK) and, for a device,
    /// the subscription to cloud-to-device messages (SUBACK). A module (`ModuleId=`) has no
    /// cloud-to-device messages and subscribes to nothing: it returns after the CONNACK.
    ///
    /// Credentials the hub refuses give an [`ErrorKind::Unauthorized`] error at once, listing
    /// the causes IoT Hub folds into its one MQTT answer; an unreachable hub gives
    /// [`ErrorKind::Transport`] naming the `host:port` dialled, and, when the hub's certificate
    /// is refused, which CA to trust and how. A client certificate that has expired
    /// or is not yet valid gives [`ErrorKind::InvalidCertificate`] without dialling. After this first connection, lost
    /// connections are re-established in the background according to the retry policy.
    pub async fn connect(self) -> Result<DeviceClient> {
        let cs = &self.connection_string;
        let tokens = match (cs.credential(), &self.certificate) {
            (DeviceCredential::X509, Some(certificate)) => {
                certificate.check_valid_at(std::time::SystemTime::now())?;
                None
            }
            (DeviceCredential::X509, None) => {
                return Err(Error::new(
                    ErrorKind::InvalidConnectionString,
                    "the connection string says x509=true but no certificate was given: call \
                     DeviceClientBuilder::client_certificate or x509_pem",
                ));
            }
            (_, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidConnectionString,
                    "a client certificate was given with a SAS connection string: use \
                     x509=true in place of SharedAccessKey or SharedAccessSignature",
                ));
            }
            (_, None) => {
                let mut tokens = TokenSource::for_device(cs)?;
                if let Some(ttl) = self.sas_ttl {
                    tokens = tokens.with_ttl(ttl);
                }
                Some(tokens)
            }
        };
        let client_id = match cs.module_id() {
            Some(module) => format!("{}/{module}", cs.device_id()),
            None => cs.device_id().to_owned(),
        };
        // The client id is `{device}` or `{device}/{module}` and the user name
        // `{HostName}/{client id}/?api-version=…`, naming the hub even when a gateway is dialled
        // (Microsoft Learn "Communicate with an IoT hub using the MQTT protocol";
        // azure-iot-sdk-python `azure/iot/device/iothub/pipeline/pipeline_stages_iothub_mqtt.py`
        // `_run_op`; azure-iot-sdk-node `device/transport/mqtt/src/mqtt.ts`).
        let client_type = percent::encode(CLIENT_TYPE);
        let username = format!(
            "{}/{client_id}/?api-version={API_VERSION}&DeviceClientType={client_type}",
            cs.host_name()
        );
        let (host, port) = cs.connect_host();
        let port = port.unwrap_or(self.transport.default_port());
        let endpoint = format!("{host}:{port}");
        let tls = TlsConfiguration::Rustls(match &self.certificate {
            Some(certificate) => crate::client_tls::client_config_with_certificate(
                self.extra_ca_pem.as_deref(),
                certificate.chain(),
                certificate.key(),
            )?,
            None => crate::client_tls::client_config(self.extra_ca_pem.as_deref())?,
        });
        let mut options = match self.transport {
            Transport::Mqtt => {
                let mut options = MqttOptions::new(client_id.clone(), host, port);
                options.set_transport(rumqttc::Transport::tls_with_config(tls));
                options
            }
            Transport::WebSocket => {
                let url = format!("wss://{host}:{port}/$iothub/websocket");
                let mut options = MqttOptions::new(client_id.clone(), url, port);
                options.set_transport(rumqttc::Transport::wss_with_config(tls));
                options
            }
        };
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_TELEMETRY_SIZE + 16 * 1024)
            .set_inflight(100);
        let (client, eventloop) = AsyncClient::new(options, 128);
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let live_epoch = Arc::new(AtomicU64::new(0));
        let mut sinks = Sinks::default();
        let mut subscriptions = Subscriptions::default();
        // Modules have no cloud-to-device messages (azure-iot-sdk-node
        // `device/transport/mqtt/src/mqtt.ts` subscribes a module to its inputs instead; the
        // hub refuses a module's subscription to the device's C2D topic).
        let (essential_filter, incoming) = match cs.module_id() {
            Some(_) => (None, None),
            None => {
                let filter = c2d_subscription(cs.device_id());
                subscriptions.want(&filter, filter_qos(&filter), None);
                let (tx, rx) = mpsc::channel(self.buffer);
                sinks.c2d = Some(tx);
                (Some(filter), Some(Mutex::new(rx)))
            }
        };
        // Modules receive no C2D messages, and manual mode acknowledges by command.
        let receipts = (incoming.is_some() && self.ack_mode == AckMode::Auto)
            .then(|| Arc::new(Receipts::default()));
        let task = Task {
            client,
            eventloop,
            tokens,
            username,
            endpoint,
            device_id: cs.device_id().to_owned(),
            module_id: cs.module_id().map(str::to_owned),
            retry: self.retry,
            commands: commands_rx,
            sinks,
            subscriptions,
            essential_filter,
            requests: PendingRequests::default(),
            state: state_tx,
            live_epoch: live_epoch.clone(),
            awaiting_ack: Default::default(),
            acks_due: Default::default(),
            receipts: receipts.clone(),
            handed_over: Default::default(),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(task.run(Some(ready_tx)));
        ready_rx.await.map_err(|_| closed_error())??;
        Ok(DeviceClient {
            shared: Arc::new(Shared {
                commands: commands_tx,
                incoming,
                state: state_rx,
                live_epoch,
                receipts,
                closed: AtomicBool::new(false),
                ack_mode: self.ack_mode,
                device_id: cs.device_id().to_owned(),
                module_id: cs.module_id().map(str::to_owned),
                features: Features::new(self.twin_timeout, self.buffer),
            }),
        })
    }
}

struct Shared {
    commands: mpsc::Sender<Command>,
    /// Cloud-to-device messages; `None` for a module, which has none.
    incoming: Option<Mutex<mpsc::Receiver<Delivered>>>,
    state: watch::Receiver<ConnectionState>,
    live_epoch: Arc<AtomicU64>,
    /// What `receive_message` took, for the task to acknowledge ([`AckMode::Auto`] only).
    receipts: Option<Arc<Receipts>>,
    /// Set by [`DeviceClient::close`]: from then on every call returns
    /// [`ErrorKind::Closed`], buffered messages included.
    closed: AtomicBool,
    ack_mode: AckMode,
    device_id: String,
    module_id: Option<String>,
    features: Features,
}

/// An IoT Hub device (or module) client over MQTT 3.1.1.
///
/// A cheap `Clone` handle to one background task that owns the connection. Dropping the last
/// handle disconnects.
///
/// ```no_run
/// # async fn demo() -> iothub::Result<()> {
/// use iothub::device::DeviceClient;
///
/// let client = DeviceClient::from_connection_string(
///     "HostName=myhub.azure-devices.net;DeviceId=dev1;SharedAccessKey=...",
/// )?
/// .connect()
/// .await?;
/// loop {
///     let message = client.receive_message().await?;
///     println!("{:?} {:?}", message.body_str(), message.properties().collect::<Vec<_>>());
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct DeviceClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceClient")
            .field("device_id", &self.shared.device_id)
            .field("module_id", &self.shared.module_id)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

/// Completes one delivery in manual mode, once.
struct ManualCompletion {
    commands: mpsc::Sender<Command>,
    epoch: u64,
    pkid: u16,
    done: AtomicBool,
}

impl Completer for ManualCompletion {
    fn complete(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move {
            if self.done.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            let (done, result) = oneshot::channel();
            let command = Command::Ack {
                epoch: self.epoch,
                pkid: self.pkid,
                done: Some(done),
            };
            self.commands
                .send(command)
                .await
                .map_err(|_| closed_error())?;
            result.await.map_err(|_| closed_error())?
        })
    }
}

impl DeviceClient {
    /// A builder for the device or module of `connection_string`.
    pub fn builder(connection_string: DeviceConnectionString) -> DeviceClientBuilder {
        DeviceClientBuilder {
            connection_string,
            keep_alive: Duration::from_secs(60),
            sas_ttl: None,
            retry: RetryPolicy::default(),
            ack_mode: AckMode::Auto,
            extra_ca_pem: None,
            transport: Transport::Mqtt,
            certificate: None,
            buffer: 64,
            twin_timeout: crate::device::DEFAULT_TWIN_REQUEST_TIMEOUT,
        }
    }

    /// The command channel of the connection task (the twin and methods APIs use it).
    pub(crate) fn commands(&self) -> &mpsc::Sender<Command> {
        &self.shared.commands
    }

    /// The state of the twin and methods APIs.
    pub(crate) fn features(&self) -> &Features {
        &self.shared.features
    }

    /// Parses a device connection string into a builder (`…connect().await` connects).
    pub fn from_connection_string(connection_string: &str) -> Result<DeviceClientBuilder> {
        Ok(Self::builder(connection_string.parse()?))
    }

    /// The next cloud-to-device message, waiting for one. Messages that arrived before this
    /// call are buffered, never dropped; with several callers, each message goes to one.
    ///
    /// In [`AckMode::Auto`] the message is acknowledged to the hub as it is returned; in
    /// [`AckMode::Manual`], call [`Message::complete`]. A message buffered when its connection
    /// was lost is skipped here: the hub delivers it again on the new connection.
    ///
    /// On a module client this is an [`ErrorKind::NotSupported`] error: modules have no
    /// cloud-to-device messages. After [`Self::close`] it is [`ErrorKind::Closed`], even with
    /// messages buffered (the hub delivers them again to the next client); after the retry
    /// policy gave up, [`ErrorKind::RetriesExhausted`] with the last cause.
    pub async fn receive_message(&self) -> Result<Message> {
        let incoming = self
            .shared
            .incoming
            .as_ref()
            .ok_or_else(no_c2d_for_modules)?;
        let mut incoming = incoming.lock().await;
        loop {
            if self.shared.closed.load(Ordering::SeqCst) {
                return Err(closed_error());
            }
            let delivered = incoming.recv().await.ok_or_else(|| self.stopped())?;
            if self.shared.closed.load(Ordering::SeqCst) {
                // Closed while this call waited: the message is not handed over (nor
                // acknowledged); the hub delivers it again to the next client.
                return Err(closed_error());
            }
            // Counted before the epoch check, taken or skipped: the task acknowledges it if
            // its connection is still the live one.
            if let Some(receipts) = &self.shared.receipts {
                receipts.took_one();
            }
            if delivered.epoch != self.shared.live_epoch.load(Ordering::SeqCst) {
                continue;
            }
            return match self.shared.ack_mode {
                AckMode::Auto => Ok(delivered.message),
                AckMode::Manual => {
                    let completion = ManualCompletion {
                        commands: self.shared.commands.clone(),
                        epoch: delivered.epoch,
                        pkid: delivered.pkid,
                        done: AtomicBool::new(false),
                    };
                    Ok(delivered
                        .message
                        .with_completion(Completion(Arc::new(completion))))
                }
            };
        }
    }

    /// The received messages as a [`Stream`](futures_core::Stream); it ends when the client closes. On a module
    /// client it ends at once ([`Self::receive_message`] says why: modules have no
    /// cloud-to-device messages).
    pub fn messages(&self) -> MessageStream {
        let client = self.clone();
        MessageStream::new(client)
    }

    /// Sends telemetry on `devices/{id}[/modules/{module}]/messages/events/{properties}` at
    /// QoS 1; resolves when the hub acknowledges it (PUBACK). While the connection is down
    /// the message waits to be sent on the next one.
    ///
    /// A message over 256 KB (body and topic) is refused with
    /// [`ErrorKind::MessageTooLarge`] before anything is sent. When the retry policy gives up
    /// (its maximum attempts), waiting and later sends fail with
    /// [`ErrorKind::RetriesExhausted`] carrying the last cause; after [`Self::close`], with
    /// [`ErrorKind::Closed`].
    pub async fn send_message(&self, message: Message) -> Result<()> {
        let topic = telemetry_topic(
            &self.shared.device_id,
            self.shared.module_id.as_deref(),
            &message,
        )?;
        let size = topic.len() + message.body().len();
        if size > MAX_TELEMETRY_SIZE {
            return Err(Error::new(
                ErrorKind::MessageTooLarge,
                format!(
                    "the telemetry message is {size} bytes; IoT Hub accepts {MAX_TELEMETRY_SIZE}"
                ),
            ));
        }
        let (done, result) = oneshot::channel();
        let command = Command::Send {
            topic,
            payload: message.body().clone(),
            done,
        };
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(closed_error());
        }
        self.shared
            .commands
            .send(command)
            .await
            .map_err(|_| self.stopped())?;
        match result.await {
            Ok(Ok(())) => Ok(()),
            // A send the stopping task failed gets the reason it stopped.
            Ok(Err(e)) if self.is_stopped() => Err(self.stopped().with_source(e)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Whether the connection task has stopped for good.
    fn is_stopped(&self) -> bool {
        matches!(*self.shared.state.borrow(), ConnectionState::Closed(_))
    }

    /// The error of a call on a stopped client: [`ErrorKind::Closed`] after
    /// [`Self::close`], [`ErrorKind::RetriesExhausted`] when the retry policy gave up.
    fn stopped(&self) -> Error {
        if self.shared.closed.load(Ordering::SeqCst) {
            closed_error()
        } else {
            self.shared.state.borrow().stopped_error()
        }
    }

    /// `e`, or when it only says the task stopped, why it stopped: [`ErrorKind::Closed`] after
    /// [`Self::close`], [`ErrorKind::RetriesExhausted`] with the last cause otherwise.
    pub(crate) fn why_stopped(&self, e: Error) -> Error {
        if e.kind() == ErrorKind::Closed {
            self.stopped()
        } else {
            e
        }
    }

    /// The connection state, now and as it changes.
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.clone()
    }

    /// Disconnects cleanly (MQTT DISCONNECT) and stops the client; every handle then returns
    /// [`ErrorKind::Closed`], [`Self::receive_message`] included: messages received but not
    /// yet returned are not handed over (nor acknowledged), so the hub delivers them again to
    /// the next client.
    pub async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::SeqCst);
        let (done, closed) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::Close { done })
            .await
            .is_ok()
        {
            let _ = closed.await;
        }
        Ok(())
    }
}
