//! [`LocalHub`]'s device telemetry: in-process streams over the retained telemetry log, and
//! the addresses and connection strings of the built-in Event Hubs-compatible endpoint that
//! serves the same log.

use std::net::SocketAddr;

use super::telemetry_log::Position;
use super::{LocalHub, TelemetryStart, TelemetryStream, event_hubs};
use crate::auth::SasKey;
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::ports::AMQP_TLS_PORT;

impl LocalHub {
    /// Every telemetry message received from now on, from devices and modules, read from the
    /// hub's retained telemetry log (the one the Event Hubs-compatible endpoint serves).
    pub fn telemetry(&self) -> TelemetryStream {
        self.telemetry_from(TelemetryStart::Latest)
            .expect("every partition exists for Latest")
    }

    /// Telemetry from `start` on: the oldest retained message, now, an enqueued time, or one
    /// partition's offset ([`Telemetry::partition`](super::Telemetry::partition) and [`Telemetry::offset`](super::Telemetry::offset) of a message
    /// read before).
    ///
    /// Error: [`ErrorKind::InvalidMessage`] for a partition the hub does not have.
    pub fn telemetry_from(&self, start: TelemetryStart) -> Result<TelemetryStream> {
        let log = self.state.telemetry_log();
        let (partitions, position) = match start {
            TelemetryStart::Earliest => (0..log.partition_count(), Position::Earliest),
            TelemetryStart::Latest => (0..log.partition_count(), Position::Latest),
            TelemetryStart::EnqueuedSince(at) => (
                0..log.partition_count(),
                Position::EnqueuedTime {
                    at,
                    inclusive: true,
                },
            ),
            TelemetryStart::Offset { partition, offset } => (
                partition..partition.saturating_add(1),
                Position::Offset {
                    offset,
                    inclusive: true,
                },
            ),
        };
        let cursors = partitions
            .map(|p| log.cursor(p, &position))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::new(ErrorKind::InvalidMessage, e.to_string()))?;
        Ok(TelemetryStream::follow(
            log.clone(),
            cursors,
            self.state.stopping(),
        ))
    }

    /// The name of the built-in Event Hubs-compatible endpoint's Event Hub (`EntityPath`),
    /// `iothub-ehub-{hub}` as the portal shows it.
    pub fn event_hub_name(&self) -> &str {
        &self.event_hub
    }

    /// Where the Event Hubs-compatible endpoint listens over TLS.
    pub fn event_hubs_addr(&self) -> SocketAddr {
        self.event_hubs_addr
    }

    /// Where the Event Hubs-compatible endpoint listens over plain TCP (the emulator form).
    pub fn event_hubs_emulator_addr(&self) -> SocketAddr {
        self.event_hubs_emulator_addr
    }

    /// The Event Hubs-compatible connection string of the `iothubowner` policy, as the portal
    /// shows it (Built-in endpoints): `Endpoint=sb://localhost:PORT/;SharedAccessKeyName=
    /// iothubowner;SharedAccessKey=…;EntityPath=iothub-ehub-…`, over TLS (trust
    /// [`LocalHub::ca_pem`]). The official Event Hubs SDKs read telemetry with it.
    pub fn event_hubs_connection_string(&self) -> String {
        self.event_hubs_connection_string_for("iothubowner")
            .expect("the hub has the iothubowner policy")
    }

    /// The same for the emulator port, with `;UseDevelopmentEmulator=true`: the Python and
    /// Node Event Hubs SDKs then dial plain TCP, with no certificate to trust.
    pub fn event_hubs_emulator_connection_string(&self) -> String {
        self.event_hubs_emulator_connection_string_for("iothubowner")
            .expect("the hub has the iothubowner policy")
    }

    /// [`LocalHub::event_hubs_connection_string`] for another policy (it needs ServiceConnect
    /// to read: `iothubowner` or `service`); `None` for an unknown policy.
    pub fn event_hubs_connection_string_for(&self, policy: &str) -> Option<String> {
        let key = self.state.policy_key(policy)?;
        Some(self.event_hubs_string(policy, &key, self.event_hubs_addr.port(), false))
    }

    /// [`LocalHub::event_hubs_connection_string_for`] with the policy's secondary key, the
    /// portal's second connection string (for key rotation).
    pub fn event_hubs_secondary_connection_string_for(&self, policy: &str) -> Option<String> {
        let key = self.state.policy(policy)?.secondary_key;
        Some(self.event_hubs_string(policy, &key, self.event_hubs_addr.port(), false))
    }

    /// Telemetry messages the partition retains now (0 for a partition the hub does not have).
    pub fn telemetry_retained(&self, partition: u32) -> usize {
        self.state.telemetry_log().retained(partition)
    }

    /// [`LocalHub::event_hubs_emulator_connection_string`] for another policy.
    pub fn event_hubs_emulator_connection_string_for(&self, policy: &str) -> Option<String> {
        let key = self.state.policy_key(policy)?;
        let port = self.event_hubs_emulator_addr.port();
        Some(self.event_hubs_string(policy, &key, port, true))
    }

    fn event_hubs_string(&self, policy: &str, key: &SasKey, port: u16, emulator: bool) -> String {
        // The endpoint has its own host on IoT Hub (`…servicebus.windows.net`); here it is
        // this machine, which the certificate covers.
        let host = if port == AMQP_TLS_PORT && !emulator {
            "localhost".to_owned()
        } else {
            format!("localhost:{port}")
        };
        event_hubs::connection_string(&host, policy, key.to_base64(), &self.event_hub, emulator)
    }
}
