//! The embedded engine: one directory per tenant under `<data-dir>/tenants/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use uuid::Uuid;
use veritrail_core::checkpoint::Checkpoint;
use veritrail_core::event::Event;
use veritrail_core::hash::Hash;
use veritrail_core::merkle;
use veritrail_core::note::NoteSigner;

use crate::checkpoints::{Checkpoints, SignedCheckpoint};
use crate::error::StoreError;
use crate::log::{Head, LogConfig, StoredEvent, TenantLog};
use crate::query::{self, Page};
use crate::{PendingAppend, QuerySpec, Store, WindowSpec};

/// Shortest time between two checkpoints signed for one tenant.
const MIN_ISSUE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Settings of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// Checkpoint origins are `<origin_prefix>/<tenant>`.
    pub origin_prefix: String,
}

/// One tenant's log with its checkpoint history.
pub struct Tenant {
    pub log: TenantLog,
    pub checkpoints: Checkpoints,
    pub origin: String,
}

/// The embedded store.
pub struct EmbeddedStore {
    /// Held open for the store's lifetime: its lock keeps a second process off the directory.
    _lock: std::fs::File,
    config: EmbeddedConfig,
    signer: NoteSigner,
    tenants: RwLock<HashMap<String, Arc<Tenant>>>,
}

/// The lock file of a data directory.
pub const LOCK_FILE: &str = "store.lock";

/// Takes the exclusive lock of the data directory, so that two servers (or a server and `fsck`)
/// never work on one store, even before it has a tenant.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(format!("opening {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(format!(
            "{} is in use by another process: is a server already running on this data directory?",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::io(format!("locking {}", path.display()))(e))
        }
    }
}

/// True for names usable as a tenant directory and checkpoint origin suffix.
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl EmbeddedStore {
    /// Opens the store and every tenant already on disk (recovering each).
    pub fn open(config: EmbeddedConfig, signer: NoteSigner) -> Result<EmbeddedStore, StoreError> {
        let tenants_dir = config.data_dir.join("tenants");
        crate::segment::create_dir_durable(&tenants_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        let store = EmbeddedStore {
            _lock: lock,
            config,
            signer,
            tenants: RwLock::new(HashMap::new()),
        };
        for entry in std::fs::read_dir(&tenants_dir).map_err(StoreError::io("listing tenants"))? {
            let name = entry
                .map_err(StoreError::io("listing tenants"))?
                .file_name();
            if let Some(name) = name.to_str().filter(|n| valid_tenant(n)) {
                store.tenant(name, true)?;
            }
        }
        Ok(store)
    }

    /// The directory of `tenant`.
    pub fn tenant_dir(data_dir: &Path, tenant: &str) -> PathBuf {
        data_dir.join("tenants").join(tenant)
    }

    /// Names of the tenants with a log.
    pub fn tenant_names(&self) -> Vec<String> {
        self.tenants
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The tenant's log, opening (and with `create`, creating) it on first use.
    pub fn tenant(&self, name: &str, create: bool) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.tenants.read().map_err(|_| poisoned())?.get(name) {
            return Ok(Some(t.clone()));
        }
        let dir = Self::tenant_dir(&self.config.data_dir, name);
        if !valid_tenant(name) || (!create && !dir.exists()) {
            return Ok(None);
        }
        let mut tenants = self.tenants.write().map_err(|_| poisoned())?;
        if let Some(t) = tenants.get(name) {
            return Ok(Some(t.clone()));
        }
        let log = TenantLog::open(&dir, name, self.config.log.clone())?;
        let checkpoints = Checkpoints::open(&dir.join("checkpoints.log"), &self.signer.verifier())?;
        let origin = format!("{}/{name}", self.config.origin_prefix);
        check_against_checkpoint(&log, &checkpoints)?;
        let t = Arc::new(Tenant {
            log,
            checkpoints,
            origin,
        });
        tenants.insert(name.to_string(), t.clone());
        Ok(Some(t))
    }

    fn existing(&self, name: &str) -> Result<Arc<Tenant>, StoreError> {
        self.tenant(name, false)?
            .ok_or_else(|| StoreError::OutOfRange(format!("tenant `{name}` has no events")))
    }
}

/// Refuses a log that lost or changed events a signed checkpoint already committed to.
fn check_against_checkpoint(log: &TenantLog, checkpoints: &Checkpoints) -> Result<(), StoreError> {
    let Some(latest) = checkpoints.latest() else {
        return Ok(());
    };
    let cp = &latest.checkpoint;
    let head = log.head()?;
    if head.size < cp.size {
        return Err(StoreError::Damaged(format!(
            "the log holds {} events but its signed checkpoint commits to {}: acknowledged events are missing",
            head.size, cp.size
        )));
    }
    let reader = log.index_reader()?;
    let root = merkle::root(cp.size, &mut reader.nodes()?)?;
    if root != cp.root {
        return Err(StoreError::Damaged(format!(
            "the tree of the first {} events does not match the signed checkpoint: the log was altered",
            cp.size
        )));
    }
    Ok(())
}

fn poisoned() -> StoreError {
    StoreError::Failed("tenant table lock poisoned".into())
}

impl Store for EmbeddedStore {
    fn append(&self, tenant: &str, events: Vec<Event>) -> Result<PendingAppend, StoreError> {
        let t = self
            .tenant(tenant, true)?
            .ok_or_else(|| StoreError::OutOfRange(format!("invalid tenant `{tenant}`")))?;
        t.log.append(events)
    }

    fn get(&self, tenant: &str, id: &Uuid) -> Result<Option<StoredEvent>, StoreError> {
        let Some(t) = self.tenant(tenant, false)? else {
            return Ok(None);
        };
        let reader = t.log.index_reader()?;
        match reader.seq_of(id)? {
            Some(seq) => Ok(Some(t.log.read(&reader, seq)?)),
            None => Ok(None),
        }
    }

    fn query(&self, tenant: &str, spec: &QuerySpec<'_>) -> Result<Page, StoreError> {
        let Some(t) = self.tenant(tenant, false)? else {
            return Ok(Page {
                events: Vec::new(),
                next_cursor: None,
            });
        };
        let reader = t.log.index_reader()?;
        query::run(
            &t.log,
            &reader,
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
        let Some(t) = self.tenant(tenant, false)? else {
            return Ok(Some(query::KeyPage {
                keys: Vec::new(),
                next_cursor: None,
            }));
        };
        let reader = t.log.index_reader()?;
        query::run_keys(&reader, spec.filter, spec.order, spec.cursor, spec.limit)
    }

    fn read_keys(
        &self,
        tenant: &str,
        keys: &[crate::index::SortKey],
    ) -> Result<Vec<crate::Hit>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let t = self.existing(tenant)?;
        let reader = t.log.index_reader()?;
        query::read_keys(&t.log, &reader, keys)
    }

    fn query_window(
        &self,
        tenant: &str,
        spec: &WindowSpec<'_>,
    ) -> Result<query::Window, StoreError> {
        let Some(t) = self.tenant(tenant, false)? else {
            return Ok(query::Window {
                events: Vec::new(),
                total: 0,
            });
        };
        let reader = t.log.index_reader()?;
        query::run_window(
            &t.log,
            &reader,
            spec.filter,
            spec.order,
            spec.offset,
            spec.limit,
        )
    }

    fn head(&self, tenant: &str) -> Result<Head, StoreError> {
        Ok(match self.tenant(tenant, false)? {
            Some(t) => t.log.head()?,
            None => Head {
                size: 0,
                root: veritrail_core::hash::empty_root(),
            },
        })
    }

    fn root(&self, tenant: &str, size: u64) -> Result<Hash, StoreError> {
        let t = self.existing(tenant)?;
        check_size(size, t.log.head()?.size)?;
        let reader = t.log.index_reader()?;
        let mut nodes = reader.nodes()?;
        let result = merkle::root(size, &mut nodes)?;
        Ok(result)
    }

    fn leaf_hash(&self, tenant: &str, index: u64) -> Result<Hash, StoreError> {
        let t = self.existing(tenant)?;
        let size = t.log.head()?.size;
        if index >= size {
            return Err(StoreError::OutOfRange(format!(
                "leaf {index} is beyond the log ({size} events)"
            )));
        }
        let reader = t.log.index_reader()?;
        let mut nodes = reader.nodes()?;
        Ok(nodes(0, index)?)
    }

    fn inclusion_proof(
        &self,
        tenant: &str,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, StoreError> {
        let t = self.existing(tenant)?;
        check_size(size, t.log.head()?.size)?;
        let reader = t.log.index_reader()?;
        let mut nodes = reader.nodes()?;
        let result = merkle::inclusion_proof(index, size, &mut nodes)?;
        Ok(result)
    }

    fn consistency_proof(&self, tenant: &str, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let t = self.existing(tenant)?;
        check_size(new, t.log.head()?.size)?;
        let reader = t.log.index_reader()?;
        let mut nodes = reader.nodes()?;
        let result = merkle::consistency_proof(old, new, &mut nodes)?;
        Ok(result)
    }

    fn checkpoint(&self, tenant: &str) -> Result<SignedCheckpoint, StoreError> {
        let t = self
            .tenant(tenant, true)?
            .ok_or_else(|| StoreError::OutOfRange(format!("invalid tenant `{tenant}`")))?;
        let latest = t.checkpoints.latest();
        if let Some(l) = &latest {
            // Signing is an fsync: however often checkpoints are asked for while the log grows,
            // issue at most one per interval. The caller waits out the rest of the interval and
            // still gets a checkpoint that covers the head as it was when it asked.
            let since = (chrono::Utc::now() - l.seen_at)
                .to_std()
                .unwrap_or_default();
            if l.checkpoint.size < t.log.head()?.size && since < MIN_ISSUE_INTERVAL {
                std::thread::sleep(MIN_ISSUE_INTERVAL - since);
            }
        }
        let head = t.log.head()?;
        match t.checkpoints.latest().or(latest) {
            Some(latest) if latest.checkpoint.size >= head.size => Ok(latest),
            _ => {
                let cp = Checkpoint {
                    origin: t.origin.clone(),
                    size: head.size,
                    root: head.root,
                    extensions: Vec::new(),
                };
                t.checkpoints.issue(cp, &self.signer)
            }
        }
    }

    fn checkpoint_covering(&self, tenant: &str, size: u64) -> Result<SignedCheckpoint, StoreError> {
        let latest = self
            .tenant(tenant, false)?
            .and_then(|t| t.checkpoints.latest())
            .filter(|l| l.checkpoint.size >= size);
        match latest {
            Some(l) => Ok(l),
            None => self.checkpoint(tenant),
        }
    }

    fn producers(&self, tenant: &str) -> Result<Vec<crate::producers::ProducerStatus>, StoreError> {
        let Some(t) = self.tenant(tenant, false)? else {
            return Ok(Vec::new());
        };
        Ok(t.log.index_reader()?.producers()?)
    }

    fn tenants(&self) -> Vec<String> {
        self.tenant_names()
    }

    fn queue_depth(&self) -> usize {
        self.tenants
            .read()
            .map(|t| t.values().map(|t| t.log.queue_depth()).sum())
            .unwrap_or(0)
    }

    fn close(&self) {
        if let Ok(tenants) = self.tenants.read() {
            for t in tenants.values() {
                t.log.close();
            }
        }
    }
}

fn check_size(size: u64, head: u64) -> Result<(), StoreError> {
    if size > head {
        return Err(StoreError::OutOfRange(format!(
            "tree size {size} is larger than the log ({head} events)"
        )));
    }
    Ok(())
}
