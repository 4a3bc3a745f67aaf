//! Device-to-cloud telemetry: every accepted message goes into the hub's retained telemetry
//! log with what IoT Hub stamps on it, for the built-in Event Hubs-compatible endpoint and
//! [`LocalHub::telemetry`](crate::local_hub::LocalHub::telemetry) alike.

use std::sync::Arc;

use super::{HubState, Identity, Inner};
use crate::local_hub::telemetry_log::{AuthMethod, Stamps, TelemetryEvent, TelemetryLog};
use crate::message::Message;

/// How a connection proved its identity, as `iothub-connection-auth-method` reports it.
///
/// The MQTT session passes it (see [`HubState::publish_telemetry_authenticated`]); it becomes
/// the `type` of the `iothub-connection-auth-method` annotation, whose values IoT Hub documents
/// as `sas`, `symkey` and `x509` (Microsoft Learn, "Create and read IoT Hub messages",
/// system properties).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A SAS token signed with the identity's key.
    Sas,
    /// A client certificate.
    X509,
}

impl Credential {
    fn auth_method(self, identity: &Identity) -> AuthMethod {
        AuthMethod {
            scope: if identity.module_id.is_some() {
                "module"
            } else {
                "device"
            },
            kind: match self {
                Credential::Sas => "sas",
                Credential::X509 => "x509",
            },
        }
    }
}

impl Inner {
    /// The identity's generation id (empty for an identity deleted meanwhile).
    fn generation_id(&self, identity: &Identity) -> String {
        let Some(device) = self.devices.get(&identity.device_id) else {
            return String::new();
        };
        match &identity.module_id {
            None => device.record.generation_id.clone(),
            Some(module) => device
                .modules
                .get(module)
                .map(|m| m.record.generation_id.clone())
                .unwrap_or_default(),
        }
    }
}

impl HubState {
    /// Records the TLS port of the Event Hubs-compatible endpoint (set once, at start).
    pub fn set_event_hubs_port(&self, port: u16) {
        let _ = self.event_hubs_port.set(port);
    }

    /// The TLS port of the Event Hubs-compatible endpoint; `None` before it listens.
    pub fn event_hubs_port(&self) -> Option<u16> {
        self.event_hubs_port.get().copied()
    }

    /// The retained telemetry log.
    pub fn telemetry_log(&self) -> &Arc<TelemetryLog> {
        &self.telemetry_log
    }

    /// Accepts telemetry from `from`, which authenticated with `credential`: appends it to the
    /// log with IoT Hub's stamps and the hub clock's time as its enqueued time.
    pub fn publish_telemetry_authenticated(
        &self,
        from: &Identity,
        credential: Credential,
        message: Message,
    ) -> Arc<TelemetryEvent> {
        let now = self.clock.now();
        let generation_id = {
            let mut inner = self.lock();
            inner.touch(from, now);
            inner.generation_id(from)
        };
        let stamps = Stamps {
            device_id: from.device_id.clone(),
            module_id: from.module_id.clone(),
            auth_method: credential.auth_method(from),
            generation_id,
        };
        self.telemetry_log.append(stamps, message, now)
    }
}
