//! The `$cbs` node: claims-based security put-token requests and their responses.
//!
//! A request carries the application properties `operation` = `put-token`, `type` =
//! `servicebus.windows.net:sastoken` and `name` = the audience, and the token as an AMQP string
//! body (`azure-iot-sdk-node`, `common/transport/amqp/src/amqp_cbs.ts`, `putToken`;
//! `azure-uamqp-c`, `src/cbs.c`, `cbs_put_token_async`). The audience the official service
//! SDKs send for a hub:
//! - Node's azure-iothub: the token's `sr`, i.e. the connection string's `HostName`, which may
//!   carry a `:port` (`azure-iot-sdk-node`, `service/src/amqp.ts`, `connect`:
//!   `SharedAccessSignature.parse(...).sr`);
//! - Python's azure-iot-hub: `"https://" + hostname` (`azure-iot-hub-python`,
//!   `src/azure/iot/hub/iothub_amqp_client.py`, `IoTHubAmqpClientSharedAccessKeyAuth`:
//!   `JWTTokenAuth(audience="https://" + hostname, ...)`).
//!
//! So an audience names this hub when its host, with any scheme, `:port` and path left out,
//! is the hub's host name; any other audience is refused with 401, even with a token that
//! would be valid here.

use std::sync::Arc;
use std::time::SystemTime;

use fe2o3_amqp::{Receiver, Sender};
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, Properties,
};
use fe2o3_amqp_types::primitives::{SimpleValue, Value};
use tokio::sync::mpsc;

use super::Conn;
use crate::auth::{HostAndPort, Permission, SasToken};
use crate::local_hub::state::HubState;
use crate::protocol::amqp_message::AmqpBodyMessage;

/// CBS responses a connection may have waiting for its `$cbs` receiver (which reads them
/// only as fast as it gives credit); past this many the connection is closed with
/// `amqp:resource-limit-exceeded`. Clients wait for each response before the next put-token
/// (`amqp_cbs.ts`, `putToken`; uamqp's `cbs_put_token_async` callback), so a few suffice.
pub(super) const CBS_REPLY_BOUND: usize = 64;

/// A refused put-token: the status code and description of the response. Every refusal is
/// 401, which Node turns into `UnauthorizedError` (`amqp_cbs.ts`, `putToken`: any status but
/// 200 is one).
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    status: i32,
    description: String,
}

impl Refusal {
    fn unauthorized(description: impl Into<String>) -> Self {
        Refusal {
            status: 401,
            description: description.into(),
        }
    }
}

fn text_property(message: &AmqpBodyMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// Whether a put-token audience names the hub `host_name` (see the module documentation):
/// `host`, `host:port`, `https://host[:port][/path]`, the host compared without case.
fn audience_names_hub(audience: &str, host_name: &str) -> bool {
    let rest = audience
        .split_once("://")
        .map_or(audience, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    HostAndPort::parse(authority).is_ok_and(|host| host.host().eq_ignore_ascii_case(host_name))
}

/// Checks a put-token request; `Ok` holds the token's expiry.
fn check_put_token(state: &HubState, request: &AmqpBodyMessage) -> Result<SystemTime, Refusal> {
    if text_property(request, "operation").as_deref() != Some("put-token") {
        return Err(Refusal::unauthorized("unsupported operation"));
    }
    let Some(audience) = text_property(request, "name") else {
        return Err(Refusal::unauthorized(
            "the put-token request has no audience ('name')",
        ));
    };
    let host_name = &state.settings.host_name;
    if !audience_names_hub(&audience, host_name) {
        return Err(Refusal::unauthorized(format!(
            "the audience '{audience}' is not this hub ('{host_name}')"
        )));
    }
    let Body::Value(AmqpValue(Value::String(text))) = &request.body else {
        return Err(Refusal::unauthorized(
            "the body must be the token as a string",
        ));
    };
    let token: SasToken = text
        .parse()
        .map_err(|_| Refusal::unauthorized("the token is not a shared access signature"))?;
    state
        .authorize_service(&token, Permission::ServiceConnect)
        .map_err(|denied| Refusal::unauthorized(denied.to_string()))?;
    Ok(token.expiry())
}

/// The response to a request: correlation-id = the request's message-id with its AMQP type
/// (a ulong from uamqp, a string from Node), `to` = its reply-to, and `status-code` an AMQP
/// int, which uamqp-c reads with `amqpvalue_get_int` (`azure-uamqp-c`,
/// `src/amqp_management.c`, `on_message_received`).
fn response(
    request: &AmqpBodyMessage,
    status: i32,
    description: String,
) -> AmqpMessage<Body<Value>> {
    let props = request.properties.as_ref();
    let reply_props = Properties {
        correlation_id: props.and_then(|p| p.message_id.clone()),
        to: props.and_then(|p| p.reply_to.clone()),
        ..Properties::default()
    };
    AmqpMessage::builder()
        .properties(reply_props)
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert("status-description", SimpleValue::String(description))
                .build(),
        )
        .body(Body::Value(AmqpValue(Value::Null)))
        .build()
}

/// Serves the client's `$cbs` sender link: checks each put-token and queues its response.
pub(super) async fn requests(mut receiver: Receiver, conn: Arc<Conn>) {
    while let Ok(delivery) = receiver.recv::<Body<Value>>().await {
        let request = delivery.message();
        let (status, description) = match check_put_token(&conn.state, request) {
            Ok(until) => {
                conn.authorize_until(until);
                (200, "OK".to_owned())
            }
            Err(refusal) => (refusal.status, refusal.description),
        };
        tracing::info!(peer = %conn.peer, status, description = %description, "CBS put-token");
        let reply = response(request, status, description);
        if receiver.accept(&delivery).await.is_err() {
            break;
        }
        match conn.cbs_replies.try_send(reply) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!(peer = %conn.peer, bound = CBS_REPLY_BOUND, "CBS replies not read: closing the connection");
                conn.budget
                    .exceed("too many CBS responses waiting: read the $cbs replies");
                break;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
}

/// Serves the client's `$cbs` receiver link: sends the queued responses.
pub(super) async fn responses(
    mut sender: Sender,
    mut replies: mpsc::Receiver<AmqpMessage<Body<Value>>>,
) {
    while let Some(reply) = replies.recv().await {
        if sender.send(reply).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audiences_the_sdks_send_name_the_hub() {
        for audience in [
            "localhost",
            "localhost:5671",
            "https://localhost",
            "https://LOCALHOST:5671/",
            "amqps://localhost/messages/devicebound",
        ] {
            assert!(audience_names_hub(audience, "localhost"), "{audience}");
        }
        assert!(audience_names_hub(
            "https://myhub.azure-devices.net",
            "myhub.azure-devices.net"
        ));
    }

    #[test]
    fn other_hubs_and_malformed_audiences_do_not() {
        for audience in [
            "otherhub.azure-devices.net",
            "https://otherhub:5671",
            "localhost.evil",
            "https://",
            "",
            "localhost:port",
        ] {
            assert!(!audience_names_hub(audience, "localhost"), "{audience}");
        }
    }
}
