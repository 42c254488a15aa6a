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
    /// Checkpoint origins are `<origin_prefix>/<tenant>`, and each log's key is named after its
    /// origin.
    pub origin_prefix: String,
    /// Start even when a tenant's checkpoint history does not reach the checkpoints its log
    /// recorded (a deliberate reset: the next checkpoint starts a new history).
    pub reset_checkpoint_history: bool,
}

/// One tenant's log with its checkpoint history.
pub struct Tenant {
    pub log: TenantLog,
    pub checkpoints: Checkpoints,
    pub origin: String,
    /// The data directory's key, named after `origin`.
    pub signer: NoteSigner,
}

/// The embedded store.
pub struct EmbeddedStore {
    /// Held open for the store's lifetime: its lock keeps a second process off the directory.
    _lock: std::fs::File,
    config: EmbeddedConfig,
    /// The data directory's one secret, under the name stored with it; each tenant signs with it
    /// under its origin's name ([`Tenant::signer`]).
    key: NoteSigner,
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
    /// Opens the store and every tenant already on disk (recovering each). `key` is the data
    /// directory's signing key ([`crate::keys::load_or_create_signer`]).
    pub fn open(config: EmbeddedConfig, key: NoteSigner) -> Result<EmbeddedStore, StoreError> {
        // An origin prefix that cannot name a key fails here, not at a tenant's first event.
        crate::keys::log_signer(&key, &log_origin(&config.origin_prefix, "default"))?;
        let tenants_dir = config.data_dir.join("tenants");
        crate::segment::create_dir_durable(&tenants_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        let store = EmbeddedStore {
            _lock: lock,
            config,
            key,
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

    /// The checkpoint origin of `tenant`'s log, which also names its key.
    pub fn origin(&self, tenant: &str) -> String {
        log_origin(&self.config.origin_prefix, tenant)
    }

    /// The key that signs `tenant`'s checkpoints: the data directory's key under the name of the
    /// log's origin.
    pub fn signer(&self, tenant: &str) -> Result<NoteSigner, StoreError> {
        crate::keys::log_signer(&self.key, &self.origin(tenant))
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
        let signer = self.signer(name)?;
        // The checkpoint history is read (and its signatures checked) first: the log's recovery
        // and its reads trust its root.
        crate::segment::create_dir_durable(&dir)?;
        let checkpoints = Checkpoints::open(&dir.join("checkpoints.log"), &self.key.verifier())?;
        let trusted = checkpoints
            .latest()
            .map(|l| (l.checkpoint.size, l.checkpoint.root));
        let log = TenantLog::open_trusting(&dir, name, self.config.log.clone(), trusted)?;
        check_against_checkpoint(&log, &checkpoints)?;
        let history = trusted.map_or(0, |t| t.0);
        if log.marked() > history {
            let finding = crate::fsck::history_removed(log.marked(), trusted.map(|t| t.0));
            if !self.config.reset_checkpoint_history {
                return Err(StoreError::Damaged(finding));
            }
            tracing::warn!(tenant = name, "{finding}; starting a new checkpoint history as asked (--reset-checkpoint-history)");
        }
        let t = Arc::new(Tenant {
            log,
            checkpoints,
            origin: self.origin(name),
            signer,
        });
        tenants.insert(name.to_string(), t.clone());
        Ok(Some(t))
    }

    /// Deletes and rebuilds the derived state (indexes and tree nodes) of `tenant` in a stopped
    /// store's `data_dir` from its log. Returns the number of events indexed.
    pub fn reindex(data_dir: &Path, tenant: &str) -> Result<u64, StoreError> {
        let dir = Self::tenant_dir(data_dir, tenant);
        let index = dir.join(crate::index::INDEX_DIR);
        // Hold the index's lock while deleting it: a running server holds it, and then nothing is
        // deleted. The lock file itself stays; it is released just before the rebuild takes it.
        let lock = crate::index::lock(&index)?;
        if index.exists() {
            std::fs::remove_dir_all(&index)
                .map_err(StoreError::io(format!("removing {}", index.display())))?;
        }
        drop(lock);
        let log = TenantLog::open(&dir, tenant, LogConfig::default())?;
        let size = log.head()?.size;
        log.close();
        Ok(size)
    }

    /// Converts `tenant`'s log in a stopped store's `data_dir` to the current layout (an index
    /// of an older version is rebuilt; every full segment is sealed) and checks that the log
    /// hashes to the same tree and its signed checkpoints still hold. `vkey` checks the
    /// checkpoints; `progress(unsealed)` is called while the segments are sealed.
    pub fn migrate(
        data_dir: &Path,
        tenant: &str,
        vkey: &veritrail_core::note::NoteVerifier,
        mut progress: impl FnMut(usize),
    ) -> Result<Migration, StoreError> {
        let dir = Self::tenant_dir(data_dir, tenant);
        let before = crate::fsck::check(&dir, vkey, |_, _| {})?;
        if !before.ok() {
            return Err(StoreError::Damaged(format!(
                "fsck finds damage; nothing was converted: {}",
                before.problems.join("; ")
            )));
        }
        let checkpoints = Checkpoints::open(&dir.join("checkpoints.log"), vkey)?;
        let trusted = checkpoints
            .latest()
            .map(|l| (l.checkpoint.size, l.checkpoint.root));
        let log = TenantLog::open_trusting(&dir, tenant, LogConfig::default(), trusted)?;
        check_against_checkpoint(&log, &checkpoints)?;
        loop {
            let left = log.unsealed();
            progress(left);
            if left == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        log.close();
        drop(log);
        let after = crate::fsck::check(&dir, vkey, |_, _| {})?;
        if !after.ok() || after.events != before.events || after.root != before.root {
            return Err(StoreError::Damaged(format!(
                "after conversion the log differs: {} events with root {} before, {} with root {} after; problems: {}",
                before.events,
                veritrail_core::hash::to_b64(&before.root),
                after.events,
                veritrail_core::hash::to_b64(&after.root),
                after.problems.join("; ")
            )));
        }
        Ok(Migration {
            events: after.events,
            root: after.root,
            checkpoint_size: after.checkpoint_size,
            sealed: before.unsealed,
            segments: after.segments,
        })
    }

    fn existing(&self, name: &str) -> Result<Arc<Tenant>, StoreError> {
        self.tenant(name, false)?
            .ok_or_else(|| StoreError::OutOfRange(format!("tenant `{name}` has no events")))
    }
}

/// What [`EmbeddedStore::migrate`] did to one tenant's log.
#[derive(Debug, Clone)]
pub struct Migration {
    pub events: u64,
    /// The tree's root, the same before and after.
    pub root: Hash,
    /// The latest signed checkpoint, which still verifies.
    pub checkpoint_size: Option<u64>,
    /// Full segments sealed by the conversion.
    pub sealed: u32,
    pub segments: u32,
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
    let root = merkle::root(cp.size, &mut reader.nodes())?;
    if root != cp.root {
        return Err(StoreError::Damaged(format!(
            "the tree of the first {} events does not match the signed checkpoint: the log or the tree's node files in index/ were altered. \
             `veritrail fsck` tells which; if only the node files differ from the log, `veritrail reindex` rebuilds them",
            cp.size
        )));
    }
    Ok(())
}

/// The checkpoint origin of `tenant`'s log under the origin prefix `prefix`.
pub fn log_origin(prefix: &str, tenant: &str) -> String {
    format!("{prefix}/{tenant}")
}

/// True when `cp` is signed under the tenant's own key name, so that it verifies with the
/// tenant's verifier key (and not only with the key name of an older version).
fn signed_as_tenant(t: &Tenant, cp: &SignedCheckpoint) -> bool {
    cp.key_name == t.signer.name()
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
        t.log.find(&reader, id)
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
        let mut nodes = reader.nodes();
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
        let mut nodes = reader.nodes();
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
        let mut nodes = reader.nodes();
        let result = merkle::inclusion_proof(index, size, &mut nodes)?;
        Ok(result)
    }

    fn consistency_proof(&self, tenant: &str, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let t = self.existing(tenant)?;
        check_size(new, t.log.head()?.size)?;
        let reader = t.log.index_reader()?;
        let mut nodes = reader.nodes();
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
            Some(latest)
                if latest.checkpoint.size >= head.size && signed_as_tenant(&t, &latest) =>
            {
                Ok(latest)
            }
            _ => {
                let cp = Checkpoint {
                    origin: t.origin.clone(),
                    size: head.size,
                    root: head.root,
                    extensions: Vec::new(),
                };
                let signed = t.checkpoints.issue(cp, &t.signer)?;
                t.log.trust(signed.checkpoint.size, signed.checkpoint.root);
                t.log.mark_checkpoint(signed.checkpoint.size, &signed.note);
                Ok(signed)
            }
        }
    }

    fn checkpoint_covering(&self, tenant: &str, size: u64) -> Result<SignedCheckpoint, StoreError> {
        let latest = self.tenant(tenant, false)?.and_then(|t| {
            t.checkpoints
                .latest()
                .filter(|l| l.checkpoint.size >= size && signed_as_tenant(&t, l))
        });
        match latest {
            Some(l) => Ok(l),
            None => self.checkpoint(tenant),
        }
    }

    fn producers(&self, tenant: &str) -> Result<Vec<crate::producers::ProducerStatus>, StoreError> {
        let Some(t) = self.tenant(tenant, false)? else {
            return Ok(Vec::new());
        };
        Ok(t.log.index_reader()?.producers())
    }

    fn origin(&self, tenant: &str) -> String {
        EmbeddedStore::origin(self, tenant)
    }

    fn tenants(&self) -> Vec<String> {
        self.tenant_names()
    }

    fn ready(&self) -> Result<(), String> {
        let tenants: Vec<(String, Arc<Tenant>)> = self
            .tenants
            .read()
            .map_err(|_| "tenant table lock poisoned".to_string())?
            .iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        for (name, t) in tenants {
            t.log
                .ready()
                .map_err(|why| format!("tenant {name}: {why}"))?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use veritrail_core::checkpoint::open_checkpoint;
    use veritrail_core::note::NoteVerifier;

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                let v = serde_json::json!({"event_type": "t.x.y",
                    "event_timestamp": format!("2025-01-01T00:00:{i:02}Z"),
                    "event_category": "t", "event_action": "y", "event_outcome": "success"});
                Event::from_json(&v, Uuid::now_v7).expect("valid")
            })
            .collect()
    }

    fn append(store: &EmbeddedStore, tenant: &str, n: usize) {
        store
            .append(tenant, events(n))
            .expect("queued")
            .blocking_recv()
            .expect("answered")
            .expect("durable");
    }

    fn config(data_dir: &Path) -> EmbeddedConfig {
        EmbeddedConfig {
            data_dir: data_dir.to_path_buf(),
            log: LogConfig::default(),
            origin_prefix: "veritrail".into(),
            reset_checkpoint_history: false,
        }
    }

    /// Opens a note with exactly this verifier key.
    fn opens(note: &str, vkey: &NoteVerifier) -> bool {
        open_checkpoint(note, std::slice::from_ref(vkey)).is_ok()
    }

    #[test]
    fn a_history_signed_under_the_legacy_name_opens_and_new_checkpoints_use_the_origin_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The key as older versions created it: named after the origin prefix, which also
        // named every tenant's checkpoint signatures.
        let key = NoteSigner::new("veritrail", &[3; 32]).expect("valid name");
        let legacy = key.verifier();
        let acme = key
            .with_name("veritrail/acme")
            .expect("valid name")
            .verifier();
        let beta = key
            .with_name("veritrail/beta")
            .expect("valid name")
            .verifier();
        // A history written as an older version wrote it: the log of tenant `acme` and a
        // checkpoint of its head signed under the legacy name.
        let tenant_dir = EmbeddedStore::tenant_dir(dir.path(), "acme");
        let old_note = {
            let log = TenantLog::open(&tenant_dir, "acme", LogConfig::default()).expect("open");
            log.append(events(3))
                .expect("queued")
                .blocking_recv()
                .expect("answered")
                .expect("durable");
            let head = log.head().expect("head");
            let history = Checkpoints::open(&tenant_dir.join("checkpoints.log"), &legacy)
                .expect("new history");
            let cp = Checkpoint {
                origin: "veritrail/acme".into(),
                size: head.size,
                root: head.root,
                extensions: Vec::new(),
            };
            let old = history.issue(cp, &key).expect("signed");
            log.close();
            assert!(old.note.contains("\u{2014} veritrail "), "{}", old.note);
            old.note
        };
        assert!(opens(&old_note, &legacy));
        assert!(!opens(&old_note, &acme));

        // The store opens it: the legacy signature is the same key's.
        let store = EmbeddedStore::open(config(dir.path()), key.clone()).expect("opens");
        let t = store.tenant("acme", false).expect("opens").expect("exists");
        assert_eq!(t.signer.name(), "veritrail/acme");
        assert_eq!(store.signer("acme").expect("signer").verifier(), acme);
        let latest = t.checkpoints.latest().expect("the old checkpoint");
        assert_eq!(latest.key_name, "veritrail");
        assert_eq!(latest.note, old_note);

        // The first checkpoint asked for is signed under the origin's name, at the same size,
        // and only under it.
        let same = store.checkpoint("acme").expect("checkpoint");
        assert_eq!(same.checkpoint.size, 3);
        assert_eq!(same.checkpoint.root, latest.checkpoint.root);
        assert_eq!(same.key_name, "veritrail/acme");
        assert!(
            same.note.contains("\u{2014} veritrail/acme "),
            "{}",
            same.note
        );
        assert_eq!(same.note.matches('\u{2014}').count(), 1, "{}", same.note);
        assert!(opens(&same.note, &acme));
        assert!(!opens(&same.note, &legacy));
        assert!(!opens(&same.note, &beta));
        assert_eq!(
            store.checkpoint("acme").expect("checkpoint"),
            same,
            "signed once"
        );
        assert_eq!(
            store.checkpoint_covering("acme", 3).expect("covering"),
            same
        );
        // New growth is signed under the origin's name too.
        append(&store, "acme", 2);
        let grown = store.checkpoint("acme").expect("checkpoint");
        assert_eq!(grown.checkpoint.size, 5);
        assert!(opens(&grown.note, &acme));
        assert!(!opens(&grown.note, &legacy));
        // Another tenant signs under its own origin's name.
        append(&store, "beta", 1);
        let other = store.checkpoint("beta").expect("checkpoint");
        assert_eq!(other.key_name, "veritrail/beta");
        assert!(opens(&other.note, &beta));
        assert!(!opens(&other.note, &acme));
        store.close();
        drop((t, store));

        // Both the old and the new entries stay verifiable, and the history reopens.
        let store = EmbeddedStore::open(config(dir.path()), key.clone()).expect("reopens");
        let t = store.tenant("acme", false).expect("opens").expect("exists");
        let reopened = t.checkpoints.latest().expect("latest");
        assert_eq!(
            (&reopened.note, &reopened.key_name),
            (&grown.note, &grown.key_name)
        );
        assert!(opens(&old_note, &legacy));
        store.close();
        drop((t, store));

        // A history the key never signed is refused, whatever name it carries.
        let stranger = NoteSigner::new("veritrail", &[4; 32]).expect("valid name");
        let refused = EmbeddedStore::open(config(dir.path()), stranger);
        assert!(
            matches!(refused, Err(StoreError::Damaged(_))),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn an_origin_prefix_that_cannot_name_a_key_is_refused_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = NoteSigner::new("veritrail", &[3; 32]).expect("valid name");
        let mut bad = config(dir.path());
        bad.origin_prefix = "audit log".into();
        assert!(matches!(
            EmbeddedStore::open(bad, key),
            Err(StoreError::Checkpoint(_))
        ));
    }
}
