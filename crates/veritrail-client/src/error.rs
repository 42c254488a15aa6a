//! Errors of the client: starting it, recording, flushing.

use std::path::PathBuf;

/// Why the client could not start, flush or stop.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting is out of range or contradicts another.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// [`crate::Client::start`] spawns its task on the current tokio runtime, and there is none.
    #[error("Client::start must be called from within a tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("building the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The spool directory could not be opened or read.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The configured producer id differs from the one stored in the spool directory.
    #[error(
        "producer_id is {configured:?} but the spool directory belongs to {stored:?}; \
         use the stored id or another spool directory"
    )]
    ProducerIdMismatch {
        /// The id in [`crate::Config::producer_id`].
        configured: String,
        /// The id stored in the spool directory.
        stored: String,
    },
    /// Some events were neither acknowledged nor spooled when the deadline passed.
    #[error("deadline passed with {remaining} events neither acknowledged nor spooled")]
    DeadlineExceeded {
        /// How many events were still waiting.
        remaining: u64,
    },
    /// The background task is gone (it was stopped, or its runtime shut down).
    #[error("the client has stopped")]
    Stopped,
}

/// Why an event was not accepted by [`crate::Client::record`].
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Events are JSON objects.
    #[error("an event must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// A caller-supplied `event_id` must be a UUID string: it is the idempotency key.
    #[error("event_id {0} is not a UUID")]
    InvalidEventId(String),
    /// The event is larger than [`crate::Config::max_event_bytes`].
    #[error("the event is {bytes} bytes serialized; at most {max} are accepted")]
    TooLarge {
        /// The event's serialized size.
        bytes: usize,
        /// The configured limit.
        max: usize,
    },
    /// The buffer is full and the overflow policy refused the event (it is counted as dropped).
    #[error("the client's buffer is full; the event was dropped")]
    BufferFull,
    /// Every `producer_seq` up to 2^53 − 1 is used; start a new producer id.
    #[error("producer_seq would exceed 2^53 - 1; use a new producer id")]
    SequenceExhausted,
    /// The client is shutting down or has stopped.
    #[error("the client is shut down")]
    Closed,
    /// The event breaks veritrail-core's rules (only with the `validate` feature).
    #[cfg(feature = "validate")]
    #[error("invalid event: {0}")]
    Invalid(String),
}

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another client (in this process or another) holds the directory.
    #[error("spool directory {0} is in use by another client")]
    Locked(PathBuf),
    /// The producer state file does not parse.
    #[error("spool state {path}: {message}; move the file away to start a new producer")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The entry would take the spool beyond its cap.
    #[error("the spool is full ({used} of {cap} bytes used, {needed} more needed)")]
    Full {
        /// Bytes in use.
        used: u64,
        /// The cap.
        cap: u64,
        /// Bytes the entry needs.
        needed: u64,
    },
}

impl SpoolError {
    /// Wraps an I/O error with its path.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            path: path.into(),
            source,
        }
    }
}
