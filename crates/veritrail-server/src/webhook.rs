//! `POST /v1/ingest/kubernetes`: kube-apiserver's audit webhook backend.
//!
//! It sends `audit.k8s.io/v1` (or `v1beta1`) `EventList`s of up to 400 events and bodies up to
//! 10 MiB, and retries every answer but 2xx, so this handler answers as soon as the batch is
//! durable and makes retries harmless: each event's id is derived from (`auditID`, `stage`)
//! (`veritrail_core::k8s`), so a batch sent again stores nothing new.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{json, Value};

use crate::access::Caller;
use crate::problem::Problem;
use crate::AppState;

/// Largest webhook body (kube-apiserver's own limit for a batch).
pub const MAX_BODY_BYTES: usize = 10 << 20;

/// `POST /v1/ingest/kubernetes` → 200 `{"events", "stored", "repeated"}`.
pub async fn kubernetes(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let limit = MAX_BODY_BYTES.max(state.config.max_body_bytes);
    let (_admitted, bytes) =
        crate::admission::read_json(&state, &caller, &headers, body, limit).await?;
    let max = state.config.max_events_per_request;
    let events = crate::blocking(move || {
        let body = veritrail_core::json::from_slice(&bytes)
            .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
        let items = veritrail_core::k8s::events_of(&body).map_err(Problem::bad_request)?;
        if items.is_empty() {
            return Err(Problem::bad_request("the EventList holds no events"));
        }
        if items.len() > max {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too many events",
                format!(
                    "{} events in one request; at most {max} are allowed",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                veritrail_core::k8s::to_event(a)
                    .map_err(|why| Problem::bad_request(format!("event at index {i}: {why}")))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let appended = crate::ingest::append_as(&state, &caller, events).await?;
    let repeated = appended.receipts.iter().filter(|r| r.duplicate).count();
    Ok(Json(json!({
        "events": appended.receipts.len(),
        "stored": appended.receipts.len() - repeated,
        "repeated": repeated,
    })))
}
