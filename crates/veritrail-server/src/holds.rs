//! Legal holds over HTTP: `POST /v1/holds`, `GET /v1/holds` and
//! `POST /v1/holds/{hold_id}/release`, and the operations Kubernaut's legal-hold routes share
//! (`kubernaut::holds`).
//!
//! A hold lives only in the log (`veritrail_core::hold`): placing or releasing one appends its
//! event and answers once that event is durable. The current holds are read back from the log
//! and kept per tenant ([`Holds`]) until this process appends the next hold event; changes are
//! made one at a time, so two releases of one hold cannot both succeed. Only the `legal` and
//! `admin` roles reach these routes (`access::required`).

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
use veritrail_store::{Order, Store, StoredEvent, WindowSpec};

use crate::access::{self, Caller};
use crate::problem::{PathText, Problem};
use crate::{blocking, AppState};

/// Largest body of a hold request (a filter and a reason).
const MAX_BODY_BYTES: usize = 64 << 10;

/// Most active holds per tenant. Each one is matched against every event that Kubernaut's reads
/// mark and counted on every list, so their number bounds that work.
pub const MAX_ACTIVE_HOLDS: usize = 1000;

/// The holds of each tenant as last read from its log, so that answers which mark held events
/// do not query the log every time. Only this process appends hold events (the data directory is
/// locked to it), and it forgets a tenant's holds as soon as it has appended one of them, so what
/// is kept never lags the log: a read that started before the change is not kept (the tenant's
/// generation moved on meanwhile).
#[derive(Default)]
pub struct Holds {
    tenants: Mutex<HashMap<String, Cached>>,
    /// Held while a hold is placed or released: the check (is it active? how many are?) and the
    /// append it leads to happen as one step.
    pub(crate) changing: tokio::sync::Mutex<()>,
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
fn kubernaut_members(holds: &[Hold], event: &Value) -> Vec<(&'static str, String)> {
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
/// holds, retention policies), in log order.
pub(crate) fn records_of(
    store: &dyn Store,
    tenant: &str,
    producer: &str,
) -> Result<Vec<Leaf>, Problem> {
    let filter = Filter {
        exact: vec![("producer_id".into(), producer.into())],
        ..Filter::default()
    };
    let mut leaves = Vec::new();
    crate::read::each_page(store, tenant, &filter, |page| {
        for hit in page {
            leaves.push((hit.event.seq, hit.event.leaf()?));
        }
        Ok::<_, Problem>(())
    })?;
    // Log order: what was appended last counts last, whatever the events' times say.
    leaves.sort_by_key(|(seq, _)| *seq);
    Ok(leaves.into_iter().map(|(_, leaf)| leaf).collect())
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

/// Appends hold events as one append and waits until they are durable. Unlike an access event
/// they are written with authentication off too: they are the holds themselves. The wait runs
/// on a task of its own, so that the tenant's holds are forgotten once the events are durable
/// even when the request is dropped first (a client that goes away).
async fn append(state: &Arc<AppState>, tenant: &str, events: &[Value]) -> Result<(), Problem> {
    let pending = access::queue_all(&state.store, tenant, events)?;
    let (state, tenant) = (Arc::clone(state), tenant.to_string());
    tokio::spawn(async move {
        let appended = crate::ingest::durable(pending).await;
        // Also after a failure: the events may be durable even when the wait for them failed.
        state.holds.forget(&tenant);
        appended.map(drop)
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            e.to_string(),
        )
    })?
}

/// The tenant's holds, read off the async runtime.
async fn current(state: &Arc<AppState>, tenant: &str) -> Result<Arc<Vec<Hold>>, Problem> {
    let (inner, tenant) = (Arc::clone(state), tenant.to_string());
    blocking(move || inner.holds.get(inner.store.as_ref(), &tenant)).await
}

/// Places a hold with `filter` and `reason` on the caller's tenant, recorded as placed by `by`;
/// 409 when the tenant has [`MAX_ACTIVE_HOLDS`] already.
pub(crate) async fn place(
    state: &Arc<AppState>,
    caller: &Caller,
    filter: Filter,
    reason: &str,
    by: String,
) -> Result<Hold, Problem> {
    let _one_at_a_time = state.holds.changing.lock().await;
    let active = current(state, &caller.tenant)
        .await?
        .iter()
        .filter(|h| h.is_active())
        .count();
    if active >= MAX_ACTIVE_HOLDS {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Too many holds",
            format!("this tenant has {active} active holds, the most it may have; release one, or hold a wider filter"),
        ));
    }
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
        &[hold.placed_event((actor_type, &actor_id))],
    )
    .await?;
    Ok(hold)
}

/// Releases every active hold `pick` selects, in one append, recorded as released by `by`;
/// returns them released (none when `pick` selects no active hold).
pub(crate) async fn release(
    state: &Arc<AppState>,
    caller: &Caller,
    pick: impl Fn(&Hold) -> bool,
    reason: &str,
    by: String,
) -> Result<Vec<Hold>, Problem> {
    let _one_at_a_time = state.holds.changing.lock().await;
    let release = Act {
        by,
        at: Utc::now(),
        reason: reason.to_string(),
    };
    let (actor_type, actor_id) = caller.actor();
    let mut released: Vec<Hold> = current(state, &caller.tenant)
        .await?
        .iter()
        .filter(|h| h.is_active() && pick(h))
        .cloned()
        .collect();
    if released.is_empty() {
        return Ok(released);
    }
    let events: Vec<Value> = released
        .iter()
        .map(|h| h.released_event(&release, (actor_type, &actor_id)))
        .collect();
    append(state, &caller.tenant, &events).await?;
    for h in &mut released {
        h.released = Some(release.clone());
    }
    Ok(released)
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

/// Refuses a body with members other than `allowed` (`what` names the request in the answer).
pub(crate) fn only_members(body: &Value, allowed: &[&str], what: &str) -> Result<(), Problem> {
    match body
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        Some(unknown) => Err(Problem::bad_request(format!(
            "unknown member `{unknown}`; {what} has `{}`",
            allowed.join("` and `")
        ))),
        None => Ok(()),
    }
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

/// The hold as answered, with the number of events it covers now (null when unknown).
fn answer(hold: &Hold, events: Option<u64>) -> Value {
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
    only_members(&body, &["filter", "reason"], "a hold request")?;
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
    // The hold is in place: a failing count must not make the client place it again.
    let events = match blocking(move || covered(store.as_ref(), &tenant, &f)).await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(hold = %hold.id, "counting the events of a new hold failed: {}", e.detail);
            None
        }
    };
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
    let pick = move |h: &Hold| h.is_active() || params.released;
    list(&state, &caller, pick, answer).await
}

/// `{"holds": [...], "total"}` of the tenant's holds that `pick` selects, each the `row` of the
/// hold and the number of events it covers now (counted for active holds only), recorded as a
/// read (`veritrail.access.holds`).
pub(crate) async fn list(
    state: &Arc<AppState>,
    caller: &Caller,
    pick: impl Fn(&Hold) -> bool + Send + 'static,
    row: impl Fn(&Hold, Option<u64>) -> Value + Send + 'static,
) -> Result<Json<Value>, Problem> {
    let (inner, tenant) = (Arc::clone(state), caller.tenant.clone());
    let holds = blocking(move || {
        let store = inner.store.as_ref();
        let mut out = Vec::new();
        for h in inner.holds.get(store, &tenant)?.iter().filter(|h| pick(h)) {
            let events = match h.is_active() {
                true => Some(covered(store, &tenant, &h.filter)?),
                false => None,
            };
            out.push(row(h, events));
        }
        Ok(out)
    })
    .await?;
    let details = json!({"results": holds.len()});
    access::record(state, caller, "access.holds", details).await?;
    Ok(Json(json!({"holds": holds, "total": holds.len()})))
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
    let by = caller.actor().1;
    if let Some(hold) = release(&state, &caller, |h| h.id == id, reason, by)
        .await?
        .pop()
    {
        return Ok(Json(answer(&hold, None)));
    }
    match current(&state, &caller.tenant)
        .await?
        .iter()
        .find(|h| h.id == id)
    {
        Some(Hold {
            released: Some(r), ..
        }) => Err(Problem::new(
            StatusCode::CONFLICT,
            "Already released",
            format!(
                "hold {id} was released by {} at {}",
                r.by,
                format_time(&r.at)
            ),
        )),
        _ => Err(Problem::not_found(format!(
            "there is no hold {id} on this tenant"
        ))),
    }
}
