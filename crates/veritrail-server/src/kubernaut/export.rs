//! Kubernaut's `GET /api/v1/audit/export`, in its JSON shape, signed the Veritrail way.
//!
//! Every exported event was read back verified and carries its leaf hash (`event_hash`), its
//! leaf index and its inclusion proof in the signed checkpoint of `export_metadata`; the
//! `signature` is a C2SP signed note (Ed25519, the log's key) over the manifest of exactly these
//! leaves, as in a native export bundle, so a dropped or added event is detectable offline.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Value};
use veritrail_core::bundle::{self, ManifestEntry};
use veritrail_core::event::format_time;
use veritrail_core::hash::to_b64;
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
        filter: Filter::default(),
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
    let mut events = Vec::with_capacity(window.events.len());
    let mut entries = Vec::with_capacity(window.events.len());
    for hit in &window.events {
        let e = &hit.event;
        let proof = store.inclusion_proof(tenant, e.seq, size)?;
        let proof_json = Value::from(proof.iter().map(to_b64).collect::<Vec<_>>()).to_string();
        let hash = format!("\"{}\"", to_b64(&e.leaf_hash));
        let text = crate::read::event_json(
            e,
            &[
                ("event_hash", &hash),
                ("hash_chain_valid", "true"),
                ("leaf_index", &e.seq.to_string()),
                ("inclusion_proof", &proof_json),
            ],
        )?;
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
    let pairs = q.filter.to_pairs();
    let internal = |m: String| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Export failed", m);
    let manifest = bundle::manifest_text(&cp.checkpoint.origin, size, &root, &pairs, &entries)
        .map_err(|e| internal(e.to_string()))?;
    let signature = state
        .signer
        .sign(&manifest)
        .map_err(|e| internal(e.to_string()))?;
    let now = format_time(&chrono::Utc::now());
    let n = events.len();
    let mut answer = json!({
        "export_metadata": {
            "export_timestamp": now,
            "export_format": "json",
            "query_filters": Value::Object(q.given),
            "total_events": n,
            "total_matching_events": window.total,
            "signature": signature,
            "signature_algorithm": "Ed25519 (C2SP signed note over the manifest of exported leaves)",
            "certificate_fingerprint": state.signer.vkey(),
            "exported_by": exported_by,
            "checkpoint": cp.note,
            "tree_size": size,
        },
        "events": events,
        "hash_chain_verification": {
            "total_events_verified": n,
            "valid_chain_events": n,
            "broken_chain_events": 0,
            "chain_integrity_percentage": 100.0,
            "verification_timestamp": now,
            "tampered_event_ids": [],
        },
    });
    if q.detached {
        answer["detached_signature"] = answer["export_metadata"]["signature"].clone();
    }
    Ok((answer, n))
}
