//! Kubernaut's DataStorage audit API, drop-in: `POST /api/v1/audit/events`,
//! `POST /api/v1/audit/events/batch`, `GET /api/v1/audit/events`, verify-chain, export,
//! notifications and reconstruction, with that API's request checks, status codes and answers.
//!
//! A Kubernaut request is a Veritrail event with stricter rules (its OpenAPI description's
//! `AuditEventRequest`): `version`, `correlation_id` and `event_data` are required,
//! `event_category` is one of its domains, `event_data.event_type` must repeat `event_type` and be
//! one of the event types it knows, and the event time must be recent. What passes is stored as an
//! ordinary event (the native API, proofs and exports see it) with `producer_id` [`PRODUCER`], and
//! Kubernaut's readers see only such events: its client decodes `event_data` by its
//! `event_type`, so one event it does not know would fail a whole page. Events sent without an id
//! get one derived from the request and their place in it
//! ([`veritrail_core::event::request_ids`]), so that the client's re-sends of a batch whose
//! answer was lost store nothing twice, while equal events (its timestamps have whole seconds)
//! stay distinct. Overload is 503 with `Retry-After` here, never
//! 429: the client drops a batch on any 4xx but 401 and 403. `docs/kubernaut.md` lists every
//! route and each difference from Kubernaut's own service.

pub mod chain;
pub mod event_types;
pub mod export;
pub mod holds;
pub mod notifications;
pub mod reconstruct;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::{format_time, Event};
use veritrail_core::query::Filter;
use veritrail_store::{Hit, Order, Store, StoreError, WindowSpec};

use crate::access::Caller;
use crate::problem::{Problem, QueryPairs};
use crate::AppState;

/// The `producer_id` of every event written through this API: what its readers select.
pub const PRODUCER: &str = "kubernaut";

/// Producer ids the native API refuses, so that nothing but the server writes into the events
/// readers rely on: this API's own, the notification records', and the lifecycle's (legal holds,
/// `veritrail_core::hold`; retention policies, `veritrail_core::retention`).
pub fn reserved(producer_id: &str) -> bool {
    producer_id == PRODUCER
        || producer_id == notifications::PRODUCER
        || producer_id == veritrail_core::hold::PRODUCER
        || producer_id == veritrail_core::retention::PRODUCER
}

/// A filter that selects what this API's readers may see: events it wrote.
pub(crate) fn own_events() -> Filter {
    Filter {
        exact: vec![("producer_id".to_string(), PRODUCER.to_string())],
        ..Filter::default()
    }
}
/// How far ahead of the server's clock an event time may be.
const MAX_AHEAD: Duration = Duration::minutes(60);
/// How far behind the server's clock an event time may be.
const MAX_AGE: Duration = Duration::days(7);

/// `event_category` values the API accepts.
pub const CATEGORIES: [&str; 14] = [
    "gateway",
    "notification",
    "analysis",
    "aiagent",
    "signalprocessing",
    "workflow",
    "workflowexecution",
    "orchestration",
    "approval",
    "effectiveness",
    "actiontype",
    "apifrontend",
    "security",
    "agentsession",
];

/// The first problem of one request event, as Kubernaut's API words it.
fn check(v: &Value, now: DateTime<Utc>) -> Result<Event, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "must be a JSON object".to_string())?;
    let text = |name: &str| obj.get(name).and_then(Value::as_str);
    for name in [
        "version",
        "event_type",
        "event_timestamp",
        "event_category",
        "event_action",
        "event_outcome",
        "correlation_id",
        "event_data",
    ] {
        if obj.get(name).is_none_or(Value::is_null) {
            return Err(format!("`{name}` is required"));
        }
    }
    for (name, max) in [
        ("version", 20),
        ("event_type", 100),
        ("event_category", 50),
        ("event_action", 50),
        ("correlation_id", 255),
    ] {
        match text(name) {
            Some(s) if !s.is_empty() && s.chars().count() <= max => {}
            _ => {
                return Err(format!(
                    "`{name}` must be a string of 1 to {max} characters"
                ))
            }
        }
    }
    let category = text("event_category").unwrap_or_default();
    if !CATEGORIES.contains(&category) {
        return Err(format!(
            "`event_category` must be one of {}; got `{category}`",
            CATEGORIES.join(", ")
        ));
    }
    let event_type = text("event_type").unwrap_or_default();
    let data_type = obj["event_data"].get("event_type").and_then(Value::as_str);
    if !obj["event_data"].is_object() {
        return Err("`event_data` must be an object".into());
    }
    if data_type != Some(event_type) {
        return Err(format!(
            "`event_data.event_type` must equal `event_type` (`{event_type}`)"
        ));
    }
    if !event_types::known(event_type) {
        return Err(format!(
            "`event_type` `{event_type}` is not an event type of this API"
        ));
    }
    // Kubernaut's clients send optional strings as "" when unset (its schema sets no minimum
    // length on them): that is absent, not an empty value.
    let mut v = v.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|_, value| value.as_str() != Some(""));
    }
    let mut event = Event::from_json_owned(v, Uuid::nil).map_err(|e| {
        e.0.first()
            .map(|f| format!("`{}` {}", f.field, f.message))
            .unwrap_or_else(|| e.to_string())
    })?;
    // Whatever the request says: these fields say which API wrote the event.
    event.producer_id = Some(PRODUCER.to_string());
    event.producer_seq = None;
    if event.event_timestamp > now + MAX_AHEAD {
        return Err("`event_timestamp` is more than 60 minutes in the future".into());
    }
    if event.event_timestamp < now - MAX_AGE {
        return Err("`event_timestamp` is more than 7 days old".into());
    }
    Ok(event)
}

fn bad(detail: String) -> Problem {
    Problem::bad_request(detail)
}

/// Reads a JSON request body of at most `max_body_bytes` through the admission gate.
pub(crate) async fn read_json(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<(crate::admission::Admitted, axum::body::Bytes), Problem> {
    let limit = state.config.max_body_bytes;
    crate::admission::read_json(state, caller, headers, body, limit).await
}

/// Parses the body strictly (repeated keys refused), as the native API does.
fn parse(body: &[u8]) -> Result<Value, Problem> {
    veritrail_core::json::from_slice(body).map_err(|e| bad(format!("malformed JSON: {e}")))
}

/// Every event this API wrote with correlation id `corr`, in log order, each read back verified.
/// A record that fails its checks ends the read: why comes back beside what was read before it.
pub(crate) fn read_correlation(
    store: &dyn Store,
    tenant: &str,
    corr: &str,
) -> Result<(Vec<Hit>, Option<String>), Problem> {
    let mut filter = own_events();
    filter
        .add("correlation_id", corr, Utc::now())
        .map_err(|e| bad(e.to_string()))?;
    let mut hits = Vec::new();
    let read = crate::read::each_page(store, tenant, &filter, |page| {
        hits.extend(page);
        Ok::<_, StoreError>(())
    });
    let damage = match read {
        Ok(()) => None,
        Err(StoreError::Damaged(why)) => Some(why),
        Err(e) => return Err(e.into()),
    };
    hits.sort_by_key(|h| h.event.seq);
    Ok((hits, damage))
}

/// Checks request events, attributes them to `caller` and gives each event sent without an id
/// its request id ([`veritrail_core::event::request_ids`], after attribution: what is stored is
/// what is hashed).
fn prepare(caller: &Caller, items: &[Value], now: DateTime<Utc>) -> Result<Vec<Event>, Problem> {
    let batch = items.len() > 1;
    let mut events = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        let event = check(v, now).map_err(|why| match batch {
            true => bad(format!("event at index {i}: {why}")),
            false => bad(why),
        })?;
        events.push(event);
    }
    crate::ingest::attribute(caller.person(), &mut events);
    let ids = veritrail_core::event::request_ids(&caller.tenant, &events)
        .map_err(|err| bad(format!("`event_data` {err}")))?;
    for (e, id) in events.iter_mut().zip(ids) {
        if e.event_id.is_nil() {
            e.event_id = id;
        }
    }
    Ok(events)
}

/// Parses, checks and stores the events of one request (off the async workers: a batch of a
/// thousand takes milliseconds) and waits until they are durable. Also gives the first event's
/// time, which the single-event answer repeats.
async fn store_events(
    state: &AppState,
    caller: &Caller,
    bytes: axum::body::Bytes,
    batch: bool,
) -> Result<(veritrail_store::Appended, DateTime<Utc>), Problem> {
    let max = state.config.max_events_per_request;
    let (store, who) = (state.store.clone(), caller.clone());
    let pending = crate::blocking(move || {
        let items = match (parse(&bytes)?, batch) {
            (Value::Array(items), true) => items,
            (_, true) => return Err(bad("the body must be a JSON array of events".into())),
            (Value::Array(_), false) => {
                return Err(bad(
                    "send one event object here; arrays go to /api/v1/audit/events/batch".into(),
                ))
            }
            (v, false) => vec![v],
        };
        if items.is_empty() {
            return Err(bad("the batch is empty".into()));
        }
        if items.len() > max {
            return Err(bad(format!(
                "the batch holds {} events; at most {max} are allowed",
                items.len()
            )));
        }
        let events = prepare(&who, &items, Utc::now())?;
        let first = events
            .first()
            .map(|e| e.event_timestamp)
            .unwrap_or_default();
        Ok((store.append(&who.tenant, events)?, first))
    })
    .await?;
    let (pending, first) = pending;
    Ok((crate::ingest::durable(pending).await?, first))
}

/// The receipt of a one-event append.
fn first_receipt(
    appended: &veritrail_store::Appended,
) -> Result<&veritrail_store::Receipt, Problem> {
    appended.receipts.first().ok_or_else(|| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No receipt",
            "the store answered without a receipt",
        )
    })
}

/// `POST /api/v1/audit/events` → 201 `{event_id, event_timestamp, message}`.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let (_admitted, bytes) = read_json(&state, &caller, &headers, body).await?;
    let (appended, time) = store_events(&state, &caller, bytes, false).await?;
    let receipt = first_receipt(&appended)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "event_id": receipt.event_id,
            "event_timestamp": format_time(&time),
            "message": if receipt.duplicate { "audit event already recorded" } else { "audit event created" },
        })),
    ))
}

/// `POST /api/v1/audit/events/batch` (a JSON array, atomic) → 201 `{event_ids, message}` with
/// the ids in input order.
pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let (_admitted, bytes) = read_json(&state, &caller, &headers, body).await?;
    let (appended, _) = store_events(&state, &caller, bytes, true).await?;
    let ids: Vec<_> = appended.receipts.iter().map(|r| r.event_id).collect();
    let repeated = appended.receipts.iter().filter(|r| r.duplicate).count();
    let message = match repeated {
        0 => format!("{} audit events created", ids.len()),
        n => format!(
            "{} audit events created, {n} already recorded",
            ids.len() - n
        ),
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": message, "event_ids": ids})),
    ))
}

/// Kubernaut's client drops a batch on any 4xx but 401 and 403, and retries 5xx: overload on its
/// paths (a full write queue, 429 on the native API) is answered 503 with the same
/// `Retry-After`.
pub async fn overload_as_unavailable(resp: Response) -> Response {
    if resp.status() != StatusCode::TOO_MANY_REQUESTS {
        return resp;
    }
    let retry = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut p = Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Overloaded",
        format!("the write queue is full; retry in {retry} s"),
    );
    p.retry_after_s = Some(retry);
    p.into_response()
}

/// Default page size of `GET /api/v1/audit/events`.
const DEFAULT_LIMIT: usize = 50;
/// Largest page.
const MAX_LIMIT: usize = 1000;

/// The query parameters of `GET /api/v1/audit/events` as a filter, a limit and an offset.
fn query_params(
    params: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<(Filter, usize, u64), Problem> {
    let mut filter = own_events();
    let (mut limit, mut offset) = (DEFAULT_LIMIT, 0u64);
    let (mut detail_key, mut detail_value) = (None, None);
    for (name, value) in params {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad(format!("`limit` must be from 1 to {MAX_LIMIT}")))?
            }
            "offset" => {
                offset = value
                    .parse()
                    .map_err(|_| bad("`offset` must be a whole number, 0 or more".into()))?
            }
            "event_outcome" if !["success", "failure", "pending"].contains(&value.as_str()) => {
                return Err(bad(
                    "`event_outcome` must be success, failure or pending".into()
                ))
            }
            "detail_key" => {
                if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(bad(
                        "`detail_key` must be letters, digits and underscores".into()
                    ));
                }
                detail_key = Some(value.clone());
            }
            "detail_value" => detail_value = Some(value.clone()),
            "event_type" | "event_category" | "event_outcome" | "severity" | "correlation_id"
            | "since" | "until" => filter
                .add(name, value, now)
                .map_err(|e| bad(e.to_string()))?,
            other => return Err(bad(format!("unknown parameter `{other}`"))),
        }
    }
    match (detail_key, detail_value) {
        (Some(k), Some(v)) => filter
            .add(&format!("data.{k}"), &v, now)
            .map_err(|e| bad(e.to_string()))?,
        (None, None) => {}
        _ => return Err(bad("`detail_key` and `detail_value` go together".into())),
    }
    Ok((filter, limit, offset))
}

/// `GET /api/v1/audit/events`: newest first, `{data, pagination{limit, offset, total, has_more}}`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryPairs(params): QueryPairs,
) -> Result<axum::response::Response, Problem> {
    let (filter, limit, offset) = query_params(&params, Utc::now())?;
    let pairs = filter.to_pairs();
    let (inner, tenant) = (state.clone(), caller.tenant.clone());
    let (window, holds) = crate::blocking(move || {
        let spec = WindowSpec {
            filter: &filter,
            order: Order::Desc,
            offset,
            limit,
        };
        let window = inner.store.query_window(&tenant, &spec)?;
        Ok((window, inner.holds.get(inner.store.as_ref(), &tenant)?))
    })
    .await?;
    let details = json!({
        "filters": crate::proofs::pairs_json(&pairs),
        "offset": offset,
        "results": window.events.len(),
        "total": window.total,
    });
    crate::access::record(&state, &caller, "access.query", details).await?;
    let mut data = Vec::with_capacity(window.events.len());
    for hit in &window.events {
        let date = chrono::DateTime::from_timestamp_micros(hit.key.0)
            .map(|t| format!("\"{}\"", t.format("%Y-%m-%d")))
            .unwrap_or_else(|| "null".into());
        let held = crate::holds::kubernaut_members_of(&holds, &hit.event)?;
        let mut extra = vec![("event_date", date.as_str())];
        extra.extend(held.iter().map(|(n, v)| (*n, v.as_str())));
        data.push(crate::read::event_json(&hit.event, &extra)?);
    }
    let returned = data.len() as u64;
    let pagination = json!({
        "limit": limit,
        "offset": offset,
        "total": window.total,
        "has_more": offset.saturating_add(returned) < window.total,
    });
    Ok(crate::read::object_answer(&[
        ("data", &crate::read::array(&data)),
        ("pagination", &pagination.to_string()),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(now: DateTime<Utc>) -> Value {
        json!({
            "version": "1.0",
            "event_type": "gateway.signal.received",
            "event_timestamp": format_time(&now),
            "event_category": "gateway",
            "event_action": "received",
            "event_outcome": "success",
            "actor_type": "service",
            "actor_id": "gateway-service",
            "resource_type": "Signal",
            "resource_id": "fp-abc123",
            "correlation_id": "rr-2025-001",
            "namespace": null,
            "actor_ip": "",
            "event_data": {"event_type": "gateway.signal.received", "signal_name": "KubePodCrashLooping"}
        })
    }

    #[test]
    fn a_kubernaut_request_becomes_an_event() {
        let now = Utc::now();
        let e = check(&request(now), now).expect("valid");
        assert_eq!(e.event_type, "gateway.signal.received");
        assert_eq!(e.correlation_id.as_deref(), Some("rr-2025-001"));
        assert_eq!(e.namespace, None, "null is absent");
        assert_eq!(e.actor_ip, None, "an empty optional string is absent");
    }

    #[test]
    fn each_rule_of_the_api_is_enforced() {
        let now = Utc::now();
        type Change = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "`version` is required",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("version");
                }),
            ),
            (
                "`correlation_id` is required",
                Box::new(|v| v["correlation_id"] = Value::Null),
            ),
            (
                "`event_data` is required",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("event_data");
                }),
            ),
            (
                "`event_category` must be one of",
                Box::new(|v| v["event_category"] = json!("kitchen")),
            ),
            (
                "`event_data.event_type` must equal",
                Box::new(|v| v["event_data"]["event_type"] = json!("gateway.crd.created")),
            ),
            (
                "is not an event type of this API",
                Box::new(|v| {
                    v["event_type"] = json!("gateway.signal.invented");
                    v["event_data"]["event_type"] = json!("gateway.signal.invented");
                }),
            ),
            (
                "`event_type` must be a string of 1 to 100",
                Box::new(|v| v["event_type"] = json!("x".repeat(101))),
            ),
            (
                "`event_outcome`",
                Box::new(|v| v["event_outcome"] = json!("maybe")),
            ),
            (
                "in the future",
                Box::new(move |v| {
                    v["event_timestamp"] = json!(format_time(&(now + Duration::minutes(61))))
                }),
            ),
            (
                "7 days old",
                Box::new(move |v| {
                    v["event_timestamp"] = json!(format_time(&(now - Duration::days(8))))
                }),
            ),
        ];
        for (expected, change) in cases {
            let mut v = request(now);
            change(&mut v);
            let err = check(&v, now).expect_err(expected);
            assert!(err.contains(expected), "{expected}: got {err}");
        }
    }
}
