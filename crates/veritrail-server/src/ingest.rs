//! `POST /v1/events`: one event, a JSON array, or NDJSON; atomic; acknowledged after fsync.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::{Event, EventInput};
use veritrail_core::hash::to_b64;

use crate::access::Caller;
use crate::problem::Problem;
use crate::AppState;

/// Handles an ingest request.
pub async fn post_events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let started = Instant::now();
    let result = ingest(&state, &caller, &headers, body).await;
    match &result {
        Ok((n, _)) => {
            metrics::counter!("veritrail_ingest_requests_total").increment(1);
            metrics::counter!("veritrail_ingest_events_total").increment(*n as u64);
            metrics::histogram!("veritrail_ingest_seconds").record(started.elapsed().as_secs_f64());
        }
        Err(p) => metrics::counter!("veritrail_rejects_total", "reason" => p.reason()).increment(1),
    }
    result.map(|(_, v)| Json(v))
}

async fn ingest(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<(usize, Value), Problem> {
    let (_admitted, media, bytes) = crate::admission::read_body(
        state,
        caller,
        headers,
        body,
        state.config.max_body_bytes,
        EVENT_MEDIA,
    )
    .await?;
    let max = state.config.max_events_per_request;
    let store = state.store.clone();
    let tenant = caller.tenant.clone();
    let person = caller.person().map(str::to_string);
    // Parsing, validation and the canonical bytes and hashes of the events take milliseconds
    // for a large batch: off the async workers, in parallel across requests.
    let (n, pending) = crate::blocking(move || {
        let values = split_body(&media, &bytes)?;
        if values.is_empty() {
            return Err(Problem::bad_request("the request holds no events"));
        }
        if values.len() > max {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too many events",
                format!(
                    "{} events in one request; at most {max} are allowed",
                    values.len()
                ),
            ));
        }
        let mut events = validate(values)?;
        attribute(person.as_deref(), &mut events);
        Ok((events.len(), store.append(&tenant, events)?))
    })
    .await?;
    let appended = durable(pending).await?;
    let receipts: Vec<Value> = appended
        .receipts
        .iter()
        .map(|r| {
            json!({"event_id": r.event_id, "seq": r.seq, "leaf_hash": to_b64(&r.leaf_hash), "duplicate": r.duplicate})
        })
        .collect();
    Ok((
        n,
        json!({"receipts": receipts, "tree_size": appended.tree_size}),
    ))
}

/// A person's key writes as that person, whatever the events claim (as Kubernaut does).
pub(crate) fn attribute(person: Option<&str>, events: &mut [Event]) {
    if let Some(person) = person {
        for e in events {
            e.actor_type = "user".into();
            e.actor_id = person.to_string();
        }
    }
}

/// Waits until a queued append is durable.
pub(crate) async fn durable(
    pending: veritrail_store::PendingAppend,
) -> Result<veritrail_store::Appended, Problem> {
    pending
        .await
        .map_err(|_| {
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Shutting down",
                "the writer stopped before this request was durable; retry",
            );
            p.retry_after_s = Some(5);
            p
        })?
        .map_err(Problem::from)
}

/// Appends `events` for `caller` (atomically, attributed as [`attribute`] says) and waits until
/// they are durable. The receipts are in the order of `events`.
pub(crate) async fn append_as(
    state: &AppState,
    caller: &Caller,
    mut events: Vec<Event>,
) -> Result<veritrail_store::Appended, Problem> {
    attribute(caller.person(), &mut events);
    append(state, caller, events).await
}

/// Appends `events` for `caller`'s tenant as they are and waits until they are durable.
pub(crate) async fn append(
    state: &AppState,
    caller: &Caller,
    events: Vec<Event>,
) -> Result<veritrail_store::Appended, Problem> {
    let store = state.store.clone();
    let tenant = caller.tenant.clone();
    let pending =
        crate::blocking(move || store.append(&tenant, events).map_err(Problem::from)).await?;
    durable(pending).await
}

/// Media types `POST /v1/events` takes: one event or an array, or one event per line.
const EVENT_MEDIA: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
];

/// Splits the body into events according to its media type.
fn split_body(media: &str, bytes: &[u8]) -> Result<Vec<EventInput>, Problem> {
    match media {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| Problem::bad_request("the body is not UTF-8"))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    EventInput::from_slice(l.as_bytes()).map_err(|e| {
                        Problem::bad_request(format!("line {}: malformed JSON: {e}", i + 1))
                    })
                })
                .collect()
        }
        "application/json" => veritrail_core::event::events_from_slice(bytes)
            .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}"))),
        other => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            format!("`{other}` is not accepted; send application/json or application/x-ndjson"),
        )),
    }
}

/// The prefix of the event types only the server writes (access events, holds, policies), so that
/// a reader can trust an event of such a type to be the server's own.
pub const RESERVED_TYPES: &str = "veritrail.";

/// Validates every event; on failure names every bad field of every bad event.
fn validate(inputs: Vec<EventInput>) -> Result<Vec<Event>, Problem> {
    let mut events = Vec::with_capacity(inputs.len());
    let mut errors = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        let fresh_id = !input.has_event_id();
        match Event::from_input(input, Uuid::now_v7).map(|e| Event { fresh_id, ..e }) {
            Ok(e)
                if e.producer_id
                    .as_deref()
                    .is_some_and(crate::kubernaut::reserved) =>
            {
                errors.push(json!({"index": i, "field": "producer_id",
                    "message": "is reserved for records the server writes itself (the Kubernaut API, its notifications, legal holds)"}));
            }
            Ok(e) if e.event_type.starts_with(RESERVED_TYPES) => {
                errors.push(json!({"index": i, "field": "event_type",
                    "message": "is reserved: `veritrail.` types are the server's own records (access, holds, retention)"}));
            }
            Ok(e) => events.push(e),
            Err(err) => {
                for f in err.0 {
                    errors.push(json!({"index": i, "field": f.field, "message": f.message}));
                }
            }
        }
    }
    if errors.is_empty() {
        return Ok(events);
    }
    let first = &errors[0];
    let detail = format!(
        "event {} is invalid: `{}` {}{}; nothing was stored",
        first["index"],
        first["field"].as_str().unwrap_or(""),
        first["message"].as_str().unwrap_or(""),
        if errors.len() > 1 {
            format!(" (and {} more problems, see `errors`)", errors.len() - 1)
        } else {
            String::new()
        }
    );
    Err(Problem::bad_request(detail).with("errors", Value::Array(errors)))
}
