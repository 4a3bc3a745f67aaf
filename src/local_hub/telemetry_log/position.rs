//! Where a reader starts in a partition: the Event Hubs event positions.
//!
//! "-1" (offset) means the beginning and "@latest" only events enqueued after the reader
//! attached; `>` is exclusive and `>=` inclusive (azure-sdk-for-python
//! `azure/eventhub/_consumer_client.py`, `receive` docstring on `starting_position`;
//! azure-sdk-for-js `sdk/eventhub/event-hubs/src/eventPosition.ts`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use super::TelemetryEvent;

/// A starting position in a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// The first retained event.
    Earliest,
    /// Only events appended after the position is resolved.
    Latest,
    /// The event with this sequence number (`inclusive`) or the one after it.
    Sequence {
        /// The sequence number.
        sequence_number: i64,
        /// Whether that event itself is included.
        inclusive: bool,
    },
    /// The event at this offset (`inclusive`) or the first one after it.
    Offset {
        /// The offset.
        offset: i64,
        /// Whether the event at that offset is included.
        inclusive: bool,
    },
    /// The first event enqueued after (or, `inclusive`, at) this time.
    EnqueuedTime {
        /// The time.
        at: SystemTime,
        /// Whether events enqueued exactly then are included.
        inclusive: bool,
    },
}

/// Why a position cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PositionError {
    /// No such partition.
    #[error("the partition does not exist")]
    UnknownPartition,
    /// A sequence number past the next one to be given out (Event Hubs refuses these with
    /// an argument error rather than waiting).
    #[error("the sequence number {requested} is past the end of the partition (next is {next})")]
    PastEnd {
        /// What was asked for.
        requested: i64,
        /// The next sequence number the partition gives out.
        next: i64,
    },
}

impl Position {
    /// The first sequence number to read, given the retained `events` (whose first sequence
    /// number is `first`) and the next sequence number to be given out.
    pub(super) fn resolve(
        &self,
        events: &VecDeque<Arc<TelemetryEvent>>,
        first: i64,
        next: i64,
    ) -> Result<i64, PositionError> {
        let by = |keep_before: &dyn Fn(&TelemetryEvent) -> bool| {
            // Events are ordered by sequence number, offset and enqueued time alike.
            let index = events.partition_point(|e| keep_before(e));
            first + index as i64
        };
        let start = match *self {
            Position::Earliest => first,
            Position::Latest => next,
            Position::Sequence {
                sequence_number,
                inclusive,
            } => {
                let start = if inclusive {
                    sequence_number
                } else {
                    sequence_number.saturating_add(1)
                };
                if start > next {
                    return Err(PositionError::PastEnd {
                        requested: sequence_number,
                        next,
                    });
                }
                start
            }
            Position::Offset { offset, inclusive } => by(&|e| {
                if inclusive {
                    e.offset < offset
                } else {
                    e.offset <= offset
                }
            }),
            Position::EnqueuedTime { at, inclusive } => by(&|e| {
                if inclusive {
                    e.enqueued_time < at
                } else {
                    e.enqueued_time <= at
                }
            }),
        };
        Ok(start.max(first))
    }
}
