//! A refused API key, against a real server that checks keys: the refresh hook is asked for a
//! new one and the batch is sent again once; without a new key the batch is kept (spooled),
//! never dropped.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use support::{fast_config, Server, DEADLINE};
use veritrail_client::{Client, KeyRefresh};

const ADMIN: &str = "vt_sdk_test_admin_0123456789abcdefghijklmnop";

/// Creates a `default`-tenant key with `role`; returns (id, key).
async fn create_key(url: &str, role: &str) -> (String, String) {
    let k: Value = reqwest::Client::new()
        .post(format!("{url}/v1/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"tenant": "default", "role": role}))
        .send()
        .await
        .expect("creating a key")
        .json()
        .await
        .expect("key JSON");
    let field = |n: &str| k[n].as_str().expect("key member").to_string();
    (field("id"), field("key"))
}

/// A producer key that the server has revoked.
async fn revoked_key(url: &str) -> String {
    let (id, key) = create_key(url, "producer").await;
    let status = reqwest::Client::new()
        .delete(format!("{url}/v1/admin/keys/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("revoking")
        .status();
    assert!(status.is_success());
    key
}

/// Requests the server refused for a bad key so far.
async fn refusals(url: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("veritrail_auth_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Events of `producer` the server holds, read with an auditor key.
async fn stored(url: &str, producer: &str) -> usize {
    let (_, auditor) = create_key(url, "auditor").await;
    let page: Value = reqwest::Client::new()
        .get(format!("{url}/v1/events"))
        .query(&[("producer_id", producer), ("limit", "1000")])
        .bearer_auth(auditor)
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("page");
    page["events"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_refreshed_and_the_batch_sent_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start_keyed(&tmp.path().join("data"), None, Some(ADMIN));
    let url = server.url();
    support::wait_ready(&url).await;
    let stale = revoked_key(&url).await;
    let (_, fresh) = create_key(&url, "producer").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let hook: KeyRefresh = Arc::new(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        Some(fresh.clone())
    });
    let mut config = fast_config(&url);
    config.producer_id = Some("auth".into());
    config.api_key = Some(stale);
    config.key_refresh = Some(hook);
    let client = Client::start(config).expect("start");
    for i in 0..30 {
        client.record(support::event(i, "auth")).expect("record");
    }
    client.flush(DEADLINE).await.expect("flush");
    let s = client.shutdown(DEADLINE).await;
    assert_eq!(s.sent, 30, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refresh serves every later batch"
    );
    assert_eq!(refusals(&url).await, 1.0, "only the stale key was refused");
    assert_eq!(stored(&url, "auth").await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_new_key_batches_are_spooled_not_dropped() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start_keyed(&tmp.path().join("data"), None, Some(ADMIN));
    let url = server.url();
    support::wait_ready(&url).await;
    let stale = revoked_key(&url).await;
    let hook: KeyRefresh = Arc::new(|| None);
    let mut config = fast_config(&url);
    config.producer_id = Some("auth-none".into());
    config.api_key = Some(stale);
    config.key_refresh = Some(hook);
    config.spool_dir = Some(tmp.path().join("spool"));
    let client = Client::start(config).expect("start");
    for i in 0..30 {
        client.record(support::event(i, "auth")).expect("record");
    }
    client
        .flush(DEADLINE)
        .await
        .expect("flush: spooled counts as done");
    let s = client.shutdown(DEADLINE).await;
    assert_eq!(s.sent, 0, "{s:?}");
    assert_eq!(s.dropped.total() + s.rejected, 0, "{s:?}");
    assert_eq!(s.spool_events, 30, "{s:?}");
    assert!(refusals(&url).await >= 3.0, "retried before spooling");
    assert_eq!(stored(&url, "auth-none").await, 0);
}
