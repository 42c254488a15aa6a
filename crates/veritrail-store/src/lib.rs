//! Veritrail's storage.
//!
//! [`Store`] is the one interface the server uses; [`embedded::EmbeddedStore`] implements it on
//! local files: per tenant an append-only segment log (the source of truth; full segments are
//! sealed into compressed blocks), an index per segment and the Merkle tree's nodes (derived
//! state, rebuildable), and a signed-checkpoint history. See `docs/design/log-format.md`.

pub mod checkpoints;
mod codec;
pub mod embedded;
mod entries;
pub mod error;
pub mod flat;
pub mod fsck;
pub mod index;
pub mod keys;
pub mod log;
pub mod producers;
pub mod query;
mod recovery;
pub mod sealed;
pub mod seg_index;
pub mod segment;
mod segments;
mod verify;

pub use checkpoints::SignedCheckpoint;
pub use error::StoreError;
pub use log::{Appended, Head, Receipt, StoredEvent};
pub use query::{Hit, Order, Page};

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
    pub cursor: Option<index::SortKey>,
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

/// What every storage engine provides. Reads are blocking (call them off the async runtime);
/// appends are queued and resolved asynchronously so that concurrent requests share fsyncs.
pub trait Store: Send + Sync + 'static {
    /// Queues one atomic append of `events` to `tenant`'s log.
    fn append(&self, tenant: &str, events: Vec<Event>) -> Result<PendingAppend, StoreError>;
    /// The event with this id, verified against the tree.
    fn get(&self, tenant: &str, id: &Uuid) -> Result<Option<StoredEvent>, StoreError>;
    /// One page of events matching a filter.
    fn query(&self, tenant: &str, spec: &QuerySpec<'_>) -> Result<Page, StoreError>;
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
    /// The latest signed checkpoint if it covers at least `size` leaves, else a fresh one. Proofs
    /// use it: every proof appends an access event, so "fresh to the head" would mean a new
    /// signature for every proof.
    /// The positions of one page of a query when the index alone answers it (no record needs
    /// checking), so that callers can act on the count before the records are read; `None`
    /// otherwise.
    fn query_keys(
        &self,
        tenant: &str,
        spec: &QuerySpec<'_>,
    ) -> Result<Option<query::KeyPage>, StoreError>;
    /// Reads and verifies the events at `keys` (from [`Store::query_keys`]).
    fn read_keys(&self, tenant: &str, keys: &[index::SortKey]) -> Result<Vec<Hit>, StoreError>;
    /// The results `[offset, offset + limit)` of a query and the number of all its results.
    fn query_window(
        &self,
        tenant: &str,
        spec: &WindowSpec<'_>,
    ) -> Result<query::Window, StoreError>;
    fn checkpoint_covering(&self, tenant: &str, size: u64) -> Result<SignedCheckpoint, StoreError>;
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
