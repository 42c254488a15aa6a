//! Kubernaut's `POST /api/v1/audit/notifications`: one notification delivery attempt.
//!
//! Kubernaut keeps these in a table of their own with `notification_id` unique. Here a record is
//! an ordinary event (`notification.delivery.<status>`, the record in `event_data`, the
//! remediation as correlation id, the notification as resource) whose id is derived from the
//! tenant and `notification_id`, so the store itself refuses a second record for the same
//! notification (409, as Kubernaut answers). Its `producer_id` is [`PRODUCER`]: Kubernaut's audit
//! event readers do not see these records (its client could not decode them), the native API
//! does. The answer's `id` is the record's leaf index. Kubernaut's 202 "queued to a dead-letter
//! queue" is never given: a record is acknowledged once durable, or the request fails (503 under
//! overload, which its client retries).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use veritrail_core::event::{derived_id, format_time, Event};

use crate::access::Caller;
use crate::problem::Problem;
use crate::AppState;

/// The `producer_id` of notification records.
pub const PRODUCER: &str = "kubernaut-notifications";

/// A field of the record: its name, longest length in characters (`None`: an integer), whether
/// it is required, and the values it may take (empty: any).
struct Field {
    name: &'static str,
    max: Option<usize>,
    required: bool,
    one_of: &'static [&'static str],
}

const fn text(name: &'static str, max: usize, required: bool) -> Field {
    Field {
        name,
        max: Some(max),
        required,
        one_of: &[],
    }
}

/// The fields of Kubernaut's `NotificationAudit` schema and their limits.
const FIELDS: [Field; 10] = [
    text("remediation_id", 255, true),
    text("notification_id", 255, true),
    text("recipient", 500, true),
    Field {
        one_of: &["email", "slack", "pagerduty", "teams", "webhook"],
        ..text("channel", 50, true)
    },
    text("message_summary", 1000, true),
    Field {
        one_of: &["sent", "failed", "pending"],
        ..text("status", 50, true)
    },
    text("sent_at", 64, true),
    text("delivery_status", 255, false),
    text("error_message", 1000, false),
    Field {
        name: "escalation_level",
        max: None,
        required: false,
        one_of: &[],
    },
];

/// Checks a record against the schema: the record (known fields, nulls dropped), or every
/// field's problem by name (Kubernaut's `field_errors`).
fn check(v: &Value) -> Result<Map<String, Value>, Map<String, Value>> {
    let Some(obj) = v.as_object() else {
        let mut e = Map::new();
        e.insert("(body)".into(), "must be a JSON object".into());
        return Err(e);
    };
    let (mut record, mut errors) = (Map::new(), Map::new());
    for f in &FIELDS {
        // Kubernaut's client sends unset optional strings as "": absent, as on its event routes.
        let given = obj
            .get(f.name)
            .filter(|v| f.required || v.as_str() != Some(""));
        let problem = match (given, f.max) {
            (None | Some(Value::Null), _) if f.required => Some(format!("{} is required", f.name)),
            (None | Some(Value::Null), _) => None,
            (Some(Value::String(s)), Some(_)) if s.is_empty() && f.required => {
                Some(format!("{} is required", f.name))
            }
            (Some(Value::String(s)), Some(max)) if s.chars().count() > max => {
                Some(format!("{} is longer than {max} characters", f.name))
            }
            (Some(Value::String(s)), Some(_))
                if !f.one_of.is_empty() && !f.one_of.contains(&s.as_str()) =>
            {
                Some(format!("{} must be one of {}", f.name, f.one_of.join(", ")))
            }
            (Some(Value::String(_)), Some(_)) => None,
            (Some(_), Some(_)) => Some(format!("{} must be a string", f.name)),
            (Some(n), None) => match n.as_u64() {
                Some(0..=5) => None,
                _ => Some(format!("{} must be a whole number from 0 to 5", f.name)),
            },
        };
        match (problem, given) {
            (Some(p), _) => {
                errors.insert(f.name.into(), p.into());
            }
            (None, Some(v)) if !v.is_null() => {
                record.insert(f.name.into(), v.clone());
            }
            (None, _) => {}
        }
    }
    if let Some(Value::String(t)) = obj.get("sent_at") {
        if let Err(why) = veritrail_core::event::check_time(t) {
            errors.insert("sent_at".into(), format!("sent_at {why}").into());
        }
    }
    match errors.is_empty() {
        true => Ok(record),
        false => Err(errors),
    }
}

/// The event that records `record` (checked by [`check`]) for `tenant`.
fn to_event(record: &Map<String, Value>, tenant: &str) -> Result<Event, Problem> {
    let get = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or_default();
    let status = get("status");
    let outcome = match status {
        "sent" => "success",
        "failed" => "failure",
        _ => "pending",
    };
    let mut v = json!({
        "version": "1.0",
        "event_type": format!("notification.delivery.{status}"),
        "event_timestamp": get("sent_at"),
        "event_category": "notification",
        "event_action": status,
        "event_outcome": outcome,
        "actor_type": "service",
        "actor_id": "notification-controller",
        "resource_type": "Notification",
        "resource_id": get("notification_id"),
        "correlation_id": get("remediation_id"),
        "producer_id": PRODUCER,
        "event_data": record,
    });
    if let Some(message) = record.get("error_message") {
        v["error_message"] = message.clone();
    }
    let id = record_id(tenant, get("notification_id"));
    Event::from_json(&v, || id).map_err(|e| Problem::bad_request(e.to_string()))
}

/// `POST /api/v1/audit/notifications` → 201 with the record, its `id`, `created_at` and
/// `updated_at`; 400 with `field_errors`; 409 when the notification already has a record.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let (_admitted, bytes) = super::read_json(&state, &caller, &headers, body).await?;
    let record = check(&super::parse(&bytes)?).map_err(|errors| {
        let first = errors.values().next().and_then(Value::as_str).unwrap_or("");
        let detail = match errors.len() {
            1 => first.to_string(),
            n => format!("{first} (and {} more, see `field_errors`)", n - 1),
        };
        Problem::bad_request(detail).with("field_errors", Value::Object(errors))
    })?;
    let event = to_event(&record, &caller.tenant)?;
    let notification = record
        .get("notification_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let appended = crate::ingest::append_as(&state, &caller, vec![event])
        .await
        .map_err(|p| match p.status {
            StatusCode::CONFLICT => conflict(&notification, "with different content"),
            _ => p,
        })?;
    let receipt = super::first_receipt(&appended)?;
    if receipt.duplicate {
        return Err(conflict(&notification, "(this same record)"));
    }
    let now = format_time(&chrono::Utc::now());
    let mut answer = record;
    answer.insert("id".into(), receipt.seq.into());
    answer.insert("created_at".into(), now.clone().into());
    answer.insert("updated_at".into(), now.into());
    Ok((StatusCode::CREATED, Json(Value::Object(answer))))
}

fn conflict(notification: &str, how: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "Resource Conflict",
        format!("a notification audit record with notification_id '{notification}' already exists {how}"),
    )
}

/// The id of the record of `notification_id` in `tenant`, for tests and tools that look it up.
pub fn record_id(tenant: &str, notification_id: &str) -> Uuid {
    derived_id(
        "veritrail kubernaut notification v1",
        tenant,
        notification_id.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Value {
        json!({
            "remediation_id": "remediation-123",
            "notification_id": "notification-456",
            "recipient": "ops-team@example.com",
            "channel": "email",
            "message_summary": "Incident alert: High CPU usage on pod xyz",
            "status": "sent",
            "sent_at": "2025-11-03T12:00:00Z",
            "delivery_status": "200 OK",
            "escalation_level": 0
        })
    }

    #[test]
    fn a_record_becomes_an_event_named_by_its_notification() {
        let r = check(&record()).expect("valid");
        let e = to_event(&r, "acme").expect("event");
        assert_eq!(e.event_type, "notification.delivery.sent");
        assert_eq!(e.event_outcome, "success");
        assert_eq!(e.correlation_id.as_deref(), Some("remediation-123"));
        assert_eq!(e.producer_id.as_deref(), Some(PRODUCER));
        assert!(super::super::reserved(PRODUCER));
        assert_eq!(e.event_id, record_id("acme", "notification-456"));
        assert_ne!(e.event_id, record_id("globex", "notification-456"));
    }

    #[test]
    fn every_field_problem_is_named() {
        let mut bad = record();
        bad["channel"] = json!("pigeon");
        bad["escalation_level"] = json!(6);
        bad["recipient"] = json!("x".repeat(501));
        bad["sent_at"] = json!("yesterday");
        bad.as_object_mut().unwrap().remove("remediation_id");
        let errors = check(&bad).expect_err("invalid");
        for field in [
            "channel",
            "escalation_level",
            "recipient",
            "sent_at",
            "remediation_id",
        ] {
            assert!(errors.contains_key(field), "{field}: {errors:?}");
        }
        for unset in [Value::Null, json!("")] {
            let mut optional = record();
            optional["error_message"] = unset;
            let r = check(&optional).expect("valid");
            assert!(!r.contains_key("error_message"));
            to_event(&r, "acme").expect("an event");
        }
    }
}
