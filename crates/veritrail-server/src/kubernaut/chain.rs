//! Kubernaut's `POST /api/v1/audit/verify-chain`, answered from the Merkle log.
//!
//! Kubernaut verifies a hash chain per correlation id. Here every event the Kubernaut API wrote
//! with the correlation id is read back verified (checksum, and leaf hash against the tree) and
//! proven included in the latest signed checkpoint that covers it; the answer keeps Kubernaut's
//! shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use serde_json::{json, Value};
use veritrail_core::event::format_time;
use veritrail_core::hash::to_b64;
use veritrail_core::merkle;

use crate::access::Caller;
use crate::problem::Problem;
use crate::AppState;

/// `POST /api/v1/audit/verify-chain` with `{"correlation_id"}` → 200 with `is_valid`, counts and
/// the events that failed (also when some did: `is_valid: false`).
pub async fn verify_chain(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let (_admitted, bytes) = super::read_json(&state, &caller, &headers, body).await?;
    let req = veritrail_core::json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    // An empty id is allowed by the API's schema: no event has it, so nothing fails.
    let corr = req
        .get("correlation_id")
        .and_then(Value::as_str)
        .ok_or_else(|| Problem::bad_request("Field 'correlation_id' is required"))?
        .to_string();
    let (store, tenant, id) = (state.store.clone(), caller.tenant.clone(), corr.clone());
    let answer = crate::blocking(move || {
        let (events, damage) = super::read_correlation(store.as_ref(), &tenant, &id)?;
        // A record that fails its checks is reported, not served.
        let mut tampered: Vec<Value> = damage.into_iter().map(|why| json!({"message": why})).collect();
        let last = events.iter().map(|h| h.event.seq).max();
        let cp = match last {
            Some(seq) => Some(store.checkpoint_covering(&tenant, seq + 1)?),
            None => None,
        };
        let mut verified = 0u64;
        for hit in &events {
            let e = &hit.event;
            let Some(cp) = &cp else { break };
            let (size, root) = (cp.checkpoint.size, cp.checkpoint.root);
            let proof = store.inclusion_proof(&tenant, e.seq, size)?;
            match merkle::verify_inclusion(e.seq, size, &e.leaf_hash, &proof, &root) {
                Ok(()) => verified += 1,
                Err(why) => tampered.push(json!({
                    "event_id": e.leaf().ok().and_then(|l| l.event_id()).map(|u| u.to_string()),
                    "event_timestamp": chrono::DateTime::from_timestamp_micros(hit.key.0).map(|t| format_time(&t)),
                    "expected_hash": to_b64(&root),
                    "actual_hash": to_b64(&e.leaf_hash),
                    "message": format!("not included in the signed tree of size {size}: {why}"),
                })),
            }
        }
        let total = events.len() as u64 + tampered.iter().filter(|t| t["event_id"].is_null()).count() as u64;
        let valid = tampered.is_empty();
        let message = match (&cp, valid) {
            (_, false) => format!("{} of {total} events failed verification", tampered.len()),
            (Some(cp), true) => format!(
                "all {verified} events are intact and included in the signed checkpoint of size {}",
                cp.checkpoint.size
            ),
            (None, true) => "no events for this correlation id".to_string(),
        };
        Ok(json!({
            "correlation_id": id,
            "is_valid": valid,
            "total_events": total,
            "verified_events": verified,
            "tampered_events": tampered,
            "verification_time": format_time(&chrono::Utc::now()),
            "message": message,
        }))
    })
    .await?;
    let details =
        json!({"proof": "verify-chain", "correlation_id": corr, "results": answer["total_events"]});
    crate::access::record(&state, &caller, "access.proof", details).await?;
    Ok(Json(answer))
}
