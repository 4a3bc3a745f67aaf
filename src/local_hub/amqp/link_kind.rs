//! What a client's ATTACH on the service endpoint asks for, read from its role and address.

use fe2o3_amqp_types::definitions::Role;
use fe2o3_amqp_types::messaging::{Source, Target, TargetArchetype};
use fe2o3_amqp_types::performatives::Attach;

use crate::protocol::amqp_message::{
    C2D_LINK_TARGET, FEEDBACK_LINK_SOURCE, FILE_NOTIFICATION_LINK_SOURCE,
};

use super::redirect;

/// What an ATTACH asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkKind {
    /// The client's sender to `$cbs`: put-token requests.
    CbsRequests,
    /// The client's receiver from `$cbs`: put-token responses.
    CbsResponses,
    /// The client's sender to `/messages/devicebound`.
    CloudToDevice,
    /// The client's receiver from `/messages/serviceBound/feedback`.
    Feedback,
    /// The client's receiver from `/messages/serviceBound/filenotifications`.
    FileNotifications,
    /// The client's receiver from `/messages/events/…`: redirected to the Event Hubs endpoint.
    Events,
}

/// An address without any `amqps://host[:port]` prefix or trailing `/`, lowercased: clients
/// write `/messages/devicebound` (`azure-iot-sdk-node`, `service/src/amqp.ts`, `send`),
/// `amqps://host/messages/devicebound` (`azure-iot-hub-python`,
/// `src/azure/iot/hub/iothub_amqp_client.py`, the `SendClient` target) or `…/deviceBound`
/// and `/messages/serviceBound/feedback` (Node's `getFeedbackReceiver`).
fn address_path(address: &str) -> String {
    let lower = address.to_ascii_lowercase();
    let path = match lower
        .strip_prefix("amqps://")
        .or_else(|| lower.strip_prefix("amqp://"))
    {
        Some(rest) => rest.find('/').map_or("", |i| &rest[i..]).to_owned(),
        None => lower,
    };
    path.trim_end_matches('/').to_owned()
}

fn target_address(attach: &Attach) -> Option<&str> {
    match attach.target.as_deref()? {
        TargetArchetype::Target(t) => t.address.as_deref(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

pub(super) fn classify(attach: &Attach) -> Option<LinkKind> {
    // `role` is the client's role on the link.
    match attach.role {
        Role::Sender => {
            let path = address_path(target_address(attach)?);
            if path == "$cbs" {
                Some(LinkKind::CbsRequests)
            } else if path.eq_ignore_ascii_case(C2D_LINK_TARGET) {
                Some(LinkKind::CloudToDevice)
            } else {
                None
            }
        }
        Role::Receiver => {
            let source = attach.source.as_ref()?.address.as_deref()?;
            let path = address_path(source);
            if path == "$cbs" {
                Some(LinkKind::CbsResponses)
            } else if path.eq_ignore_ascii_case(FEEDBACK_LINK_SOURCE) {
                Some(LinkKind::Feedback)
            } else if path.eq_ignore_ascii_case(FILE_NOTIFICATION_LINK_SOURCE) {
                Some(LinkKind::FileNotifications)
            } else if redirect::is_events_path(&path) {
                Some(LinkKind::Events)
            } else {
                None
            }
        }
    }
}

/// fe2o3-amqp refuses a client sender with no source and a client receiver with no target,
/// which rhea (azure-iothub for Node) attaches for `$cbs` and the feedback link
/// (`azure-iot-sdk-node`, `common/transport/amqp/src/amqp_cbs.ts`, the `$cbs` sender and
/// receiver links); an empty terminus fills the gap, and the reply still echoes the client's
/// addresses (a null terminus in the reply means "refused", OASIS AMQP 1.0 part 2.6.3, on
/// which uamqp waits out its own timeout).
pub(super) fn fill_termini(mut attach: Attach) -> Attach {
    match attach.role {
        Role::Sender if attach.source.is_none() => {
            attach.source = Some(Box::new(Source::default()));
        }
        Role::Receiver if attach.target.is_none() => {
            attach.target = Some(Box::new(TargetArchetype::Target(Target::default())));
        }
        _ => {}
    }
    attach
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_lose_scheme_host_and_case() {
        assert_eq!(
            address_path("amqps://localhost:5671/messages/deviceBound"),
            "/messages/devicebound"
        );
        assert_eq!(
            address_path("/messages/serviceBound/feedback/"),
            "/messages/servicebound/feedback"
        );
        assert_eq!(address_path("$cbs"), "$cbs");
    }
}
