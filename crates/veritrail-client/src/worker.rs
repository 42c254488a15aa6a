//! The background task: cuts batches from the buffer, sends one request at a time, retries,
//! and moves batches through the spool during lasting failures.
//!
//! Two modes keep events in `producer_seq` order:
//!
//! - **direct** (the spool is empty): the next batch comes from memory and is sent; after a
//!   lasting failure it is written to the spool, which switches to the other mode.
//! - **spooling** (the spool holds something): the next batch sent is always the spool's oldest
//!   entry, and new batches from the buffer are appended to the spool behind it, so nothing
//!   overtakes what is already waiting. When the spool is empty again, the mode is direct.
//!
//! The task's loop waits on three things at once: the request in flight, a wake-up from
//! `record`/`flush`/`shutdown`, and the next timer (a retry's backoff, the age of the oldest
//! buffered event, a spool retry).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Jitter;
use crate::config::{Config, Overflow, RetryPolicy};
use crate::error::SpoolError;
use crate::http::{Outcome, Transport};
use crate::spool::{EntryPos, Spool};
use crate::state::ProducerState;
use crate::stats::{DropReason, WarnLimiter};
use crate::Shared;

/// After a spool read or write fails, the next try waits this long.
const DISK_RETRY: Duration = Duration::from_secs(1);

/// The spool and the producer state, which live in the same directory and move together to
/// the blocking thread pool for I/O.
pub(crate) struct Disk {
    pub spool: Spool,
    pub state: ProducerState,
}

/// Events taken from the buffer.
struct Batch {
    events: Vec<Vec<u8>>,
    max_seq: u64,
}

/// Where the batch in flight came from.
enum Source {
    /// The buffer; `max_seq` is its highest `producer_seq`.
    Memory { max_seq: u64 },
    /// The spool entry at this place.
    Spool(EntryPos),
}

type Attempt = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The one batch being sent.
struct InFlight {
    /// Events not yet settled, in order.
    events: Vec<Vec<u8>>,
    source: Source,
    /// How many of `events` the next request carries: fewer than all after a 413 or 409, to
    /// find what the server refuses without refusing the rest.
    limit: usize,
    not_before: Instant,
    attempt: Option<Attempt>,
    /// The key was refreshed since the last failure.
    refreshed: bool,
    /// The last attempt failed, so the next one counts as a retry.
    retrying: bool,
    /// For spool entries, counts held back until the entry is acknowledged, so that the
    /// balance in `Stats` holds (the entry's events count as spooled until then).
    sent: u64,
    rejected: u64,
    conflict: u64,
}

impl InFlight {
    fn new(events: Vec<Vec<u8>>, source: Source, not_before: Instant) -> InFlight {
        InFlight {
            limit: events.len(),
            events,
            source,
            not_before,
            attempt: None,
            refreshed: false,
            retrying: false,
            sent: 0,
            rejected: 0,
            conflict: 0,
        }
    }

    /// Events the next request carries.
    fn part(&self) -> usize {
        self.limit.clamp(1, self.events.len().max(1))
    }
}

/// Consecutive failures, shared by all batches: a new batch after a failed one waits out the
/// same backoff, and a streak that started on one batch can make the next one go to the spool.
struct Streak {
    failures: u32,
    since: Option<Instant>,
    next_at: Instant,
}

/// The background task's state.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    transport: Arc<Transport>,
    disk: Option<Disk>,
    retry: RetryPolicy,
    jitter: Jitter,
    inflight: Option<InFlight>,
    /// A batch that could not go to the spool yet (no room under `Block`, or a write error);
    /// it is older than everything in the buffer, so nothing else moves until it does.
    held: Option<Batch>,
    /// When to try the held batch again; `None` means when the spool makes room.
    held_retry_at: Option<Instant>,
    room_changed: bool,
    /// When to read the spool again after a read error.
    read_retry_at: Option<Instant>,
    streak: Streak,
    send_warn: WarnLimiter,
    disk_warn: WarnLimiter,
}

impl Worker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        transport: Arc<Transport>,
        disk: Option<Disk>,
        config: &Config,
    ) -> Worker {
        Worker {
            shared,
            transport,
            disk,
            retry: config.retry.clone(),
            jitter: Jitter::new(),
            inflight: None,
            held: None,
            held_retry_at: None,
            room_changed: false,
            read_retry_at: None,
            streak: Streak {
                failures: 0,
                since: None,
                next_at: Instant::now(),
            },
            send_warn: WarnLimiter::new(),
            disk_warn: WarnLimiter::new(),
        }
    }

    /// Runs until a stop is asked for, then saves what memory holds.
    pub(crate) async fn run(mut self) {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                self.finish().await;
                return;
            }
            self.fill().await;
            self.start_attempt_if_due().await;
            self.shared.progress.notify_waiters();
            let timer = self.next_timer();
            let shared = self.shared.clone();
            let outcome = {
                let inflight = &mut self.inflight;
                let attempt = async move {
                    match inflight.as_mut().and_then(|f| f.attempt.as_mut()) {
                        Some(a) => a.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    o = attempt => Some(o),
                    () = shared.wake.notified() => None,
                    () = sleep_until(timer) => None,
                }
            };
            if let Some(o) = outcome {
                self.handle(o).await;
            }
        }
    }

    fn spool_pending(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.spool.has_pending())
    }

    /// Whether a batch may be cut from the buffer now.
    fn can_take(&self) -> bool {
        if self.held.is_some() {
            return false;
        }
        self.spool_pending() || self.inflight.is_none()
    }

    /// Picks the batch to send next, and in spooling mode moves ready batches to the spool.
    async fn fill(&mut self) {
        let now = Instant::now();
        if self.inflight.is_none() {
            if self.spool_pending() {
                if self.read_retry_at.is_none_or(|t| t <= now) {
                    self.load_from_spool().await;
                }
            } else if let Some(batch) = self.held.take() {
                self.inflight = Some(self.memory_inflight(batch));
            } else if let Some(batch) = self.take_batch(false) {
                self.inflight = Some(self.memory_inflight(batch));
            }
        }
        if !self.spool_pending() {
            return;
        }
        if self.held.is_some()
            && (self.room_changed || self.held_retry_at.is_some_and(|t| t <= now))
        {
            self.room_changed = false;
            if let Some(batch) = self.held.take() {
                self.spool_batch(batch, false).await;
            }
        }
        while self.held.is_none() {
            let Some(batch) = self.take_batch(false) else {
                break;
            };
            self.spool_batch(batch, false).await;
        }
    }

    fn memory_inflight(&self, batch: Batch) -> InFlight {
        let source = Source::Memory {
            max_seq: batch.max_seq,
        };
        let mut f = InFlight::new(batch.events, source, self.streak.next_at);
        // A held batch already failed: sending it again is a retry.
        f.retrying = self.streak.failures > 0;
        f
    }

    async fn load_from_spool(&mut self) {
        let read = self.with_disk(|d| d.spool.peek()).await;
        match read {
            Some(Ok(Some(entry))) => {
                self.read_retry_at = None;
                let mut f =
                    InFlight::new(entry.events, Source::Spool(entry.pos), self.streak.next_at);
                // During a failure streak every request resends something that already failed
                // (the spool only fills after failures).
                f.retrying = self.streak.failures > 0;
                self.inflight = Some(f);
            }
            Some(Ok(None)) | None => {}
            Some(Err(e)) => {
                self.read_retry_at = Some(Instant::now() + DISK_RETRY);
                if self.disk_warn.allow(1).is_some() {
                    tracing::error!(error = %e, "veritrail client: reading the spool failed; retrying");
                }
            }
        }
        self.after_disk();
    }

    /// Cuts the next batch from the buffer if one is ready (or, with `force`, if any event is
    /// there).
    fn take_batch(&self, force: bool) -> Option<Batch> {
        let limits = &self.shared.limits;
        let now = std::time::Instant::now();
        let mut b = self.shared.lock();
        let front = b.items.front()?;
        let ready = force
            || b.items.len() >= limits.batch_size
            || b.bytes >= limits.max_batch_bytes
            || b.taken < b.flush_upto
            || front.at + limits.flush_interval <= now;
        if !ready {
            return None;
        }
        let mut events = Vec::new();
        let mut size = 2;
        let mut max_seq = 0;
        while events.len() < limits.batch_size {
            let Some(item) = b.items.front() else {
                break;
            };
            let add = item.bytes.len() + 1;
            if !events.is_empty() && size + add > limits.max_batch_bytes {
                break;
            }
            let Some(item) = b.items.pop_front() else {
                break;
            };
            b.bytes -= item.bytes.len();
            b.taken += 1;
            size += add;
            max_seq = item.seq;
            events.push(item.bytes);
        }
        let left = b.items.len();
        drop(b);
        let c = &self.shared.counters;
        c.in_flight.fetch_add(events.len() as u64, Ordering::SeqCst);
        c.set_buffered(left);
        self.shared.space.notify_waiters();
        Some(Batch { events, max_seq })
    }

    /// The earliest moment the loop has something to do without being woken.
    fn next_timer(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut add = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(f) = &self.inflight {
            if f.attempt.is_none() {
                add(f.not_before);
            }
        } else if self.spool_pending() {
            if let Some(t) = self.read_retry_at {
                add(t);
            }
        }
        if self.can_take() {
            if let Some(at) = self.shared.lock().items.front().map(|i| i.at) {
                add(Instant::from_std(at + self.shared.limits.flush_interval));
            }
        }
        if self.held.is_some() && self.spool_pending() {
            if let Some(t) = self.held_retry_at {
                add(t);
            }
        }
        next
    }

    async fn start_attempt_if_due(&mut self) {
        let now = Instant::now();
        let (due, max_seq) = match &self.inflight {
            Some(f) if f.attempt.is_none() && f.not_before <= now => match f.source {
                Source::Memory { max_seq } => (true, Some(max_seq)),
                Source::Spool(_) => (true, None),
            },
            _ => (false, None),
        };
        if !due {
            return;
        }
        if let Some(max_seq) = max_seq {
            // The numbers leave memory with this request: make sure a restart cannot reuse them.
            if self.disk.as_ref().is_some_and(|d| !d.state.covers(max_seq)) {
                let saved = self.with_disk(move |d| d.state.cover(max_seq)).await;
                if let Some(Err(e)) = saved {
                    if self.disk_warn.allow(1).is_some() {
                        tracing::error!(error = %e, "veritrail client: saving the producer sequence failed");
                    }
                }
            }
        }
        let transport = self.transport.clone();
        let Some(f) = self.inflight.as_mut() else {
            return;
        };
        if f.events.is_empty() {
            return;
        }
        if f.retrying {
            self.shared.counters.add_retried();
        }
        let n = f.part();
        let body = batch_body(&f.events[..n]);
        f.attempt = Some(Box::pin(transport.send(body, n)));
    }

    /// Acts on the answer to the request in flight.
    async fn handle(&mut self, outcome: Outcome) {
        let Some(mut f) = self.inflight.take() else {
            return;
        };
        f.attempt = None;
        let n = f.part();
        let now = Instant::now();
        match outcome {
            Outcome::Delivered => {
                self.shared.failing.store(false, Ordering::SeqCst);
                self.streak.failures = 0;
                self.streak.since = None;
                self.streak.next_at = now;
                f.retrying = false;
                f.refreshed = false;
                f.events.drain(..n);
                self.settle_part(&mut f, n as u64, Settled::Sent);
                // Grow back after a split, so that one refused event does not slow the rest.
                f.limit = (f.limit * 2).min(f.events.len());
                f.not_before = now;
                self.continue_or_complete(f).await;
            }
            Outcome::Retry { retry_after, why } => self.failed(f, retry_after, why).await,
            Outcome::Unauthorized { status } => {
                if !f.refreshed && self.transport.can_refresh() {
                    f.refreshed = true;
                    if self.transport.refresh_key().await {
                        // One more try with the new key, at once.
                        f.retrying = true;
                        f.not_before = now;
                        self.inflight = Some(f);
                        return;
                    }
                }
                let why = format!("HTTP {status}: the server refused the API key");
                self.failed(f, None, why).await;
            }
            Outcome::Invalid { indexes, detail } => {
                tracing::warn!(
                    events = indexes.len(),
                    indexes = ?indexes,
                    detail = %detail,
                    "veritrail client: the server refused invalid events; they are dropped \
                     from their batch and the rest is sent again"
                );
                for &i in indexes.iter().rev() {
                    if i < f.events.len() {
                        f.events.remove(i);
                    }
                }
                self.settle_part(&mut f, indexes.len() as u64, Settled::Rejected);
                f.limit = n.saturating_sub(indexes.len()).max(1);
                f.not_before = now;
                self.continue_or_complete(f).await;
            }
            Outcome::Rejected { status, detail } => {
                tracing::error!(
                    status,
                    events = n,
                    detail = %detail,
                    "veritrail client: the server refused a whole batch; its events are \
                     counted as rejected"
                );
                f.events.drain(..n);
                self.settle_part(&mut f, n as u64, Settled::Rejected);
                f.limit = f.events.len();
                f.not_before = now;
                self.continue_or_complete(f).await;
            }
            Outcome::TooLarge { detail } if n > 1 => {
                tracing::debug!(detail = %detail, events = n, "veritrail client: splitting a batch the server found too large");
                f.limit = n / 2;
                f.not_before = now;
                self.inflight = Some(f);
            }
            Outcome::TooLarge { detail } => {
                tracing::error!(detail = %detail, "veritrail client: the server refused one event as too large; it is counted as rejected");
                f.events.drain(..1);
                self.settle_part(&mut f, 1, Settled::Rejected);
                f.limit = f.events.len();
                f.not_before = now;
                self.continue_or_complete(f).await;
            }
            Outcome::Conflict { .. } if n > 1 => {
                // The request was refused as a whole; halving finds the event at fault and
                // lets the others through (resending stored-nothing requests is harmless).
                f.limit = n / 2;
                f.not_before = now;
                self.inflight = Some(f);
            }
            Outcome::Conflict { detail } => {
                let id = f
                    .events
                    .first()
                    .and_then(|e| serde_json::from_slice::<serde_json::Value>(e).ok())
                    .and_then(|v| v["event_id"].as_str().map(str::to_string))
                    .unwrap_or_default();
                tracing::error!(
                    event_id = %id,
                    detail = %detail,
                    "veritrail client: an event_id was already used for different content; \
                     this event is DROPPED (event ids must be unique per event)"
                );
                f.events.drain(..1);
                self.settle_part(&mut f, 1, Settled::Conflict);
                f.limit = f.events.len();
                f.not_before = now;
                self.continue_or_complete(f).await;
            }
        }
    }

    /// Counts events of the batch in flight that reached an end.
    fn settle_part(&self, f: &mut InFlight, n: u64, how: Settled) {
        if n == 0 {
            return;
        }
        match f.source {
            Source::Memory { .. } => {
                let c = &self.shared.counters;
                match how {
                    Settled::Sent => c.add_sent(n),
                    Settled::Rejected => c.add_rejected(n),
                    Settled::Conflict => c.drop_events(DropReason::Conflict, n),
                }
                c.in_flight.fetch_sub(n, Ordering::SeqCst);
                self.shared.settle(n);
            }
            Source::Spool(_) => match how {
                Settled::Sent => f.sent += n,
                Settled::Rejected => f.rejected += n,
                Settled::Conflict => f.conflict += n,
            },
        }
    }

    /// Keeps sending the batch if events remain, else finishes it.
    async fn continue_or_complete(&mut self, f: InFlight) {
        if !f.events.is_empty() {
            self.inflight = Some(f);
            return;
        }
        if let Source::Spool(pos) = f.source {
            let acked = self.with_disk(move |d| d.spool.ack(pos)).await;
            if let Some(Err(e)) = acked {
                if self.disk_warn.allow(1).is_some() {
                    tracing::error!(error = %e, "veritrail client: deleting a sent spool file failed");
                }
            }
            let c = &self.shared.counters;
            c.add_sent(f.sent);
            c.add_rejected(f.rejected);
            c.drop_events(DropReason::Conflict, f.conflict);
            self.room_changed = true;
            self.after_disk();
        }
    }

    /// A failed attempt: back off, or move the batch to the spool if the failure is lasting.
    async fn failed(&mut self, mut f: InFlight, retry_after: Option<Duration>, why: String) {
        let now = Instant::now();
        self.streak.failures = self.streak.failures.saturating_add(1);
        let since = *self.streak.since.get_or_insert(now);
        let mut delay = self.jitter.backoff(&self.retry, self.streak.failures);
        if let Some(ra) = retry_after {
            delay = delay.max(ra);
        }
        self.streak.next_at = now + delay;
        f.retrying = true;
        f.refreshed = false;
        f.not_before = self.streak.next_at;
        if let Some(held_back) = self.send_warn.allow(1) {
            tracing::warn!(
                events = f.events.len(),
                consecutive_failures = self.streak.failures,
                failures_since_last_warning = held_back,
                retry_in_ms = delay.as_millis() as u64,
                error = %why,
                "veritrail client: sending a batch failed"
            );
        }
        let lasting = self.streak.failures >= self.retry.spool_after_failures
            || now.duration_since(since) >= self.retry.spool_after;
        self.shared.failing.store(lasting, Ordering::SeqCst);
        match f.source {
            Source::Memory { max_seq } if lasting && self.disk.is_some() => {
                let batch = Batch {
                    events: f.events,
                    max_seq,
                };
                self.spool_batch(batch, false).await;
            }
            _ => self.inflight = Some(f),
        }
    }

    /// Writes a batch to the spool, applying the overflow policy when it is full.
    async fn spool_batch(&mut self, batch: Batch, at_shutdown: bool) {
        let n = batch.events.len() as u64;
        if self.disk.is_none() {
            if at_shutdown {
                self.give_up(n, DropReason::Shutdown);
            } else {
                self.held = Some(batch);
            }
            return;
        }
        let overflow = self.shared.limits.overflow;
        let protect_front = matches!(
            self.inflight,
            Some(InFlight {
                source: Source::Spool(_),
                ..
            })
        );
        let payload = batch_body(&batch.events);
        let max_seq = batch.max_seq;
        let written = self
            .with_disk(move |d| {
                // The numbers leave memory with this write: make sure a restart cannot reuse them.
                d.state.cover(max_seq)?;
                let mut evicted = 0;
                loop {
                    match d.spool.append(&payload, n) {
                        Err(SpoolError::Full { .. }) if overflow == Overflow::DropOldest => {
                            match d.spool.evict_oldest(protect_front)? {
                                Some(k) => evicted += k,
                                None => return Ok((false, evicted)),
                            }
                        }
                        Err(SpoolError::Full { .. }) => return Ok((false, evicted)),
                        Err(e) => return Err(e),
                        Ok(()) => return Ok((true, evicted)),
                    }
                }
            })
            .await;
        match written {
            Some(Ok((stored, evicted))) => {
                let c = &self.shared.counters;
                if evicted > 0 {
                    tracing::warn!(
                        events = evicted,
                        "veritrail client: the spool is full; deleted its oldest files"
                    );
                    c.drop_events(DropReason::SpoolFull, evicted);
                }
                if stored {
                    c.add_spooled(n);
                    c.in_flight.fetch_sub(n, Ordering::SeqCst);
                    self.shared.settle(n);
                } else if matches!(overflow, Overflow::Block { .. }) && !at_shutdown {
                    // Waits for room; `record_wait` callers feel it once the buffer fills.
                    self.held = Some(batch);
                    self.held_retry_at = None;
                } else {
                    self.give_up(n, DropReason::SpoolFull);
                }
            }
            Some(Err(e)) => {
                if self.disk_warn.allow(1).is_some() {
                    tracing::error!(error = %e, "veritrail client: writing to the spool failed");
                }
                if at_shutdown {
                    self.give_up(n, DropReason::Shutdown);
                } else {
                    self.held = Some(batch);
                    self.held_retry_at = Some(Instant::now() + DISK_RETRY);
                }
            }
            None => {
                if at_shutdown {
                    self.give_up(n, DropReason::Shutdown);
                } else {
                    self.held = Some(batch);
                }
            }
        }
        self.after_disk();
    }

    /// Counts events taken from the buffer that are given up.
    fn give_up(&self, n: u64, reason: DropReason) {
        let c = &self.shared.counters;
        c.drop_events(reason, n);
        c.in_flight.fetch_sub(n, Ordering::SeqCst);
        self.shared.settle(n);
    }

    /// Runs a spool operation on the blocking pool (it reads, writes and syncs files).
    async fn with_disk<R: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut Disk) -> R + Send + 'static,
    ) -> Option<R> {
        let mut disk = self.disk.take()?;
        match tokio::task::spawn_blocking(move || {
            let r = op(&mut disk);
            (disk, r)
        })
        .await
        {
            Ok((disk, r)) => {
                self.disk = Some(disk);
                Some(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "veritrail client: a spool operation failed; continuing without the spool");
                None
            }
        }
    }

    /// Publishes the spool's size and counts damage found while reading it.
    fn after_disk(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            let lost = d.spool.take_lost();
            let c = &self.shared.counters;
            if lost > 0 {
                c.spool_damage.fetch_add(1, Ordering::Relaxed);
                c.drop_events(DropReason::Damaged, lost);
            }
            c.set_spool(d.spool.events(), d.spool.bytes());
        }
        self.shared.progress.notify_waiters();
    }

    /// At stop: everything in memory goes to the spool (or is counted), and the next number
    /// is saved exactly, so that the next process continues without a gap.
    async fn finish(&mut self) {
        if let Some(mut f) = self.inflight.take() {
            // Abandoning the request is safe: if the server stored the batch, resending it
            // later returns the original receipts.
            f.attempt = None;
            if let Source::Memory { max_seq } = f.source {
                let batch = Batch {
                    events: f.events,
                    max_seq,
                };
                self.spool_batch(batch, true).await;
            }
        }
        if let Some(batch) = self.held.take() {
            self.spool_batch(batch, true).await;
        }
        self.shared.lock().closed = true;
        while let Some(batch) = self.take_batch(true) {
            self.spool_batch(batch, true).await;
        }
        let next = self.shared.lock().next_seq;
        if let Some(Err(e)) = self.with_disk(move |d| d.state.save_exact(next)).await {
            tracing::error!(error = %e, "veritrail client: saving the producer sequence failed");
        }
        self.after_disk();
        self.shared.task_done.store(true, Ordering::SeqCst);
        self.shared.progress.notify_waiters();
        self.shared.space.notify_waiters();
    }
}

/// How events of the batch in flight ended.
#[derive(Clone, Copy)]
enum Settled {
    Sent,
    Rejected,
    Conflict,
}

/// The request body for some events: a JSON array.
fn batch_body(events: &[Vec<u8>]) -> Vec<u8> {
    let len = events.iter().map(|e| e.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.push(b']');
    out
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_arrays() {
        let body = batch_body(&[br#"{"a":1}"#.to_vec(), br#"{"b":2}"#.to_vec()]);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v, serde_json::json!([{"a":1},{"b":2}]));
    }
}
