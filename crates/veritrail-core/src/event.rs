//! The audit event (PRODUCT §1): parsing, per-field validation, normalization and the leaf record.
//!
//! Parsing is done by hand over a JSON object rather than with `#[derive(Deserialize)]` so that
//! every problem is reported at once and names its field ("`event_outcome`: must be one of
//! success, failure, pending"), which is what a producer debugging a rejected batch needs.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use uuid::Uuid;

use crate::canonical::{self, CanonicalError};

mod input;
use input::Slots;
pub use input::{events_from_slice, EventInput};

/// Version of the leaf record layout; part of the hashed bytes (`"v"`).
pub const LEAF_VERSION: u64 = 1;
/// Default retention: seven years.
pub const DEFAULT_RETENTION_DAYS: u32 = 2555;
/// Largest accepted `event_data`, measured on its canonical bytes.
pub const MAX_EVENT_DATA_BYTES: usize = 256 * 1024;
/// Deepest accepted nesting of `event_data` (the object itself is depth 1).
pub const MAX_EVENT_DATA_DEPTH: usize = 32;
/// Largest integer a field may hold: what the canonical encoding represents exactly.
const MAX_SAFE: i64 = canonical::MAX_SAFE_INTEGER as i64;
/// Outcomes an event may report.
pub const OUTCOMES: [&str; 3] = ["success", "failure", "pending"];

/// One problem with one field of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name (`event_data.x` for nested problems, `(event)` for the whole event).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// Every problem found in one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError(pub Vec<FieldError>);

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "`{}`: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for EventError {}

/// A validated, normalized audit event, as the producer described it (server fields excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub version: String,
    pub event_timestamp: DateTime<Utc>,
    pub event_type: String,
    pub event_category: String,
    pub event_action: String,
    pub event_outcome: String,
    pub actor_type: String,
    pub actor_id: String,
    pub actor_ip: Option<String>,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub correlation_id: Option<String>,
    pub parent_event_id: Option<Uuid>,
    pub parent_event_date: Option<DateTime<Utc>>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub namespace: Option<String>,
    pub cluster_id: Option<String>,
    pub severity: Option<String>,
    pub duration_ms: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub event_data: Map<String, Value>,
    pub is_sensitive: bool,
    pub retention_days: u32,
    pub producer_id: Option<String>,
    pub producer_seq: Option<u64>,
    /// True when the server gave this event its id at ingest (the request carried none): a
    /// fresh UUIDv7 cannot already be in the log, so the idempotency lookup is skipped. Not part
    /// of the event's content or canonical bytes.
    pub fresh_id: bool,
}

/// What a stored leaf commits to: the event plus the fields the server adds.
///
/// Its canonical bytes (RFC 8785 of [`Record::to_value`]) are the Merkle leaf input.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub tenant: String,
    pub ingested_at: DateTime<Utc>,
    pub event: Event,
}

/// Formats a timestamp the one way Veritrail stores it: UTC, microseconds, `Z`.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A UUIDv8 (RFC 9562 §5.8) whose 122 free bits are the first bits of SHA-256 over `domain`,
/// `tenant` and `name`, each length-prefixed. The tenant is hashed in so that equal names in two
/// tenants do not share an id; the domain keeps ids derived for different purposes apart.
pub fn derived_id(domain: &str, tenant: &str, name: &[u8]) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [domain.as_bytes(), tenant.as_bytes(), name] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(first).into_uuid()
}

/// Ids for the events of one request that carry none, for producers that re-send a request
/// whose answer they did not get: event `i` gets the [`derived_id`] of a digest of the whole
/// request (every event's canonical bytes without its id, in order) and `i`. The same request
/// sent again gets the same ids, so the store answers it with the original receipts; two equal
/// events within a request, or in two requests, stay two events. Canonical bytes, not the
/// request's own bytes, so that a client re-encoding the same events (member order, number
/// forms, precision the store drops) is still recognised.
pub fn request_ids(tenant: &str, events: &[Event]) -> Result<Vec<Uuid>, CanonicalError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for e in events {
        let mut value = e.to_value();
        if let Some(m) = value.as_object_mut() {
            m.remove("event_id");
        }
        let bytes = canonical::to_vec(&value)?;
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    let request = h.finalize();
    Ok((0..events.len() as u64)
        .map(|i| {
            let name = [request.as_slice(), &i.to_be_bytes()].concat();
            derived_id("veritrail request event id v1", tenant, &name)
        })
        .collect())
}

/// Why a timestamp is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not RFC 3339 text.
    #[error("is not an RFC 3339 timestamp (e.g. 2025-12-13T02:00:00Z)")]
    NotRfc3339,
    /// An instant whose UTC year has no four-digit RFC 3339 form.
    #[error("falls outside the years 0000 to 9999 once converted to UTC")]
    OutOfRange,
}

/// Decides whether a timestamp is accepted, and what instant it stands for: RFC 3339 text whose
/// instant, converted to UTC and truncated to the microsecond, lies in the years 0000 to 9999.
/// Only such instants have a [`format_time`] form that is RFC 3339 again, so the one rule serves
/// ingest and every reader of stored leaves (recovery, reindex, `fsck`, queries) alike.
pub fn check_time(s: &str) -> Result<DateTime<Utc>, TimeError> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| TimeError::NotRfc3339)?
        .with_timezone(&Utc);
    let t = DateTime::from_timestamp_micros(t.timestamp_micros()).ok_or(TimeError::OutOfRange)?;
    if (0..=9999).contains(&t.year()) {
        Ok(t)
    } else {
        Err(TimeError::OutOfRange)
    }
}

/// [`check_time`], for callers that need no reason.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    check_time(s).ok()
}

/// The longest value, in characters, of each string field of an event. Every field that becomes
/// an index key is bounded here (at most 255 characters, so at most 1 020 bytes of UTF-8), and
/// every entry point checks it: events through [`Event::from_json`], query parameters through
/// [`crate::query::Filter`], and the server's other routes through [`max_chars`].
pub const FIELD_LIMITS: [(&str, usize); 24] = [
    ("event_id", 64),
    ("version", 20),
    ("event_timestamp", 64),
    ("event_type", 100),
    ("event_category", 50),
    ("event_action", 50),
    ("event_outcome", 16),
    ("actor_type", 64),
    ("actor_id", 255),
    ("actor_ip", 45),
    ("resource_type", 255),
    ("resource_id", 255),
    ("resource_name", 1024),
    ("correlation_id", 255),
    ("parent_event_id", 64),
    ("parent_event_date", 64),
    ("trace_id", 64),
    ("span_id", 32),
    ("namespace", 253),
    ("cluster_id", 255),
    ("severity", 32),
    ("error_code", 255),
    ("error_message", 8192),
    ("producer_id", 255),
];

/// The longest accepted value of string field `field`, in characters ([`FIELD_LIMITS`]).
pub fn max_chars(field: &str) -> Option<usize> {
    FIELD_LIMITS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|&(_, max)| max)
}

/// [`FIELD_LIMITS`] by the place of each field in [`KNOWN_FIELDS`] (0: not a string field).
const LIMITS: [usize; KNOWN_FIELDS.len()] = {
    let mut limits = [0; KNOWN_FIELDS.len()];
    let mut i = 0;
    while i < FIELD_LIMITS.len() {
        limits[field_index(FIELD_LIMITS[i].0)] = FIELD_LIMITS[i].1;
        i += 1;
    }
    limits
};

/// The place of `name` in [`KNOWN_FIELDS`], for constants: an unknown name fails the build.
const fn field_index(name: &str) -> usize {
    let mut i = 0;
    while i < KNOWN_FIELDS.len() {
        if same(KNOWN_FIELDS[i].as_bytes(), name.as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("not a field of an audit event")
}

const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The slot of field `$name`, resolved at compile time.
macro_rules! at {
    ($name:literal) => {
        const { field_index($name) }
    };
}

/// Collects field errors while an event is read.
///
/// Each field is taken out of its slot as it is read, so strings and `event_data` move into the
/// event instead of being copied.
struct Reader {
    slots: Box<Slots>,
    errors: Vec<FieldError>,
    /// Whether to check `event_data`'s limits (depth, exact numbers, size): input from producers
    /// is checked; a stored leaf was checked when it was ingested and is covered by its hash.
    check_payload: bool,
}

impl Reader {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// Takes the value of field `i` out of its slot; `null` counts as absent.
    fn take(&mut self, i: usize) -> Option<Value> {
        self.slots[i].take().filter(|v| !v.is_null())
    }

    fn present(&self, i: usize) -> bool {
        self.slots[i].as_ref().is_some_and(|v| !v.is_null())
    }

    /// An optional string of at most [`max_chars`] characters.
    fn string(&mut self, i: usize) -> Option<String> {
        let (field, max) = (KNOWN_FIELDS[i], LIMITS[i]);
        match self.take(i)? {
            Value::String(s) if s.is_empty() => {
                self.error(field, "must not be empty (omit the field instead)");
                None
            }
            // A string of at most `max` bytes has at most `max` characters: counted only if not.
            Value::String(s) if s.len() > max && s.chars().count() > max => {
                self.error(field, format!("is longer than {max} characters"));
                None
            }
            Value::String(s) => Some(s),
            other => {
                self.error(field, format!("must be a string, not {}", kind(&other)));
                None
            }
        }
    }

    fn required_string(&mut self, i: usize) -> String {
        if !self.present(i) {
            self.error(KNOWN_FIELDS[i], "is required");
        }
        self.string(i).unwrap_or_default()
    }

    fn time(&mut self, i: usize) -> Option<DateTime<Utc>> {
        let s = self.string(i)?;
        match check_time(&s) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(KNOWN_FIELDS[i], format!("`{s}` {e}"));
                None
            }
        }
    }

    fn uuid(&mut self, i: usize) -> Option<Uuid> {
        let s = self.string(i)?;
        let id = Uuid::try_parse(&s).ok();
        if id.is_none() {
            self.error(KNOWN_FIELDS[i], format!("`{s}` is not a UUID"));
        }
        id
    }

    fn integer(&mut self, i: usize, min: i64, max: i64) -> Option<i64> {
        let field = KNOWN_FIELDS[i];
        match self.take(i)? {
            Value::Number(n) => match n.as_i64() {
                Some(i) if (min..=max).contains(&i) => Some(i),
                _ => {
                    self.error(field, format!("must be an integer from {min} to {max}"));
                    None
                }
            },
            other => {
                self.error(field, format!("must be an integer, not {}", kind(&other)));
                None
            }
        }
    }

    fn boolean(&mut self, i: usize) -> Option<bool> {
        match self.take(i)? {
            Value::Bool(b) => Some(b),
            other => {
                self.error(
                    KNOWN_FIELDS[i],
                    format!("must be true or false, not {}", kind(&other)),
                );
                None
            }
        }
    }

    fn event_data(&mut self) -> Map<String, Value> {
        match self.take(at!("event_data")) {
            None => Map::new(),
            Some(Value::Object(m)) => {
                let checked = if self.check_payload {
                    check_payload(&m)
                } else {
                    Ok(())
                };
                if let Err(message) = checked {
                    self.error("event_data", message);
                }
                m
            }
            Some(other) => {
                self.error(
                    "event_data",
                    format!("must be a JSON object, not {}", kind(&other)),
                );
                Map::new()
            }
        }
    }
}

/// Names a JSON value's type for error messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks `event_data` limits: nesting depth, exact numbers, canonical size.
fn check_payload(m: &Map<String, Value>) -> Result<(), String> {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let d = 1 + m.values().map(depth).max().unwrap_or(0);
    if d > MAX_EVENT_DATA_DEPTH {
        return Err(format!(
            "nests {d} levels deep; at most {MAX_EVENT_DATA_DEPTH} are allowed"
        ));
    }
    // Encoding the payload only to measure it would double its cost on every event: a bound
    // that formats only the numbers (checking each has a canonical form) settles nearly all.
    let mut scratch = Vec::new();
    let mut bound = 2 + m.len();
    for (k, v) in m {
        bound += 3
            + 6 * k.len()
            + canonical_bound(v, &mut scratch).map_err(|e| format!("key `{k}`: {e}"))?;
    }
    if bound <= MAX_EVENT_DATA_BYTES {
        return Ok(());
    }
    let size = canonical_size(m)?;
    if size > MAX_EVENT_DATA_BYTES {
        return Err(format!(
            "is {size} bytes; at most {MAX_EVENT_DATA_BYTES} are allowed"
        ));
    }
    Ok(())
}

/// At least the length of `v`'s canonical bytes: a canonical string takes at most six bytes per
/// byte (`\u00XX`) and its quotes; numbers are formatted, which fails as encoding would.
fn canonical_bound(v: &Value, scratch: &mut Vec<u8>) -> Result<usize, CanonicalError> {
    Ok(match v {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(n) => {
            scratch.clear();
            canonical::write_number(n, scratch)?;
            scratch.len()
        }
        Value::String(s) => 2 + 6 * s.len(),
        Value::Array(items) => {
            let mut size = 2 + items.len();
            for x in items {
                size += canonical_bound(x, scratch)?;
            }
            size
        }
        Value::Object(m) => {
            let mut size = 2 + m.len();
            for (k, x) in m {
                size += 3 + 6 * k.len() + canonical_bound(x, scratch)?;
            }
            size
        }
    })
}

/// The length of `m`'s canonical bytes, member by member (each value is encoded once, and a value
/// with no canonical form is named by its key), without copying the payload.
fn canonical_size(m: &Map<String, Value>) -> Result<usize, String> {
    let mut size = 2 + m.len().saturating_sub(1); // braces and commas
    let mut bytes = Vec::new();
    for (k, v) in m {
        bytes.clear();
        canonical::write_string(k, &mut bytes);
        bytes.push(b':');
        canonical::write_value(v, &mut bytes).map_err(|e| format!("key `{k}`: {e}"))?;
        size += bytes.len();
    }
    Ok(size)
}

/// Fields an event may carry; anything else is rejected so that a typo is never silently lost.
const KNOWN_FIELDS: [&str; 29] = [
    "event_id",
    "version",
    "event_timestamp",
    "event_type",
    "event_category",
    "event_action",
    "event_outcome",
    "actor_type",
    "actor_id",
    "actor_ip",
    "resource_type",
    "resource_id",
    "resource_name",
    "correlation_id",
    "parent_event_id",
    "parent_event_date",
    "trace_id",
    "span_id",
    "namespace",
    "cluster_id",
    "severity",
    "duration_ms",
    "error_code",
    "error_message",
    "event_data",
    "is_sensitive",
    "retention_days",
    "producer_id",
    "producer_seq",
];

fn check_event_type(t: &str) -> Result<(), String> {
    let ok_chars = t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if !ok_chars || t.starts_with('.') || t.ends_with('.') || t.contains("..") {
        return Err(format!(
            "`{t}` is not a dotted name such as `aianalysis.analysis.completed` (letters, digits, . _ - : /)"
        ));
    }
    Ok(())
}

impl Event {
    /// Reads and validates one event from a JSON value.
    ///
    /// A missing `event_id` is filled in with `new_id()` (the server passes a UUIDv7 source);
    /// missing actor and resource fields get Kubernaut's defaults.
    pub fn from_json(value: &Value, new_id: impl FnOnce() -> Uuid) -> Result<Event, EventError> {
        Event::from_json_owned(value.clone(), new_id)
    }

    /// Like [`Event::from_json`], taking the value: its strings and `event_data` move into the
    /// event.
    pub fn from_json_owned(
        value: Value,
        new_id: impl FnOnce() -> Uuid,
    ) -> Result<Event, EventError> {
        Event::read(EventInput::from_value(value), new_id, true)
    }

    /// Validates an event parsed by [`EventInput`]'s deserializer (ingest's path: no JSON tree
    /// is built for the event's own members). The same checks as [`Event::from_json`].
    pub fn from_input(
        input: EventInput,
        new_id: impl FnOnce() -> Uuid,
    ) -> Result<Event, EventError> {
        Event::read(input, new_id, true)
    }

    fn read(
        input: EventInput,
        new_id: impl FnOnce() -> Uuid,
        check_payload: bool,
    ) -> Result<Event, EventError> {
        let (slots, mut unknown) = match input {
            EventInput::Object { slots, unknown } => (slots, unknown),
            EventInput::Other(kind) => {
                return Err(EventError(vec![FieldError {
                    field: "(event)".into(),
                    message: format!("must be a JSON object, not {kind}"),
                }]))
            }
        };
        // Named in key order, as a parsed map would list them.
        unknown.sort_unstable();
        let mut r = Reader {
            slots,
            errors: Vec::new(),
            check_payload,
        };
        for key in unknown {
            r.error(
                &key,
                "is not a field of an audit event (put custom data in `event_data`)",
            );
        }
        let event_type = r.required_string(at!("event_type"));
        if !event_type.is_empty() {
            if let Err(m) = check_event_type(&event_type) {
                r.error("event_type", m);
            }
        }
        let event_timestamp = if r.present(at!("event_timestamp")) {
            r.time(at!("event_timestamp"))
        } else {
            r.error("event_timestamp", "is required");
            None
        };
        let event_category = r.required_string(at!("event_category"));
        let event_action = r.required_string(at!("event_action"));
        let event_outcome = r.required_string(at!("event_outcome"));
        if !event_outcome.is_empty() && !OUTCOMES.contains(&event_outcome.as_str()) {
            r.error(
                "event_outcome",
                format!("`{event_outcome}` must be one of success, failure, pending"),
            );
        }
        let correlation_id = r.string(at!("correlation_id"));
        let actor_type = r
            .string(at!("actor_type"))
            .unwrap_or_else(|| "service".into());
        let actor_id = r
            .string(at!("actor_id"))
            .unwrap_or_else(|| format!("{event_category}-service"));
        let resource_type = r
            .string(at!("resource_type"))
            .unwrap_or_else(|| event_category.clone());
        let resource_id = r
            .string(at!("resource_id"))
            .or_else(|| correlation_id.clone());
        let retention_days = r.integer(at!("retention_days"), 1, 36_500);
        let producer_seq = r.integer(at!("producer_seq"), 0, MAX_SAFE);
        let event = Event {
            event_id: r.uuid(at!("event_id")).unwrap_or_else(new_id),
            version: r.string(at!("version")).unwrap_or_else(|| "1.0".into()),
            event_timestamp: event_timestamp.unwrap_or_default(),
            event_type,
            event_category,
            event_action,
            event_outcome,
            actor_type,
            actor_id,
            actor_ip: r.string(at!("actor_ip")),
            resource_type,
            resource_id,
            resource_name: r.string(at!("resource_name")),
            correlation_id,
            parent_event_id: r.uuid(at!("parent_event_id")),
            parent_event_date: r.time(at!("parent_event_date")),
            trace_id: r.string(at!("trace_id")),
            span_id: r.string(at!("span_id")),
            namespace: r.string(at!("namespace")),
            cluster_id: r.string(at!("cluster_id")),
            severity: r.string(at!("severity")),
            duration_ms: r.integer(at!("duration_ms"), 0, MAX_SAFE),
            error_code: r.string(at!("error_code")),
            error_message: r.string(at!("error_message")),
            event_data: r.event_data(),
            is_sensitive: r.boolean(at!("is_sensitive")).unwrap_or(false),
            // The ranges checked above make these conversions lossless.
            retention_days: retention_days.map_or(DEFAULT_RETENTION_DAYS, |d| d as u32),
            producer_seq: producer_seq.map(|s| s as u64),
            producer_id: r.string(at!("producer_id")),
            fresh_id: false,
        };
        if r.errors.is_empty() {
            Ok(event)
        } else {
            Err(EventError(r.errors))
        }
    }

    /// The normalized JSON form: every field present, absent optionals omitted.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("event_id", self.event_id.to_string().into());
        put("version", self.version.clone().into());
        put("event_timestamp", format_time(&self.event_timestamp).into());
        put("event_type", self.event_type.clone().into());
        put("event_category", self.event_category.clone().into());
        put("event_action", self.event_action.clone().into());
        put("event_outcome", self.event_outcome.clone().into());
        put("actor_type", self.actor_type.clone().into());
        put("actor_id", self.actor_id.clone().into());
        put("resource_type", self.resource_type.clone().into());
        put("event_data", Value::Object(self.event_data.clone()));
        put("is_sensitive", self.is_sensitive.into());
        put("retention_days", self.retention_days.into());
        let optional = [
            ("actor_ip", &self.actor_ip),
            ("resource_id", &self.resource_id),
            ("resource_name", &self.resource_name),
            ("correlation_id", &self.correlation_id),
            ("trace_id", &self.trace_id),
            ("span_id", &self.span_id),
            ("namespace", &self.namespace),
            ("cluster_id", &self.cluster_id),
            ("severity", &self.severity),
            ("error_code", &self.error_code),
            ("error_message", &self.error_message),
            ("producer_id", &self.producer_id),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                put(k, v.clone().into());
            }
        }
        if let Some(id) = self.parent_event_id {
            put("parent_event_id", id.to_string().into());
        }
        if let Some(t) = &self.parent_event_date {
            put("parent_event_date", format_time(t).into());
        }
        if let Some(d) = self.duration_ms {
            put("duration_ms", d.into());
        }
        if let Some(s) = self.producer_seq {
            put("producer_seq", s.into());
        }
        m.into()
    }

    /// Canonical bytes of the event alone (RFC 8785 of [`Event::to_value`]); equal bytes mean
    /// "the same content" for idempotency.
    ///
    /// Written straight from the fields, without building the value: ingest spends its time
    /// here, and the tree of [`Event::to_value`] (a copy of every string and of `event_data`)
    /// cost more than the encoding. The members are listed in byte order of their ASCII names,
    /// which is RFC 8785's UTF-16 order; a property test holds the bytes equal to the value's. The
    /// member list repeats [`Event::to_value`]'s on purpose: written twice, a field forgotten in
    /// one is caught by that test, which a shared list would not.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        /// One member's value.
        enum Member<'a> {
            Str(&'a str),
            Id(Uuid),
            Time(&'a DateTime<Utc>),
            Bool(bool),
            Number(serde_json::Number),
            Object(&'a Map<String, Value>),
        }
        use Member::{Bool, Id, Number, Object, Str, Time};
        fn s(v: &Option<String>) -> Option<Member<'_>> {
            v.as_deref().map(Member::Str)
        }
        // In RFC 8785 order (byte order of these ASCII names), so nothing is sorted per event.
        let members: [(&str, Option<Member<'_>>); 29] = [
            ("actor_id", Some(Str(&self.actor_id))),
            ("actor_ip", s(&self.actor_ip)),
            ("actor_type", Some(Str(&self.actor_type))),
            ("cluster_id", s(&self.cluster_id)),
            ("correlation_id", s(&self.correlation_id)),
            ("duration_ms", self.duration_ms.map(|d| Number(d.into()))),
            ("error_code", s(&self.error_code)),
            ("error_message", s(&self.error_message)),
            ("event_action", Some(Str(&self.event_action))),
            ("event_category", Some(Str(&self.event_category))),
            ("event_data", Some(Object(&self.event_data))),
            ("event_id", Some(Id(self.event_id))),
            ("event_outcome", Some(Str(&self.event_outcome))),
            ("event_timestamp", Some(Time(&self.event_timestamp))),
            ("event_type", Some(Str(&self.event_type))),
            ("is_sensitive", Some(Bool(self.is_sensitive))),
            ("namespace", s(&self.namespace)),
            (
                "parent_event_date",
                self.parent_event_date.as_ref().map(Time),
            ),
            ("parent_event_id", self.parent_event_id.map(Id)),
            ("producer_id", s(&self.producer_id)),
            ("producer_seq", self.producer_seq.map(|n| Number(n.into()))),
            ("resource_id", s(&self.resource_id)),
            ("resource_name", s(&self.resource_name)),
            ("resource_type", Some(Str(&self.resource_type))),
            ("retention_days", Some(Number(self.retention_days.into()))),
            ("severity", s(&self.severity)),
            ("span_id", s(&self.span_id)),
            ("trace_id", s(&self.trace_id)),
            ("version", Some(Str(&self.version))),
        ];
        debug_assert!(members.windows(2).all(|w| w[0].0 < w[1].0));
        let members = members
            .iter()
            .filter_map(|(k, m)| m.as_ref().map(|m| (k, m)));
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        for (i, (name, member)) in members.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            canonical::write_string(name, &mut out);
            out.push(b':');
            match member {
                Str(v) => canonical::write_string(v, &mut out),
                Id(id) => canonical::write_string(
                    id.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
                    &mut out,
                ),
                Time(t) => canonical::write_string(&format_time(t), &mut out),
                Bool(true) => out.extend_from_slice(b"true"),
                Bool(false) => out.extend_from_slice(b"false"),
                Number(n) => canonical::write_number(n, &mut out)?,
                Object(m) => canonical::write_object(m, &mut out)?,
            }
        }
        out.push(b'}');
        Ok(out)
    }

    /// Returns the value of a top-level field by its JSON name, for filters and indexes.
    pub fn field(&self, name: &str) -> Option<&str> {
        let s = match name {
            "event_type" => &self.event_type,
            "event_category" => &self.event_category,
            "event_action" => &self.event_action,
            "event_outcome" => &self.event_outcome,
            "actor_type" => &self.actor_type,
            "actor_id" => &self.actor_id,
            "resource_type" => &self.resource_type,
            "resource_id" => return self.resource_id.as_deref(),
            "correlation_id" => return self.correlation_id.as_deref(),
            "namespace" => return self.namespace.as_deref(),
            "cluster_id" => return self.cluster_id.as_deref(),
            "severity" => return self.severity.as_deref(),
            "producer_id" => return self.producer_id.as_deref(),
            _ => return None,
        };
        Some(s)
    }
}

/// Why stored bytes do not decode to a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("record layout: {0}")]
    Layout(String),
    #[error("record event: {0}")]
    Event(#[from] EventError),
}

impl Record {
    /// The leaf document: `{"v":1,"tenant":…,"ingested_at":…,"event":{…}}`.
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("v".into(), LEAF_VERSION.into());
        m.insert("tenant".into(), self.tenant.clone().into());
        m.insert("ingested_at".into(), format_time(&self.ingested_at).into());
        m.insert("event".into(), self.event.to_value());
        m.into()
    }

    /// The Merkle leaf input: RFC 8785 canonical bytes of [`Record::to_value`].
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        canonical::to_vec(&self.to_value())
    }

    /// The same bytes as [`Record::canonical_bytes`], built around the event's canonical bytes
    /// (which the ingest path already has) instead of canonicalizing the event twice. The keys
    /// `event` < `ingested_at` < `tenant` < `v` are already in RFC 8785 order.
    pub fn canonical_bytes_around(
        event_bytes: &[u8],
        tenant: &str,
        ingested_at: &DateTime<Utc>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(event_bytes.len() + tenant.len() + 80);
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(event_bytes);
        out.extend_from_slice(b",\"ingested_at\":");
        canonical::write_value(&Value::String(format_time(ingested_at)), &mut out).ok();
        out.extend_from_slice(b",\"tenant\":");
        canonical::write_value(&Value::String(tenant.to_string()), &mut out).ok();
        out.extend_from_slice(format!(",\"v\":{LEAF_VERSION}}}").as_bytes());
        out
    }

    /// Decodes a leaf document (as stored, or as found in an export bundle).
    pub fn from_value(v: &Value) -> Result<Record, RecordError> {
        Record::from_owned(v.clone())
    }

    fn from_owned(v: Value) -> Result<Record, RecordError> {
        let layout = |m: &str| RecordError::Layout(m.to_string());
        let Value::Object(mut obj) = v else {
            return Err(layout("not an object"));
        };
        if obj.len() != 4 || obj.get("v").and_then(Value::as_u64) != Some(LEAF_VERSION) {
            return Err(layout("expected exactly v=1, tenant, ingested_at, event"));
        }
        let tenant = match obj.remove("tenant") {
            Some(Value::String(t)) => t,
            _ => return Err(layout("tenant")),
        };
        let ingested_at = obj
            .get("ingested_at")
            .and_then(Value::as_str)
            .and_then(parse_time)
            .ok_or_else(|| layout("ingested_at"))?;
        let event_value = obj.remove("event").ok_or_else(|| layout("event"))?;
        let has_id = event_value.get("event_id").is_some();
        let event = Event::read(EventInput::from_value(event_value), Uuid::nil, false)?;
        if !has_id {
            return Err(layout("event.event_id missing"));
        }
        Ok(Record {
            tenant,
            ingested_at,
            event,
        })
    }

    /// Decodes canonical bytes read back from storage.
    pub fn from_bytes(bytes: &[u8]) -> Result<Record, RecordError> {
        Record::from_owned(serde_json::from_slice(bytes)?)
    }
}

/// A stored leaf read back for serving: the parsed leaf document, without the typed [`Event`]
/// round trip. Safe because a leaf is served only after its bytes matched the leaf hash in the
/// tree, so they are exactly the bytes that were validated at ingest.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf(Value);

impl Leaf {
    /// Parses a leaf document and checks its outline (`v`, `tenant`, `ingested_at`, an `event`
    /// object with an `event_id` and an `event_timestamp`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Leaf, RecordError> {
        let v: Value = serde_json::from_slice(bytes)?;
        let ok = v.get("v").and_then(Value::as_u64) == Some(LEAF_VERSION)
            && v.get("tenant").is_some_and(Value::is_string)
            && v.get("ingested_at").is_some_and(Value::is_string)
            && v.get("event")
                .and_then(|e| e.get("event_id"))
                .is_some_and(Value::is_string)
            && v.get("event")
                .and_then(|e| e.get("event_timestamp"))
                .is_some_and(Value::is_string);
        if !ok {
            return Err(RecordError::Layout("not a version-1 leaf document".into()));
        }
        Ok(Leaf(v))
    }

    /// The whole leaf document.
    pub fn document(&self) -> &Value {
        &self.0
    }

    /// The event object.
    pub fn event(&self) -> &Value {
        &self.0["event"]
    }

    /// The event's id.
    pub fn event_id(&self) -> Option<Uuid> {
        self.event()["event_id"]
            .as_str()
            .and_then(|s| Uuid::try_parse(s).ok())
    }
}

/// What the index keeps of a stored leaf, read without building the rest of it: `event_data` and
/// the other fields are skipped, strings are borrowed where they hold no escapes. A whole-log
/// check uses it to recompute index entries at the speed of hashing. It checks at least the
/// outline [`Leaf::from_bytes`] checks, the reader's decoder, so a leaf it accepts is servable.
#[derive(Debug, serde::Deserialize)]
pub struct LeafSummary<'a> {
    v: u64,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    ingested_at: Cow<'a, str>,
    /// `ingested_at` in µs since the epoch, parsed once by [`LeafSummary::from_bytes`].
    #[serde(skip)]
    ingested_at_us: i64,
    #[serde(borrow)]
    pub event: EventSummary<'a>,
}

/// The indexed fields of a stored event (see [`LeafSummary`]).
#[derive(Debug, serde::Deserialize)]
pub struct EventSummary<'a> {
    pub event_id: Uuid,
    #[serde(borrow)]
    event_timestamp: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    event_outcome: Cow<'a, str>,
    #[serde(borrow)]
    actor_id: Cow<'a, str>,
    #[serde(borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    resource_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    producer_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
    #[serde(default)]
    producer_seq: Option<u64>,
}

impl<'a> LeafSummary<'a> {
    /// Reads the summary of a leaf document's bytes.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<LeafSummary<'a>, RecordError> {
        let mut summary: LeafSummary<'a> = serde_json::from_slice(bytes)?;
        if summary.v != LEAF_VERSION {
            return Err(RecordError::Layout("not a version-1 leaf document".into()));
        }
        if summary.event.time().is_none() {
            return Err(RecordError::Layout(
                "event_timestamp is not an RFC 3339 timestamp".into(),
            ));
        }
        summary.ingested_at_us = parse_time(&summary.ingested_at)
            .ok_or_else(|| RecordError::Layout("ingested_at is not an RFC 3339 timestamp".into()))?
            .timestamp_micros();
        Ok(summary)
    }

    /// When the server stored the event, in µs since the epoch.
    pub fn ingested_at_us(&self) -> i64 {
        self.ingested_at_us
    }

    /// The tenant whose log holds the leaf.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The same summary owning its strings, to keep after the bytes are gone.
    pub fn into_owned(self) -> LeafSummary<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        let opt = |c: Option<Cow<'_, str>>| c.map(own);
        let e = self.event;
        LeafSummary {
            v: self.v,
            tenant: own(self.tenant),
            ingested_at: own(self.ingested_at),
            ingested_at_us: self.ingested_at_us,
            event: EventSummary {
                event_id: e.event_id,
                event_timestamp: own(e.event_timestamp),
                event_type: own(e.event_type),
                event_outcome: own(e.event_outcome),
                actor_id: own(e.actor_id),
                correlation_id: opt(e.correlation_id),
                resource_id: opt(e.resource_id),
                producer_id: opt(e.producer_id),
                namespace: opt(e.namespace),
                producer_seq: e.producer_seq,
            },
        }
    }
}

impl EventSummary<'_> {
    /// The event time, truncated to the microsecond as [`Event::event_timestamp`] is.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        parse_time(&self.event_timestamp)
    }

    /// The producer's id and its sequence number for the event, when it has both.
    pub fn producer(&self) -> Option<(&str, u64)> {
        self.producer_id.as_deref().zip(self.producer_seq)
    }

    /// The value of an indexed field, as [`Event::field`] gives it; `None` for other names.
    pub fn field(&self, name: &str) -> Option<&str> {
        match name {
            "event_type" => Some(&self.event_type),
            "event_outcome" => Some(&self.event_outcome),
            "actor_id" => Some(&self.actor_id),
            "correlation_id" => self.correlation_id.as_deref(),
            "resource_id" => self.resource_id.as_deref(),
            "producer_id" => self.producer_id.as_deref(),
            "namespace" => self.namespace.as_deref(),
            _ => None,
        }
    }
}

/// Renders a stored leaf for an API answer without parsing it: the event object's canonical bytes
/// with `extra` members (name, raw JSON text) and the leaf's `ingested_at` and `tenant` appended.
///
/// A leaf's canonical bytes are `{"event":{…},"ingested_at":"…","tenant":"…","v":1}` (keys in
/// RFC 8785 order), so the event object is the text between the first `:` and the last
/// `,"ingested_at":` (an `ingested_at` key inside `event_data` comes earlier). Returns `None` for
/// bytes of any other shape.
pub fn render_leaf(leaf: &[u8], extra: &[(&str, &str)]) -> Option<String> {
    const HEAD: &[u8] = b"{\"event\":{";
    const MID: &[u8] = b",\"ingested_at\":";
    let text = std::str::from_utf8(leaf).ok()?;
    if !leaf.starts_with(HEAD) {
        return None;
    }
    let mid = leaf.windows(MID.len()).rposition(|w| w == MID)?;
    // The event object without its closing brace, then the server's members.
    let event = text.get(HEAD.len() - 1..mid.checked_sub(1)?)?;
    let tail = text.get(mid + 1..text.len().checked_sub(1)?)?;
    let (ingested, rest) = tail.split_once(",\"tenant\":")?;
    let tenant = rest.rsplit_once(",\"v\":")?.0;
    let mut out = String::with_capacity(leaf.len() + 128);
    out.push_str(event);
    for (name, raw) in extra {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        out.push_str(raw);
    }
    out.push(',');
    out.push_str(ingested);
    out.push_str(",\"tenant\":");
    out.push_str(tenant);
    out.push('}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every field of an event set, so that each member of the direct encoding is compared
    /// with the encoding of [`Event::to_value`].
    #[test]
    fn canonical_bytes_of_every_field_equal_those_of_the_value() {
        let v = json!({
            "event_id": "01935f6e-7a5b-7c3d-8e9f-0a1b2c3d4e5f", "version": "2.1",
            "event_timestamp": "2025-12-13T02:00:00.5+01:00", "event_type": "a.b.c",
            "event_category": "cat", "event_action": "act", "event_outcome": "failure",
            "actor_type": "user", "actor_id": "jane", "actor_ip": "192.0.2.7",
            "resource_type": "Pod", "resource_id": "p-1", "resource_name": "web-0",
            "correlation_id": "rr-1", "parent_event_id": "01935f6e-7a5b-7c3d-8e9f-0a1b2c3d4e60",
            "parent_event_date": "2025-12-12T00:00:00Z", "trace_id": "t", "span_id": "s",
            "namespace": "ns", "cluster_id": "c1", "severity": "critical",
            "duration_ms": 9_007_199_254_740_991_i64, "error_code": "E1", "error_message": "m\u{e9}\n",
            "event_data": {"z": [1, 2.5, "x"], "\u{e9}": {"b": true, "a": null}, "\u{1F600}": 1, "\u{E000}": 2, "a": 1e300},
            "is_sensitive": true, "retention_days": 36500, "producer_id": "svc",
            "producer_seq": 9_007_199_254_740_991_u64
        });
        let e = Event::from_json(&v, Uuid::now_v7).expect("valid");
        assert_eq!(
            e.canonical_bytes().expect("canonical"),
            canonical::to_vec(&e.to_value()).expect("canonical")
        );
    }

    fn minimal() -> Value {
        json!({
            "event_type": "aianalysis.analysis.completed",
            "event_timestamp": "2025-12-13T02:00:00.123456789+01:00",
            "event_category": "analysis",
            "event_action": "completed",
            "event_outcome": "success",
            "correlation_id": "rr-2025-001",
            "event_data": {"confidence": 0.93}
        })
    }

    #[test]
    fn defaults_follow_kubernaut() {
        let e = Event::from_json(&minimal(), Uuid::now_v7).expect("valid");
        assert_eq!(e.actor_type, "service");
        assert_eq!(e.actor_id, "analysis-service");
        assert_eq!(e.resource_type, "analysis");
        assert_eq!(e.resource_id.as_deref(), Some("rr-2025-001"));
        assert_eq!(e.retention_days, DEFAULT_RETENTION_DAYS);
        assert_eq!(
            format_time(&e.event_timestamp),
            "2025-12-13T01:00:00.123456Z"
        );
    }

    #[test]
    fn request_ids_depend_on_the_request_and_the_place_in_it() {
        let event = |ts: &str| {
            let mut v = minimal();
            v["event_timestamp"] = json!(ts);
            Event::from_json(&v, Uuid::now_v7).expect("valid")
        };
        let (a, b) = (event("2025-12-13T02:00:00Z"), event("2025-12-13T02:00:01Z"));
        let ids = request_ids("acme", &[a.clone(), b.clone()]).expect("ids");
        assert_eq!(ids.len(), 2);
        assert!(ids.iter().all(|id| id.get_version_num() == 8));
        assert_eq!(ids[0].get_variant(), uuid::Variant::RFC4122);
        // The same request again, its events with other ids or re-encoded: the same ids.
        let again = [
            event("2025-12-13T03:00:00.0000001+01:00"),
            event("2025-12-13T02:00:01.000Z"),
        ];
        assert_eq!(ids, request_ids("acme", &again).expect("ids"));
        assert_ne!(
            ids,
            request_ids("globex", &[a.clone(), b.clone()]).expect("ids")
        );
        assert_ne!(
            ids,
            request_ids("acme", &[b.clone(), a.clone()]).expect("ids")
        );
        // Equal events stay distinct, within a request and across requests.
        let twice = request_ids("acme", &[a.clone(), a.clone()]).expect("ids");
        assert_ne!(twice[0], twice[1]);
        assert_ne!(
            request_ids("acme", std::slice::from_ref(&a)).expect("ids")[0],
            twice[0]
        );
    }

    #[test]
    fn a_leaf_summary_reads_what_the_typed_event_holds() {
        let mut v = minimal();
        v["namespace"] = json!("quote\"and\\back\u{e9}");
        v["producer_id"] = json!("p-1");
        v["producer_seq"] = json!(7);
        let e = Event::from_json(&v, Uuid::now_v7).expect("valid");
        let at = DateTime::from_timestamp_micros(1).expect("time");
        let bytes = Record::canonical_bytes_around(&e.canonical_bytes().expect("bytes"), "t", &at);
        let s = LeafSummary::from_bytes(&bytes).expect("summary");
        assert_eq!(s.event.event_id, e.event_id);
        assert_eq!(s.event.time(), Some(e.event_timestamp));
        assert_eq!(s.ingested_at_us(), at.timestamp_micros());
        assert_eq!(s.tenant(), "t");
        assert_eq!(s.event.producer(), Some(("p-1", 7)));
        let owned = LeafSummary::from_bytes(&bytes)
            .expect("summary")
            .into_owned();
        assert_eq!(owned.event.field("namespace"), e.field("namespace"));
        for name in [
            "event_type",
            "event_outcome",
            "actor_id",
            "correlation_id",
            "resource_id",
            "producer_id",
            "namespace",
            "cluster_id",
        ] {
            let expected = if name == "cluster_id" {
                None
            } else {
                e.field(name)
            };
            assert_eq!(s.event.field(name), expected, "{name}");
        }
        assert!(LeafSummary::from_bytes(b"{\"event\":{}}").is_err());
    }

    #[test]
    fn every_problem_is_named_by_field() {
        let mut v = minimal();
        v["event_outcome"] = json!("maybe");
        v["duration_ms"] = json!("fast");
        v["colour"] = json!("red");
        v.as_object_mut().expect("object").remove("event_action");
        let err = Event::from_json(&v, Uuid::now_v7).expect_err("invalid");
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields.len(), 4, "{err}");
        for f in ["event_outcome", "duration_ms", "colour", "event_action"] {
            assert!(fields.contains(&f), "{f} not named in {err}");
        }
    }

    #[test]
    fn events_parsed_into_slots_are_read_as_parsed_maps_are() {
        let id = Uuid::now_v7();
        let by_value = |text: &str| {
            crate::json::from_str(text)
                .map_err(|e| e.to_string())
                .map(|v| Event::from_json(&v, || id))
        };
        let by_slots = |text: &str| {
            EventInput::from_slice(text.as_bytes())
                .map_err(|e| e.to_string())
                .map(|i| Event::from_input(i, || id))
        };
        let mut full = minimal();
        full["event_data"] = json!({"n": 12345678901234567890123u128, "x": [1, {"y": null}]});
        full["colour"] = json!({"deep": [1]});
        full["$serde_json::private::Number"] = json!(1);
        full["duration_ms"] = json!(null);
        full["retention_days"] = json!(30);
        for text in [
            minimal().to_string(),
            full.to_string(),
            r#"{"event_type":"a.b","event_type":"a.c"}"#.into(),
            r#"{"colour":1,"colour":2}"#.into(),
            r#"{"event_data":{"a":1,"a":2}}"#.into(),
            r#"{"colour":{"a":1,"a":2}}"#.into(),
            r#"{"event_id":null}"#.into(),
            "12345678901234567890123".into(),
            "-1.5".into(),
            "[1,2]".into(),
            r#"[{"a":1,"a":1}]"#.into(),
            r#""text""#.into(),
            "true".into(),
            "null".into(),
            "{}".into(),
            "{".into(),
            r#"{"event_type":"a.b"} x"#.into(),
        ] {
            assert_eq!(by_slots(&text), by_value(&text), "{text}");
        }
    }

    #[test]
    fn a_body_is_an_array_of_events_or_one_event() {
        let one = minimal().to_string();
        let parsed = events_from_slice(format!("[{one},7,[],{one}]").as_bytes()).expect("array");
        let kinds: Vec<Option<&str>> = parsed
            .iter()
            .map(|e| match e {
                EventInput::Other(k) => Some(*k),
                EventInput::Object { .. } => None,
            })
            .collect();
        assert_eq!(kinds, [None, Some("a number"), Some("an array"), None]);
        assert_eq!(events_from_slice(one.as_bytes()).expect("one").len(), 1);
        assert!(events_from_slice(b"[]").expect("empty").is_empty());
        let dup = events_from_slice(br#"[{"actor_id":"a","actor_id":"b"}]"#).expect_err("dup");
        assert!(
            dup.to_string().contains("duplicate key `actor_id`"),
            "{dup}"
        );
        assert!(EventInput::from_slice(br#"{"event_id":"x"}"#)
            .expect("one")
            .has_event_id());
        assert!(!EventInput::from_slice(br#"{"event_id":null}"#)
            .expect("one")
            .has_event_id());
    }

    #[test]
    fn payload_size_is_the_length_of_the_canonical_bytes() {
        for v in [
            json!({}),
            json!({"a": 1}),
            json!({"z": [1.5, "é\n"], "a": {"b": null}, "€": true}),
        ] {
            let m = v.as_object().expect("object");
            let bytes = canonical::to_vec(&v).expect("canonical");
            assert_eq!(canonical_size(m), Ok(bytes.len()), "{v}");
        }
    }

    #[test]
    fn payload_limits_hold() {
        let mut deep = json!(1);
        for _ in 0..=MAX_EVENT_DATA_DEPTH {
            deep = json!({ "d": deep });
        }
        let mut v = minimal();
        v["event_data"] = deep;
        assert!(Event::from_json(&v, Uuid::now_v7).is_err());
        v["event_data"] = json!({"big": "x".repeat(MAX_EVENT_DATA_BYTES)});
        assert!(Event::from_json(&v, Uuid::now_v7).is_err());
        v["event_data"] = json!({"n": 18014398509481985u64});
        assert!(Event::from_json(&v, Uuid::now_v7).is_err());
    }

    #[test]
    fn the_size_limit_is_exact_where_the_bound_cannot_settle_it() {
        // `{"s":"…"}` is 8 bytes around the string's canonical form.
        let at_limit = |text: String| {
            let mut v = minimal();
            v["event_data"] = json!({ "s": text });
            Event::from_json(&v, Uuid::now_v7).is_ok()
        };
        assert!(at_limit("x".repeat(MAX_EVENT_DATA_BYTES - 8)));
        assert!(!at_limit("x".repeat(MAX_EVENT_DATA_BYTES - 7)));
        // Six canonical bytes per character: refused though the text is a sixth of the limit.
        assert!(!at_limit("\u{1}".repeat(MAX_EVENT_DATA_BYTES / 6)));
        assert!(at_limit("\u{1}".repeat((MAX_EVENT_DATA_BYTES - 8) / 6)));
        for v in [
            json!("\u{1}\u{1f}\"\\\n é€"),
            json!([1e300, -0.0, 9007199254740991u64, 1e21, null, true, {"k\u{0}": []}]),
        ] {
            let exact = canonical::to_vec(&v).expect("canonical").len();
            let bound = canonical_bound(&v, &mut Vec::new()).expect("canonical");
            assert!(bound >= exact, "{v}: bound {bound} < {exact}");
        }
    }

    #[test]
    fn rendering_a_leaf_without_parsing_matches_rendering_the_parsed_leaf() {
        let mut v = minimal();
        v["event_data"] = json!({"ingested_at": "a trap", "tenant": "another", "n": [1, {"v": 1}]});
        let event = Event::from_json(&v, Uuid::now_v7).expect("valid");
        let rec = Record {
            tenant: "acme".into(),
            ingested_at: Utc::now(),
            event,
        };
        let bytes = rec.canonical_bytes().expect("bytes");
        let text = render_leaf(&bytes, &[("seq", "7"), ("leaf_hash", "\"x\"")]).expect("renders");
        let got: Value = serde_json::from_str(&text).expect("valid JSON");
        let mut want = rec.event.to_value();
        want["seq"] = json!(7);
        want["leaf_hash"] = json!("x");
        want["ingested_at"] = json!(format_time(&rec.ingested_at));
        want["tenant"] = json!("acme");
        assert_eq!(got, want);
        assert_eq!(render_leaf(b"{\"other\":1}", &[]), None);
    }

    #[test]
    fn record_round_trips_through_canonical_bytes() {
        let event = Event::from_json(&minimal(), Uuid::now_v7).expect("valid");
        let rec = Record {
            tenant: "default".into(),
            ingested_at: Utc::now(),
            event,
        };
        let rec = Record::from_bytes(&rec.canonical_bytes().expect("bytes")).expect("decodes");
        let bytes = rec.canonical_bytes().expect("bytes");
        assert_eq!(Record::from_bytes(&bytes).expect("decodes"), rec);
        let event_bytes = rec.event.canonical_bytes().expect("bytes");
        assert_eq!(
            Record::canonical_bytes_around(&event_bytes, "default", &rec.ingested_at),
            bytes
        );
    }
}
