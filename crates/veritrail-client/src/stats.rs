//! What the client counts: the same numbers as [`Stats`] and as `metrics` series.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `veritrail_client_buffered` | gauge | events in the memory buffer |
//! | `veritrail_client_sent_total` | counter | events the server acknowledged (replays included) |
//! | `veritrail_client_retried_total` | counter | requests sent again after a failed attempt |
//! | `veritrail_client_spooled_total` | counter | events written to the spool |
//! | `veritrail_client_dropped_total{reason}` | counter | events given up: `buffer_full`, `spool_full`, `conflict`, `shutdown`, `damaged` |
//! | `veritrail_client_rejected_total` | counter | events the server refused as invalid |
//! | `veritrail_client_spool_bytes` | gauge | bytes of spool files |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use metrics::{Counter, Gauge};

/// Events given up, by reason. Each is also `veritrail_client_dropped_total{reason=…}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The memory buffer was full (`record` refused the event, `record_wait` gave up, or
    /// `DropOldest` discarded an older one).
    pub buffer_full: u64,
    /// The spool was full (a new batch was refused, or `DropOldest` deleted older spool files).
    pub spool_full: u64,
    /// The server answered 409: the event's id was already used for different content.
    pub conflict: u64,
    /// Still in memory when the client stopped, with no spool (or no room in it) to keep them.
    pub shutdown: u64,
    /// Lost to damage in the spool found while reading it back.
    pub damaged: u64,
}

impl Dropped {
    /// The sum over all reasons.
    pub fn total(&self) -> u64 {
        self.buffer_full + self.spool_full + self.conflict + self.shutdown + self.damaged
    }
}

/// A snapshot of the client's counts; see [`crate::Client::stats`].
///
/// Every event is counted once on the way in (`recorded`, or `restored` for events found in
/// the spool at start) and, once settled, once on the way out (`sent`, `rejected` or
/// `dropped`); until then it is `buffered`, `in_flight` or in `spool_events`. So whenever the
/// client is idle, `recorded + restored == sent + rejected + dropped.total() + buffered +
/// in_flight + spool_events`. `spooled` counts passages through the spool and is not part of
/// that balance. Events replayed after a restart that the server had already acknowledged are
/// counted in `sent` again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Well-formed events handed to `record` or `record_wait`, kept or not.
    pub recorded: u64,
    /// Events found in the spool when the client started.
    pub restored: u64,
    /// Events acknowledged by the server.
    pub sent: u64,
    /// Requests sent again after a failed attempt.
    pub retried: u64,
    /// Events written to the spool.
    pub spooled: u64,
    /// Events the server refused as invalid (400 naming them, or another 4xx for a batch).
    pub rejected: u64,
    /// Events given up, by reason.
    pub dropped: Dropped,
    /// Events in the memory buffer.
    pub buffered: u64,
    /// Events taken from the buffer and not yet settled (being sent, or waiting for spool room).
    pub in_flight: u64,
    /// Events waiting in the spool.
    pub spool_events: u64,
    /// Bytes of spool files.
    pub spool_bytes: u64,
    /// Damaged spool entries found: interrupted writes cut at start, and damaged files skipped.
    pub spool_damage: u64,
}

impl Stats {
    /// Events not yet settled: buffered, in flight or in the spool.
    pub fn pending(&self) -> u64 {
        self.buffered + self.in_flight + self.spool_events
    }
}

/// Why events were given up; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    BufferFull,
    SpoolFull,
    Conflict,
    Shutdown,
    Damaged,
}

impl DropReason {
    fn label(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::SpoolFull => "spool_full",
            DropReason::Conflict => "conflict",
            DropReason::Shutdown => "shutdown",
            DropReason::Damaged => "damaged",
        }
    }
}

const REASONS: [DropReason; 5] = [
    DropReason::BufferFull,
    DropReason::SpoolFull,
    DropReason::Conflict,
    DropReason::Shutdown,
    DropReason::Damaged,
];

/// The live counters shared by the client handle and its task.
pub(crate) struct Counters {
    pub recorded: AtomicU64,
    pub restored: AtomicU64,
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub spooled: AtomicU64,
    pub rejected: AtomicU64,
    dropped: [AtomicU64; 5],
    pub in_flight: AtomicU64,
    pub spool_events: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_damage: AtomicU64,
    m: MetricHandles,
    drop_warn: WarnLimiter,
}

/// Handles taken once at start, so that the hot path skips the registry lookup.
struct MetricHandles {
    buffered: Gauge,
    sent: Counter,
    retried: Counter,
    spooled: Counter,
    rejected: Counter,
    dropped: [Counter; 5],
    spool_bytes: Gauge,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            recorded: AtomicU64::new(0),
            restored: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: Default::default(),
            in_flight: AtomicU64::new(0),
            spool_events: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            spool_damage: AtomicU64::new(0),
            m: MetricHandles {
                buffered: metrics::gauge!("veritrail_client_buffered"),
                sent: metrics::counter!("veritrail_client_sent_total"),
                retried: metrics::counter!("veritrail_client_retried_total"),
                spooled: metrics::counter!("veritrail_client_spooled_total"),
                rejected: metrics::counter!("veritrail_client_rejected_total"),
                dropped: REASONS.map(
                    |r| metrics::counter!("veritrail_client_dropped_total", "reason" => r.label()),
                ),
                spool_bytes: metrics::gauge!("veritrail_client_spool_bytes"),
            },
            drop_warn: WarnLimiter::new(),
        }
    }

    /// Counts events given up and warns, at most once a second, with the count since the last
    /// warning.
    pub(crate) fn drop_events(&self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[i].fetch_add(n, Ordering::Relaxed);
        self.m.dropped[i].increment(n);
        if let Some(since_last) = self.drop_warn.allow(n) {
            tracing::warn!(
                reason = reason.label(),
                events = n,
                dropped_since_last_warning = since_last,
                "veritrail client dropped audit events"
            );
        }
    }

    pub(crate) fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.m.sent.increment(n);
    }

    pub(crate) fn add_retried(&self) {
        self.retried.fetch_add(1, Ordering::Relaxed);
        self.m.retried.increment(1);
    }

    pub(crate) fn add_spooled(&self, n: u64) {
        self.spooled.fetch_add(n, Ordering::Relaxed);
        self.m.spooled.increment(n);
    }

    pub(crate) fn add_rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
        self.m.rejected.increment(n);
    }

    pub(crate) fn set_buffered(&self, n: usize) {
        self.m.buffered.set(n as f64);
    }

    pub(crate) fn set_spool(&self, events: u64, bytes: u64) {
        self.spool_events.store(events, Ordering::Relaxed);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
        self.m.spool_bytes.set(bytes as f64);
    }

    /// A snapshot; `buffered` comes from the buffer itself.
    pub(crate) fn snapshot(&self, buffered: u64) -> Stats {
        let d = |r: DropReason| {
            let i = REASONS.iter().position(|x| *x == r).unwrap_or(0);
            self.dropped[i].load(Ordering::Relaxed)
        };
        Stats {
            recorded: self.recorded.load(Ordering::Relaxed),
            restored: self.restored.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: Dropped {
                buffer_full: d(DropReason::BufferFull),
                spool_full: d(DropReason::SpoolFull),
                conflict: d(DropReason::Conflict),
                shutdown: d(DropReason::Shutdown),
                damaged: d(DropReason::Damaged),
            },
            buffered,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            spool_events: self.spool_events.load(Ordering::Relaxed),
            spool_bytes: self.spool_bytes.load(Ordering::Relaxed),
            spool_damage: self.spool_damage.load(Ordering::Relaxed),
        }
    }
}

/// Lets one warning through per second; counts what it holds back, so that an overload does
/// not flood the log it is meant to report.
pub(crate) struct WarnLimiter {
    start: Instant,
    /// Milliseconds since `start` of the last warning let through; `u64::MAX` before the first.
    last_ms: AtomicU64,
    held_back: AtomicU64,
}

impl WarnLimiter {
    pub(crate) fn new() -> WarnLimiter {
        WarnLimiter {
            start: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(events held back since the last warning, plus n)` if a warning may be logged now.
    pub(crate) fn allow(&self, n: u64) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed) + n);
        }
        self.held_back.fetch_add(n, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_lets_the_first_warning_through_and_holds_back_the_rest() {
        let w = WarnLimiter::new();
        assert_eq!(w.allow(1), Some(1));
        assert_eq!(w.allow(2), None);
        assert_eq!(w.allow(3), None);
        assert_eq!(w.held_back.load(Ordering::Relaxed), 5);
    }
}
