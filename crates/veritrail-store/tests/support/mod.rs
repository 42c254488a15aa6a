//! What the store's tests share: the embedded engine under a ledger in a temporary directory,
//! test events, and RFC 9162's tree hash written the slow way.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::json;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::hash::{node_hash, Hash};
use veritrail_core::note::NoteSigner;
use veritrail_store::embedded::{EmbeddedConfig, EmbeddedEngine, LogConfig};
use veritrail_store::{Appended, Ledger, Store, StoreError};

/// The tenant every test writes.
pub const TENANT: &str = "t";

/// The data directory's key in tests.
pub fn key() -> NoteSigner {
    NoteSigner::new("test", &[7; 32]).expect("signer")
}

/// The verifier key of [`TENANT`]'s log: the data directory's key under the log's origin name.
pub fn log_vkey() -> veritrail_core::note::NoteVerifier {
    key().with_name("test/t").expect("name").verifier()
}

/// Opens the embedded engine in `data_dir` under a ledger.
pub fn open(data_dir: &Path, log: LogConfig) -> Result<Ledger<EmbeddedEngine>, StoreError> {
    let config = EmbeddedConfig {
        data_dir: data_dir.to_path_buf(),
        log,
        reset_checkpoint_history: false,
    };
    let engine = EmbeddedEngine::open(config, key().verifier())?;
    Ledger::new(engine, key(), "test")
}

/// The directory of [`TENANT`]'s log and derived state.
pub fn tenant_dir(data_dir: &Path) -> PathBuf {
    EmbeddedEngine::tenant_dir(data_dir, TENANT)
}

/// Appends `events` to [`TENANT`] and waits until they are durable.
pub fn append(store: &impl Store, events: Vec<Event>) -> Result<Appended, StoreError> {
    store
        .append(TENANT, events)?
        .blocking_recv()
        .map_err(|_| StoreError::Closed)?
}

/// A valid event numbered `i` in correlation `c<corr>`.
pub fn event(i: usize, corr: usize) -> Event {
    Event::from_json(
        &json!({
            "event_id": Uuid::now_v7().to_string(),
            "event_type": "test.thing.done",
            "event_timestamp": format!("2025-01-01T00:00:{:02}.{:06}Z", i % 60, i),
            "event_category": "test",
            "event_action": "done",
            "event_outcome": "success",
            "correlation_id": format!("c{corr}"),
            "event_data": {"i": i}
        }),
        Uuid::now_v7,
    )
    .expect("valid event")
}

/// RFC 9162 §2.1.1 MTH, written the slow way.
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => veritrail_core::hash::empty_root(),
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let p = (n - 1).next_power_of_two();
            let k = if p < n { p } else { p / 2 };
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}
