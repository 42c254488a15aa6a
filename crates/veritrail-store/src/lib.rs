//! Veritrail's storage, in two layers.
//!
//! [`Store`] is the one interface the server uses. [`ledger::Ledger`] implements it over any
//! [`engine::Engine`]: it proves what it serves, builds proofs, signs checkpoints and pages
//! queries. An engine only keeps the logs: [`embedded::EmbeddedEngine`] on local files (per
//! tenant an append-only segment log, the source of truth, whose full segments are sealed into
//! compressed blocks; an index per segment and the Merkle tree's nodes, derived and
//! rebuildable; a signed-checkpoint history). See `docs/design/log-format.md`.

pub mod embedded;
pub mod engine;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod producers;
pub mod query;
pub mod verify;

pub use engine::{
    Appended, Engine, Head, Receipt, SegmentSpan, SignedCheckpoint, Snapshot, SortKey, StoredEvent,
};
pub use error::StoreError;
pub use ledger::{check_size, Ledger};
pub use query::{Hit, Order, Page};

use std::collections::BTreeMap;

use tokio::sync::oneshot;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::hash::Hash;
use veritrail_core::query::Filter;

/// A durable append in flight: resolves once the events are fsync'd (or the append failed).
pub type PendingAppend = oneshot::Receiver<Result<Appended, StoreError>>;

/// One page of a query.
#[derive(Debug, Clone)]
pub struct QuerySpec<'a> {
    pub filter: &'a Filter,
    pub order: Order,
    /// Continue after this position (from a previous page's `next_cursor`).
    pub cursor: Option<SortKey>,
    pub limit: usize,
}

/// A query by position: the results `[offset, offset + limit)` and their total.
#[derive(Debug, Clone, Copy)]
pub struct WindowSpec<'a> {
    pub filter: &'a Filter,
    pub order: Order,
    pub offset: u64,
    pub limit: usize,
}

/// True for names usable as a tenant directory and checkpoint origin suffix.
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// What the server asks of storage. Reads are blocking (call them off the async runtime);
/// appends are queued and resolved asynchronously so that concurrent requests share fsyncs.
pub trait Store: Send + Sync + 'static {
    /// Queues one atomic append of `events` to `tenant`'s log.
    fn append(&self, tenant: &str, events: Vec<Event>) -> Result<PendingAppend, StoreError>;
    /// The event with this id, verified against the tree.
    fn get(&self, tenant: &str, id: &Uuid) -> Result<Option<StoredEvent>, StoreError>;
    /// One page of events matching a filter.
    fn query(&self, tenant: &str, spec: &QuerySpec<'_>) -> Result<Page, StoreError>;
    /// The log's segments in log order, up to the head (none for a tenant without a log).
    fn segments(&self, tenant: &str) -> Result<Vec<SegmentSpan>, StoreError>;
    /// The events of seqs `[from, from + limit)` below the head, in log order, each verified.
    fn read_range(
        &self,
        tenant: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// The current tree head.
    fn head(&self, tenant: &str) -> Result<Head, StoreError>;
    /// The root of the tree at `size` (≤ the head).
    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError>;
    /// The hash of leaf `index`.
    fn leaf_hash(&self, tenant: &str, index: u64) -> Result<Hash, StoreError>;
    /// RFC 9162 inclusion proof of leaf `index` in the tree of `size` leaves.
    fn inclusion_proof(&self, tenant: &str, index: u64, size: u64)
        -> Result<Vec<Hash>, StoreError>;
    /// RFC 9162 consistency proof from `old` to `new` leaves.
    fn consistency_proof(&self, tenant: &str, old: u64, new: u64) -> Result<Vec<Hash>, StoreError>;
    /// The latest signed checkpoint; one is issued first if the tree grew since the last.
    fn checkpoint(&self, tenant: &str) -> Result<SignedCheckpoint, StoreError>;
    /// The positions of one page of a query when the index alone answers it (no record needs
    /// checking), so that callers can act on the count before the records are read; `None`
    /// otherwise.
    fn query_keys(
        &self,
        tenant: &str,
        spec: &QuerySpec<'_>,
    ) -> Result<Option<query::KeyPage>, StoreError>;
    /// Reads and verifies the events at `keys` (from [`Store::query_keys`]).
    fn read_keys(&self, tenant: &str, keys: &[SortKey]) -> Result<Vec<Hit>, StoreError>;
    /// The results `[offset, offset + limit)` of a query and the number of all its results.
    fn query_window(
        &self,
        tenant: &str,
        spec: &WindowSpec<'_>,
    ) -> Result<query::Window, StoreError>;
    /// The latest signed checkpoint if it covers at least `size` leaves, else a fresh one. Proofs
    /// use it: every proof appends an access event, so "fresh to the head" would mean a new
    /// signature for every proof.
    fn checkpoint_covering(&self, tenant: &str, size: u64) -> Result<SignedCheckpoint, StoreError>;
    /// Events per value of an indexed field (`event_type`, `event_outcome`, `actor_id`…).
    fn counts(&self, tenant: &str, field: &str) -> Result<BTreeMap<String, u64>, StoreError>;
    /// Every producer's sequence state (gaps in `producer_seq`: the capture-rate signal).
    fn producers(&self, tenant: &str) -> Result<Vec<producers::ProducerStatus>, StoreError>;
    /// The checkpoint origin of `tenant`'s log, whether or not it has events yet. Its checkpoints
    /// are signed by the data directory's key under this name ([`keys::log_signer`]).
    fn origin(&self, tenant: &str) -> String;
    /// Tenants that have a log.
    fn tenants(&self) -> Vec<String>;
    /// Whether every tenant's log takes appends: `Err` says which does not, and why.
    fn ready(&self) -> Result<(), String>;
    /// Events queued but not yet durable, over all tenants.
    fn queue_depth(&self) -> usize;
    /// Finishes queued work and makes derived state durable.
    fn close(&self);
}
