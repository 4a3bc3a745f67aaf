use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn stamps(device: &str) -> Stamps {
    Stamps {
        device_id: device.to_owned(),
        module_id: None,
        auth_method: AuthMethod {
            scope: "device",
            kind: "sas",
        },
        generation_id: "638000000000000000".to_owned(),
    }
}

fn one_partition(retention: Retention) -> TelemetryLog {
    TelemetryLog::new(LogSettings {
        partition_count: 1,
        consumer_groups: vec!["readers".to_owned()],
        retention,
    })
}

fn bodies(log: &TelemetryLog, cursor: &mut Cursor) -> Vec<String> {
    let mut out = Vec::new();
    while let Next::Event(e) = log.next(cursor) {
        out.push(e.message.body_str().unwrap_or_default().to_owned());
    }
    out
}

#[test]
fn events_land_in_the_hashed_partition_with_sequence_numbers_and_offsets() {
    let log = TelemetryLog::new(LogSettings::default());
    let a = log.append(stamps("device1"), Message::new("one"), t(0));
    let b = log.append(stamps("device1"), Message::new("two"), t(1));
    assert_eq!(a.partition, 2, "device1 is in partition 2 of 4");
    assert_eq!((a.sequence_number, b.sequence_number), (0, 1));
    assert_eq!(a.offset, 0);
    assert!(b.offset > a.offset);
    assert_eq!(b.enqueued_time, t(1));
    assert_eq!(b.source, "Telemetry");
    let info = log.partition_info(2).unwrap();
    assert_eq!(info.last_sequence_number, 1);
    assert_eq!(info.last_offset, b.offset);
    assert!(!info.is_empty);
    assert!(log.partition_info(0).unwrap().is_empty);
    assert_eq!(log.partition_info(0).unwrap().last_sequence_number, -1);
    assert!(log.partition_info(4).is_none());
}

#[test]
fn positions_resolve_inclusive_and_exclusive() {
    let log = one_partition(Retention::default());
    let events: Vec<_> = (0..5)
        .map(|i| log.append(stamps("d"), Message::new(format!("m{i}")), t(i * 10)))
        .collect();
    let read = |position: Position| {
        let mut cursor = log.cursor(0, &position).unwrap();
        bodies(&log, &mut cursor)
    };
    assert_eq!(read(Position::Earliest).len(), 5);
    assert!(read(Position::Latest).is_empty());
    let seq = |n, inclusive| Position::Sequence {
        sequence_number: n,
        inclusive,
    };
    assert_eq!(read(seq(2, true)), ["m2", "m3", "m4"]);
    assert_eq!(read(seq(2, false)), ["m3", "m4"]);
    assert_eq!(read(seq(-1, false)).len(), 5);
    let offset = |o, inclusive| Position::Offset {
        offset: o,
        inclusive,
    };
    assert_eq!(read(offset(events[3].offset, true)), ["m3", "m4"]);
    assert_eq!(read(offset(events[3].offset, false)), ["m4"]);
    assert_eq!(read(offset(-1, false)).len(), 5);
    let time = |at, inclusive| Position::EnqueuedTime { at, inclusive };
    assert_eq!(read(time(t(20), false)), ["m3", "m4"]);
    assert_eq!(read(time(t(20), true)), ["m2", "m3", "m4"]);
    assert_eq!(read(time(t(15), false)), ["m2", "m3", "m4"]);
    assert_eq!(
        log.cursor(0, &seq(7, true)),
        Err(PositionError::PastEnd {
            requested: 7,
            next: 5
        })
    );
    assert_eq!(
        log.cursor(3, &Position::Earliest),
        Err(PositionError::UnknownPartition)
    );
}

#[test]
fn latest_sees_only_later_events() {
    let log = one_partition(Retention::default());
    log.append(stamps("d"), Message::new("before"), t(0));
    let mut cursor = log.cursor(0, &Position::Latest).unwrap();
    assert!(matches!(log.next(&mut cursor), Next::Empty));
    log.append(stamps("d"), Message::new("after"), t(1));
    assert_eq!(bodies(&log, &mut cursor), ["after"]);
}

#[test]
fn retention_by_count_tells_a_slow_reader_it_fell_behind() {
    let log = one_partition(Retention {
        max_events: 3,
        ..Retention::default()
    });
    let mut slow = log.cursor(0, &Position::Earliest).unwrap();
    for i in 0..5 {
        log.append(stamps("d"), Message::new(format!("m{i}")), t(i));
    }
    assert_eq!(log.retained(0), 3);
    assert!(matches!(
        log.next(&mut slow),
        Next::FellBehind { missed: 2 }
    ));
    assert_eq!(bodies(&log, &mut slow), ["m2", "m3", "m4"]);
    assert_eq!(log.partition_info(0).unwrap().begin_sequence_number, 2);
}

#[test]
fn retention_by_bytes_and_age() {
    let log = one_partition(Retention {
        max_bytes: 1_000,
        ..Retention::default()
    });
    for i in 0..10 {
        log.append(stamps("d"), Message::new(vec![b'x'; 300]), t(i));
    }
    assert!(log.retained(0) <= 3, "{} retained", log.retained(0));

    let log = one_partition(Retention {
        max_age: Duration::from_secs(60),
        ..Retention::default()
    });
    log.append(stamps("d"), Message::new("old"), t(0));
    log.append(stamps("d"), Message::new("new"), t(50));
    log.expire(t(100));
    let mut cursor = log.cursor(0, &Position::Earliest).unwrap();
    assert_eq!(bodies(&log, &mut cursor), ["new"]);
    log.expire(t(200));
    assert_eq!(log.retained(0), 0);
    let info = log.partition_info(0).unwrap();
    assert!(info.is_empty);
    assert_eq!(info.last_sequence_number, 1);
    assert_eq!(info.begin_sequence_number, 2);
}

#[test]
fn enqueued_times_never_go_backwards() {
    let log = one_partition(Retention::default());
    log.append(stamps("d"), Message::new("a"), t(10));
    let b = log.append(stamps("d"), Message::new("b"), t(5));
    assert_eq!(b.enqueued_time, t(10));
}

#[test]
fn enqueued_times_are_whole_milliseconds() {
    let log = one_partition(Retention::default());
    let e = log.append(
        stamps("d"),
        Message::new("a"),
        t(1) + Duration::from_micros(1_500),
    );
    assert_eq!(e.enqueued_time, t(1) + Duration::from_millis(1));
    let mut after = log
        .cursor(
            0,
            &Position::EnqueuedTime {
                at: t(1) + Duration::from_millis(1),
                inclusive: false,
            },
        )
        .unwrap();
    assert!(matches!(log.next(&mut after), Next::Empty));
}

#[test]
fn consumer_groups_compare_case_insensitively() {
    let log = one_partition(Retention::default());
    assert_eq!(log.consumer_group("$default"), Some("$Default"));
    assert_eq!(log.consumer_group("READERS"), Some("readers"));
    assert_eq!(log.consumer_group("other"), None);
}

#[test]
fn auth_method_is_iot_hubs_json() {
    let json = AuthMethod {
        scope: "device",
        kind: "sas",
    }
    .to_json();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null})
    );
}

#[tokio::test]
async fn watchers_wake_on_append() {
    let log = one_partition(Retention::default());
    let mut watch = log.watch(0).unwrap();
    log.append(stamps("d"), Message::new("a"), t(0));
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(*watch.borrow(), 1);
}

proptest! {
    /// Whatever retention does, a reader sees every event in order exactly once or is told
    /// how many it missed.
    #[test]
    fn a_reader_never_silently_skips(
        max_events in 1usize..20,
        steps in proptest::collection::vec(0u8..4, 1..200),
    ) {
        let log = one_partition(Retention { max_events, ..Retention::default() });
        let mut cursor = log.cursor(0, &Position::Earliest).unwrap();
        let mut appended = 0i64;
        let mut accounted = 0i64;
        for step in steps {
            if step == 0 {
                match log.next(&mut cursor) {
                    Next::Event(e) => {
                        prop_assert_eq!(e.sequence_number, accounted);
                        accounted += 1;
                    }
                    Next::FellBehind { missed } => accounted += missed as i64,
                    Next::Empty => prop_assert_eq!(accounted, appended),
                }
            } else {
                log.append(stamps("d"), Message::new("x"), t(appended as u64));
                appended += 1;
            }
            prop_assert!(log.retained(0) <= max_events);
        }
    }
}
