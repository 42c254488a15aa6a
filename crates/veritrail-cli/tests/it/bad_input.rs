//! Bad requests get a clear 4xx problem, store nothing, and leave the server serving.
//! Idempotency of client-supplied event ids is checked here too.

use serde_json::{json, Value};

use crate::support::{self, Resp, Server};

/// Sends a rejected request and checks the whole contract: status, problem+json with a
/// detail, nothing stored, and a valid request still succeeds afterwards.
#[track_caller]
fn rejected(server: &Server, status: u16, send: impl FnOnce() -> Resp) -> Value {
    let before = server.tree_size();
    let problem = send().problem(status);
    assert_eq!(
        server.tree_size(),
        before,
        "a rejected request stored something: {problem}"
    );
    problem
}

/// A valid post succeeds and grows the tree by one.
#[track_caller]
fn still_serving(server: &Server) {
    let before = server.tree_size();
    let body = server.post(&support::event(0, "after-rejects")).ok_json();
    assert_eq!(body["tree_size"].as_u64(), Some(before + 1), "{body}");
}

/// The fields the problem's `errors` array names.
fn error_fields(p: &Value) -> Vec<(u64, String)> {
    p["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no `errors` array in {p}"))
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().expect("index"),
                e["field"].as_str().expect("field").to_string(),
            )
        })
        .collect()
}

#[test]
fn invalid_events_are_rejected_with_a_problem_naming_the_field() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    // Something already in the log, so "nothing stored" is checked against a non-empty tree.
    server.ingest(&support::events(2, "seed"));

    let p = rejected(&server, 400, || {
        server.post_raw("application/json", b"{\"event_type\": \"a.b\",".to_vec())
    });
    assert!(p["detail"].as_str().unwrap().contains("JSON"), "{p}");

    let cases: Vec<(&str, Value, &str)> = vec![
        ("wrong type", json!({"event_outcome": 5}), "event_outcome"),
        (
            "invalid enum",
            json!({"event_outcome": "maybe"}),
            "event_outcome",
        ),
        ("unknown field", json!({"colour": "red"}), "colour"),
        (
            "bad timestamp",
            json!({"event_timestamp": "yesterday"}),
            "event_timestamp",
        ),
        (
            "bad event_id",
            json!({"event_id": "not-a-uuid"}),
            "event_id",
        ),
        (
            "event_data not an object",
            json!({"event_data": [1, 2]}),
            "event_data",
        ),
    ];
    for (name, patch, field) in cases {
        let mut e = support::event(0, "bad");
        for (k, v) in patch.as_object().unwrap() {
            e[k] = v.clone();
        }
        let p = rejected(&server, 400, || server.post(&e));
        assert!(
            error_fields(&p).contains(&(0, field.to_string())),
            "{name}: `{field}` not named: {p}"
        );
        assert!(p["detail"].as_str().unwrap().contains(field), "{name}: {p}");
    }

    let mut missing = support::event(0, "bad");
    missing.as_object_mut().unwrap().remove("event_type");
    let p = rejected(&server, 400, || server.post(&missing));
    assert_eq!(error_fields(&p), vec![(0, "event_type".to_string())], "{p}");

    let p = rejected(&server, 400, || server.post(&json!("just a string")));
    assert!(!error_fields(&p).is_empty(), "{p}");

    let p = rejected(&server, 400, || server.post(&json!([])));
    assert!(p["detail"].as_str().unwrap().contains("no events"), "{p}");

    still_serving(&server);
}

#[test]
fn a_batch_with_one_bad_event_stores_nothing() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    let corr = support::corr("atomic");
    let mut batch = support::events(3, &corr);
    batch[1]["event_outcome"] = json!("maybe");
    let good_ids: Vec<String> = [0, 2]
        .iter()
        .map(|&i| batch[i]["event_id"].as_str().unwrap().to_string())
        .collect();
    let p = rejected(&server, 400, || server.post(&batch));
    // Indexes in `errors` are 0-based positions in the request (see the server's ingest).
    assert_eq!(
        error_fields(&p),
        vec![(1, "event_outcome".to_string())],
        "{p}"
    );
    assert!(
        p["detail"].as_str().unwrap().contains("nothing was stored"),
        "{p}"
    );
    for id in &good_ids {
        server.get(&format!("/v1/events/{id}")).problem(404);
    }
    assert!(server.by_correlation(&corr).is_empty());

    // The same batch, fixed, goes in whole.
    batch[1]["event_outcome"] = json!("failure");
    let r = server.ingest(&batch);
    assert_eq!(r.len(), 3);
    assert_eq!(server.by_correlation(&corr).len(), 3);
    still_serving(&server);
}

#[test]
fn limits_are_enforced() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    server.ingest(&support::events(1, "seed"));

    // A body over 5 MiB: 413 before anything is parsed.
    let mut big = support::event(0, "big");
    big["event_data"] = json!({"blob": "x".repeat((5 << 20) + 64)});
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() > 5 << 20);
    rejected(&server, 413, || server.post_raw("application/json", body));

    // More than 1000 events in one request.
    rejected(&server, 413, || server.post(&support::events(1001, "many")));
    // Exactly 1000 is fine.
    assert_eq!(server.ingest(&support::events(1000, "many")).len(), 1000);

    // event_data over 256 KiB.
    let mut fat = support::event(0, "fat");
    fat["event_data"] = json!({"blob": "y".repeat(256 * 1024 + 1)});
    let p = rejected(&server, 400, || server.post(&fat));
    assert_eq!(error_fields(&p), vec![(0, "event_data".to_string())], "{p}");

    // Nesting deeper than 32 levels (event_data itself is level 1).
    let mut deep = json!("bottom");
    for _ in 0..40 {
        deep = json!({ "d": deep });
    }
    let mut nested = support::event(0, "deep");
    nested["event_data"] = deep;
    let p = rejected(&server, 400, || server.post(&nested));
    assert_eq!(error_fields(&p), vec![(0, "event_data".to_string())], "{p}");

    // 32 levels exactly are allowed.
    let mut ok = json!("bottom");
    for _ in 0..31 {
        ok = json!({ "d": ok });
    }
    let mut at_limit = support::event(0, "deep");
    at_limit["event_data"] = ok;
    server.ingest(&at_limit);

    still_serving(&server);
}

#[test]
fn event_ids_are_idempotency_keys() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    server.ingest(&support::events(3, "seed"));
    let e = support::event(7, "idem");
    let id = e["event_id"].as_str().unwrap().to_string();
    let first = server.post(&e).ok_json();
    let size = first["tree_size"].as_u64().unwrap();
    let r1 = support::receipts(&first);

    // The same id and content: the original receipt, and the tree does not grow.
    let again = server.post(&e).ok_json();
    assert_eq!(support::receipts(&again), r1, "{again}");
    assert_eq!(again["tree_size"].as_u64(), Some(size));
    assert_eq!(server.tree_size(), size);

    // Also inside a batch with a new event: only the new one is appended.
    let fresh = support::event(8, "idem");
    let mixed = server.post(&json!([e.clone(), fresh])).ok_json();
    let rs = support::receipts(&mixed);
    assert_eq!(rs[0], r1[0], "{mixed}");
    assert_eq!(rs[1].seq, size, "{mixed}");
    assert_eq!(server.tree_size(), size + 1);

    // The same id with different content: 409, nothing stored, the original kept.
    let mut changed = e.clone();
    changed["actor_id"] = json!("somebody-else");
    let p = rejected(&server, 409, || server.post(&changed));
    assert!(p["detail"].as_str().unwrap().contains(&id), "{p}");
    let stored = server.get(&format!("/v1/events/{id}")).ok_json();
    assert_eq!(stored["actor_id"], e["actor_id"]);
    assert_eq!(stored["seq"].as_u64(), Some(r1[0].seq));

    // A conflicting event makes its whole batch fail.
    let other = support::event(9, "idem");
    let other_id = other["event_id"].as_str().unwrap().to_string();
    rejected(&server, 409, || server.post(&json!([other, changed])));
    server.get(&format!("/v1/events/{other_id}")).problem(404);

    still_serving(&server);
}

#[test]
fn media_types() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    server.ingest(&support::events(1, "seed"));

    let e = support::event(0, "media");
    let p = rejected(&server, 415, || {
        server.post_raw("text/plain", serde_json::to_vec(&e).unwrap())
    });
    assert!(p["detail"].as_str().unwrap().contains("text/plain"), "{p}");

    // NDJSON is accepted, one event per line (blank lines ignored).
    let corr = support::corr("ndjson");
    let lines: Vec<String> = (0..3)
        .map(|i| serde_json::to_string(&support::event(i, &corr)).unwrap())
        .collect();
    let before = server.tree_size();
    let body = format!("{}\n\n{}\n{}\n", lines[0], lines[1], lines[2]);
    let reply = server
        .post_raw("application/x-ndjson", body.into_bytes())
        .ok_json();
    assert_eq!(support::receipts(&reply).len(), 3, "{reply}");
    assert_eq!(server.tree_size(), before + 3);
    assert_eq!(server.by_correlation(&corr).len(), 3);

    // A malformed NDJSON line rejects the whole body and names the line.
    let bad = format!(
        "{}\n{{nope\n",
        serde_json::to_string(&support::event(9, &corr)).unwrap()
    );
    let p = rejected(&server, 400, || {
        server.post_raw("application/x-ndjson", bad.into_bytes())
    });
    assert!(p["detail"].as_str().unwrap().contains("line 2"), "{p}");
    assert_eq!(server.by_correlation(&corr).len(), 3);

    still_serving(&server);
}

#[test]
fn bad_query_parameters_and_unknown_ids() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    let corr = support::corr("q");
    server.ingest(&support::events(5, &corr));

    for path in [
        "/v1/events?colour=red",
        "/v1/events?since=not-a-time",
        "/v1/events?until=31/12/2025",
        "/v1/events?limit=0",
        "/v1/events?limit=5000",
        "/v1/events?limit=ten",
        "/v1/events?cursor=%21%21%21",
        // Valid base64url, but not a cursor this API hands out.
        "/v1/events?cursor=aGVsbG8",
        "/v1/events?order=sideways",
        "/v1/events?actor_id=a&actor_id=b",
        "/v1/events/not-a-uuid",
        "/v1/proof/inclusion?event_id=not-a-uuid",
        "/v1/proof/inclusion",
    ] {
        let r = server.get(path);
        r.problem(400);
    }

    let unknown = uuid::Uuid::now_v7();
    let p = server.get(&format!("/v1/events/{unknown}")).problem(404);
    assert!(
        p["detail"].as_str().unwrap().contains(&unknown.to_string()),
        "{p}"
    );
    server
        .get(&format!("/v1/proof/inclusion?event_id={unknown}"))
        .problem(404);
    server.get("/v1/no-such-route").problem(404);

    // The good versions of the same queries work, and paging with a real cursor does.
    let page = server
        .get(&format!(
            "/v1/events?correlation_id={corr}&limit=2&order=asc"
        ))
        .ok_json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().expect("a cursor").to_string();
    let rest = server
        .get(&format!(
            "/v1/events?correlation_id={corr}&limit=1000&order=asc&cursor={cursor}"
        ))
        .ok_json();
    assert_eq!(rest["events"].as_array().unwrap().len(), 3, "{rest}");
    assert_eq!(server.by_correlation(&corr).len(), 5);
    let recent = server.get("/v1/events?since=1h&limit=1000").ok_json();
    assert_eq!(recent["events"].as_array().unwrap().len(), 5);
    still_serving(&server);
}

#[test]
fn malformed_proof_queries_are_problems_too() {
    let scratch = support::Scratch::new();
    let server = Server::start(&scratch.data());
    server.ingest(&support::events(3, "seed"));
    // Parameters the typed query extractors cannot read: still 400 problem+json.
    for path in [
        "/v1/proof/inclusion?leaf_index=abc",
        "/v1/proof/inclusion?leaf_index=0&colour=red",
        "/v1/proof/consistency",
        "/v1/proof/consistency?from=-1",
    ] {
        server.get(path).problem(400);
    }
    // And the proofs themselves work.
    let p = server.get("/v1/proof/inclusion?leaf_index=1").ok_json();
    assert_eq!(p["leaf_index"].as_u64(), Some(1));
    let c = server.get("/v1/proof/consistency?from=1").ok_json();
    assert_eq!(c["from"].as_u64(), Some(1));
}

#[test]
fn producer_gaps_are_detected_and_served() {
    let scratch = support::Scratch::new();
    let mut server = Server::start(&scratch.data());
    let mut events = Vec::new();
    for seq in [0u64, 1, 2, 5, 6, 3] {
        let mut e = support::event(seq as usize, "gaps");
        e["producer_id"] = json!("svc-a");
        e["producer_seq"] = json!(seq);
        events.push(e);
    }
    server.ingest(&json!(events));
    let resp = server.get("/v1/producers?producer_id=svc-a");
    assert_eq!(resp.status, 200, "{}", resp.text);
    let body = resp.json();
    let p = &body["producers"][0];
    assert_eq!(p["producer_id"], "svc-a", "{body}");
    assert_eq!(p["last_seq"], 6);
    assert_eq!(
        p["missing"], 1,
        "seq 4 is missing, 3 filled its place in the gap: {body}"
    );
    assert_eq!(p["gaps"], json!([{"from": 4, "to": 4}]));
    // The state is derived from the log: it survives a restart and a reindex.
    server.stop();
    let data = scratch.data();
    let out = support::cli(&["reindex", "--data-dir", data.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{}", support::show(&out));
    let server = Server::start(&data);
    let again = server.get("/v1/producers").json();
    assert_eq!(
        again["producers"][0]["gaps"],
        json!([{"from": 4, "to": 4}]),
        "{again}"
    );
}
