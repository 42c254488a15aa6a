//! Producer input as `POST /v1/events` reads it: bytes → `event::events_from_slice` (one object
//! or an array of them) → `Event::from_input`, or, when the whole input is not one JSON
//! document, one object per line as an NDJSON body. Every accepted event must satisfy the ingest
//! invariant (`veritrail_fuzz::check_accepted_event`), and the same bytes read as a tree
//! (`json::from_slice` → `Event::from_json`) must be decided exactly alike.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use veritrail_core::event::{events_from_slice, Event, EventInput};
use veritrail_core::json;

fn check(input: EventInput, tree: &Value) {
    let read = Event::from_input(input, veritrail_fuzz::new_id);
    let by_tree = Event::from_json(tree, veritrail_fuzz::new_id);
    assert_eq!(read, by_tree, "the two parses disagree");
    if let Ok(event) = read {
        veritrail_fuzz::check_accepted_event(&event);
    }
}

fuzz_target!(|data: &[u8]| {
    match (events_from_slice(data), json::from_slice(data)) {
        (Ok(inputs), Ok(Value::Array(items))) => {
            assert_eq!(inputs.len(), items.len());
            inputs.into_iter().zip(&items).for_each(|(i, v)| check(i, v));
        }
        (Ok(mut inputs), Ok(value)) => {
            assert_eq!(inputs.len(), 1);
            check(inputs.remove(0), &value);
        }
        (Err(_), Err(_)) => {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match (EventInput::from_slice(line.as_bytes()), json::from_str(line)) {
                    (Ok(input), Ok(value)) => check(input, &value),
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!("one parse refused a line the other took: {a:?} / {b:?}"),
                }
            }
        }
        (a, b) => panic!("one parse refused what the other took: {a:?} / {b:?}"),
    }
});
