//! The conformance suite every storage engine passes, generic over [`Engine`]: run under the
//! [`Ledger`] (the layer the server uses), an engine must keep every acknowledged event, read it
//! back proven, prove it in every tree that contains it, keep ids idempotent, answer queries
//! exactly as a model does, keep its checkpoint history, and do all of that again after a
//! restart. An engine's test file implements [`Harness`] and runs each function.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::Utc;
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::hash::{leaf_hash, Hash};
use veritrail_core::merkle;
use veritrail_core::query::Filter;
use veritrail_store::{Engine, Ledger, Order, QuerySpec, Store, StoreError};

use crate::support::{append, event, mth, TENANT};

/// One engine's storage, opened as often as a test restarts it.
pub trait Harness {
    type Engine: Engine;
    /// The store over this harness's storage; a second call after the first store is dropped
    /// is a restart and sees the same events.
    fn open(&self) -> Ledger<Self::Engine>;
    /// Waits until the engine's background work (sealing, compaction) is done, so that a test
    /// reads what it produced.
    fn settle(&self, _store: &Ledger<Self::Engine>) {}
}

/// Every event reads back by id, proven, with the bytes and leaf hash of its receipt; the root
/// is the model's MTH; inclusion proofs verify in every tree size; consistency proofs verify
/// between sizes.
pub fn check_against_model(store: &impl Store, leaves: &[Hash], ids: &[Uuid]) {
    let head = store.head(TENANT).expect("head");
    assert_eq!(head.size, leaves.len() as u64);
    assert_eq!(head.root, mth(leaves), "root differs from the model's MTH");
    for (seq, id) in ids.iter().enumerate() {
        let stored = store
            .get(TENANT, id)
            .expect("event reads back verified")
            .expect("event is found by id");
        assert_eq!(stored.seq, seq as u64);
        assert_eq!(stored.leaf().expect("decodes").event_id(), Some(*id));
        assert_eq!(leaf_hash(&stored.bytes), leaves[seq]);
        assert_eq!(stored.leaf_hash, leaves[seq]);
    }
    // And by seq, in pages that do not divide the log evenly.
    let mut read = Vec::new();
    while read.len() < leaves.len() + 1 {
        let page = store
            .read_range(TENANT, read.len() as u64, 7)
            .expect("read by seq");
        if page.is_empty() {
            break;
        }
        read.extend(page);
    }
    let seqs: Vec<u64> = read.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..leaves.len() as u64).collect::<Vec<_>>());
    assert!(read.iter().zip(leaves).all(|(e, l)| e.leaf_hash == *l));
    assert!(store
        .read_range(TENANT, leaves.len() as u64, 7)
        .expect("past the head")
        .is_empty());
    // The segments hold every seq once, in order.
    let spans = store.segments(TENANT).expect("segments");
    let mut next = 0;
    for (k, s) in spans.iter().enumerate() {
        assert_eq!(
            s.first_seq, next,
            "segment {k} starts where the previous ends: {spans:?}"
        );
        assert!(s.events > 0 && s.bytes > 0, "{spans:?}");
        next += s.events;
    }
    assert_eq!(next, leaves.len() as u64, "{spans:?}");
    for size in 1..=leaves.len() as u64 {
        let root = mth(&leaves[..size as usize]);
        assert_eq!(store.root(TENANT, size).expect("root"), root);
        for index in [0, size / 2, size - 1] {
            let proof = store.inclusion_proof(TENANT, index, size).expect("proof");
            merkle::verify_inclusion(index, size, &leaves[index as usize], &proof, &root)
                .expect("inclusion verifies");
        }
        let old = size / 2;
        if old > 0 {
            let proof = store.consistency_proof(TENANT, old, size).expect("proof");
            let old_root = mth(&leaves[..old as usize]);
            merkle::verify_consistency(old, size, &old_root, &root, &proof)
                .expect("consistency verifies");
        }
    }
}

/// Appends `batches` (each a number of events), checks against the model, restarts, checks
/// again, and appends once more.
pub fn model_across_restarts<H: Harness>(h: &H, batches: &[usize]) -> Result<(), TestCaseError> {
    let mut leaves = Vec::new();
    let mut ids = Vec::new();
    {
        let store = h.open();
        for (b, n) in batches.iter().enumerate() {
            let events: Vec<Event> = (0..*n).map(|i| event(leaves.len() + i, b % 3)).collect();
            let appended = append(&store, events.clone()).expect("append");
            for (r, e) in appended.receipts.iter().zip(&events) {
                prop_assert_eq!(r.seq, leaves.len() as u64);
                prop_assert!(!r.duplicate);
                leaves.push(r.leaf_hash);
                ids.push(e.event_id);
            }
            prop_assert_eq!(appended.tree_size, leaves.len() as u64);
        }
        check_against_model(&store, &leaves, &ids);
        h.settle(&store);
        check_against_model(&store, &leaves, &ids);
        store.close();
    }
    let store = h.open();
    check_against_model(&store, &leaves, &ids);
    let more = append(&store, vec![event(leaves.len(), 0)]).expect("appends after a restart");
    prop_assert_eq!(more.receipts[0].seq, leaves.len() as u64);
    store.close();
    Ok(())
}

/// A retried id gets its original receipt; an id reused for other content fails the whole
/// request, which stores nothing.
pub fn idempotency_and_conflicts<H: Harness>(h: &H) {
    let store = h.open();
    let first = event(1, 1);
    let original = append(&store, vec![first.clone()]).expect("append");
    let again = append(&store, vec![first.clone()]).expect("same id, same content");
    assert_eq!(again.receipts[0].seq, original.receipts[0].seq);
    assert_eq!(again.receipts[0].leaf_hash, original.receipts[0].leaf_hash);
    assert!(again.receipts[0].duplicate);
    assert_eq!(again.tree_size, 1);
    let mut changed = first.clone();
    changed.actor_id = "mallory".into();
    match append(&store, vec![event(2, 1), changed.clone()]) {
        Err(StoreError::Conflict { index: 1, event_id }) => assert_eq!(event_id, first.event_id),
        other => panic!("expected a conflict on event 1, got {other:?}"),
    }
    assert_eq!(
        store.head(TENANT).expect("head").size,
        1,
        "a failed request stores nothing"
    );
    // Within one request too.
    match append(
        &store,
        vec![event(3, 1), event(4, 1), event(5, 1)]
            .into_iter()
            .chain([changed])
            .collect(),
    ) {
        Err(StoreError::Conflict { index: 3, .. }) => {}
        other => panic!("expected a conflict on event 3, got {other:?}"),
    }
    assert_eq!(store.head(TENANT).expect("head").size, 1);
    // And after a restart.
    store.close();
    drop(store);
    let store = h.open();
    let after = append(&store, vec![first]).expect("a retry after a restart");
    assert!(after.receipts[0].duplicate);
    assert_eq!(after.receipts[0].seq, original.receipts[0].seq);
    store.close();
}

/// A retry sent the moment its first copy is acknowledged is recognised, however far the
/// engine's background work lags behind.
pub fn retries_racing_background_work<H: Harness>(h: &H) {
    let store = h.open();
    let mut expected = 0u64;
    for round in 0..20 {
        let batch: Vec<Event> = (0..1000).map(|i| event(i, round)).collect();
        let first = append(&store, batch.clone()).expect("append");
        let again = append(&store, batch.clone()).expect("retry");
        let mut changed = batch[999].clone();
        changed.actor_id = "mallory".into();
        assert!(matches!(
            append(&store, vec![changed]),
            Err(StoreError::Conflict { index: 0, .. })
        ));
        for (a, b) in first.receipts.iter().zip(&again.receipts) {
            assert!(b.duplicate, "round {round}: a retry was stored again");
            assert_eq!((a.seq, a.leaf_hash), (b.seq, b.leaf_hash));
        }
        expected += batch.len() as u64;
        assert_eq!(again.tree_size, expected);
    }
    assert_eq!(store.head(TENANT).expect("head").size, expected);
    store.close();
}

/// Checkpoints cover the head, verify with the log's key, stay the latest across a restart,
/// and the trees they commit to stay consistent as the log grows.
pub fn checkpoints_are_kept_and_consistent<H: Harness>(h: &H) {
    let store = h.open();
    append(&store, (0..10).map(|i| event(i, 0)).collect()).expect("append");
    let first = store.checkpoint(TENANT).expect("checkpoint");
    assert_eq!(first.checkpoint.size, 10);
    assert_eq!(
        first.checkpoint.root,
        store.head(TENANT).expect("head").root
    );
    assert_eq!(first.checkpoint.origin, store.origin(TENANT));
    let vkey = store.signer(TENANT).expect("signer").verifier();
    veritrail_core::checkpoint::open_checkpoint(&first.note, std::slice::from_ref(&vkey))
        .expect("verifies with the log's key");
    assert_eq!(
        store.checkpoint(TENANT).expect("again"),
        first,
        "signed once"
    );
    assert_eq!(
        store.checkpoint_covering(TENANT, 5).expect("covering"),
        first
    );
    store.close();
    drop(store);
    let store = h.open();
    assert_eq!(
        store
            .checkpoint_covering(TENANT, 10)
            .expect("covering")
            .note,
        first.note,
        "the history survives a restart"
    );
    append(&store, (10..25).map(|i| event(i, 0)).collect()).expect("append");
    let grown = store.checkpoint(TENANT).expect("checkpoint");
    assert_eq!(grown.checkpoint.size, 25);
    let proof = store
        .consistency_proof(TENANT, 10, 25)
        .expect("consistency");
    merkle::verify_consistency(
        10,
        25,
        &first.checkpoint.root,
        &grown.checkpoint.root,
        &proof,
    )
    .expect("the grown tree extends the first");
    store.close();
}

/// A tenant without a log answers empty, not with an error, and never gets one by being read.
pub fn an_unknown_tenant_is_empty<H: Harness>(h: &H) {
    let store = h.open();
    let head = store.head("nobody").expect("head");
    assert_eq!(head.size, 0);
    assert_eq!(head.root, veritrail_core::hash::empty_root());
    assert!(store.get("nobody", &Uuid::now_v7()).expect("get").is_none());
    let filter = Filter::default();
    let spec = QuerySpec {
        filter: &filter,
        order: Order::Desc,
        cursor: None,
        limit: 10,
    };
    assert!(store
        .query("nobody", &spec)
        .expect("query")
        .events
        .is_empty());
    assert!(store
        .counts("nobody", "event_type")
        .expect("counts")
        .is_empty());
    assert!(matches!(
        store.inclusion_proof("nobody", 0, 1),
        Err(StoreError::OutOfRange(_))
    ));
    assert!(!store.tenants().contains(&"nobody".to_string()));
    store.close();
}

/// The drawn parts of a query-model event: time (s), correlation, actor, type, failure.
pub type Drawn = (u32, u8, u8, u8, bool);

/// What the query model keeps of an event.
#[derive(Debug, Clone)]
struct Kept {
    time_us: i64,
    seq: u64,
    fields: BTreeMap<&'static str, String>,
}

/// An event of the query model: its time (seconds into a minute window), correlation, actor,
/// type and outcome drawn from small sets so that values repeat across segments.
pub fn query_event(time_s: u32, corr: u8, actor: u8, ty: u8, fail: bool) -> Event {
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

const COUNTED: [&str; 4] = ["event_type", "actor_id", "correlation_id", "event_outcome"];

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
fn paged(store: &impl Store, pairs: &[(&str, String)], order: Order, limit: usize) -> Vec<u64> {
    let filter = Filter::from_pairs(pairs.iter().map(|(n, v)| (*n, v.as_str())), Utc::now())
        .expect("filter");
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let spec = QuerySpec {
            filter: &filter,
            order,
            cursor,
            limit,
        };
        let page = store.query(TENANT, &spec).expect("query");
        out.extend(page.events.iter().map(|h| h.event.seq));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn check_queries(store: &impl Store, model: &[Kept]) -> Result<(), TestCaseError> {
    for pairs in filters() {
        for order in [Order::Asc, Order::Desc] {
            let want = expected(model, &pairs, order);
            prop_assert_eq!(
                paged(store, &pairs, order, 7),
                want,
                "{:?} {:?}",
                pairs,
                order
            );
        }
    }
    for field in COUNTED {
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for k in model {
            *want.entry(k.fields[field].clone()).or_default() += 1;
        }
        prop_assert_eq!(
            store.counts(TENANT, field).expect("counts"),
            want,
            "{}",
            field
        );
    }
    Ok(())
}

/// Queries answer, page by page through their cursors, exactly the model's matches in (time,
/// seq) order in both directions — with the engine's background work done or not, and after a
/// restart — and counts by field agree with the model.
pub fn queries_match_the_model<H: Harness>(
    h: &H,
    batches: &[Vec<Drawn>],
    settle_before_check: bool,
) -> Result<(), TestCaseError> {
    let mut model = Vec::new();
    {
        let store = h.open();
        for batch in batches {
            let events: Vec<Event> = batch
                .iter()
                .map(|&(t, c, a, ty, f)| query_event(t, c, a, ty, f))
                .collect();
            let appended = append(&store, events.clone()).expect("durable");
            for (e, r) in events.iter().zip(&appended.receipts) {
                let fields = COUNTED
                    .into_iter()
                    .map(|f| (f, e.field(f).unwrap_or_default().to_string()))
                    .collect();
                model.push(Kept {
                    time_us: e.event_timestamp.timestamp_micros(),
                    seq: r.seq,
                    fields,
                });
            }
        }
        if settle_before_check {
            h.settle(&store);
        }
        check_queries(&store, &model)?;
        store.close();
    }
    let store = h.open();
    h.settle(&store);
    check_queries(&store, &model)?;
    store.close();
    Ok(())
}
