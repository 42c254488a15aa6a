//! Legal holds over HTTP: `POST /v1/holds`, `GET /v1/holds` and
//! `POST /v1/holds/{hold_id}/release`, and the operations Kubernaut's legal-hold routes share
//! (`kubernaut::holds`).
//!
//! A hold lives only in the log (`veritrail_core::hold`): placing or releasing one appends its
//! event and answers once that event is durable, and the current holds are read back from the
//! log on every request, so two servers' answers, or one server's before and after a restart,
//! cannot differ. Only the `legal` and `admin` roles reach these routes (`access::required`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::{format_time, Leaf};
use veritrail_core::hold::{self, Act, Hold};
use veritrail_core::query::Filter;
use veritrail_store::{Order, QuerySpec, Store, StoredEvent, WindowSpec};

use crate::access::{self, Caller};
use crate::problem::{PathText, Problem};
use crate::{blocking, AppState};

/// Largest body of a hold request (a filter and a reason).
const MAX_BODY_BYTES: usize = 64 << 10;

/// The holds of each tenant as last read from its log, so that answers which mark held events
/// do not query the log every time. Only this process appends hold events (the data directory is
/// locked to it), and it forgets a tenant's holds as soon as it has appended one of them, so what
/// is kept never lags the log: a read that started before the change is not kept (the tenant's
/// generation moved on meanwhile).
#[derive(Default)]
pub struct Holds {
    tenants: Mutex<HashMap<String, Cached>>,
}

#[derive(Default)]
struct Cached {
    generation: u64,
    holds: Option<Arc<Vec<Hold>>>,
}

impl Holds {
    /// Every hold of `tenant`, placed and released, oldest first (blocking: it may read the log).
    pub(crate) fn get(&self, store: &dyn Store, tenant: &str) -> Result<Arc<Vec<Hold>>, Problem> {
        let generation = {
            let tenants = self.tenants.lock().map_err(|_| poisoned())?;
            match tenants.get(tenant) {
                Some(Cached { holds: Some(h), .. }) => return Ok(Arc::clone(h)),
                Some(c) => c.generation,
                None => 0,
            }
        };
        let holds = Arc::new(load(store, tenant)?);
        let mut tenants = self.tenants.lock().map_err(|_| poisoned())?;
        let cached = tenants.entry(tenant.to_string()).or_default();
        if cached.generation == generation {
            cached.holds = Some(Arc::clone(&holds));
        }
        Ok(holds)
    }

    /// Forgets what is kept of `tenant`'s holds: a hold event was just made durable.
    fn forget(&self, tenant: &str) {
        if let Ok(mut tenants) = self.tenants.lock() {
            let cached = tenants.entry(tenant.to_string()).or_default();
            cached.generation += 1;
            cached.holds = None;
        }
    }
}

fn poisoned() -> Problem {
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error",
        "the holds' cache is unusable after a panic; restart the server",
    )
}

/// The members Kubernaut's `AuditEvent` has for holds, for one stored event, as raw JSON:
/// `legal_hold`, and when an active hold covers the event, the reason, placer and time of the
/// oldest such hold. The event is parsed only when some hold is active.
pub(crate) fn kubernaut_members_of(
    holds: &[Hold],
    event: &StoredEvent,
) -> Result<Vec<(&'static str, String)>, Problem> {
    if !holds.iter().any(Hold::is_active) {
        return Ok(vec![("legal_hold", "false".into())]);
    }
    Ok(kubernaut_members(holds, event.leaf()?.event()))
}

/// [`kubernaut_members_of`] for an event object.
pub(crate) fn kubernaut_members(holds: &[Hold], event: &Value) -> Vec<(&'static str, String)> {
    let Some(h) = holds.iter().find(|h| h.covers(event)) else {
        return vec![("legal_hold", "false".into())];
    };
    vec![
        ("legal_hold", "true".into()),
        (
            "legal_hold_reason",
            Value::from(h.placed.reason.as_str()).to_string(),
        ),
        (
            "legal_hold_placed_by",
            Value::from(h.placed.by.as_str()).to_string(),
        ),
        (
            "legal_hold_placed_at",
            format!("\"{}\"", format_time(&h.placed.at)),
        ),
    ]
}

/// Every hold of a tenant, placed and released, oldest first, folded from its hold events.
fn load(store: &dyn Store, tenant: &str) -> Result<Vec<Hold>, Problem> {
    let leaves = records_of(store, tenant, hold::PRODUCER)?;
    hold::fold(leaves.iter().map(|l| l.event())).map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Unreadable hold",
            format!("a hold event in the log does not read as one: {e}"),
        )
    })
}

/// Every event the server wrote under one of its reserved producers (the lifecycle's records:
/// holds, retention policies), oldest first.
pub(crate) fn records_of(
    store: &dyn Store,
    tenant: &str,
    producer: &str,
) -> Result<Vec<Leaf>, Problem> {
    let filter = Filter {
        exact: vec![("producer_id".into(), producer.into())],
        ..Filter::default()
    };
    let (mut leaves, mut cursor) = (Vec::new(), None);
    loop {
        let spec = QuerySpec {
            filter: &filter,
            order: Order::Asc,
            cursor,
            limit: 1000,
        };
        let page = store.query(tenant, &spec)?;
        for hit in &page.events {
            leaves.push(hit.event.leaf()?);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(leaves)
}

/// How many events of the tenant a filter covers now.
pub(crate) fn covered(store: &dyn Store, tenant: &str, filter: &Filter) -> Result<u64, Problem> {
    let spec = WindowSpec {
        filter,
        order: Order::Asc,
        offset: 0,
        limit: 0,
    };
    Ok(store.query_window(tenant, &spec)?.total)
}

/// Appends a hold event and waits until it is durable. Unlike an access event it is written with
/// authentication off too: it is the hold itself.
async fn append(state: &AppState, tenant: &str, event: &Value) -> Result<(), Problem> {
    let pending = access::queue(&state.store, tenant, event)?;
    let appended = crate::ingest::durable(pending).await;
    // Also after a failure: the event may be durable even when the wait for it failed.
    state.holds.forget(tenant);
    appended.map(drop)
}

/// Places a hold with `filter` and `reason` on the caller's tenant, recorded as placed by `by`.
pub(crate) async fn place(
    state: &AppState,
    caller: &Caller,
    filter: Filter,
    reason: &str,
    by: String,
) -> Result<Hold, Problem> {
    let placed = Act {
        by,
        at: Utc::now(),
        reason: reason.to_string(),
    };
    let hold = Hold::new(Uuid::now_v7(), filter, placed);
    let (actor_type, actor_id) = caller.actor();
    append(
        state,
        &caller.tenant,
        &hold.placed_event((actor_type, &actor_id)),
    )
    .await?;
    Ok(hold)
}

/// Releases an active hold, recorded as released by `by`; returns it released.
pub(crate) async fn release(
    state: &AppState,
    caller: &Caller,
    mut hold: Hold,
    reason: &str,
    by: String,
) -> Result<Hold, Problem> {
    let release = Act {
        by,
        at: Utc::now(),
        reason: reason.to_string(),
    };
    let (actor_type, actor_id) = caller.actor();
    append(
        state,
        &caller.tenant,
        &hold.released_event(&release, (actor_type, &actor_id)),
    )
    .await?;
    hold.released = Some(release);
    Ok(hold)
}

/// Reads a hold request's body as a JSON object.
pub(crate) async fn read_body(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, Problem> {
    let (_admitted, bytes) =
        crate::admission::read_json(state, caller, headers, body, MAX_BODY_BYTES).await?;
    let value = veritrail_core::json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    if !value.is_object() {
        return Err(Problem::bad_request("the body must be a JSON object"));
    }
    Ok(value)
}

/// A reason member of a request body, checked.
pub(crate) fn reason<'a>(body: &'a Value, field: &'static str) -> Result<&'a str, Problem> {
    let text = match body.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .ok_or_else(|| Problem::bad_request(format!("`{field}` must be a string")))?,
        ),
    };
    hold::check_reason(field, text).map_err(|e| Problem::bad_request(e.to_string()))
}

/// The hold as answered, with the number of events it covers now.
fn answer(hold: &Hold, events: u64) -> Value {
    let mut out = hold.to_json();
    out["events_covered"] = events.into();
    out
}

/// `POST /v1/holds` with `{"filter": {...}, "reason": "..."}` → 201 with the hold and the number
/// of events it covers now. The filter takes the query API's parameter names; `{}` holds the
/// whole tenant. The hold covers matching events that arrive later too.
pub async fn place_hold(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let body = read_body(&state, &caller, &headers, body).await?;
    if let Some(unknown) = body
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| !matches!(k.as_str(), "filter" | "reason"))
    {
        return Err(Problem::bad_request(format!(
            "unknown member `{unknown}`; a hold request has `filter` and `reason`"
        )));
    }
    let reason = reason(&body, "reason")?;
    let filter = body.get("filter").ok_or_else(|| {
        Problem::bad_request(
            "`filter` is required: an object of query parameters, or {} to hold the whole tenant",
        )
    })?;
    let filter = hold::filter_from_json(filter, Utc::now())
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    let by = caller.actor().1;
    let hold = place(&state, &caller, filter, reason, by).await?;
    let (store, tenant, f) = (
        state.store.clone(),
        caller.tenant.clone(),
        hold.filter.clone(),
    );
    let events = blocking(move || covered(store.as_ref(), &tenant, &f)).await?;
    Ok((StatusCode::CREATED, Json(answer(&hold, events))))
}

/// Query parameters of `GET /v1/holds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Include released holds.
    #[serde(default)]
    released: bool,
}

/// `GET /v1/holds` → `{"holds": [...], "total"}`: the active holds (with `?released=true`, every
/// hold ever placed), each with the number of events it covers now.
pub async fn list_holds(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<ListParams>,
) -> Result<Json<Value>, Problem> {
    let (inner, tenant) = (state.clone(), caller.tenant.clone());
    let holds = blocking(move || {
        let store = inner.store.as_ref();
        let mut out = Vec::new();
        for h in inner.holds.get(store, &tenant)?.iter() {
            if h.is_active() || params.released {
                let events = if h.is_active() {
                    covered(store, &tenant, &h.filter)?
                } else {
                    0
                };
                out.push(answer(h, events));
            }
        }
        Ok(out)
    })
    .await?;
    access::record(
        &state,
        &caller,
        "access.holds",
        json!({"results": holds.len()}),
    )
    .await?;
    Ok(Json(json!({"total": holds.len(), "holds": holds})))
}

/// `POST /v1/holds/{hold_id}/release` with `{"reason": "..."}` → 200 with the released hold; 404
/// for a hold that does not exist, 409 for one already released.
pub async fn release_hold(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    PathText(id): PathText,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let id = Uuid::try_parse(&id)
        .map_err(|_| Problem::bad_request(format!("`{id}` is not a hold id (a UUID)")))?;
    let body = read_body(&state, &caller, &headers, body).await?;
    let reason = reason(&body, "reason")?;
    let (inner, tenant) = (state.clone(), caller.tenant.clone());
    let hold = blocking(move || inner.holds.get(inner.store.as_ref(), &tenant))
        .await?
        .iter()
        .find(|h| h.id == id)
        .cloned()
        .ok_or_else(|| Problem::not_found(format!("there is no hold {id} on this tenant")))?;
    if let Some(r) = &hold.released {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Already released",
            format!(
                "hold {id} was released by {} at {}",
                r.by,
                r.at.to_rfc3339()
            ),
        ));
    }
    let by = caller.actor().1;
    let hold = release(&state, &caller, hold, reason, by).await?;
    Ok(Json(answer(&hold, 0)))
}
