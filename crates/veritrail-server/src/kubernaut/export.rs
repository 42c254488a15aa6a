//! Kubernaut's `GET /api/v1/audit/export`, in its JSON shape, signed the Veritrail way.
//!
//! Only events the Kubernaut API wrote are exported. Every exported event was read back verified
//! and carries its leaf hash (`event_hash`, lowercase hex as Kubernaut's tools read it), the leaf
//! hash of the previous event of its correlation in log order (`previous_event_hash`), whether its
//! inclusion proof verifies (`hash_chain_valid`), its leaf index and that inclusion proof in the
//! signed checkpoint of `export_metadata`; the `signature` is a C2SP signed note (Ed25519, the
//! log's key) over the manifest of exactly these leaves, its filter, offset and limit, as in a
//! native export bundle, so a dropped or added event is detectable offline.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Value};
use veritrail_core::bundle::{self, ManifestEntry};
use veritrail_core::event::format_time;
use veritrail_core::hash::to_b64;
use veritrail_core::merkle;
use veritrail_core::query::Filter;
use veritrail_store::{Order, WindowSpec};

use crate::access::Caller;
use crate::problem::{Problem, QueryPairs};
use crate::AppState;

/// Most events one export may hold (Kubernaut's limit).
const MAX_LIMIT: usize = 10_000;
const DEFAULT_LIMIT: usize = 1_000;

/// The export's query: its filter (as given), offset, limit and whether to repeat the signature.
struct ExportQuery {
    filter: Filter,
    given: serde_json::Map<String, Value>,
    offset: u64,
    limit: usize,
    detached: bool,
}

fn parse(params: &[(String, String)]) -> Result<ExportQuery, Problem> {
    let bad = |m: String| Problem::bad_request(m);
    let now = chrono::Utc::now();
    let mut q = ExportQuery {
        filter: super::own_events(),
        given: serde_json::Map::new(),
        offset: 0,
        limit: DEFAULT_LIMIT,
        detached: false,
    };
    for (name, value) in params {
        let time = || {
            chrono::DateTime::parse_from_rfc3339(value)
                .map_err(|_| bad(format!("`{name}` must be an RFC 3339 time")))
                .map(|_| ())
        };
        match name.as_str() {
            "start_time" => {
                time()?;
                q.filter
                    .add("since", value, now)
                    .map_err(|e| bad(e.to_string()))?;
            }
            "end_time" => {
                time()?;
                q.filter
                    .add("until", value, now)
                    .map_err(|e| bad(e.to_string()))?;
            }
            "correlation_id" | "event_category" => q
                .filter
                .add(name, value, now)
                .map_err(|e| bad(e.to_string()))?,
            "format" if value == "json" => {}
            "format" => return Err(bad("`format` must be `json`".into())),
            "include_detached_signature" => {
                q.detached = value
                    .parse()
                    .map_err(|_| bad("`include_detached_signature` must be true or false".into()))?
            }
            "redact_pii" => {
                match value.as_str() {
                    "false" => {}
                    // A request this server cannot serve as asked, not a server fault.
                    "true" => return Err(bad(
                        "`redact_pii=true` is not supported: redacting personal data is not built \
                         yet; export without it"
                            .into(),
                    )),
                    _ => return Err(bad("`redact_pii` must be true or false".into())),
                }
            }
            "offset" => {
                q.offset = value
                    .parse()
                    .map_err(|_| bad("`offset` must be a whole number, 0 or more".into()))?
            }
            "limit" => {
                q.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad(format!("`limit` must be from 1 to {MAX_LIMIT}")))?
            }
            other => return Err(bad(format!("unknown parameter `{other}`"))),
        }
        let given = match name.as_str() {
            "format" | "include_detached_signature" | "redact_pii" => continue,
            "offset" => json!(q.offset),
            "limit" => json!(q.limit),
            _ => json!(value),
        };
        q.given.insert(name.clone(), given);
    }
    if let (Some(s), Some(u)) = (q.filter.since, q.filter.until) {
        if s > u {
            return Err(bad("`start_time` is after `end_time`".into()));
        }
    }
    Ok(q)
}

/// `GET /api/v1/audit/export` → 200 `{export_metadata, events, hash_chain_verification}`.
pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<Value>, Problem> {
    let q = parse(&params)?;
    let (inner, tenant) = (state.clone(), caller.tenant.clone());
    let exported_by = caller.actor().1;
    let (answer, n) = crate::blocking(move || build(&inner, &tenant, q, exported_by)).await?;
    let details = json!({"format": "kubernaut", "results": n});
    crate::access::record(&state, &caller, "access.export", details).await?;
    Ok(Json(answer))
}

fn build(
    state: &AppState,
    tenant: &str,
    q: ExportQuery,
    exported_by: String,
) -> Result<(Value, usize), Problem> {
    let store = &state.store;
    let spec = WindowSpec {
        filter: &q.filter,
        order: Order::Asc,
        offset: q.offset,
        limit: q.limit,
    };
    let window = store.query_window(tenant, &spec)?;
    let last = window.events.iter().map(|h| h.event.seq).max();
    let cp = store.checkpoint_covering(tenant, last.map_or(0, |s| s + 1))?;
    let (size, root) = (cp.checkpoint.size, cp.checkpoint.root);
    let previous = previous_hashes(store.as_ref(), tenant, &window.events)?;
    let holds = state.holds.get(store.as_ref(), tenant)?;
    let mut events = Vec::with_capacity(window.events.len());
    let mut entries = Vec::with_capacity(window.events.len());
    let mut valid = 0usize;
    let mut tampered = Vec::new();
    for hit in &window.events {
        let e = &hit.event;
        let proof = store.inclusion_proof(tenant, e.seq, size)?;
        let included = merkle::verify_inclusion(e.seq, size, &e.leaf_hash, &proof, &root).is_ok();
        if included {
            valid += 1;
        } else if let Some(id) = e.leaf().ok().and_then(|l| l.event_id()) {
            tampered.push(id.to_string());
        }
        let proof_json = Value::from(proof.iter().map(to_b64).collect::<Vec<_>>()).to_string();
        let hash = format!("\"{}\"", hex(&e.leaf_hash));
        let before = format!("\"{}\"", previous.get(&e.seq).map(hex).unwrap_or_default());
        let held = crate::holds::kubernaut_members_of(&holds, e)?;
        let seq = e.seq.to_string();
        let mut extra = vec![
            ("event_hash", hash.as_str()),
            ("previous_event_hash", before.as_str()),
            ("hash_chain_valid", if included { "true" } else { "false" }),
            ("leaf_index", seq.as_str()),
            ("inclusion_proof", proof_json.as_str()),
        ];
        extra.extend(held.iter().map(|(n, v)| (*n, v.as_str())));
        let text = crate::read::event_json(e, &extra)?;
        events.push(
            serde_json::from_str::<Value>(&text).map_err(|err| {
                Problem::from(veritrail_store::StoreError::Damaged(err.to_string()))
            })?,
        );
        entries.push(ManifestEntry {
            leaf_index: e.seq,
            leaf_hash: e.leaf_hash,
        });
    }
    entries.sort_by_key(|e| e.leaf_index);
    // The manifest says which window of the filter's results it holds: a page is not the whole.
    let mut pairs = q.filter.to_pairs();
    pairs.push(("offset".into(), q.offset.to_string()));
    pairs.push(("limit".into(), q.limit.to_string()));
    let internal = |m: String| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Export failed", m);
    let manifest = bundle::manifest_text(&cp.checkpoint.origin, size, &root, &pairs, &entries)
        .map_err(|e| internal(e.to_string()))?;
    let signer = state.manifest_signer(&cp)?;
    let signature = signer
        .sign(&manifest)
        .map_err(|e| internal(e.to_string()))?;
    let now = format_time(&chrono::Utc::now());
    let n = events.len();
    // Of an empty export nothing is broken.
    let integrity = match n {
        0 => 100.0,
        n => (valid as f64 * 100.0 / n as f64 * 100.0).round() / 100.0,
    };
    let mut answer = json!({
        "export_metadata": {
            "export_timestamp": now,
            "export_format": "json",
            "query_filters": Value::Object(q.given),
            "total_events": n,
            "total_matching_events": window.total,
            "signature": signature,
            "signature_algorithm": "Ed25519 (C2SP signed note over the manifest of exported leaves)",
            "certificate_fingerprint": signer.vkey(),
            "exported_by": exported_by,
            "checkpoint": cp.note,
            "tree_size": size,
            "chain_integrity_percentage": integrity,
        },
        "events": events,
        "hash_chain_verification": {
            "total_events_verified": n,
            "valid_chain_events": valid,
            "broken_chain_events": n - valid,
            "chain_integrity_percentage": integrity,
            "verification_timestamp": now,
            "tampered_event_ids": tampered,
        },
    });
    if q.detached {
        answer["detached_signature"] = answer["export_metadata"]["signature"].clone();
    }
    Ok((answer, n))
}

/// Lowercase hex, the form Kubernaut's tools read hashes in.
fn hex(hash: &veritrail_core::hash::Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// For each exported event (by leaf index), the leaf hash of the event before it in log order
/// among the Kubernaut events of its correlation id; none for the first of a correlation.
/// Kubernaut chains the events of a correlation; here the Merkle tree commits to them all, and
/// this names each one's predecessor so that its tools can follow a correlation's chain.
fn previous_hashes(
    store: &dyn veritrail_store::Store,
    tenant: &str,
    hits: &[veritrail_store::Hit],
) -> Result<HashMap<u64, veritrail_core::hash::Hash>, Problem> {
    let mut correlations = BTreeSet::new();
    for hit in hits {
        let leaf = hit.event.leaf()?;
        if let Some(corr) = leaf.event().get("correlation_id").and_then(Value::as_str) {
            correlations.insert(corr.to_string());
        }
    }
    let wanted: std::collections::HashSet<u64> = hits.iter().map(|h| h.event.seq).collect();
    let mut previous = HashMap::new();
    for corr in correlations {
        let (chain, damage) = super::read_correlation(store, tenant, &corr)?;
        if let Some(why) = damage {
            return Err(veritrail_store::StoreError::Damaged(why).into());
        }
        for pair in chain.windows(2) {
            if wanted.contains(&pair[1].event.seq) {
                previous.insert(pair[1].event.seq, pair[0].event.leaf_hash);
            }
        }
    }
    Ok(previous)
}
