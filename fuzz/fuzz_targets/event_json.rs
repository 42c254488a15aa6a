//! Producer input: bytes → `json::from_slice` → `Event::from_json`, one object or an array of
//! them as `POST /v1/events` splits an `application/json` body (or, when the whole input is not
//! one JSON document, one object per line as an NDJSON body). Every accepted event must satisfy
//! the ingest invariant (`veritrail_fuzz::check_accepted_event`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use veritrail_core::event::Event;
use veritrail_core::json;

fn check(value: &Value) {
    if let Ok(event) = Event::from_json(value, veritrail_fuzz::new_id) {
        veritrail_fuzz::check_accepted_event(&event);
    }
}

fuzz_target!(|data: &[u8]| {
    match json::from_slice(data) {
        Ok(Value::Array(items)) => items.iter().for_each(check),
        Ok(value) => check(&value),
        Err(_) => {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if let Ok(value) = json::from_str(line) {
                    check(&value);
                }
            }
        }
    }
});
