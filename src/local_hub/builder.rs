//! [`LocalHubBuilder`]: the hub's settings, and `start`, which binds the listeners and spawns
//! the hub's tasks.

use super::*;

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
        state.set_event_hubs_port(event_hubs_addr.port());
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
                self.connection_limits.clone(),
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
        let wait = crate::local_hub::state::sweep_wait(next, state.clock.now());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.sweep_wake.notified() => {}
        }
    }
}
