//! What hostile input and clumsy operation once broke: idle and slow connections, one producer
//! holding every ingest permit, body-reading routes that skipped the admission gate, index keys
//! longer than the index takes, answers outside the problem+json contract, refusal floods, and
//! operator messages.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

const ADMIN: &str = "vt_hardening_admin_key_0123456789abcdef0123456789abcdef";

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

/// Opens a connection and sends `head` (request line and headers), then nothing more.
fn stalled(server: &Server, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr(server)).expect("connecting");
    s.write_all(head.as_bytes()).expect("sending the head");
    s
}

/// A raw request on a fresh connection: (status, content-type, body).
fn raw(server: &Server, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr(server)).expect("connecting");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    s.write_all(request).expect("sending");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let lower = text.to_ascii_lowercase();
    let ctype = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or("")
        .trim()
        .to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, ctype, body)
}

fn post_as(server: &Server, key: &str, path: &str, ctype: &str, body: &str) -> Resp {
    into_resp(
        http_client()
            .post(format!("{}{path}", server.url))
            .bearer_auth(key)
            .header("content-type", ctype)
            .body(body.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}")),
    )
}

/// Raises this process's own open-file limit, to hold thousands of client sockets.
fn raise_own_file_limit() {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[test]
fn thousands_of_stalled_connections_do_not_lock_a_new_client_out() {
    raise_own_file_limit();
    let scratch = Scratch::new();
    let server = Server::start_with_file_limit(&scratch.data(), ADMIN, 1024);
    let mut held = Vec::new();
    // Idle connections and slowloris heads, twice the server's file limit.
    for i in 0..2000 {
        let head = if i % 4 == 0 {
            "GET /v1/checkpoint HTTP/1.1\r\nHost: x\r\nX-Slow: "
        } else {
            ""
        };
        match TcpStream::connect(addr(&server)) {
            Ok(mut s) => {
                let _ = s.write_all(head.as_bytes());
                held.push(s);
            }
            Err(e) => panic!("connection {i} refused: {e}"),
        }
    }
    let started = Instant::now();
    let r = server.get("/readyz");
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    let key = server.key(ADMIN, "auditor");
    let r = server.get_as(&key, "/v1/checkpoint");
    assert_eq!(r.status, 200, "{}", r.text);
    eprintln!(
        "a new client was answered in {:.0} ms beside 2000 stalled connections",
        took.as_secs_f64() * 1e3
    );
    // A bound against a lock-out, not a speed target (the measured figure is printed above).
    assert!(
        took < Duration::from_secs(5),
        "answered only after {took:?}"
    );
    drop(held);
}

#[test]
fn one_producer_cannot_take_every_ingest_permit() {
    let scratch = Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let greedy = server.key(ADMIN, "producer");
    let other = server.key(ADMIN, "producer");
    let head = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {greedy}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"
        )
    };
    // Endless bodies from one key, on every route that reads one.
    let mut held = Vec::new();
    for path in [
        "/v1/events",
        "/v1/ingest/kubernetes",
        "/api/v1/audit/events",
        "/api/v1/audit/events/batch",
    ] {
        for _ in 0..5 {
            held.push(stalled(&server, &head(path)));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // Its next request is refused, as a problem with Retry-After that every client retries.
    let r = post_as(&server, &greedy, "/v1/events", "application/json", "[]");
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.content_type, "application/problem+json");
    let r = post_as(
        &server,
        &greedy,
        "/v1/ingest/kubernetes",
        "application/json",
        "{}",
    );
    assert_eq!(
        r.status, 503,
        "the webhook goes through the gate too: {}",
        r.text
    );
    // Another producer is served all the while.
    let r = post_as(
        &server,
        &other,
        "/v1/events",
        "application/json",
        &event(1, &corr("fair")).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    drop(held);
}

#[test]
fn index_keys_longer_than_any_event_field_are_refused_everywhere() {
    let scratch = Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let auditor = server.key(ADMIN, "auditor");
    let long = "c".repeat(65_522);
    let r = post_as(
        &server,
        &auditor,
        "/api/v1/audit/verify-chain",
        "application/json",
        &json!({"correlation_id": long}).to_string(),
    );
    assert_eq!(
        r.problem(400)["detail"].as_str().map(|d| d.contains("255")),
        Some(true)
    );
    let just = "c".repeat(256);
    for path in [
        format!("/v1/correlations/{just}/timeline"),
        format!("/v1/events?correlation_id={just}"),
        format!("/v1/events?actor_id={just}"),
        format!("/api/v1/audit/events?correlation_id={just}"),
        format!("/api/v1/audit/export?correlation_id={just}"),
    ] {
        let r = server.get_as(&auditor, &path);
        r.problem(400);
    }
    // At the limit, a read is served.
    let at = "c".repeat(255);
    let r = server.get_as(&auditor, &format!("/v1/correlations/{at}/timeline"));
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn every_refusal_is_a_problem_document() {
    let scratch = Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let reader = server.key(ADMIN, "reader");
    let producer = server.key(ADMIN, "producer");
    let auth = format!("Authorization: Bearer {reader}\r\n");
    // Oversized target and headers.
    let long_uri = format!(
        "GET /v1/events?actor_id={} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, ctype, body) = raw(&server, long_uri.as_bytes());
    assert_eq!(
        (status, ctype.as_str()),
        (414, "application/problem+json"),
        "{body}"
    );
    let big_header = format!(
        "GET /v1/checkpoint HTTP/1.1\r\nHost: x\r\n{auth}X-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(100_000)
    );
    let (status, ctype, body) = raw(&server, big_header.as_bytes());
    assert_eq!(
        (status, ctype.as_str()),
        (431, "application/problem+json"),
        "{body}"
    );
    // Undecodable paths and queries.
    for path in ["/v1/events/%FF", "/v1/correlations/%FF/timeline"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        let (status, ctype, body) = raw(&server, req.as_bytes());
        assert_eq!(
            (status, ctype.as_str()),
            (400, "application/problem+json"),
            "{path}: {body}"
        );
    }
    // Bodies that are not JSON are refused before they are read, on every JSON route.
    for path in [
        "/api/v1/audit/events",
        "/api/v1/audit/events/batch",
        "/v1/ingest/kubernetes",
    ] {
        for ctype in ["text/plain", "application/xml"] {
            let r = post_as(&server, &producer, path, ctype, "{}");
            assert_eq!(r.status, 415, "{path} {ctype}: {}", r.text);
            assert_eq!(r.content_type, "application/problem+json");
        }
    }
}

#[test]
fn a_flood_of_bad_keys_is_slowed_and_logged_within_bounds() {
    let scratch = Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let started = Instant::now();
    let mut slowed = 0;
    for i in 0..160u32 {
        let t = Instant::now();
        let r = server.get_as(&format!("vt_wrong_{i}"), "/v1/checkpoint");
        assert_eq!(r.status, 401);
        if t.elapsed() >= Duration::from_millis(900) {
            slowed += 1;
        }
    }
    eprintln!("160 bad keys took {:?}", started.elapsed());
    assert!(slowed > 0, "refusals beyond the burst must be slowed");
    let metrics = server.get_as(ADMIN, "/metrics").text;
    let counted = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        counted("veritrail_auth_failures_slowed_total") > 0.0,
        "{metrics}"
    );
    // Every refusal is counted; the denial events written for them are bounded.
    assert!(
        counted("veritrail_auth_failures_total") >= 160.0,
        "{metrics}"
    );
    let auditor = server.key(ADMIN, "auditor");
    let denials = server.get_as(
        &auditor,
        "/v1/events?event_type=veritrail.access.denied&limit=1000",
    );
    let logged = denials.ok_json()["events"].as_array().map_or(0, Vec::len);
    assert!(
        (1..=60).contains(&logged),
        "{logged} denial events for 160 refusals from one source"
    );
}

#[test]
fn operator_mistakes_get_one_clear_message() {
    let scratch = Scratch::new();
    // fsck of a directory that is not one: the cause once.
    let out = cli(&["fsck", "--data-dir", "/nonexistent/veritrail"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(err.contains("not a Veritrail data directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A second server on the same data directory, even before it has a tenant.
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let (status, err) = Server::start_expecting_failure(&scratch.data());
    assert!(!status.success());
    assert!(err.contains("in use by another process"), "{err}");
    assert_eq!(err.matches("in use").count(), 1, "the cause once: {err}");
    // fsck and reindex while it runs.
    let out = cli(&[
        "fsck",
        "--data-dir",
        scratch.data().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        show(&out)
    );
    // A busy port is found before a new data directory gets keys.
    let fresh = scratch.other("fresh");
    let out = command()
        .args(["serve", "--listen", &addr(&server), "--data-dir"])
        .arg(&fresh)
        .output()
        .expect("running serve");
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listening on"),
        "{}",
        show(&out)
    );
    assert!(
        !fresh.exists(),
        "nothing is written before the port is ours"
    );
    drop(server);
}

#[test]
fn damaged_tree_nodes_are_named_with_their_remedy() {
    let scratch = Scratch::new();
    let corr = corr("nodes");
    let mut server = Server::start(&scratch.data());
    server.ingest(&events(20, &corr));
    // A signed checkpoint is what startup holds the tree against.
    assert!(server.checkpoint().size >= 20);
    server.stop();
    // The tree's leaf hashes are derived state, 32 bytes per event in index/level-00.dat.
    let leaves = scratch.data().join("tenants/default/index/level-00.dat");
    let mut bytes = std::fs::read(&leaves).expect("the index has leaf hashes");
    assert!(bytes.len() >= 20 * 32, "{} bytes", bytes.len());
    for b in &mut bytes[5 * 32..5 * 32 + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&leaves, bytes).expect("damaging the leaf hashes");
    let data = scratch.data();
    let data_arg = data.to_str().expect("utf-8");
    // fsck tells the node files, not the log, are damaged, and names the remedy, which works.
    let out = fsck(&data);
    assert!(!out.status.success(), "{}", show(&out));
    let text = show(&out);
    assert!(
        text.contains("seq 5") && text.contains("veritrail reindex"),
        "{text}"
    );
    let out = cli(&["reindex", "--data-dir", data_arg]);
    assert!(out.status.success(), "{}", show(&out));
    let out = fsck(&data);
    assert!(out.status.success(), "{}", show(&out));
    let mut server = Server::start(&data);
    assert_eq!(server.by_correlation(&corr).len(), 20);
    server.stop();
    // Reads trust the leaves the server computes from the records at startup (held against the
    // signed checkpoint), never the node files: damaged again, every event is still served, and
    // startup rewrites the damaged node from the record.
    let mut bytes = std::fs::read(&leaves).expect("leaf hashes");
    for b in &mut bytes[5 * 32..5 * 32 + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&leaves, bytes).expect("damaging the leaf hashes");
    let mut server = Server::start(&data);
    assert_eq!(server.by_correlation(&corr).len(), 20);
    server.stop();
    let out = fsck(&data);
    assert!(out.status.success(), "{}", show(&out));
}
