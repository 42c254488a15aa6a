//! Retention policy and dry run against the real server: floors only lengthen, the policy lives
//! in the log, and a dry run at a later time counts exactly the expired, unheld events.

use chrono::{Duration, Utc};
use serde_json::{json, Value};

use crate::support::{self, Server};

const ADMIN: &str = "vt_retention_admin_0123456789abcdefghijklm";

/// `n` events of a correlation, kept `days` days.
fn events(corr: &str, n: usize, days: u32, category: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                let mut e = support::event(i, corr);
                e["retention_days"] = json!(days);
                e["event_category"] = json!(category);
                e
            })
            .collect(),
    )
}

fn dry_run(server: &Server, days_ahead: i64) -> Value {
    let at = (Utc::now() + Duration::days(days_ahead)).to_rfc3339();
    let path = format!("/v1/admin/retention/dry-run?at={}", at.replace('+', "%2B"));
    server.get_as(ADMIN, &path).ok_json()
}

#[test]
fn a_dry_run_counts_the_expired_unheld_events_under_the_policy_in_force() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start_authenticated(&data, ADMIN);
    let (producer, reader) = (server.key(ADMIN, "producer"), server.key(ADMIN, "reader"));
    let held = support::corr("held");
    // A hold placed before its events arrive.
    let r = server.post_as(
        ADMIN,
        "/v1/holds",
        &json!({"filter": {"correlation_id": held}, "reason": "case 9"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    for batch in [
        events(&support::corr("ci"), 5, 1, "ci"),
        events(&held, 3, 1, "ci"),
        events(&support::corr("iam"), 4, 1, "iam"),
        events(&support::corr("long"), 2, 3650, "ci"),
    ] {
        let r = server.post_as(&producer, "/v1/events", &batch);
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Nothing has expired today; in two days every one-day event has, but the held ones stay.
    assert_eq!(dry_run(&server, 0)["expired"], 0);
    let later = dry_run(&server, 2);
    assert_eq!(later["expired"], 12, "{later}");
    assert_eq!(later["held"], 3, "{later}");
    assert_eq!(later["removable"], 9);
    assert!(
        later["removable_bytes"].as_u64().unwrap() > 9 * 200,
        "{later}"
    );
    assert_eq!(later["by_category"]["iam"]["removable"], 4);
    assert_eq!(later["by_category"]["ci"]["held"], 3);
    assert!(
        later["next_expiry"].is_string(),
        "the ten-year events: {later}"
    );

    // A floor lengthens: with 30 days for everything and 400 for iam, nothing goes in two days.
    let policy =
        json!({"policy": {"min_days": 30, "categories": {"iam": 400}}, "reason": "SOX 404"});
    let set = server.post_as(ADMIN, "/v1/admin/retention/policy", &policy);
    assert_eq!(set.status, 200, "{}", set.text);
    assert_eq!(dry_run(&server, 2)["expired"], 0);
    let month = dry_run(&server, 31);
    assert_eq!(
        (month["expired"].clone(), month["held"].clone()),
        (json!(8), json!(3)),
        "{month}"
    );
    assert_eq!(
        month["by_category"].get("iam"),
        None,
        "iam is kept 400 days: {month}"
    );

    // Only admins; bad policies are refused; the policy lives in the log and survives a restart.
    server
        .get_as(&reader, "/v1/admin/retention/policy")
        .problem(403);
    for bad in [
        json!({"policy": {"min_days": 0}, "reason": "r"}),
        json!({"policy": {"categories": {"iam": "long"}}, "reason": "r"}),
        json!({"policy": {"min_days": 30}}),
    ] {
        let r = server.post_as(ADMIN, "/v1/admin/retention/policy", &bad);
        r.problem(400);
    }
    server
        .get_as(ADMIN, "/v1/admin/retention/dry-run?at=soon")
        .problem(400);
    // Floors only rise: the events stored under 30 days were promised 30 days.
    let lower = json!({"policy": {"min_days": 7, "categories": {"iam": 400}}, "reason": "cost"});
    let r = server.post_as(ADMIN, "/v1/admin/retention/policy", &lower);
    r.problem_saying(409, "from 30 to 7");
    server.stop();
    let server = Server::start_authenticated(&data, ADMIN);
    let shown = server.get_as(ADMIN, "/v1/admin/retention/policy").ok_json();
    assert_eq!(shown["policy"], policy["policy"], "{shown}");
    assert_eq!(shown["reason"], "SOX 404");
    let logged = server
        .get_as(
            ADMIN,
            "/v1/events?event_type=veritrail.retention.policy_set",
        )
        .ok_json();
    assert_eq!(logged["events"][0]["event_data"]["reason"], "SOX 404");
    // No producer can write a policy of its own.
    let mut forged = support::event(0, "x");
    forged["producer_id"] = json!("veritrail.retention");
    let r = server.post_as(&producer, "/v1/events", &forged);
    r.problem(400);
}

#[test]
fn the_retention_command_shows_sets_and_dry_runs() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let run = |args: &[&str]| server.cli_as(ADMIN, args);
    let (ok, out, shown) = run(&["retention", "show"]);
    assert!(ok && out.contains("no policy was set"), "{shown}");
    let (ok, out, shown) = run(&[
        "retention",
        "set",
        "--min-days",
        "90",
        "--category",
        "iam=400",
        "--reason",
        "SOX",
    ]);
    assert!(
        ok && out.contains("at least 90 days") && out.contains("iam: at least 400"),
        "{shown}"
    );
    let (ok, _, shown) = run(&["retention", "set", "--category", "iam", "--reason", "x"]);
    assert!(!ok && shown.contains("CATEGORY=DAYS"), "{shown}");
    let (ok, out, shown) = run(&["retention", "dry-run", "--at", "2030-01-01"]);
    assert!(
        ok && out.contains("removable") && out.contains("nothing was removed"),
        "{shown}"
    );
}

#[test]
fn a_dry_run_names_the_sealed_segments_a_run_would_remove_whole() {
    let scratch = support::Scratch::new();
    let server = Server::start_with(&scratch.data(), &["--segment-mib", "1"]);
    // More than a segment of one-day events, then a few kept ten years in the open segment.
    for _ in 0..4 {
        server.ingest(&events(&support::corr("ci"), 1000, 1, "ci"));
    }
    server.ingest(&events(&support::corr("long"), 10, 3650, "ci"));
    let at = (Utc::now() + Duration::days(2))
        .to_rfc3339()
        .replace('+', "%2B");
    let path = format!("/v1/admin/retention/dry-run?at={at}");
    // The first segment is sealed in the background.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let report = loop {
        let report = server.get(&path).ok_json();
        if report["whole_segments"]["segments"].as_u64() > Some(0) {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no segment was sealed: {report}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(report["removable"], 4000, "{report}");
    let whole = &report["whole_segments"];
    let (events, bytes) = (
        whole["events"].as_u64().unwrap(),
        whole["bytes"].as_u64().unwrap(),
    );
    assert!(events > 0 && events <= 4000, "{report}");
    // The open segment, which holds the ten-year events, is never removed whole.
    assert!(
        report["segments"].as_u64().unwrap() > whole["segments"].as_u64().unwrap(),
        "{report}"
    );
    // Sealed segments are compressed: fewer bytes on disk than their events take as stored.
    let per_event = report["removable_bytes"].as_u64().unwrap() / 4000;
    assert!(bytes > 0 && bytes < events * per_event, "{report}");
}
