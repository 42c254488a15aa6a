//! Events the server refuses: invalid ones are dropped from their batch and the rest is stored;
//! a reused `event_id` costs only that event.

mod support;

use std::collections::HashSet;

use serde_json::json;
use support::{events_of, fast_config, wait_ready, Server, DEADLINE};
use veritrail_client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let mut config = fast_config(&server.url());
    config.producer_id = Some("rejections".into());
    let client = Client::start(config).expect("starting the client");

    let mut good = HashSet::new();
    for i in 0..30u64 {
        let mut e = support::event(i, "invalid");
        if i % 10 == 3 {
            // Not one of success, failure, pending: the server names this event as invalid.
            e["event_outcome"] = json!("maybe");
            client.record(e).expect("record");
        } else {
            good.insert(client.record(e).expect("record").event_id.to_string());
        }
    }
    client.flush(DEADLINE).await.expect("flush");
    let s = client.shutdown(DEADLINE).await;
    assert_eq!(s.rejected, 3, "{s:?}");
    assert_eq!(s.sent, 27, "{s:?}");
    assert_eq!(s.dropped.total(), 0, "{s:?}");
    let stored: HashSet<String> = events_of(&server.url(), "rejections")
        .await
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(stored, good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_drops_only_that_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&tmp.path().join("data"), None);
    wait_ready(&server.url()).await;
    let mut config = fast_config(&server.url());
    config.producer_id = Some("conflicts".into());
    let client = Client::start(config).expect("starting the client");

    let first = client
        .record(support::event(0, "conflict"))
        .expect("record");
    client.flush(DEADLINE).await.expect("flush");
    assert_eq!(client.stats().sent, 1);

    let mut good = HashSet::from([first.event_id.to_string()]);
    for i in 1..20u64 {
        let mut e = support::event(i, "conflict");
        if i == 7 {
            // The first event's id with other content.
            e["event_id"] = json!(first.event_id.to_string());
            client.record(e).expect("record");
        } else {
            good.insert(client.record(e).expect("record").event_id.to_string());
        }
    }
    client.flush(DEADLINE).await.expect("flush");
    let s = client.shutdown(DEADLINE).await;
    assert_eq!(s.dropped.conflict, 1, "{s:?}");
    assert_eq!(s.sent, 19, "{s:?}");
    let stored: HashSet<String> = events_of(&server.url(), "conflicts")
        .await
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(stored, good);
}
