//! Per-event cost of the ingest steps on a realistic batch: parse, validate, canonical bytes,
//! leaf hash. `cargo run --release -p veritrail-core --example ingest_parts`
use serde_json::{json, Value};
use std::time::Instant;
use uuid::Uuid;
use veritrail_core::event::{Event, Record};

fn main() {
    let n = 1000;
    let events: Vec<Value> = (0..n).map(|i| json!({
        "event_type": "remediation.workflow.completed",
        "event_timestamp": "2026-11-30T10:00:00.123456Z",
        "event_category": "remediation", "event_action": "completed", "event_outcome": "success",
        "actor_type": "service", "actor_id": "remediation-service", "resource_type": "RemediationRequest",
        "resource_id": format!("rr-{i:08}"), "correlation_id": format!("rr-{i:08}"),
        "namespace": "team-3", "cluster_id": "prod-eu-1", "severity": "info", "duration_ms": 1234,
        "event_data": {"event_type": "remediation.workflow.completed",
            "signal": {"name": "KubePodCrashLooping", "fingerprint": "0123456789abcdef"},
            "target": {"kind": "Deployment", "name": "svc-12", "namespace": "payments"},
            "notes": "abcdefghijklmnopqrstuvwxyz".repeat(12)}
    })).collect();
    let body = serde_json::to_vec(&events).unwrap();
    let rounds = 200;
    let t = Instant::now();
    let mut parsed = Vec::new();
    for _ in 0..rounds {
        parsed = match veritrail_core::json::from_slice(&body).unwrap() {
            Value::Array(a) => a,
            _ => unreachable!(),
        };
    }
    let parse = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    let t = Instant::now();
    let mut evs = Vec::new();
    for _ in 0..rounds {
        evs = parsed
            .iter()
            .map(|v| Event::from_json(v, Uuid::now_v7).unwrap())
            .collect::<Vec<_>>();
    }
    let validate = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        let items = match veritrail_core::json::from_slice(&body).unwrap() {
            Value::Array(a) => a,
            _ => unreachable!(),
        };
        evs = items
            .into_iter()
            .map(|v| Event::from_json_owned(v, Uuid::now_v7).unwrap())
            .collect::<Vec<_>>();
    }
    let owned = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    println!("parse + validate, taking the value: {owned:.0} ns");
    let t = Instant::now();
    for _ in 0..rounds {
        evs = veritrail_core::event::events_from_slice(&body)
            .unwrap()
            .into_iter()
            .map(|i| Event::from_input(i, Uuid::now_v7).unwrap())
            .collect::<Vec<_>>();
    }
    let slots = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    println!("parse into slots + validate (ingest's path): {slots:.0} ns");
    let t = Instant::now();
    for _ in 0..rounds * n {
        std::hint::black_box(Uuid::now_v7());
    }
    println!(
        "Uuid::now_v7: {:.0} ns",
        t.elapsed().as_nanos() as f64 / (rounds * n) as f64
    );
    let t = Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        for e in &evs {
            total += e.canonical_bytes().unwrap().len();
        }
    }
    let canon = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    let t = Instant::now();
    for _ in 0..rounds {
        for e in &evs {
            total += veritrail_core::canonical::to_vec(&e.to_value())
                .unwrap()
                .len();
        }
    }
    let canon_old = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    let bytes: Vec<Vec<u8>> = evs.iter().map(|e| e.canonical_bytes().unwrap()).collect();
    let at = chrono::Utc::now();
    let t = Instant::now();
    for _ in 0..rounds {
        for b in &bytes {
            let r = Record::canonical_bytes_around(b, "default", &at);
            total += veritrail_core::hash::leaf_hash(&r)[0] as usize;
        }
    }
    let hash = t.elapsed().as_nanos() as f64 / (rounds * n) as f64;
    println!("per event (ns): parse {parse:.0}, validate {validate:.0}, canonical {canon:.0} (via value {canon_old:.0}), record+hash {hash:.0}  [{total}]");
}
