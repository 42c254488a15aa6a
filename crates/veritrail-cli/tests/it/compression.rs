//! Compressed request bodies (`Content-Encoding: gzip` or `zstd`) on every route that reads a
//! body: stored exactly as the plain body would be, bounded by the body limit after decoding
//! (a compression bomb is a 413 and costs the server no more than the limit), unknown codings
//! 415 with `Accept-Encoding`, corrupt data 400; and the producer SDK's compressed batches,
//! through `veritrail emit`.

use std::io::Write;

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{json, Value};

use crate::support::*;

const ADMIN: &str = "vt_compression_admin_0123456789abcdefghijklmn";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("compressing");
    enc.finish().expect("compressing")
}

/// zstd as a streaming encoder writes it: the frame does not declare its decoded size.
fn zstd_stream(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).expect("compressing")
}

/// zstd as a one-shot encoder writes it: the frame declares its decoded size.
fn zstd_bulk(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).expect("compressing")
}

/// One answer with the headers the tests look at.
struct Answer {
    resp: Resp,
    accept_encoding: Option<String>,
}

/// POSTs `body` to `path` with `Content-Encoding: coding` (none when empty).
fn post_coded(
    server: &Server,
    key: Option<&str>,
    path: &str,
    ctype: &str,
    coding: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req = http_client()
        .post(format!("{}{path}", server.url))
        .header(CONTENT_TYPE, ctype)
        .body(body);
    if !coding.is_empty() {
        req = req.header(CONTENT_ENCODING, coding);
    }
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let accept_encoding = r
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Answer {
        resp: into_resp(r),
        accept_encoding,
    }
}

fn receipts_of(a: &Answer) -> Vec<(String, String, bool)> {
    a.resp.ok_json()["receipts"]
        .as_array()
        .unwrap_or_else(|| panic!("no receipts: {}", a.resp.text))
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap_or_default().to_string(),
                r["leaf_hash"].as_str().unwrap_or_default().to_string(),
                r["duplicate"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// The peak resident set of a process, from `/proc/PID/status`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn gzip_and_zstd_bodies_are_stored_as_the_plain_body() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.data());
    let post = |ctype: &str, coding: &str, body: Vec<u8>| {
        post_coded(&server, None, "/v1/events", ctype, coding, body)
    };
    // A batch sent plain, then the same bytes compressed every way: the store's idempotency
    // check finds the same canonical events (a difference would be 409), with the same hashes.
    let batch = events(50, &corr("plain-first"));
    let json = serde_json::to_vec(&batch).expect("json");
    let plain = receipts_of(&post("application/json", "", json.clone()));
    assert!(plain.iter().all(|r| !r.2), "first sent: stored");
    for (coding, body) in [
        ("gzip", gzip(&json)),
        ("x-gzip", gzip(&json)),
        ("GZIP", gzip(&json)),
        ("zstd", zstd_stream(&json)),
        ("zstd", zstd_bulk(&json)),
        ("identity, zstd", zstd_bulk(&json)),
        ("identity", json.clone()),
    ] {
        assert!(body.len() < json.len() || coding == "identity");
        let again = receipts_of(&post("application/json", coding, body));
        assert_eq!(again.len(), plain.len(), "{coding}");
        for (a, p) in again.iter().zip(&plain) {
            assert_eq!(
                (&a.0, &a.1),
                (&p.0, &p.1),
                "{coding}: same event, same leaf"
            );
            assert!(a.2, "{coding}: a repeat of what is stored");
        }
    }
    // The other way round: compressed first (NDJSON too), and the plain body is the repeat.
    for (ctype, coding) in [
        ("application/json", "zstd"),
        ("application/json", "gzip"),
        ("application/x-ndjson", "gzip"),
        ("application/x-ndjson", "zstd"),
    ] {
        let batch = events(20, &corr("coded-first"));
        let body = match ctype {
            "application/json" => serde_json::to_vec(&batch).expect("json"),
            _ => batch
                .as_array()
                .expect("array")
                .iter()
                .map(|e| format!("{e}\n"))
                .collect::<String>()
                .into_bytes(),
        };
        let packed = match coding {
            "gzip" => gzip(&body),
            _ => zstd_bulk(&body),
        };
        let first = receipts_of(&post(ctype, coding, packed));
        assert!(first.iter().all(|r| !r.2), "{ctype} {coding}: stored");
        let second = receipts_of(&post(ctype, "", body));
        for (a, b) in first.iter().zip(&second) {
            assert_eq!((&a.0, &a.1, true), (&b.0, &b.1, b.2), "{ctype} {coding}");
        }
        // And the stored event reads back as it was sent.
        let sent = &batch[0];
        let id = sent["event_id"].as_str().expect("id");
        let stored = server.get(&format!("/v1/events/{id}")).ok_json();
        for field in ["event_type", "actor_id", "correlation_id", "event_data"] {
            assert_eq!(stored[field], sent[field], "{ctype} {coding}: {field}");
        }
    }
    let metrics = server.get("/metrics").text;
    for coding in ["gzip", "zstd"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(&format!(
                "veritrail_compressed_bodies_total{{coding=\"{coding}\"}}"
            ))),
            "{coding} bodies are counted:\n{metrics}"
        );
    }
}

#[test]
fn every_body_route_takes_compressed_bodies() {
    let scratch = Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    // Key management.
    let made = post_coded(
        &server,
        Some(ADMIN),
        "/v1/admin/keys",
        "application/json",
        "gzip",
        gzip(br#"{"tenant":"default","role":"producer","name":"zipped"}"#),
    );
    assert_eq!(made.resp.status, 201, "{}", made.resp.text);
    let producer = made.resp.json()["key"]
        .as_str()
        .expect("the new key")
        .to_string();
    let auditor = server.key(ADMIN, "auditor");
    // The Kubernetes audit webhook.
    let audit_id = uuid::Uuid::now_v7().to_string();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": audit_id, "stage": "ResponseComplete", "verb": "list",
        "requestURI": "/api/v1/namespaces/default/pods",
        "user": {"username": "alice"}, "sourceIPs": ["127.0.0.1"],
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": now, "stageTimestamp": now,
    }]});
    let hook = post_coded(
        &server,
        Some(&producer),
        "/v1/ingest/kubernetes",
        "application/json",
        "zstd",
        zstd_stream(list.to_string().as_bytes()),
    );
    assert_eq!(
        hook.resp.ok_json()["stored"],
        json!(1),
        "{}",
        hook.resp.text
    );
    // Kubernaut's write API, one event and a batch.
    let corr = corr("kn-coded");
    let request = |ty: &str, category: &str| {
        json!({
            "version": "1.0", "event_type": ty,
            "event_timestamp": chrono::Utc::now().to_rfc3339(),
            "event_category": category, "event_action": ty.rsplit('.').next(),
            "event_outcome": "success", "correlation_id": corr,
            "event_data": {"event_type": ty},
        })
    };
    let one = post_coded(
        &server,
        Some(&producer),
        "/api/v1/audit/events",
        "application/json",
        "gzip",
        gzip(
            request("gateway.signal.received", "gateway")
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(one.resp.status, 201, "{}", one.resp.text);
    let batch = json!([
        request("orchestrator.lifecycle.started", "orchestration"),
        request("orchestrator.lifecycle.completed", "orchestration"),
    ]);
    let two = post_coded(
        &server,
        Some(&producer),
        "/api/v1/audit/events/batch",
        "application/json",
        "zstd",
        zstd_bulk(batch.to_string().as_bytes()),
    );
    assert_eq!(two.resp.status, 201, "{}", two.resp.text);
    // Kubernaut's chain check reads a body too.
    let chain = post_coded(
        &server,
        Some(&auditor),
        "/api/v1/audit/verify-chain",
        "application/json",
        "gzip",
        gzip(json!({"correlation_id": corr}).to_string().as_bytes()),
    );
    let chain = chain.resp.ok_json();
    assert_eq!(
        (&chain["is_valid"], &chain["total_events"]),
        (&json!(true), &json!(3)),
        "{chain}"
    );
    // Native ingest with a key.
    let native = post_coded(
        &server,
        Some(&producer),
        "/v1/events",
        "application/json",
        "zstd",
        zstd_bulk(events(3, &corr).to_string().as_bytes()),
    );
    assert_eq!(receipts_of(&native).len(), 3);
}

#[test]
fn a_compression_bomb_is_413_without_costing_the_server_its_size() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.data());
    let zeros = vec![0u8; 50 << 20];
    let bombs = [
        ("gzip", gzip(&zeros)),
        ("zstd", zstd_stream(&zeros)),
        ("zstd", zstd_bulk(&zeros)),
    ];
    drop(zeros);
    for (coding, bomb) in bombs {
        assert!(bomb.len() < 1 << 20, "{coding}: {} bytes", bomb.len());
        let before = peak_rss_kib(server.pid());
        let a = post_coded(
            &server,
            None,
            "/v1/events",
            "application/json",
            coding,
            bomb,
        );
        let p = a.resp.problem(413);
        assert!(
            p["detail"].as_str().unwrap_or("").contains("5242880"),
            "the limit is named: {p}"
        );
        let after = peak_rss_kib(server.pid());
        if before > 0 {
            // Decoding stops one byte past the 5 MiB limit: far from the bomb's 50 MiB. Each
            // bomb is measured alone: the allocator keeps a freed buffer in the heap of the
            // thread that freed it, so three bombs on three workers may each add their own.
            assert!(
                after.saturating_sub(before) < 32 << 10,
                "{coding}: peak RSS grew from {before} KiB to {after} KiB"
            );
        }
    }
    // The server is fine and takes the next request.
    assert_eq!(server.get("/healthz").status, 200);
    let ok = post_coded(
        &server,
        None,
        "/v1/events",
        "application/json",
        "gzip",
        gzip(events(2, &corr("after-bomb")).to_string().as_bytes()),
    );
    assert_eq!(receipts_of(&ok).len(), 2);
}

#[test]
fn the_body_limit_applies_to_what_a_body_decodes_to() {
    let scratch = Scratch::new();
    let server = Server::start_with(&scratch.data(), &["--max-body-bytes", "65536"]);
    // Valid events that compress far below the limit but decode beyond it.
    let mut batch = events(200, &corr("decoded-size"));
    for e in batch.as_array_mut().expect("array") {
        e["event_data"]["note"] = json!("x".repeat(400));
    }
    let json = serde_json::to_vec(&batch).expect("json");
    assert!(json.len() > 65536);
    for (coding, body) in [("gzip", gzip(&json)), ("zstd", zstd_stream(&json))] {
        assert!(body.len() < 65536, "{coding}: {} bytes", body.len());
        post_coded(
            &server,
            None,
            "/v1/events",
            "application/json",
            coding,
            body,
        )
        .resp
        .problem(413);
    }
    // Within the limit once decoded: accepted.
    let small = serde_json::to_vec(&Value::Array(
        batch.as_array().expect("array")[..20].to_vec(),
    ))
    .expect("json");
    assert!(small.len() < 65536);
    let ok = post_coded(
        &server,
        None,
        "/v1/events",
        "application/json",
        "zstd",
        zstd_bulk(&small),
    );
    assert_eq!(receipts_of(&ok).len(), 20);
    assert_eq!(
        server.tree_size(),
        20,
        "nothing of the refused bodies was stored"
    );
}

#[test]
fn unknown_and_stacked_codings_are_415_with_accept_encoding() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.data());
    let body = events(1, &corr("coding")).to_string().into_bytes();
    for coding in ["br", "deflate", "compress", "gzip, zstd", "zstd, zstd"] {
        for path in [
            "/v1/events",
            "/api/v1/audit/events",
            "/v1/ingest/kubernetes",
        ] {
            let a = post_coded(
                &server,
                None,
                path,
                "application/json",
                coding,
                body.clone(),
            );
            let p = a.resp.problem(415);
            assert_eq!(
                a.accept_encoding.as_deref(),
                Some("gzip, zstd, identity"),
                "{path} {coding}: {p}"
            );
        }
    }
}

#[test]
fn corrupt_compressed_bodies_are_400() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.data());
    let json = events(5, &corr("corrupt")).to_string().into_bytes();
    let g = gzip(&json);
    let z = zstd_bulk(&json);
    let mut flipped = g.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    for (coding, body) in [
        ("gzip", json.clone()),
        ("gzip", g[..g.len() / 2].to_vec()),
        ("gzip", flipped),
        ("gzip", [g.clone(), b"junk".to_vec()].concat()),
        ("zstd", json.clone()),
        ("zstd", z[..z.len() - 3].to_vec()),
        ("zstd", g.clone()),
    ] {
        let a = post_coded(
            &server,
            None,
            "/v1/events",
            "application/json",
            coding,
            body,
        );
        let p = a.resp.problem(400);
        assert!(
            p["detail"].as_str().unwrap_or("").contains(coding),
            "the detail names the coding: {p}"
        );
    }
    assert_eq!(server.tree_size(), 0, "nothing was stored");
}

#[test]
fn emit_sends_compressed_batches_through_the_sdk() {
    let scratch = Scratch::new();
    let server = Server::start(&scratch.data());
    let corr = corr("emit-coded");
    let lines: String = (0..300)
        .map(|i| {
            let mut e = event(i, &corr);
            e.as_object_mut().expect("object").remove("event_id");
            format!("{e}\n")
        })
        .collect();
    let mut child = command()
        .args(["emit", "--stdin", "--server", &server.url, "--spool-dir"])
        .arg(scratch.other("spool"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running emit");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("writing events");
    let out = child.wait_with_output().expect("emit finishes");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(server.by_correlation(&corr).len(), 300);
    let metrics = server.get("/metrics").text;
    let zstd = metrics
        .lines()
        .find_map(|l| l.strip_prefix("veritrail_compressed_bodies_total{coding=\"zstd\"} "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        zstd >= 3.0,
        "the SDK's batches of 100 came compressed:\n{metrics}"
    );
}
