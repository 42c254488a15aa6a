//! The readers of the store's own files: a sealed segment (`SealedSegment::open`, every block
//! read and cut into records) and a segment index file (`SegmentIndex::open`, its lookups). Both
//! are read from disk, so the input is written to a file first. Whatever the bytes, nothing may
//! panic, and what reads back must be consistent with the file's own index.
//!
//! The first input byte chooses the reader; the rest is the file.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use veritrail_store::embedded::formats::Selector;
use veritrail_store::embedded::formats::SealedSegment;
use veritrail_store::embedded::formats::{RunBounds, SegmentIndex};

fn file_with(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("a temporary file");
    f.write_all(bytes).expect("writing it");
    f
}

fn sealed(bytes: &[u8]) {
    // The ordinal the header claims, so that the header check can pass.
    let ordinal = bytes
        .get(8..12)
        .map_or(1, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let f = file_with(bytes);
    let Ok(seg) = SealedSegment::open(f.path(), ordinal) else {
        return;
    };
    assert!(seg.end_seq() >= seg.first_seq);
    for (k, block) in seg.blocks.iter().enumerate() {
        assert_eq!(seg.block_at(block.raw_offset), Some(k));
        let Ok(raw) = seg.read_block(k) else { continue };
        assert_eq!(raw.len(), block.raw_len as usize);
        if let Ok(records) = seg.records(k, &raw) {
            for (_, offset) in records {
                assert!(offset >= block.raw_offset && offset < block.raw_offset + u64::from(block.raw_len));
            }
        }
    }
}

fn segment_index(bytes: &[u8]) {
    let f = file_with(bytes);
    let Ok(index) = SegmentIndex::open(f.path()) else {
        return;
    };
    let index = std::sync::Arc::new(index);
    for selector in [
        Selector::All,
        Selector::Exact(0, "fixture.step.run".into()),
        Selector::Exact(1, "op-3".into()),
        Selector::Prefix(0, "fixture.".into()),
        Selector::Prefix(3, String::new()),
    ] {
        for descending in [false, true] {
            let bounds = RunBounds {
                lo: (i64::MIN, 0),
                hi: (i64::MAX, u64::MAX),
                size: u64::MAX,
                descending,
            };
            let Ok(runs) = index.runs(&selector, bounds) else {
                continue;
            };
            // Read to the end, or to the first chunk that fails its checks. Order is not
            // asserted: bytes that pass every CRC can still list pairs out of order.
            for mut run in runs {
                while let Ok(Some(_)) = run.next_key() {}
            }
        }
    }
    let _ = index.counts(0);
    let id = uuid::Uuid::from_bytes(std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0)));
    let _ = index.id_candidates(&id);
    let _ = index.producers();
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => sealed(rest),
        Some((_, rest)) => segment_index(rest),
        None => {}
    }
});
