//! What the device task says when a connection fails: errors without credentials, with what
//! to do about a refused certificate or a refused identity.

use rumqttc::ConnectReturnCode;

use super::*;

pub(crate) fn transport_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Transport, detail)
}

pub(super) fn is_auth_refusal(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword
        )
    )
}

/// A description of a connection error without credentials (rumqttc's errors carry none),
/// with what to do when the hub's certificate was refused.
pub(super) fn describe(error: &ConnectionError) -> String {
    match crate::client_tls::trust_hint(error) {
        Some(hint) => format!("{error}: {hint}"),
        None => error.to_string(),
    }
}

impl Task {
    /// What a CONNACK "not authorized" means for this client's credential. MQTT 3.1.1 has
    /// only return codes 4 and 5 for a refusal, so the text lists the causes IoT Hub folds into
    /// them (Microsoft Learn, "Troubleshoot 401003 IoTHubUnauthorized").
    pub(super) fn refusal_text(&self) -> String {
        let endpoint = &self.endpoint;
        let identity = match &self.module_id {
            Some(module) => format!("'{}/{module}'", self.device_id),
            None => format!("'{}'", self.device_id),
        };
        if self.tokens.is_some() {
            format!(
                "the hub at {endpoint} refused {identity} (CONNACK not authorized): the id is \
                 not registered on this hub, the device is disabled, or the key (or the \
                 SharedAccessSignature) is wrong or expired; check the connection string \
                 against the registry (iothub-local logs which one at info level)"
            )
        } else {
            format!(
                "the hub at {endpoint} refused the certificate of {identity} (CONNACK not \
                 authorized): register the certificate's SHA-1 or SHA-256 thumbprint on the \
                 device (self-signed), or sign it with a CA the hub has verified with CN = the \
                 device id (CA-signed); the device must be enabled and registered with X.509 \
                 authentication"
            )
        }
    }
}
