//! Writes the generated seeds committed under `fuzz/seeds/`: a small valid export bundle, signed
//! notes and key texts of the fixed key, and segment records of valid leaves. Everything is
//! deterministic (fixed key, ids and times; Ed25519 signs deterministically), so running it again
//! rewrites the same bytes unless the formats changed.
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_seeds
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;

use serde_json::json;
use uuid::Uuid;
use veritrail_core::bundle::{event_line, header_line, manifest_text, verify, ManifestEntry};
use veritrail_core::checkpoint::{sign_checkpoint, Checkpoint};
use veritrail_core::event::{Event, Record};
use veritrail_core::hash::{leaf_hash, Hash};
use veritrail_core::merkle::{inclusion_proof, Frontier};
use veritrail_fuzz::{ingested_at, signer, verifier, ORIGIN, TENANT};
use veritrail_store::embedded::formats::segment::{encode_record, RecordKind};

const LEAVES: u64 = 3;

fn record(i: u64) -> Record {
    let actor = if i.is_multiple_of(2) { "alice" } else { "bob" };
    let value = json!({
        "event_id": Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(i)).to_string(),
        "event_type": "iam.user.login",
        "event_timestamp": "2025-12-13T02:00:00Z",
        "event_category": "iam",
        "event_action": "login",
        "event_outcome": "success",
        "actor_id": actor,
        "event_data": {"attempt": i}
    });
    Record {
        tenant: TENANT.into(),
        ingested_at: ingested_at(),
        event: Event::from_json(&value, Uuid::nil).expect("a valid seed event"),
    }
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("seed directory");
    std::fs::write(d.join(name), bytes).expect("seed file");
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let records: Vec<Record> = (0..LEAVES).map(record).collect();
    let leaves: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let event_bytes = r.event.canonical_bytes().expect("canonical");
            Record::canonical_bytes_around(&event_bytes, &r.tenant, &r.ingested_at)
        })
        .collect();
    let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l)).collect();
    let mut frontier = Frontier::new();
    let mut nodes = HashMap::new();
    for h in &hashes {
        frontier.append(*h, |level, index, node| {
            nodes.insert((level, index), *node);
        });
    }
    let root = frontier.root();
    let mut get =
        |level: u32, index: u64| -> Result<Hash, Infallible> { Ok(nodes[&(level, index)]) };

    // The bundle: the events of alice (leaves 0 and 2).
    let filter = vec![("actor_id".to_owned(), "alice".to_owned())];
    let selected = [0u64, 2];
    let entries: Vec<ManifestEntry> = selected
        .iter()
        .map(|&i| ManifestEntry {
            leaf_index: i,
            leaf_hash: hashes[i as usize],
        })
        .collect();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: LEAVES,
        root,
        extensions: vec![],
    };
    let cp_note = sign_checkpoint(&cp, signer()).expect("checkpoint signs");
    let text = manifest_text(ORIGIN, LEAVES, &root, &filter, &entries).expect("manifest");
    let mf_note = signer().sign(&text).expect("manifest signs");
    let header = header_line(ORIGIN, LEAVES, 2, &filter, &cp_note, &mf_note).expect("header");
    let mut bundle = header;
    for &i in &selected {
        let proof = inclusion_proof(i, LEAVES, &mut get).expect("in tree");
        bundle.push('\n');
        bundle.push_str(&event_line(
            i,
            &hashes[i as usize],
            &records[i as usize].to_value(),
            &proof,
        ));
    }
    bundle.push('\n');
    let report = verify(&bundle, verifier());
    assert!(report.ok(), "the seed bundle must verify: {report}");
    write(&dir, "bundle", "valid-2-of-3.ndjson", bundle.as_bytes());

    // Notes and key texts.
    write(&dir, "signed_note", "checkpoint.note", cp_note.as_bytes());
    write(
        &dir,
        "signed_note",
        "checkpoint.txt",
        cp.to_text().as_bytes(),
    );
    write(&dir, "signed_note", "manifest.note", mf_note.as_bytes());
    write(&dir, "signed_note", "vkey.txt", signer().vkey().as_bytes());
    write(
        &dir,
        "signed_note",
        "signer-key.txt",
        signer().to_signer_key().as_bytes(),
    );

    // Segment records (the bytes after a segment header) and one leaf as a bare payload.
    let mut seg = Vec::new();
    for (seq, leaf) in leaves.iter().enumerate() {
        encode_record(RecordKind::Event, seq as u64, leaf, &mut seg);
    }
    write(&dir, "segment_record", "three-records.bin", &seg);
    write(&dir, "segment_record", "leaf.json", &leaves[0]);
    println!("seeds written under {}", dir.display());
}
