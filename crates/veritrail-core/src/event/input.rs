//! An event's members as parsed, before validation: each known field in a slot of its own.
//!
//! Ingest parses a request straight into these slots instead of building a `serde_json::Map`
//! per event: a member's key is matched against [`KNOWN_FIELDS`] while it is read, not
//! allocated and sorted into a tree only to be taken out again. Values (`event_data` included)
//! are still read strictly ([`crate::json`]), and a repeated key is refused with the same words.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

use super::{field_index, kind, KNOWN_FIELDS};
use crate::json::{Strict, NUMBER_TOKEN};

/// The value of each known field, by its place in [`KNOWN_FIELDS`].
pub(super) type Slots = [Option<Value>; KNOWN_FIELDS.len()];

/// One event of a request as parsed, not yet validated ([`crate::event::Event::from_input`]).
#[derive(Debug, Clone, PartialEq)]
pub enum EventInput {
    /// A JSON object.
    Object {
        /// The members whose keys are fields of an event.
        slots: Box<Slots>,
        /// The keys of the other members, in the order they came (each is an error).
        unknown: Vec<String>,
    },
    /// Any other JSON value, named by its type ("a number"): an error.
    Other(&'static str),
}

impl EventInput {
    /// Sorts an already parsed value into slots (the path of callers that hold a `Value`).
    pub fn from_value(value: Value) -> EventInput {
        let Value::Object(map) = value else {
            return EventInput::Other(kind(&value));
        };
        let mut slots = empty_slots();
        let mut unknown = Vec::new();
        for (key, value) in map {
            match field_of(&key) {
                Some(i) => slots[i] = Some(value),
                None => unknown.push(key),
            }
        }
        EventInput::Object { slots, unknown }
    }

    /// Parses one JSON document as one event, refusing duplicate keys at any depth.
    pub fn from_slice(bytes: &[u8]) -> Result<EventInput, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether the input names its `event_id` (a JSON `null` counts as absent).
    pub fn has_event_id(&self) -> bool {
        match self {
            EventInput::Object { slots, .. } => !matches!(
                slots[const { field_index("event_id") }],
                None | Some(Value::Null)
            ),
            EventInput::Other(_) => false,
        }
    }
}

/// Parses an `application/json` ingest body: an array of events, or one event.
pub fn events_from_slice(bytes: &[u8]) -> Result<Vec<EventInput>, serde_json::Error> {
    serde_json::from_slice::<Batch>(bytes).map(|b| b.0)
}

fn empty_slots() -> Box<Slots> {
    Box::new(std::array::from_fn(|_| None))
}

/// The place of field `name` in [`KNOWN_FIELDS`].
pub(super) fn field_of(name: &str) -> Option<usize> {
    KNOWN_FIELDS.iter().position(|f| *f == name)
}

/// A member's key as it is read.
enum Key {
    Field(usize),
    Unknown(String),
    /// serde_json's marker of an arbitrary-precision number (see [`crate::json`]).
    Number,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match field_of(v) {
            Some(i) => Key::Field(i),
            None if v == NUMBER_TOKEN => Key::Number,
            None => Key::Unknown(v.to_string()),
        })
    }
}

impl<'de> Deserialize<'de> for EventInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventInput, D::Error> {
        d.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

fn duplicate<E: de::Error>(key: &str) -> E {
    de::Error::custom(format_args!("duplicate key `{key}` in an object"))
}

impl<'de> Visitor<'de> for InputVisitor {
    type Value = EventInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an audit event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<EventInput, A::Error> {
        let mut slots = empty_slots();
        let mut unknown: Vec<String> = Vec::new();
        let mut first = true;
        while let Some(key) = access.next_key::<Key>()? {
            match key {
                Key::Number if first => {
                    // A number, not an object, read as `Strict` reads one.
                    let text: String = access.next_value()?;
                    text.parse::<serde_json::Number>()
                        .map_err(de::Error::custom)?;
                    return Ok(EventInput::Other("a number"));
                }
                Key::Field(i) => {
                    if slots[i].is_some() {
                        return Err(duplicate(KNOWN_FIELDS[i]));
                    }
                    slots[i] = Some(access.next_value::<Strict>()?.0);
                }
                Key::Number => unknown.push(member(&mut access, &unknown, NUMBER_TOKEN)?),
                Key::Unknown(k) => unknown.push(member(&mut access, &unknown, &k)?),
            }
            first = false;
        }
        Ok(EventInput::Object { slots, unknown })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<EventInput, A::Error> {
        // Read strictly all the same, so that a duplicate key inside is refused as elsewhere.
        while access.next_element::<Strict>()?.is_some() {}
        Ok(EventInput::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<EventInput, E> {
        Ok(EventInput::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<EventInput, E> {
        Ok(EventInput::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<EventInput, E> {
        Ok(EventInput::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<EventInput, E> {
        Ok(EventInput::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<EventInput, E> {
        Ok(EventInput::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<EventInput, E> {
        Ok(EventInput::Other("null"))
    }
}

/// Reads the value of an unknown member (strictly, though it will be refused) and returns its
/// key, unless the object already had it.
fn member<'de, A: MapAccess<'de>>(
    access: &mut A,
    seen: &[String],
    key: &str,
) -> Result<String, A::Error> {
    if seen.iter().any(|k| k == key) {
        return Err(duplicate(key));
    }
    access.next_value::<Strict>()?;
    Ok(key.to_string())
}

/// An `application/json` body: an array of events, or one event.
struct Batch(Vec<EventInput>);

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Batch, D::Error> {
        d.deserialize_any(BatchVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an audit event or an array of them")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Batch, A::Error> {
        let mut events = Vec::with_capacity(access.size_hint().unwrap_or(0));
        while let Some(e) = access.next_element::<EventInput>()? {
            events.push(e);
        }
        Ok(Batch(events))
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Batch, A::Error> {
        InputVisitor.visit_map(access).map(one)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Batch, E> {
        InputVisitor.visit_bool(v).map(one)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Batch, E> {
        InputVisitor.visit_i64(v).map(one)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Batch, E> {
        InputVisitor.visit_u64(v).map(one)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Batch, E> {
        InputVisitor.visit_f64(v).map(one)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Batch, E> {
        InputVisitor.visit_str(v).map(one)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Batch, E> {
        InputVisitor.visit_unit().map(one)
    }
}

fn one(e: EventInput) -> Batch {
    Batch(vec![e])
}
