//! The text form of `$.exp`, a message's absolute expiry time.
//!
//! IoT Hub writes it as ISO 8601 UTC with seven fractional digits, the .NET round-trip form
//! (`3237-07-19T23:06:40.0000000Z`, py-device `test_mqtt_topic_iothub.py`); SDKs also send
//! fewer digits (`2017-01-06T23:37:00.669Z`, node-device `_mqtt_receiver_test.js`) or none and
//! no zone (`2019-02-02T00:00:00`, py-device). We read all of these, plus a bare number of
//! seconds since the epoch (`$.exp=0`, java `MqttTest.java`), and write the hub's form.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::error::{Error, ErrorKind, Result};

/// Writes `at` as `YYYY-MM-DDThh:mm:ss.fffffffZ` in UTC, to 100 ns.
pub(crate) fn format(at: SystemTime) -> Result<String> {
    let out_of_range = || {
        Error::new(
            ErrorKind::InvalidMessage,
            "the expiry time is outside the years 0000 to 9999",
        )
    };
    // `OffsetDateTime::from(SystemTime)` panics out of range; this conversion does not.
    let nanos = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).map_err(|_| out_of_range())?,
        Err(before) => -i128::try_from(before.duration().as_nanos()).map_err(|_| out_of_range())?,
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| out_of_range())?
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        ))
        .map_err(|_| out_of_range())
}

/// Reads an expiry written by IoT Hub or an SDK.
pub(crate) fn parse(text: &str) -> Result<SystemTime> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs = text.parse::<i64>().ok();
        if let Some(at) = secs.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()) {
            return Ok(at.into());
        }
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at.into());
    }
    let without_zone = format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(text, &without_zone)
        .map(|at| at.assume_utc().into())
        .map_err(|_| Error::new(ErrorKind::InvalidMessage, "'$.exp' is not an ISO 8601 time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn writes_seven_fractional_digits_in_utc() {
        let at = UNIX_EPOCH + Duration::new(1_893_456_000, 669_000_000);
        assert_eq!(format(at).unwrap(), "2030-01-01T00:00:00.6690000Z");
    }

    #[test]
    fn reads_every_form_the_sdks_send() {
        let base = UNIX_EPOCH + Duration::from_secs(1_483_745_820);
        assert_eq!(
            parse("2017-01-06T23:37:00.669Z").unwrap(),
            base + Duration::from_millis(669)
        );
        assert_eq!(parse("2017-01-06T23:37:00").unwrap(), base);
        assert_eq!(parse("2017-01-06T23:37:00.0000000Z").unwrap(), base);
        assert_eq!(parse("2017-01-07T00:37:00+01:00").unwrap(), base);
        assert_eq!(parse("0").unwrap(), UNIX_EPOCH);
        assert_eq!(
            parse("3237-07-19T23:06:40.0000000Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(40_000_000_000)
        );
    }

    #[test]
    fn refuses_times_it_cannot_write() {
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(format(far).unwrap_err().kind(), ErrorKind::InvalidMessage);
        let before = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(format(before).unwrap(), "1969-12-31T00:00:00.0000000Z");
    }

    #[test]
    fn rejects_other_text() {
        for bad in ["", "tomorrow", "2017-13-01T00:00:00Z", "12:00"] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                ErrorKind::InvalidMessage,
                "{bad}"
            );
        }
    }
}
