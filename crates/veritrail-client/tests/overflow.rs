//! The buffer's overflow policies, with the server away and no spool: the batch in flight
//! retries forever, so the buffer's content is fixed and the counts are exact.

mod support;

use std::time::Duration;

use support::{closed_port, fast_config, poll_until, DEADLINE};
use veritrail_client::{Client, Overflow, RecordError};

const CAPACITY: u64 = 20;

/// A client whose first batch (10 events) is stuck in flight and whose buffer is full.
async fn full_client(overflow: Overflow) -> Client {
    let mut config = fast_config(&format!("http://127.0.0.1:{}", closed_port()));
    config.producer_id = Some("overflow".into());
    config.batch_size = 10;
    config.buffer_capacity = CAPACITY as usize;
    config.overflow = overflow;
    let client = Client::start(config).expect("starting the client");
    for i in 0..10 {
        client
            .record(support::event(i, "overflow"))
            .expect("record");
    }
    assert!(
        poll_until(DEADLINE, || async { client.stats().in_flight == 10 }).await,
        "the first batch is taken: {:?}",
        client.stats()
    );
    for i in 10..10 + CAPACITY {
        client
            .record(support::event(i, "overflow"))
            .expect("room for these");
    }
    assert_eq!(client.stats().buffered, CAPACITY);
    client
}

fn balanced(s: &veritrail_client::Stats) {
    assert_eq!(
        s.recorded + s.restored,
        s.sent + s.rejected + s.dropped.total() + s.pending(),
        "the balance holds: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_refuses_the_new_event() {
    let client = full_client(Overflow::DropNewest).await;
    assert!(matches!(
        client.record(support::event(99, "overflow")),
        Err(RecordError::BufferFull)
    ));
    let s = client.stats();
    assert_eq!(s.dropped.buffer_full, 1);
    assert_eq!(
        client.next_producer_seq(),
        30,
        "a refused event uses no number"
    );
    balanced(&s);
    let end = client.shutdown(Duration::from_millis(200)).await;
    assert_eq!(
        end.dropped.shutdown, 30,
        "no spool: what is in memory is counted: {end:?}"
    );
    balanced(&end);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_discards_the_oldest_buffered_event() {
    let client = full_client(Overflow::DropOldest).await;
    let r = client
        .record(support::event(99, "overflow"))
        .expect("accepted");
    assert_eq!(r.producer_seq, 30);
    let s = client.stats();
    assert_eq!((s.dropped.buffer_full, s.buffered), (1, CAPACITY));
    balanced(&s);
    client.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_in_record_wait_only() {
    let client = full_client(Overflow::Block {
        deadline: Duration::from_millis(100),
    })
    .await;
    // `record` never waits: it refuses at once.
    assert!(matches!(
        client.record(support::event(98, "overflow")),
        Err(RecordError::BufferFull)
    ));
    // `record_wait` waits for room up to the deadline, then gives up.
    assert!(matches!(
        client.record_wait(support::event(99, "overflow")).await,
        Err(RecordError::BufferFull)
    ));
    let s = client.stats();
    assert_eq!(s.dropped.buffer_full, 2);
    balanced(&s);
    client.shutdown(Duration::from_millis(200)).await;
    assert!(matches!(
        client.record(support::event(100, "overflow")),
        Err(RecordError::Closed)
    ));
}
