//! The engine-independent layer: [`Ledger`] turns any [`Engine`] into the [`Store`] the server
//! uses. It owns what must not depend on how events are kept:
//!
//! - verify-before-serve: every event it returns is proven against a signed root (or the head
//!   the engine computed past it) by [`RootVerifier`], whatever the engine's files say;
//! - proofs (RFC 9162 inclusion and consistency) from the engine's perfect nodes;
//! - checkpoint signing, under each log's own key name, and its rate policy;
//! - query paging ([`crate::query`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use uuid::Uuid;
use veritrail_core::checkpoint::Checkpoint;
use veritrail_core::event::Event;
use veritrail_core::hash::Hash;
use veritrail_core::merkle;
use veritrail_core::note::NoteSigner;

use crate::engine::{
    Engine, Head, NodeError, SegmentSpan, SignedCheckpoint, Snapshot, StoredEvent,
};
use crate::error::StoreError;
use crate::producers::ProducerStatus;
use crate::query::{self, Page};
use crate::verify::{find_verified, read_verified, RootVerifier};
use crate::{PendingAppend, QuerySpec, Store, WindowSpec};

/// Shortest time between two checkpoints signed for one log.
const MIN_ISSUE_INTERVAL: Duration = Duration::from_millis(50);

/// A [`Store`] over any engine.
pub struct Ledger<E: Engine> {
    engine: E,
    /// The one secret; each log signs with it under its origin's name.
    key: NoteSigner,
    origin_prefix: String,
    logs: RwLock<HashMap<String, Arc<LogTrust>>>,
}

/// A tenant's snapshot with the roots its reads are proven against.
type View<E> = (<E as Engine>::Snapshot, Arc<LogTrust>);

/// What the layer keeps per log: its signing identity and the roots it trusts.
struct LogTrust {
    origin: String,
    signer: NoteSigner,
    verifier: RootVerifier,
    /// Held from deciding to sign to recording: one log's checkpoints are issued one at a time.
    issuing: Mutex<()>,
}

impl<E: Engine> Ledger<E> {
    /// The store over `engine`, signing each tenant's checkpoints with `key` under the name of
    /// its log's origin `<origin_prefix>/<tenant>`. An origin prefix that cannot name a key is
    /// refused here, not at a tenant's first checkpoint.
    pub fn new(engine: E, key: NoteSigner, origin_prefix: &str) -> Result<Ledger<E>, StoreError> {
        crate::keys::log_signer(&key, &log_origin(origin_prefix, "default"))?;
        Ok(Ledger {
            engine,
            key,
            origin_prefix: origin_prefix.to_string(),
            logs: RwLock::new(HashMap::new()),
        })
    }

    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The key that signs `tenant`'s checkpoints.
    pub fn signer(&self, tenant: &str) -> Result<NoteSigner, StoreError> {
        Ok(self.trust(tenant)?.signer.clone())
    }

    /// The log's trust state, created on first use from the engine's latest checkpoint.
    fn trust(&self, tenant: &str) -> Result<Arc<LogTrust>, StoreError> {
        if let Some(t) = self.logs.read().map_err(|_| poisoned())?.get(tenant) {
            return Ok(t.clone());
        }
        let origin = log_origin(&self.origin_prefix, tenant);
        let signer = crate::keys::log_signer(&self.key, &origin)?;
        let verifier = RootVerifier::default();
        if let Some(cp) = self.engine.latest_checkpoint(tenant)? {
            verifier.trust(cp.checkpoint.size, cp.checkpoint.root);
        }
        let mut logs = self.logs.write().map_err(|_| poisoned())?;
        let t = logs.entry(tenant.to_string()).or_insert_with(|| {
            Arc::new(LogTrust {
                origin,
                signer,
                verifier,
                issuing: Mutex::new(()),
            })
        });
        Ok(t.clone())
    }

    /// The tenant's snapshot and trust state; `None` when it has no log.
    fn view(&self, tenant: &str) -> Result<Option<View<E>>, StoreError> {
        match self.engine.snapshot(tenant)? {
            Some(view) => Ok(Some((view, self.trust(tenant)?))),
            None => Ok(None),
        }
    }

    fn existing(&self, tenant: &str) -> Result<View<E>, StoreError> {
        self.view(tenant)?
            .ok_or_else(|| StoreError::OutOfRange(format!("tenant `{tenant}` has no events")))
    }

    fn head_of(&self, tenant: &str) -> Result<Head, StoreError> {
        Ok(match self.engine.snapshot(tenant)? {
            Some(view) => view.head(),
            None => Head {
                size: 0,
                root: veritrail_core::hash::empty_root(),
            },
        })
    }

    /// Signs a checkpoint of the head unless the latest one covers it under the log's own key
    /// name. A latest checkpoint signed under another name (an older version's) is signed again
    /// at the same size, so that every checkpoint served verifies with the log's verifier key;
    /// its tree must be the one already signed.
    fn issue(&self, tenant: &str, t: &LogTrust) -> Result<SignedCheckpoint, StoreError> {
        let _one_at_a_time = t.issuing.lock().map_err(|_| poisoned())?;
        let head = self.head_of(tenant)?;
        let latest = self.engine.latest_checkpoint(tenant)?;
        if let Some(l) = &latest {
            let own_name = l.key_name == t.signer.name();
            if l.checkpoint.size > head.size || (l.checkpoint.size == head.size && own_name) {
                return Ok(l.clone());
            }
            if l.checkpoint.size == head.size && l.checkpoint.root != head.root {
                return Err(StoreError::Damaged(format!(
                    "the tree of {} events does not match its signed checkpoint",
                    head.size
                )));
            }
        }
        let cp = Checkpoint {
            origin: t.origin.clone(),
            size: head.size,
            root: head.root,
            extensions: Vec::new(),
        };
        let signed = SignedCheckpoint::sign(cp, &t.signer)?;
        self.engine.record_checkpoint(tenant, &signed)?;
        t.verifier
            .trust(signed.checkpoint.size, signed.checkpoint.root);
        Ok(signed)
    }
}

/// The checkpoint origin of `tenant`'s log under the origin prefix `prefix`.
pub fn log_origin(prefix: &str, tenant: &str) -> String {
    format!("{prefix}/{tenant}")
}

fn poisoned() -> StoreError {
    StoreError::Failed("an internal lock was poisoned by a panic".into())
}

/// Refuses a tree size larger than the log's `head` size.
pub fn check_size(size: u64, head: u64) -> Result<(), StoreError> {
    if size > head {
        return Err(StoreError::OutOfRange(format!(
            "tree size {size} is larger than the log ({head} events)"
        )));
    }
    Ok(())
}

/// The snapshot's nodes as the closure [`veritrail_core::merkle`] reads.
fn nodes(view: &dyn Snapshot) -> impl FnMut(u32, u64) -> Result<Hash, NodeError> + '_ {
    move |level, index| view.node(level, index)
}

impl<E: Engine> Store for Ledger<E> {
    fn append(&self, tenant: &str, events: Vec<Event>) -> Result<PendingAppend, StoreError> {
        self.engine.append(tenant, events)
    }

    fn get(&self, tenant: &str, id: &Uuid) -> Result<Option<StoredEvent>, StoreError> {
        match self.view(tenant)? {
            Some((view, t)) => find_verified(&view, &t.verifier, id),
            None => Ok(None),
        }
    }

    fn segments(&self, tenant: &str) -> Result<Vec<SegmentSpan>, StoreError> {
        Ok(match self.engine.snapshot(tenant)? {
            Some(view) => view.segments(),
            None => Vec::new(),
        })
    }

    fn read_range(
        &self,
        tenant: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let Some((view, t)) = self.view(tenant)? else {
            return Ok(Vec::new());
        };
        let end = from.saturating_add(limit as u64).min(view.head().size);
        (from..end)
            .map(|seq| read_verified(&view, &t.verifier, seq))
            .collect()
    }

    fn query(&self, tenant: &str, spec: &QuerySpec<'_>) -> Result<Page, StoreError> {
        let Some((view, t)) = self.view(tenant)? else {
            return Ok(Page {
                events: Vec::new(),
                next_cursor: None,
            });
        };
        query::run(
            &view,
            &t.verifier,
            spec.filter,
            spec.order,
            spec.cursor,
            spec.limit,
        )
    }

    fn query_keys(
        &self,
        tenant: &str,
        spec: &QuerySpec<'_>,
    ) -> Result<Option<query::KeyPage>, StoreError> {
        let Some(view) = self.engine.snapshot(tenant)? else {
            return Ok(Some(query::KeyPage {
                keys: Vec::new(),
                next_cursor: None,
            }));
        };
        query::run_keys(&view, spec.filter, spec.order, spec.cursor, spec.limit)
    }

    fn read_keys(
        &self,
        tenant: &str,
        keys: &[crate::SortKey],
    ) -> Result<Vec<crate::Hit>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (view, t) = self.existing(tenant)?;
        query::read_keys(&view, &t.verifier, keys)
    }

    fn query_window(
        &self,
        tenant: &str,
        spec: &WindowSpec<'_>,
    ) -> Result<query::Window, StoreError> {
        let Some((view, t)) = self.view(tenant)? else {
            return Ok(query::Window {
                events: Vec::new(),
                total: 0,
            });
        };
        query::run_window(
            &view,
            &t.verifier,
            spec.filter,
            spec.order,
            spec.offset,
            spec.limit,
        )
    }

    fn head(&self, tenant: &str) -> Result<Head, StoreError> {
        self.head_of(tenant)
    }

    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError> {
        let (view, _) = self.existing(tenant)?;
        check_size(size, view.head().size)?;
        let mut nodes = nodes(&view);
        Ok(merkle::root(size, &mut nodes)?)
    }

    fn leaf_hash(&self, tenant: &str, index: u64) -> Result<Hash, StoreError> {
        let (view, _) = self.existing(tenant)?;
        let size = view.head().size;
        if index >= size {
            return Err(StoreError::OutOfRange(format!(
                "leaf {index} is beyond the log ({size} events)"
            )));
        }
        Ok(view.node(0, index)?)
    }

    fn inclusion_proof(
        &self,
        tenant: &str,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let (view, _) = self.existing(tenant)?;
        check_size(size, view.head().size)?;
        let mut nodes = nodes(&view);
        Ok(merkle::inclusion_proof(index, size, &mut nodes)?)
    }

    fn consistency_proof(&self, tenant: &str, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let (view, _) = self.existing(tenant)?;
        check_size(new, view.head().size)?;
        let mut nodes = nodes(&view);
        Ok(merkle::consistency_proof(old, new, &mut nodes)?)
    }

    fn checkpoint(&self, tenant: &str) -> Result<SignedCheckpoint, StoreError> {
        if !crate::valid_tenant(tenant) {
            return Err(StoreError::OutOfRange(format!("invalid tenant `{tenant}`")));
        }
        let t = self.trust(tenant)?;
        if let Some(l) = self.engine.latest_checkpoint(tenant)? {
            // Signing is a sync: however often checkpoints are asked for while the log grows,
            // issue at most one per interval. The caller waits out the rest of the interval and
            // still gets a checkpoint that covers the head as it was when it asked.
            let since = (chrono::Utc::now() - l.seen_at)
                .to_std()
                .unwrap_or_default();
            if l.checkpoint.size < self.head_of(tenant)?.size && since < MIN_ISSUE_INTERVAL {
                std::thread::sleep(MIN_ISSUE_INTERVAL - since);
            }
        }
        self.issue(tenant, &t)
    }

    fn checkpoint_covering(&self, tenant: &str, size: u64) -> Result<SignedCheckpoint, StoreError> {
        let covering = match self.engine.latest_checkpoint(tenant)? {
            Some(l) if l.checkpoint.size >= size => {
                let t = self.trust(tenant)?;
                (l.key_name == t.signer.name()).then_some(l)
            }
            _ => None,
        };
        match covering {
            Some(l) => Ok(l),
            None => self.checkpoint(tenant),
        }
    }

    fn counts(&self, tenant: &str, field: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        match self.engine.snapshot(tenant)? {
            Some(view) => view.counts(field),
            None => Ok(BTreeMap::new()),
        }
    }

    fn producers(&self, tenant: &str) -> Result<Vec<ProducerStatus>, StoreError> {
        Ok(self
            .engine
            .snapshot(tenant)?
            .map(|v| v.producers())
            .unwrap_or_default())
    }

    fn origin(&self, tenant: &str) -> String {
        log_origin(&self.origin_prefix, tenant)
    }

    fn tenants(&self) -> Vec<String> {
        self.engine.tenants()
    }

    fn ready(&self) -> Result<(), String> {
        self.engine.ready()
    }

    fn queue_depth(&self) -> usize {
        self.engine.queue_depth()
    }

    fn close(&self) {
        self.engine.close()
    }
}
