//! A server outage in mid-stream, then a restart of the producer process: every event arrives
//! exactly once and in `producer_seq` order.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{events_of, fast_config, poll_until, wait_ready, Server, DEADLINE};
use veritrail_client::{Client, Recorded};

const PRODUCER: &str = "outage-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_outage_and_producer_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let spool = tmp.path().join("spool");
    let mut server = Server::start(&data, None);
    let port = server.port;
    let url = server.url();
    wait_ready(&url).await;

    let mut config = fast_config(&url);
    config.spool_dir = Some(spool.clone());
    config.producer_id = Some(PRODUCER.into());
    let mut recorded: Vec<Recorded> = Vec::new();

    // The first producer process: some events while the server is up...
    let client = Client::start(config.clone()).expect("starting the client");
    for i in 0..150u64 {
        recorded.push(client.record(support::event(i, "outage")).expect("record"));
        if i % 10 == 9 {
            // Pacing only, so that batches go out while recording goes on.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(
        poll_until(DEADLINE, || async { client.stats().sent > 0 }).await,
        "nothing was acknowledged before the outage: {:?}",
        client.stats()
    );

    // ...then the server dies and recording goes on.
    server.kill();
    for i in 150..300u64 {
        recorded.push(client.record(support::event(i, "outage")).expect("record"));
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(
        poll_until(DEADLINE, || async { client.stats().spooled > 0 }).await,
        "the lasting failure never reached the spool: {:?}",
        client.stats()
    );
    let first = client.shutdown(Duration::from_secs(5)).await;
    drop(client);
    assert_eq!(first.recorded, 300);
    assert_eq!(first.dropped.total(), 0, "{first:?}");
    assert_eq!(first.rejected, 0, "{first:?}");
    assert!(
        first.spool_events > 0,
        "the rest waits in the spool: {first:?}"
    );
    assert_eq!(
        first.sent + first.spool_events,
        300,
        "every event is either acknowledged or spooled: {first:?}"
    );

    // The server comes back on the same port and data; a new producer process starts on the
    // same spool directory, replays it, and records more.
    let server = Server::start(&data, Some(port));
    wait_ready(&url).await;
    let client = Client::start(config).expect("restarting the client");
    assert_eq!(client.producer_id(), PRODUCER);
    assert_eq!(
        client.next_producer_seq(),
        300,
        "numbering continues where the clean shutdown left it"
    );
    assert_eq!(client.stats().restored, first.spool_events);
    for i in 300..350u64 {
        recorded.push(client.record(support::event(i, "outage")).expect("record"));
    }
    client
        .drain(DEADLINE)
        .await
        .expect("everything reaches the server");
    let second = client.shutdown(Duration::from_secs(5)).await;
    assert_eq!(second.dropped.total(), 0, "{second:?}");
    assert_eq!(second.spool_events, 0, "{second:?}");

    let mut stored = events_of(&server.url(), PRODUCER).await;
    let ids: HashSet<&str> = stored
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), stored.len(), "no event_id is stored twice");
    assert_eq!(stored.len(), recorded.len(), "every recorded event arrived");
    let sent_ids: HashSet<String> = recorded.iter().map(|r| r.event_id.to_string()).collect();
    assert!(
        ids.iter().all(|id| sent_ids.contains(*id)),
        "only recorded events are stored"
    );
    stored.sort_by_key(|e| e["seq"].as_u64());
    let seqs: Vec<u64> = stored
        .iter()
        .map(|e| e["producer_seq"].as_u64().expect("producer_seq"))
        .collect();
    let expected: Vec<u64> = (0..recorded.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "the server's order is producer_seq order, without gaps"
    );
}
