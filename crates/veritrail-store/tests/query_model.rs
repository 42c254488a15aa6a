//! Queries against a model: whatever events are appended (times out of order and tied, values
//! shared across segments), every filter answers, page by page through its cursor, exactly the
//! model's matches in (time, seq) order, in both directions, whether the segments involved are
//! sealed (with their index files) or still in memory, and across a restart. Counts by field
//! agree with the model too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::query::Filter;
use veritrail_store::log::{LogConfig, TenantLog};
use veritrail_store::query::{self, Order};

/// What the model keeps of an event.
#[derive(Debug, Clone)]
struct Kept {
    time_us: i64,
    seq: u64,
    fields: BTreeMap<&'static str, String>,
}

fn event(time_s: u32, corr: u8, actor: u8, ty: u8, fail: bool) -> Event {
    let types = [
        "svc.alpha.run",
        "svc.alpha.stop",
        "svc.beta.run",
        "other.thing.done",
    ];
    Event::from_json(
        &json!({
            "event_id": Uuid::now_v7().to_string(),
            "event_type": types[ty as usize % 4],
            "event_timestamp": format!("2025-03-01T10:{:02}:{:02}Z", time_s / 60 % 60, time_s % 60),
            "event_category": "test",
            "event_action": "x",
            "event_outcome": if fail { "failure" } else { "success" },
            "actor_id": format!("actor-{actor}"),
            "correlation_id": format!("op-{corr}"),
            "event_data": {"pad": "p".repeat(200)}
        }),
        Uuid::now_v7,
    )
    .expect("valid event")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        ..LogConfig::default()
    }
}

fn filters() -> Vec<Vec<(&'static str, String)>> {
    vec![
        vec![],
        vec![("correlation_id", "op-1".into())],
        vec![("actor_id", "actor-2".into())],
        vec![("event_type", "svc.alpha.*".into())],
        vec![("event_type", "svc.beta.run".into())],
        vec![("event_outcome", "failure".into())],
        vec![
            ("correlation_id", "op-0".into()),
            ("event_outcome", "success".into()),
        ],
        vec![
            ("since", "2025-03-01T10:00:20Z".into()),
            ("until", "2025-03-01T10:00:40Z".into()),
        ],
        vec![
            ("actor_id", "actor-0".into()),
            ("since", "2025-03-01T10:00:30Z".into()),
        ],
        vec![("correlation_id", "op-9".into())],
    ]
}

fn expected(model: &[Kept], pairs: &[(&str, String)], order: Order) -> Vec<u64> {
    let when = |v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .expect("time")
            .timestamp_micros()
    };
    let mut hits: Vec<&Kept> = model
        .iter()
        .filter(|k| {
            pairs.iter().all(|(name, v)| match *name {
                "since" => k.time_us >= when(v),
                "until" => k.time_us < when(v),
                "event_type" => match v.strip_suffix('*') {
                    Some(p) => k.fields["event_type"].starts_with(p),
                    None => &k.fields["event_type"] == v,
                },
                other => &k.fields[other] == v,
            })
        })
        .collect();
    hits.sort_by_key(|k| (k.time_us, k.seq));
    if order == Order::Desc {
        hits.reverse();
    }
    hits.iter().map(|k| k.seq).collect()
}

/// Every page of a query, through its cursor.
fn paged(log: &TenantLog, pairs: &[(&str, String)], order: Order, limit: usize) -> Vec<u64> {
    let filter = Filter::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_str())), Utc::now())
        .expect("filter");
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let reader = log.index_reader().expect("reader");
        let page = query::run(log, &reader, &filter, order, cursor, limit).expect("query");
        out.extend(page.events.iter().map(|h| h.event.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn check(log: &TenantLog, model: &[Kept]) -> Result<(), TestCaseError> {
    for pairs in filters() {
        for order in [Order::Asc, Order::Desc] {
            let want = expected(model, &pairs, order);
            prop_assert_eq!(
                paged(log, &pairs, order, 7),
                want.clone(),
                "{:?} {:?}",
                pairs,
                order
            );
        }
    }
    let reader = log.index_reader().expect("reader");
    for field in ["event_type", "actor_id", "correlation_id", "event_outcome"] {
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for k in model {
            *want.entry(k.fields[field].clone()).or_default() += 1;
        }
        prop_assert_eq!(reader.counts(field).expect("counts"), want, "{}", field);
    }
    Ok(())
}

fn wait_sealed(dir: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let appended = std::fs::read_dir(dir.join("log"))
            .expect("log dir")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.path().extension().is_some_and(|x| x == "seg"))
                    .unwrap_or(false)
            })
            .count();
        if appended <= 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn queries_match_the_model(
        batches in prop::collection::vec(
            prop::collection::vec((0u32..60, 0u8..3, 0u8..3, 0u8..4, any::<bool>()), 1..30),
            1..8,
        ),
        seal_before_check in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = Vec::new();
        {
            let log = TenantLog::open(dir.path(), "t", config()).expect("open");
            for batch in &batches {
                let events: Vec<Event> = batch
                    .iter()
                    .map(|&(t, c, a, ty, f)| event(t, c, a, ty, f))
                    .collect();
                let appended = log.append(events.clone()).expect("queued").blocking_recv()
                    .expect("answered").expect("durable");
                for (e, r) in events.iter().zip(&appended.receipts) {
                    let fields = ["event_type", "actor_id", "correlation_id", "event_outcome"]
                        .into_iter()
                        .map(|f| (f, e.field(f).unwrap_or_default().to_string()))
                        .collect();
                    model.push(Kept { time_us: e.event_timestamp.timestamp_micros(), seq: r.seq, fields });
                }
            }
            if seal_before_check {
                wait_sealed(dir.path());
            }
            check(&log, &model)?;
        }
        // After a restart the open segments' indexes are rebuilt from the log; the sealed ones
        // are read from their files.
        let log = TenantLog::open(dir.path(), "t", config()).expect("reopen");
        wait_sealed(dir.path());
        check(&log, &model)?;
    }
}
