//! Queries: `GET /v1/events`, `GET /v1/events/{id}`, `GET /v1/correlations/{id}/timeline`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::format_time;
use veritrail_core::hash::to_b64;
use veritrail_core::query::Filter;
use veritrail_store::index::SortKey;
use veritrail_store::{Order, QuerySpec, StoredEvent};

use crate::problem::Problem;
use crate::{blocking, AppState, DEFAULT_TENANT};

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;

/// The JSON form of a stored event: the event's fields plus what the server added.
pub fn event_json(e: StoredEvent) -> Value {
    let ingested_at = e.leaf.get_str("ingested_at").to_string();
    let tenant = e.leaf.get_str("tenant").to_string();
    let mut v = e.leaf.into_event();
    v["seq"] = e.seq.into();
    v["ingested_at"] = ingested_at.into();
    v["tenant"] = tenant.into();
    v["leaf_hash"] = to_b64(&e.leaf_hash).into();
    v
}

/// Encodes a page position as an opaque cursor.
pub fn encode_cursor(k: SortKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", k.0, k.1))
}

fn decode_cursor(s: &str) -> Result<SortKey, Problem> {
    let bad = || Problem::bad_request("`cursor` is not a cursor returned by this API");
    let text =
        String::from_utf8(URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?).map_err(|_| bad())?;
    let (ts, seq) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        ts.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}

/// Paging parameters split from filter parameters.
struct Paging {
    order: Order,
    cursor: Option<SortKey>,
    limit: usize,
}

fn split_params(params: Vec<(String, String)>) -> Result<(Filter, Paging), Problem> {
    let mut paging = Paging {
        order: Order::Desc,
        cursor: None,
        limit: DEFAULT_LIMIT,
    };
    let mut filter = Filter::default();
    let now = chrono::Utc::now();
    for (name, value) in params {
        match name.as_str() {
            "order" => {
                paging.order = match value.as_str() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    _ => return Err(Problem::bad_request("`order` must be `asc` or `desc`")),
                }
            }
            "cursor" => paging.cursor = Some(decode_cursor(&value)?),
            "limit" => {
                paging.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        Problem::bad_request(format!("`limit` must be from 1 to {MAX_LIMIT}"))
                    })?
            }
            _ => filter
                .add(&name, &value, now)
                .map_err(|e| Problem::bad_request(e.to_string()))?,
        }
    }
    Ok((filter, paging))
}

async fn run_query(
    state: &AppState,
    filter: Filter,
    paging: Paging,
) -> Result<(Vec<Value>, Option<String>), Problem> {
    let store = state.store.clone();
    let started = Instant::now();
    let page = blocking(move || {
        let spec = QuerySpec {
            filter: &filter,
            order: paging.order,
            cursor: paging.cursor,
            limit: paging.limit,
        };
        store.query(DEFAULT_TENANT, &spec).map_err(Problem::from)
    })
    .await?;
    metrics::histogram!("veritrail_query_seconds").record(started.elapsed().as_secs_f64());
    Ok((
        page.events.into_iter().map(event_json).collect(),
        page.next_cursor.map(encode_cursor),
    ))
}

/// `GET /v1/events`.
pub async fn list_events(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Problem> {
    let (filter, paging) = split_params(params)?;
    let (events, next_cursor) = run_query(&state, filter, paging).await?;
    Ok(Json(json!({"events": events, "next_cursor": next_cursor})))
}

/// `GET /v1/events/{event_id}`.
pub async fn get_event(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id =
        Uuid::try_parse(&id).map_err(|_| Problem::bad_request(format!("`{id}` is not a UUID")))?;
    let store = state.store.clone();
    let found = blocking(move || store.get(DEFAULT_TENANT, &id).map_err(Problem::from)).await?;
    found
        .map(|e| Json(event_json(e)))
        .ok_or_else(|| Problem::not_found(format!("no event with id {id}")))
}

/// `GET /v1/correlations/{id}/timeline`: the operation's events oldest first, with the time
/// elapsed since the previous event.
pub async fn timeline(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Problem> {
    let (mut filter, mut paging) = split_params(params)?;
    if filter.exact("correlation_id").is_some() {
        return Err(Problem::bad_request(
            "the correlation id is given in the path",
        ));
    }
    filter.exact.push(("correlation_id".into(), id.clone()));
    paging.order = Order::Asc;
    if paging.limit == DEFAULT_LIMIT {
        paging.limit = MAX_LIMIT;
    }
    let (mut events, next_cursor) = run_query(&state, filter, paging).await?;
    let mut previous: Option<chrono::DateTime<chrono::Utc>> = None;
    for e in &mut events {
        let t = e["event_timestamp"]
            .as_str()
            .and_then(veritrail_core::event::parse_time);
        e["since_previous_ms"] = match (previous, t) {
            (Some(p), Some(t)) => json!((t - p).num_microseconds().unwrap_or(0) as f64 / 1000.0),
            _ => Value::Null,
        };
        previous = t.or(previous);
    }
    Ok(Json(
        json!({"correlation_id": id, "count": events.len(), "events": events, "next_cursor": next_cursor}),
    ))
}

/// `GET /v1/producers[?producer_id=…]`: each producer's `producer_seq` state as the log shows it:
/// gaps (events missing between the ones received), late events and when it was last seen.
pub async fn producers(
    State(state): State<Arc<AppState>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, Problem> {
    let mut only = None;
    for (k, v) in params {
        match k.as_str() {
            "producer_id" => only = Some(v),
            _ => {
                return Err(Problem::bad_request(format!(
                    "unknown parameter `{k}`; only `producer_id` is accepted"
                )))
            }
        }
    }
    let store = state.store.clone();
    let all = blocking(move || store.producers(DEFAULT_TENANT).map_err(Problem::from)).await?;
    let list: Vec<Value> = all
        .into_iter()
        .filter(|p| only.as_ref().is_none_or(|id| *id == p.producer_id))
        .map(|p| {
            let last_seen =
                chrono::DateTime::from_timestamp_micros(p.last_seen_us).map(|t| format_time(&t));
            json!({
                "producer_id": p.producer_id,
                "first_seq": p.first_seq,
                "last_seq": p.last_seq,
                "last_seen": last_seen,
                "events": p.events,
                "missing": p.missing,
                "late": p.late,
                "gaps": p.gaps.iter().map(|(a, b)| json!({"from": a, "to": b})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "producers": list })))
}
