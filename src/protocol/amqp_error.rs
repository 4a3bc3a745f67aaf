//! One table between IoT Hub's AMQP error conditions and [`ErrorKind`], used by the local hub
//! to reject and by the service client to read rejections.
//!
//! Conditions as IoT Hub sends them and the Node service SDK reads them
//! (`azure-iot-sdk-node`, `service/src/amqp_service_errors.ts`, `translateError`):
//! `amqp:not-found` (device not found), `amqp:resource-limit-exceeded` (the device's queue is
//! full), `amqp:link:message-size-exceeded`, `amqp:unauthorized-access`,
//! `com.microsoft:argument-error`, `com.microsoft:device-container-throttled`,
//! `com.microsoft:timeout`.

use fe2o3_amqp_types::definitions::{
    AmqpError, ConnectionError, ErrorCondition, LinkError, SessionError,
};
use fe2o3_amqp_types::primitives::Symbol;

use crate::error::ErrorKind;

/// `com.microsoft:argument-error`: a malformed request (Node maps it to `ArgumentError`).
pub(crate) const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
/// `com.microsoft:device-container-throttled`: too many requests.
pub(crate) const THROTTLED: &str = "com.microsoft:device-container-throttled";
/// `com.microsoft:timeout`: the operation timed out in the hub.
pub(crate) const TIMEOUT: &str = "com.microsoft:timeout";

/// The condition a hub sends for a refusal of this kind.
#[cfg_attr(not(feature = "local-hub"), allow(dead_code))]
pub(crate) fn condition_for(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::DeviceNotFound | ErrorKind::ModuleNotFound => "amqp:not-found",
        ErrorKind::QueueFull => "amqp:resource-limit-exceeded",
        ErrorKind::MessageTooLarge => "amqp:link:message-size-exceeded",
        ErrorKind::Unauthorized => "amqp:unauthorized-access",
        ErrorKind::Throttled => THROTTLED,
        ErrorKind::Timeout => TIMEOUT,
        ErrorKind::NotSupported => "amqp:not-implemented",
        ErrorKind::InvalidMessage
        | ErrorKind::InvalidTopic
        | ErrorKind::InvalidPropertyBag
        | ErrorKind::InvalidConnectionString
        | ErrorKind::InvalidKey
        | ErrorKind::InvalidToken => ARGUMENT_ERROR,
        _ => "amqp:internal-error",
    }
}

/// The kind a client reports for a condition the hub sent.
#[cfg_attr(not(feature = "service"), allow(dead_code))]
pub(crate) fn kind_for(condition: &str) -> ErrorKind {
    match condition {
        "amqp:not-found" => ErrorKind::DeviceNotFound,
        "amqp:resource-limit-exceeded" => ErrorKind::QueueFull,
        "amqp:link:message-size-exceeded" => ErrorKind::MessageTooLarge,
        "amqp:unauthorized-access" => ErrorKind::Unauthorized,
        "amqp:not-implemented" => ErrorKind::NotSupported,
        THROTTLED => ErrorKind::Throttled,
        TIMEOUT => ErrorKind::Timeout,
        ARGUMENT_ERROR => ErrorKind::InvalidMessage,
        _ => ErrorKind::Transport,
    }
}

/// The symbol of a condition, exactly as it goes on the wire.
pub(crate) fn condition_symbol(condition: &ErrorCondition) -> String {
    match condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e).0,
        ErrorCondition::ConnectionError(e) => Symbol::from(e).0,
        ErrorCondition::SessionError(e) => Symbol::from(e).0,
        ErrorCondition::LinkError(e) => Symbol::from(e).0,
        ErrorCondition::Custom(s) => s.0.clone(),
        #[allow(unreachable_patterns)]
        _ => "amqp:internal-error".to_owned(),
    }
}

/// The condition for a symbol: a standard one where AMQP defines it, else a custom one.
#[cfg_attr(not(feature = "local-hub"), allow(dead_code))]
pub(crate) fn condition_from_symbol(symbol: &str) -> ErrorCondition {
    if let Ok(e) = AmqpError::try_from(symbol) {
        return ErrorCondition::AmqpError(e);
    }
    if let Ok(e) = LinkError::try_from(symbol) {
        return ErrorCondition::LinkError(e);
    }
    if let Ok(e) = SessionError::try_from(symbol) {
        return ErrorCondition::SessionError(e);
    }
    if let Ok(e) = ConnectionError::try_from(symbol) {
        return ErrorCondition::ConnectionError(e);
    }
    ErrorCondition::Custom(Symbol::from(symbol))
}

/// The condition a hub sends for a refusal of this kind, as fe2o3 writes it.
#[cfg_attr(not(feature = "local-hub"), allow(dead_code))]
pub(crate) fn error_condition_for(kind: ErrorKind) -> ErrorCondition {
    condition_from_symbol(condition_for(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_the_hub_sends_reads_back_as_its_kind() {
        for kind in [
            ErrorKind::DeviceNotFound,
            ErrorKind::QueueFull,
            ErrorKind::MessageTooLarge,
            ErrorKind::Unauthorized,
            ErrorKind::Throttled,
            ErrorKind::Timeout,
            ErrorKind::NotSupported,
            ErrorKind::InvalidMessage,
        ] {
            let condition = error_condition_for(kind);
            assert_eq!(kind_for(&condition_symbol(&condition)), kind);
        }
    }

    #[test]
    fn standard_symbols_become_standard_conditions() {
        assert_eq!(
            condition_from_symbol("amqp:not-found"),
            ErrorCondition::AmqpError(AmqpError::NotFound)
        );
        assert_eq!(
            condition_from_symbol("amqp:link:message-size-exceeded"),
            ErrorCondition::LinkError(LinkError::MessageSizeExceeded)
        );
        assert_eq!(
            condition_symbol(&condition_from_symbol(ARGUMENT_ERROR)),
            ARGUMENT_ERROR
        );
        assert_eq!(kind_for("amqp:link:stolen"), ErrorKind::Transport);
    }
}
