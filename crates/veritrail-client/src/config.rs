//! Client settings and their defaults.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ClientError;

/// Most events the server accepts in one request (`max_events_per_request`).
pub const SERVER_MAX_EVENTS: usize = 1000;
/// Largest request body the server accepts by default (5 MiB).
pub const SERVER_MAX_BODY: usize = 5 * 1024 * 1024;
/// Longest producer id the server accepts.
pub const MAX_PRODUCER_ID_CHARS: usize = 255;

/// Called when the server answers 401 or 403: returns a fresh API key, or `None` if there is
/// none. It runs on a blocking thread, so it may do I/O (read a file, ask a vault).
pub type KeyRefresh = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What happens to events that do not fit: in the memory buffer, or in the spool.
///
/// The default is [`Overflow::DropNewest`]. For an audit trail the event that cannot be kept is
/// best refused to the code that is recording it: [`crate::Client::record`] returns
/// [`crate::RecordError::BufferFull`] at once, so the caller knows and can act (fail the audited
/// operation, log locally). Events already accepted are never discarded to make room for later
/// ones, so what survives an overload is an unbroken prefix of the producer's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Wait for room, at most `deadline`, then drop the new event.
    ///
    /// Only [`crate::Client::record_wait`] waits: [`crate::Client::record`] never blocks, so with
    /// this policy it refuses the event as [`Overflow::DropNewest`] would. When the spool is full,
    /// the background task keeps the batch in memory and stops draining the buffer until the
    /// spool has room, so the wait reaches the callers of `record_wait`.
    Block {
        /// The longest `record_wait` waits for room.
        deadline: Duration,
    },
    /// Refuse the new event (buffer full) or the new batch (spool full).
    #[default]
    DropNewest,
    /// Discard the oldest buffered event to make room (buffer full), or delete the oldest spool
    /// files that are not being sent (spool full).
    DropOldest,
}

/// How batches are compressed on their way to the server.
///
/// A batch whose JSON is at least [`COMPRESS_MIN_BYTES`] long is sent compressed, with its
/// `Content-Encoding`; smaller ones are sent as they are, since compressing them saves little.
/// The server bounds what a body decodes to by its body limit, so [`Config::max_batch_bytes`]
/// counts uncompressed bytes either way. Audit events, JSON with repeated field names, usually
/// shrink to a fifth or less. A server that refuses the coding (415, or a 400 that names no
/// event, as a server before compression support answers) is sent the batch again uncompressed,
/// and compression stays off for the rest of the client's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Send batches uncompressed.
    None,
    /// gzip (RFC 1952) at level 1, the fastest; for servers behind a proxy that only knows gzip.
    Gzip,
    /// Zstandard (RFC 8878) at level 3: smaller than gzip for less time. The default.
    #[default]
    Zstd,
}

/// Batches shorter than this are sent uncompressed whatever [`Config::compression`] says.
pub const COMPRESS_MIN_BYTES: usize = 1024;

/// Backoff between attempts, and when a failure counts as lasting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling; it doubles after each consecutive failure. Default 100 ms.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling. Default 10 s.
    pub max_backoff: Duration,
    /// After this many consecutive failed attempts the failure is lasting and batches go to the
    /// spool. Default 5: with full jitter that is about 1.5 s of trying, enough to ride out a
    /// server restart in memory.
    pub spool_after_failures: u32,
    /// A failure streak this long is lasting too, whatever its count (slow timeouts). Default 10 s.
    pub spool_after: Duration,
    /// The longest `Retry-After` honoured; larger values are cut to this. Default 5 min.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            spool_after_failures: 5,
            spool_after: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// Everything [`crate::Client::start`] needs. Start from [`Config::new`] and change fields.
#[derive(Clone)]
pub struct Config {
    /// The server's base URL, such as `http://127.0.0.1:8080`; events go to `{url}/v1/events`.
    pub url: String,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Asked for a new key on 401/403; see [`KeyRefresh`].
    pub key_refresh: Option<KeyRefresh>,
    /// The stable name of this producer, stamped on every event as `producer_id`.
    ///
    /// Required without a spool directory. With one, the id is stored there on first start (a
    /// new UUIDv7 if this is `None`) and read back on every later start, so a restarted process
    /// keeps its id and continues its `producer_seq` numbering; setting a different id than the
    /// stored one is an error ([`ClientError::ProducerIdMismatch`]).
    pub producer_id: Option<String>,
    /// The first `producer_seq` when there is no spool directory (default 0).
    ///
    /// Without a spool nothing is persisted, so a process that restarts under the same
    /// producer id would number from here again. Such a producer should save
    /// [`crate::Client::next_producer_seq`] at shutdown and pass it back here.
    pub first_producer_seq: u64,
    /// Events per request. Default 100: large enough to amortize a request and the server's
    /// fsync, small enough that a retry resends little. At most 1000 (the server's limit).
    pub batch_size: usize,
    /// Request bytes per batch, before compression. Default 4 MiB, under the server's 5 MiB body
    /// limit (which bounds what a compressed body decodes to).
    pub max_batch_bytes: usize,
    /// How batches are compressed on the wire; see [`Compression`]. Default zstd;
    /// [`Compression::None`] turns compression off.
    pub compression: Compression,
    /// A partial batch is sent once its oldest event has waited this long. Default 200 ms: the
    /// added latency of an audit event stays well under a second.
    pub flush_interval: Duration,
    /// Events held in memory before the overflow policy applies. Default 10,000 (100 batches).
    pub buffer_capacity: usize,
    /// Bytes held in memory before the overflow policy applies. Default 64 MiB.
    pub buffer_max_bytes: usize,
    /// Largest serialized event `record` accepts. Default 1 MiB (the server's own limit on
    /// `event_data` is 256 KiB). An event must also fit in a batch on its own, so the limit in
    /// effect is at most `max_batch_bytes - 2`.
    pub max_event_bytes: usize,
    /// Where batches go during a lasting failure, and where the producer id and sequence are
    /// kept. Without one, a lasting failure keeps the oldest batch retrying in memory and the
    /// buffer's overflow policy decides about new events.
    pub spool_dir: Option<PathBuf>,
    /// A spool file is closed and a new one started past this size. Default 8 MiB.
    pub spool_file_bytes: u64,
    /// The spool's total size; beyond it the overflow policy applies to new batches.
    /// Default 256 MiB.
    pub spool_max_bytes: u64,
    /// What happens to events that do not fit; see [`Overflow`].
    pub overflow: Overflow,
    /// Backoff and the lasting-failure threshold.
    pub retry: RetryPolicy,
    /// The limit of one request, connection included. Default 10 s.
    pub request_timeout: Duration,
    /// An extra CA certificate (PEM) to trust for `https://` servers, beside the system's.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// A client certificate and its private key (PEM, both in one buffer) for servers that
    /// authenticate producers by certificate (mTLS).
    pub client_identity_pem: Option<Vec<u8>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is a secret and the hook has no useful text form.
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("key_refresh", &self.key_refresh.as_ref().map(|_| "<set>"))
            .field("producer_id", &self.producer_id)
            .field("first_producer_seq", &self.first_producer_seq)
            .field("batch_size", &self.batch_size)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("compression", &self.compression)
            .field("flush_interval", &self.flush_interval)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("buffer_max_bytes", &self.buffer_max_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("spool_dir", &self.spool_dir)
            .field("spool_file_bytes", &self.spool_file_bytes)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("overflow", &self.overflow)
            .field("retry", &self.retry)
            .field("request_timeout", &self.request_timeout)
            .field("ca_cert_pem", &self.ca_cert_pem.as_ref().map(|_| "<set>"))
            .field(
                "client_identity_pem",
                &self.client_identity_pem.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl Config {
    /// Default settings for the server at `url`.
    pub fn new(url: impl Into<String>) -> Config {
        Config {
            url: url.into(),
            api_key: None,
            key_refresh: None,
            producer_id: None,
            first_producer_seq: 0,
            batch_size: 100,
            max_batch_bytes: 4 * 1024 * 1024,
            compression: Compression::default(),
            flush_interval: Duration::from_millis(200),
            buffer_capacity: 10_000,
            buffer_max_bytes: 64 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
            spool_dir: None,
            spool_file_bytes: 8 * 1024 * 1024,
            spool_max_bytes: 256 * 1024 * 1024,
            overflow: Overflow::default(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(10),
            ca_cert_pem: None,
            client_identity_pem: None,
        }
    }

    /// The largest event accepted: it must fit in a batch between the array's brackets.
    pub(crate) fn event_limit(&self) -> usize {
        self.max_event_bytes
            .min(self.max_batch_bytes.saturating_sub(2))
    }

    /// Checks the settings against each other and the server's limits.
    pub(crate) fn validate(&self) -> Result<(), ClientError> {
        let bad = |m: String| Err(ClientError::Config(m));
        if !(1..=SERVER_MAX_EVENTS).contains(&self.batch_size) {
            return bad(format!(
                "batch_size is {}; it must be from 1 to {SERVER_MAX_EVENTS}",
                self.batch_size
            ));
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > SERVER_MAX_BODY {
            return bad(format!(
                "max_batch_bytes is {}; it must be from 1024 to {SERVER_MAX_BODY}",
                self.max_batch_bytes
            ));
        }
        if self.max_event_bytes == 0 {
            return bad("max_event_bytes must be at least 1".into());
        }
        if self.buffer_capacity < self.batch_size {
            return bad(format!(
                "buffer_capacity ({}) must hold at least one batch ({})",
                self.buffer_capacity, self.batch_size
            ));
        }
        if self.buffer_max_bytes < self.event_limit() {
            return bad(format!(
                "buffer_max_bytes ({}) must hold at least one event of the largest size ({})",
                self.buffer_max_bytes,
                self.event_limit()
            ));
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval must be more than zero".into());
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be more than zero".into());
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.max_backoff < self.retry.initial_backoff
        {
            return bad("retry backoff must satisfy 0 < initial_backoff <= max_backoff".into());
        }
        if self.retry.spool_after_failures == 0 {
            return bad("retry.spool_after_failures must be at least 1".into());
        }
        if self.spool_dir.is_some() {
            if self.spool_file_bytes < 64 {
                return bad("spool_file_bytes must be at least 64".into());
            }
            let entry = self.max_batch_bytes as u64 + crate::spool::ENTRY_HEADER;
            if self.spool_max_bytes < entry {
                return bad(format!(
                    "spool_max_bytes ({}) must hold at least one batch of max_batch_bytes \
                     ({entry} with its header)",
                    self.spool_max_bytes
                ));
            }
            if self.spool_max_bytes < self.spool_file_bytes {
                return bad(format!(
                    "spool_max_bytes ({}) must be at least spool_file_bytes ({})",
                    self.spool_max_bytes, self.spool_file_bytes
                ));
            }
        }
        if let Some(id) = &self.producer_id {
            check_producer_id(id)?;
        }
        if self.first_producer_seq > crate::MAX_PRODUCER_SEQ {
            return bad(format!(
                "first_producer_seq must be at most {}",
                crate::MAX_PRODUCER_SEQ
            ));
        }
        if let Overflow::Block { deadline } = self.overflow {
            if deadline.is_zero() {
                return bad("Overflow::Block needs a deadline above zero".into());
            }
        }
        Ok(())
    }
}

/// The server's rules for `producer_id`: a non-empty string of at most 255 characters.
pub(crate) fn check_producer_id(id: &str) -> Result<(), ClientError> {
    if id.is_empty() || id.chars().count() > MAX_PRODUCER_ID_CHARS {
        return Err(ClientError::Config(format!(
            "producer_id must have 1 to {MAX_PRODUCER_ID_CHARS} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        let mut c = Config::new("http://127.0.0.1:1");
        c.producer_id = Some("svc".into());
        assert!(c.validate().is_ok());
        c.batch_size = 1001;
        let err = c
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("batch_size"), "{err}");
        c.batch_size = 100;
        c.producer_id = Some(String::new());
        assert!(c.validate().is_err());
    }

    #[test]
    fn debug_hides_the_key() {
        let mut c = Config::new("http://x");
        c.api_key = Some("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
