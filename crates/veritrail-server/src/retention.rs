//! Retention over HTTP (admin keys): `GET` and `POST /v1/admin/retention/policy`, the tenant's
//! policy (`veritrail_core::retention`), and `GET /v1/admin/retention/dry-run`, what a retention
//! run would remove at a given time.
//!
//! Nothing is removed yet: the dry run reads every event of the log (in seq order, each one
//! verified) and counts what has expired, what of that holds keep, and the bytes the rest takes
//! as stored. The lifecycle's own records are never counted as removable while they are in
//! force: the placing event of an active hold, and the event of the policy in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use veritrail_core::event::format_time;
use veritrail_core::hold::{self, Act};
use veritrail_core::query::parse_when;
use veritrail_core::retention::{self, Policy};
use veritrail_store::Store;

use crate::access::{self, Caller};
use crate::holds::{read_body, reason, records_of};
use crate::problem::{Problem, QueryPairs};
use crate::{blocking, AppState};

/// Events read per step of a dry run.
const PAGE: usize = 1000;

/// The tenant's policy in force, if one was set: the policy, who set it, and the id of the event
/// that did.
struct Current {
    policy: Policy,
    set: Act,
    event_id: Option<Uuid>,
}

fn current(store: &dyn Store, tenant: &str) -> Result<Option<Current>, Problem> {
    let leaves = records_of(store, tenant, retention::PRODUCER)?;
    let in_force = retention::latest(leaves.iter().map(|l| l.event())).map_err(|e| {
        Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Unreadable policy",
            format!("a retention policy event in the log does not read as one: {e}"),
        )
    })?;
    Ok(in_force.map(|f| Current {
        event_id: f.event["event_id"]
            .as_str()
            .and_then(|s| Uuid::try_parse(s).ok()),
        policy: f.policy,
        set: f.set,
    }))
}

fn policy_answer(current: Option<(&Policy, &Act)>) -> Value {
    match current {
        Some((policy, act)) => json!({
            "policy": policy.to_json(),
            "set_by": act.by,
            "set_at": format_time(&act.at),
            "reason": act.reason,
        }),
        None => json!({
            "policy": Policy::default().to_json(),
            "set_by": null,
            "set_at": null,
            "reason": "no policy was set: each event's own retention_days decides",
        }),
    }
}

/// `GET /v1/admin/retention/policy` → `{policy, set_by, set_at, reason}`.
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, Problem> {
    let (store, tenant) = (state.store.clone(), caller.tenant.clone());
    let found = blocking(move || current(store.as_ref(), &tenant)).await?;
    access::record(
        &state,
        &caller,
        "access.retention",
        json!({"read": "policy"}),
    )
    .await?;
    Ok(Json(policy_answer(
        found.as_ref().map(|c| (&c.policy, &c.set)),
    )))
}

/// `POST /v1/admin/retention/policy` with `{"policy": {"min_days", "categories"}, "reason"}` →
/// 200 with the policy now in force. It applies to every event, stored or to come, and can only
/// lengthen their retention.
pub async fn set(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Problem> {
    let body = read_body(&state, &caller, &headers, body).await?;
    if let Some(k) = body
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| !matches!(k.as_str(), "policy" | "reason"))
    {
        return Err(Problem::bad_request(format!(
            "unknown member `{k}`; a policy request has `policy` and `reason`"
        )));
    }
    let reason = reason(&body, "reason")?;
    let policy = Policy::from_json(body.get("policy").unwrap_or(&Value::Null))
        .map_err(|e| Problem::bad_request(format!("`policy`: {e}")))?;
    let (actor_type, actor_id) = caller.actor();
    let act = Act {
        by: actor_id.clone(),
        at: Utc::now(),
        reason: reason.to_string(),
    };
    let pending = access::queue(
        &state.store,
        &caller.tenant,
        &policy.set_event(&act, (actor_type, &actor_id)),
    )?;
    crate::ingest::durable(pending).await?;
    Ok(Json(policy_answer(Some((&policy, &act)))))
}

/// Counts of one kind of events in a dry run.
#[derive(Default)]
struct Tally {
    expired: u64,
    held: u64,
    removable_bytes: u64,
}

impl Tally {
    fn json(&self) -> Value {
        json!({
            "expired": self.expired,
            "held": self.held,
            "removable": self.expired - self.held,
            "removable_bytes": self.removable_bytes,
        })
    }
}

/// `GET /v1/admin/retention/dry-run[?at=TIME]` → what a retention run at `at` (default now; an
/// RFC 3339 time or a date, in the future to plan) would remove, by `event_category`: events
/// expired, of those held by a hold or kept as a record of the lifecycle, the rest removable, and
/// the bytes those take as stored (before compression).
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<Value>, Problem> {
    let mut at = Utc::now();
    for (name, value) in &params {
        match name.as_str() {
            "at" => {
                at = parse_when(value, Utc::now()).ok_or_else(|| {
                    Problem::bad_request(format!(
                        "`at`: `{value}` is not a time (RFC 3339, or a date like 2027-01-31)"
                    ))
                })?
            }
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown parameter `{other}`; the dry run takes `at`"
                )))
            }
        }
    }
    let (inner, tenant) = (state.clone(), caller.tenant.clone());
    let answer = blocking(move || tally(&inner, &tenant, at)).await?;
    access::record(
        &state,
        &caller,
        "access.retention",
        json!({"read": "dry_run", "at": format_time(&at), "events": answer["events"]}),
    )
    .await?;
    Ok(Json(answer))
}

fn tally(state: &AppState, tenant: &str, at: DateTime<Utc>) -> Result<Value, Problem> {
    let store = state.store.as_ref();
    let (rules, policy_event) = match current(store, tenant)? {
        Some(c) => (c.policy, c.event_id),
        None => (Policy::default(), None),
    };
    let holds = state.holds.get(store, tenant)?;
    let active_holds: Vec<Uuid> = holds
        .iter()
        .filter(|h| h.is_active())
        .map(|h| h.id)
        .collect();
    let (mut total, mut by_category) = (Tally::default(), BTreeMap::<String, Tally>::new());
    let (mut events, mut next_expiry) = (0u64, None::<DateTime<Utc>>);
    loop {
        let page = store.read_range(tenant, events, PAGE)?;
        if page.is_empty() {
            break;
        }
        for stored in &page {
            events += 1;
            let leaf = stored.leaf()?;
            let Some(expires) = rules.expires_at(leaf.document()) else {
                continue;
            };
            if expires > at {
                next_expiry = Some(next_expiry.map_or(expires, |n| n.min(expires)));
                continue;
            }
            let event = leaf.event();
            let lifecycle_record = leaf.event_id().is_some_and(|id| {
                policy_event == Some(id)
                    || (event["producer_id"] == hold::PRODUCER && active_holds.contains(&id))
            });
            let held = lifecycle_record || holds.iter().any(|h| h.covers(event));
            let category = event["event_category"].as_str().unwrap_or("").to_string();
            for t in [&mut total, by_category.entry(category).or_default()] {
                t.expired += 1;
                if held {
                    t.held += 1;
                } else {
                    t.removable_bytes += stored.bytes.len() as u64;
                }
            }
        }
    }
    let mut answer = total.json();
    answer["at"] = format_time(&at).into();
    answer["events"] = events.into();
    answer["policy"] = rules.to_json();
    answer["next_expiry"] = next_expiry.map(|t| format_time(&t)).into();
    answer["by_category"] = by_category
        .iter()
        .map(|(c, t)| (c.clone(), t.json()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(answer)
}
