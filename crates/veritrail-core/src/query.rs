//! Event filters (PRODUCT §5), shared by the HTTP API, the CLI and the store.
//!
//! A [`Filter`] is parsed from `name=value` pairs named like the event's fields, so the query
//! string `?actor_id=alice&event_type=iam.*&since=24h` and the CLI flags mean the same thing.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::Value;
use thiserror::Error;

use crate::event::parse_time;

/// Exact-match filter fields, in the order the store prefers them as an index (most selective
/// first).
pub const EXACT_FIELDS: [&str; 12] = [
    "correlation_id",
    "resource_id",
    "actor_id",
    "producer_id",
    "namespace",
    "cluster_id",
    "resource_type",
    "event_action",
    "event_category",
    "actor_type",
    "severity",
    "event_outcome",
];

/// How `event_type` is matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeMatch {
    /// The whole type.
    Exact(String),
    /// `aianalysis.*`: every type starting with `aianalysis.`.
    Prefix(String),
}

impl TypeMatch {
    /// Reads `x.y` as exact and `x.*` (or `x*`) as a prefix.
    pub fn parse(s: &str) -> TypeMatch {
        match s.strip_suffix('*') {
            Some(prefix) => TypeMatch::Prefix(prefix.to_string()),
            None => TypeMatch::Exact(s.to_string()),
        }
    }

    fn matches(&self, t: &str) -> bool {
        match self {
            TypeMatch::Exact(e) => t == e,
            TypeMatch::Prefix(p) => t.starts_with(p.as_str()),
        }
    }
}

/// A bad filter parameter.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FilterError {
    /// The parameter is not a filter.
    #[error("unknown filter `{0}`")]
    Unknown(String),
    /// `since`/`until` could not be read.
    #[error("`{name}`: `{value}` is not a time (RFC 3339, a date like 2025-01-31, or relative like 30m, 24h, 7d)")]
    Time { name: String, value: String },
    /// The same parameter twice.
    #[error("filter `{0}` is given more than once")]
    Repeated(String),
    /// A value longer than any stored value of its field can be.
    #[error(
        "filter `{name}` is longer than {max} characters (the longest value an event may hold)"
    )]
    TooLong { name: String, max: usize },
}

/// The longest `data.<path>` filter path or value, in characters.
pub const MAX_DATA_FILTER_CHARS: usize = 1024;

/// A conjunction of conditions on events; an empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `event_type`, exact or prefix.
    pub event_type: Option<TypeMatch>,
    /// Exact matches on the fields named in [`EXACT_FIELDS`].
    pub exact: Vec<(String, String)>,
    /// `event_timestamp >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `event_timestamp < until`.
    pub until: Option<DateTime<Utc>>,
    /// `data.<path>=<value>` conditions on `event_data` (path segments split on `.`).
    pub data: Vec<(String, String)>,
}

impl Filter {
    /// Builds a filter from `name=value` pairs; `now` anchors relative times.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: DateTime<Utc>,
    ) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for (name, value) in pairs {
            f.add(name, value, now)?;
        }
        Ok(f)
    }

    /// Adds one condition.
    pub fn add(&mut self, name: &str, value: &str, now: DateTime<Utc>) -> Result<(), FilterError> {
        let repeated = || FilterError::Repeated(name.to_string());
        let time = || {
            parse_when(value, now).ok_or_else(|| FilterError::Time {
                name: name.to_string(),
                value: value.to_string(),
            })
        };
        let max = match name.strip_prefix("data.") {
            Some(_) => MAX_DATA_FILTER_CHARS,
            None => crate::event::max_chars(name).unwrap_or(64),
        };
        if value.chars().count() > max || name.chars().count() > max + 5 {
            return Err(FilterError::TooLong {
                name: name.chars().take(64).collect(),
                max,
            });
        }
        match name {
            "event_type" if self.event_type.is_some() => return Err(repeated()),
            "event_type" => self.event_type = Some(TypeMatch::parse(value)),
            "since" if self.since.is_some() => return Err(repeated()),
            "since" => self.since = Some(time()?),
            "until" if self.until.is_some() => return Err(repeated()),
            "until" => self.until = Some(time()?),
            _ => {
                if let Some(path) = name.strip_prefix("data.").filter(|p| !p.is_empty()) {
                    self.data.push((path.to_string(), value.to_string()));
                } else if EXACT_FIELDS.contains(&name) {
                    if self.exact.iter().any(|(n, _)| n == name) {
                        return Err(repeated());
                    }
                    self.exact.push((name.to_string(), value.to_string()));
                } else {
                    return Err(FilterError::Unknown(name.to_string()));
                }
            }
        }
        Ok(())
    }

    /// The exact condition on `field`, if any.
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.exact
            .iter()
            .find(|(n, _)| n == field)
            .map(|(_, v)| v.as_str())
    }

    /// True when the event object of a stored leaf satisfies every condition. Stored events are
    /// normalized (defaults filled in, times as fixed-width UTC text), so fields compare as
    /// strings and times compare in text order.
    pub fn matches_leaf(&self, event: &Value) -> bool {
        let text = |name: &str| event.get(name).and_then(Value::as_str);
        let time = text("event_timestamp").unwrap_or("");
        self.event_type
            .as_ref()
            .is_none_or(|t| text("event_type").is_some_and(|v| t.matches(v)))
            && self.exact.iter().all(|(n, v)| text(n) == Some(v.as_str()))
            && self
                .since
                .is_none_or(|s| time >= crate::event::format_time(&s).as_str())
            && self
                .until
                .is_none_or(|u| time < crate::event::format_time(&u).as_str())
            && self.data.iter().all(|(p, v)| {
                event
                    .get("event_data")
                    .and_then(Value::as_object)
                    .is_some_and(|d| data_matches(d, p, v))
            })
    }

    /// The filter as `name=value` pairs (for access logs and export manifests).
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match &self.event_type {
            Some(TypeMatch::Exact(t)) => out.push(("event_type".into(), t.clone())),
            Some(TypeMatch::Prefix(p)) => out.push(("event_type".into(), format!("{p}*"))),
            None => {}
        }
        out.extend(self.exact.iter().cloned());
        if let Some(s) = &self.since {
            out.push(("since".into(), crate::event::format_time(s)));
        }
        if let Some(u) = &self.until {
            out.push(("until".into(), crate::event::format_time(u)));
        }
        out.extend(
            self.data
                .iter()
                .map(|(p, v)| (format!("data.{p}"), v.clone())),
        );
        out
    }
}

/// Compares a value found at `path` with the text `want`: strings by equality, other scalars by
/// their JSON text (`data.attempt=3`, `data.dry_run=true`).
fn data_matches(data: &serde_json::Map<String, Value>, path: &str, want: &str) -> bool {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return false;
    };
    let mut cur = data.get(first);
    for p in parts {
        cur = cur.and_then(|v| v.get(p));
    }
    match cur {
        Some(Value::String(s)) => s == want,
        // Compare the JSON text: `Value == &str` would compare with a JSON string instead.
        #[allow(clippy::cmp_owned)]
        Some(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v.to_string() == want,
        _ => false,
    }
}

/// Reads RFC 3339, a plain date (midnight UTC), or a relative age (`90s`, `30m`, `24h`, `7d`, `2w`).
pub fn parse_when(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_time(s) {
        return Some(t);
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc());
    }
    let unit = s.chars().last()?;
    let n: i64 = s[..s.len() - unit.len_utf8()]
        .parse()
        .ok()
        .filter(|n| *n >= 0)?;
    let age = match unit {
        's' => Duration::try_seconds(n)?,
        'm' => Duration::try_minutes(n)?,
        'h' => Duration::try_hours(n)?,
        'd' => Duration::try_days(n)?,
        'w' => Duration::try_weeks(n)?,
        _ => return None,
    };
    now.checked_sub_signed(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use serde_json::json;
    use uuid::Uuid;

    fn event() -> Event {
        Event::from_json(
            &json!({"event_type": "iam.user.created", "event_timestamp": "2025-01-02T03:04:05Z",
                    "event_category": "iam", "event_action": "created", "event_outcome": "success",
                    "actor_id": "alice", "event_data": {"attempt": 3, "target": {"name": "bob"}}}),
            Uuid::now_v7,
        )
        .expect("valid")
    }

    fn check(pairs: &[(&str, &str)], expected: bool) {
        let now = "2025-01-03T00:00:00Z".parse().expect("time");
        let f = Filter::from_pairs(pairs.iter().copied(), now).expect("filter parses");
        // Stored events are normalized: match against that form.
        assert_eq!(f.matches_leaf(&event().to_value()), expected, "{pairs:?}");
    }

    #[test]
    fn filters_match_as_documented() {
        check(&[], true);
        check(&[("event_type", "iam.*")], true);
        check(&[("event_type", "iam.user")], false);
        check(&[("actor_id", "alice"), ("event_outcome", "success")], true);
        check(&[("actor_id", "bob")], false);
        check(&[("since", "24h")], true);
        check(&[("since", "2h")], false);
        check(&[("until", "2025-01-02")], false);
        check(&[("data.attempt", "3")], true);
        check(&[("data.target.name", "bob")], true);
        check(&[("data.target.name", "eve")], false);
    }

    #[test]
    fn bad_filters_are_named() {
        let now = Utc::now();
        assert_eq!(
            Filter::from_pairs([("colour", "red")], now),
            Err(FilterError::Unknown("colour".into()))
        );
        assert!(matches!(
            Filter::from_pairs([("since", "yesterday")], now),
            Err(FilterError::Time { .. })
        ));
        assert!(Filter::from_pairs([("actor_id", "a"), ("actor_id", "b")], now).is_err());
    }
}
