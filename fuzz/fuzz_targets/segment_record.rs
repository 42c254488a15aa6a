//! The store's segment record decoder (`segment::read_record` of the embedded engine's formats,
//! over a byte slice as fsck uses it) and the decoders of the payload it returns. Nothing may
//! panic.
//!
//! The input is read twice:
//!
//! 1. as the records of a segment after its header: records are read from offset 0 up to the
//!    end of the input, as fsck and recovery walk a segment; a record that reads back must be
//!    exactly what `encode_record` writes for its fields, and reading with an unknown length
//!    (`u64::MAX`, as `read_record_at` does) must agree with the bounded read;
//! 2. as one record's payload: `encode_record` then `read_record` must give it back, and the
//!    payload goes through what recovery, the read path and fsck decode a stored leaf with
//!    (`Record::from_bytes`, `Leaf::from_bytes`, `LeafSummary::from_bytes`, `render_leaf`).
//!    Without this the leaf decoders would sit behind a CRC32C the fuzzer rarely gets right.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veritrail_core::event::{render_leaf, Leaf, LeafSummary, Record};
use veritrail_store::embedded::formats::segment::{self, ReadOutcome, RecordKind, RECORD_HEADER_LEN};

fn decode_payload(payload: &[u8]) {
    let _ = Record::from_bytes(payload);
    if let Ok(leaf) = Leaf::from_bytes(payload) {
        let _ = leaf.event_id();
        let _ = veritrail_core::canonical::to_vec(leaf.event());
    }
    if let Ok(summary) = LeafSummary::from_bytes(payload) {
        let _ = summary.event.time();
    }
    let _ = render_leaf(payload, &[("seq", "0"), ("leaf_hash", "\"x\"")]);
}

fuzz_target!(|data: &[u8]| {
    // 1. A run of records.
    let len = data.len() as u64;
    let mut offset = 0u64;
    let mut records = 0;
    loop {
        let outcome =
            segment::read_record(data, offset, len).expect("a slice read within its length");
        match outcome {
            ReadOutcome::End => break,
            ReadOutcome::Record(raw, end) => {
                assert!(
                    end > offset && end <= len,
                    "record end {end} after {offset} of {len}"
                );
                let mut again = Vec::new();
                segment::encode_record(raw.kind, raw.seq, &raw.payload, &mut again);
                assert_eq!(
                    &again[..],
                    &data[offset as usize..end as usize],
                    "record re-encoding"
                );
                // Reading without knowing the file length (read_record_at) finds the same record.
                match segment::read_record(data, offset, u64::MAX) {
                    Ok(ReadOutcome::Record(r, e)) => assert_eq!((r, e), (raw.clone(), end)),
                    other => panic!("unbounded read disagrees: {other:?}"),
                }
                decode_payload(&raw.payload);
                offset = end;
            }
            ReadOutcome::BadChecksum(raw, end) => {
                assert!(
                    end > offset && end <= len,
                    "record end {end} after {offset} of {len}"
                );
                assert_eq!(
                    end - offset,
                    RECORD_HEADER_LEN as u64 + raw.payload.len() as u64
                );
                offset = end;
            }
            ReadOutcome::Damaged(_) => break,
        }
        records += 1;
        assert!(records <= data.len(), "more records than bytes");
    }

    // 2. The input as one record's payload.
    if data.len() <= segment::MAX_PAYLOAD as usize {
        let seq = 7;
        let mut bytes = Vec::new();
        segment::encode_record(RecordKind::Event, seq, data, &mut bytes);
        match segment::read_record(bytes.as_slice(), 0, bytes.len() as u64) {
            Ok(ReadOutcome::Record(raw, end)) => {
                assert_eq!(
                    (raw.seq, raw.payload.as_slice(), end),
                    (seq, data, bytes.len() as u64)
                );
            }
            other => panic!("an encoded record does not read back: {other:?}"),
        }
        decode_payload(data);
    }
});
