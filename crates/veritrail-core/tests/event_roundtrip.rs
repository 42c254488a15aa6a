//! The invariant that keeps a store readable: whatever `Event::from_json` accepts (and ingest's
//! `Event::from_input`, which must decide the same) yields leaf bytes
//! that every reader of stored leaves accepts again, unchanged (`Record::from_bytes`, `Leaf`,
//! `LeafSummary`, `render_leaf`, re-encoding), and whatever it refuses it refuses with a reason.
//! Generated over timestamps with every offset at the edges of the year range, numbers across the
//! whole double range and at its integer edge, unicode and nesting.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;
use veritrail_core::event::{
    check_time, render_leaf, Event, EventInput, Leaf, LeafSummary, Record,
};

/// An RFC 3339 timestamp near the ends of the year range (or anywhere), with any offset and up
/// to nine fraction digits.
fn timestamp() -> impl Strategy<Value = String> {
    let year = prop_oneof![0i32..3, 9997i32..10000, 0i32..10000];
    let frac = proptest::option::of("[0-9]{1,9}");
    (
        year,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..61,
        frac,
        prop_oneof![
            Just(None),
            (0u32..24, 0u32..60, any::<bool>()).prop_map(Some)
        ],
        any::<bool>(),
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, offset, lower)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let zone = match offset {
                None if lower => "z".to_string(),
                None => "Z".to_string(),
                Some((oh, om, minus)) => {
                    format!("{}{oh:02}:{om:02}", if minus { '-' } else { '+' })
                }
            };
            let t = if lower { 't' } else { 'T' };
            format!("{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{frac}{zone}")
        })
}

/// A JSON number's text: any double, whole numbers around 2^53 and beyond, and long literals.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:e}")),
        (-5i64..5).prop_map(|d| ((1i64 << 53) + d).to_string()),
        (-5i64..5).prop_map(|d| format!("{}.0", (1i64 << 53) + d)),
        (1u32..400, 0i32..30).prop_map(|(n, e)| format!("{}e{e}", "9".repeat(n as usize % 30 + 1))),
        "-?[1-9][0-9]{0,30}(\\.[0-9]{0,5})?(e[+-]?[0-9]{1,3})?",
    ]
}

/// Strings with astral characters, separators JavaScript treats as line ends, controls, RTL
/// and combining marks.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[\u{0}-\u{1f}\u{7f}\u{80}\u{2028}\u{2029}\u{200f}\u{301}\u{fffd}\u{1f600}\u{10ffff}a-z]{1,12}",
        any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
    ]
}

/// An `event_data` object: numbers, strings, arrays and nested objects.
fn payload() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        number().prop_map(|n| serde_json::from_str::<Value>(&n).unwrap_or(Value::Null)),
        text().prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    let value = leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    });
    proptest::collection::btree_map(text(), value, 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn event() -> impl Strategy<Value = Value> {
    (
        timestamp(),
        proptest::option::of(timestamp()),
        payload(),
        text(),
        text(),
    )
        .prop_map(|(at, parent_at, data, actor, correlation)| {
            let mut v = json!({
                "event_type": "test.roundtrip.generated",
                "event_timestamp": at,
                "event_category": "test",
                "event_action": "generated",
                "event_outcome": "success",
                "actor_id": actor,
                "correlation_id": correlation,
                "event_data": data,
            });
            if let Some(p) = parent_at {
                v["parent_event_date"] = json!(p);
            }
            v
        })
}

/// Checks every reader of stored leaves against the leaf bytes of an accepted event.
fn readers_accept(event: Event) -> Result<(), TestCaseError> {
    let ingested_at: DateTime<Utc> =
        DateTime::from_timestamp_micros(1_765_000_000_123_456).expect("a valid instant");
    let event_bytes = event.canonical_bytes().map_err(|e| {
        TestCaseError::fail(format!("an accepted event has no canonical form: {e}"))
    })?;
    let from_value = veritrail_core::canonical::to_vec(&event.to_value()).ok();
    prop_assert_eq!(
        Some(&event_bytes),
        from_value.as_ref(),
        "the bytes written from the fields differ from the value's canonical bytes"
    );
    let bytes = Record::canonical_bytes_around(&event_bytes, "default", &ingested_at);
    let record = Record {
        tenant: "default".into(),
        ingested_at,
        event,
    };
    prop_assert_eq!(record.canonical_bytes().ok(), Some(bytes.clone()));
    let text = String::from_utf8_lossy(&bytes).into_owned();

    let back = Record::from_bytes(&bytes)
        .map_err(|e| TestCaseError::fail(format!("reader refused the leaf: {e}\n{text}")))?;
    prop_assert_eq!(
        back.canonical_bytes().ok(),
        Some(bytes.clone()),
        "re-encoding changed the leaf"
    );
    prop_assert_eq!(back.event.event_timestamp, record.event.event_timestamp);
    let leaf = Leaf::from_bytes(&bytes)
        .map_err(|e| TestCaseError::fail(format!("Leaf refused: {e}\n{text}")))?;
    prop_assert_eq!(leaf.event_id(), Some(record.event.event_id));
    let summary = LeafSummary::from_bytes(&bytes)
        .map_err(|e| TestCaseError::fail(format!("LeafSummary refused: {e}\n{text}")))?;
    prop_assert_eq!(summary.event.time(), Some(record.event.event_timestamp));
    let rendered = render_leaf(&bytes, &[("seq", "7")])
        .ok_or_else(|| TestCaseError::fail(format!("render_leaf refused\n{text}")))?;
    prop_assert!(serde_json::from_str::<Value>(&rendered).is_ok());
    Ok(())
}

/// Generated events, of which a good share must be accepted for the test to prove anything.
const CASES: u32 = 3000;

#[test]
fn what_ingest_accepts_every_reader_accepts() {
    let accepted = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(CASES));
    let outcome = runner.run(&event(), |v| {
        // Through the text a producer sends, not only the constructed value.
        let sent = serde_json::to_string(&v).expect("a JSON value prints");
        let parsed = veritrail_core::json::from_str(&sent).expect("printed JSON parses");
        let id = Uuid::now_v7();
        let read = Event::from_json(&parsed, || id);
        // Ingest's own parse (no tree for the event's members) must decide exactly the same.
        let input = EventInput::from_slice(sent.as_bytes()).expect("printed JSON parses");
        prop_assert_eq!(&Event::from_input(input, || id), &read, "{}", sent);
        match read {
            Ok(event) => {
                accepted.set(accepted.get() + 1);
                readers_accept(event)
            }
            Err(e) => {
                prop_assert!(!e.0.is_empty(), "a refusal names its fields");
                Ok(())
            }
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let accepted = accepted.get();
    eprintln!("{accepted} of {CASES} generated events accepted");
    assert!(
        accepted >= CASES / 10,
        "only {accepted} of {CASES} generated events were accepted: too few to prove the readers"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn timestamps_are_accepted_exactly_when_their_utc_year_has_four_digits(t in timestamp()) {
        let instant = DateTime::parse_from_rfc3339(&t).map(|d| d.with_timezone(&Utc));
        match (check_time(&t), instant) {
            (Ok(kept), Ok(i)) => {
                let year = veritrail_core::event::format_time(&kept);
                prop_assert!(check_time(&year).is_ok(), "{} → {} is not read back", t, year);
                prop_assert_eq!(kept.timestamp_micros(), i.timestamp_micros());
            }
            (Err(_), Ok(i)) => {
                use chrono::Datelike;
                prop_assert!(!(0..=9999).contains(&i.year()), "{} refused in range", t);
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(_)) => prop_assert!(false, "{} accepted but not RFC 3339", t),
        }
    }
}

#[test]
fn the_timestamps_that_once_made_a_store_unrecoverable_are_refused() {
    for t in [
        "0000-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59-23:59",
        "9999-12-31T23:59:59.9999999-00:01",
    ] {
        assert!(check_time(t).is_err(), "{t}");
        let v = json!({
            "event_type": "a.b", "event_timestamp": "2025-01-01T00:00:00Z",
            "event_category": "c", "event_action": "d", "event_outcome": "success",
            "parent_event_date": t,
        });
        let err = Event::from_json(&v, Uuid::now_v7).expect_err(t);
        assert_eq!(err.0[0].field, "parent_event_date", "{t}");
        assert!(
            err.0[0].message.contains("0000 to 9999"),
            "{}",
            err.0[0].message
        );
    }
    for t in [
        "0000-01-01T23:59:00+23:59",
        "9999-12-31T00:00:00-00:00",
        "0000-01-01T00:00:00Z",
    ] {
        assert!(check_time(t).is_ok(), "{t}");
    }
}
