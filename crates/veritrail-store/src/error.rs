//! Store errors: what went wrong, phrased for the operator who has to fix it.

use uuid::Uuid;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A segment file is unusable.
    #[error(transparent)]
    Segment(#[from] crate::embedded::segment::SegmentError),
    /// Stored data failed a check: the store refuses to serve or build on it.
    #[error("damaged data: {0}")]
    Damaged(String),
    /// A client-supplied event id was already used for different content.
    #[error("event {index} of the request: event_id {event_id} was already recorded with different content")]
    Conflict { index: usize, event_id: Uuid },
    /// The ingest queue is full; the caller should retry later.
    #[error("ingest queue is full ({queued} events waiting); retry shortly")]
    Overloaded { queued: usize },
    /// Appending failed (a full disk, an I/O error); nothing of the request was stored and the
    /// log takes appends again once the cause is gone.
    #[error("appending to the log failed ({0}); nothing of this request was stored; retry later")]
    Unwritable(String),
    /// An earlier write failure left the log in a state where appending is unsafe.
    #[error("the log stopped accepting writes after a storage failure ({0}); restart after fixing the disk")]
    Failed(String),
    /// A request named a leaf or size the tree does not have.
    #[error("{0}")]
    OutOfRange(String),
    /// Signing a checkpoint failed.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Another process holds the data directory.
    #[error("{0}")]
    InUse(String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }
}

impl<E: std::fmt::Display> From<veritrail_core::merkle::ProofGenError<E>> for StoreError {
    fn from(e: veritrail_core::merkle::ProofGenError<E>) -> StoreError {
        use veritrail_core::merkle::ProofGenError as G;
        match e {
            G::Store(inner) => StoreError::Damaged(inner.to_string()),
            other => StoreError::OutOfRange(other.to_string()),
        }
    }
}

impl From<crate::engine::NodeError> for StoreError {
    fn from(e: crate::engine::NodeError) -> StoreError {
        match e {
            crate::engine::NodeError::Io(source) => StoreError::Io {
                context: "reading a tree node".into(),
                source,
            },
            missing => StoreError::Damaged(missing.to_string()),
        }
    }
}

impl From<crate::embedded::sealed::SealedError> for StoreError {
    fn from(e: crate::embedded::sealed::SealedError) -> StoreError {
        match e {
            crate::embedded::sealed::SealedError::Io { path, source } => StoreError::Io {
                context: path.display().to_string(),
                source,
            },
            damage => StoreError::Damaged(damage.to_string()),
        }
    }
}
