//! Kubernaut's legal-hold routes, `POST` and `GET /api/v1/audit/legal-hold` and
//! `DELETE /api/v1/audit/legal-hold/{correlation_id}`, in its shapes, over the holds of
//! [`crate::holds`].
//!
//! Kubernaut knows one kind of hold, every event of one correlation id, and sets it as a flag on
//! the rows that exist when it is placed. Here the hold is a filter in the log: events of the
//! correlation that arrive after it are held too. Placing a second hold on a correlation adds
//! one (each with its reason); releasing a correlation releases all of its holds. The list shows
//! the holds of that kind only; holds placed through `/v1/holds` by other filters are not in it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use chrono::Utc;
use serde_json::{json, Value};
use veritrail_core::event::format_time;
use veritrail_core::hold::Hold;
use veritrail_core::query::Filter;

use crate::access::Caller;
use crate::holds::{covered, list, place, read_body, reason, release};
use crate::problem::{PathText, Problem};
use crate::{blocking, AppState};

/// The longest name accepted in the user headers.
const MAX_USER_CHARS: usize = 256;

/// Who acts, for `placed_by` and `released_by`: the user the authenticating proxy names
/// (`X-Auth-Request-User`, or `X-User-ID` as the route descriptions of Kubernaut's API call it),
/// else the caller's key. The key is what this server authenticated; the header is recorded
/// beside it, as the hold event's actor stays the key.
fn acting_user(headers: &HeaderMap, caller: &Caller) -> Result<String, Problem> {
    for name in ["x-auth-request-user", "x-user-id"] {
        if let Some(v) = headers.get(name) {
            let text = v
                .to_str()
                .ok()
                .filter(|t| !t.trim().is_empty() && t.chars().count() <= MAX_USER_CHARS)
                .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "the `{name}` header must be visible text of 1 to {MAX_USER_CHARS} characters"
                    ))
                })?;
            return Ok(text.to_string());
        }
    }
    Ok(caller.actor().1)
}

fn correlation_filter(corr: &str) -> Result<Filter, Problem> {
    let mut filter = Filter::default();
    filter
        .add("correlation_id", corr, Utc::now())
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    Ok(filter)
}

/// `POST /api/v1/audit/legal-hold` with `{correlation_id, reason}` → 200 with
/// `{correlation_id, events_affected, placed_by, placed_at, reason}`; 404 when no event has the
/// correlation id yet (Kubernaut's rule; `/v1/holds` may hold a correlation before its events).
pub async fn place_hold(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let by = acting_user(&headers, &caller)?;
    let body = read_body(&state, &caller, &headers, body).await?;
    let corr = body
        .get("correlation_id")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Problem::bad_request("Field 'correlation_id' is required"))?
        .to_string();
    let reason = reason(&body, "reason")?;
    let filter = correlation_filter(&corr)?;
    let (store, tenant, f) = (state.store.clone(), caller.tenant.clone(), filter.clone());
    let events = blocking(move || covered(store.as_ref(), &tenant, &f)).await?;
    if events == 0 {
        return Err(Problem::not_found(format!(
            "no audit event has correlation_id `{corr}`"
        )));
    }
    let hold = place(&state, &caller, filter, reason, by).await?;
    Ok(Json(json!({
        "correlation_id": corr,
        "events_affected": events,
        "placed_by": hold.placed.by,
        "placed_at": format_time(&hold.placed.at),
        "reason": hold.placed.reason,
    })))
}

/// `GET /api/v1/audit/legal-hold` → `{holds, total}`: the active holds on one correlation id.
pub async fn list_holds(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, Problem> {
    let pick = |h: &Hold| h.is_active() && h.correlation().is_some();
    let row = |h: &Hold, events: Option<u64>| {
        json!({
            "correlation_id": h.correlation(),
            "events_affected": events,
            "placed_by": h.placed.by,
            "placed_at": format_time(&h.placed.at),
            "reason": h.placed.reason,
        })
    };
    list(&state, &caller, pick, row).await
}

/// `DELETE /api/v1/audit/legal-hold/{correlation_id}` with `{release_reason}` → 200 with
/// `{correlation_id, events_released, released_by, released_at}`; 404 when the correlation id has
/// no active hold.
pub async fn release_hold(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathText(corr): PathText,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let by = acting_user(&headers, &caller)?;
    let body = read_body(&state, &caller, &headers, body).await?;
    let reason = reason(&body, "release_reason")?;
    let filter = correlation_filter(&corr)?;
    let on_it = |h: &Hold| h.correlation() == Some(corr.as_str());
    let released = release(&state, &caller, on_it, reason, by.clone()).await?;
    let Some(released_at) = released
        .first()
        .and_then(|h| h.released.as_ref())
        .map(|r| r.at)
    else {
        return Err(Problem::not_found(format!(
            "correlation_id `{corr}` has no active legal hold"
        )));
    };
    let (store, tenant) = (state.store.clone(), caller.tenant.clone());
    let events = blocking(move || covered(store.as_ref(), &tenant, &filter)).await?;
    Ok(Json(json!({
        "correlation_id": corr,
        "events_released": events,
        "released_by": by,
        "released_at": format_time(&released_at),
    })))
}
