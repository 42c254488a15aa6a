//! Veritrail's producer SDK: record audit events from a service without waiting for the server,
//! and without losing them when the server is away.
//!
//! [`Client::record`] stamps an event and puts it in a bounded memory buffer; it never blocks
//! and never awaits. A background task on the current tokio runtime sends the buffer to
//! `POST /v1/events` in batches, by size ([`Config::batch_size`]) and by age
//! ([`Config::flush_interval`]), one request at a time so that events reach the server in
//! `producer_seq` order. It retries failed requests with exponential backoff and full jitter,
//! honouring `Retry-After`. When the failure lasts ([`RetryPolicy`]), batches go to an on-disk
//! spool ([`Config::spool_dir`], format in [`spool`]) and are replayed in order once the server
//! is back, also by the next process that opens the same spool directory. Batches of 1 KiB or
//! more go compressed with zstd (`Content-Encoding: zstd`); [`Config::compression`] chooses
//! gzip or turns it off. The spool keeps batches uncompressed, and each send, a retry or a
//! replay alike, compresses what it sends.
//!
//! Each event gets:
//!
//! - `event_id`: a UUIDv7 unless the caller set one. It is the server's idempotency key, so a
//!   batch sent twice (a reply lost on the way back, a replay after a crash) is stored once.
//! - `event_timestamp`: the time of `record`, unless the caller set one.
//! - `producer_id` and `producer_seq`: this producer's name and a number that grows by one per
//!   event, kept across restarts in the spool directory. Values the caller put in these two
//!   fields are replaced. A gap in `producer_seq` on the server means events were lost: dropped
//!   by the overflow policy (counted in [`Stats::dropped`]), refused as invalid, or in memory
//!   when the process crashed.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde_json::json;
//! use veritrail_client::{Client, Config};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = Config::new("http://127.0.0.1:8080");
//! config.spool_dir = Some("/var/lib/billing/veritrail-spool".into());
//! config.producer_id = Some("billing-api".into());
//! let client = Client::start(config)?;
//!
//! client.record(json!({
//!     "event_type": "billing.invoice.issued",
//!     "event_category": "billing",
//!     "event_action": "issued",
//!     "event_outcome": "success",
//!     "actor_id": "alice",
//!     "correlation_id": "inv-2025-0042",
//!     "event_data": {"amount_cents": 12_900},
//! }))?;
//!
//! // At exit: wait up to 5 s for the server; whatever is left goes to the spool.
//! let stats = client.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(stats.dropped.total(), 0);
//! # Ok(()) }
//! ```
//!
//! What the client counts is in [`Stats`] and in `metrics` series described in [`stats`].
//!
//! With the `validate` feature, `record` checks each event with `veritrail-core`'s rules and
//! refuses an invalid one to its caller (`RecordError::Invalid`); without it, the server's
//! 400 names the invalid events, which are then dropped from their batch and counted in
//! [`Stats::rejected`] while the rest of the batch is sent.

#![warn(missing_docs)]

mod backoff;
mod config;
mod error;
mod http;
pub mod spool;
mod state;
pub mod stats;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Notify;
use uuid::Uuid;

pub use config::{Compression, Config, KeyRefresh, Overflow, RetryPolicy, COMPRESS_MIN_BYTES};
pub use error::{ClientError, RecordError, SpoolError};
pub use stats::{Dropped, Stats};

use stats::{Counters, DropReason};

/// The largest `producer_seq` (and integer) the server accepts: 2^53 − 1.
pub const MAX_PRODUCER_SEQ: u64 = (1 << 53) - 1;

/// What [`Client::record`] assigned to an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The event's id (the caller's, or a new UUIDv7).
    pub event_id: Uuid,
    /// The event's number in this producer's sequence.
    pub producer_seq: u64,
}

/// One event in the buffer, serialized.
pub(crate) struct Item {
    pub seq: u64,
    pub bytes: Vec<u8>,
    /// When it was recorded, for the age-based flush.
    pub at: Instant,
}

/// The memory buffer and the numbering, under one lock so that buffer order is
/// `producer_seq` order.
pub(crate) struct Buffer {
    pub items: VecDeque<Item>,
    pub bytes: usize,
    pub next_seq: u64,
    /// Events ever put in the buffer.
    pub enqueued: u64,
    /// Events ever taken out of it (batched or discarded); the front item is number `taken`.
    pub taken: u64,
    /// Events up to this number are to be batched now, whatever their age (flush asked).
    pub flush_upto: u64,
    /// No more events are accepted.
    pub closed: bool,
}

/// Settings `record` and the task both read.
pub(crate) struct Limits {
    pub capacity: usize,
    pub max_bytes: usize,
    pub max_event_bytes: usize,
    pub batch_size: usize,
    pub max_batch_bytes: usize,
    pub flush_interval: Duration,
    pub overflow: Overflow,
}

/// State shared by the handle and its background task.
pub(crate) struct Shared {
    pub buffer: Mutex<Buffer>,
    /// Wakes the task: a batch may be ready, a flush or a stop was asked for.
    pub wake: Notify,
    /// Wakes `record_wait` callers: room was made in the buffer.
    pub space: Notify,
    /// Wakes `flush`/`drain` callers: events were settled.
    pub progress: Notify,
    pub counters: Counters,
    pub limits: Limits,
    pub producer_id: String,
    /// Buffered events that were acknowledged, spooled, rejected or dropped.
    pub settled: AtomicU64,
    pub stop: AtomicBool,
    pub task_done: AtomicBool,
    /// The current failure streak is lasting (the server is away): `shutdown` then stops
    /// waiting for the spool to drain.
    pub failing: AtomicBool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Nothing panics while holding the lock; if something did, the buffer is still whole.
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn settle(&self, n: u64) {
        if n > 0 {
            self.settled.fetch_add(n, Ordering::SeqCst);
        }
    }
}

/// An event checked and stamped with everything but its number.
struct Prepared {
    map: Map<String, Value>,
    event_id: Uuid,
}

/// Why a push did not happen.
enum PushError {
    /// The buffer is full under a policy that does not discard: the event comes back.
    Full(Prepared),
    Other(RecordError),
}

/// A running producer client. See the crate documentation.
///
/// It is `Send + Sync`: share it behind an `Arc`. Dropping it asks the background task to stop
/// and to spool what it holds, without waiting; call [`Client::shutdown`] to wait for that.
pub struct Client {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("producer_id", &self.shared.producer_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks `config`, opens the spool (replaying nothing yet) and spawns the background task
    /// on the current tokio runtime.
    ///
    /// With a spool directory this reads every spool file to check it, which blocks for as long
    /// as that takes (a full 256 MiB spool: about a second).
    pub fn start(config: Config) -> Result<Client, ClientError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        let transport = http::Transport::new(&config)?;
        let counters = Counters::new();
        let (disk, producer_id, next_seq) = match &config.spool_dir {
            Some(dir) => {
                let (spool, report) =
                    spool::Spool::open(dir, config.spool_file_bytes, config.spool_max_bytes)?;
                let (state, next) =
                    state::ProducerState::load_or_create(dir, config.producer_id.as_deref())?;
                counters.restored.store(report.events, Ordering::Relaxed);
                counters
                    .spool_damage
                    .store(report.torn_tails + report.corrupt, Ordering::Relaxed);
                counters.set_spool(spool.events(), spool.bytes());
                if report.events > 0 {
                    tracing::info!(dir = %dir.display(), events = report.events,
                        "veritrail client: replaying spooled events before new ones");
                }
                let id = state.producer_id().to_string();
                (Some(worker::Disk { spool, state }), id, next)
            }
            None => {
                let id = config.producer_id.clone().ok_or_else(|| {
                    ClientError::Config(
                        "producer_id is required without a spool_dir (nothing else can keep \
                         it stable across restarts)"
                            .into(),
                    )
                })?;
                (None, id, config.first_producer_seq)
            }
        };
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer {
                items: VecDeque::new(),
                bytes: 0,
                next_seq,
                enqueued: 0,
                taken: 0,
                flush_upto: 0,
                closed: false,
            }),
            wake: Notify::new(),
            space: Notify::new(),
            progress: Notify::new(),
            counters,
            limits: Limits {
                capacity: config.buffer_capacity,
                max_bytes: config.buffer_max_bytes,
                max_event_bytes: config.event_limit(),
                batch_size: config.batch_size,
                max_batch_bytes: config.max_batch_bytes,
                flush_interval: config.flush_interval,
                overflow: config.overflow,
            },
            producer_id,
            settled: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            task_done: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        });
        let worker = worker::Worker::new(shared.clone(), Arc::new(transport), disk, &config);
        let task = runtime.spawn(worker.run());
        Ok(Client {
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    /// This producer's id, as stamped on every event.
    pub fn producer_id(&self) -> &str {
        &self.shared.producer_id
    }

    /// The `producer_seq` the next event will get.
    pub fn next_producer_seq(&self) -> u64 {
        self.shared.lock().next_seq
    }

    /// Records one event without blocking or awaiting.
    ///
    /// Fills in `event_id` and `event_timestamp` if absent, sets `producer_id` and the next
    /// `producer_seq`, and puts the event in the buffer. When the buffer is full the overflow
    /// policy applies: [`Overflow::DropOldest`] discards the oldest buffered event and accepts
    /// this one; the others refuse this one with [`RecordError::BufferFull`] (for
    /// [`Overflow::Block`], use [`Client::record_wait`] to wait for room instead). Every drop
    /// is counted in [`Stats::dropped`] and logged at warn level (at most once a second).
    ///
    /// `Ok` means the event is in the buffer, not that the server has it: see
    /// [`Client::flush`].
    pub fn record(&self, event: Value) -> Result<Recorded, RecordError> {
        let prepared = self.prepare(event)?;
        match self.push(prepared, false) {
            Ok(r) => Ok(r),
            Err(PushError::Full(_)) => Err(self.refuse_full()),
            Err(PushError::Other(e)) => Err(e),
        }
    }

    /// Records one event, waiting for room when the buffer is full and the policy is
    /// [`Overflow::Block`] (at most its deadline, then the event is dropped and counted).
    /// Under the other policies it behaves exactly as [`Client::record`].
    pub async fn record_wait(&self, event: Value) -> Result<Recorded, RecordError> {
        let mut prepared = self.prepare(event)?;
        let Overflow::Block { deadline } = self.shared.limits.overflow else {
            return self.push(prepared, false).map_err(|e| match e {
                PushError::Full(_) => self.refuse_full(),
                PushError::Other(e) => e,
            });
        };
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let room = self.shared.space.notified();
            tokio::pin!(room);
            // Registered before trying, so that room made between the try and the wait wakes us.
            room.as_mut().enable();
            match self.push(prepared, true) {
                Ok(r) => return Ok(r),
                Err(PushError::Other(e)) => return Err(e),
                Err(PushError::Full(back)) => prepared = back,
            }
            if tokio::time::timeout_at(until, room).await.is_err() {
                return match self.push(prepared, false) {
                    Ok(r) => Ok(r),
                    Err(PushError::Full(_)) => Err(self.refuse_full()),
                    Err(PushError::Other(e)) => Err(e),
                };
            }
        }
    }

    /// Counts an event refused because the buffer is full.
    fn refuse_full(&self) -> RecordError {
        let c = &self.shared.counters;
        c.recorded.fetch_add(1, Ordering::Relaxed);
        c.drop_events(DropReason::BufferFull, 1);
        RecordError::BufferFull
    }

    /// Checks the event's shape and fills in its id and time.
    fn prepare(&self, event: Value) -> Result<Prepared, RecordError> {
        let mut map = match event {
            Value::Object(m) => m,
            other => return Err(RecordError::NotAnObject(kind(&other))),
        };
        let event_id = match map.get("event_id") {
            None | Some(Value::Null) => {
                let id = Uuid::now_v7();
                map.insert("event_id".into(), Value::String(id.to_string()));
                id
            }
            Some(Value::String(s)) => {
                Uuid::try_parse(s).map_err(|_| RecordError::InvalidEventId(s.clone()))?
            }
            Some(other) => return Err(RecordError::InvalidEventId(other.to_string())),
        };
        if matches!(map.get("event_timestamp"), None | Some(Value::Null)) {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            map.insert("event_timestamp".into(), Value::String(now));
        }
        #[cfg(feature = "validate")]
        {
            // Checked with the producer fields in place, as the server will see it.
            let mut probe = map.clone();
            probe.insert("producer_id".into(), self.shared.producer_id.clone().into());
            probe.insert("producer_seq".into(), 0.into());
            veritrail_core::event::Event::from_json(&Value::Object(probe), Uuid::now_v7)
                .map_err(|e| RecordError::Invalid(e.to_string()))?;
        }
        Ok(Prepared { map, event_id })
    }

    /// Numbers, serializes and buffers an event. With `wait`, a full buffer hands the event
    /// back instead of applying the policy.
    fn push(&self, mut p: Prepared, wait: bool) -> Result<Recorded, PushError> {
        let shared = &self.shared;
        let limits = &shared.limits;
        let mut b = shared.lock();
        if b.closed {
            return Err(PushError::Other(RecordError::Closed));
        }
        let seq = b.next_seq;
        if seq > MAX_PRODUCER_SEQ {
            return Err(PushError::Other(RecordError::SequenceExhausted));
        }
        p.map
            .insert("producer_id".into(), shared.producer_id.clone().into());
        p.map.insert("producer_seq".into(), seq.into());
        let bytes = match serde_json::to_vec(&p.map) {
            Ok(v) => v,
            // A map of JSON values always serializes; this keeps the path free of panics.
            Err(_) => return Err(PushError::Other(RecordError::NotAnObject("unserializable"))),
        };
        if bytes.len() > limits.max_event_bytes {
            return Err(PushError::Other(RecordError::TooLarge {
                bytes: bytes.len(),
                max: limits.max_event_bytes,
            }));
        }
        let full = |b: &Buffer| {
            b.items.len() >= limits.capacity || b.bytes + bytes.len() > limits.max_bytes
        };
        let mut evicted = 0u64;
        if full(&b) {
            if wait || limits.overflow != Overflow::DropOldest {
                return Err(PushError::Full(p));
            }
            while full(&b) {
                let Some(old) = b.items.pop_front() else {
                    break;
                };
                b.bytes -= old.bytes.len();
                b.taken += 1;
                evicted += 1;
            }
        }
        b.next_seq += 1;
        b.bytes += bytes.len();
        b.items.push_back(Item {
            seq,
            bytes,
            at: Instant::now(),
        });
        b.enqueued += 1;
        let len = b.items.len();
        let wake = len == 1 || len >= limits.batch_size || b.bytes >= limits.max_batch_bytes;
        drop(b);
        let c = &shared.counters;
        c.recorded.fetch_add(1, Ordering::Relaxed);
        c.set_buffered(len);
        if evicted > 0 {
            shared.settle(evicted);
            c.drop_events(DropReason::BufferFull, evicted);
        }
        if wake {
            // The first event arms the age timer; a full batch is sent at once.
            shared.wake.notify_one();
        }
        Ok(Recorded {
            event_id: p.event_id,
            producer_seq: seq,
        })
    }

    /// Waits until every event recorded before this call is acknowledged by the server or
    /// written to the spool (or dropped or rejected, as counted in [`Stats`]), sending partial
    /// batches at once. If `timeout` passes first, returns
    /// [`ClientError::DeadlineExceeded`] with the number still waiting; they stay queued.
    pub async fn flush(&self, timeout: Duration) -> Result<(), ClientError> {
        let until = tokio::time::Instant::now() + timeout;
        let target = self.request_flush();
        let shared = self.shared.clone();
        self.wait_for(until, move || {
            shared.settled.load(Ordering::SeqCst) >= target
                || shared.task_done.load(Ordering::SeqCst)
        })
        .await;
        let remaining = target.saturating_sub(self.shared.settled.load(Ordering::SeqCst));
        if remaining == 0 {
            Ok(())
        } else if self.shared.task_done.load(Ordering::SeqCst) {
            Err(ClientError::Stopped)
        } else {
            Err(ClientError::DeadlineExceeded { remaining })
        }
    }

    /// Like [`Client::flush`], and also waits until the spool is empty: everything recorded
    /// so far, and everything replayed from the spool, is acknowledged by the server.
    pub async fn drain(&self, timeout: Duration) -> Result<(), ClientError> {
        let until = tokio::time::Instant::now() + timeout;
        let target = self.request_flush();
        let shared = self.shared.clone();
        let idle = move || {
            let c = &shared.counters;
            shared.settled.load(Ordering::SeqCst) >= target
                && c.spool_events.load(Ordering::SeqCst) == 0
                && c.in_flight.load(Ordering::SeqCst) == 0
        };
        if self.wait_for(until, idle.clone()).await && idle() {
            return Ok(());
        }
        if self.shared.task_done.load(Ordering::SeqCst) {
            return Err(ClientError::Stopped);
        }
        Err(ClientError::DeadlineExceeded {
            remaining: self.stats().pending(),
        })
    }

    /// Sends what it can within `timeout`, then stops the background task, which writes
    /// whatever is still in memory to the spool (or counts it in [`Dropped::shutdown`] if there
    /// is no spool or no room) and records the next `producer_seq` in the spool directory.
    /// Returns the final counts. New events are refused from the start of the call.
    ///
    /// While the server answers, it waits (at most `timeout`) until everything is
    /// acknowledged, the spool included, so that a short-lived process does not leave a
    /// spool behind for nothing. During a lasting failure it waits only until everything
    /// recorded is spooled, as [`Client::flush`] does: waiting longer would not help.
    pub async fn shutdown(&self, timeout: Duration) -> Stats {
        self.shared.lock().closed = true;
        // Waiters of record_wait see `closed` and give up.
        self.shared.space.notify_waiters();
        let until = tokio::time::Instant::now() + timeout;
        let target = self.request_flush();
        let shared = self.shared.clone();
        let done = self
            .wait_for(until, move || {
                let c = &shared.counters;
                let flushed = shared.settled.load(Ordering::SeqCst) >= target;
                let drained = c.spool_events.load(Ordering::SeqCst) == 0
                    && c.in_flight.load(Ordering::SeqCst) == 0;
                shared.task_done.load(Ordering::SeqCst)
                    || (flushed && (drained || shared.failing.load(Ordering::SeqCst)))
            })
            .await;
        if !done {
            tracing::info!(
                pending = self.stats().pending(),
                "veritrail client: stopping before everything was sent"
            );
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "veritrail client: the background task failed");
            }
        }
        self.stats()
    }

    /// The client's counts now; see [`Stats`].
    pub fn stats(&self) -> Stats {
        let buffered = self.shared.lock().items.len() as u64;
        self.shared.counters.snapshot(buffered)
    }

    /// Asks the task to batch everything buffered now; returns the number of events to wait
    /// for.
    fn request_flush(&self) -> u64 {
        let target = {
            let mut b = self.shared.lock();
            b.flush_upto = b.flush_upto.max(b.enqueued);
            b.enqueued
        };
        self.shared.wake.notify_one();
        target
    }

    /// Waits until `cond` holds or `until` passes; returns whether it held.
    async fn wait_for(&self, until: tokio::time::Instant, cond: impl Fn() -> bool) -> bool {
        loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if cond() {
                return true;
            }
            if tokio::time::timeout_at(until, progress).await.is_err() {
                return cond();
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // The task spools what it holds and exits; nobody waits for it here.
        self.shared.lock().closed = true;
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        self.shared.space.notify_waiters();
    }
}

/// Names a JSON value's type for errors.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(all(test, feature = "validate"))]
mod validate_tests {
    use super::*;

    #[tokio::test]
    async fn invalid_events_are_refused_to_the_caller() {
        let mut config = Config::new("http://127.0.0.1:9");
        config.producer_id = Some("validate".into());
        let client = Client::start(config).expect("start");
        let bad = serde_json::json!({"event_type": "x.y", "event_category": "x",
            "event_action": "y", "event_outcome": "maybe"});
        let err = client
            .record(bad)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("event_outcome"), "{err}");
        assert_eq!(client.stats().recorded, 0);
    }
}
