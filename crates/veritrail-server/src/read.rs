//! Queries: `GET /v1/events`, `GET /v1/events/{id}`, `GET /v1/correlations/{id}/timeline`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::format_time;
use veritrail_core::query::Filter;
use veritrail_store::SortKey;
use veritrail_store::{Hit, Order, Page, QuerySpec, Store, StoreError, StoredEvent};

use crate::access::{self, Caller};
use crate::problem::{PathText, Problem, QueryPairs};
use crate::{blocking, AppState};

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;

/// The JSON form of a stored event: the event's fields plus what the server added, spliced from
/// the stored bytes (no `Value` built, no re-encoding, no second parse). The bytes matched the
/// tree's leaf hash, so they are the JSON validated at ingest, and the splice keeps them JSON.
pub fn event_json(e: &StoredEvent, extra: &[(&str, &str)]) -> Result<String, Problem> {
    let text = e.render(extra)?;
    debug_assert!(
        serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
        "rendered event is not JSON: {text}"
    );
    Ok(text)
}

/// A JSON object answer assembled from members that are JSON text already (name, JSON text).
pub(crate) fn object_answer(members: &[(&str, &str)]) -> Response {
    let mut body = String::with_capacity(members.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    body.push('{');
    for (i, (name, value)) in members.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Member names are this module's own literals: plain ASCII, nothing to escape.
        body.push('"');
        body.push_str(name);
        body.push_str("\":");
        body.push_str(value);
    }
    body.push('}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON array of JSON texts.
pub(crate) fn array(items: &[String]) -> String {
    let mut out = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out.push(']');
    out
}

/// A cursor member's JSON text.
fn cursor_json(next: Option<SortKey>) -> String {
    next.map_or_else(|| "null".into(), |k| format!("\"{}\"", encode_cursor(k)))
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

/// Runs one page of a query for `caller` and records the access event that says so.
async fn run_query(
    state: &AppState,
    caller: &Caller,
    filter: Filter,
    paging: Paging,
) -> Result<Page, Problem> {
    let store = state.store.clone();
    let started = Instant::now();
    let tenant = caller.tenant.clone();
    let pairs = filter.to_pairs();
    let details =
        |results: usize| json!({"filters": crate::proofs::pairs_json(&pairs), "results": results});
    let (filter, query_store, query_tenant) = (Arc::new(filter), store.clone(), tenant.clone());
    let keys_filter = filter.clone();
    // When the index alone answers the query, the count is known before any record is read: the
    // access event's fsync then runs while the records are read and verified.
    let keys = blocking(move || {
        let spec = QuerySpec {
            filter: &keys_filter,
            order: paging.order,
            cursor: paging.cursor,
            limit: paging.limit,
        };
        query_store
            .query_keys(&query_tenant, &spec)
            .map_err(Problem::from)
    })
    .await?;
    let page = match keys {
        Some(found) => {
            let pending =
                access::queue_record(state, caller, "access.query", details(found.keys.len()))?;
            let next_cursor = found.next_cursor;
            let events =
                blocking(move || store.read_keys(&tenant, &found.keys).map_err(Problem::from))
                    .await?;
            access::wait_recorded(pending).await?;
            Page {
                events,
                next_cursor,
            }
        }
        None => {
            let page = blocking(move || {
                let spec = QuerySpec {
                    filter: &filter,
                    order: paging.order,
                    cursor: paging.cursor,
                    limit: paging.limit,
                };
                store.query(&tenant, &spec).map_err(Problem::from)
            })
            .await?;
            access::record(state, caller, "access.query", details(page.events.len())).await?;
            page
        }
    };
    metrics::histogram!("veritrail_query_seconds").record(started.elapsed().as_secs_f64());
    Ok(page)
}

/// `GET /v1/events`.
pub async fn list_events(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryPairs(params): QueryPairs,
) -> Result<Response, Problem> {
    let (filter, paging) = split_params(params)?;
    let page = run_query(&state, &caller, filter, paging).await?;
    let events: Vec<String> = page
        .events
        .iter()
        .map(|h| event_json(&h.event, &[]))
        .collect::<Result<_, _>>()?;
    Ok(object_answer(&[
        ("events", &array(&events)),
        ("next_cursor", &cursor_json(page.next_cursor)),
    ]))
}

/// `GET /v1/events/{event_id}`.
pub async fn get_event(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathText(id): PathText,
) -> Result<Response, Problem> {
    let id =
        Uuid::try_parse(&id).map_err(|_| Problem::bad_request(format!("`{id}` is not a UUID")))?;
    let store = state.store.clone();
    let tenant = caller.tenant.clone();
    let found = blocking(move || store.get(&tenant, &id).map_err(Problem::from)).await?;
    let details = json!({"event_id": id, "results": usize::from(found.is_some())});
    access::record(&state, &caller, "access.query", details).await?;
    let e = found.ok_or_else(|| Problem::not_found(format!("no event with id {id}")))?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        event_json(&e, &[])?,
    )
        .into_response())
}

/// `GET /v1/correlations/{id}/timeline`: the operation's events oldest first, with the time
/// elapsed since the previous event (`since_previous_ms`).
pub async fn timeline(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathText(id): PathText,
    QueryPairs(params): QueryPairs,
) -> Result<Response, Problem> {
    let (mut filter, mut paging) = split_params(params)?;
    if filter.exact("correlation_id").is_some() {
        return Err(Problem::bad_request(
            "the correlation id is given in the path",
        ));
    }
    filter
        .add("correlation_id", &id, chrono::Utc::now())
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    paging.order = Order::Asc;
    if paging.limit == DEFAULT_LIMIT {
        paging.limit = MAX_LIMIT;
    }
    let page = run_query(&state, &caller, filter, paging).await?;
    let mut previous: Option<i64> = None;
    let mut events = Vec::with_capacity(page.events.len());
    for h in &page.events {
        let since = previous.map_or_else(
            || "null".to_string(),
            |p| ((h.key.0 - p) as f64 / 1000.0).to_string(),
        );
        events.push(event_json(&h.event, &[("since_previous_ms", &since)])?);
        previous = Some(h.key.0);
    }
    let id_json = Value::String(id).to_string();
    Ok(object_answer(&[
        ("correlation_id", &id_json),
        ("count", &events.len().to_string()),
        ("events", &array(&events)),
        ("next_cursor", &cursor_json(page.next_cursor)),
    ]))
}

/// `GET /v1/producers[?producer_id=…]`: each producer's `producer_seq` state as the log shows it:
/// gaps (events missing between the ones received), late events and when it was last seen.
pub async fn producers(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryPairs(params): QueryPairs,
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
    let tenant = caller.tenant.clone();
    let all = blocking(move || store.producers(&tenant).map_err(Problem::from)).await?;
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
    let details = json!({"producers": only, "results": list.len()});
    access::record(&state, &caller, "access.producers", details).await?;
    Ok(Json(json!({ "producers": list })))
}

/// Every page of a query's results, oldest first, handed to `page` as it is read (the whole of
/// an export, a correlation, the lifecycle's records). Stops at the first error, the store's or
/// `page`'s; what `page` was handed before it stays handed.
pub(crate) fn each_page<E: From<StoreError>>(
    store: &dyn Store,
    tenant: &str,
    filter: &Filter,
    mut page: impl FnMut(Vec<Hit>) -> Result<(), E>,
) -> Result<(), E> {
    let mut cursor = None;
    loop {
        let spec = QuerySpec {
            filter,
            order: Order::Asc,
            cursor,
            limit: 1000,
        };
        let found = store.query(tenant, &spec)?;
        page(found.events)?;
        match found.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}
