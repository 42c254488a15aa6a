//! Legal holds (PRODUCT §7): what a hold is, the events that place and release it, and which
//! events it covers.
//!
//! A hold is a [`Filter`] with a reason. It covers every event the filter matches, whenever the
//! event arrives: a hold on a correlation id placed before the correlation's events exist covers
//! them when they come, unlike a flag set on the rows that exist at the time. Several holds may
//! cover one event; an event is held while any active hold covers it.
//!
//! Holds are kept nowhere but in the log. Placing one appends a `veritrail.hold.placed` event,
//! releasing it a `veritrail.hold.released` event, both written by the server under the reserved
//! producer [`PRODUCER`] (ingest refuses it from anyone else), and the current holds are those
//! events folded together ([`fold`]). So the log attests to every hold and its release, and the
//! holds survive whatever the log survives, with nothing else to back up or keep consistent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use thiserror::Error;
use uuid::Uuid;

use crate::event::{format_time, parse_time};
use crate::query::{Filter, FilterError};

/// The producer id of hold events. No one else may write events under it.
pub const PRODUCER: &str = "veritrail.holds";
/// The event type that places a hold; its `event_id` is the hold's id.
pub const PLACED: &str = "veritrail.hold.placed";
/// The event type that releases a hold.
pub const RELEASED: &str = "veritrail.hold.released";
/// The longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 1024;

/// A bad hold request, or a hold event that does not read as one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HoldError {
    /// A reason is missing, empty or too long.
    #[error("`{field}` {problem}")]
    Reason {
        field: &'static str,
        problem: &'static str,
    },
    /// The hold's filter is not a filter.
    #[error("`filter`: {0}")]
    Filter(#[from] FilterError),
    /// The filter is not an object of strings.
    #[error("`filter` must be an object whose members are filter names with string values")]
    FilterShape,
    /// A hold event in the log lacks a member it must have.
    #[error("hold event {event}: {problem}")]
    Event { event: String, problem: String },
}

/// Checks a placing or releasing reason: required, not blank, at most [`MAX_REASON_CHARS`].
pub fn check_reason<'a>(
    field: &'static str,
    reason: Option<&'a str>,
) -> Result<&'a str, HoldError> {
    let problem = match reason {
        None => "is required",
        Some(r) if r.trim().is_empty() => "must not be blank",
        Some(r) if r.chars().count() > MAX_REASON_CHARS => "is longer than 1024 characters",
        Some(r) => return Ok(r),
    };
    Err(HoldError::Reason { field, problem })
}

/// Reads a hold's filter from a JSON object of `name: value` strings, the names of the query
/// API's parameters (`correlation_id`, `actor_id`, `event_type` with `x.*` prefixes, `since`,
/// `until`, `data.<path>`…). Relative times are fixed against `now`, so the hold keeps the range
/// it was placed with. The empty object is the whole tenant.
pub fn filter_from_json(filter: &Value, now: DateTime<Utc>) -> Result<Filter, HoldError> {
    let object = filter.as_object().ok_or(HoldError::FilterShape)?;
    let mut pairs = Vec::with_capacity(object.len());
    for (name, value) in object {
        pairs.push((name.as_str(), value.as_str().ok_or(HoldError::FilterShape)?));
    }
    Ok(Filter::from_pairs(pairs, now)?)
}

/// The filter as the JSON object [`filter_from_json`] reads (times absolute).
pub fn filter_to_json(filter: &Filter) -> Value {
    Value::Object(
        filter
            .to_pairs()
            .into_iter()
            .map(|(n, v)| (n, Value::String(v)))
            .collect(),
    )
}

/// Who did something to a hold, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Act {
    /// The person or key that acted, as recorded (`placed_by`, `released_by`).
    pub by: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// One legal hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The id of the event that placed it.
    pub id: Uuid,
    /// The events it covers.
    pub filter: Filter,
    pub placed: Act,
    /// Set once it is released; a released hold covers nothing.
    pub released: Option<Act>,
}

/// Who an event written for a hold names as its actor: the caller's `(actor_type, actor_id)`.
pub type Actor<'a> = (&'a str, &'a str);

impl Hold {
    /// A new hold, not yet in the log.
    pub fn new(id: Uuid, filter: Filter, placed: Act) -> Hold {
        Hold {
            id,
            filter,
            placed,
            released: None,
        }
    }

    /// True while it is not released.
    pub fn is_active(&self) -> bool {
        self.released.is_none()
    }

    /// True when it is active and covers the event object of a stored leaf.
    pub fn covers(&self, event: &Value) -> bool {
        self.is_active() && self.filter.matches_leaf(event)
    }

    /// The correlation id when the hold is exactly "every event of one correlation" (the only
    /// kind Kubernaut's API knows).
    pub fn correlation(&self) -> Option<&str> {
        let f = &self.filter;
        let only_correlation = f.event_type.is_none()
            && f.since.is_none()
            && f.until.is_none()
            && f.data.is_empty()
            && f.exact.len() == 1;
        only_correlation
            .then(|| f.exact("correlation_id"))
            .flatten()
    }

    /// The event that places this hold (its `event_id` is the hold's id).
    pub fn placed_event(&self, actor: Actor<'_>) -> Value {
        let mut event = hold_event(
            PLACED,
            self.id,
            actor,
            &self.placed.at,
            json!({
                "hold_id": self.id.to_string(),
                "filter": filter_to_json(&self.filter),
                "reason": self.placed.reason,
                "placed_by": self.placed.by,
            }),
        );
        event["event_id"] = self.id.to_string().into();
        event
    }

    /// The event that releases this hold with `release`.
    pub fn released_event(&self, release: &Act, actor: Actor<'_>) -> Value {
        hold_event(
            RELEASED,
            self.id,
            actor,
            &release.at,
            json!({
                "hold_id": self.id.to_string(),
                "reason": release.reason,
                "released_by": release.by,
            }),
        )
    }

    /// The hold as the native API answers it.
    pub fn to_json(&self) -> Value {
        let act = |a: &Act, who: &str| {
            let mut m = Map::new();
            m.insert(format!("{who}_by"), a.by.clone().into());
            m.insert(format!("{who}_at"), format_time(&a.at).into());
            m.insert("reason".into(), a.reason.clone().into());
            Value::Object(m)
        };
        json!({
            "hold_id": self.id.to_string(),
            "filter": filter_to_json(&self.filter),
            "active": self.is_active(),
            "placed": act(&self.placed, "placed"),
            "released": self.released.as_ref().map(|r| act(r, "released")),
        })
    }
}

fn hold_event(
    event_type: &str,
    hold: Uuid,
    (actor_type, actor_id): Actor<'_>,
    at: &DateTime<Utc>,
    data: Value,
) -> Value {
    json!({
        "event_type": event_type,
        "event_timestamp": format_time(at),
        "event_category": "veritrail",
        "event_action": event_type.rsplit('.').next().unwrap_or(event_type),
        "event_outcome": "success",
        "actor_type": actor_type,
        "actor_id": actor_id,
        "resource_type": "legal_hold",
        "resource_id": hold.to_string(),
        "producer_id": PRODUCER,
        "event_data": data,
    })
}

/// The holds that the hold events of a log (their event objects, from stored leaves, in any
/// order) place and release, oldest first. A release of a hold the events do not place is
/// ignored; of two releases of one hold the earlier counts.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Value>) -> Result<Vec<Hold>, HoldError> {
    let mut holds = BTreeMap::new();
    let mut releases: Vec<(Uuid, Act)> = Vec::new();
    for event in events {
        let name = event["event_id"].as_str().unwrap_or("?").to_string();
        let bad = |problem: &str| HoldError::Event {
            event: name.clone(),
            problem: problem.to_string(),
        };
        let data = &event["event_data"];
        let text = |field: &str| {
            data[field]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("`event_data.{field}` is missing")))
        };
        let id = Uuid::try_parse(&text("hold_id")?).map_err(|_| bad("`hold_id` is not a UUID"))?;
        let at = event["event_timestamp"]
            .as_str()
            .and_then(parse_time)
            .ok_or_else(|| bad("`event_timestamp` is not a time"))?;
        match event["event_type"].as_str() {
            Some(PLACED) => {
                let filter =
                    filter_from_json(&data["filter"], at).map_err(|e| bad(&e.to_string()))?;
                let placed = Act {
                    by: text("placed_by")?,
                    at,
                    reason: text("reason")?,
                };
                holds.insert(id, Hold::new(id, filter, placed));
            }
            Some(RELEASED) => releases.push((
                id,
                Act {
                    by: text("released_by")?,
                    at,
                    reason: text("reason")?,
                },
            )),
            _ => return Err(bad("is neither a placement nor a release")),
        }
    }
    releases.sort_by_key(|(_, a)| a.at);
    for (id, release) in releases {
        if let Some(hold) = holds.get_mut(&id) {
            hold.released.get_or_insert(release);
        }
    }
    let mut out: Vec<Hold> = holds.into_values().collect();
    out.sort_by_key(|h| (h.placed.at, h.id));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    fn act(by: &str, time: &str, reason: &str) -> Act {
        Act {
            by: by.into(),
            at: at(time),
            reason: reason.into(),
        }
    }

    /// The event object the log would hold for `event`: validated and normalized as at ingest.
    fn stored(event: &Value) -> Value {
        let e = Event::from_json(event, Uuid::now_v7).expect("a valid event");
        e.to_value()
    }

    /// A producer's event with `fields` over the required ones.
    fn produced(fields: Value) -> Value {
        let mut event = json!({"event_type": "x.y", "event_category": "x", "event_action": "y",
            "event_outcome": "success", "actor_id": "svc", "event_timestamp": "2027-06-01T00:00:00Z"});
        for (k, v) in fields.as_object().unwrap() {
            event[k] = v.clone();
        }
        stored(&event)
    }

    fn on(correlation: &str) -> Filter {
        filter_from_json(&json!({"correlation_id": correlation}), Utc::now()).unwrap()
    }

    #[test]
    fn a_hold_covers_matching_events_whenever_they_arrive_and_nothing_once_released() {
        let mut hold = Hold::new(
            Uuid::now_v7(),
            on("rr-1"),
            act("alice", "2026-01-01T00:00:00Z", "case 7"),
        );
        let later = |corr: &str| produced(json!({"correlation_id": corr}));
        assert!(
            hold.covers(&later("rr-1")),
            "an event after the hold is held"
        );
        assert!(!hold.covers(&later("rr-2")));
        assert_eq!(hold.correlation(), Some("rr-1"));
        hold.released = Some(act("bob", "2026-02-01T00:00:00Z", "closed"));
        assert!(!hold.covers(&later("rr-1")));
    }

    #[test]
    fn holds_fold_from_their_events_in_any_order() {
        let filter = filter_from_json(
            &json!({"actor_id": "mallory", "event_type": "iam.*", "since": "2026-01-01"}),
            Utc::now(),
        )
        .unwrap();
        let a = Hold::new(
            Uuid::now_v7(),
            filter,
            act("alice", "2026-03-01T00:00:00Z", "case 7"),
        );
        let b = Hold::new(
            Uuid::now_v7(),
            Filter::default(),
            act("alice", "2026-03-02T00:00:00Z", "tenant-wide"),
        );
        let actor = ("user", "alice");
        let release = act("bob", "2026-04-01T00:00:00Z", "case closed");
        let events: Vec<Value> = [
            a.released_event(&release, actor),
            b.placed_event(actor),
            a.placed_event(actor),
            a.released_event(&act("carol", "2026-05-01T00:00:00Z", "again"), actor),
        ]
        .iter()
        .map(stored)
        .collect();
        let holds = fold(&events).unwrap();
        assert_eq!(holds.len(), 2);
        assert_eq!(holds[0].id, a.id);
        assert_eq!(holds[0].filter, a.filter, "the filter survives the log");
        assert_eq!(holds[0].released, Some(release), "the first release counts");
        assert_eq!(holds[1], b);
        assert!(holds[1].is_active());
        let event = produced(json!({"event_type": "iam.login", "actor_id": "mallory",
            "event_timestamp": "2026-06-01T00:00:00Z"}));
        let covering: Vec<Uuid> = holds
            .iter()
            .filter(|h| h.covers(&event))
            .map(|h| h.id)
            .collect();
        assert_eq!(covering, vec![b.id]);
    }

    #[test]
    fn the_placing_event_is_a_valid_event_whose_id_is_the_hold() {
        let hold = Hold::new(
            Uuid::now_v7(),
            on("rr-9"),
            act("key:k1", "2026-03-01T00:00:00Z", "r"),
        );
        let event =
            Event::from_json(&hold.placed_event(("api_key", "key:k1")), Uuid::now_v7).unwrap();
        assert_eq!(event.event_id, hold.id);
        assert_eq!(event.producer_id.as_deref(), Some(PRODUCER));
    }

    #[test]
    fn reasons_and_filters_are_checked() {
        assert!(check_reason("reason", None).is_err());
        assert!(check_reason("reason", Some("  ")).is_err());
        assert!(check_reason("reason", Some(&"x".repeat(1025))).is_err());
        assert_eq!(check_reason("reason", Some("SEC case")), Ok("SEC case"));
        assert_eq!(
            filter_from_json(&json!([]), Utc::now()),
            Err(HoldError::FilterShape)
        );
        assert_eq!(
            filter_from_json(&json!({"actor_id": 3}), Utc::now()),
            Err(HoldError::FilterShape)
        );
        assert!(matches!(
            filter_from_json(&json!({"colour": "red"}), Utc::now()),
            Err(HoldError::Filter(_))
        ));
        let now = at("2026-03-01T00:00:00Z");
        let f = filter_from_json(&json!({"since": "7d"}), now).unwrap();
        assert_eq!(
            filter_to_json(&f),
            json!({"since": "2026-02-22T00:00:00.000000Z"})
        );
    }
}
