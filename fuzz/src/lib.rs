//! What the fuzz targets share: the ingest invariant on an accepted event, and the fixed inputs
//! (tenant, ingest time, id source, signing key) that the library takes from its callers.
//!
//! The invariant, for an event that `Event::from_json` accepted (directly, or through the
//! Kubernetes or CloudTrail mapping):
//!
//! 1. its leaf bytes are built exactly as ingest builds them (`NewLeaf::prepare` in
//!    `crates/veritrail-store/src/log.rs`: `Event::canonical_bytes`, then
//!    `Record::canonical_bytes_around`), and equal `Record::canonical_bytes` of the same record;
//! 2. those bytes read back with `Record::from_bytes` (recovery, bundles), `Leaf::from_bytes`
//!    (the verified read path) and `LeafSummary::from_bytes` (fsck), and re-encoding what was
//!    read gives the same bytes (the leaf document, and the event object the writer compares for
//!    idempotency);
//! 3. what the readers see agrees with the event: id, time and the indexed fields (fsck
//!    recomputes index entries from a `LeafSummary`), and `render_leaf` splices a valid answer;
//! 4. the stored event object, sent again, is accepted and gives the same canonical bytes.
//!
//! A failure panics: that is a finding.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, Utc};
use serde_json::Value;
use uuid::Uuid;
use veritrail_core::canonical;
use veritrail_core::event::{render_leaf, Event, Leaf, LeafSummary, Record};
use veritrail_core::note::{NoteSigner, NoteVerifier};

/// The tenant every leaf is built for.
pub const TENANT: &str = "default";

/// The origin (and key name) of the fixed signing key.
pub const ORIGIN: &str = "veritrail.example/audit";

/// The fixed ingest time (the store reads the clock once per request; a fuzz target must not).
pub fn ingested_at() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_765_591_201_123_456).expect("a valid fixed time")
}

/// The fixed source of new event ids (the server passes `Uuid::now_v7`).
pub fn new_id() -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001)
}

/// The fixed signer: the key of `crates/veritrail-core/tests/bundle.rs` (seed `[42; 32]`).
pub fn signer() -> &'static NoteSigner {
    static SIGNER: OnceLock<NoteSigner> = OnceLock::new();
    SIGNER.get_or_init(|| NoteSigner::new(ORIGIN, &[42; 32]).expect("valid key name"))
}

/// The verifier of [`signer`].
pub fn verifier() -> &'static NoteVerifier {
    static VERIFIER: OnceLock<NoteVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| signer().verifier())
}

/// Bug classes already known and being fixed elsewhere. With `VERITRAIL_FUZZ_SKIP_KNOWN=1` in
/// the environment the invariant is not checked for events that fall in one, so that a run
/// looks past them; by default (and in `.ci/fuzz`) nothing is skipped.
pub fn known_bug(event: &Event) -> Option<&'static str> {
    let times = [Some(event.event_timestamp), event.parent_event_date];
    if times
        .iter()
        .flatten()
        .any(|t| !(0..=9999).contains(&t.year()))
    {
        return Some("a timestamp whose UTC year leaves 0000-9999");
    }
    fn big_whole_float(v: &Value) -> bool {
        match v {
            Value::Number(n) => {
                let text = n.to_string();
                let written_as_float = text.contains(['.', 'e', 'E']);
                let f: f64 = text.parse().unwrap_or(0.0);
                written_as_float
                    && f.is_finite()
                    && f.fract() == 0.0
                    && f.abs() >= 9007199254740992.0
            }
            Value::Array(a) => a.iter().any(big_whole_float),
            Value::Object(o) => o.values().any(big_whole_float),
            _ => false,
        }
    }
    if event.event_data.values().any(big_whole_float) {
        return Some("a whole-number float of magnitude 2^53 or more");
    }
    None
}

fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("VERITRAIL_FUZZ_SKIP_KNOWN").is_some_and(|v| v == "1"))
}

/// The canonical bytes of a JSON value, which must have them (it was read from canonical bytes).
fn canon(v: &Value, what: &str) -> Vec<u8> {
    canonical::to_vec(v).unwrap_or_else(|e| panic!("{what} has no canonical form: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Checks the ingest invariant (module docs) for one accepted event; panics on a finding.
pub fn check_accepted_event(event: &Event) {
    if skip_known() && known_bug(event).is_some() {
        return;
    }
    let at = ingested_at();
    // 1. The bytes ingest stores (NewLeaf::prepare). Validation is meant to refuse whatever has
    // no canonical form, so an accepted event that has none is itself a finding (ingest would
    // answer 500 with "Damaged").
    let event_bytes = event
        .canonical_bytes()
        .unwrap_or_else(|e| panic!("an accepted event has no canonical bytes: {e}"));
    let leaf = Record::canonical_bytes_around(&event_bytes, TENANT, &at);
    let record = Record {
        tenant: TENANT.to_string(),
        ingested_at: at,
        event: event.clone(),
    };
    let direct = record
        .canonical_bytes()
        .unwrap_or_else(|e| panic!("the record has no canonical bytes: {e}"));
    assert!(
        direct == leaf,
        "canonical_bytes_around differs from Record::canonical_bytes:\n around: {}\n direct: {}",
        text(&leaf),
        text(&direct)
    );

    // 2a. Recovery and bundles: Record::from_bytes, and its re-encoding.
    let back = Record::from_bytes(&leaf).unwrap_or_else(|e| {
        panic!(
            "Record::from_bytes refuses the leaf: {e}\n leaf: {}",
            text(&leaf)
        )
    });
    let again = back
        .canonical_bytes()
        .unwrap_or_else(|e| panic!("the decoded record has no canonical bytes: {e}"));
    assert!(
        again == leaf,
        "Record::from_bytes then canonical_bytes changes the leaf:\n stored: {}\n again:  {}",
        text(&leaf),
        text(&again)
    );
    assert_eq!(back.tenant, TENANT);
    assert_eq!(back.ingested_at, at);
    assert_eq!(back.event.event_id, event.event_id);
    assert_eq!(back.event.event_timestamp, event.event_timestamp);

    // 2b. The verified read path and the writer's idempotency check: Leaf::from_bytes, the leaf
    // document and the event object re-encoded.
    let read = Leaf::from_bytes(&leaf).unwrap_or_else(|e| {
        panic!(
            "Leaf::from_bytes refuses the leaf: {e}\n leaf: {}",
            text(&leaf)
        )
    });
    let doc = canon(read.document(), "the leaf document");
    assert!(
        doc == leaf,
        "Leaf::from_bytes then canonical::to_vec changes the leaf:\n stored: {}\n again:  {}",
        text(&leaf),
        text(&doc)
    );
    let event_again = canon(read.event(), "the stored event object");
    assert!(
        event_again == event_bytes,
        "the stored event object re-encodes differently (a resend would be a 409):\n sent:   {}\n stored: {}",
        text(&event_bytes),
        text(&event_again)
    );
    assert_eq!(read.event_id(), Some(event.event_id));

    // 2c/3. fsck: LeafSummary::from_bytes and the indexed fields.
    let summary = LeafSummary::from_bytes(&leaf).unwrap_or_else(|e| {
        panic!(
            "LeafSummary::from_bytes refuses the leaf: {e}\n leaf: {}",
            text(&leaf)
        )
    });
    assert_eq!(summary.event.event_id, event.event_id);
    assert_eq!(
        summary.event.time(),
        Some(event.event_timestamp),
        "summary time"
    );
    for name in veritrail_store::embedded::formats::INDEXED_FIELDS {
        assert_eq!(
            summary.event.field(name),
            event.field(name),
            "summary field {name}"
        );
    }

    // 3. The API answer spliced from the stored bytes.
    let rendered = render_leaf(&leaf, &[("seq", "7")])
        .unwrap_or_else(|| panic!("render_leaf refuses the leaf: {}", text(&leaf)));
    let rendered: Value = serde_json::from_str(&rendered)
        .unwrap_or_else(|e| panic!("render_leaf gives invalid JSON ({e}): {rendered}"));
    let mut want = event.to_value();
    want["seq"] = 7.into();
    want["ingested_at"] = veritrail_core::event::format_time(&at).into();
    want["tenant"] = TENANT.into();
    assert!(
        canon(&rendered, "the rendered leaf") == canon(&want, "the expected answer"),
        "render_leaf gives another event: {rendered}"
    );

    // 4. The stored event object, sent again, is accepted and is the same event.
    let resent = Event::from_json(read.event(), new_id).unwrap_or_else(|e| {
        panic!(
            "the stored event, sent again, is refused: {e}\n event: {}",
            text(&event_bytes)
        )
    });
    let resent_bytes = resent
        .canonical_bytes()
        .unwrap_or_else(|e| panic!("the resent event has no canonical bytes: {e}"));
    assert!(
        resent_bytes == event_bytes,
        "the stored event, sent again, canonicalizes differently:\n first: {}\n again: {}",
        text(&event_bytes),
        text(&resent_bytes)
    );
}
