//! One tenant's log: the writer and sealer threads, startup recovery, and verified reads.
//!
//! Data flow of an append: the request is queued (bounded, see [`LogConfig::max_queued_events`]);
//! the writer thread takes every request waiting, checks idempotency, encodes all new records
//! into one buffer, writes it and `fdatasync`s once for the whole group; only then does it extend
//! the Merkle frontier, add the group to the in-memory index of the segment (a few map inserts
//! per event), publish the new head and answer the requests. So a read that starts after an
//! acknowledgement sees the event.
//!
//! When a segment is full the writer starts the next one and hands the full one to the sealer
//! thread, which compresses it and writes its index file ([`crate::embedded::segments`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;
use veritrail_core::event::{Event, Record};
use veritrail_core::hash::{leaf_hash, Hash};
use veritrail_core::merkle::Frontier;

use super::medium::{LogFile, Os, SharedMedium};
use super::snapshot::EmbeddedSnapshot;
use crate::embedded::index::{Index, IndexReader, LeafEntry, Pos};
use crate::embedded::segment::{self, Damage, RecordKind, HEADER_LEN};
use crate::embedded::segments::{SealJob, Sealer, Segments};
use crate::engine::{Appended, Head, Receipt};
use crate::error::StoreError;
use crate::verify::{find_verified, RootVerifier};

/// Tuning of one log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A new segment is started once the current one is this large.
    pub segment_bytes: u64,
    /// Events waiting for the writer beyond which appends are refused (overload).
    pub max_queued_events: usize,
    /// Most events one group commit takes.
    pub max_group_events: usize,
    /// Bytes of decompressed sealed blocks kept for reads.
    pub block_cache_bytes: u64,
    /// Full segments waiting for the sealer beyond which appends are refused (overload): each
    /// keeps its index in memory until it is sealed, so this bounds memory when ingest outruns
    /// sealing.
    pub max_unsealed_segments: usize,
    /// Where the segments are appended: the real file system, or a fault-injecting one in tests.
    pub medium: SharedMedium,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 64 << 20,
            max_queued_events: 100_000,
            max_group_events: 20_000,
            block_cache_bytes: 16 << 20,
            max_unsealed_segments: 4,
            medium: Arc::new(Os),
        }
    }
}

/// The head the log serves, and whether appends stopped.
struct Progress {
    state: Mutex<ProgressState>,
}

struct ProgressState {
    /// The published head: leaves durable and indexed, and their root.
    head: Head,
    /// Set after a failure that makes further appends unsafe; a restart recovers.
    failed: Option<String>,
    /// The last append's failure (a full disk, an I/O error), until an append succeeds.
    append_error: Option<String>,
}

impl Progress {
    fn new(head: Head) -> Progress {
        Progress {
            state: Mutex::new(ProgressState {
                head,
                failed: None,
                append_error: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ProgressState> {
        // The state is a few plain values written whole; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, why: String) {
        self.lock().failed.get_or_insert(why);
    }
}

/// A queued append and where to send its outcome.
struct Request {
    leaves: Vec<NewLeaf>,
    /// A signed checkpoint to record in the log: (tree size, note).
    marker: Option<(u64, Vec<u8>)>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

fn poisoned() -> StoreError {
    StoreError::Failed("an internal lock was poisoned by a panic".into())
}

/// One tenant's log and everything derived from it.
pub struct TenantLog {
    tenant: String,
    log_dir: PathBuf,
    /// The largest tree size a checkpoint recorded in the log commits to (0: none).
    marked: Arc<std::sync::atomic::AtomicU64>,
    verifier: Arc<RootVerifier>,
    pub(crate) index: Arc<Index>,
    pub(crate) segments: Arc<Segments>,
    progress: Arc<Progress>,
    queue: Mutex<Option<SyncSender<Request>>>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    max_unsealed: usize,
    /// What the readiness check probes.
    medium: SharedMedium,
    /// Tells the sealer to leave its backlog at close.
    stop_sealing: Arc<AtomicBool>,
    /// The writer and sealer threads, joined in that order at close.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl TenantLog {
    /// Opens the log in `dir` (creating it), recovers it and starts its writer and sealer threads.
    pub fn open(dir: &Path, tenant: &str, config: LogConfig) -> Result<TenantLog, StoreError> {
        TenantLog::open_trusting(dir, tenant, config, None)
    }

    /// Like [`TenantLog::open`], with the signed checkpoint `trusted` (size, root) whose
    /// signature the caller checked: startup recomputes the tree from the records past it, and
    /// sealed events are checked against its root.
    pub fn open_trusting(
        dir: &Path,
        tenant: &str,
        config: LogConfig,
        trusted: Option<(u64, Hash)>,
    ) -> Result<TenantLog, StoreError> {
        let log_dir = dir.join("log");
        segment::create_dir_durable(&log_dir)?;
        let index = Arc::new(Index::open(&dir.join(crate::embedded::index::INDEX_DIR))?);
        let segments = Arc::new(Segments::new(&log_dir, config.block_cache_bytes));
        let recovered = crate::embedded::recovery::recover(&log_dir, &index, trusted.map(|t| t.0))?;
        let verifier = Arc::new(RootVerifier::default());
        let marked = Arc::new(std::sync::atomic::AtomicU64::new(recovered.marked));
        if let Some((size, root)) = trusted {
            verifier.trust(size, root);
        }
        let (to_sealer, to_seal) = channel();
        let stop_sealing = Arc::new(AtomicBool::new(false));
        let sealer = Sealer {
            tenant: tenant.to_string(),
            segments: segments.clone(),
            index: index.clone(),
            stop: stop_sealing.clone(),
        };
        let sealer = std::thread::Builder::new()
            .name(format!("veritrail-sealer-{tenant}"))
            .spawn(move || sealer.run(to_seal))
            .map_err(StoreError::io("starting the sealer thread"))?;
        // Full segments a previous run did not seal (or that an older version wrote).
        for job in recovered.unsealed {
            let _ = to_sealer.send(job);
        }
        let progress = Arc::new(Progress::new(Head {
            size: recovered.frontier.size(),
            root: recovered.frontier.root(),
        }));
        let (tx, rx) = sync_channel(1024);
        let queued = Arc::new(AtomicUsize::new(0));
        let mut writer = Writer {
            tenant: tenant.to_string(),
            file: config.medium.log_file(
                &log_dir.join(segment::file_name(recovered.ordinal)),
                recovered.file,
            ),
            dir: log_dir,
            ordinal: recovered.ordinal,
            seg_len: recovered.seg_len,
            frontier: recovered.frontier,
            index: index.clone(),
            segments: segments.clone(),
            verifier: verifier.clone(),
            marked: marked.clone(),
            progress: progress.clone(),
            queued: queued.clone(),
            config: config.clone(),
            to_sealer,
        };
        let writer = std::thread::Builder::new()
            .name(format!("veritrail-writer-{tenant}"))
            .spawn(move || writer.run(rx))
            .map_err(StoreError::io("starting the writer thread"))?;
        Ok(TenantLog {
            tenant: tenant.to_string(),
            log_dir: dir.join("log"),
            marked,
            verifier,
            index,
            segments,
            progress,
            queue: Mutex::new(Some(tx)),
            queued,
            max_queued: config.max_queued_events,
            max_unsealed: config.max_unsealed_segments,
            medium: config.medium.clone(),
            stop_sealing,
            threads: Mutex::new(vec![writer, sealer]),
        })
    }

    /// The tree head covering every event acknowledged so far.
    pub fn head(&self) -> Result<Head, StoreError> {
        Ok(self.progress.lock().head)
    }

    /// Whether the log takes appends: `Err` says why not. After a failed append, a test write
    /// tells whether the cause (a full disk) is gone, so that readiness comes back without an
    /// append to prove it.
    pub fn ready(&self) -> Result<(), String> {
        let (failed, append_error) = {
            let p = self.progress.lock();
            (p.failed.clone(), p.append_error.clone())
        };
        if let Some(why) = failed {
            return Err(format!(
                "appends stopped: {why}; restart after fixing the cause"
            ));
        }
        let Some(why) = append_error else {
            return Ok(());
        };
        match self.medium.probe(&self.log_dir) {
            Ok(()) => {
                let mut p = self.progress.lock();
                if p.append_error.as_ref() == Some(&why) {
                    p.append_error = None;
                }
                Ok(())
            }
            Err(e) => Err(format!(
                "appends are failing ({why}); a test write fails too ({e})"
            )),
        }
    }

    /// A consistent read view of the derived state that covers every event acknowledged so far.
    pub fn index_reader(&self) -> Result<IndexReader, StoreError> {
        self.index.reader()
    }

    /// A read view of the log covering every event acknowledged so far.
    pub fn snapshot(&self) -> Result<EmbeddedSnapshot, StoreError> {
        Ok(EmbeddedSnapshot {
            reader: self.index.reader()?,
            segments: self.segments.clone(),
        })
    }

    /// Events waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues `events` for one atomic, durable append. The receiver resolves after fsync.
    pub fn append(
        &self,
        events: Vec<Event>,
    ) -> Result<oneshot::Receiver<Result<Appended, StoreError>>, StoreError> {
        let n = events.len();
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        let sealing_behind = self.index.unsealed() > self.max_unsealed;
        if sealing_behind || (before > 0 && before + n > self.max_queued) {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            return Err(StoreError::Overloaded { queued: before });
        }
        // The per-event work that needs no log state (canonical bytes, hashing) happens here, in
        // the caller's thread and in parallel across requests, not in the single writer. So
        // `ingested_at` is when the request arrived, not when its group was committed.
        let ingested_at = now_micros();
        let prepared: Result<Vec<_>, _> = events
            .into_iter()
            .map(|e| NewLeaf::prepare(e, &self.tenant, &ingested_at))
            .collect();
        let leaves = prepared.inspect_err(|_| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
        })?;
        let (reply, rx) = oneshot::channel();
        let queue = self.queue.lock().map_err(|_| poisoned())?;
        let sent = queue.as_ref().map(|tx| {
            tx.try_send(Request {
                leaves,
                marker: None,
                reply,
            })
        });
        match sent {
            Some(Ok(())) => Ok(rx),
            Some(Err(std::sync::mpsc::TrySendError::Full(_))) => {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                Err(StoreError::Overloaded { queued: before })
            }
            _ => {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                Err(StoreError::Closed)
            }
        }
    }

    /// Records a signed checkpoint (its note, committing to `size` leaves) in the log itself, in
    /// the writer's next group: the log then tells that its checkpoint history reached `size`,
    /// even if `checkpoints.log` is lost. It does not wait: the checkpoint is durable in
    /// `checkpoints.log` already, and a marker that a crash loses is one the next checkpoint
    /// writes again.
    pub fn mark_checkpoint(&self, size: u64, note: &str) {
        let (reply, _) = oneshot::channel();
        let request = Request {
            leaves: Vec::new(),
            marker: Some((size, note.as_bytes().to_vec())),
            reply,
        };
        let sent = self
            .queue
            .lock()
            .ok()
            .and_then(|q| q.as_ref().map(|tx| tx.try_send(request).is_ok()));
        if sent != Some(true) {
            tracing::warn!(tenant = %self.tenant, size, "the checkpoint could not be recorded in the log now; the next one will be");
        }
    }

    /// Full segments not sealed yet (the sealer works through them in the background).
    pub fn unsealed(&self) -> usize {
        self.index.unsealed()
    }

    /// The largest tree size a checkpoint recorded in the log commits to (0: none): the
    /// checkpoint history must reach at least that far.
    pub fn marked(&self) -> u64 {
        self.marked.load(Ordering::Acquire)
    }

    /// Trusts the root of a signed checkpoint: sealed events are checked against it.
    pub fn trust(&self, size: u64, root: Hash) {
        self.verifier.trust(size, root);
    }

    /// Stops the writer after it has finished queued work and makes the tree's nodes durable; the
    /// sealer finishes the segment in hand and leaves the rest for the next start.
    pub fn close(&self) {
        self.stop_sealing.store(true, Ordering::Release);
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for TenantLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// State owned by the writer thread.
struct Writer {
    tenant: String,
    dir: PathBuf,
    file: Box<dyn LogFile>,
    ordinal: u32,
    seg_len: u64,
    frontier: Frontier,
    index: Arc<Index>,
    segments: Arc<Segments>,
    verifier: Arc<RootVerifier>,
    marked: Arc<std::sync::atomic::AtomicU64>,
    progress: Arc<Progress>,
    queued: Arc<AtomicUsize>,
    config: LogConfig,
    /// Full segments go to the sealer.
    to_sealer: Sender<SealJob>,
}

/// An event of the current group that is new to the log.
struct NewLeaf {
    event: Event,
    /// Canonical bytes of the event alone: equal bytes mean the same content (idempotency).
    event_bytes: Vec<u8>,
    /// The leaf input: canonical bytes of the whole leaf document.
    record_bytes: Vec<u8>,
    leaf: Hash,
    ingested_at_us: i64,
}

impl NewLeaf {
    fn prepare(
        event: Event,
        tenant: &str,
        ingested_at: &DateTime<Utc>,
    ) -> Result<NewLeaf, StoreError> {
        // Validation already refused what has no canonical form; this cannot fail for an `Event`.
        let event_bytes = event
            .canonical_bytes()
            .map_err(|e| StoreError::Damaged(e.to_string()))?;
        let record_bytes = Record::canonical_bytes_around(&event_bytes, tenant, ingested_at);
        let leaf = leaf_hash(&record_bytes);
        Ok(NewLeaf {
            event,
            event_bytes,
            record_bytes,
            leaf,
            ingested_at_us: ingested_at.timestamp_micros(),
        })
    }
}

/// One request's plan within a group.
struct Planned {
    reply: oneshot::Sender<Result<Appended, StoreError>>,
    receipts: Vec<Receipt>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            let mut n = group[0].leaves.len();
            while n < self.config.max_group_events {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.leaves.len();
                        group.push(r);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            metrics::histogram!("veritrail_group_commit_events").record(n as f64);
            let started = Instant::now();
            self.commit_group(group);
            metrics::histogram!("veritrail_group_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            self.queued.fetch_sub(n, Ordering::AcqRel);
        }
        if self.progress.lock().failed.is_none() {
            if let Err(e) = self.index.sync() {
                tracing::error!(tenant = %self.tenant, error = %e, "could not make the tree's nodes durable at shutdown");
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let failed = self.progress.lock().failed.clone();
        let ready = match failed {
            Some(why) => Err(StoreError::Failed(why)),
            None => Ok(()),
        };
        let view = match ready.and_then(|()| self.index.reader()) {
            Ok(reader) => EmbeddedSnapshot {
                reader,
                segments: self.segments.clone(),
            },
            Err(e) => {
                for r in group {
                    let _ = r.reply.send(Err(StoreError::Failed(e.to_string())));
                }
                return;
            }
        };
        let mut new_leaves: Vec<NewLeaf> = Vec::new();
        let mut ids = HashMap::new();
        let mut planned = Vec::with_capacity(group.len());
        let mut markers = Vec::new();
        for req in group {
            markers.extend(req.marker);
            match self.plan(req.leaves, &view, &mut new_leaves, &mut ids) {
                Ok(receipts) => planned.push(Planned {
                    reply: req.reply,
                    receipts,
                }),
                Err(e) => {
                    let _ = req.reply.send(Err(e));
                }
            }
        }
        drop(view);
        let result = if new_leaves.is_empty() && markers.is_empty() {
            Ok(())
        } else {
            self.persist(new_leaves, &markers)
        };
        let tree_size = self.frontier.size();
        for p in planned {
            let outcome = match &result {
                Ok(()) => Ok(Appended {
                    receipts: p.receipts,
                    tree_size,
                }),
                // A write the disk refused leaves the log as it was: the request may be retried.
                Err(StoreError::Unwritable(why)) => Err(StoreError::Unwritable(why.clone())),
                Err(StoreError::Failed(why)) => Err(StoreError::Failed(why.clone())),
                Err(e) => Err(StoreError::Failed(e.to_string())),
            };
            let _ = p.reply.send(outcome);
        }
    }

    /// Assigns sequence numbers to one request's new events, or fails the whole request.
    /// `group` holds the new leaves of earlier requests of this group and `ids` maps their
    /// event ids to positions in it; on success this request's leaves are added to both.
    fn plan(
        &self,
        leaves: Vec<NewLeaf>,
        view: &EmbeddedSnapshot,
        group: &mut Vec<NewLeaf>,
        ids: &mut HashMap<Uuid, usize>,
    ) -> Result<Vec<Receipt>, StoreError> {
        let first_new = group.len();
        let result = self.plan_into(leaves, view, group, ids);
        if result.is_err() {
            // Atomic requests: forget this request's leaves.
            for l in group.drain(first_new..) {
                ids.remove(&l.event.event_id);
            }
        }
        result
    }

    /// The seq, leaf hash and sameness of content of an event id already recorded: in this
    /// group, or in the index.
    fn find(
        &self,
        new: &NewLeaf,
        view: &EmbeddedSnapshot,
        group: &[NewLeaf],
        ids: &HashMap<Uuid, usize>,
    ) -> Result<Option<(u64, Hash, bool)>, StoreError> {
        let id = new.event.event_id;
        let same = |l: &NewLeaf| l.event_bytes == new.event_bytes;
        if let Some(&k) = ids.get(&id) {
            return Ok(Some((
                self.frontier.size() + k as u64,
                group[k].leaf,
                same(&group[k]),
            )));
        }
        if new.event.fresh_id {
            // This server made the id moments ago: no stored event can have it.
            return Ok(None);
        }
        let Some(stored) = find_verified(view, &self.verifier, &id)? else {
            return Ok(None);
        };
        let seq = stored.seq;
        let bytes = veritrail_core::canonical::to_vec(stored.leaf()?.event())
            .map_err(|e| StoreError::Damaged(e.to_string()))?;
        Ok(Some((seq, stored.leaf_hash, bytes == new.event_bytes)))
    }

    fn plan_into(
        &self,
        leaves: Vec<NewLeaf>,
        view: &EmbeddedSnapshot,
        group: &mut Vec<NewLeaf>,
        ids: &mut HashMap<Uuid, usize>,
    ) -> Result<Vec<Receipt>, StoreError> {
        let size = self.frontier.size();
        let mut receipts = Vec::with_capacity(leaves.len());
        for (i, new) in leaves.into_iter().enumerate() {
            let id = new.event.event_id;
            match self.find(&new, view, group, ids)? {
                Some((seq, leaf, true)) => receipts.push(Receipt {
                    event_id: id,
                    seq,
                    leaf_hash: leaf,
                    duplicate: true,
                }),
                Some((_, _, false)) => {
                    return Err(StoreError::Conflict {
                        index: i,
                        event_id: id,
                    })
                }
                None => {
                    let seq = size + group.len() as u64;
                    receipts.push(Receipt {
                        event_id: id,
                        seq,
                        leaf_hash: new.leaf,
                        duplicate: false,
                    });
                    ids.insert(id, group.len());
                    group.push(new);
                }
            }
        }
        Ok(receipts)
    }

    /// Writes and fsyncs the group's records (its events, then the checkpoint `markers`),
    /// extends the tree and indexes the events.
    fn persist(
        &mut self,
        leaves: Vec<NewLeaf>,
        markers: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        if self.seg_len >= self.config.segment_bytes {
            self.rotate()?;
        }
        let first_seq = self.frontier.size();
        let mut buf = Vec::with_capacity(leaves.iter().map(|l| l.record_bytes.len() + 17).sum());
        let mut positions = Vec::with_capacity(leaves.len());
        for (k, l) in leaves.iter().enumerate() {
            positions.push(Pos {
                ordinal: self.ordinal,
                offset: self.seg_len + buf.len() as u64,
            });
            segment::encode_record(
                RecordKind::Event,
                first_seq + k as u64,
                &l.record_bytes,
                &mut buf,
            );
        }
        for (size, note) in markers {
            segment::encode_record(RecordKind::Checkpoint, *size, note, &mut buf);
        }
        let started = Instant::now();
        if let Err(e) = self.file.append(&buf).and_then(|()| self.file.sync_data()) {
            let why = format!("writing {}: {e}", segment::file_name(self.ordinal));
            if let Err(stopped) = self.undo_write(&e) {
                // The request's records may still be in the file, and a restart may keep them:
                // the answer must not say that nothing was stored.
                return Err(StoreError::Failed(stopped));
            }
            self.progress.lock().append_error = Some(why.clone());
            return Err(StoreError::Unwritable(why));
        }
        metrics::histogram!("veritrail_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.seg_len += buf.len() as u64;
        if let Some(size) = markers.iter().map(|m| m.0).max() {
            self.index.mark(size)?;
            self.marked.fetch_max(size, Ordering::AcqRel);
        }
        let mut nodes = Vec::with_capacity(leaves.len() * 2);
        for l in &leaves {
            self.frontier.append(l.leaf, |level, index, hash| {
                nodes.push((level, index, *hash))
            });
        }
        let head = Head {
            size: self.frontier.size(),
            root: self.frontier.root(),
        };
        let entries: Vec<LeafEntry<'_>> = leaves
            .iter()
            .zip(&positions)
            .enumerate()
            .map(|(k, (l, pos))| LeafEntry {
                seq: first_seq + k as u64,
                pos: *pos,
                event: &l.event,
                ingested_at_us: l.ingested_at_us,
                leaf: l.leaf,
            })
            .collect();
        let started = Instant::now();
        let applied = self.index.apply(&entries, &nodes, head);
        metrics::histogram!("veritrail_index_update_seconds")
            .record(started.elapsed().as_secs_f64());
        match applied {
            Ok(missing) => {
                metrics::counter!("veritrail_producer_missing_events_total", "tenant" => self.tenant.clone())
                    .increment(missing);
                metrics::gauge!("veritrail_tree_size", "tenant" => self.tenant.clone())
                    .set(head.size as f64);
                let mut p = self.progress.lock();
                p.head = head;
                p.append_error = None;
            }
            Err(StoreError::Unwritable(why)) => {
                // The events are indexed and acknowledged; their tree nodes wait in memory until
                // the disk takes them.
                tracing::error!(tenant = %self.tenant, error = %why, "tree nodes could not be written; they are kept in memory");
                let mut p = self.progress.lock();
                p.head = head;
                p.append_error = Some(why);
            }
            Err(e) => {
                // The events are durable in the log and are acknowledged; the derived state is
                // behind and a restart rebuilds it. Refuse further appends until then rather than
                // serve a stale index.
                tracing::error!(tenant = %self.tenant, error = %e, "index update failed; appends stop until restart");
                self.progress
                    .fail(format!("updating the index failed: {e}"));
            }
        }
        Ok(())
    }

    /// After a failed write, cuts the segment back to its last durable length. When even that
    /// fails, the log stops (until a restart) and `Err` says why.
    fn undo_write(&mut self, cause: &std::io::Error) -> Result<(), String> {
        match self.file.truncate(self.seg_len) {
            Ok(()) => {
                tracing::error!(tenant = %self.tenant, error = %cause, "append failed; the partial write was removed");
                Ok(())
            }
            Err(e) => {
                let why = format!(
                    "write failed ({cause}) and the partial write could not be removed ({e})"
                );
                self.progress.fail(why.clone());
                tracing::error!(tenant = %self.tenant, error = %e, "log is in a failed state");
                Err(why)
            }
        }
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        let ordinal = self.ordinal + 1;
        let first_seq = self.frontier.size();
        // The tree nodes are made durable first, so that after a crash only the newest segment
        // has leaves whose nodes must be recomputed. Nothing changes until both the sync and the
        // new file succeed, so that a full disk leaves the writer where it was.
        self.index.sync()?;
        let file = self
            .config
            .medium
            .create_segment(&self.dir, ordinal, first_seq)
            .map_err(|e| {
                let _ = std::fs::remove_file(self.dir.join(segment::file_name(ordinal)));
                StoreError::Unwritable(format!("starting segment {ordinal}: {e}"))
            })?;
        let (entries, producers) = self.index.rotate(ordinal, first_seq)?;
        self.file = file;
        let full = std::mem::replace(&mut self.ordinal, ordinal);
        self.seg_len = HEADER_LEN;
        // A sealer that stopped leaves the segment as appended; the next start seals it.
        let _ = self.to_sealer.send(SealJob {
            ordinal: full,
            entries,
            producers,
        });
        Ok(())
    }
}

/// The current time, truncated to the microsecond as stored.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Describes damage for messages.
pub(crate) fn describe(d: &Damage) -> String {
    match d {
        Damage::Incomplete => "record runs past the end of the file".into(),
        Damage::Zeroed => "zero bytes where a record should start".into(),
        Damage::Corrupt(why) => why.clone(),
    }
}
