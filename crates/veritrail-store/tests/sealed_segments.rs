//! Full segments are sealed in the background (zstd blocks with a block index). Every event reads
//! back the same from them, verified, across restarts and a rebuild of the index; damage inside a
//! compressed block is detected, named by its seqs, and never served.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::hash::Hash;
use veritrail_store::embedded::formats::{seal, segment, SealedSegment};
use veritrail_store::embedded::{EmbeddedEngine, LogConfig};
use veritrail_store::{Ledger, Store};

mod support;
use support::{open, tenant_dir, TENANT};

fn event(i: usize) -> Event {
    Event::from_json(
        &json!({
            "event_type": "test.thing.done",
            "event_timestamp": format!("2025-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60),
            "event_category": "test",
            "event_action": "done",
            "event_outcome": if i.is_multiple_of(7) { "failure" } else { "success" },
            "actor_id": format!("svc-{}", i % 5),
            "correlation_id": format!("op-{}", i % 13),
            "event_data": {"i": i, "note": "the same words again and again, as audit events are"}
        }),
        Uuid::now_v7,
    )
    .expect("valid event")
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 200 << 10,
        ..LogConfig::default()
    }
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(tenant_dir(dir).join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

/// Waits until every segment but the newest is sealed.
fn wait_sealed(dir: &Path) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sealed, appended) = (files(dir, ".zseg"), files(dir, ".seg"));
        if appended.len() == 1 && !sealed.is_empty() {
            return sealed;
        }
        assert!(
            Instant::now() < deadline,
            "segments were not sealed: {appended:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn append_all(store: &Ledger<EmbeddedEngine>, n: usize) -> Vec<(Uuid, Hash)> {
    let mut out = Vec::new();
    for start in (0..n).step_by(20) {
        let events: Vec<Event> = (start..(start + 20).min(n)).map(event).collect();
        let appended = support::append(store, events.clone()).expect("durable");
        out.extend(
            events
                .iter()
                .map(|e| e.event_id)
                .zip(appended.receipts.iter().map(|r| r.leaf_hash)),
        );
        // Checkpoint markers between the events, so that sealed blocks carry some.
        if start % 200 == 0 {
            let cp = store.checkpoint(TENANT).expect("checkpoint");
            assert_eq!(cp.checkpoint.size, appended.tree_size);
        }
    }
    out
}

/// Reads the event at `seq`, proven.
fn read(
    store: &Ledger<EmbeddedEngine>,
    seq: u64,
) -> Result<veritrail_store::StoredEvent, veritrail_store::StoreError> {
    let mut hits = store.read_keys(TENANT, &[(0, seq)])?;
    Ok(hits.remove(0).event)
}

/// A store in `dir` with 2 000 events, every segment but the newest sealed; closed again.
fn sealed_store(dir: &Path) -> Vec<(Uuid, Hash)> {
    let store = open(dir, config()).expect("open");
    let expected = append_all(&store, 2000);
    wait_sealed(dir);
    expected
}

fn check_all(store: &Ledger<EmbeddedEngine>, expected: &[(Uuid, Hash)]) {
    for (seq, (id, leaf)) in expected.iter().enumerate() {
        let stored = read(store, seq as u64).expect("reads back verified");
        assert_eq!(stored.leaf_hash, *leaf, "seq {seq}");
        assert_eq!(stored.leaf().expect("decodes").event_id(), Some(*id));
    }
}

#[test]
fn sealed_segments_serve_the_same_events_and_name_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected;
    let root;
    {
        let store = open(dir.path(), config()).expect("open");
        expected = append_all(&store, 3000);
        let sealed = wait_sealed(dir.path());
        assert!(sealed.len() >= 3, "{sealed:?}");
        check_all(&store, &expected);
        root = store.head(TENANT).expect("head").root;
    }
    let sealed = files(dir.path(), ".zseg");
    let first = SealedSegment::open(&sealed[0], 1).expect("opens");
    assert!(
        first.file_len() * 3 < first.raw_len,
        "compressed: {} of {} bytes",
        first.file_len(),
        first.raw_len
    );
    // A restart, and a rebuild of the index from nothing, read the sealed segments.
    {
        let store = open(dir.path(), config()).expect("reopen");
        check_all(&store, &expected);
    }
    std::fs::remove_dir_all(tenant_dir(dir.path()).join(veritrail_store::embedded::INDEX_DIR))
        .expect("rm index");
    {
        let store = open(dir.path(), config()).expect("rebuilds");
        assert_eq!(store.head(TENANT).expect("head").root, root);
        check_all(&store, &expected);
    }
    let vkey = support::log_vkey();
    let clean = veritrail_store::embedded::fsck::check(&tenant_dir(dir.path()), &vkey, |_, _| {})
        .expect("fsck");
    assert_eq!(clean.problems, Vec::<String>::new());
    assert_eq!(clean.events, 3000);
    assert_eq!(
        clean.checkpoint_size,
        Some(2820),
        "the last checkpoint, after the batch at 2800"
    );
    // The checkpoint markers, read from sealed and appended segments alike, tell fsck that the
    // log had a history: without it, that is a finding.
    let history_file = tenant_dir(dir.path()).join("checkpoints.log");
    let history = std::fs::read(&history_file).expect("history");
    std::fs::remove_file(&history_file).expect("rm history");
    let removed = veritrail_store::embedded::fsck::check(&tenant_dir(dir.path()), &vkey, |_, _| {})
        .expect("fsck");
    assert_eq!(
        removed.problems,
        vec![veritrail_store::embedded::fsck::history_removed(2820, None)]
    );
    std::fs::write(&history_file, history).expect("history back");

    // One flipped byte in the middle of the second block of the first sealed segment.
    let block = first.blocks[1];
    drop(first);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&sealed[0])
        .expect("open");
    let at = block.file_offset + u64::from(block.packed_len) / 2;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    f.write_all_at(&[b[0] ^ 0x10], at).expect("flip");
    drop(f);
    let range = format!("block 1 (seq {}–{})", block.first_seq, block.seqs().end - 1);
    let report = veritrail_store::embedded::fsck::check(&tenant_dir(dir.path()), &vkey, |_, _| {})
        .expect("fsck");
    assert!(
        report.problems.iter().any(|p| p.contains(&range)),
        "{range} not named in {:?}",
        report.problems
    );
    assert_eq!(
        report.events, 3000,
        "the events after the block are still checked"
    );
    let store = open(dir.path(), config()).expect("opens: the tail is intact");
    let err = read(&store, block.first_seq)
        .expect_err("damage is never served")
        .to_string();
    assert!(err.contains(&range), "{err}");
    let before = read(&store, block.first_seq - 1).expect("block 0 still reads");
    assert_eq!(before.leaf_hash, expected[block.first_seq as usize - 1].1);
}

/// `fsck` of the test tenant in the data directory `dir`.
fn fsck(dir: &std::path::Path) -> veritrail_store::embedded::fsck::FsckReport {
    veritrail_store::embedded::fsck::check(&tenant_dir(dir), &support::log_vkey(), |_, _| {})
        .expect("fsck runs")
}

/// The bytes of sealed segment `ordinal` as they were appended: a segment header, then every
/// block's records.
fn as_appended(seg: &SealedSegment, ordinal: u32) -> Vec<u8> {
    let scratch = tempfile::tempdir().expect("scratch");
    drop(segment::create(scratch.path(), ordinal, seg.first_seq).expect("header"));
    let mut raw = std::fs::read(scratch.path().join(segment::file_name(ordinal))).expect("header");
    for k in 0..seg.blocks.len() {
        raw.extend(seg.read_block(k).expect("block"));
    }
    raw
}

/// A seal interrupted at either step leaves files that startup tidies: a sealed file still being
/// written (`.zseg.tmp`) is removed, and a finished sealed file whose appended original was not
/// removed yet is removed in favour of the original (here it is damaged, so serving it would
/// fail), which is then sealed again. Every event reads back, and `fsck` finds nothing.
#[test]
fn what_an_interrupted_seal_left_is_tidied_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = sealed_store(dir.path());
    let log_dir = tenant_dir(dir.path()).join("log");
    let sealed = files(dir.path(), ".zseg");
    assert!(sealed.len() >= 2, "{sealed:?}");
    // Segment 1: sealed and renamed into place, its original not removed yet.
    let seg = SealedSegment::open(&sealed[0], 1).expect("opens");
    std::fs::write(log_dir.join(segment::file_name(1)), as_appended(&seg, 1)).expect("original");
    let first_block = seg.blocks[0].file_offset;
    drop(seg);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&sealed[0])
        .expect("sealed 1");
    f.write_all_at(&[0xff; 16], first_block + 8)
        .expect("damage the duplicate");
    drop(f);
    // Segment 2: a sealed file half written.
    let half = std::fs::read(&sealed[1]).expect("sealed 2");
    let temp = log_dir.join(format!(
        "{}.tmp",
        sealed[1].file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&temp, &half[..half.len() / 2]).expect("temp");

    let store = open(dir.path(), config()).expect("a start tidies");
    assert!(!temp.exists(), "the unfinished sealed file is left");
    check_all(&store, &expected);
    drop(store);
    // The original was sealed again, and the store is clean.
    let store = open(dir.path(), config()).expect("open");
    wait_sealed(dir.path());
    check_all(&store, &expected);
    drop(store);
    assert!(!log_dir.join(segment::file_name(1)).exists());
    let report = fsck(dir.path());
    assert!(report.ok(), "{:?}", report.problems);
}

/// An attacker with write access rewrites one sealed event (a valid record with its checksum,
/// recompressed into a valid sealed file) and its leaf hash in the node files. The read checks
/// the record against the signed root, not against the stored leaf, and refuses it.
#[test]
fn a_forged_sealed_record_and_leaf_are_refused_at_read_time() {
    use segment::RecordKind;
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let store = open(dir.path(), config()).expect("open");
        let expected = append_all(&store, 2000);
        wait_sealed(dir.path());
        // The signed checkpoint of the head is what reads trust from now on.
        let cp = store.checkpoint(TENANT).expect("checkpoint");
        assert_eq!(cp.checkpoint.size, 2000);
        expected
    };
    let log_dir = tenant_dir(dir.path()).join("log");
    let sealed_path = files(dir.path(), ".zseg")[0].clone();
    let seg = SealedSegment::open(&sealed_path, 1).expect("opens");
    let mut raw = as_appended(&seg, 1);
    let victim = 5u64;
    let (record, offset) = seg
        .records(
            seg.block_at(seg.blocks[0].raw_offset).expect("block 0"),
            &seg.read_block(0).expect("block"),
        )
        .expect("records")
        .into_iter()
        .find(|(r, _)| r.seq == victim)
        .expect("the victim");
    let forged_payload = String::from_utf8(record.payload.clone())
        .expect("utf-8")
        .replace("svc-0", "svc-9")
        .into_bytes();
    assert_eq!(forged_payload.len(), record.payload.len());
    assert_ne!(forged_payload, record.payload);
    let mut forged = Vec::new();
    segment::encode_record(RecordKind::Event, victim, &forged_payload, &mut forged);
    raw[offset as usize..offset as usize + forged.len()].copy_from_slice(&forged);
    drop(seg);
    std::fs::remove_file(&sealed_path).expect("rm sealed");
    std::fs::write(log_dir.join(segment::file_name(1)), &raw).expect("forged segment");
    seal(&log_dir, 1).expect("resealed");
    std::fs::remove_file(log_dir.join(segment::file_name(1))).expect("rm appended");
    // The forged leaf hash, in the node files too.
    let leaves = tenant_dir(dir.path())
        .join(veritrail_store::embedded::INDEX_DIR)
        .join("level-00.dat");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&leaves)
        .expect("leaves");
    f.write_all_at(
        &veritrail_core::hash::leaf_hash(&forged_payload),
        victim * 32,
    )
    .expect("forge the leaf");
    drop(f);

    let store = open(dir.path(), config())
        .expect("opens: nothing read at startup touches the forged block");
    let err = read(&store, victim)
        .expect_err("the forgery is refused")
        .to_string();
    assert!(err.contains("seq 5") && err.contains("altered"), "{err}");
    // The events whose proofs pass through it (its group of 16 leaves: the nodes of levels 1 to 3
    // are computed from the leaf hashes, the forged one among them) are refused too; those
    // beyond are served.
    let err = read(&store, victim + 1)
        .expect_err("a neighbour's proof passes through the forged leaf")
        .to_string();
    assert!(err.contains("seq 6"), "{err}");
    let next = read(&store, 16).expect("an event beyond its group reads");
    assert_eq!(next.leaf_hash, expected[16].1);
    drop(store);

    // fsck names the forgery by the first stored node above it that no longer matches.
    let fsck = || fsck(dir.path()).problems;
    let problems = fsck();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("node 0 of level 4 (leaves 0 to 15)")),
        "{problems:?}"
    );
    // With the true leaf hash back, the record is named, and the nodes it changes are not
    // reported again one per level.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&leaves)
        .expect("leaves");
    f.write_all_at(&expected[victim as usize].1, victim * 32)
        .expect("restore the leaf");
    drop(f);
    let problems = fsck();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("seq 5") && p.contains("do not match the leaf hash")),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("of level")),
        "{problems:?}"
    );
}

/// A segment whose records are gone (its file holds only its header, as after a medium that
/// lied about fsync) leaves a gap before the next one: startup refuses and `fsck` reports, both
/// naming the gap's seqs as acknowledged events missing, not as a puzzle about segment starts.
#[test]
fn a_segment_emptied_of_its_events_is_named_as_missing_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), config()).expect("open");
        append_all(&store, 2000);
        wait_sealed(dir.path());
    }
    let log_dir = tenant_dir(dir.path()).join("log");
    let sealed_path = files(dir.path(), ".zseg")[0].clone();
    let first_of_second = SealedSegment::open(&files(dir.path(), ".zseg")[1], 2)
        .expect("segment 2 is sealed")
        .first_seq;
    std::fs::remove_file(&sealed_path).expect("rm sealed");
    drop(segment::create(&log_dir, 1, 0).expect("an empty segment 1"));

    let gap = format!("events 0..{first_of_second} are gone");
    let err = match open(dir.path(), config()) {
        Ok(_) => panic!("a store missing events opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&gap) && err.contains("acknowledged events are missing"),
        "startup does not name the missing events: {err}"
    );
    let report = fsck(dir.path());
    assert!(
        report.problems.iter().any(|p| p.contains(&gap)),
        "fsck does not name the gap: {:?}",
        report.problems
    );
}

/// An index file of an earlier format version is rebuilt at startup like a lost one; before that,
/// `fsck` reports it as waiting for a start, not as damage.
#[test]
fn an_index_file_of_an_older_format_is_rewritten_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = sealed_store(dir.path());
    let tenant = tenant_dir(dir.path());
    let sidx = tenant
        .join(veritrail_store::embedded::INDEX_DIR)
        .join("00000001.sidx");
    let fsck = || {
        veritrail_store::embedded::fsck::check(&tenant, &support::log_vkey(), |_, _| {})
            .expect("fsck runs")
    };
    assert!(fsck().needs_recovery.is_empty());
    let mut bytes = std::fs::read(&sidx).expect("index file");
    bytes[7] = 1;
    std::fs::write(&sidx, &bytes).expect("older version byte");
    let report = fsck();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report
            .needs_recovery
            .iter()
            .any(|n| n.contains("00000001.sidx") && n.contains("older index format")),
        "{:?}",
        report.needs_recovery
    );

    let store = open(dir.path(), config()).expect("opens and rebuilds the index file");
    check_all(&store, &expected);
    let filter =
        veritrail_core::query::Filter::from_pairs([("correlation_id", "op-3")], chrono::Utc::now())
            .expect("filter");
    let spec = veritrail_store::QuerySpec {
        filter: &filter,
        order: veritrail_store::Order::Asc,
        cursor: None,
        limit: 1000,
    };
    let found = store.query(TENANT, &spec).expect("query");
    assert_eq!(
        found.events.len(),
        (0..2000).filter(|i| i % 13 == 3).count()
    );
    drop(store);
    let report = fsck();
    assert!(
        report.ok() && report.needs_recovery.is_empty(),
        "{report:?}"
    );
    assert_eq!(std::fs::read(&sidx).expect("index file")[7], 2);
}

/// After a kill, the tree's nodes beyond what `index/tree.meta` records as durable may not be
/// written yet: `fsck` says a start recovers them, not that the node files are damaged; after a
/// start it is clean. Every node up to there is judged, also those the root is not made of.
#[test]
fn tree_nodes_not_yet_durable_need_recovery_not_a_reindex() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let store = open(dir.path(), config()).expect("open");
        append_all(&store, 2000)
    };
    let index = tenant_dir(dir.path()).join(veritrail_store::embedded::INDEX_DIR);
    // As the writer leaves it mid-way: leaves written, tree.meta at 1000, and not yet the node of
    // the first 1024 leaves, which the root of 2000 is made of.
    let mut meta = b"VTTREE\0\x01".to_vec();
    meta.extend_from_slice(&1000u64.to_le_bytes());
    meta.extend_from_slice(&crc32c::crc32c(&meta).to_le_bytes());
    std::fs::write(index.join("tree.meta"), &meta).expect("tree.meta");
    let level10 = std::fs::OpenOptions::new()
        .write(true)
        .open(index.join("level-10.dat"))
        .expect("level 10");
    std::os::unix::fs::FileExt::write_all_at(&level10, &[0; 32], 0).expect("unwritten");
    drop(level10);
    let fsck = || fsck(dir.path());
    let report = fsck();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(
        report
            .needs_recovery
            .iter()
            .any(|n| n.contains("tree.meta")),
        "{:?}",
        report.needs_recovery
    );
    // Below what is recorded durable, a wrong node is damage: the first 512 leaves' node, which
    // the root of 1000 is made of.
    let level9 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(index.join("level-09.dat"))
        .expect("level 9");
    let mut kept = [0u8; 32];
    std::os::unix::fs::FileExt::read_exact_at(&level9, &mut kept, 0).expect("node");
    std::os::unix::fs::FileExt::write_all_at(&level9, &[0; 32], 0).expect("damaged");
    assert!(
        fsck()
            .problems
            .iter()
            .any(|p| p.contains("node files do not match")),
        "a damaged durable node is not reported"
    );
    std::os::unix::fs::FileExt::write_all_at(&level9, &kept, 0).expect("restored");
    drop(level9);
    // And a node the root is not made of (leaves 48 to 63, in the lowest stored level above the
    // leaves): a proof through it would fail.
    assert!(
        !index.join("level-03.dat").exists(),
        "levels 1 to 3 are computed"
    );
    let level4 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(index.join("level-04.dat"))
        .expect("level 4");
    std::os::unix::fs::FileExt::read_exact_at(&level4, &mut kept, 3 * 32).expect("node");
    std::os::unix::fs::FileExt::write_all_at(&level4, &[0; 32], 3 * 32).expect("damaged");
    let report = fsck();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("node 3 of level 4 (leaves 48 to 63)")),
        "{:?}",
        report.problems
    );
    std::os::unix::fs::FileExt::write_all_at(&level4, &kept, 3 * 32).expect("restored");
    drop(level4);

    let store = open(dir.path(), config()).expect("a start recovers the nodes");
    check_all(&store, &expected);
    drop(store);
    let report = fsck();
    assert!(
        report.ok() && report.needs_recovery.is_empty(),
        "{report:?}"
    );
}
