//! Kubernaut's DataStorage write API against the real server: answers, ids in input order,
//! atomic batches, "event at index N" problems, and the events seen through the native API.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{self, Server};

const ADMIN: &str = "vt_kubernaut_admin_0123456789abcdefghijklmno";

fn request(corr: &str, ty: &str, category: &str) -> Value {
    json!({
        "version": "1.0",
        "event_type": ty,
        "event_timestamp": chrono::Utc::now().to_rfc3339(),
        "event_category": category,
        "event_action": ty.rsplit('.').next().unwrap(),
        "event_outcome": "success",
        "correlation_id": corr,
        "event_data": {"event_type": ty},
    })
}

#[test]
fn kubernaut_writes_are_ordinary_events() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let producer = server.key(ADMIN, "producer");
    let auditor = server.key(ADMIN, "auditor");
    let corr = support::corr("rr");
    let post = |path: &str, body: &Value| {
        server.call(Method::POST, path, Some(&producer), None, Some(body))
    };

    let one = post(
        "/api/v1/audit/events",
        &request(&corr, "gateway.signal.received", "gateway"),
    );
    assert_eq!(one.status, 201, "{}", one.text);
    let one = one.json();
    assert!(
        one["event_id"].is_string()
            && one["event_timestamp"].is_string()
            && one["message"].is_string(),
        "{one}"
    );

    let batch = json!([
        request(&corr, "orchestrator.lifecycle.started", "orchestration"),
        request(
            &corr,
            "workflowexecution.workflow.started",
            "workflowexecution"
        ),
        request(&corr, "orchestrator.lifecycle.completed", "orchestration"),
    ]);
    let r = post("/api/v1/audit/events/batch", &batch);
    assert_eq!(r.status, 201, "{}", r.text);
    let ids: Vec<String> = r.json()["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    // In input order, and ordinary events of the native API.
    for (id, sent) in ids.iter().zip(batch.as_array().unwrap()) {
        let e = server
            .get_as(&auditor, &format!("/v1/events/{id}"))
            .ok_json();
        assert_eq!(e["event_type"], sent["event_type"]);
        assert_eq!(e["correlation_id"], corr.as_str());
    }
    let timeline = server
        .get_as(&auditor, &format!("/v1/correlations/{corr}/timeline"))
        .ok_json();
    assert_eq!(timeline["count"], 4);

    // Refusals: the documented 400s, and nothing stored from a bad batch.
    post("/api/v1/audit/events/batch", &json!([])).problem(400);
    post(
        "/api/v1/audit/events/batch",
        &request(&corr, "gateway.signal.received", "gateway"),
    )
    .problem(400);
    // One more than `--max-events-per-request` (1000 by default); distinct events, so that the
    // refusal cannot come from anything but their number.
    let too_many = Value::Array(
        (0..1001)
            .map(|i| {
                let mut e = request(&corr, "gateway.signal.received", "gateway");
                e["event_data"]["n"] = json!(i);
                e
            })
            .collect(),
    );
    let p = post("/api/v1/audit/events/batch", &too_many).problem(400);
    assert!(
        p["detail"].as_str().unwrap().contains("at most 1000"),
        "{p}"
    );
    let mut bad = batch.clone();
    bad[1]["event_data"]["event_type"] = json!("gateway.signal.received");
    let p = post("/api/v1/audit/events/batch", &bad).problem(400);
    assert!(
        p["detail"].as_str().unwrap().contains("event at index 1"),
        "{p}"
    );
    let after = server
        .get_as(&auditor, &format!("/v1/correlations/{corr}/timeline"))
        .ok_json();
    assert_eq!(after["count"], 4, "a refused batch stored something");
    let mut unknown = request(&corr, "gateway.signal.received", "gateway");
    unknown["event_category"] = json!("kitchen");
    post("/api/v1/audit/events", &unknown).problem(400);
    server
        .call(
            Method::POST,
            "/api/v1/audit/events",
            None,
            None,
            Some(&request(&corr, "gateway.signal.received", "gateway")),
        )
        .problem(401);

    // The query API: newest first, offset pagination with the total.
    let q = |params: &str| {
        server.get_as(
            &auditor,
            &format!("/api/v1/audit/events?correlation_id={corr}{params}"),
        )
    };
    let page = q("&limit=3").ok_json();
    assert_eq!(
        page["pagination"],
        json!({"limit": 3, "offset": 0, "total": 4, "has_more": true})
    );
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert!(
        data.windows(2)
            .all(|w| w[0]["event_timestamp"].as_str() >= w[1]["event_timestamp"].as_str()),
        "{page}"
    );
    assert!(data[0]["event_date"].is_string(), "{page}");
    let rest = q("&limit=3&offset=3").ok_json();
    assert_eq!(rest["pagination"]["has_more"], false);
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    let mut seen: Vec<&str> = data
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "pages overlap or miss events");
    let filtered = q("&event_category=orchestration&event_outcome=success").ok_json();
    assert_eq!(filtered["pagination"]["total"], 2);
    let detail =
        q("&detail_key=event_type&detail_value=workflowexecution.workflow.started").ok_json();
    assert_eq!(detail["pagination"]["total"], 1);
    for bad in [
        "&limit=0",
        "&limit=1001",
        "&offset=-1",
        "&detail_key=task_id",
        "&detail_key=bad-key&detail_value=x",
        "&event_outcome=maybe",
        "&colour=red",
    ] {
        q(bad).problem(400);
    }
    server
        .get_as(&producer, "/api/v1/audit/events")
        .problem(403);

    // verify-chain answers from the Merkle log, in Kubernaut's shape.
    let verify = |key: &str, body: &Value| {
        server.call(
            Method::POST,
            "/api/v1/audit/verify-chain",
            Some(key),
            None,
            Some(body),
        )
    };
    let ok = verify(&auditor, &json!({"correlation_id": corr})).ok_json();
    assert_eq!(ok["is_valid"], true, "{ok}");
    assert_eq!(
        (ok["total_events"].as_u64(), ok["verified_events"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(ok["verification_time"].is_string() && ok["message"].is_string());
    let none = verify(&auditor, &json!({"correlation_id": "no-such-operation"})).ok_json();
    assert_eq!(
        (none["is_valid"].as_bool(), none["total_events"].as_u64()),
        (Some(true), Some(0))
    );
    verify(&auditor, &json!({})).problem(400);
    verify(&producer, &json!({"correlation_id": corr})).problem(403);
    // Kubernaut's export: its shape, each event proven in the signed checkpoint it carries.
    let export = server
        .get_as(
            &auditor,
            &format!("/api/v1/audit/export?correlation_id={corr}&include_detached_signature=true"),
        )
        .ok_json();
    let meta = &export["export_metadata"];
    assert_eq!(meta["total_events"], 4, "{export}");
    assert_eq!(export["hash_chain_verification"]["broken_chain_events"], 0);
    assert!(
        meta["signature"]
            .as_str()
            .unwrap()
            .contains("\n— veritrail/default "),
        "signed by the key named after the tenant's origin: {meta}"
    );
    assert_eq!(export["detached_signature"], meta["signature"]);
    let vkey = server.get_as(&auditor, "/v1/key").text;
    assert_eq!(meta["certificate_fingerprint"], vkey.trim(), "{meta}");
    let cp = support::open_note(meta["checkpoint"].as_str().unwrap(), vkey.trim());
    // What Kubernaut's lifecycle e2e test reads.
    assert_eq!(meta["chain_integrity_percentage"], 100.0, "{meta}");
    for (i, e) in export["events"].as_array().unwrap().iter().enumerate() {
        let hash = e["event_hash"].as_str().unwrap();
        assert!(
            hash.len() == 64
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{hash}"
        );
        assert_eq!(e["hash_chain_valid"], true);
        let before = e["previous_event_hash"].as_str().unwrap();
        assert_eq!(before.is_empty(), i == 0, "event {i}: {before}");
    }
    for e in export["events"].as_array().unwrap() {
        let proof: Vec<_> = e["inclusion_proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| veritrail_core::hash::from_b64(p.as_str().unwrap()).unwrap())
            .collect();
        let leaf = support::unhex(e["event_hash"].as_str().unwrap());
        let leaf: veritrail_core::hash::Hash = leaf.try_into().unwrap();
        let index = e["leaf_index"].as_u64().unwrap();
        veritrail_core::merkle::verify_inclusion(index, cp.size, &leaf, &proof, &cp.root)
            .expect("every exported event is in the signed tree");
    }
    server
        .get_as(&auditor, "/api/v1/audit/export?start_time=yesterday")
        .problem(400);
    server
        .get_as(&auditor, "/api/v1/audit/export?redact_pii=true")
        .problem(400);
    server
        .get_as(&producer, "/api/v1/audit/export")
        .problem(403);
}

/// A flipped byte in a stored event: verify-chain says so instead of answering "valid".
#[test]
fn verify_chain_reports_a_damaged_event() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start_authenticated(&data, ADMIN);
    let (producer, auditor) = (server.key(ADMIN, "producer"), server.key(ADMIN, "auditor"));
    let corr = support::corr("tamper");
    let batch = Value::Array(
        (0..5)
            .map(|i| {
                let mut r = request(&corr, "gateway.signal.received", "gateway");
                r["event_data"]["n"] = json!(i);
                r
            })
            .collect(),
    );
    let r = server.call(
        Method::POST,
        "/api/v1/audit/events/batch",
        Some(&producer),
        None,
        Some(&batch),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    server.stop();
    let seg = support::newest_segment(&data);
    let mut bytes = std::fs::read(&seg).expect("segment");
    let at = support::find(&bytes, b"\"n\":2").expect("the third event in the segment");
    bytes[at + 4] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("write");
    let server = Server::start_authenticated(&data, ADMIN);
    let answer = server
        .call(
            Method::POST,
            "/api/v1/audit/verify-chain",
            Some(&auditor),
            None,
            Some(&json!({"correlation_id": corr})),
        )
        .ok_json();
    assert_eq!(answer["is_valid"], false, "{answer}");
    assert!(
        !answer["tampered_events"].as_array().unwrap().is_empty(),
        "{answer}"
    );
}

#[test]
fn notifications_and_reconstruction_are_served_and_kept_apart() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let producer = server.key(ADMIN, "producer");
    let reader = server.key(ADMIN, "reader");
    let corr = support::corr("rr");
    let post = |path: &str, key: &str, body: &Value| {
        server.call(Method::POST, path, Some(key), None, Some(body))
    };

    // A notification record: 201 with its id and times, 409 for its notification id again.
    let record = json!({
        "remediation_id": corr,
        "notification_id": format!("{corr}-n1"),
        "recipient": "ops-team@example.com",
        "channel": "slack",
        "message_summary": "Incident alert: Database connection lost",
        "status": "failed",
        "sent_at": chrono::Utc::now().to_rfc3339(),
        "delivery_status": "500 Internal Server Error",
        "error_message": "Slack API timeout after 30 seconds",
        "escalation_level": 1
    });
    let created = post("/api/v1/audit/notifications", &producer, &record);
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    assert!(
        created["id"].is_u64() && created["created_at"].is_string(),
        "{created}"
    );
    assert_eq!(created["notification_id"], record["notification_id"]);
    let again = post("/api/v1/audit/notifications", &producer, &record).problem(409);
    assert!(again["detail"].as_str().unwrap().contains("-n1"), "{again}");
    let mut changed = record.clone();
    changed["status"] = json!("sent");
    post("/api/v1/audit/notifications", &producer, &changed).problem(409);
    let mut bad = record.clone();
    bad["channel"] = json!("pigeon");
    bad.as_object_mut().unwrap().remove("recipient");
    let p = post("/api/v1/audit/notifications", &producer, &bad).problem(400);
    assert!(
        p["field_errors"]["channel"].is_string() && p["field_errors"]["recipient"].is_string(),
        "{p}"
    );

    // Reconstruction: 404 before any event, 400 without the gateway event, then the YAML.
    let reconstruct = |key: &str| {
        server.call(
            Method::POST,
            &format!("/api/v1/audit/remediation-requests/{corr}/reconstruct"),
            Some(key),
            None,
            None,
        )
    };
    reconstruct(&reader).problem(404);
    reconstruct(&producer).problem(403);
    let mut created_event = request(&corr, "orchestrator.lifecycle.created", "orchestration");
    created_event["event_data"] = json!({
        "event_type": "orchestrator.lifecycle.created",
        "rr_name": "rr-1",
        "namespace": "payment",
        "timeout_config": {"global": "1h", "processing": "10m", "analyzing": "15m"}
    });
    let r = post("/api/v1/audit/events", &producer, &created_event);
    assert_eq!(r.status, 201, "{}", r.text);
    let p = reconstruct(&reader).problem(400);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("gateway.signal.received"),
        "{p}"
    );
    let mut gateway = request(&corr, "gateway.signal.received", "gateway");
    gateway["event_data"] = json!({
        "event_type": "gateway.signal.received",
        "signal_name": "HighCPU",
        "signal_type": "alert",
        "fingerprint": "abc123",
        "severity": "critical",
        "namespace": "payment",
        "resource_kind": "Deployment",
        "resource_name": "payment-api",
        "original_payload": {"alert": "data"},
        "signal_labels": {"alertname": "HighCPU"},
        "signal_annotations": {"summary": "CPU usage is high\nnew: line"}
    });
    let r = post("/api/v1/audit/events", &producer, &gateway);
    assert_eq!(r.status, 201, "{}", r.text);
    let rebuilt = reconstruct(&reader);
    assert_eq!(rebuilt.status, 200, "{}", rebuilt.text);
    let rebuilt = rebuilt.json();
    let yaml = rebuilt["remediation_request_yaml"].as_str().unwrap();
    assert!(yaml.contains("kind: \"RemediationRequest\""), "{yaml}");
    assert!(yaml.contains("\"HighCPU\""), "{yaml}");
    assert!(yaml.contains("\"CPU usage is high\\nnew: line\""), "{yaml}");
    let completeness = rebuilt["validation"]["completeness"].as_u64().unwrap();
    assert!((50..=100).contains(&completeness), "{rebuilt}");
    assert_eq!(rebuilt["correlation_id"], corr.as_str());

    // The notification record is not among Kubernaut's audit events (its client could not
    // decode it) but is an ordinary event natively.
    let listed = server
        .get_as(
            &reader,
            &format!("/api/v1/audit/events?correlation_id={corr}"),
        )
        .ok_json();
    assert_eq!(listed["pagination"]["total"], 2, "{listed}");
    let native = server
        .get_as(
            &reader,
            &format!("/v1/events?correlation_id={corr}&event_category=notification"),
        )
        .ok_json();
    let native = native["events"].as_array().unwrap();
    assert_eq!(native.len(), 1, "{native:?}");
    assert_eq!(native[0]["event_type"], "notification.delivery.failed");

    // What the Kubernaut API writes, the native API cannot forge.
    let mut forged = support::event(0, &corr);
    forged["producer_id"] = json!("kubernaut");
    let p = server
        .call(
            Method::POST,
            "/v1/events",
            Some(&producer),
            None,
            Some(&forged),
        )
        .problem(400);
    assert!(p["detail"].as_str().unwrap().contains("reserved"), "{p}");

    // A known path with a method it does not serve is a problem document too.
    server
        .call(
            Method::PUT,
            "/api/v1/audit/events",
            Some(&producer),
            None,
            None,
        )
        .problem(405);
}
