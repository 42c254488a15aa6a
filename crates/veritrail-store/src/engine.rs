//! The engine-neutral interface under the store: what a storage engine provides, in types that
//! belong to no engine.
//!
//! An [`Engine`] keeps each tenant's log durable and its derived state (tree nodes, postings)
//! readable; it appends, reads records by seq, finds ids, scans postings, reads perfect tree
//! nodes and keeps the signed-checkpoint history. It does not decide what to trust: the layer
//! above ([`crate::ledger::Ledger`]) proves every record it serves against a signed root,
//! builds proofs, signs checkpoints and pages queries, the same way over any engine.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;
use veritrail_core::checkpoint::Checkpoint;
use veritrail_core::event::{Event, Leaf};
use veritrail_core::hash::Hash;
use veritrail_core::note::NoteSigner;
use veritrail_core::query::Filter;

use crate::error::StoreError;
use crate::producers::ProducerStatus;
use crate::PendingAppend;

/// A storage engine: per-tenant append-only logs, their derived state and their checkpoint
/// histories. Calls block (make them off the async runtime); appends are queued and resolve once
/// durable, so that concurrent requests share one sync.
pub trait Engine: Send + Sync + 'static {
    /// A consistent read view of one tenant's log.
    type Snapshot: Snapshot;

    /// Queues one atomic append of `events` to `tenant`'s log (creating the log): the receiver
    /// resolves once every event is durable, with a receipt per event. An event whose id the
    /// log already holds with the same content gets that event's receipt (`duplicate`), one with
    /// the same id and other content fails the whole append ([`StoreError::Conflict`]).
    fn append(&self, tenant: &str, events: Vec<Event>) -> Result<PendingAppend, StoreError>;

    /// A view covering every event acknowledged so far; `None` when `tenant` has no log.
    fn snapshot(&self, tenant: &str) -> Result<Option<Self::Snapshot>, StoreError>;

    /// The latest signed checkpoint of `tenant`'s history, its signature checked when the
    /// history was opened.
    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError>;

    /// Makes `signed` durable as the latest entry of `tenant`'s checkpoint history before
    /// returning (a checkpoint a client has seen is never forgotten), and trusts its root from
    /// then on (recovery recomputes the tree only past it).
    fn record_checkpoint(&self, tenant: &str, signed: &SignedCheckpoint) -> Result<(), StoreError>;

    /// Tenants that have a log.
    fn tenants(&self) -> Vec<String>;

    /// Whether every tenant's log takes appends: `Err` says which does not, and why.
    fn ready(&self) -> Result<(), String>;

    /// Events queued but not yet durable, over all tenants.
    fn queue_depth(&self) -> usize;

    /// Finishes queued work and makes derived state durable.
    fn close(&self);
}

/// A read view of one tenant's log that sees exactly its first [`Snapshot::head`]`.size` leaves.
///
/// Nothing a snapshot returns is trusted by the layer above until proven against a signed root,
/// except [`Snapshot::computed_leaf`].
pub trait Snapshot: Send {
    /// The tree head the view covers, as the engine computed it.
    fn head(&self) -> Head;

    /// The stored leaf input (canonical bytes) of `seq`, its checksum checked.
    fn record(&self, seq: u64) -> Result<Vec<u8>, StoreError>;

    /// Seqs whose event may be `id`, newest first; the caller confirms on the record.
    fn id_candidates(&self, id: &Uuid) -> Result<Vec<u64>, StoreError>;

    /// Perfect tree node `index` of `level` (level 0: leaf hashes), complete within the view.
    fn node(&self, level: u32, index: u64) -> Result<Hash, NodeError>;

    /// The leaf hash of `seq` when the engine computed it itself from the record at ingest or
    /// recovery and still holds it: the caller may trust it without a proof.
    fn computed_leaf(&self, _seq: u64) -> Option<Hash> {
        None
    }

    /// Visits the sort keys of candidate events for `filter` in `[lo, hi)`, newest first when
    /// `descending`, until `visit` returns false. Candidates satisfy the condition the engine
    /// indexes and the time range; the caller checks the rest of the filter on the record unless
    /// [`Snapshot::covers`] says the index implies all of it.
    fn scan(
        &self,
        filter: &Filter,
        lo: SortKey,
        hi: SortKey,
        descending: bool,
        visit: &mut dyn FnMut(SortKey) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;

    /// True when [`Snapshot::scan`]'s candidates for `filter` all match it.
    fn covers(&self, filter: &Filter) -> bool;

    /// Events per value of an indexed field, over the view.
    fn counts(&self, field: &str) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Every producer's sequence state.
    fn producers(&self) -> Vec<ProducerStatus>;
    /// The log's segments in log order, below the snapshot's size: together they hold every
    /// seq from 0, once. A segment is the unit retention removes whole.
    fn segments(&self) -> Vec<SegmentSpan>;
}

/// The receipt for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub event_id: Uuid,
    pub seq: u64,
    pub leaf_hash: Hash,
    /// True when the event id was already recorded with the same content.
    pub duplicate: bool,
}

/// What an append returns once durable.
#[derive(Debug, Clone)]
pub struct Appended {
    pub receipts: Vec<Receipt>,
    /// A tree size that includes every receipt.
    pub tree_size: u64,
}

/// One segment of a log, as [`Snapshot::segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    /// The seq of its first event.
    pub first_seq: u64,
    /// Its events below the snapshot's size.
    pub events: u64,
    /// Written once and no longer appended to (only such a segment can be removed whole).
    pub sealed: bool,
    /// What it takes on disk: its log file and, once sealed, its index file.
    pub bytes: u64,
}

/// An event as stored, checked against its checksum and its leaf hash.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub leaf_hash: Hash,
    /// The canonical bytes exactly as stored (the leaf input).
    pub bytes: Vec<u8>,
}

impl StoredEvent {
    /// The parsed leaf document. The bytes matched the tree's leaf hash, so they are exactly the
    /// bytes validated at ingest (see [`Leaf`]).
    pub fn leaf(&self) -> Result<Leaf, StoreError> {
        Leaf::from_bytes(&self.bytes).map_err(|e| {
            StoreError::Damaged(format!(
                "seq {}: stored record does not decode: {e}",
                self.seq
            ))
        })
    }

    /// The event as an API answer: its fields plus `seq`, `leaf_hash`, `ingested_at`, `tenant`
    /// and any `extra` members (name, raw JSON), without parsing the stored bytes.
    pub fn render(&self, extra: &[(&str, &str)]) -> Result<String, StoreError> {
        let seq = self.seq.to_string();
        let hash = format!("\"{}\"", veritrail_core::hash::to_b64(&self.leaf_hash));
        let mut members = vec![("seq", seq.as_str()), ("leaf_hash", hash.as_str())];
        members.extend_from_slice(extra);
        veritrail_core::event::render_leaf(&self.bytes, &members).ok_or_else(|| {
            StoreError::Damaged(format!(
                "seq {}: stored record is not a leaf document",
                self.seq
            ))
        })
    }
}

/// The published state of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub root: Hash,
}

/// A tree node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("tree node (level {level}, index {index}) is missing from the derived state")]
    Missing { level: u32, index: u64 },
    #[error("reading tree node: {0}")]
    Io(#[from] std::io::Error),
}

/// A position in result order: event time (µs since the epoch), then log sequence.
pub type SortKey = (i64, u64);

/// A checkpoint with its signed-note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The full signed note, as served at `GET /v1/checkpoint`.
    pub note: String,
    /// The name of the key whose signature it carries: the origin, or the key's own name for a
    /// checkpoint signed by an older version.
    pub key_name: String,
    /// When this process issued or loaded it (for the checkpoint-age metric).
    pub seen_at: DateTime<Utc>,
}

impl SignedCheckpoint {
    /// Signs `checkpoint` with `signer`, under the signer's name.
    pub fn sign(
        checkpoint: Checkpoint,
        signer: &NoteSigner,
    ) -> Result<SignedCheckpoint, StoreError> {
        let note = signer
            .sign(&checkpoint.to_text())
            .map_err(|e| StoreError::Checkpoint(e.to_string()))?;
        Ok(SignedCheckpoint {
            checkpoint,
            note,
            key_name: signer.name().to_owned(),
            seen_at: Utc::now(),
        })
    }
}
