//! A spool that fills while the server is away: the overflow policy applies to new batches, and
//! the counts (stats and metrics) add up to what was recorded.
//!
//! This file is its own test binary because it installs a global `metrics` recorder.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use support::{closed_port, fast_config, DEADLINE};
use veritrail_client::{Client, Overflow};

/// Counters by `name{label=value,…}`; gauges and histograms are ignored.
#[derive(Default)]
struct Counts {
    counters: Mutex<HashMap<String, Arc<Count>>>,
}

struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}

impl Counts {
    fn get(&self, key: &str) -> u64 {
        let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

struct Installed(&'static Counts);

impl Recorder for Installed {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = if labels.is_empty() {
            key.name().to_string()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        let mut map = self.0.counters.lock().unwrap_or_else(|e| e.into_inner());
        let c = map
            .entry(name)
            .or_insert_with(|| Arc::new(Count(AtomicU64::new(0))))
            .clone();
        Counter::from_arc(c)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Reads a spool directory by its documented format: every entry's events, in order.
fn read_spool(dir: &std::path::Path) -> (Vec<serde_json::Value>, u64) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    files.sort();
    let mut events = Vec::new();
    let mut bytes = 0;
    for f in files {
        let data = std::fs::read(&f).expect("spool file");
        bytes += data.len() as u64;
        let mut at = 0;
        while at < data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
            let payload = &data[at + 8..at + 8 + len];
            assert_eq!(
                crc32c::crc32c(payload),
                crc,
                "checksum of an entry in {f:?}"
            );
            let batch: Vec<serde_json::Value> =
                serde_json::from_slice(payload).expect("a JSON array");
            events.extend(batch);
            at += 8 + len;
        }
    }
    (events, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_full_applies_policy_and_counts() {
    let counts: &'static Counts = Box::leak(Box::default());
    metrics::set_global_recorder(Installed(counts)).expect("installing the recorder");

    let tmp = tempfile::tempdir().expect("tempdir");
    let spool = tmp.path().join("spool");
    // Nothing listens there: every attempt fails at once.
    let mut config = fast_config(&format!("http://127.0.0.1:{}", closed_port()));
    config.producer_id = Some("spool-full".into());
    config.spool_dir = Some(spool.clone());
    config.batch_size = 10;
    // Batches are cut by size only, so that each holds exactly ten events.
    config.flush_interval = Duration::from_secs(3600);
    config.max_batch_bytes = 64 * 1024;
    config.spool_file_bytes = 8 * 1024;
    config.spool_max_bytes = 64 * 1024 + 8;
    config.overflow = Overflow::DropNewest;
    let cap = config.spool_max_bytes;

    let client = Client::start(config).expect("starting the client");
    const N: u64 = 400;
    for i in 0..N {
        client
            .record(support::event(i, "spool-full"))
            .expect("record");
    }
    client
        .flush(DEADLINE)
        .await
        .expect("every event is spooled or dropped");
    let s = client.shutdown(Duration::from_secs(5)).await;

    assert_eq!(s.recorded, N);
    assert_eq!(s.sent, 0);
    assert!(s.spooled > 0, "some batches fit: {s:?}");
    assert!(s.dropped.spool_full > 0, "the rest did not: {s:?}");
    assert_eq!(s.spooled % 10, 0, "whole batches are spooled: {s:?}");
    assert_eq!(
        s.spooled + s.dropped.spool_full,
        N,
        "each event is spooled or dropped: {s:?}"
    );
    assert_eq!(s.dropped.total(), s.dropped.spool_full, "{s:?}");
    assert_eq!(
        s.recorded + s.restored,
        s.sent + s.rejected + s.dropped.total() + s.pending(),
        "the balance holds: {s:?}"
    );
    assert_eq!(s.spool_events, s.spooled);
    assert!(s.spool_bytes <= cap, "{s:?}");

    // The same through the metrics facade.
    assert_eq!(
        counts.get("veritrail_client_dropped_total{reason=spool_full}"),
        s.dropped.spool_full
    );
    assert_eq!(counts.get("veritrail_client_spooled_total"), s.spooled);
    assert_eq!(counts.get("veritrail_client_sent_total"), 0);
    assert!(counts.get("veritrail_client_retried_total") > 0);

    // And on disk, by the documented format: DropNewest keeps the oldest events, in order.
    let (on_disk, bytes) = read_spool(&spool);
    assert!(bytes <= cap);
    assert_eq!(bytes, s.spool_bytes);
    let seqs: Vec<u64> = on_disk
        .iter()
        .map(|e| e["producer_seq"].as_u64().expect("producer_seq"))
        .collect();
    assert_eq!(seqs, (0..s.spooled).collect::<Vec<_>>());
}
