//! The selector filter a partition receiver attaches with, parsed into a [`Position`].
//!
//! The filter set's key is the symbol `apache.org:selector-filter:string`; its value is a
//! described string whose descriptor is that symbol (azure-sdk-for-python
//! `azure/eventhub/_transport/_pyamqp_transport.py`, `create_receive_client`; the C SDK test
//! tool, azure-iot-sdk-c `testtools/iothub_test/src/iothubtest.c`,
//! `create_link_source_filter`) or the code `0x0000468C00000004` (azure-sdk-for-js
//! `sdk/eventhub/event-hubs/src/partitionReceiver.ts`). The expressions the official clients
//! and tools write:
//!
//! - `amqp.annotation.x-opt-offset > '@latest'`, `> '-1'`, `>= '1234'` (Python, Node; Rust
//!   writes `>'1234'` with no space, azure-sdk-for-rust
//!   `sdk/eventhubs/azure_messaging_eventhubs/src/consumer/mod.rs`);
//! - `amqp.annotation.x-opt-sequence-number > '-1'`, `>= '5'`;
//! - `amqp.annotation.x-opt-enqueued-time > '1700000000000'` (milliseconds);
//! - the legacy, unquoted `amqp.annotation.x-opt-enqueuedtimeutc > 1700000000000` (Azure CLI
//!   `azext_iot/monitor/telemetry.py`; the C SDK test tool) and
//!   `amqp.annotation.x-opt-sequence-number > 2995` (MicrosoftDocs `iot-hub-amqp-support.md`).
//!
//! `-1` means the beginning and `@latest` what is enqueued after the attach; `>` is exclusive,
//! `>=` inclusive.

use std::time::{Duration, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::FilterSet;
use fe2o3_amqp_types::primitives::Value;

use crate::local_hub::telemetry_log::Position;

/// The selector filter's name: the filter set key and the descriptor symbol.
pub(crate) const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";

/// Why a filter was refused; the text goes back to the client as the attach error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FilterError {
    /// The filter set's selector is not a (described) string.
    #[error("the selector filter must be a string")]
    NotAString,
    /// The expression does not name a known annotation.
    #[error("the selector filter names no supported annotation: {0}")]
    UnknownAnnotation(String),
    /// No `>` or `>=` operator.
    #[error("the selector filter has no '>' or '>=' operator: {0}")]
    NoOperator(String),
    /// The value is not a number (or `@latest` for an offset).
    #[error("the selector filter value is not valid: {0}")]
    BadValue(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Annotation {
    Offset,
    SequenceNumber,
    EnqueuedTime,
}

/// The start position a receiver's filter set asks for; `None` when it has no selector
/// filter (the receiver then reads from the beginning).
pub(crate) fn position_from_filter_set(
    filters: Option<&FilterSet>,
) -> Result<Option<Position>, FilterError> {
    let Some(filters) = filters else {
        return Ok(None);
    };
    let Some((_, value)) = filters
        .iter()
        .find(|(key, _)| key.as_str().eq_ignore_ascii_case(SELECTOR_FILTER))
    else {
        return Ok(None);
    };
    // The key names the filter; its descriptor (symbol or code) adds nothing, so either is
    // taken, and a bare string too.
    let expression = match value {
        Value::Described(described) => match &described.value {
            Value::String(text) => text.as_str(),
            _ => return Err(FilterError::NotAString),
        },
        Value::String(text) => text.as_str(),
        _ => return Err(FilterError::NotAString),
    };
    parse_selector(expression).map(Some)
}

/// Parses one selector expression.
pub(crate) fn parse_selector(expression: &str) -> Result<Position, FilterError> {
    let text = expression.trim();
    let op_at = text
        .find('>')
        .ok_or_else(|| FilterError::NoOperator(expression.to_owned()))?;
    let name = text[..op_at].trim();
    let (inclusive, value) = match text[op_at + 1..].strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, &text[op_at + 1..]),
    };
    let value =
        unquote(value.trim()).ok_or_else(|| FilterError::BadValue(expression.to_owned()))?;
    let name = name.to_ascii_lowercase();
    let name = name.strip_prefix("amqp.annotation.").unwrap_or(&name);
    let annotation = match name {
        "x-opt-offset" => Annotation::Offset,
        "x-opt-sequence-number" => Annotation::SequenceNumber,
        "x-opt-enqueued-time" | "x-opt-enqueuedtimeutc" => Annotation::EnqueuedTime,
        _ => return Err(FilterError::UnknownAnnotation(expression.to_owned())),
    };
    let bad = || FilterError::BadValue(expression.to_owned());
    if annotation == Annotation::Offset && value.eq_ignore_ascii_case("@latest") {
        return Ok(Position::Latest);
    }
    let number: i64 = value.parse().map_err(|_| bad())?;
    Ok(match annotation {
        Annotation::Offset if number < 0 => Position::Earliest,
        Annotation::Offset => Position::Offset {
            offset: number,
            inclusive,
        },
        Annotation::SequenceNumber => Position::Sequence {
            sequence_number: number,
            inclusive,
        },
        Annotation::EnqueuedTime => {
            let millis = u64::try_from(number).map_err(|_| bad())?;
            Position::EnqueuedTime {
                at: UNIX_EPOCH
                    .checked_add(Duration::from_millis(millis))
                    .ok_or_else(bad)?,
                inclusive,
            }
        }
    })
}

/// The value without its single quotes, if it had matching ones; `None` for an empty or
/// half-quoted value.
fn unquote(value: &str) -> Option<&str> {
    let inner = match (value.strip_prefix('\''), value.ends_with('\'')) {
        (Some(rest), true) if !rest.is_empty() => &rest[..rest.len() - 1],
        (None, false) => value,
        _ => return None,
    };
    let inner = inner.trim();
    (!inner.is_empty()).then_some(inner)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use fe2o3_amqp_types::primitives::{OrderedMap, Symbol};
    use proptest::prelude::*;
    use serde_amqp::described::Described;
    use serde_amqp::descriptor::Descriptor;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn every_spelling_the_clients_write() {
        let cases = [
            ("amqp.annotation.x-opt-offset > '@latest'", Position::Latest),
            ("amqp.annotation.x-opt-offset > '-1'", Position::Earliest),
            ("x-opt-offset > '-1'", Position::Earliest),
            (
                "amqp.annotation.x-opt-offset >= '1234'",
                Position::Offset {
                    offset: 1234,
                    inclusive: true,
                },
            ),
            (
                "amqp.annotation.x-opt-offset >'1234'",
                Position::Offset {
                    offset: 1234,
                    inclusive: false,
                },
            ),
            (
                "amqp.annotation.x-opt-sequence-number > '-1'",
                Position::Sequence {
                    sequence_number: -1,
                    inclusive: false,
                },
            ),
            (
                "x-opt-sequence-number >= '5'",
                Position::Sequence {
                    sequence_number: 5,
                    inclusive: true,
                },
            ),
            (
                "amqp.annotation.x-opt-sequence-number > 2995",
                Position::Sequence {
                    sequence_number: 2995,
                    inclusive: false,
                },
            ),
            (
                "amqp.annotation.x-opt-enqueued-time > '1700000000000'",
                Position::EnqueuedTime {
                    at: at(1_700_000_000_000),
                    inclusive: false,
                },
            ),
            (
                "amqp.annotation.x-opt-enqueued-time>='1700000000000'",
                Position::EnqueuedTime {
                    at: at(1_700_000_000_000),
                    inclusive: true,
                },
            ),
            (
                "amqp.annotation.x-opt-enqueuedtimeutc > 1700000000000",
                Position::EnqueuedTime {
                    at: at(1_700_000_000_000),
                    inclusive: false,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_selector(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_filters_are_refused() {
        for text in [
            "",
            "x-opt-offset",
            "x-opt-offset < '5'",
            "x-opt-offset > 'abc'",
            "x-opt-offset > '5",
            "x-opt-offset > ''",
            "x-opt-partition-key > '5'",
            "x-opt-sequence-number > '@latest'",
            "x-opt-enqueued-time > '-5'",
        ] {
            assert!(parse_selector(text).is_err(), "{text:?} accepted");
        }
    }

    fn filter_set(descriptor: Descriptor, text: &str) -> FilterSet {
        let mut map = OrderedMap::new();
        map.insert(
            Symbol::from(SELECTOR_FILTER),
            Value::Described(Box::new(Described {
                descriptor,
                value: Value::String(text.to_owned()),
            })),
        );
        map
    }

    #[test]
    fn both_descriptor_forms_are_read() {
        // Python writes the symbol, Node the code 0x0000468C00000004.
        let by_name = filter_set(
            Descriptor::Name(Symbol::from(SELECTOR_FILTER)),
            "x-opt-offset > '-1'",
        );
        let by_code = filter_set(
            Descriptor::Code(0x0000_468C_0000_0004),
            "x-opt-offset > '-1'",
        );
        assert_eq!(
            position_from_filter_set(Some(&by_name)),
            Ok(Some(Position::Earliest))
        );
        assert_eq!(
            position_from_filter_set(Some(&by_code)),
            Ok(Some(Position::Earliest))
        );
        assert_eq!(position_from_filter_set(None), Ok(None));
        let mut not_text = OrderedMap::new();
        not_text.insert(Symbol::from(SELECTOR_FILTER), Value::Long(5));
        assert_eq!(
            position_from_filter_set(Some(&not_text)),
            Err(FilterError::NotAString)
        );
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,60}") {
            let _ = parse_selector(&text);
        }

        #[test]
        fn numbers_round_trip(n in 0i64..i64::MAX, spaces in 0usize..3, inclusive: bool, quoted: bool) {
            let pad = " ".repeat(spaces);
            let op = if inclusive { ">=" } else { ">" };
            let value = if quoted { format!("'{n}'") } else { n.to_string() };
            let text = format!("amqp.annotation.x-opt-sequence-number{pad}{op}{pad}{value}");
            prop_assert_eq!(
                parse_selector(&text),
                Ok(Position::Sequence { sequence_number: n, inclusive })
            );
        }
    }
}
