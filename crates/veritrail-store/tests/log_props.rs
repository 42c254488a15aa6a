//! Property tests of the embedded log against a model: whatever batches are appended, every
//! event reads back verified, every proof verifies, the root equals RFC 9162's MTH of the model,
//! and a restart (clean, or with a torn tail left by an interrupted write) recovers the same tree.

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::hash::{leaf_hash, node_hash, Hash};
use veritrail_core::merkle;
use veritrail_store::log::{LogConfig, TenantLog};
use veritrail_store::segment;
use veritrail_store::StoreError;

fn event(i: usize, corr: usize) -> Event {
    Event::from_json(
        &json!({
            "event_id": Uuid::now_v7().to_string(),
            "event_type": "test.thing.done",
            "event_timestamp": format!("2025-01-01T00:00:{:02}.{:06}Z", i % 60, i),
            "event_category": "test",
            "event_action": "done",
            "event_outcome": "success",
            "correlation_id": format!("c{corr}"),
            "event_data": {"i": i}
        }),
        Uuid::now_v7,
    )
    .expect("valid event")
}

/// RFC 9162 §2.1.1 MTH, written the slow way.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => veritrail_core::hash::empty_root(),
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let p = (n - 1).next_power_of_two();
            let k = if p < n { p } else { p / 2 };
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn config() -> LogConfig {
    // Tiny segments so that every run crosses several segment boundaries.
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn append(log: &TenantLog, events: Vec<Event>) -> Result<veritrail_store::Appended, StoreError> {
    log.append(events)?
        .blocking_recv()
        .map_err(|_| StoreError::Closed)?
}

/// Checks every stored event and proof against the model `leaves`.
fn check_against_model(log: &TenantLog, leaves: &[Hash], ids: &[Uuid]) {
    let head = log.head().unwrap();
    assert_eq!(head.size, leaves.len() as u64);
    assert_eq!(head.root, mth(leaves), "root differs from the model's MTH");
    let reader = log.index_reader().expect("reader");
    for (seq, id) in ids.iter().enumerate() {
        let stored = log
            .read(&reader, seq as u64)
            .expect("event reads back verified");
        assert_eq!(stored.leaf().expect("decodes").event_id(), Some(*id));
        assert_eq!(leaf_hash(&stored.bytes), leaves[seq]);
    }
    let mut nodes = reader.nodes();
    for size in 1..=leaves.len() as u64 {
        let root = mth(&leaves[..size as usize]);
        for index in [0, size / 2, size - 1] {
            let proof = merkle::inclusion_proof(index, size, &mut nodes).expect("proof");
            merkle::verify_inclusion(index, size, &leaves[index as usize], &proof, &root)
                .expect("verifies");
        }
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_across_restarts(batches in prop::collection::vec(1usize..25, 1..12), torn in 1usize..40) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut leaves = Vec::new();
        let mut ids = Vec::new();
        {
            let log = TenantLog::open(dir.path(), "t", config()).expect("open");
            for (b, n) in batches.iter().enumerate() {
                let events: Vec<Event> = (0..*n).map(|i| event(leaves.len() + i, b % 3)).collect();
                let appended = append(&log, events.clone()).expect("append");
                for (r, e) in appended.receipts.iter().zip(&events) {
                    prop_assert_eq!(r.seq, leaves.len() as u64);
                    leaves.push(r.leaf_hash);
                    ids.push(e.event_id);
                }
                prop_assert_eq!(appended.tree_size, leaves.len() as u64);
            }
            check_against_model(&log, &leaves, &ids);
        }
        // A clean restart recovers the same tree.
        let log = TenantLog::open(dir.path(), "t", config()).expect("reopen");
        check_against_model(&log, &leaves, &ids);
        drop(log);
        // An interrupted write leaves a prefix of the next record at the tail: it is cut, nothing else.
        let mut record = Vec::new();
        segment::encode_record(segment::RecordKind::Event, leaves.len() as u64, &[b'{'; 64], &mut record);
        let mut f = std::fs::OpenOptions::new().append(true).open(last_segment(dir.path())).expect("segment");
        f.write_all(&record[..torn.min(record.len() - 1)]).expect("torn tail");
        drop(f);
        let log = TenantLog::open(dir.path(), "t", config()).expect("recovers from a torn tail");
        check_against_model(&log, &leaves, &ids);
        let more = append(&log, vec![event(leaves.len(), 0)]).expect("appends after recovery");
        prop_assert_eq!(more.receipts[0].seq, leaves.len() as u64);
    }
}

#[test]
fn idempotent_ids_return_the_original_receipt_and_conflicts_fail_whole_requests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = TenantLog::open(dir.path(), "t", config()).expect("open");
    let first = event(1, 1);
    let original = append(&log, vec![first.clone()]).expect("append");
    let again = append(&log, vec![first.clone()]).expect("same id, same content");
    assert_eq!(again.receipts[0].seq, original.receipts[0].seq);
    assert!(again.receipts[0].duplicate);
    assert_eq!(again.tree_size, 1);
    let mut changed = first.clone();
    changed.actor_id = "mallory".into();
    let fresh = event(2, 1);
    match append(&log, vec![fresh, changed]) {
        Err(StoreError::Conflict { index: 1, event_id }) => assert_eq!(event_id, first.event_id),
        other => panic!("expected a conflict on event 1, got {other:?}"),
    }
    assert_eq!(
        log.head().unwrap().size,
        1,
        "a failed request stores nothing"
    );
}

/// Acknowledgements do not wait for the index, so a retry can arrive while the first copy is
/// durable but not yet indexed. Large batches keep the indexer behind the writer for most of
/// this loop; every retry must still come back as the original receipt.
#[test]
fn retries_racing_the_indexer_are_recognised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = TenantLog::open(dir.path(), "t", LogConfig::default()).expect("open");
    let mut expected = 0u64;
    for round in 0..40 {
        let batch: Vec<Event> = (0..1000).map(|i| event(i, round)).collect();
        let first = log.append(batch.clone()).expect("queue");
        let first = first.blocking_recv().expect("reply").expect("append");
        // Sent the moment the first is acknowledged: its group is usually still in flight.
        let again = append(&log, batch.clone()).expect("retry");
        // A conflicting change to one of them must be refused the same way.
        let mut changed = batch[999].clone();
        changed.actor_id = "mallory".into();
        assert!(matches!(
            append(&log, vec![changed]),
            Err(StoreError::Conflict { index: 0, .. })
        ));
        for (a, b) in first.receipts.iter().zip(&again.receipts) {
            assert!(b.duplicate, "round {round}: a retry was stored again");
            assert_eq!((a.seq, a.leaf_hash), (b.seq, b.leaf_hash));
        }
        expected += batch.len() as u64;
        assert_eq!(again.tree_size, expected);
    }
    assert_eq!(log.head().unwrap().size, expected);
}

#[test]
fn a_complete_record_with_a_bad_checksum_is_never_served_and_stops_startup_when_nothing_vouches_for_it(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (event(1, 1), event(2, 1));
    {
        let log = TenantLog::open(dir.path(), "t", config()).expect("open");
        append(&log, vec![first.clone(), second.clone()]).expect("append");
    }
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    // The tree's node files hold seq 1's leaf (written once it was durable): the log is vouched
    // for, so the log opens, and reading seq 1 fails.
    {
        let log = TenantLog::open(dir.path(), "t", config()).expect("opens");
        let reader = log.index_reader().expect("reader");
        assert!(log.read(&reader, 0).is_ok());
        match log.read(&reader, 1) {
            Err(StoreError::Damaged(msg)) => assert!(msg.contains("seq 1"), "{msg}"),
            other => panic!("expected damage, got {other:?}"),
        }
        // By id it is refused, or not found when the damage hides its id: never served.
        assert!(!matches!(log.find(&reader, &second.event_id), Ok(Some(_))));
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the damaged record is kept"
    );
    // Without the node files nothing vouches for the record: startup refuses.
    std::fs::remove_dir_all(dir.path().join(veritrail_store::index::INDEX_DIR)).expect("rm");
    match TenantLog::open(dir.path(), "t", config()) {
        Err(StoreError::Damaged(msg)) => assert!(msg.contains("seq 1"), "{msg}"),
        Err(other) => panic!("expected damage, got {other}"),
        Ok(_) => panic!("a damaged record nothing vouches for must stop startup"),
    }
}

#[test]
fn a_full_queue_refuses_appends_instead_of_growing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        max_queued_events: 100,
        ..config()
    };
    let log = TenantLog::open(dir.path(), "t", config).expect("open");
    let mut admitted = Vec::new();
    let mut refused = 0;
    // Appends take microseconds to queue and a group commit takes an fsync, so the queue fills
    // long before this bound; the bound only keeps a broken admission check from looping forever.
    for i in 0..10_000 {
        match log.append((0..50).map(|k| event(i * 50 + k, i)).collect()) {
            Ok(rx) => admitted.push(rx),
            Err(StoreError::Overloaded { queued }) => {
                assert!(queued > 0 && queued <= 100, "refused with {queued} queued");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(refused, 3, "the queue never filled");
    let admitted_events = admitted.len() as u64 * 50;
    for rx in admitted {
        rx.blocking_recv()
            .expect("answered")
            .expect("every admitted append becomes durable");
    }
    assert_eq!(
        log.head().unwrap().size,
        admitted_events,
        "refused appends stored nothing"
    );
}

#[test]
fn tree_files_behind_their_record_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut leaves = Vec::new();
    let mut ids = Vec::new();
    {
        let log = TenantLog::open(dir.path(), "t", config()).expect("open");
        let events: Vec<Event> = (0..40).map(|i| event(i, i % 4)).collect();
        for (r, e) in append(&log, events.clone())
            .expect("append")
            .receipts
            .iter()
            .zip(&events)
        {
            leaves.push(r.leaf_hash);
            ids.push(e.event_id);
        }
    }
    // A machine crash that kept `tree.meta` but lost the tail of a node file.
    let leaves_file = dir
        .path()
        .join(veritrail_store::index::INDEX_DIR)
        .join("level-00.dat");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&leaves_file)
        .expect("level-00.dat");
    f.set_len(32 * 10).expect("truncate");
    drop(f);
    let log = TenantLog::open(dir.path(), "t", config()).expect("rebuilds and opens");
    check_against_model(&log, &leaves, &ids);
}
