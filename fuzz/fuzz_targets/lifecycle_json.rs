//! The lifecycle's request bodies as the server reads them: bytes → `json::from_slice` → a hold's
//! filter (`hold::filter_from_json`) and a retention policy (`retention::Policy::from_json`).
//! Whatever either accepts must survive its own JSON form unchanged (it is stored in the log and
//! read back by the same functions), a hold on an accepted filter must make a valid event, and a
//! policy never lowers itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veritrail_core::event::Event;
use veritrail_core::hold::{self, Act, Hold};
use veritrail_core::json;
use veritrail_core::retention::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = json::from_slice(data) else {
        return;
    };
    let now = veritrail_fuzz::ingested_at();
    let source = value.get("filter").unwrap_or(&value);
    if let Ok(filter) = hold::filter_from_json(source, now) {
        let again = hold::filter_from_json(&hold::filter_to_json(&filter), now)
            .expect("a stored filter reads back");
        assert_eq!(again, filter, "a filter changed through its stored form");
        let placed = Act {
            by: "fuzz".into(),
            at: now,
            reason: "fuzz".into(),
        };
        let hold = Hold::new(veritrail_fuzz::new_id(), filter, placed);
        let event = hold.placed_event(("user", "fuzz"));
        if let Err(e) = Event::from_json(&event, veritrail_fuzz::new_id) {
            panic!("a hold on an accepted filter makes an invalid event: {e}");
        }
        let folded = hold::fold([&event]).expect("the hold's event folds");
        assert_eq!(folded, vec![hold], "the hold changed through its event");
    }
    let source = value.get("policy").unwrap_or(&value);
    if let Ok(policy) = Policy::from_json(source) {
        assert_eq!(Policy::from_json(&policy.to_json()).as_ref(), Ok(&policy));
        assert_eq!(policy.lowered_by(&policy), None);
    }
});
