//! kube-apiserver's audit webhook, fed with a real cluster's audit log (757 events,
//! `../shared/corpus/kubernetes-audit/demo-v1beta1-full-501d132.log`) in `EventList`s of 400, as
//! the apiserver batches them; a retried batch stores nothing new.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{self, Server};

const ADMIN: &str = "vt_webhook_admin_0123456789abcdefghijklmnopq";

fn corpus_log(name: &str) -> Vec<Value> {
    let path = support::corpus(&format!("kubernetes-audit/{name}"));
    std::fs::read_to_string(path)
        .expect("reading the log")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn the_audit_webhook_stores_each_stage_once() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (apiserver, auditor) = (server.key(ADMIN, "producer"), server.key(ADMIN, "auditor"));
    let events = corpus_log("demo-v1beta1-full-501d132.log");
    assert_eq!(events.len(), 757);
    let send = |batch: &[Value]| {
        let list =
            json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": batch});
        server.call(
            Method::POST,
            "/v1/ingest/kubernetes",
            Some(&apiserver),
            None,
            Some(&list),
        )
    };
    let mut stored = 0;
    for batch in events.chunks(400) {
        let r = send(batch).ok_json();
        stored += r["stored"].as_u64().unwrap();
    }
    assert_eq!(stored, 757);
    // The apiserver retries a batch whose answer it did not get: nothing is stored twice.
    let again = send(&events[..400]).ok_json();
    assert_eq!(
        (again["stored"].as_u64(), again["repeated"].as_u64()),
        (Some(0), Some(400))
    );
    // A bare Event is accepted too.
    let one = server
        .call(
            Method::POST,
            "/v1/ingest/kubernetes",
            Some(&apiserver),
            None,
            Some(&events[0]),
        )
        .ok_json();
    assert_eq!(one["repeated"], 1);

    // A request's stages in order, under its auditID.
    let audit_id = events
        .iter()
        .find(|e| e["stage"] == "RequestReceived")
        .and_then(|e| e["auditID"].as_str())
        .unwrap();
    let timeline = server
        .get_as(&auditor, &format!("/v1/correlations/{audit_id}/timeline"))
        .ok_json();
    let stages: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_data"]["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["RequestReceived", "ResponseComplete"],
        "{timeline}"
    );
    // Forbidden requests are failures, by the user who made them.
    let page = server
        .get_as(
            &auditor,
            "/v1/events?event_category=kubernetes&event_outcome=failure&limit=1000",
        )
        .ok_json();
    let failures = page["events"].as_array().unwrap();
    let expected = events
        .iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["responseStatus"]["code"]
                    .as_i64()
                    .is_some_and(|c| c >= 400)
        })
        .count();
    assert_eq!(failures.len(), expected);

    // Not an audit event: 400 naming the place.
    let bad = json!({"kind": "EventList", "items": [events[1], {"kind": "Event"}]});
    let p = server
        .call(
            Method::POST,
            "/v1/ingest/kubernetes",
            Some(&apiserver),
            None,
            Some(&bad),
        )
        .problem(400);
    assert!(
        p["detail"].as_str().unwrap().contains("event at index 1"),
        "{p}"
    );
    server
        .call(
            Method::POST,
            "/v1/ingest/kubernetes",
            Some(&apiserver),
            None,
            Some(&json!({"kind": 0})),
        )
        .problem(400);
}
