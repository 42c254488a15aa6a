//! A refused API key: the refresh hook is asked for a new one and the batch is sent again
//! once; without a new key the batch is kept (spooled), never dropped.
//!
//! The server does not check keys yet, so a small stand-in answers here: 401 unless the
//! request carries `Bearer fresh`, else 200 with one receipt per event.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{fast_config, read_message, DEADLINE};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use veritrail_client::{Client, KeyRefresh};

/// Starts the stand-in; returns its address and the number of requests it refused.
async fn start_stand_in() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                while let Some(request) = read_message(&mut conn).await {
                    let text = String::from_utf8_lossy(&request);
                    let authorized = text
                        .lines()
                        .any(|l| l.eq_ignore_ascii_case("authorization: Bearer fresh"));
                    let (status, body) = if authorized {
                        let body_start = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
                        let events: Vec<serde_json::Value> =
                            serde_json::from_str(&text[body_start..]).unwrap_or_default();
                        let receipts: Vec<_> = events
                            .iter()
                            .enumerate()
                            .map(|(i, e)| serde_json::json!({"event_id": e["event_id"], "seq": i}))
                            .collect();
                        let body =
                            serde_json::json!({"receipts": receipts, "tree_size": receipts.len()});
                        ("200 OK", body.to_string())
                    } else {
                        counter.fetch_add(1, Ordering::SeqCst);
                        (
                            "401 Unauthorized",
                            r#"{"status":401,"detail":"bad key"}"#.to_string(),
                        )
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_refreshed_and_the_batch_sent_again() {
    let (addr, refused) = start_stand_in().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let hook: KeyRefresh = Arc::new(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        Some("fresh".to_string())
    });
    let mut config = fast_config(&format!("http://{addr}"));
    config.producer_id = Some("auth".into());
    config.api_key = Some("stale".into());
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
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "only the stale key was refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_new_key_batches_are_spooled_not_dropped() {
    let (addr, refused) = start_stand_in().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let hook: KeyRefresh = Arc::new(|| None);
    let mut config = fast_config(&format!("http://{addr}"));
    config.producer_id = Some("auth-none".into());
    config.api_key = Some("stale".into());
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
    assert!(
        refused.load(Ordering::SeqCst) >= 3,
        "retried before spooling"
    );
}
