//! The embedded engine: every tenant's log in local files, one directory per tenant under
//! `<data-dir>/tenants/`. Its modules are private; [`EmbeddedEngine`] is the way in, with
//! [`fsck`] and the readers of its file formats ([`formats`]) for tools and fuzzing.

mod checkpoints;
mod codec;
mod entries;
mod flat;
pub mod fsck;
mod index;
mod log;
pub mod medium;
mod recovery;
pub(crate) mod sealed;
mod seg_index;
pub mod segment;
mod segments;
mod snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use veritrail_core::event::Event;
use veritrail_core::hash::Hash;
use veritrail_core::merkle;
use veritrail_core::note::NoteVerifier;

use crate::engine::{Engine, SignedCheckpoint};
use crate::error::StoreError;
use crate::PendingAppend;
use checkpoints::Checkpoints;
pub use index::INDEX_DIR;
pub use log::LogConfig;
use log::TenantLog;
pub use snapshot::EmbeddedSnapshot;

/// The readers and writers of the engine's file formats, for tools, tests and fuzzing.
pub mod formats {
    pub use super::checkpoints::Checkpoints;
    pub use super::index::{Selector, INDEXED_FIELDS};
    pub use super::sealed::{seal, SealedSegment};
    pub use super::seg_index::{RunBounds, SegmentIndex};
    pub use super::segment;
}

/// Settings of the embedded engine.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    pub log: LogConfig,
    /// Start even when a tenant's checkpoint history does not reach the checkpoints its log
    /// recorded (a deliberate reset: the next checkpoint starts a new history).
    pub reset_checkpoint_history: bool,
}

/// One tenant's log with its checkpoint history.
struct Tenant {
    log: TenantLog,
    checkpoints: Checkpoints,
}

/// The embedded engine.
pub struct EmbeddedEngine {
    /// Held open for the engine's lifetime: its lock keeps a second process off the directory.
    _lock: std::fs::File,
    config: EmbeddedConfig,
    /// Checks the signatures of every checkpoint history at open.
    key: NoteVerifier,
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

impl EmbeddedEngine {
    /// Opens the engine and every tenant already on disk (recovering each). `key` checks the
    /// signatures of the checkpoint histories (the data directory's key,
    /// [`crate::keys::load_or_create_signer`]).
    pub fn open(config: EmbeddedConfig, key: NoteVerifier) -> Result<EmbeddedEngine, StoreError> {
        let tenants_dir = config.data_dir.join("tenants");
        segment::create_dir_durable(&tenants_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        let engine = EmbeddedEngine {
            _lock: lock,
            config,
            key,
            tenants: RwLock::new(HashMap::new()),
        };
        for entry in std::fs::read_dir(&tenants_dir).map_err(StoreError::io("listing tenants"))? {
            let name = entry
                .map_err(StoreError::io("listing tenants"))?
                .file_name();
            if let Some(name) = name.to_str().filter(|n| crate::valid_tenant(n)) {
                engine.tenant(name, true)?;
            }
        }
        Ok(engine)
    }

    /// The directory of `tenant`.
    pub fn tenant_dir(data_dir: &Path, tenant: &str) -> PathBuf {
        data_dir.join("tenants").join(tenant)
    }

    /// The tenant's log, opening (and with `create`, creating) it on first use.
    fn tenant(&self, name: &str, create: bool) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(t) = self.tenants.read().map_err(|_| poisoned())?.get(name) {
            return Ok(Some(t.clone()));
        }
        let dir = Self::tenant_dir(&self.config.data_dir, name);
        if !crate::valid_tenant(name) || (!create && !dir.exists()) {
            return Ok(None);
        }
        let mut tenants = self.tenants.write().map_err(|_| poisoned())?;
        if let Some(t) = tenants.get(name) {
            return Ok(Some(t.clone()));
        }
        // The checkpoint history is read (and its signatures checked) first: the log's recovery
        // and its reads trust its root.
        segment::create_dir_durable(&dir)?;
        let checkpoints = Checkpoints::open(&dir.join("checkpoints.log"), &self.key)?;
        let trusted = checkpoints
            .latest()
            .map(|l| (l.checkpoint.size, l.checkpoint.root));
        let log = TenantLog::open_trusting(&dir, name, self.config.log.clone(), trusted)?;
        check_against_checkpoint(&log, &checkpoints)?;
        let history = trusted.map_or(0, |t| t.0);
        if log.marked() > history {
            let finding = fsck::history_removed(log.marked(), trusted.map(|t| t.0));
            if !self.config.reset_checkpoint_history {
                return Err(StoreError::Damaged(finding));
            }
            tracing::warn!(tenant = name, "{finding}; starting a new checkpoint history as asked (--reset-checkpoint-history)");
        }
        let t = Arc::new(Tenant { log, checkpoints });
        tenants.insert(name.to_string(), t.clone());
        Ok(Some(t))
    }

    fn creating(&self, tenant: &str) -> Result<Arc<Tenant>, StoreError> {
        self.tenant(tenant, true)?
            .ok_or_else(|| StoreError::OutOfRange(format!("invalid tenant `{tenant}`")))
    }

    /// Full segments of `tenant` waiting for the sealer.
    pub fn unsealed(&self, tenant: &str) -> Result<usize, StoreError> {
        Ok(self.tenant(tenant, false)?.map_or(0, |t| t.log.unsealed()))
    }

    /// Deletes and rebuilds the derived state (indexes and tree nodes) of `tenant` in a stopped
    /// store's `data_dir` from its log. Returns the number of events indexed.
    pub fn reindex(data_dir: &Path, tenant: &str) -> Result<u64, StoreError> {
        let dir = Self::tenant_dir(data_dir, tenant);
        let index = dir.join(crate::embedded::index::INDEX_DIR);
        // Hold the index's lock while deleting it: a running server holds it, and then nothing is
        // deleted. The lock file itself stays; it is released just before the rebuild takes it.
        let lock = crate::embedded::index::lock(&index)?;
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
        let before = crate::embedded::fsck::check(&dir, vkey, |_, _| {})?;
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
        let after = crate::embedded::fsck::check(&dir, vkey, |_, _| {})?;
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
}

/// What [`EmbeddedEngine::migrate`] did to one tenant's log.
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

fn poisoned() -> StoreError {
    StoreError::Failed("tenant table lock poisoned".into())
}

impl Engine for EmbeddedEngine {
    type Snapshot = EmbeddedSnapshot;

    fn append(&self, tenant: &str, events: Vec<Event>) -> Result<PendingAppend, StoreError> {
        self.creating(tenant)?.log.append(events)
    }

    fn snapshot(&self, tenant: &str) -> Result<Option<EmbeddedSnapshot>, StoreError> {
        match self.tenant(tenant, false)? {
            Some(t) => Ok(Some(t.log.snapshot()?)),
            None => Ok(None),
        }
    }

    fn latest_checkpoint(&self, tenant: &str) -> Result<Option<SignedCheckpoint>, StoreError> {
        Ok(self
            .tenant(tenant, false)?
            .and_then(|t| t.checkpoints.latest()))
    }

    fn record_checkpoint(&self, tenant: &str, signed: &SignedCheckpoint) -> Result<(), StoreError> {
        let t = self.creating(tenant)?;
        t.checkpoints.record(signed)?;
        let cp = &signed.checkpoint;
        t.log.trust(cp.size, cp.root);
        t.log.mark_checkpoint(cp.size, &signed.note);
        Ok(())
    }

    fn tenants(&self) -> Vec<String> {
        self.tenants
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ledger, Store};
    use uuid::Uuid;
    use veritrail_core::checkpoint::{open_checkpoint, Checkpoint};
    use veritrail_core::note::NoteSigner;

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

    fn append(store: &Ledger<EmbeddedEngine>, tenant: &str, n: usize) {
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
            reset_checkpoint_history: false,
        }
    }

    fn open(data_dir: &Path, key: &NoteSigner) -> Result<Ledger<EmbeddedEngine>, StoreError> {
        let engine = EmbeddedEngine::open(config(data_dir), key.verifier())?;
        Ledger::new(engine, key.clone(), "veritrail")
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
        let tenant_dir = EmbeddedEngine::tenant_dir(dir.path(), "acme");
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
            let old = SignedCheckpoint::sign(cp, &key).expect("signed");
            history.record(&old).expect("recorded");
            log.close();
            assert!(old.note.contains("\u{2014} veritrail "), "{}", old.note);
            old.note
        };
        assert!(opens(&old_note, &legacy));
        assert!(!opens(&old_note, &acme));

        // The store opens it: the legacy signature is the same key's.
        let store = open(dir.path(), &key).expect("opens");
        assert_eq!(
            store.signer("acme").expect("signer").name(),
            "veritrail/acme"
        );
        assert_eq!(store.signer("acme").expect("signer").verifier(), acme);
        let latest = store
            .engine()
            .latest_checkpoint("acme")
            .expect("history")
            .expect("the old checkpoint");
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
        drop(store);

        // Both the old and the new entries stay verifiable, and the history reopens.
        let store = open(dir.path(), &key).expect("reopens");
        let reopened = store
            .engine()
            .latest_checkpoint("acme")
            .expect("history")
            .expect("latest");
        assert_eq!(
            (&reopened.note, &reopened.key_name),
            (&grown.note, &grown.key_name)
        );
        assert!(opens(&old_note, &legacy));
        store.close();
        drop(store);

        // A history the key never signed is refused, whatever name it carries.
        let stranger = NoteSigner::new("veritrail", &[4; 32]).expect("valid name");
        let refused = open(dir.path(), &stranger);
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
        let engine = EmbeddedEngine::open(config(dir.path()), key.verifier()).expect("opens");
        assert!(matches!(
            Ledger::new(engine, key, "audit log"),
            Err(StoreError::Checkpoint(_))
        ));
    }
}
