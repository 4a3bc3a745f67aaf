//! The `?$rid=…&$version=…` tail of IoT Hub's `$iothub/...` topics.
//!
//! Keys are written with a leading `$` (`$rid`, `$version`); the Python SDK strips it when it
//! reads them (`_extract_properties`, `key.lstrip("$")`) and its tests use both `?$rid=1` and
//! `?rid=1`, so both spellings are read here. Values are percent-decoded (either hex case, `+`
//! kept as `+`), as py-device `mqtt_topic_iothub.py` does with `urllib.parse.unquote`.

use std::borrow::Cow;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::percent;

pub(crate) fn topic_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidTopic, detail)
}

/// Splits a topic at its first `?` into the path (without a trailing `/`) and the query.
/// The `/` before `?` is what the hub and the Python SDK write; Node's tests omit it
/// (node-device `_mqtt_receiver_test.js`: `$iothub/methods/POST/Reboot?$rid=1`).
pub(crate) fn split_query(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('?') {
        Some((path, query)) => (path.strip_suffix('/').unwrap_or(path), Some(query)),
        None => (topic.strip_suffix('/').unwrap_or(topic), None),
    }
}

/// The decoded value of `$name` (or `name`) in `query`; the first one wins.
pub(crate) fn query_value<'a>(query: Option<&'a str>, name: &str) -> Result<Option<Cow<'a, str>>> {
    let Some(query) = query else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key.strip_prefix('$').unwrap_or(key) == name {
            return decode(value, name).map(Some);
        }
    }
    Ok(None)
}

/// The request id (`$rid`) of `query`, required and not empty.
pub(crate) fn request_id(query: Option<&str>, what: &str) -> Result<String> {
    match query_value(query, "rid")? {
        Some(rid) if !rid.is_empty() => Ok(rid.into_owned()),
        _ => Err(topic_error(format!(
            "{what} topic without a '$rid' request id"
        ))),
    }
}

/// The `$version` of `query`, if any, as the unsigned integer IoT Hub writes.
pub(crate) fn version(query: Option<&str>, what: &str) -> Result<Option<u64>> {
    match query_value(query, "version")? {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            topic_error(format!(
                "{what} topic with a '$version' that is not an unsigned integer: '{text}'"
            ))
        }),
    }
}

/// Percent-decodes one topic segment or query value.
pub(crate) fn decode<'a>(text: &'a str, what: &str) -> Result<Cow<'a, str>> {
    percent::decode(text).map_err(|e| topic_error(format!("bad percent-encoding in {what}: {e}")))
}

/// Appends `?$rid={rid}` with the request id percent-encoded, as py-device
/// `get_twin_topic_for_publish` / `get_method_topic_for_publish` do (`quote(rid, safe="")`).
pub(crate) fn push_request_id(topic: &mut String, request_id: &str) {
    topic.push_str("?$rid=");
    percent::encode_into(request_id, topic);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_and_without_the_slash_before_the_query() {
        assert_eq!(split_query("a/b/?x=1"), ("a/b", Some("x=1")));
        assert_eq!(split_query("a/b?x=1"), ("a/b", Some("x=1")));
        assert_eq!(split_query("a/b/"), ("a/b", None));
    }

    #[test]
    fn reads_dollar_and_bare_keys_and_decodes_values() {
        let q = Some("$rid=fake%24request%2Fid&version=7&other");
        assert_eq!(request_id(q, "t").unwrap(), "fake$request/id");
        assert_eq!(version(q, "t").unwrap(), Some(7));
        assert_eq!(request_id(Some("rid=a+b"), "t").unwrap(), "a+b");
    }

    #[test]
    fn missing_or_bad_values_are_invalid_topic_errors() {
        for q in [None, Some(""), Some("$rid="), Some("$version=1")] {
            assert_eq!(
                request_id(q, "t").unwrap_err().kind(),
                ErrorKind::InvalidTopic
            );
        }
        for q in ["$version=x", "$version=-1", "$version=", "$version=1.5"] {
            assert_eq!(
                version(Some(q), "t").unwrap_err().kind(),
                ErrorKind::InvalidTopic
            );
        }
        assert_eq!(
            request_id(Some("$rid=%zz"), "t").unwrap_err().kind(),
            ErrorKind::InvalidTopic
        );
    }
}
