//! Retention policy (PRODUCT §7): how long an event is kept, and when it expires.
//!
//! Every event carries its own `retention_days` (the producer's, or 2 555 days, seven years,
//! when it gives none). A tenant's policy can only lengthen that: a floor for every event
//! (`min_days`) and floors per `event_category`. An event's retention is the largest of the
//! three, counted from its `ingested_at` (the server's clock, which a producer cannot set), so a
//! producer cannot shorten what the tenant requires, and a policy change never shortens what was
//! promised for events already stored.
//!
//! Like holds, the policy is kept only in the log: setting it appends a
//! `veritrail.retention.policy_set` event under the reserved producer [`PRODUCER`], and the policy
//! in force is the last such event's in the log ([`latest`]). A new policy may only raise the
//! floors ([`Policy::lowered_by`]). Nothing is removed yet: this module decides what would be.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use thiserror::Error;

use crate::event::{format_time, parse_time};
use crate::hold::{Act, Actor};

/// The producer id of retention events. No one else may write events under it.
pub const PRODUCER: &str = "veritrail.retention";
/// The event type that sets a tenant's policy.
pub const POLICY_SET: &str = "veritrail.retention.policy_set";
/// The longest retention, in days: the longest an event's own `retention_days` may be.
pub const MAX_DAYS: u32 = 36_500;
/// The most categories one policy may name.
pub const MAX_CATEGORIES: usize = 256;

/// A policy that does not read as one.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A member is not what it must be.
    #[error("`{member}` {problem}")]
    Member { member: String, problem: String },
}

fn bad(member: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError::Member {
        member: member.into(),
        problem: problem.into(),
    }
}

/// A tenant's retention floors. The default policy has none: each event's own
/// `retention_days` decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Every event is kept at least this many days.
    pub min_days: Option<u32>,
    /// Events of a category are kept at least this many days.
    pub categories: BTreeMap<String, u32>,
}

fn days(member: &str, value: &Value) -> Result<u32, PolicyError> {
    value
        .as_u64()
        .filter(|d| (1..=u64::from(MAX_DAYS)).contains(d))
        .map(|d| d as u32)
        .ok_or_else(|| {
            bad(
                member,
                format!("must be a whole number of days from 1 to {MAX_DAYS}"),
            )
        })
}

impl Policy {
    /// Reads `{"min_days": n, "categories": {"iam": n, …}}`; both members are optional, and
    /// `null` is no floor.
    pub fn from_json(value: &Value) -> Result<Policy, PolicyError> {
        let object = value
            .as_object()
            .ok_or_else(|| bad("policy", "must be a JSON object"))?;
        if let Some(k) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "min_days" | "categories"))
        {
            return Err(bad(
                k.as_str(),
                "is not a policy member (`min_days`, `categories`)",
            ));
        }
        let min_days = match object.get("min_days") {
            None | Some(Value::Null) => None,
            Some(v) => Some(days("min_days", v)?),
        };
        let mut categories = BTreeMap::new();
        match object.get("categories") {
            None | Some(Value::Null) => {}
            Some(Value::Object(c)) if c.len() <= MAX_CATEGORIES => {
                for (name, v) in c {
                    let max = crate::event::max_chars("event_category").unwrap_or(64);
                    if name.is_empty() || name.chars().count() > max {
                        return Err(bad(
                            "categories",
                            format!("names must be 1 to {max} characters"),
                        ));
                    }
                    categories.insert(name.clone(), days(&format!("categories.{name}"), v)?);
                }
            }
            Some(_) => {
                return Err(bad(
                    "categories",
                    format!(
                        "must be an object of at most {MAX_CATEGORIES} categories and their days"
                    ),
                ))
            }
        }
        Ok(Policy {
            min_days,
            categories,
        })
    }

    /// Why `next` may not replace this policy, if it may not: it would lower a floor (or drop
    /// one), and the events stored under this policy were promised it.
    pub fn lowered_by(&self, next: &Policy) -> Option<String> {
        let (now, then) = (self.min_days.unwrap_or(0), next.min_days.unwrap_or(0));
        if then < now {
            return Some(format!("`min_days` would fall from {now} to {then}"));
        }
        self.categories.iter().find_map(|(category, &days)| {
            let then = next.categories.get(category).copied().unwrap_or(0);
            (then < days)
                .then(|| format!("category `{category}` would fall from {days} to {then} days"))
        })
    }

    /// The policy as [`Policy::from_json`] reads it.
    pub fn to_json(&self) -> Value {
        json!({"min_days": self.min_days, "categories": self.categories})
    }

    /// How many days an event object is kept: its own `retention_days`, lengthened by the floors.
    pub fn days_of(&self, event: &Value) -> u32 {
        let own = event["retention_days"]
            .as_u64()
            .map_or(crate::event::DEFAULT_RETENTION_DAYS, |d| {
                d.min(u64::from(MAX_DAYS)) as u32
            });
        let category = event["event_category"]
            .as_str()
            .and_then(|c| self.categories.get(c))
            .copied();
        own.max(self.min_days.unwrap_or(0))
            .max(category.unwrap_or(0))
    }

    /// When a stored leaf document's event expires: `ingested_at` plus [`Policy::days_of`].
    /// `None` when the leaf has no readable `ingested_at`.
    pub fn expires_at(&self, leaf: &Value) -> Option<DateTime<Utc>> {
        let ingested = leaf["ingested_at"].as_str().and_then(parse_time)?;
        ingested.checked_add_signed(Duration::days(i64::from(self.days_of(&leaf["event"]))))
    }

    /// The event that sets this policy.
    pub fn set_event(&self, act: &Act, (actor_type, actor_id): Actor<'_>) -> Value {
        json!({
            "event_type": POLICY_SET,
            "event_timestamp": format_time(&act.at),
            "event_category": "veritrail",
            "event_action": "policy_set",
            "event_outcome": "success",
            "actor_type": actor_type,
            "actor_id": actor_id,
            "resource_type": "retention_policy",
            "resource_id": "retention",
            "producer_id": PRODUCER,
            "event_data": {"policy": self.to_json(), "reason": act.reason, "set_by": act.by},
        })
    }
}

/// The policy in force: the one the last of a log's policy events, in log order, sets, with
/// who set it, when and why; `None` when no policy was ever set. Log order, not the events'
/// times: a clock stepping back must not bring an older policy back.
pub fn latest<'a>(
    events_in_log_order: impl IntoIterator<Item = &'a Value>,
) -> Result<Option<(Policy, Act)>, PolicyError> {
    let Some(event) = events_in_log_order
        .into_iter()
        .filter(|e| e["event_type"].as_str() == Some(POLICY_SET))
        .last()
    else {
        return Ok(None);
    };
    let at = event["event_timestamp"]
        .as_str()
        .and_then(parse_time)
        .ok_or_else(|| bad("event_timestamp", "of a policy event is not a time"))?;
    let data = &event["event_data"];
    let text = |m: &str| data[m].as_str().unwrap_or_default().to_string();
    let policy = Policy::from_json(&data["policy"])?;
    let set = Act {
        by: text("set_by"),
        at,
        reason: text("reason"),
    };
    Ok(Some((policy, set)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(ingested: &str, event: Value) -> Value {
        json!({"ingested_at": ingested, "event": event})
    }

    #[test]
    fn floors_only_lengthen_and_count_from_ingestion() {
        let policy =
            Policy::from_json(&json!({"min_days": 30, "categories": {"iam": 400}})).unwrap();
        let at = |d: &str| parse_time(d).unwrap();
        let short = leaf(
            "2026-01-01T00:00:00Z",
            json!({"retention_days": 1, "event_category": "ci"}),
        );
        assert_eq!(
            policy.expires_at(&short),
            Some(at("2026-01-31T00:00:00Z")),
            "the tenant floor"
        );
        let iam = leaf(
            "2026-01-01T00:00:00Z",
            json!({"retention_days": 90, "event_category": "iam"}),
        );
        assert_eq!(policy.days_of(&iam["event"]), 400, "the category floor");
        let long = leaf(
            "2026-01-01T00:00:00Z",
            json!({"retention_days": 3000, "event_category": "iam"}),
        );
        assert_eq!(
            policy.days_of(&long["event"]),
            3000,
            "a policy never shortens"
        );
        assert_eq!(
            Policy::default().days_of(&json!({})),
            crate::event::DEFAULT_RETENTION_DAYS
        );
        assert_eq!(Policy::default().expires_at(&json!({"event": {}})), None);
    }

    #[test]
    fn policies_are_checked_and_the_newest_event_wins() {
        for bad in [
            json!([]),
            json!({"min_days": 0}),
            json!({"min_days": 36501}),
            json!({"min_days": "7y"}),
            json!({"categories": {"iam": -1}}),
            json!({"categories": []}),
            json!({"retention": 3}),
        ] {
            assert!(Policy::from_json(&bad).is_err(), "{bad}");
        }
        let act = |at: &str, reason: &str| Act {
            by: "ops".into(),
            at: parse_time(at).unwrap(),
            reason: reason.into(),
        };
        let old = Policy::from_json(&json!({"min_days": 10})).unwrap();
        let new = Policy::from_json(&json!({"categories": {"iam": 400}})).unwrap();
        let events = [
            new.set_event(&act("2026-02-01T00:00:00Z", "SOX"), ("user", "ops")),
            old.set_event(&act("2026-01-01T00:00:00Z", "first"), ("user", "ops")),
        ];
        // The last in log order wins, whatever its time says.
        let (policy, set) = latest(events.iter().rev()).unwrap().unwrap();
        assert_eq!(policy, new);
        assert_eq!(set.reason, "SOX");
        assert_eq!(latest(&events).unwrap().unwrap().0, old);
        assert_eq!(latest(&[]).unwrap(), None);
        assert_eq!(
            Policy::from_json(&new.to_json()).unwrap(),
            new,
            "round trip"
        );
        // Floors only rise.
        let both = Policy::from_json(&json!({"min_days": 10, "categories": {"iam": 400}})).unwrap();
        assert_eq!(old.lowered_by(&both), None);
        assert!(both.lowered_by(&old).unwrap().contains("iam"));
        assert!(both.lowered_by(&new).unwrap().contains("min_days"));
        assert_eq!(Policy::default().lowered_by(&Policy::default()), None);
    }
}
