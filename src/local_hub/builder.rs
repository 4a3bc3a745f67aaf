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
    state_dir: Option<std::path::PathBuf>,
    policy_keys: Vec<(String, SasKey, Option<SasKey>)>,
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
            state_dir: None,
            policy_keys: Vec::new(),
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

    /// Bounds on the MQTT, AMQP, Event Hubs-compatible and HTTPS listeners' connections and
    /// the deadlines of idle ones (default: [`ConnectionLimits::default`]). AMQP over WebSockets is bounded as HTTPS and
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

    /// The keys of one of the hub's shared access policies (`iothubowner`, `service`,
    /// `device`, `registryRead`, `registryReadWrite`); a secondary key left `None` is kept or
    /// generated. Overrides the state directory's keys. [`Self::start`] refuses another name
    /// with [`ErrorKind::InvalidMessage`].
    pub fn policy_keys(
        mut self,
        name: impl Into<String>,
        primary: SasKey,
        secondary: Option<SasKey>,
    ) -> Self {
        self.policy_keys.push((name.into(), primary, secondary));
        self
    }

    /// Keeps the hub's state in `dir` (created if needed) and starts from what it holds: the
    /// CA, the policy keys, the ports picked for port 0, devices, modules, twins, queued C2D
    /// messages, pending feedback and retained telemetry (see `docs/local-hub.md`, "State
    /// directory"). Without it (the default) the hub keeps everything in memory. One hub at a
    /// time may use a directory: [`Self::start`] refuses one that another running process
    /// holds, and one made for another host name ([`ErrorKind::InvalidMessage`]).
    pub fn state_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Binds the listeners and starts serving. Must be called inside a Tokio runtime.
    pub async fn start(self) -> Result<LocalHub> {
        let opened = match &self.state_dir {
            Some(dir) => Some(store::Store::open(dir)?),
            None => None,
        };
        let store = opened.as_ref().map(|(store, _)| store.clone());
        let started = self.start_on(opened).await;
        if let (Err(_), Some(store)) = (&started, store) {
            // A hub that did not start leaves no writer behind.
            store.close();
        }
        started
    }

    /// [`Self::start`] with the state directory opened (`opened`: the store and what it held).
    async fn start_on(
        mut self,
        opened: Option<(store::Store, std::collections::BTreeMap<String, String>)>,
    ) -> Result<LocalHub> {
        let stored = match &opened {
            Some((store, loaded)) => stored_hub(store, loaded, &self.host_name)?,
            None => None,
        };
        if let Some(hub) = &stored {
            self.reuse_ports(&hub.ports);
        }
        if let Some(key) = self.policy_key.take() {
            self.policy_keys
                .insert(0, ("iothubowner".to_owned(), key, None));
        }
        let (policies, owner_key) = policies(stored.as_ref(), &self.policy_keys)?;
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
        if let Some((store, loaded)) = &opened {
            state.attach_store(store.clone());
            state.restore(loaded);
        }
        for pem in &self.x509_ca_pems {
            x509_devices::add_ca_pem(&state, pem)?;
        }
        let ca = match &stored {
            Some(hub) => tls::HubCa::from_pem(&hub.ca_cert_pem, &hub.ca_key_pem)?,
            None => tls::HubCa::generate()?,
        };
        let tls = tls::HubTls::with_ca(&self.host_name, &ca)?;
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
        if let Some((store, _)) = &opened {
            let record = store::records::HubRecord {
                host_name: self.host_name.clone(),
                ca_cert_pem: ca.cert_pem.clone(),
                ca_key_pem: ca.key_pem.clone(),
                policies: state.stored_policies(),
                ports: store::records::StoredPorts {
                    mqtt: mqtt_addr.port(),
                    https: https_addr.port(),
                    amqp: amqp_addr.port(),
                    event_hubs: event_hubs_addr.port(),
                    event_hubs_emulator: event_hubs_emulator_addr.port(),
                },
            };
            store.put(
                store::records::HUB_KEY.to_owned(),
                store::records::to_json(&record),
            );
            store.durable().await?;
        }
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
                self.connection_limits.clone(),
            )),
            tokio::spawn(event_hubs::serve(
                endpoint,
                None,
                event_hubs_emulator_listener,
                self.connection_limits.clone(),
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

/// The hub record of a state directory, refused when it was made for another host name.
fn stored_hub(
    store: &store::Store,
    loaded: &std::collections::BTreeMap<String, String>,
    host_name: &str,
) -> Result<Option<store::records::HubRecord>> {
    let Some(text) = loaded.get(store::records::HUB_KEY) else {
        return Ok(None);
    };
    let hub: store::records::HubRecord = serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidMessage,
            format!(
                "the state directory {} has an unreadable hub record ({e}); move it away to start afresh",
                store.dir().display()
            ),
        )
    })?;
    if hub.host_name != host_name {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            format!(
                "the state directory {} belongs to the hub '{}', not '{host_name}': start with that \
                 host name (--hostname) or use another directory",
                store.dir().display(),
                hub.host_name
            ),
        ));
    }
    Ok(Some(hub))
}

/// The hub's shared access policies: those of the state directory, or new ones, with the
/// keys `given` replacing theirs. Returns them with the `iothubowner` primary key.
fn policies(
    stored: Option<&store::records::HubRecord>,
    given: &[(String, SasKey, Option<SasKey>)],
) -> Result<(Vec<AccessPolicy>, SasKey)> {
    let names = [
        "iothubowner",
        "service",
        "device",
        "registryRead",
        "registryReadWrite",
    ];
    let stored_keys = |name: &str| {
        let policy = stored?.policies.iter().find(|p| p.name == name)?;
        Some((policy.primary_key.key()?, policy.secondary_key.key()?))
    };
    if let Some((unknown, _, _)) = given.iter().find(|(n, _, _)| !names.contains(&n.as_str())) {
        return Err(Error::new(
            ErrorKind::InvalidMessage,
            format!(
                "the hub has no policy '{unknown}': its policies are {}",
                names.join(", ")
            ),
        ));
    }
    let mut policies = Vec::new();
    for name in names {
        let (mut primary_key, mut secondary_key) =
            stored_keys(name).unwrap_or_else(|| (state::generate_key(), state::generate_key()));
        for (_, primary, secondary) in given.iter().filter(|(n, _, _)| n == name) {
            primary_key = primary.clone();
            if let Some(secondary) = secondary {
                secondary_key = secondary.clone();
            }
        }
        policies.push(AccessPolicy {
            name: name.to_owned(),
            primary_key,
            secondary_key,
            permissions: AccessPolicy::default_permissions(name).expect("a default policy"),
        });
    }
    let owner = policies[0].primary_key.clone();
    Ok((policies, owner))
}

impl LocalHubBuilder {
    /// With a state directory, a port left at 0 takes the one the last start picked, so that
    /// connection strings (which name the MQTT and AMQP ports) stay valid.
    fn reuse_ports(&mut self, ports: &store::records::StoredPorts) {
        let reuse = |port: &mut u16, stored: u16| {
            if *port == 0 {
                *port = stored;
            }
        };
        reuse(&mut self.mqtt_port, ports.mqtt);
        reuse(&mut self.https_port, ports.https);
        reuse(&mut self.amqp_port, ports.amqp);
        reuse(&mut self.event_hubs_port, ports.event_hubs);
        reuse(
            &mut self.event_hubs_emulator_port,
            ports.event_hubs_emulator,
        );
    }
}
