//! The embedded engine under damage: a torn tail left by an interrupted write is cut and nothing
//! else, a record with a bad checksum is never served, a full queue refuses instead of growing,
//! and tree files behind their log are rebuilt from it. (What every engine must do is in the
//! conformance suite, `engine_conformance.rs`.)

mod conformance;
mod support;

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;
use veritrail_core::event::Event;
use veritrail_store::embedded::formats::segment;
use veritrail_store::embedded::LogConfig;
use veritrail_store::{Store, StoreError};

use conformance::check_against_model;
use support::{append, event, open, tenant_dir, TENANT};

fn config() -> LogConfig {
    // Tiny segments so that every run crosses several segment boundaries.
    LogConfig {
        segment_bytes: 4096,
        ..LogConfig::default()
    }
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(tenant_dir(dir).join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    segs.pop().expect("a segment")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_torn_tail_is_cut_and_nothing_else(batches in prop::collection::vec(1usize..25, 1..8), torn in 1usize..40) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut leaves = Vec::new();
        let mut ids = Vec::new();
        {
            let store = open(dir.path(), config()).expect("open");
            for (b, n) in batches.iter().enumerate() {
                let events: Vec<Event> = (0..*n).map(|i| event(leaves.len() + i, b % 3)).collect();
                let appended = append(&store, events.clone()).expect("append");
                for (r, e) in appended.receipts.iter().zip(&events) {
                    leaves.push(r.leaf_hash);
                    ids.push(e.event_id);
                }
            }
        }
        // An interrupted write leaves a prefix of the next record at the tail: it is cut, nothing else.
        let mut record = Vec::new();
        segment::encode_record(segment::RecordKind::Event, leaves.len() as u64, &[b'{'; 64], &mut record);
        let mut f = std::fs::OpenOptions::new().append(true).open(last_segment(dir.path())).expect("segment");
        f.write_all(&record[..torn.min(record.len() - 1)]).expect("torn tail");
        drop(f);
        let store = open(dir.path(), config()).expect("recovers from a torn tail");
        check_against_model(&store, &leaves, &ids);
        let more = append(&store, vec![event(leaves.len(), 0)]).expect("appends after recovery");
        prop_assert_eq!(more.receipts[0].seq, leaves.len() as u64);
    }
}

#[test]
fn a_complete_record_with_a_bad_checksum_is_never_served_and_stops_startup_when_nothing_vouches_for_it(
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (event(1, 1), event(2, 1));
    {
        let store = open(dir.path(), config()).expect("open");
        append(&store, vec![first.clone(), second.clone()]).expect("append");
    }
    let path = last_segment(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    // The tree's node files hold seq 1's leaf (written once it was durable): the log is vouched
    // for, so the log opens, and reading seq 1 fails.
    {
        let store = open(dir.path(), config()).expect("opens");
        assert!(store.read_keys(TENANT, &[(0, 0)]).is_ok());
        match store.read_keys(TENANT, &[(0, 1)]) {
            Err(StoreError::Damaged(msg)) => assert!(msg.contains("seq 1"), "{msg}"),
            other => panic!("expected damage, got {other:?}"),
        }
        // By id it is refused, or not found when the damage hides its id: never served.
        assert!(!matches!(store.get(TENANT, &second.event_id), Ok(Some(_))));
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the damaged record is kept"
    );
    // Without the node files nothing vouches for the record: startup refuses.
    std::fs::remove_dir_all(tenant_dir(dir.path()).join(veritrail_store::embedded::INDEX_DIR))
        .expect("rm");
    match open(dir.path(), config()) {
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
    let store = open(dir.path(), config).expect("open");
    let mut admitted = Vec::new();
    let mut refused = 0;
    // Appends take microseconds to queue and a group commit takes an fsync, so the queue fills
    // long before this bound; the bound only keeps a broken admission check from looping forever.
    for i in 0..10_000 {
        match store.append(TENANT, (0..50).map(|k| event(i * 50 + k, i)).collect()) {
            Ok(rx) => admitted.push(rx),
            Err(StoreError::Overloaded { queued }) => {
                // Also refused, with fewer queued, while the sealer is behind (a loaded machine).
                assert!(queued <= 100, "refused with {queued} queued");
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
        store.head(TENANT).expect("head").size,
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
        let store = open(dir.path(), config()).expect("open");
        let events: Vec<Event> = (0..40).map(|i| event(i, i % 4)).collect();
        for (r, e) in append(&store, events.clone())
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
    let leaves_file = tenant_dir(dir.path())
        .join(veritrail_store::embedded::INDEX_DIR)
        .join("level-00.dat");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&leaves_file)
        .expect("level-00.dat");
    f.set_len(32 * 10).expect("truncate");
    drop(f);
    let store = open(dir.path(), config()).expect("rebuilds and opens");
    check_against_model(&store, &leaves, &ids);
}
