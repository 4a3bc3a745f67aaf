//! A stand-alone built-in endpoint for the integration tests of issue 12, until `LocalHub`
//! starts it: a hub state with the default policies, a telemetry log the test fills, and the
//! endpoint on a TLS port and a plain TCP port. Not part of the public API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{Endpoint, connection_string, event_hub_name, serve};
use crate::auth::AccessPolicy;
use crate::error::{Error, ErrorKind, Result};
use crate::local_hub::c2d_queue::C2dLimits;
use crate::local_hub::feedback_queue::FeedbackLimits;
use crate::local_hub::state::{HubSettings, HubState, generate_key};
use crate::local_hub::telemetry_log::{AuthMethod, LogSettings, Stamps, TelemetryLog};
use crate::local_hub::tls::HubTls;
use crate::message::Message;

/// Where an appended event landed.
#[doc(hidden)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendedEvent {
    /// The partition.
    pub partition: u32,
    /// The sequence number.
    pub sequence_number: i64,
    /// The offset.
    pub offset: i64,
    /// The enqueued time in milliseconds since the Unix epoch.
    pub enqueued_ms: u64,
}

/// The built-in endpoint on loopback with a log filled by the caller.
#[doc(hidden)]
pub struct TestEventHubsEndpoint {
    state: Arc<HubState>,
    log: Arc<TelemetryLog>,
    event_hub: String,
    ca_pem: String,
    tls_addr: SocketAddr,
    plain_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

fn io_error(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Transport, "cannot listen").with_source(e)
}

impl TestEventHubsEndpoint {
    /// Starts the endpoint with `partition_count` partitions and extra consumer groups.
    pub async fn start(partition_count: u32, consumer_groups: &[&str]) -> Result<Self> {
        let host_name = "localhost";
        let policies = ["iothubowner", "service", "device", "registryRead"]
            .into_iter()
            .map(|name| AccessPolicy {
                name: name.to_owned(),
                primary_key: generate_key(),
                secondary_key: generate_key(),
                permissions: AccessPolicy::default_permissions(name).expect("a default policy"),
            })
            .collect();
        let state = Arc::new(HubState::new(
            HubSettings {
                host_name: host_name.to_owned(),
                c2d: C2dLimits::default(),
                feedback_flush_interval: Duration::from_secs(15),
                feedback: FeedbackLimits::default(),
            },
            policies,
        ));
        let log = Arc::new(TelemetryLog::new(LogSettings {
            partition_count,
            consumer_groups: consumer_groups.iter().map(|g| (*g).to_owned()).collect(),
            ..LogSettings::default()
        }));
        let tls = HubTls::generate(host_name)?;
        let tls_listener = TcpListener::bind("127.0.0.1:0").await.map_err(io_error)?;
        let plain_listener = TcpListener::bind("127.0.0.1:0").await.map_err(io_error)?;
        let tls_addr = tls_listener.local_addr().map_err(io_error)?;
        let plain_addr = plain_listener.local_addr().map_err(io_error)?;
        let event_hub = event_hub_name(host_name);
        let endpoint = Endpoint::new(state.clone(), log.clone(), event_hub.clone());
        let tasks = vec![
            tokio::spawn(serve(
                endpoint.clone(),
                Some(tls.acceptor.clone()),
                tls_listener,
            )),
            tokio::spawn(serve(endpoint, None, plain_listener)),
        ];
        Ok(TestEventHubsEndpoint {
            state,
            log,
            event_hub,
            ca_pem: tls.ca_pem,
            tls_addr,
            plain_addr,
            tasks,
        })
    }

    /// Appends telemetry as if `device_id` (and `module_id`) had sent `message` now.
    pub fn append(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        message: Message,
    ) -> AppendedEvent {
        let stamps = Stamps {
            device_id: device_id.to_owned(),
            module_id: module_id.map(str::to_owned),
            auth_method: AuthMethod {
                scope: if module_id.is_some() {
                    "module"
                } else {
                    "device"
                },
                kind: "sas",
            },
            generation_id: "638000000000000001".to_owned(),
        };
        let event = self.log.append(stamps, message, self.state.clock.now());
        AppendedEvent {
            partition: event.partition,
            sequence_number: event.sequence_number,
            offset: event.offset,
            enqueued_ms: event
                .enqueued_time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The Event Hub's name (`EntityPath`).
    pub fn event_hub(&self) -> &str {
        &self.event_hub
    }

    /// The TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_addr.port()
    }

    /// The plain TCP port.
    pub fn plain_port(&self) -> u16 {
        self.plain_addr.port()
    }

    /// The CA certificate (PEM) of the TLS port.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The base64 primary key of a policy.
    pub fn policy_key(&self, policy: &str) -> Option<String> {
        self.state
            .policy_key(policy)
            .map(|k| k.to_base64().to_owned())
    }

    /// The emulator-form connection string (plain TCP) for `policy`.
    pub fn emulator_connection_string(&self, policy: &str) -> Option<String> {
        let key = self.policy_key(policy)?;
        Some(connection_string(
            &format!("localhost:{}", self.plain_port()),
            policy,
            &key,
            &self.event_hub,
            true,
        ))
    }

    /// The TLS connection string for `policy` (`Endpoint=sb://localhost:PORT/`).
    pub fn tls_connection_string(&self, policy: &str) -> Option<String> {
        let key = self.policy_key(policy)?;
        Some(connection_string(
            &format!("localhost:{}", self.tls_port()),
            policy,
            &key,
            &self.event_hub,
            false,
        ))
    }
}

impl Drop for TestEventHubsEndpoint {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
