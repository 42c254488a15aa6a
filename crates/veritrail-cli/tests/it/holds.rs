//! Legal holds against the real server: a hold covers events that arrive after it, lives in the
//! log (and so survives a restart), needs the `legal` role and a reason, and answers Kubernaut's
//! legal-hold routes in their shapes.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{self, Server};

const ADMIN: &str = "vt_holds_admin_0123456789abcdefghijklmnopq";

fn events(corr: &str, n: usize) -> Value {
    Value::Array((0..n).map(|i| support::event(i, corr)).collect())
}

#[test]
fn a_hold_placed_before_its_events_covers_them_and_lives_in_the_log() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start_authenticated(&data, ADMIN);
    let (legal, producer) = (server.key(ADMIN, "legal"), server.key(ADMIN, "producer"));
    let call = |server: &Server, method: Method, path: &str, body: Option<&Value>| {
        server.call(method, path, Some(&legal), None, body)
    };
    let corr = support::corr("case");

    let placed = call(
        &server,
        Method::POST,
        "/v1/holds",
        Some(&json!({"filter": {"correlation_id": corr}, "reason": "SEC case 2026-001"})),
    );
    assert_eq!(placed.status, 201, "{}", placed.text);
    let placed = placed.json();
    assert_eq!(placed["events_covered"], 0, "{placed}");
    assert_eq!(placed["filter"], json!({"correlation_id": corr}));
    assert_eq!(placed["active"], true);
    let id = placed["hold_id"].as_str().unwrap().to_string();

    // Events of the correlation arrive after the hold, and others beside them.
    for batch in [events(&corr, 3), events(&support::corr("other"), 2)] {
        let r = server.post_as(&producer, "/v1/events", &batch);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let list = call(&server, Method::GET, "/v1/holds", None).ok_json();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["holds"][0]["hold_id"], id.as_str());
    assert_eq!(
        list["holds"][0]["events_covered"], 3,
        "later events are held"
    );

    // The hold is an event of the log, placed by the key that placed it.
    let logged = call(
        &server,
        Method::GET,
        "/v1/events?event_type=veritrail.hold.placed",
        None,
    )
    .ok_json();
    let logged = &logged["events"][0];
    assert_eq!(logged["event_id"], id.as_str(), "{logged}");
    assert_eq!(logged["event_data"]["reason"], "SEC case 2026-001");
    assert_eq!(
        logged["event_data"]["filter"],
        json!({"correlation_id": corr})
    );

    // Nothing but the log holds it: it is there after a restart.
    server.stop();
    let server = Server::start_authenticated(&data, ADMIN);
    let list = call(&server, Method::GET, "/v1/holds", None).ok_json();
    assert_eq!(list["holds"][0]["hold_id"], id.as_str(), "{list}");
    assert_eq!(list["holds"][0]["events_covered"], 3);

    let release = format!("/v1/holds/{id}/release");
    let released = call(
        &server,
        Method::POST,
        &release,
        Some(&json!({"reason": "case closed"})),
    );
    assert_eq!(released.status, 200, "{}", released.text);
    let released = released.json();
    assert_eq!(released["active"], false);
    assert_eq!(released["released"]["reason"], "case closed");
    let list = call(&server, Method::GET, "/v1/holds", None).ok_json();
    assert_eq!(list["total"], 0, "a released hold is not active: {list}");
    let all = call(&server, Method::GET, "/v1/holds?released=true", None).ok_json();
    assert_eq!(
        all["holds"][0]["released"]["released_by"],
        released["released"]["released_by"]
    );
    let again = call(
        &server,
        Method::POST,
        &release,
        Some(&json!({"reason": "twice"})),
    );
    again.problem(409);
    let unknown = format!("/v1/holds/{}/release", uuid::Uuid::now_v7());
    call(
        &server,
        Method::POST,
        &unknown,
        Some(&json!({"reason": "r"})),
    )
    .problem(404);
}

#[test]
fn holds_need_the_legal_role_a_reason_and_a_filter_and_cannot_be_forged() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (legal, reader, producer) = (
        server.key(ADMIN, "legal"),
        server.key(ADMIN, "reader"),
        server.key(ADMIN, "producer"),
    );
    let place = |key: &str, body: Value| server.post_as(key, "/v1/holds", &body);
    let ok = json!({"filter": {"actor_id": "mallory", "since": "30d"}, "reason": "insider case"});
    place(&reader, ok.clone()).problem(403);
    server.get_as(&reader, "/v1/holds").problem(403);
    for (body, says) in [
        (
            json!({"filter": {"actor_id": "mallory"}}),
            "`reason` is required",
        ),
        (
            json!({"filter": {"actor_id": "mallory"}, "reason": "  "}),
            "must not be blank",
        ),
        (json!({"reason": "r"}), "`filter` is required"),
        (
            json!({"filter": {"colour": "red"}, "reason": "r"}),
            "unknown filter",
        ),
        (
            json!({"filter": {"actor_id": 7}, "reason": "r"}),
            "string values",
        ),
        (
            json!({"filter": {}, "reason": "r", "extra": 1}),
            "unknown member",
        ),
    ] {
        let p = place(&legal, body.clone()).problem(400);
        assert!(p["detail"].as_str().unwrap().contains(says), "{body}: {p}");
    }
    // A relative time is fixed when the hold is placed.
    let hold = place(&legal, ok).json();
    let since = hold["filter"]["since"].as_str().unwrap();
    assert!(since.ends_with('Z') && since.len() == 27, "{hold}");
    // An admin may hold too, and `{}` holds the whole tenant.
    let tenant = server.post_as(
        ADMIN,
        "/v1/holds",
        &json!({"filter": {}, "reason": "regulator hold"}),
    );
    assert_eq!(tenant.status, 201, "{}", tenant.text);
    // No producer can write a hold event of its own: neither with a `veritrail.` type nor under
    // the holds' producer id.
    let mut forged_type = support::event(0, "x");
    forged_type["event_type"] = json!("veritrail.hold.placed");
    let r = server.post_as(&producer, "/v1/events", &forged_type);
    r.problem_saying(400, "reserved");
    let mut forged = support::event(0, "x");
    forged["producer_id"] = json!("veritrail.holds");
    let r = server.post_as(&producer, "/v1/events", &forged);
    r.problem_saying(400, "reserved");
}

#[test]
fn kubernaut_legal_hold_routes_answer_in_its_shapes() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (legal, auditor, producer) = (
        server.key(ADMIN, "legal"),
        server.key(ADMIN, "auditor"),
        server.key(ADMIN, "producer"),
    );
    let corr = support::corr("rr");
    let with_user = |method: Method, path: &str, body: &Value| {
        support::into_resp(
            support::http_client()
                .request(method, format!("{}{path}", server.url))
                .bearer_auth(&legal)
                .header("X-Auth-Request-User", "jane@example.com")
                .json(body)
                .send()
                .unwrap(),
        )
    };
    let place = json!({"correlation_id": corr, "reason": "SEC investigation case #2025-001"});
    // Kubernaut's rule: a correlation id with no events is 404.
    with_user(Method::POST, "/api/v1/audit/legal-hold", &place).problem(404);
    let ty = "gateway.signal.received";
    let event = json!({"version": "1.0", "event_type": ty, "event_category": "gateway",
        "event_action": "received", "event_outcome": "success", "correlation_id": corr,
        "event_timestamp": chrono::Utc::now().to_rfc3339(), "event_data": {"event_type": ty}});
    let r = server.post_as(
        &producer,
        "/api/v1/audit/events/batch",
        &json!([event, event]),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // What Kubernaut's readers see of holds: `legal_hold` on every event (read once before the
    // hold, so that a stale copy of the holds would show).
    let marks = |path: &str, list: &str| {
        let key = if list == "events" { &auditor } else { &legal };
        let page = server.get_as(key, path).ok_json();
        let events = page[list].as_array().unwrap().clone();
        assert_eq!(events.len(), 2, "{page}");
        events
    };
    let query = format!("/api/v1/audit/events?correlation_id={corr}");
    let export = format!("/api/v1/audit/export?correlation_id={corr}");
    for e in marks(&query, "data") {
        assert_eq!(e["legal_hold"], false, "{e}");
    }
    let placed = with_user(Method::POST, "/api/v1/audit/legal-hold", &place);
    assert_eq!(placed.status, 200, "{}", placed.text);
    let placed = placed.json();
    assert_eq!(placed["correlation_id"], corr.as_str());
    assert_eq!(placed["events_affected"], 2);
    assert_eq!(placed["placed_by"], "jane@example.com");
    assert_eq!(placed["reason"], "SEC investigation case #2025-001");
    assert!(
        placed["placed_at"].as_str().unwrap().ends_with('Z'),
        "{placed}"
    );

    let list = server.get_as(&legal, "/api/v1/audit/legal-hold").ok_json();
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["holds"][0]["correlation_id"], corr.as_str());
    assert_eq!(list["holds"][0]["placed_by"], "jane@example.com");
    server
        .get_as(&auditor, "/api/v1/audit/legal-hold")
        .problem(403);
    for e in marks(&query, "data")
        .into_iter()
        .chain(marks(&export, "events"))
    {
        assert_eq!(e["legal_hold"], true, "{e}");
        assert_eq!(e["legal_hold_reason"], "SEC investigation case #2025-001");
        assert_eq!(e["legal_hold_placed_by"], "jane@example.com");
        assert_eq!(e["legal_hold_placed_at"], placed["placed_at"]);
    }
    with_user(
        Method::POST,
        "/api/v1/audit/legal-hold",
        &json!({"reason": "r"}),
    )
    .problem(400);

    let path = format!("/api/v1/audit/legal-hold/{corr}");
    with_user(Method::DELETE, &path, &json!({})).problem(400);
    let released = with_user(
        Method::DELETE,
        &path,
        &json!({"release_reason": "Case closed"}),
    );
    assert_eq!(released.status, 200, "{}", released.text);
    let released = released.json();
    assert_eq!(released["events_released"], 2, "{released}");
    assert_eq!(released["released_by"], "jane@example.com");
    assert!(released["released_at"].is_string());
    with_user(Method::DELETE, &path, &json!({"release_reason": "again"})).problem(404);
    let list = server.get_as(&legal, "/api/v1/audit/legal-hold").ok_json();
    assert_eq!(list, json!({"holds": [], "total": 0}));
    for e in marks(&query, "data") {
        assert_eq!(e["legal_hold"], false, "released: {e}");
        assert!(e.get("legal_hold_reason").is_none(), "{e}");
    }
}

#[test]
fn the_hold_command_places_lists_and_releases() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let legal = server.key(ADMIN, "legal");
    let run = |args: &[&str]| server.cli_as(&legal, args);
    let (ok, _, shown) = run(&["hold", "place", "--reason", "r"]);
    assert!(!ok && shown.contains("--whole-tenant"), "{shown}");
    let (ok, out, shown) = run(&[
        "hold",
        "place",
        "--correlation-id",
        "rr-7",
        "--reason",
        "case 7",
        "--json",
    ]);
    assert!(ok, "{shown}");
    let placed: Value = serde_json::from_str(&out).unwrap();
    let id = placed["hold_id"].as_str().unwrap();
    let (ok, out, shown) = run(&["hold", "list"]);
    assert!(
        ok && out.contains(id) && out.contains("correlation_id=rr-7") && out.contains("case 7"),
        "{shown}"
    );
    let (ok, out, shown) = run(&["hold", "release", id, "--reason", "closed"]);
    assert!(ok && out.contains("released hold"), "{shown}");
    let (ok, out, shown) = run(&["hold", "list"]);
    assert!(ok && out.contains("no holds"), "{shown}");
    let (ok, _, shown) = run(&["hold", "release", id, "--reason", "closed"]);
    assert!(!ok && shown.contains("was released"), "{shown}");
}
