//! The AMQP `to` address of a cloud-to-device message: `/devices/{deviceId}/messages/devicebound`.
//!
//! The back end sets it on every message it sends to the `/messages/devicebound` link; IoT Hub
//! routes on it. Node's azure-iothub percent-encodes the id (`azure-iot-sdk-node`,
//! `service/src/amqp.ts`, `Amqp.send`: `'/devices/' + encodeURIComponent(deviceId) +
//! '/messages/devicebound'`), Python's azure-iot-hub writes it as given, and the C SDK writes
//! `deviceBound`; so a reader decodes the id and compares the fixed segments without case.

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::TopicIdentity;
use crate::protocol::percent;

/// The `to` address for a message to `device_id` (the id percent-encoded, as Node does).
///
/// ```
/// use iothub::protocol::{c2d_address, parse_c2d_address};
///
/// let to = c2d_address("dev 1");
/// assert_eq!(to, "/devices/dev%201/messages/devicebound");
/// assert_eq!(parse_c2d_address(&to)?.device_id, "dev 1");
/// # Ok::<(), iothub::Error>(())
/// ```
pub fn c2d_address(device_id: &str) -> String {
    let mut to = String::with_capacity(device_id.len() + 32);
    to.push_str("/devices/");
    percent::encode_into(device_id, &mut to);
    to.push_str("/messages/devicebound");
    to
}

/// Reads a `to` address: `/devices/{id}/messages/devicebound`, or a module's
/// `/devices/{id}/modules/{mid}/messages/devicebound`. Ids are percent-decoded; the fixed
/// segments may be in any case. Anything else is an [`ErrorKind::InvalidMessage`] error.
pub fn parse_c2d_address(to: &str) -> Result<TopicIdentity> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidMessage,
            "'to' must be /devices/{deviceId}/messages/devicebound",
        )
    };
    let segments: Vec<&str> = to.trim_start_matches('/').split('/').collect();
    let is = |segment: &str, word: &str| segment.eq_ignore_ascii_case(word);
    let (device, module) = match segments.as_slice() {
        [d, id, m, b] if is(d, "devices") && is(m, "messages") && is(b, "devicebound") => {
            (*id, None)
        }
        [d, id, mo, mid, m, b]
            if is(d, "devices")
                && is(mo, "modules")
                && is(m, "messages")
                && is(b, "devicebound") =>
        {
            (*id, Some(*mid))
        }
        _ => return Err(bad()),
    };
    let decode = |text: &str| -> Result<String> {
        let id = percent::decode(text).map_err(|_| bad())?.into_owned();
        if id.is_empty() { Err(bad()) } else { Ok(id) }
    };
    Ok(TopicIdentity {
        device_id: decode(device)?,
        module_id: module.map(decode).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_every_sdk_form() {
        for id in ["dev1", "dev 1", "a/b", "ü$%&"] {
            assert_eq!(parse_c2d_address(&c2d_address(id)).unwrap().device_id, id);
        }
        // Python writes the id as given; the C SDK writes `deviceBound`.
        let python = parse_c2d_address("/devices/dev1/messages/devicebound").unwrap();
        assert_eq!(python.device_id, "dev1");
        let c = parse_c2d_address("/devices/dev1/messages/deviceBound").unwrap();
        assert_eq!(c.device_id, "dev1");
        let module = parse_c2d_address("/devices/d/modules/m%201/messages/devicebound").unwrap();
        assert_eq!(module.module_id.as_deref(), Some("m 1"));
    }

    #[test]
    fn refuses_other_addresses() {
        for to in [
            "",
            "/devices//messages/devicebound",
            "/devices/d/messages/events",
            "/messages/devicebound",
            "/devices/d%zz/messages/devicebound",
            "/devices/d/modules//messages/devicebound",
        ] {
            let err = parse_c2d_address(to).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidMessage, "{to}");
        }
    }
}
