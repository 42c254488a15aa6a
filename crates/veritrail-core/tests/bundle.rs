//! Export bundles end to end: a real log of ten events is built, signed and exported with a
//! filter (every other event); the intact bundle must verify, and each kind of tampering must be
//! reported as its specific problem naming the right leaf.
//!
//! Test names start with `bundle_` so that `cargo test -p veritrail-core bundle` selects them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::bundle::{
    event_line, header_line, manifest_text, verify, ManifestEntry, Problem, Report,
};
use veritrail_core::checkpoint::{open_checkpoint, sign_checkpoint, Checkpoint};
use veritrail_core::event::{Event, Record};
use veritrail_core::hash::{leaf_hash, Hash};
use veritrail_core::merkle::{inclusion_proof, Frontier};
use veritrail_core::note::{NoteSigner, NoteVerifier};

const ORIGIN: &str = "veritrail.example/audit";

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
const LEAVES: u64 = 10;

/// A signed log and a bundle exported from it.
struct Fixture {
    signer: NoteSigner,
    /// The exported bundle, one line per element (header first).
    bundle: Vec<String>,
    /// A valid event line for every leaf of the log, exported or not.
    all_events: Vec<String>,
}

fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, &[42; 32]).expect("valid key name")
}

fn record(i: u64) -> Record {
    let actor = if i.is_multiple_of(2) { "alice" } else { "bob" };
    let json = json!({
        "event_id": Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(i)).to_string(),
        "event_type": "iam.user.login",
        "event_timestamp": "2025-12-13T02:00:00Z",
        "event_category": "iam",
        "event_action": "login",
        "event_outcome": "success",
        "actor_id": actor,
        "event_data": {"attempt": i}
    });
    let event = Event::from_json(&json, Uuid::nil).expect("valid test event");
    let ingested_at: DateTime<Utc> = "2025-12-13T02:00:01Z".parse().expect("valid time");
    Record {
        tenant: "default".into(),
        ingested_at,
        event,
    }
}

/// The tree's perfect nodes, as a store would persist them.
fn build_tree(hashes: &[Hash]) -> (Hash, HashMap<(u32, u64), Hash>) {
    let mut frontier = Frontier::new();
    let mut nodes = HashMap::new();
    for h in hashes {
        frontier.append(*h, |level, index, node| {
            nodes.insert((level, index), *node);
        });
    }
    (frontier.root(), nodes)
}

fn fixture() -> Fixture {
    fixture_of(ORIGIN, signer())
}

/// The fixture's log under another origin, signed by `signer`.
fn fixture_of(origin: &str, signer: NoteSigner) -> Fixture {
    let records: Vec<Record> = (0..LEAVES).map(record).collect();
    let hashes: Vec<Hash> = records
        .iter()
        .map(|r| leaf_hash(&r.canonical_bytes().expect("canonical")))
        .collect();
    let (root, nodes) = build_tree(&hashes);
    let mut get = |level: u32, index: u64| nodes.get(&(level, index)).copied().ok_or("no node");
    let all_events: Vec<String> = (0..LEAVES)
        .map(|i| {
            let proof = inclusion_proof(i, LEAVES, &mut get).expect("leaf in tree");
            event_line(
                i,
                &hashes[i as usize],
                &records[i as usize].to_value(),
                &proof,
            )
        })
        .collect();
    // The export, as the filter `actor_id=alice` selects it: the even leaves.
    let filter = vec![("actor_id".to_owned(), "alice".to_owned())];
    let selected: Vec<u64> = (0..LEAVES)
        .filter(|&i| records[i as usize].event.field("actor_id") == Some("alice"))
        .collect();
    let entries: Vec<ManifestEntry> = selected
        .iter()
        .map(|&i| ManifestEntry {
            leaf_index: i,
            leaf_hash: hashes[i as usize],
        })
        .collect();
    let cp = Checkpoint {
        origin: origin.into(),
        size: LEAVES,
        root,
        extensions: vec![],
    };
    let cp_note = sign_checkpoint(&cp, &signer).expect("valid checkpoint");
    let text = manifest_text(origin, LEAVES, &root, &filter, &entries).expect("valid manifest");
    let mf_note = signer.sign(&text).expect("valid note text");
    let count = entries.len() as u64;
    let header = header_line(origin, LEAVES, count, &filter, &cp_note, &mf_note).expect("header");
    let mut bundle = vec![header];
    bundle.extend(selected.iter().map(|&i| all_events[i as usize].clone()));
    Fixture {
        signer,
        bundle,
        all_events,
    }
}

fn run(lines: &[String], vkey: &NoteVerifier) -> Report {
    verify(&format!("{}\n", lines.join("\n")), vkey)
}

/// Tampers with the fixture's bundle, verifies it with the log's key, and checks the problems.
fn check(tamper: impl Fn(&mut Vec<String>), expect: impl Fn(&[Problem]) -> bool) {
    let f = fixture();
    let mut lines = f.bundle.clone();
    tamper(&mut lines);
    let report = run(&lines, &f.signer.verifier());
    assert!(!report.ok(), "tampering went unnoticed");
    assert!(expect(&report.problems), "unexpected problems:\n{report}");
    for p in &report.problems {
        assert!(
            !p.to_string().contains('\n'),
            "message is not one line: {p}"
        );
    }
}

/// Edits the JSON of line `n` in place.
fn edit_json(lines: &mut [String], n: usize, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&lines[n]).expect("fixture line is JSON");
    edit(&mut v);
    lines[n] = v.to_string();
}

/// Edits a string field of the header (a signed note) in place.
fn edit_header_note(lines: &mut [String], field: &str, edit: impl FnOnce(&str) -> String) {
    edit_json(lines, 0, |v| {
        let note = v[field].as_str().expect("note is a string").to_owned();
        v[field] = Value::from(edit(&note));
    });
}

#[test]
fn bundle_intact_verifies_with_no_problems() {
    let f = fixture();
    let report = run(&f.bundle, &f.signer.verifier());
    assert!(report.ok(), "{report}");
    assert_eq!(report.origin.as_deref(), Some(ORIGIN));
    assert_eq!(report.tree_size, Some(LEAVES));
    assert_eq!(report.events_checked, 5);
    // The same verdict from the vkey text an auditor would be handed.
    let vkey = NoteVerifier::from_vkey(&f.signer.vkey()).expect("vkey parses");
    assert!(run(&f.bundle, &vkey).ok());
    assert!(
        verify(&f.bundle.join("\n"), &vkey).ok(),
        "a missing final newline is harmless"
    );
}

#[test]
fn bundle_header_and_event_line_layout() {
    let f = fixture();
    let header: Value = serde_json::from_str(&f.bundle[0]).expect("JSON");
    assert_eq!(header["type"], "veritrail-bundle");
    assert_eq!(header["version"], 1);
    assert_eq!(header["count"], 5);
    assert_eq!(header["filter"], json!({"actor_id": "alice"}));
    let manifest = header["manifest"].as_str().expect("string");
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(
        &lines[..6],
        [
            "veritrail-export/v1",
            ORIGIN,
            "10",
            lines[3],
            "5",
            r#"{"actor_id":"alice"}"#
        ]
    );
    assert!(
        lines[6].starts_with("0 ") && lines[10].starts_with("8 "),
        "{manifest}"
    );
    let event: Value = serde_json::from_str(&f.bundle[2]).expect("JSON");
    assert_eq!(event["type"], "event");
    assert_eq!(event["leaf_index"], 2);
    assert_eq!(
        Record::from_value(&event["leaf"]).expect("leaf document"),
        record(2)
    );
}

#[test]
fn bundle_altered_leaf_field() {
    check(
        |l| edit_json(l, 2, |v| v["leaf"]["event"]["actor_id"] = json!("mallory")),
        |p| {
            matches!(p, [Problem::Altered { leaf_index: 2, event_id: Some(id) }]
                if id == "01900000-0000-7000-8000-000000000002")
        },
    );
}

#[test]
fn bundle_altered_leaf_with_recomputed_hash() {
    // The forger recomputes leaf_hash; the signed manifest still has the original.
    check(
        |l| {
            edit_json(l, 3, |v| {
                v["leaf"]["event"]["event_outcome"] = json!("failure");
                let bytes = veritrail_core::canonical::to_vec(&v["leaf"]).expect("canonical");
                v["leaf_hash"] = json!(veritrail_core::hash::to_b64(&leaf_hash(&bytes)));
            })
        },
        |p| matches!(p, [Problem::Altered { leaf_index: 4, .. }]),
    );
}

#[test]
fn bundle_deleted_event_line() {
    check(
        |l| drop(l.remove(3)),
        |p| p == [Problem::Missing { leaf_index: 4 }],
    );
}

#[test]
fn bundle_inserted_real_event_line() {
    // Leaf 5 is genuinely in the log, with a valid proof, but the export did not select it.
    let odd = fixture().all_events[5].clone();
    check(
        move |l| l.insert(4, odd.clone()),
        |p| p == [Problem::Inserted { leaf_index: 5 }],
    );
}

#[test]
fn bundle_swapped_event_lines() {
    check(
        |l| l.swap(2, 3),
        |p| matches!(p, [Problem::Reordered { leaf_index: 2 | 4 }]),
    );
    // First and last swapped: exactly those two are named.
    check(
        |l| l.swap(1, 5),
        |p| {
            p == [
                Problem::Reordered { leaf_index: 8 },
                Problem::Reordered { leaf_index: 0 },
            ]
        },
    );
}

#[test]
fn bundle_duplicated_event_line() {
    check(
        |l| l.push(l[5].clone()),
        |p| p == [Problem::Duplicate { leaf_index: 8 }],
    );
}

#[test]
fn bundle_corrupted_proof() {
    check(
        |l| {
            edit_json(l, 1, |v| {
                v["proof"][0] = json!(veritrail_core::hash::to_b64(&[7; 32]))
            })
        },
        |p| p == [Problem::BadProof { leaf_index: 0 }],
    );
}

#[test]
fn bundle_checkpoint_body_edited() {
    check(
        |l| edit_header_note(l, "checkpoint", |n| n.replacen("\n10\n", "\n11\n", 1)),
        |p| {
            p.first() == Some(&Problem::BadSignature { what: "checkpoint" })
                && !p.contains(&Problem::BadSignature { what: "manifest" })
        },
    );
}

#[test]
fn bundle_manifest_edited() {
    // Drop leaf 8 from the manifest and the bundle consistently: only the signature catches it.
    check(
        |l| {
            edit_header_note(l, "manifest", |n| {
                let kept: Vec<&str> = n
                    .split('\n')
                    .filter(|line| !line.starts_with("8 "))
                    .collect();
                kept.join("\n").replacen("\n5\n", "\n4\n", 1)
            });
            edit_json(l, 0, |v| v["count"] = json!(4));
            l.remove(5);
        },
        |p| p == [Problem::BadSignature { what: "manifest" }],
    );
}

#[test]
fn bundle_verified_with_another_key() {
    let f = fixture();
    let other = NoteSigner::new(ORIGIN, &[43; 32])
        .expect("valid key name")
        .verifier();
    let report = run(&f.bundle, &other);
    assert_eq!(
        report.problems,
        [
            Problem::UnknownKey { what: "checkpoint" },
            Problem::UnknownKey { what: "manifest" }
        ],
        "{report}"
    );
}

#[test]
fn bundle_of_one_tenant_verifies_with_its_key_and_not_with_another_tenants() {
    // One secret, a key name per log: the names (and so the key IDs) differ.
    let key = NoteSigner::new("veritrail", &[42; 32]).expect("valid key name");
    let acme = key.with_name("veritrail/acme").expect("valid key name");
    let beta = key.with_name("veritrail/beta").expect("valid key name");
    let f = fixture_of("veritrail/acme", acme.clone());
    let report = run(&f.bundle, &acme.verifier());
    assert!(report.ok(), "{report}");
    assert_eq!(report.origin.as_deref(), Some("veritrail/acme"));
    let report = run(&f.bundle, &beta.verifier());
    assert!(
        report.problems.starts_with(&[
            Problem::UnknownKey { what: "checkpoint" },
            Problem::UnknownKey { what: "manifest" }
        ]),
        "{report}"
    );
    // The key under the name of older versions does not name this signature either.
    assert!(!run(&f.bundle, &key.verifier()).ok());
}

#[test]
fn bundle_of_an_older_version_verifies_with_the_key_named_after_the_prefix() {
    // Older versions signed every tenant's log under the origin prefix.
    let key = NoteSigner::new("veritrail", &[42; 32]).expect("valid key name");
    let f = fixture_of("veritrail/default", key.clone());
    let vkey = NoteVerifier::from_vkey(&key.vkey()).expect("vkey parses");
    assert!(key.vkey().starts_with("veritrail+"), "{}", key.vkey());
    let report = run(&f.bundle, &vkey);
    assert!(report.ok(), "{report}");
    assert_eq!(report.origin.as_deref(), Some("veritrail/default"));
    // The origin-named key of today does not check it: another name, another key ID.
    let today = key.with_name("veritrail/default").expect("valid key name");
    assert!(!run(&f.bundle, &today.verifier()).ok());
}

#[test]
fn bundle_signature_renamed_to_another_tenants_key_is_another_log() {
    // A key name is not signed: rename acme's signature lines to beta's name and key ID, and
    // the signatures verify with beta's key. The origin still names acme's log.
    let key = NoteSigner::new("veritrail", &[42; 32]).expect("valid key name");
    let acme = key.with_name("veritrail/acme").expect("valid key name");
    let beta = key.with_name("veritrail/beta").expect("valid key name");
    let mut lines = fixture_of("veritrail/acme", acme.clone()).bundle;
    let rename = |note: &str| {
        let (text, sig) = note.rsplit_once("\n\n").expect("a signed note");
        let blob = sig.trim_end().rsplit(' ').next().expect("a signature line");
        let mut raw = base64_decode(blob);
        raw[..4].copy_from_slice(&beta.key_id().to_be_bytes());
        format!(
            "{text}\n\n\u{2014} veritrail/beta {}\n",
            base64_encode(&raw)
        )
    };
    edit_header_note(&mut lines, "checkpoint", rename);
    edit_header_note(&mut lines, "manifest", rename);
    let report = run(&lines, &beta.verifier());
    assert_eq!(
        report.problems,
        [Problem::WrongLog {
            origin: "veritrail/acme".into(),
            key_name: "veritrail/beta".into()
        }],
        "{report}"
    );
}

#[test]
fn bundle_header_count_changed() {
    check(
        |l| edit_json(l, 0, |v| v["count"] = json!(4)),
        |p| matches!(p, [Problem::ManifestMismatch { why }] if why.contains("count")),
    );
}

#[test]
fn bundle_header_filter_changed() {
    check(
        |l| edit_json(l, 0, |v| v["filter"] = json!({"actor_id": "bob"})),
        |p| matches!(p, [Problem::ManifestMismatch { why }] if why.contains("filter")),
    );
}

#[test]
fn bundle_header_tree_size_changed() {
    check(
        |l| edit_json(l, 0, |v| v["tree_size"] = json!(9)),
        |p| matches!(p, [Problem::HeaderMismatch { why }] if why.contains("tree size")),
    );
}

#[test]
fn bundle_garbage_line() {
    check(
        |l| l.insert(3, "this is not JSON".into()),
        |p| matches!(p, [Problem::Malformed { line: 4, why }] if !why.contains("line 1")),
    );
}

#[test]
fn bundle_unsigned_extra_field() {
    check(
        |l| edit_json(l, 1, |v| v["approved_by"] = json!("cfo")),
        |p| matches!(p, [Problem::Malformed { line: 2, why }] if why.contains("approved_by")),
    );
}

#[test]
fn bundle_truncated_file() {
    // Cut in the middle of the last event line (leaf 8, line 6).
    check(
        |l| {
            let last = l.last_mut().expect("lines");
            last.truncate(last.len() / 2);
        },
        |p| {
            matches!(p, [Problem::Malformed { line: 6, why }, Problem::Missing { leaf_index: 8 }]
                if why.contains("truncated"))
        },
    );
    // Cut right after the header.
    check(
        |l| l.truncate(1),
        |p| {
            (0..5)
                .map(|i| Problem::Missing { leaf_index: 2 * i })
                .eq(p.iter().cloned())
        },
    );
}

#[test]
fn bundle_empty_or_headerless_input() {
    let vkey = signer().verifier();
    let empty = verify("", &vkey);
    assert!(
        matches!(empty.problems[..], [Problem::Malformed { line: 1, .. }]),
        "{empty}"
    );
    let f = fixture();
    let headerless = run(&f.bundle[1..], &vkey);
    assert!(!headerless.ok());
    assert!(
        matches!(headerless.problems[0], Problem::Malformed { line: 1, .. }),
        "{headerless}"
    );
}

#[test]
fn bundle_hostile_values_never_panic() {
    let f = fixture();
    let vkey = f.signer.verifier();
    let hostile: [&str; 10] = [
        r#"{"type":"event","leaf_index":1e30,"leaf_hash":"x","leaf":{},"proof":[]}"#,
        r#"{"type":"event","leaf_index":18446744073709551615,"leaf_hash":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","leaf":{"n":18446744073709551615},"proof":[]}"#,
        r#"{"type":"event","leaf_index":-1,"leaf_hash":null,"leaf":[],"proof":"no"}"#,
        r#"{"type":"event"}"#,
        r#"{"type":7}"#,
        &"[".repeat(10_000),
        &format!("{{\"type\":\"event\",\"leaf\":{}", "{\"a\":".repeat(10_000)),
        r#"{"type":"veritrail-bundle","version":1,"origin":1,"tree_size":-5,"count":"5","filter":{"a":1},"checkpoint":"x","manifest":"\n\n"}"#,
        "\u{feff}{}",
        "",
    ];
    for line in hostile {
        let mut lines = f.bundle.clone();
        lines.insert(2, line.to_owned());
        assert!(!run(&lines, &vkey).ok(), "{line}");
        lines.remove(2);
        lines[0] = line.to_owned();
        assert!(!run(&lines, &vkey).ok(), "{line}");
    }
}

#[test]
fn bundle_every_truncation_is_noticed() {
    let f = fixture();
    let vkey = f.signer.verifier();
    let text = f.bundle.join("\n");
    let cuts = (0..text.len())
        .step_by(17)
        .filter(|&i| text.is_char_boundary(i));
    for cut in cuts {
        assert!(
            !verify(&text[..cut], &vkey).ok(),
            "truncation at byte {cut} passed"
        );
    }
}

#[test]
fn bundle_empty_selection_verifies() {
    let f = fixture();
    let header: Value = serde_json::from_str(&f.bundle[0]).expect("JSON");
    let cp = header["checkpoint"].as_str().expect("note");
    let root = open_checkpoint(cp, &[f.signer.verifier()])
        .expect("checkpoint opens")
        .root;
    let filter = vec![("actor_id".to_owned(), "nobody".to_owned())];
    let text = manifest_text(ORIGIN, LEAVES, &root, &filter, &[]).expect("valid manifest");
    let mf = f.signer.sign(&text).expect("valid note");
    let line = header_line(ORIGIN, LEAVES, 0, &filter, cp, &mf).expect("header");
    let report = verify(&line, &f.signer.verifier());
    assert!(report.ok(), "{report}");
    assert_eq!(report.events_checked, 0);
}
