//! Which tokens open the built-in endpoint: Event Hubs-style SAS tokens of the hub's
//! policies that grant ServiceConnect.
//!
//! Event Hubs clients sign with the key text's bytes as the HMAC key, not the base64-decoded
//! key IoT Hub's own endpoints use (azure-sdk-for-python `azure/eventhub/_pyamqp/utils.py`,
//! `generate_sas_token`; azure-sdk-for-js `sdk/core/core-amqp/src/util/hmacSha256.ts`;
//! azure-sdk-for-rust `sdk/eventhubs/azure_messaging_eventhubs/src/common/sas_credential.rs`).
//! "The hub's own policies are accepted on that endpoint" with the ServiceConnect permission
//! (MicrosoftDocs `iot-hub-devguide-messages-read-builtin.md`). `sr` is
//! `sb://host[:port]/{entity}…` (Python, Node) or `amqps://host/{entity}` (Rust); it must name
//! this Event Hub or the whole namespace. A device-scope token (`…/devices/…`, no `skn`) is
//! refused.

use std::time::SystemTime;

use crate::auth::{Permission, ResourceUri, SasKey, SasToken};
use crate::local_hub::state::HubState;

/// Why a token was refused (never contains the token).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenRefused {
    /// Not a shared access signature.
    #[error("the token is not a shared access signature")]
    Malformed,
    /// No `skn`: a device token.
    #[error("a device-scope token cannot read events; use a policy with ServiceConnect")]
    DeviceScope,
    /// `skn` names no policy of the hub.
    #[error("no shared access policy named '{0}'")]
    UnknownPolicy(String),
    /// The signature does not match the policy's key.
    #[error("the token's signature does not match policy '{0}'")]
    BadSignature(String),
    /// `sr` names another entity.
    #[error("the token's resource does not cover event hub '{0}'")]
    WrongResource(String),
    /// The policy lacks ServiceConnect or the token expired.
    #[error("{0}")]
    Denied(String),
}

/// The path part of an Event Hubs address or audience: without `scheme://host[:port]/`.
pub(crate) fn address_path(address: &str) -> &str {
    for scheme in ["amqps://", "amqp://", "sb://", "https://", "http://"] {
        if address.len() >= scheme.len() && address[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &address[scheme.len()..];
            return rest.find('/').map_or("", |i| &rest[i + 1..]);
        }
    }
    address.trim_start_matches('/')
}

/// Checks `text`; `Ok` holds the token's expiry.
pub(crate) fn check_token(
    state: &HubState,
    event_hub: &str,
    text: &str,
) -> Result<SystemTime, TokenRefused> {
    let token: SasToken = text.parse().map_err(|_| TokenRefused::Malformed)?;
    let resource = token.resource().map_err(|_| TokenRefused::Malformed)?;
    let path = address_path(&resource).trim_end_matches('/');
    let mut segments = path.split('/');
    let entity = segments.next().unwrap_or("");
    if path.to_ascii_lowercase().contains("devices/") && token.key_name().is_none() {
        return Err(TokenRefused::DeviceScope);
    }
    let policy = token.key_name().ok_or(TokenRefused::DeviceScope)?;
    if !entity.is_empty() && !entity.eq_ignore_ascii_case(event_hub) {
        return Err(TokenRefused::WrongResource(event_hub.to_owned()));
    }
    let record = state
        .policy(&policy)
        .ok_or_else(|| TokenRefused::UnknownPolicy(policy.clone()))?;
    // Either of the policy's keys signs (the portal shows a connection string for each).
    let key = [&record.primary_key, &record.secondary_key]
        .into_iter()
        .find(|key| token.verify(&SasKey::from_bytes(key.to_base64().as_bytes())))
        .ok_or_else(|| TokenRefused::BadSignature(policy.clone()))?;
    // The policy's rights and the expiry, checked by the hub's own rule on an equivalent
    // hub-scope token of the same policy.
    let equivalent = key.token(
        &ResourceUri::service(&state.settings.host_name),
        Some(&policy),
        token.expiry_secs(),
    );
    state
        .authorize_service(&equivalent, Permission::ServiceConnect)
        .map_err(|denied| TokenRefused::Denied(denied.to_string()))?;
    Ok(token.expiry())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_scheme_and_host() {
        assert_eq!(
            address_path("amqps://localhost:5671/eh/ConsumerGroups/$Default/Partitions/0"),
            "eh/ConsumerGroups/$Default/Partitions/0"
        );
        assert_eq!(address_path("sb://localhost:5673/eh"), "eh");
        assert_eq!(
            address_path("eh/ConsumerGroups/a/Partitions/1"),
            "eh/ConsumerGroups/a/Partitions/1"
        );
        assert_eq!(address_path("SB://host"), "");
        assert_eq!(address_path("$management"), "$management");
    }
}
