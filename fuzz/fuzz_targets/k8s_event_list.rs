//! Kubernetes audit input, as the webhook (`POST /v1/ingest/kubernetes`) and `veritrail import
//! --format kubernetes-audit` take it: bytes → `json::from_slice` → `k8s::events_of` (an
//! `EventList`, one `Event`, a GKE or AKS wrapper) → `k8s::to_event` for each item. Every event
//! produced must satisfy the ingest invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veritrail_core::{json, k8s};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = json::from_slice(data) else {
        return;
    };
    let Ok(items) = k8s::events_of(&body) else {
        return;
    };
    for item in &items {
        if let Ok(event) = k8s::to_event(item) {
            // The id is derived from (auditID, stage), never drawn.
            let audit_id = item.get("auditID").and_then(|v| v.as_str());
            let stage = item.get("stage").and_then(|v| v.as_str());
            if let (Some(a), Some(s)) = (audit_id, stage) {
                assert_eq!(event.event_id, k8s::event_id(a, s), "k8s event id");
            }
            veritrail_fuzz::check_accepted_event(&event);
        }
    }
});
