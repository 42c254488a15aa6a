//! Retention over HTTP (admin keys): `GET` and `POST /v1/admin/retention/policy`, the tenant's
//! policy (`veritrail_core::retention`), and `GET /v1/admin/retention/dry-run`, what a retention
//! run would remove at a given time.
//!
//! Nothing is removed yet: the dry run reads every event of the log (in seq order, each one
//! verified) and counts what has expired, what of that holds keep, and the bytes the rest takes
//! as stored, and which sealed segments hold nothing but removable events (a run removes those
//! whole, with their files: the bytes on disk it frees). The lifecycle's own records (hold and policy events) are never counted as
//! removable: they are the evidence of why anything else was kept or removed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use veritrail_core::event::format_time;
use veritrail_core::hold::{self, Act};
use veritrail_core::query::parse_when;
use veritrail_core::retention::{self, Policy};
use veritrail_store::Store;

use crate::access::{self, Caller};
use crate::holds::{only_members, read_body, reason, records_of};
use crate::problem::{Problem, QueryPairs};
use crate::{blocking, AppState};

/// Events read per step of a dry run.
const PAGE: usize = 1000;

/// The tenant's policy in force, if one was set, and who set it.
fn current(store: &dyn Store, tenant: &str) -> Result<Option<(Policy, Act)>, Problem> {
    let leaves = records_of(store, tenant, retention::PRODUCER)?;
    retention::latest(leaves.iter().map(|l| l.event())).map_err(|e| {
        Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "Unreadable policy",
            format!("a retention policy event in the log does not read as one: {e}"),
        )
    })
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
    Ok(Json(policy_answer(found.as_ref().map(|(p, a)| (p, a)))))
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
    only_members(&body, &["policy", "reason"], "a policy request")?;
    let reason = reason(&body, "reason")?;
    let policy = Policy::from_json(body.get("policy").unwrap_or(&Value::Null))
        .map_err(|e| Problem::bad_request(format!("`policy`: {e}")))?;
    // One change at a time, so that the check against the policy in force holds for the append.
    let _one_at_a_time = state.holds.changing.lock().await;
    let (store, tenant) = (state.store.clone(), caller.tenant.clone());
    if let Some((now, _)) = blocking(move || current(store.as_ref(), &tenant)).await? {
        if let Some(why) = now.lowered_by(&policy) {
            return Err(Problem::new(
                axum::http::StatusCode::CONFLICT,
                "Retention may only lengthen",
                format!("{why}: the events stored under the policy in force were promised its floors; a new policy may keep or raise them"),
            ));
        }
    }
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
    /// Expired, and covered by an active hold.
    held: u64,
    /// Expired, and a record of the lifecycle itself (holds, policies).
    kept: u64,
    removable_bytes: u64,
}

impl Tally {
    fn json(&self) -> Value {
        json!({
            "expired": self.expired,
            "held": self.held,
            "kept_records": self.kept,
            "removable": self.expired - self.held - self.kept,
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

/// Set while a dry run reads the log: one at a time per server, as each reads every event.
static DRY_RUN: AtomicBool = AtomicBool::new(false);

/// Clears [`DRY_RUN`] when the dry run ends, however it ends.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        DRY_RUN.store(false, Ordering::Release);
    }
}

fn tally(state: &AppState, tenant: &str, at: DateTime<Utc>) -> Result<Value, Problem> {
    if DRY_RUN.swap(true, Ordering::AcqRel) {
        let mut busy = Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "A dry run is running",
            "another retention dry run is reading the log; retry when it has finished",
        );
        busy.retry_after_s = Some(30);
        return Err(busy);
    }
    let _running = Running;
    let store = state.store.as_ref();
    let rules = current(store, tenant)?.map(|(p, _)| p).unwrap_or_default();
    let holds = state.holds.get(store, tenant)?;
    let (mut total, mut by_category) = (Tally::default(), BTreeMap::<String, Tally>::new());
    let mut next_expiry = None::<DateTime<Utc>>;
    // The log as it is now: what arrives during the scan is not counted.
    let spans = store.segments(tenant)?;
    let size: u64 = spans.iter().map(|s| s.events).sum();
    // Removable events per segment: a sealed segment all of whose events are removable is what
    // a run removes whole, with its files.
    let mut removable_in = vec![0u64; spans.len()];
    let mut segment = 0usize;
    let mut seq = 0u64;
    while seq < size {
        let page = store.read_range(tenant, seq, PAGE.min((size - seq) as usize))?;
        if page.is_empty() {
            break;
        }
        for stored in &page {
            seq = stored.seq + 1;
            while spans
                .get(segment)
                .is_some_and(|s| stored.seq >= s.first_seq + s.events)
            {
                segment += 1;
            }
            let leaf = stored.leaf()?;
            let expires = rules.expires_at(leaf.document()).ok_or_else(|| {
                Problem::from(veritrail_store::StoreError::Damaged(format!(
                    "seq {}: the stored event has no readable ingested_at",
                    stored.seq
                )))
            })?;
            if expires > at {
                next_expiry = Some(next_expiry.map_or(expires, |n| n.min(expires)));
                continue;
            }
            let event = leaf.event();
            let producer = event["producer_id"].as_str();
            let record = producer == Some(hold::PRODUCER) || producer == Some(retention::PRODUCER);
            let held = !record && holds.iter().any(|h| h.covers(event));
            let category = event["event_category"].as_str().unwrap_or("").to_string();
            for t in [&mut total, by_category.entry(category).or_default()] {
                t.expired += 1;
                if record {
                    t.kept += 1;
                } else if held {
                    t.held += 1;
                } else {
                    t.removable_bytes += stored.bytes.len() as u64;
                }
            }
            if !record && !held {
                if let Some(n) = removable_in.get_mut(segment) {
                    *n += 1;
                }
            }
        }
    }
    let whole: Vec<_> = spans
        .iter()
        .zip(&removable_in)
        .filter(|(s, n)| s.sealed && **n == s.events)
        .map(|(s, _)| s)
        .collect();
    let mut answer = total.json();
    answer["whole_segments"] = json!({
        "segments": whole.len(),
        "events": whole.iter().map(|s| s.events).sum::<u64>(),
        "bytes": whole.iter().map(|s| s.bytes).sum::<u64>(),
    });
    answer["segments"] = spans.len().into();
    answer["at"] = format_time(&at).into();
    answer["events"] = seq.into();
    answer["policy"] = rules.to_json();
    answer["next_expiry"] = next_expiry.map(|t| format_time(&t)).into();
    answer["by_category"] = by_category
        .iter()
        .map(|(c, t)| (c.clone(), t.json()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(answer)
}
