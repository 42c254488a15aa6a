//! CloudTrail input, as `veritrail import --format cloudtrail` takes it: bytes →
//! `json::from_slice` → `cloudtrail::records_of` (a `{"Records": [...]}` file or one record) →
//! `cloudtrail::to_event` for each record. Every event produced must satisfy the ingest invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veritrail_core::{cloudtrail, json};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = json::from_slice(data) else {
        return;
    };
    let Ok(records) = cloudtrail::records_of(&value) else {
        return;
    };
    for record in records {
        if let Ok(event) = cloudtrail::to_event(record) {
            // The id comes from `eventID` or the record's content, never from the id source.
            assert_eq!(
                event.event_id,
                cloudtrail::event_id(record),
                "cloudtrail event id"
            );
            veritrail_fuzz::check_accepted_event(&event);
        }
    }
});
