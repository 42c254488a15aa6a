//! Access control against a real server that checks keys: authentication, roles, tenant
//! isolation, keys at rest, actor attribution, and the access events every look leaves.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{self, Server};

const ADMIN: &str = "vt_test_admin_0123456789abcdefghijklmnopqrstuvwxyz";

fn post_as(server: &Server, key: &str, events: &Value) -> support::Resp {
    server.call(Method::POST, "/v1/events", Some(key), None, Some(events))
}

#[test]
fn keys_are_required_checked_and_revocable() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let corr = support::corr("auth");

    // No key, a malformed header, an unknown key: 401 with a challenge, as a problem.
    let none = server.get("/v1/events");
    none.problem(401);
    server
        .call(Method::GET, "/v1/events", Some("not-a-key"), None, None)
        .problem(401);
    assert_eq!(server.get("/healthz").status, 200, "health needs no key");
    assert_eq!(
        server.get("/metrics").status,
        401,
        "metrics on the API port need a key"
    );

    let (_, producer) = server.create_key(ADMIN, Some("default"), "producer", json!({}));
    let (reader_id, reader) = server.create_key(ADMIN, Some("default"), "reader", json!({}));
    let (_, auditor) = server.create_key(ADMIN, Some("default"), "auditor", json!({}));

    // Wrong role: 403, naming the role needed.
    let p = server.get_as(&producer, "/v1/events").problem(403);
    assert!(p["detail"].as_str().unwrap().contains("reader"), "{p}");
    post_as(&server, &reader, &support::events(1, &corr)).problem(403);
    server
        .get_as(&reader, "/v1/proof/inclusion?leaf_index=0")
        .problem(403);
    server.get_as(&reader, "/v1/export").problem(403);
    server.get_as(&auditor, "/v1/admin/keys").problem(403);
    post_as(&server, ADMIN, &support::events(1, &corr)).problem(403);

    // Right roles work.
    let receipts = post_as(&server, &producer, &support::events(3, &corr)).ok_json();
    assert_eq!(receipts["receipts"].as_array().unwrap().len(), 3);
    let page = server
        .get_as(&reader, &format!("/v1/events?correlation_id={corr}"))
        .ok_json();
    assert_eq!(page["events"].as_array().unwrap().len(), 3);
    server
        .get_as(&auditor, "/v1/proof/inclusion?leaf_index=0")
        .ok_json();
    assert_eq!(server.get_as(ADMIN, "/metrics").status, 200);

    // Revoked: 401 from then on, and the listing says so.
    let r = server.call(
        Method::DELETE,
        &format!("/v1/admin/keys/{reader_id}"),
        Some(ADMIN),
        None,
        None,
    );
    assert!(r.ok_json()["revoked_at"].is_string());
    server.get_as(&reader, "/v1/events").problem(401);
    let list = server.get_as(ADMIN, "/v1/admin/keys").ok_json();
    let listed: Vec<&Value> = list["keys"].as_array().unwrap().iter().collect();
    assert!(listed
        .iter()
        .all(|k| k.get("key").is_none() && k.get("mac").is_none()));
    assert!(listed
        .iter()
        .any(|k| k["id"] == reader_id.as_str() && k["revoked_at"].is_string()));

    // Expired: 401 once the time has passed.
    let (_, brief) = server.create_key(ADMIN, Some("default"), "reader", json!({"expires": "1s"}));
    server.get_as(&brief, "/v1/events?limit=1").ok_json();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.get_as(&brief, "/v1/events?limit=1").problem(401);

    // Refusals are counted.
    let metrics = server.get_as(ADMIN, "/metrics").text;
    assert!(
        metrics.contains("veritrail_auth_failures_total"),
        "{metrics}"
    );
}

#[test]
fn a_tenant_sees_nothing_of_another_tenant() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (_, prod_a) = server.create_key(ADMIN, Some("tenant-a"), "producer", json!({}));
    let (_, aud_a) = server.create_key(ADMIN, Some("tenant-a"), "auditor", json!({}));
    let (_, aud_b) = server.create_key(ADMIN, Some("tenant-b"), "auditor", json!({}));
    let (_, admin_b) = server.create_key(ADMIN, Some("tenant-b"), "admin", json!({}));
    let corr = support::corr("secret");
    let mut events = support::events(4, &corr);
    for e in events.as_array_mut().unwrap() {
        e["producer_id"] = json!("producer-of-a");
        e["producer_seq"] = json!(1);
    }
    events.as_array_mut().unwrap().truncate(1);
    let receipts = support::receipts(&post_as(&server, &prod_a, &events).ok_json());
    let id = receipts[0].event_id.clone();

    // Tenant A sees its event; tenant B gets 404 or nothing, never a count or a hint.
    server.get_as(&aud_a, &format!("/v1/events/{id}")).ok_json();
    server
        .get_as(&aud_b, &format!("/v1/events/{id}"))
        .problem(404);
    server
        .get_as(&aud_b, &format!("/v1/proof/inclusion?event_id={id}"))
        .problem(404);
    for path in [
        format!("/v1/events?correlation_id={corr}"),
        "/v1/events?event_type=it.widget.created".to_string(),
    ] {
        let page = server.get_as(&aud_b, &path).ok_json();
        assert_eq!(page["events"], json!([]), "{path}: {page}");
    }
    let timeline = server
        .get_as(&aud_b, &format!("/v1/correlations/{corr}/timeline"))
        .ok_json();
    assert_eq!(timeline["count"], 0);
    let producers = server.get_as(&aud_b, "/v1/producers").ok_json();
    assert!(
        !producers.to_string().contains("producer-of-a"),
        "{producers}"
    );
    // B's log holds only B's own access and key events (which mention what B asked for).
    let bundle = server.get_as(&aud_b, "/v1/export").text;
    for line in bundle.lines().skip(1) {
        let doc: Value = serde_json::from_str(line).unwrap();
        let leaf = &doc["leaf"];
        assert_eq!(leaf["tenant"], "tenant-b", "{line}");
        let ty = leaf["event"]["event_type"].as_str().unwrap();
        assert!(
            ty.starts_with("veritrail."),
            "B's export holds A's event: {line}"
        );
    }
    // B's tree does not even count A's event.
    let cp_b = server.get_as(&aud_b, "/v1/checkpoint").text;
    assert!(cp_b.contains("/tenant-b\n"), "{cp_b}");
    // A key cannot be pointed at another tenant, and B's admin cannot touch A's keys.
    server
        .call(
            Method::GET,
            "/v1/events",
            Some(&aud_b),
            Some("tenant-a"),
            None,
        )
        .problem(403);
    let a_keys = server
        .get_as(&admin_b, "/v1/admin/keys?tenant=tenant-a")
        .ok_json();
    assert!(
        a_keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["tenant"] == "tenant-b"),
        "{a_keys}"
    );
    let a_key_id = server
        .get_as(ADMIN, "/v1/admin/keys?tenant=tenant-a")
        .ok_json()["keys"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .call(
            Method::DELETE,
            &format!("/v1/admin/keys/{a_key_id}"),
            Some(&admin_b),
            None,
            None,
        )
        .problem(404);
    let body = json!({"tenant": "tenant-a", "role": "reader"});
    server
        .call(
            Method::POST,
            "/v1/admin/keys",
            Some(&admin_b),
            None,
            Some(&body),
        )
        .problem(403);
    // Nor may B's admin see metrics (they span tenants) or claim a client certificate.
    server.get_as(&admin_b, "/metrics").problem(403);
    let cert =
        json!({"tenant": "tenant-b", "role": "producer", "client_cert_sha256": "ab".repeat(32)});
    server
        .call(
            Method::POST,
            "/v1/admin/keys",
            Some(&admin_b),
            None,
            Some(&cert),
        )
        .problem(403);
    // The cross-tenant admin reaches A only by naming it.
    let page = server
        .call(
            Method::GET,
            &format!("/v1/events?correlation_id={corr}"),
            Some(ADMIN),
            Some("tenant-a"),
            None,
        )
        .ok_json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
}

#[test]
fn no_key_can_be_recovered_from_the_data_directory() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let mut server = Server::start_authenticated(&data, ADMIN);
    let tokens: Vec<String> = ["producer", "reader", "auditor", "legal", "admin"]
        .iter()
        .map(|r| server.create_key(ADMIN, Some("default"), r, json!({})).1)
        .collect();
    post_as(
        &server,
        &tokens[0],
        &support::events(2, &support::corr("k")),
    )
    .ok_json();
    server.get_as(&tokens[1], "/v1/events").ok_json();
    server.stop();
    let mut secrets: Vec<&str> = tokens.iter().map(|t| t.trim_start_matches("vt_")).collect();
    secrets.push(ADMIN);
    let mut stack = vec![data.clone()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&p).unwrap();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds a key in the clear",
                p.display()
            );
        }
    }
    assert!(files > 5, "the scan saw the data directory ({files} files)");
}

#[test]
fn reads_leave_provable_access_events_and_people_are_the_actors() {
    let scratch = support::Scratch::new();
    let data = scratch.data();
    let server = Server::start_authenticated(&data, ADMIN);
    let (_, alice) = server.create_key(
        ADMIN,
        Some("default"),
        "producer",
        json!({"person": "alice@example.com"}),
    );
    let (auditor_id, auditor) = server.create_key(ADMIN, Some("default"), "auditor", json!({}));
    let corr = support::corr("who");
    let mut events = support::events(1, &corr);
    events[0]["actor_type"] = json!("service");
    events[0]["actor_id"] = json!("mallory");
    let receipts = support::receipts(&post_as(&server, &alice, &events).ok_json());
    let stored = server
        .get_as(&auditor, &format!("/v1/events/{}", receipts[0].event_id))
        .ok_json();
    assert_eq!(
        stored["actor_id"], "alice@example.com",
        "the claimed actor was kept: {stored}"
    );
    assert_eq!(stored["actor_type"], "user");

    // A query, then the access event that describes it.
    let page = server
        .get_as(&auditor, &format!("/v1/events?correlation_id={corr}"))
        .ok_json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    let trail = server
        .get_as(
            &auditor,
            "/v1/events?event_type=veritrail.access.query&order=asc&limit=1000",
        )
        .ok_json();
    let described = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["event_data"]["filters"]
                .as_array()
                .is_some_and(|f| f.iter().any(|p| p[1] == corr.as_str()))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no access event for the query: {trail}"));
    assert_eq!(described["actor_id"], format!("key:{auditor_id}"));
    assert_eq!(described["event_data"]["results"], 1);
    assert_eq!(described["event_data"]["key"]["role"], "auditor");

    // Provable like any other event: export the access events and verify the bundle offline.
    let bundle = server
        .get_as(&auditor, "/v1/export?event_type=veritrail.access.query")
        .text;
    assert!(bundle.contains(described["event_id"].as_str().unwrap()));
    let bundle_path = scratch.tmp.path().join("access.ndjson");
    std::fs::write(&bundle_path, &bundle).unwrap();
    let vkey = server.get_as(&auditor, "/v1/key").text;
    let out = support::cli(&[
        "verify",
        bundle_path.to_str().unwrap(),
        "--vkey",
        vkey.trim(),
    ]);
    assert!(out.status.success(), "{}", support::show(&out));

    // The admin's own actions are in the trail too.
    let created = server
        .get_as(
            &auditor,
            "/v1/events?event_type=veritrail.admin.key_created&limit=1000",
        )
        .ok_json();
    assert!(
        created["events"].as_array().unwrap().len() >= 2,
        "{created}"
    );
}

/// A proof served leaves one access event naming its leaf and tree size; one refused for a tree
/// size the log has not reached leaves none (the event is queued before the proof is read, so
/// that its fsync overlaps the reads, but only once the request is known to be answerable).
#[test]
fn proofs_leave_access_events_and_refused_ones_do_not() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (_, producer) = server.create_key(ADMIN, Some("default"), "producer", json!({}));
    let (_, auditor) = server.create_key(ADMIN, Some("default"), "auditor", json!({}));
    post_as(
        &server,
        &producer,
        &support::events(3, &support::corr("prf")),
    )
    .ok_json();
    let proof_events = || {
        server
            .get_as(
                &auditor,
                "/v1/events?event_type=veritrail.access.proof&order=asc&limit=1000",
            )
            .ok_json()["events"]
            .as_array()
            .unwrap()
            .clone()
    };
    let p = server
        .get_as(&auditor, "/v1/proof/inclusion?leaf_index=1&tree_size=3")
        .ok_json();
    assert_eq!(p["proof"].as_array().unwrap().len(), 2);
    server
        .get_as(&auditor, "/v1/proof/consistency?from=1&to=3")
        .ok_json();
    let seen = proof_events();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["event_data"]["leaf_index"], 1);
    assert_eq!(seen[0]["event_data"]["tree_size"], 3);
    assert_eq!(seen[1]["event_data"]["to"], 3);
    server
        .get_as(&auditor, "/v1/proof/inclusion?leaf_index=1&tree_size=999")
        .problem(400);
    server
        .get_as(&auditor, "/v1/proof/consistency?from=1&to=999")
        .problem(400);
    assert_eq!(
        proof_events().len(),
        2,
        "a refused proof left an access event"
    );
}

#[test]
fn denied_requests_are_logged_once_per_source_and_interval() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    for _ in 0..20 {
        server
            .get_as("vt_wrong_key_wrong_key_wrong_key_wrong", "/v1/events")
            .problem(401);
    }
    let (_, auditor) = server.create_key(ADMIN, Some("default"), "auditor", json!({}));
    let denied = server
        .get_as(
            &auditor,
            "/v1/events?event_type=veritrail.access.denied&limit=1000",
        )
        .ok_json();
    let list = denied["events"].as_array().unwrap();
    assert_eq!(
        list.len(),
        1,
        "a flood of bad keys floods the log: {denied}"
    );
    assert_eq!(list[0]["event_outcome"], "failure");
    assert_eq!(list[0]["actor_ip"], "127.0.0.1");
    let metrics = server.get_as(ADMIN, "/metrics").text;
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("veritrail_auth_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= 20.0, "{metrics}");
}

#[test]
fn the_cli_manages_keys() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let run = |args: &[&str]| {
        support::command()
            .args(args)
            .env("VERITRAIL_KEY", ADMIN)
            .env("VERITRAIL_SERVER", &server.url)
            .output()
            .expect("running veritrail")
    };
    let out = run(&[
        "keys",
        "create",
        "--tenant",
        "ops",
        "--role",
        "reader",
        "--name",
        "sre",
        "--expires",
        "90d",
    ]);
    assert!(out.status.success(), "{}", support::show(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("vt_") && token.len() > 40, "{token}");
    let out = run(&["keys", "list", "--tenant", "ops"]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("sre") && listing.contains("reader") && !listing.contains(&token),
        "{listing}"
    );
    let id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let out = run(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", support::show(&out));
    server.get_as(&token, "/v1/events").problem(401);
    let out = run(&["keys", "create", "--tenant", "ops", "--role", "boss"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("role"),
        "{}",
        support::show(&out)
    );
}
