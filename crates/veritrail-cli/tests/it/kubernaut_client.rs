//! Kubernaut's own client against the real server. `GoLikeClient` behaves like the Go client
//! Kubernaut generates from its OpenAPI description (ogen) behind its buffered audit store: the
//! same requests, the same idea of success, the same retries and the same reasons to throw a
//! batch away. The tests prove that such a client loses nothing and duplicates nothing through
//! Veritrail: batches of 1000 are taken whole, a batch re-sent after a lost answer stores
//! nothing new, overload is an answer the client retries (503, never 429), every page it reads
//! decodes under the `event_data` discriminator of the published description, health and
//! readiness answer as its probes expect, and refusals are problems it recognises.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Barrier, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{self, Resp, Server};

const ADMIN: &str = "vt_kclient_admin_0123456789abcdefghijklmnopq";

/// The client's first backoff in these tests; Kubernaut's is 1 s, which would only make the
/// tests slower without changing what they show.
const BACKOFF: Duration = Duration::from_millis(200);

/// Attempts of the client layer per batch (Kubernaut: 3).
const CLIENT_ATTEMPTS: u32 = 3;
/// Re-sends of the same bytes by the transport on 502/503/504 or a connection error.
const TRANSPORT_RESENDS: u32 = 3;

const BATCH_PATH: &str = "/api/v1/audit/events/batch";

/// Event types of the discriminator mapping, with the category their service writes them with.
const TYPES: [(&str, &str); 7] = [
    ("gateway.signal.received", "gateway"),
    ("signalprocessing.signal.processed", "signalprocessing"),
    ("aianalysis.analysis.completed", "analysis"),
    ("orchestrator.lifecycle.started", "orchestration"),
    ("workflowexecution.workflow.started", "workflowexecution"),
    ("notification.message.sent", "notification"),
    ("effectiveness.assessment.completed", "effectiveness"),
];

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// What the client saw, over all its calls.
#[derive(Debug, Default, Clone)]
struct Counters {
    /// HTTP requests sent, transport re-sends included.
    sends: usize,
    /// Attempts of the client layer (each may be several sends).
    attempts: usize,
    /// Every HTTP status received, with how often.
    statuses: BTreeMap<u16, usize>,
    /// Answers the generated client could not have decoded.
    violations: Vec<String>,
    /// Sends that got no complete answer.
    network_errors: usize,
    /// Batches thrown away on a 4xx the client does not retry.
    dropped: usize,
    /// Batches thrown away after the last attempt failed.
    exhausted: usize,
    /// Every event id of every acknowledged batch.
    acknowledged: Vec<String>,
}

/// What became of one batch.
#[derive(Debug, Clone, PartialEq)]
enum BatchOutcome {
    /// 201 with one id per event, in input order.
    Acknowledged(Vec<String>),
    /// A 4xx other than 401/403: the client logs "AUDIT DATA LOSS" and drops the batch.
    Dropped { status: u16, problem: Value },
    /// Every attempt failed. `answer_lost` is true when some send got no decodable answer, so
    /// the server may have stored the batch without the client knowing its ids.
    Exhausted { answer_lost: bool, last: String },
}

/// One page of `GET /api/v1/audit/events`, every event's `event_data` decoded.
#[derive(Debug)]
struct Page {
    data: Vec<Value>,
    total: u64,
    has_more: bool,
}

/// A blocking stand-in for Kubernaut's generated client and its retrying transport.
struct GoLikeClient {
    base: String,
    key: String,
    http: reqwest::blocking::Client,
    backoff: Duration,
    counters: Counters,
}

impl GoLikeClient {
    fn new(base: &str, key: &str, backoff: Duration) -> GoLikeClient {
        GoLikeClient {
            base: base.to_string(),
            key: key.to_string(),
            http: support::http_client(),
            backoff,
            counters: Counters::default(),
        }
    }

    /// The wait before client attempt `retry` (1-based): doubling from `backoff`, capped at
    /// 30 times it (Kubernaut: 1 s doubling to 30 s).
    fn delay(&self, retry: u32) -> Duration {
        (self.backoff * 2u32.saturating_pow(retry - 1)).min(self.backoff * 30)
    }

    /// The transport: one request, re-sent with the same bytes on 502/503/504 and on connection
    /// errors. It checks that every error answer is a problem the generated code can decode.
    fn send(&mut self, method: Method, path: &str, body: Option<&[u8]>) -> Result<Resp, String> {
        let url = format!("{}{path}", self.base);
        let mut resends = 0;
        loop {
            self.counters.sends += 1;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.key);
            if let Some(b) = body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.to_vec());
            }
            let answer = req
                .send()
                .map_err(|e| format!("{method} {path}: {e}"))
                .and_then(support::try_into_resp);
            let again = match &answer {
                Ok(r) => {
                    *self.counters.statuses.entry(r.status).or_insert(0) += 1;
                    if r.status >= 300 {
                        if let Some(why) = problem_violation(r) {
                            self.counters.violations.push(why);
                        }
                    }
                    matches!(r.status, 502..=504)
                }
                Err(_) => {
                    self.counters.network_errors += 1;
                    true
                }
            };
            if !again || resends == TRANSPORT_RESENDS {
                return answer;
            }
            resends += 1;
        }
    }

    /// Writes one batch as the buffered store flushes it: a JSON array of events without ids.
    fn write_batch(&mut self, events: &[Value]) -> BatchOutcome {
        let body = serde_json::to_vec(events).expect("events serialize");
        self.write_body(&body, events.len())
    }

    /// [`GoLikeClient::write_batch`] for a body already serialized (`expected` events).
    fn write_body(&mut self, body: &[u8], expected: usize) -> BatchOutcome {
        let mut answer_lost = false;
        let mut last = String::new();
        for attempt in 0..CLIENT_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(self.delay(attempt));
            }
            self.counters.attempts += 1;
            let r = match self.send(Method::POST, BATCH_PATH, Some(body)) {
                Ok(r) => r,
                Err(e) => {
                    answer_lost = true;
                    last = e;
                    continue;
                }
            };
            match r.status {
                201 => match success_ids(&r, expected) {
                    Ok(ids) => {
                        self.counters.acknowledged.extend(ids.iter().cloned());
                        return BatchOutcome::Acknowledged(ids);
                    }
                    // Stored, perhaps, but the client cannot tell: like a lost answer.
                    Err(why) => {
                        self.counters.violations.push(why.clone());
                        answer_lost = true;
                        last = why;
                    }
                },
                s if s < 300 => {
                    let why = format!("{s} instead of 201: {}", excerpt(&r.text));
                    self.counters.violations.push(why.clone());
                    answer_lost = true;
                    last = why;
                }
                s => {
                    if let Some(why) = problem_violation(&r) {
                        // Already recorded by the transport; undecodable, so a network error.
                        answer_lost = true;
                        last = why;
                        continue;
                    }
                    if s >= 500 || s == 401 || s == 403 {
                        last = format!("{s}: {}", excerpt(&r.text));
                        continue;
                    }
                    self.counters.dropped += 1;
                    eprintln!(
                        "AUDIT DATA LOSS: a batch of {expected} events dropped on {s}: {}",
                        excerpt(&r.text)
                    );
                    return BatchOutcome::Dropped {
                        status: s,
                        problem: serde_json::from_str(&r.text).unwrap_or(Value::Null),
                    };
                }
            }
        }
        self.counters.exhausted += 1;
        eprintln!(
            "AUDIT DATA LOSS: a batch of {expected} events dropped after {CLIENT_ATTEMPTS} attempts: {last}"
        );
        BatchOutcome::Exhausted { answer_lost, last }
    }

    /// Reads one page of `GET /api/v1/audit/events?<query>` and decodes every event's
    /// `event_data` as the generated oneOf: one event that does not decode fails the page.
    fn read_page(&mut self, query: &str) -> Result<Page, String> {
        let r = self.send(Method::GET, &format!("/api/v1/audit/events?{query}"), None)?;
        if r.status != 200 || r.content_type != "application/json" {
            return Err(format!(
                "{} with Content-Type {:?}, not 200 application/json: {}",
                r.status,
                r.content_type,
                excerpt(&r.text)
            ));
        }
        let body: Value = serde_json::from_str(&r.text)
            .map_err(|e| format!("the page is not JSON ({e}): {}", excerpt(&r.text)))?;
        let data = body["data"]
            .as_array()
            .ok_or_else(|| format!("no `data` array: {}", excerpt(&r.text)))?
            .clone();
        let pagination = &body["pagination"];
        let total = pagination["total"]
            .as_u64()
            .ok_or_else(|| format!("no `pagination.total`: {pagination}"))?;
        let has_more = pagination["has_more"]
            .as_bool()
            .ok_or_else(|| format!("no `pagination.has_more`: {pagination}"))?;
        let mapping = discriminator_mapping();
        for (i, e) in data.iter().enumerate() {
            decode_event_data(e, mapping)
                .map_err(|why| format!("event {i} of the page ({}): {why}", e["event_id"]))?;
        }
        Ok(Page {
            data,
            total,
            has_more,
        })
    }
}

/// The media type of a Content-Type value, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The start of a body, for messages.
fn excerpt(text: &str) -> String {
    text.chars().take(300).collect()
}

/// Why an error answer is not a problem the generated client decodes, if it is not.
fn problem_violation(r: &Resp) -> Option<String> {
    if media_type(&r.content_type) != "application/problem+json" {
        return Some(format!(
            "{} with Content-Type {:?}, not application/problem+json: {}",
            r.status,
            r.content_type,
            excerpt(&r.text)
        ));
    }
    let p: Value = match serde_json::from_str(&r.text) {
        Ok(p) => p,
        Err(e) => {
            return Some(format!(
                "{} with a problem that is not JSON ({e}): {}",
                r.status,
                excerpt(&r.text)
            ))
        }
    };
    let decodes = p["type"].is_string()
        && p["title"].is_string()
        && p["status"].as_u64() == Some(u64::from(r.status));
    (!decodes).then(|| {
        format!(
            "{} with a problem lacking `type`, `title` or a matching `status`: {p}",
            r.status
        )
    })
}

/// The ids of a 201 to a batch, if it is the answer the generated client decodes.
fn success_ids(r: &Resp, expected: usize) -> Result<Vec<String>, String> {
    if r.content_type != "application/json" {
        return Err(format!(
            "201 with Content-Type {:?}, not application/json",
            r.content_type
        ));
    }
    let body: Value = serde_json::from_str(&r.text)
        .map_err(|e| format!("201 whose body is not JSON ({e}): {}", excerpt(&r.text)))?;
    if !body["message"].is_string() {
        return Err(format!("201 without a `message`: {}", excerpt(&r.text)));
    }
    let ids = body["event_ids"]
        .as_array()
        .ok_or_else(|| format!("201 without `event_ids`: {}", excerpt(&r.text)))?;
    if ids.len() != expected {
        return Err(format!("201 with {} ids for {expected} events", ids.len()));
    }
    ids.iter()
        .map(|v| match v.as_str().map(uuid::Uuid::try_parse) {
            Some(Ok(id)) => Ok(id.to_string()),
            _ => Err(format!("201 with an event id that is not a UUID: {v}")),
        })
        .collect()
}

/// Decodes `event_data` as the oneOf of the description: an object whose `event_type` is a key
/// of the discriminator mapping, and the event's own type.
fn decode_event_data<'a>(e: &'a Value, mapping: &BTreeSet<String>) -> Result<&'a str, String> {
    let outer = e["event_type"]
        .as_str()
        .ok_or_else(|| "no `event_type`".to_string())?;
    let data = e
        .get("event_data")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("the `event_data` of a `{outer}` event is not an object"))?;
    let inner = data
        .get("event_type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("the `event_data` of a `{outer}` event has no discriminator"))?;
    if !mapping.contains(inner) {
        return Err(format!(
            "`{inner}` (of a `{outer}` event) is not in the discriminator mapping"
        ));
    }
    if inner != outer {
        return Err(format!(
            "the discriminator `{inner}` differs from the event type `{outer}`"
        ));
    }
    Ok(inner)
}

/// The keys of the discriminator mapping of `AuditEventRequest.event_data`, read from the
/// published description beside the repository at run time (the build cache may be shared
/// between checkouts, so no path is baked in), not from the server's own list.
fn discriminator_mapping() -> &'static BTreeSet<String> {
    static MAPPING: OnceLock<BTreeSet<String>> = OnceLock::new();
    MAPPING.get_or_init(|| {
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let path = PathBuf::from(crate_dir)
            .join("../../../shared/brief/kubernaut-data-storage-v1.openapi.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        parse_mapping(&text)
    })
}

/// Scans the YAML text: the first `discriminator:` after `AuditEventRequest:`, then the
/// `'<type>': '#/components/schemas/…'` lines of its `mapping:` while they are indented deeper.
fn parse_mapping(text: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let after = |from: usize, what: &str| {
        from + lines[from..]
            .iter()
            .position(|l| l.trim() == what)
            .unwrap_or_else(|| panic!("no `{what}` after line {} of the description", from + 1))
    };
    let schema = after(0, "AuditEventRequest:");
    let discriminator = after(schema, "discriminator:");
    let mapping = after(discriminator, "mapping:");
    let depth = indent(lines[mapping]);
    let mut keys = BTreeSet::new();
    for line in &lines[mapping + 1..] {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent(line) <= depth {
            break;
        }
        let (key, target) = t
            .split_once(':')
            .unwrap_or_else(|| panic!("a mapping line without a colon: {line}"));
        assert!(
            target.contains("#/components/schemas/"),
            "a mapping line that names no schema: {line}"
        );
        keys.insert(key.trim().trim_matches(['\'', '"']).to_string());
    }
    assert!(
        keys.len() > 50,
        "only {} discriminator types found; the scan went wrong",
        keys.len()
    );
    keys
}

// ---------------------------------------------------------------------------------------------
// Events and server helpers
// ---------------------------------------------------------------------------------------------

/// Now as Kubernaut's generated client writes a `date-time` (ogen encodes `time.RFC3339`): whole
/// seconds, so two events of one second may differ in nothing else.
fn go_now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Event `n` of an operation, as a Kubernaut service sends it (optional strings unset are "").
fn kubernaut_event(corr: &str, n: usize) -> Value {
    let (ty, category) = TYPES[n % TYPES.len()];
    let service = ty.split('.').next().unwrap_or(ty);
    json!({
        "version": "1.0",
        "event_type": ty,
        "event_timestamp": go_now(),
        "event_category": category,
        "event_action": ty.rsplit('.').next().unwrap_or(ty),
        "event_outcome": "success",
        "actor_type": "service",
        "actor_id": format!("{service}-service"),
        "actor_ip": "",
        "resource_type": "RemediationRequest",
        "resource_id": corr,
        "correlation_id": corr,
        "event_data": {"event_type": ty, "n": n},
    })
}

/// `n` events of one operation, each different (`event_data.n`).
fn batch(corr: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| kubernaut_event(corr, i)).collect()
}

#[track_caller]
fn acknowledged(outcome: BatchOutcome, client: &GoLikeClient) -> Vec<String> {
    match outcome {
        BatchOutcome::Acknowledged(ids) => ids,
        other => panic!(
            "the batch was not acknowledged: {other:?}\ncounters: {:?}",
            client.counters
        ),
    }
}

fn distinct(ids: &[String]) -> usize {
    ids.iter().collect::<HashSet<_>>().len()
}

fn id_set(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("event_id").to_string())
        .collect()
}

/// POSTs exactly these bytes, as a transport re-sending a request does.
fn post_bytes(server: &Server, key: &str, path: &str, body: &[u8]) -> Resp {
    let r = support::http_client()
        .post(format!("{}{path}", server.url))
        .bearer_auth(key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    support::into_resp(r)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The client flushes up to 1000 events at once; a server that refuses more than 500 makes it
/// drop every full batch.
#[test]
fn batches_of_1000_are_taken_whole() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let producer = server.key(ADMIN, "producer");
    let auditor = server.key(ADMIN, "auditor");
    for (ty, _) in TYPES {
        assert!(
            discriminator_mapping().contains(ty),
            "the test writes `{ty}`, which the description does not know"
        );
    }
    let mut client = GoLikeClient::new(&server.url, &producer, BACKOFF);
    let corr = support::corr("whole");
    let outcome = client.write_batch(&batch(&corr, 1000));
    let ids = acknowledged(outcome, &client);
    assert_eq!(distinct(&ids), 1000, "ids repeat within one batch");
    assert!(
        client.counters.violations.is_empty(),
        "{:?}",
        client.counters.violations
    );
    assert_eq!(
        client.counters.statuses,
        BTreeMap::from([(201, 1)]),
        "one request, answered 201 at once"
    );
    let stored = server.by_correlation_as(&auditor, &corr);
    assert_eq!(
        id_set(&stored),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
}

/// The transport re-sends a request whose answer it did not get, byte for byte, and Kubernaut
/// sends no event ids: the server must recognise the events, or every lost answer duplicates a
/// batch in the trail.
#[test]
fn a_resent_batch_stores_nothing_new() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let producer = server.key(ADMIN, "producer");
    let auditor = server.key(ADMIN, "auditor");
    let mut client = GoLikeClient::new(&server.url, &producer, BACKOFF);

    let corr = support::corr("resend");
    let body = serde_json::to_vec(&batch(&corr, 1000)).expect("serialize");
    let first = client.write_body(&body, 1000);
    let ids = acknowledged(first, &client);
    let size = server.tree_size_as(&auditor);
    let again = client.write_body(&body, 1000);
    assert_eq!(
        acknowledged(again, &client),
        ids,
        "the re-sent batch got other ids, or the same ids in another order"
    );
    assert_eq!(
        server.tree_size_as(&auditor),
        size,
        "the re-sent batch was stored again"
    );

    // The single-event route, the same way.
    let corr_one = support::corr("resend-one");
    let one = kubernaut_event(&corr_one, 0);
    let one_body = serde_json::to_vec(&one).expect("serialize");
    let post_one = |body: &[u8]| {
        let r = post_bytes(&server, &producer, "/api/v1/audit/events", body);
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["event_id"].as_str().expect("event_id").to_string()
    };
    let id_one = post_one(&one_body);
    let size = server.tree_size_as(&auditor);
    assert_eq!(
        post_one(&one_body),
        id_one,
        "the re-sent event got another id"
    );
    assert_eq!(
        server.tree_size_as(&auditor),
        size,
        "the re-sent event was stored again"
    );
    // Content decides: an event that differs in one field is another event.
    let mut other = one.clone();
    other["event_data"]["n"] = json!(1);
    let id_other = post_one(&serde_json::to_vec(&other).expect("serialize"));
    assert_ne!(id_other, id_one, "two different events share an id");
    assert_eq!(server.tree_size_as(&auditor), size + 1);
    // Equal events are separate events (two denials in one second), in one batch or in two.
    let corr_twice = support::corr("twice");
    let twice = serde_json::to_vec(&[
        kubernaut_event(&corr_twice, 0),
        kubernaut_event(&corr_twice, 0),
    ])
    .expect("serialize");
    let pair = acknowledged(client.write_body(&twice, 2), &client);
    assert_eq!(
        distinct(&pair),
        2,
        "two equal events in one batch became one: {pair:?}"
    );
    let single = serde_json::to_vec(&[kubernaut_event(&corr_twice, 0)]).expect("serialize");
    let third = acknowledged(client.write_body(&single, 1), &client);
    assert!(
        !pair.contains(&third[0]),
        "an equal event in another batch was taken as a re-send"
    );
    let size = size + 4;
    assert_eq!(server.tree_size_as(&auditor), size);

    // The native API holds each event once (read last: reads leave access events).
    let stored = server.by_correlation_as(&auditor, &corr);
    assert_eq!(stored.len(), 1000, "the batch is not stored exactly once");
    assert_eq!(
        id_set(&stored),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    let stored_one = server.by_correlation_as(&auditor, &corr_one);
    assert_eq!(
        id_set(&stored_one),
        BTreeSet::from([id_one, id_other]),
        "{stored_one:?}"
    );
    assert_eq!(stored_one.len(), 2);
}

/// Eight services flushing full batches into a small queue. The client drops a batch on 429
/// but retries 503, so overload must be 503; and whatever the retries do, nothing acknowledged
/// is missing and nothing is stored twice.
#[test]
fn overload_answers_503_and_loses_nothing() {
    const THREADS: usize = 8;
    const BATCHES: usize = 6;
    const EVENTS: usize = 1000;
    let scratch = support::Scratch::new();
    let server =
        Server::start_authenticated_with(&scratch.data(), ADMIN, &["--max-queued-events", "1000"]);
    let auditor = server.key(ADMIN, "auditor");
    // One key per service, as each has its own service account.
    let keys: Vec<String> = (0..THREADS)
        .map(|_| server.key(ADMIN, "producer"))
        .collect();
    let before = server.tree_size_as(&auditor);

    // All start at once, so that their batches really meet in the queue.
    let start = Barrier::new(THREADS);
    let results: Vec<(Counters, Vec<(String, BatchOutcome)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(t, key)| {
                let (url, start) = (&server.url, &start);
                s.spawn(move || {
                    let mut client = GoLikeClient::new(url, key, BACKOFF);
                    let batches: Vec<(String, Vec<Value>)> = (0..BATCHES)
                        .map(|b| {
                            let corr = support::corr(&format!("overload-{t}-{b}"));
                            let events = batch(&corr, EVENTS);
                            (corr, events)
                        })
                        .collect();
                    start.wait();
                    let outcomes = batches
                        .into_iter()
                        .map(|(corr, events)| {
                            let outcome = client.write_batch(&events);
                            (corr, outcome)
                        })
                        .collect();
                    (client.counters, outcomes)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    let after = server.tree_size_as(&auditor);

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut violations = Vec::new();
    let (mut dropped, mut exhausted, mut network_errors) = (0, 0, 0);
    let mut all_acknowledged = Vec::new();
    for (c, _) in &results {
        for (s, n) in &c.statuses {
            *statuses.entry(*s).or_insert(0) += n;
        }
        violations.extend(c.violations.iter().cloned());
        dropped += c.dropped;
        exhausted += c.exhausted;
        network_errors += c.network_errors;
        all_acknowledged.extend(c.acknowledged.iter().cloned());
    }
    eprintln!(
        "overload: statuses {statuses:?}, {network_errors} network errors, {} events \
         acknowledged, {dropped} batches dropped on a 4xx, {exhausted} dropped after \
         {CLIENT_ATTEMPTS} attempts",
        all_acknowledged.len()
    );
    assert!(
        !statuses.contains_key(&429),
        "a full queue answered 429, on which Kubernaut's client drops the batch: {statuses:?}"
    );
    assert!(
        violations.is_empty(),
        "protocol violations: {violations:#?}"
    );
    // The client drops a batch on a 4xx for good; overload must never cause one. (A batch
    // given up after three 503s is the client's retry limit, counted in `exhausted`.)
    assert_eq!(
        dropped, 0,
        "batches dropped on a 4xx under overload: {statuses:?}"
    );
    assert!(
        statuses.get(&503).copied().unwrap_or(0) >= 1,
        "no 503 at all, so the queue never overflowed and overload was not exercised: \
         {statuses:?}"
    );
    assert_eq!(
        distinct(&all_acknowledged),
        all_acknowledged.len(),
        "one event id acknowledged twice"
    );

    // Batch by batch, through the native API: acknowledged means all there, once; anything
    // else means nothing there, unless an answer was lost (then all of it, atomically).
    let mut stored_total = 0usize;
    let mut unacknowledged_stored = 0usize;
    let mut lost_answer_batches = 0usize;
    let mut acknowledged_batches = 0usize;
    for (corr, outcome) in results.iter().flat_map(|(_, o)| o) {
        let stored = server.by_correlation_as(&auditor, corr);
        stored_total += stored.len();
        let ids = id_set(&stored);
        assert_eq!(ids.len(), stored.len(), "{corr}: an event stored twice");
        // What is stored is what was sent: each event once, as written.
        let mut ns = BTreeSet::new();
        for e in &stored {
            let n = e["event_data"]["n"].as_u64().expect("event_data.n") as usize;
            assert!(
                n < EVENTS && ns.insert(n),
                "{corr}: event {n} unexpected: {e}"
            );
            assert_eq!(e["event_type"], TYPES[n % TYPES.len()].0, "{corr}: {e}");
        }
        match outcome {
            BatchOutcome::Acknowledged(acked) => {
                acknowledged_batches += 1;
                assert_eq!(
                    ids,
                    acked.iter().cloned().collect::<BTreeSet<_>>(),
                    "{corr}: the stored events are not the acknowledged ones"
                );
                assert_eq!(stored.len(), EVENTS, "{corr}");
            }
            BatchOutcome::Exhausted {
                answer_lost: true, ..
            } => {
                lost_answer_batches += 1;
                unacknowledged_stored += stored.len();
                assert!(
                    stored.is_empty() || stored.len() == EVENTS,
                    "{corr}: part of a batch stored ({} events)",
                    stored.len()
                );
            }
            other => assert!(
                stored.is_empty(),
                "{corr}: {} events stored of a batch that was refused: {other:?}",
                stored.len()
            ),
        }
    }
    eprintln!(
        "overload: {acknowledged_batches} of {} batches acknowledged; {lost_answer_batches} \
         given up after a lost answer, {unacknowledged_stored} of their events stored",
        THREADS * BATCHES
    );
    assert!(acknowledged_batches > 0, "no batch got through at all");
    assert_eq!(
        stored_total,
        all_acknowledged.len() + unacknowledged_stored,
        "stored events beyond the acknowledged ones"
    );
    assert_eq!(
        (after - before) as usize,
        stored_total,
        "the log grew by something other than these batches"
    );
}

/// Kubernaut's reader decodes `event_data` by its discriminator, and one event of a type it
/// does not know fails the whole page. The tenant also holds native events, webhook events and
/// the server's own access events; Kubernaut's reader must see only Kubernaut's events, while
/// the native API still shows everything.
#[test]
fn every_page_decodes_under_the_discriminator() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let producer = server.key(ADMIN, "producer");
    let auditor = server.key(ADMIN, "auditor");

    // Kubernaut's events: a batch and one through the single-event route.
    let corr = support::corr("mixed");
    let mut writer = GoLikeClient::new(&server.url, &producer, BACKOFF);
    let outcome = writer.write_batch(&batch(&corr, 120));
    let mut written: BTreeSet<String> = acknowledged(outcome, &writer).into_iter().collect();
    let one = server.call(
        Method::POST,
        "/api/v1/audit/events",
        Some(&producer),
        None,
        Some(&kubernaut_event(&corr, 120)),
    );
    assert_eq!(one.status, 201, "{}", one.text);
    written.insert(
        one.json()["event_id"]
            .as_str()
            .expect("event_id")
            .to_string(),
    );
    assert_eq!(written.len(), 121);

    // Native events.
    let native_corr = support::corr("native");
    let r = server.call(
        Method::POST,
        "/v1/events",
        Some(&producer),
        None,
        Some(&support::events(30, &native_corr)),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    // kube-apiserver's audit webhook.
    let log = support::corpus("kubernetes-audit/demo-v1beta1-full-501d132.log");
    let items: Vec<Value> = std::fs::read_to_string(log)
        .expect("reading the audit log")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(100)
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": items});
    let r = server
        .call(
            Method::POST,
            "/v1/ingest/kubernetes",
            Some(&producer),
            None,
            Some(&list),
        )
        .ok_json();
    assert_eq!(r["stored"], 100, "{r}");

    // Reads, each leaving a `veritrail.access.*` event in the tenant.
    let mut reads = 0;
    for path in [
        "/v1/events?limit=5".to_string(),
        format!("/v1/correlations/{corr}/timeline"),
        "/api/v1/audit/events?limit=1".to_string(),
        format!("/v1/events?correlation_id={native_corr}"),
    ] {
        server.get_as(&auditor, &path).ok_json();
        reads += 1;
    }

    // Kubernaut's reader pages through everything it may see.
    let mut reader = GoLikeClient::new(&server.url, &auditor, BACKOFF);
    let expected = written.len() as u64;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = reader
            .read_page(&format!("limit=50&offset={offset}"))
            .unwrap_or_else(|why| panic!("the page at offset {offset} does not decode: {why}"));
        reads += 1;
        assert_eq!(
            page.total, expected,
            "the total counts other than Kubernaut's events (offset {offset})"
        );
        seen.extend(
            page.data
                .iter()
                .map(|e| e["event_id"].as_str().expect("event_id").to_string()),
        );
        offset += page.data.len();
        if !page.has_more {
            break;
        }
        assert!(
            !page.data.is_empty() && offset < 10 * 50,
            "has_more keeps going (offset {offset})"
        );
    }
    assert_eq!(seen.len(), written.len(), "pages overlap or miss events");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), written);
    assert!(
        reader.counters.violations.is_empty(),
        "{:?}",
        reader.counters.violations
    );

    // The native API still shows all of it.
    assert_eq!(server.by_correlation_as(&auditor, &corr).len(), 121);
    assert_eq!(server.by_correlation_as(&auditor, &native_corr).len(), 30);
    let k8s = server
        .get_as(&auditor, "/v1/events?event_category=kubernetes&limit=1000")
        .ok_json();
    assert_eq!(k8s["events"].as_array().expect("events").len(), 100);
    let access = server
        .get_as(
            &auditor,
            "/v1/events?event_type=veritrail.access.*&limit=1000",
        )
        .ok_json();
    let access = access["events"].as_array().expect("events").len();
    assert!(access >= reads, "{access} access events for {reads} reads");
}

/// Every Kubernaut service probes DataStorage: `/healthz` as JSON with a status and a time,
/// `/readyz` as a 2xx. Neither sends a key.
#[test]
fn health_answers_as_kubernaut_expects() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);

    let r = server.get("/healthz");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        media_type(&r.content_type),
        "application/json",
        "Content-Type {:?}; body {}",
        r.content_type,
        r.text
    );
    let body = r.json();
    assert_eq!(body["status"], "healthy", "{body}");
    let ts = body["timestamp"]
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp string: {body}"));
    let t: DateTime<Utc> = DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("`{ts}` is not RFC 3339: {e}"))
        .with_timezone(&Utc);
    let skew = (Utc::now() - t).num_seconds().abs();
    assert!(skew < 300, "the health time {ts} is not now");

    let r = server.get("/readyz");
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert!(r.text.contains("ready"), "{}", r.text);
}

/// The client tells a refusal it must not retry (400: drop, log the loss) from one it must
/// (401/403: a token being rotated), and only decodes either as a problem.
#[test]
fn refusals_are_problems_the_client_recognises() {
    let scratch = support::Scratch::new();
    let server = Server::start_authenticated(&scratch.data(), ADMIN);
    let producer = server.key(ADMIN, "producer");
    let auditor = server.key(ADMIN, "auditor");

    // A full batch with one bad event: refused as a whole, naming the event, sent once.
    let mut client = GoLikeClient::new(&server.url, &producer, BACKOFF);
    let corr = support::corr("refused");
    let mut events = batch(&corr, 1000);
    events[700]["event_category"] = json!("kitchen");
    match client.write_batch(&events) {
        BatchOutcome::Dropped {
            status: 400,
            problem,
        } => assert!(
            problem["detail"]
                .as_str()
                .unwrap_or("")
                .contains("event at index 700"),
            "the problem does not name the bad event: {problem}"
        ),
        other => panic!("expected a 400 drop: {other:?}"),
    }
    assert_eq!(client.counters.dropped, 1);
    assert_eq!(client.counters.sends, 1, "a 400 was sent again");
    assert_eq!(client.counters.statuses, BTreeMap::from([(400, 1)]));
    assert!(
        client.counters.violations.is_empty(),
        "{:?}",
        client.counters.violations
    );
    assert!(
        server.by_correlation_as(&auditor, &corr).is_empty(),
        "a refused batch stored something"
    );

    // Bad credentials: retried by the client layer (not the transport), then given up.
    for (key, status) in [
        ("vt_wrong_0123456789abcdefghijklmnopqrstuv", 401),
        (auditor.as_str(), 403),
    ] {
        let mut client = GoLikeClient::new(&server.url, key, BACKOFF);
        let outcome = client.write_batch(&batch(&support::corr("denied"), 1));
        assert!(
            matches!(
                outcome,
                BatchOutcome::Exhausted {
                    answer_lost: false,
                    ..
                }
            ),
            "{status}: {outcome:?}"
        );
        let c = &client.counters;
        assert_eq!(c.statuses, BTreeMap::from([(status, 3)]), "{status}");
        assert_eq!((c.attempts, c.sends), (3, 3), "{status}");
        assert_eq!((c.dropped, c.exhausted), (0, 1), "{status}");
        assert!(c.violations.is_empty(), "{status}: {:?}", c.violations);
    }
}
