//! Proof endpoints: signed checkpoints, the verifier key, inclusion and consistency proofs, and
//! export bundles an auditor verifies offline.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::bundle::{self, ManifestEntry};
use veritrail_core::hash::to_b64;
use veritrail_core::query::Filter;

use crate::access::{self, Caller};
use crate::problem::{Problem, QueryPairs};
use crate::{blocking, AppState};

/// Axum's own rejection is plain text; every error of this API is a problem.
fn bad_query(e: QueryRejection) -> Problem {
    Problem::bad_request(e.body_text())
}

fn text(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
}

/// `GET /v1/checkpoint`: the latest signed checkpoint (C2SP signed note), fresh to the head.
/// Checkpoints are commitments meant to be published, so reading one leaves no access event.
pub async fn checkpoint(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, Problem> {
    let store = state.store.clone();
    let tenant = caller.tenant.clone();
    let cp = blocking(move || store.checkpoint(&tenant).map_err(Problem::from)).await?;
    crate::observe::record_checkpoint(&caller.tenant, &cp);
    Ok(text(cp.note))
}

/// `GET /v1/key`: the verifier key (C2SP vkey) of the caller's tenant's log, named after its
/// origin (`<origin prefix>/<tenant>`). It checks that tenant's checkpoints and export bundles,
/// and no other tenant's.
pub async fn key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, Problem> {
    Ok(text(format!(
        "{}\n",
        state.log_signer(&caller.tenant)?.vkey()
    )))
}

/// Query of `GET /v1/proof/inclusion`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    event_id: Option<String>,
    leaf_index: Option<u64>,
    tree_size: Option<u64>,
}

/// `GET /v1/proof/inclusion?event_id=…|leaf_index=…[&tree_size=…]`. Without `tree_size` the
/// proof is against the latest checkpoint that holds the leaf (a fresh one only when none
/// does), which is returned too.
pub async fn inclusion(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<InclusionQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q.map_err(bad_query)?;
    let (answer, pending) = blocking(move || {
        let (store, tenant) = (&state.store, &caller.tenant);
        let index = match (&q.event_id, q.leaf_index) {
            (Some(id), None) => {
                let id = Uuid::try_parse(id)
                    .map_err(|_| Problem::bad_request(format!("`{id}` is not a UUID")))?;
                store
                    .get(tenant, &id)?
                    .ok_or_else(|| Problem::not_found(format!("no event with id {id}")))?
                    .seq
            }
            (None, Some(i)) => i,
            _ => {
                return Err(Problem::bad_request(
                    "give exactly one of `event_id` and `leaf_index`",
                ))
            }
        };
        let (size, note) = match q.tree_size {
            Some(s) => (s, None),
            None => {
                let cp = store.checkpoint_covering(tenant, index.saturating_add(1))?;
                (cp.checkpoint.size, Some(cp.note))
            }
        };
        if index >= size {
            return Err(Problem::bad_request(format!(
                "leaf {index} is not in the tree of size {size}; ask again with a later tree_size"
            )));
        }
        within_log(store, tenant, size)?;
        // Its fsync overlaps the proof's reads.
        let details = json!({"proof": "inclusion", "leaf_index": index, "tree_size": size});
        let pending = access::queue_record(&state, &caller, "access.proof", details)?;
        let proof = store.inclusion_proof(tenant, index, size)?;
        let leaf_hash = store.leaf_hash(tenant, index)?;
        let answer = json!({
            "leaf_index": index,
            "tree_size": size,
            "leaf_hash": to_b64(&leaf_hash),
            "proof": proof.iter().map(to_b64).collect::<Vec<_>>(),
            "checkpoint": note,
        });
        Ok((answer, pending))
    })
    .await?;
    access::wait_recorded(pending).await?;
    Ok(Json(answer))
}

/// Refuses a tree size the log has not reached, before the read is recorded as an access event
/// (the proof would be refused the same way).
fn within_log(
    store: &Arc<dyn veritrail_store::Store>,
    tenant: &str,
    size: u64,
) -> Result<(), Problem> {
    Ok(veritrail_store::check_size(size, store.head(tenant)?.size)?)
}

/// Query of `GET /v1/proof/consistency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// `GET /v1/proof/consistency?from=…[&to=…]` (`to` defaults to the latest checkpoint).
pub async fn consistency(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    q: Result<Query<ConsistencyQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(q) = q.map_err(bad_query)?;
    let (answer, pending) = blocking(move || {
        let (store, tenant) = (&state.store, &caller.tenant);
        let (to, note) = match q.to {
            Some(t) => (t, None),
            None => {
                let cp = store.checkpoint_covering(tenant, q.from)?;
                (cp.checkpoint.size, Some(cp.note))
            }
        };
        if q.from > to {
            return Err(Problem::bad_request(format!(
                "`from` ({}) is larger than `to` ({to})",
                q.from
            )));
        }
        within_log(store, tenant, to)?;
        // Its fsync overlaps the proof's reads.
        let details = json!({"proof": "consistency", "from": q.from, "to": to});
        let pending = access::queue_record(&state, &caller, "access.proof", details)?;
        let proof = store.consistency_proof(tenant, q.from, to)?;
        let answer = json!({
            "from": q.from,
            "to": to,
            "proof": proof.iter().map(to_b64).collect::<Vec<_>>(),
            "checkpoint": note,
        });
        Ok((answer, pending))
    })
    .await?;
    access::wait_recorded(pending).await?;
    Ok(Json(answer))
}

/// `GET /v1/export?<filters>`: an NDJSON bundle (see `veritrail_core::bundle`) of every event
/// matching the filters in the tree of the latest checkpoint, with inclusion proofs and a signed
/// manifest of the leaves it holds, so that an auditor can verify it offline.
pub async fn export(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryPairs(params): QueryPairs,
) -> Result<impl IntoResponse, Problem> {
    let filter = Filter::from_pairs(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        chrono::Utc::now(),
    )
    .map_err(|e| Problem::bad_request(e.to_string()))?;
    let pairs = filter.to_pairs();
    let (inner, tenant) = (state.clone(), caller.tenant.clone());
    let (body, n, size) = blocking(move || build_bundle(&inner, &tenant, &filter)).await?;
    let details = json!({"filters": pairs_json(&pairs), "results": n, "tree_size": size});
    access::record(&state, &caller, "access.export", details).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body))
}

/// Filters as an access event states them.
pub fn pairs_json(pairs: &[(String, String)]) -> Value {
    Value::Array(pairs.iter().map(|(k, v)| json!([k, v])).collect())
}

/// The bundle, the number of events in it, and its tree size.
fn build_bundle(
    state: &AppState,
    tenant: &str,
    filter: &Filter,
) -> Result<(String, usize, u64), Problem> {
    let store = &state.store;
    let cp = store.checkpoint(tenant)?;
    let size = cp.checkpoint.size;
    let mut events = Vec::new();
    crate::read::each_page(store.as_ref(), tenant, filter, |page| {
        events.extend(page.into_iter().map(|h| h.event).filter(|e| e.seq < size));
        if events.len() > state.config.max_export_events {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Export too large",
                format!(
                    "more than {} events match; narrow the filters (e.g. since/until)",
                    state.config.max_export_events
                ),
            ));
        }
        Ok(())
    })?;
    events.sort_by_key(|e| e.seq);
    let pairs = filter.to_pairs();
    let entries: Vec<ManifestEntry> = events
        .iter()
        .map(|e| ManifestEntry {
            leaf_index: e.seq,
            leaf_hash: e.leaf_hash,
        })
        .collect();
    let bad = |e: bundle::BundleError| Problem::bad_request(e.to_string());
    let manifest = bundle::manifest_text(
        &cp.checkpoint.origin,
        size,
        &cp.checkpoint.root,
        &pairs,
        &entries,
    )
    .map_err(bad)?;
    let manifest_note = state.manifest_signer(&cp)?.sign(&manifest).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Signing failed",
            e.to_string(),
        )
    })?;
    let mut out = bundle::header_line(
        &cp.checkpoint.origin,
        size,
        events.len() as u64,
        &pairs,
        &cp.note,
        &manifest_note,
    )
    .map_err(bad)?;
    out.push('\n');
    for e in &events {
        let proof = store.inclusion_proof(tenant, e.seq, size)?;
        // The leaf exactly as stored and hashed, not a re-rendering of it.
        out.push_str(&bundle::event_line(
            e.seq,
            &e.leaf_hash,
            e.leaf()?.document(),
            &proof,
        ));
        out.push('\n');
    }
    Ok((out, events.len(), size))
}
