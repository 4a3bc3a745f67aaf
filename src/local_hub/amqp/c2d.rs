//! The `/messages/devicebound` node: cloud-to-device messages from the back end.
//!
//! Each message names its device in `to` (`protocol::parse_c2d_address`) and is settled at
//! once: `accepted` when the device's queue took it, `rejected` with the condition of the one
//! table in `protocol::amqp_error` otherwise, which the Node service SDK turns into its error
//! types (`azure-iot-sdk-node`, `service/src/amqp_service_errors.ts`, `translateError`).

use std::sync::Arc;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::acceptor::LinkEndpoint;
use fe2o3_amqp_types::definitions::{Error as AmqpErrorInfo, ErrorCondition};
use fe2o3_amqp_types::messaging::Body;
use fe2o3_amqp_types::primitives::Value;

use super::{Conn, close_expired};
use crate::error::{Error, ErrorKind};
use crate::local_hub::state::HubState;
use crate::protocol::amqp_error;
use crate::protocol::amqp_message::{AmqpBodyMessage, id_text, message_from_amqp};
use crate::protocol::parse_c2d_address;

/// Why a C2D message was rejected: an AMQP condition and a description.
struct Rejection {
    condition: ErrorCondition,
    description: String,
}

impl From<Error> for Rejection {
    fn from(error: Error) -> Self {
        Rejection {
            condition: amqp_error::error_condition_for(error.kind()),
            description: error.detail().to_owned(),
        }
    }
}

/// The device id of a C2D `to`. Module addresses are recognized but modules have no
/// cloud-to-device queue.
fn device_of(to: &str) -> Result<String, Error> {
    let address = parse_c2d_address(to)?;
    if address.module_id.is_some() {
        return Err(Error::new(
            ErrorKind::ModuleNotFound,
            "modules have no cloud-to-device queue",
        ));
    }
    Ok(address.device_id)
}

fn enqueue(state: &HubState, amqp: &AmqpBodyMessage) -> Result<String, Error> {
    let to = amqp
        .properties
        .as_ref()
        .and_then(|p| p.to.as_deref())
        .ok_or_else(|| Error::new(ErrorKind::InvalidMessage, "the message has no 'to'"))?;
    let device_id = device_of(to)?;
    state.enqueue_c2d(&device_id, message_from_amqp(amqp)?)?;
    Ok(device_id)
}

/// Serves the client's `/messages/devicebound` sender link until it detaches or the
/// connection's authorization lapses.
pub(super) async fn receive(mut receiver: Receiver, conn: Arc<Conn>) {
    // One watch on the authorization for the link's life, not one (with its timer) per message.
    let lapsed = conn.lapsed();
    tokio::pin!(lapsed);
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => match delivery {
                Ok(delivery) => delivery,
                Err(_) => return,
            },
            _ = &mut lapsed => {
                close_expired(LinkEndpoint::Receiver(receiver), &conn).await;
                return;
            }
        };
        let amqp = delivery.message();
        let message_id = amqp
            .properties
            .as_ref()
            .and_then(|p| p.message_id.as_ref())
            .map(id_text);
        let queued = enqueue(&conn.state, amqp);
        // Durable before `accepted` when the hub keeps a state directory.
        let queued = match queued {
            Ok(device_id) => conn.state.persisted().await.map(|()| device_id),
            Err(e) => Err(e),
        };
        let settled = match queued {
            Ok(device_id) => {
                tracing::info!(peer = %conn.peer, device = %device_id, message_id = ?message_id, "AMQP C2D send accepted");
                receiver.accept(&delivery).await
            }
            Err(error) => {
                let rejection = Rejection::from(error);
                tracing::info!(
                    peer = %conn.peer,
                    message_id = ?message_id,
                    condition = %amqp_error::condition_symbol(&rejection.condition),
                    description = %rejection.description,
                    "AMQP C2D send rejected"
                );
                let error = AmqpErrorInfo::new(rejection.condition, rejection.description, None);
                receiver.reject(&delivery, error).await
            }
        };
        if settled.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_decoded_and_module_addresses_refused() {
        assert_eq!(
            device_of("/devices/dev%201/messages/devicebound").ok(),
            Some("dev 1".to_owned())
        );
        assert_eq!(
            device_of("/Devices/d/Messages/deviceBound").ok(),
            Some("d".to_owned())
        );
        let kind = |to: &str| device_of(to).unwrap_err().kind();
        assert_eq!(
            kind("/devices//messages/devicebound"),
            ErrorKind::InvalidMessage
        );
        assert_eq!(
            kind("/devices/d/messages/events"),
            ErrorKind::InvalidMessage
        );
        // amqp:not-found, as before: the module has no queue.
        assert_eq!(
            kind("/devices/d/modules/m/messages/devicebound"),
            ErrorKind::ModuleNotFound
        );
    }

    #[test]
    fn refusals_carry_the_conditions_the_sdks_read() {
        let symbol =
            |kind| amqp_error::condition_symbol(&Rejection::from(Error::new(kind, "x")).condition);
        assert_eq!(
            symbol(ErrorKind::InvalidMessage),
            amqp_error::ARGUMENT_ERROR
        );
        assert_eq!(symbol(ErrorKind::ModuleNotFound), "amqp:not-found");
        assert_eq!(symbol(ErrorKind::QueueFull), "amqp:resource-limit-exceeded");
    }
}
