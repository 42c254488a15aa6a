//! One tenant's log: the writer and indexer threads, startup recovery, and verified reads.
//!
//! Data flow of an append: the request is queued (bounded, see [`LogConfig::max_queued_events`]);
//! the writer thread takes every request waiting, checks idempotency, encodes all new records
//! into one buffer, writes it and `fdatasync`s once for the whole group; only then does it extend
//! the Merkle frontier, record the new durable size, hand the group to the indexer thread and
//! answer the requests. The indexer applies groups to the derived state (several at once when it
//! is behind) and then publishes the new head.
//!
//! So an acknowledgement waits for the log's fsync but not for the index. Reads keep
//! read-your-writes all the same: every read first waits until the derived state covers the log
//! as durable when the read began ([`TenantLog::settled`]), which is at most a few groups away.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use uuid::Uuid;
use veritrail_core::event::{Event, Leaf, Record};
use veritrail_core::hash::{leaf_hash, Hash};
use veritrail_core::merkle::Frontier;

use crate::error::StoreError;
use crate::index::{Index, LeafEntry, Pos};
use crate::segment::{self, Damage, ReadOutcome, RecordKind, HEADER_LEN};

/// Tuning of one log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A new segment is started once the current one is this large.
    pub segment_bytes: u64,
    /// Events waiting for the writer beyond which appends are refused (overload).
    pub max_queued_events: usize,
    /// Most events one group commit takes.
    pub max_group_events: usize,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 64 << 20,
            max_queued_events: 100_000,
            max_group_events: 20_000,
        }
    }
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

/// Groups the writer may hand to the indexer before it waits for it (bounds memory and lag).
const INDEX_QUEUE_GROUPS: usize = 4;

/// Longest a read waits for the derived state to catch up with the durable log.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How far the log is durable, how far the derived state has caught up, and the head it serves.
struct Progress {
    state: Mutex<ProgressState>,
    changed: Condvar,
}

struct ProgressState {
    /// Leaves fsync'd to the log (and acknowledged, or about to be).
    durable: u64,
    /// The published head: leaves in the derived state, and their root.
    head: Head,
    /// Set after a failure that makes further appends unsafe; a restart recovers.
    failed: Option<String>,
}

impl Progress {
    fn new(head: Head) -> Progress {
        Progress {
            state: Mutex::new(ProgressState {
                durable: head.size,
                head,
                failed: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ProgressState> {
        // The state is a few plain values written whole; a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut ProgressState)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    fn fail(&self, why: String) {
        self.update(|s| {
            s.failed.get_or_insert(why);
        });
    }

    /// Waits until the head covers every leaf durable now, and returns it.
    fn settled(&self) -> Result<Head, StoreError> {
        let mut s = self.lock();
        let target = s.durable;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while s.head.size < target {
            if let Some(why) = &s.failed {
                return Err(StoreError::Failed(why.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Failed(format!(
                    "the index is {} events behind the log",
                    target - s.head.size
                )));
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(s.head)
    }
}

/// A durable group on its way into the derived state.
struct IndexJob {
    first_seq: u64,
    leaves: Arc<Vec<NewLeaf>>,
    positions: Vec<Pos>,
    /// Tree nodes the group completed.
    nodes: Vec<(u32, u64, Hash)>,
    /// The head once the group is in.
    head: Head,
}

/// A group handed to the indexer and not yet in the derived state: idempotency checks look here.
struct InFlight {
    first_seq: u64,
    leaves: Arc<Vec<NewLeaf>>,
    ids: HashMap<Uuid, usize>,
}

impl InFlight {
    fn end(&self) -> u64 {
        self.first_seq + self.leaves.len() as u64
    }
}

/// A queued append and where to send its outcome.
struct Request {
    leaves: Vec<NewLeaf>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// Open read handles of segment files.
pub(crate) struct Segments {
    dir: PathBuf,
    files: RwLock<HashMap<u32, Arc<File>>>,
}

impl Segments {
    fn file(&self, ordinal: u32) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self.files.read().map_err(|_| poisoned())?.get(&ordinal) {
            return Ok(f.clone());
        }
        let path = self.dir.join(segment::file_name(ordinal));
        let f = Arc::new(
            File::open(&path).map_err(StoreError::io(format!("opening {}", path.display())))?,
        );
        self.files
            .write()
            .map_err(|_| poisoned())?
            .insert(ordinal, f.clone());
        Ok(f)
    }

    /// Reads the record at `pos`; damage is an error naming the place.
    pub(crate) fn read(&self, pos: Pos) -> Result<segment::RawRecord, StoreError> {
        let file = self.file(pos.ordinal)?;
        let where_ = || {
            format!(
                "segment {} offset {}",
                segment::file_name(pos.ordinal),
                pos.offset
            )
        };
        match segment::read_record_at(&file, pos.offset).map_err(StoreError::io(where_()))? {
            ReadOutcome::Record(r, _) => Ok(r),
            ReadOutcome::End => Err(StoreError::Damaged(format!(
                "{}: record missing (log truncated?)",
                where_()
            ))),
            ReadOutcome::BadChecksum(r, _) => Err(StoreError::Damaged(format!(
                "{} (seq {}): checksum mismatch",
                where_(),
                r.seq
            ))),
            ReadOutcome::Damaged(d) => Err(StoreError::Damaged(format!(
                "{}: {}",
                where_(),
                describe(&d)
            ))),
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Failed("an internal lock was poisoned by a panic".into())
}

/// One tenant's log and everything derived from it.
pub struct TenantLog {
    tenant: String,
    pub(crate) index: Arc<Index>,
    pub(crate) segments: Arc<Segments>,
    progress: Arc<Progress>,
    queue: Mutex<Option<SyncSender<Request>>>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    /// The writer and indexer threads, joined in that order at close.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl TenantLog {
    /// Opens the log in `dir` (creating it), recovers it and starts its writer thread.
    pub fn open(dir: &Path, tenant: &str, config: LogConfig) -> Result<TenantLog, StoreError> {
        let log_dir = dir.join("log");
        segment::create_dir_durable(&log_dir)?;
        let index = Arc::new(Index::open(&dir.join(crate::index::INDEX_DIR))?);
        let segments = Arc::new(Segments {
            dir: log_dir.clone(),
            files: RwLock::new(HashMap::new()),
        });
        let recovered = crate::recovery::recover(&log_dir, &index, &segments, tenant)?;
        let progress = Arc::new(Progress::new(Head {
            size: recovered.frontier.size(),
            root: recovered.frontier.root(),
        }));
        let (tx, rx) = sync_channel(1024);
        let (to_indexer, jobs) = sync_channel(INDEX_QUEUE_GROUPS);
        let queued = Arc::new(AtomicUsize::new(0));
        let indexer = Indexer {
            tenant: tenant.to_string(),
            index: index.clone(),
            progress: progress.clone(),
        };
        let indexer = std::thread::Builder::new()
            .name(format!("veritrail-indexer-{tenant}"))
            .spawn(move || indexer.run(jobs))
            .map_err(StoreError::io("starting the indexer thread"))?;
        let mut writer = Writer {
            tenant: tenant.to_string(),
            dir: log_dir,
            file: recovered.file,
            ordinal: recovered.ordinal,
            seg_len: recovered.seg_len,
            frontier: recovered.frontier,
            index: index.clone(),
            segments: segments.clone(),
            progress: progress.clone(),
            queued: queued.clone(),
            config: config.clone(),
            to_indexer,
            in_flight: VecDeque::new(),
        };
        let writer = std::thread::Builder::new()
            .name(format!("veritrail-writer-{tenant}"))
            .spawn(move || writer.run(rx))
            .map_err(StoreError::io("starting the writer thread"))?;
        Ok(TenantLog {
            tenant: tenant.to_string(),
            index,
            segments,
            progress,
            queue: Mutex::new(Some(tx)),
            queued,
            max_queued: config.max_queued_events,
            threads: Mutex::new(vec![writer, indexer]),
        })
    }

    /// The tree head covering every event acknowledged so far (waits for the derived state to
    /// catch up with the durable log; see the module documentation).
    pub fn head(&self) -> Result<Head, StoreError> {
        self.progress.settled()
    }

    /// A consistent read view of the derived state that covers every event acknowledged so far.
    pub fn index_reader(&self) -> Result<crate::index::IndexReader, StoreError> {
        self.progress.settled()?;
        Ok(self.index.reader()?)
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
        if before > 0 && before + n > self.max_queued {
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
        let sent = queue
            .as_ref()
            .map(|tx| tx.try_send(Request { leaves, reply }));
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

    /// Reads and verifies the event at `seq` (checksum, then leaf hash against the tree).
    pub fn read(
        &self,
        reader: &crate::index::IndexReader,
        seq: u64,
    ) -> Result<StoredEvent, StoreError> {
        read_verified(&self.segments, reader, seq)
    }

    /// Stops the writer after it has finished queued work, and makes derived state durable.
    pub fn close(&self) {
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
    file: File,
    ordinal: u32,
    seg_len: u64,
    frontier: Frontier,
    index: Arc<Index>,
    segments: Arc<Segments>,
    progress: Arc<Progress>,
    queued: Arc<AtomicUsize>,
    config: LogConfig,
    to_indexer: SyncSender<IndexJob>,
    /// Groups handed to the indexer, oldest first, until the head covers them.
    in_flight: VecDeque<InFlight>,
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
        // Dropping the writer closes the indexer's queue; it finishes and makes the state durable.
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let failed = self.progress.lock().failed.clone();
        let ready = match failed {
            Some(why) => Err(StoreError::Failed(why)),
            None => self.read_view(),
        };
        let reader = match ready {
            Ok(r) => r,
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
        for req in group {
            match self.plan(req.leaves, &reader, &mut new_leaves, &mut ids) {
                Ok(receipts) => planned.push(Planned {
                    reply: req.reply,
                    receipts,
                }),
                Err(e) => {
                    let _ = req.reply.send(Err(e));
                }
            }
        }
        drop(reader);
        let result = if new_leaves.is_empty() {
            Ok(())
        } else {
            self.persist(new_leaves, ids)
        };
        let tree_size = self.frontier.size();
        for p in planned {
            let outcome = match &result {
                Ok(()) => Ok(Appended {
                    receipts: p.receipts,
                    tree_size,
                }),
                Err(e) => Err(StoreError::Failed(e.to_string())),
            };
            let _ = p.reply.send(outcome);
        }
    }

    /// A view of the derived state for idempotency checks. Groups the view covers leave
    /// `in_flight`; the rest are looked up there. The head is read before the view is taken, so
    /// every group dropped is in the view.
    fn read_view(&mut self) -> Result<crate::index::IndexReader, StoreError> {
        let indexed = self.progress.lock().head.size;
        let reader = self.index.reader()?;
        while self.in_flight.front().is_some_and(|f| f.end() <= indexed) {
            self.in_flight.pop_front();
        }
        Ok(reader)
    }

    /// Assigns sequence numbers to one request's new events, or fails the whole request.
    /// `group` holds the new leaves of earlier requests of this group and `ids` maps their
    /// event ids to positions in it; on success this request's leaves are added to both.
    fn plan(
        &self,
        leaves: Vec<NewLeaf>,
        reader: &crate::index::IndexReader,
        group: &mut Vec<NewLeaf>,
        ids: &mut HashMap<Uuid, usize>,
    ) -> Result<Vec<Receipt>, StoreError> {
        let first_new = group.len();
        let result = self.plan_into(leaves, reader, group, ids);
        if result.is_err() {
            // Atomic requests: forget this request's leaves.
            for l in group.drain(first_new..) {
                ids.remove(&l.event.event_id);
            }
        }
        result
    }

    /// The seq, leaf hash and sameness of content of an event id already recorded: in this
    /// group, in a group on its way to the index, or in the index.
    fn find(
        &self,
        new: &NewLeaf,
        reader: &crate::index::IndexReader,
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
        for f in &self.in_flight {
            if let Some(&k) = f.ids.get(&id) {
                let l = &f.leaves[k];
                return Ok(Some((f.first_seq + k as u64, l.leaf, same(l))));
            }
        }
        let Some(seq) = reader.seq_of(&id)? else {
            return Ok(None);
        };
        let stored = read_verified(&self.segments, reader, seq)?;
        let bytes = veritrail_core::canonical::to_vec(stored.leaf()?.event())
            .map_err(|e| StoreError::Damaged(e.to_string()))?;
        Ok(Some((seq, stored.leaf_hash, bytes == new.event_bytes)))
    }

    fn plan_into(
        &self,
        leaves: Vec<NewLeaf>,
        reader: &crate::index::IndexReader,
        group: &mut Vec<NewLeaf>,
        ids: &mut HashMap<Uuid, usize>,
    ) -> Result<Vec<Receipt>, StoreError> {
        let size = self.frontier.size();
        let mut receipts = Vec::with_capacity(leaves.len());
        for (i, new) in leaves.into_iter().enumerate() {
            let id = new.event.event_id;
            match self.find(&new, reader, group, ids)? {
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

    /// Writes and fsyncs the group's records, extends the tree, and hands the group to the
    /// indexer. `ids` maps the leaves' event ids to their places in `leaves`.
    fn persist(
        &mut self,
        leaves: Vec<NewLeaf>,
        ids: HashMap<Uuid, usize>,
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
        let started = Instant::now();
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            self.undo_write(&e);
            return Err(StoreError::io("appending to the log")(e));
        }
        metrics::histogram!("veritrail_fsync_seconds").record(started.elapsed().as_secs_f64());
        self.seg_len += buf.len() as u64;
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
        self.progress.update(|s| s.durable = head.size);
        let leaves = Arc::new(leaves);
        self.in_flight.push_back(InFlight {
            first_seq,
            leaves: leaves.clone(),
            ids,
        });
        let job = IndexJob {
            first_seq,
            leaves,
            positions,
            nodes,
            head,
        };
        // Blocks while the indexer is `INDEX_QUEUE_GROUPS` behind: that is the backpressure.
        if self.to_indexer.send(job).is_err() {
            // The events are durable; only the derived state stopped. A restart replays it.
            self.progress
                .fail("the indexer thread stopped; restart to rebuild the index".into());
        }
        Ok(())
    }

    /// After a failed write, cuts the segment back to its last durable length.
    fn undo_write(&mut self, cause: &std::io::Error) {
        let undone = self
            .file
            .set_len(self.seg_len)
            .and_then(|()| self.file.sync_all());
        if let Err(e) = undone {
            self.progress.fail(format!(
                "write failed ({cause}) and the partial write could not be removed ({e})"
            ));
            tracing::error!(tenant = %self.tenant, error = %e, "log is in a failed state");
        } else {
            tracing::error!(tenant = %self.tenant, error = %cause, "append failed; the partial write was removed");
        }
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        let ordinal = self.ordinal + 1;
        let file = segment::create(&self.dir, ordinal, self.frontier.size())?;
        self.file = file;
        self.ordinal = ordinal;
        self.seg_len = HEADER_LEN;
        Ok(())
    }
}

/// State owned by the indexer thread.
struct Indexer {
    tenant: String,
    index: Arc<Index>,
    progress: Arc<Progress>,
}

impl Indexer {
    fn run(self, jobs: Receiver<IndexJob>) {
        while let Ok(first) = jobs.recv() {
            // When behind, apply every waiting group in one batch.
            let mut batch = vec![first];
            batch.extend(jobs.try_iter());
            if self.progress.lock().failed.is_none() {
                self.apply(&batch);
            }
        }
        if self.progress.lock().failed.is_none() {
            if let Err(e) = self.index.sync() {
                tracing::error!(tenant = %self.tenant, error = %e, "could not make the derived state durable at shutdown");
            }
        }
    }

    fn apply(&self, batch: &[IndexJob]) {
        let entries: Vec<LeafEntry<'_>> = batch
            .iter()
            .flat_map(|job| {
                job.leaves
                    .iter()
                    .zip(&job.positions)
                    .enumerate()
                    .map(|(k, (l, pos))| LeafEntry {
                        seq: job.first_seq + k as u64,
                        pos: *pos,
                        event: &l.event,
                        ingested_at_us: l.ingested_at_us,
                    })
            })
            .collect();
        let nodes: Vec<_> = batch.iter().flat_map(|j| j.nodes.iter().copied()).collect();
        let Some(head) = batch.last().map(|j| j.head) else {
            return;
        };
        let started = Instant::now();
        let applied = self.index.apply(&entries, &nodes, head.size, false);
        metrics::histogram!("veritrail_index_update_seconds")
            .record(started.elapsed().as_secs_f64());
        match applied {
            Ok(missing) => {
                metrics::counter!("veritrail_producer_missing_events_total", "tenant" => self.tenant.clone())
                    .increment(missing);
                metrics::gauge!("veritrail_tree_size", "tenant" => self.tenant.clone())
                    .set(head.size as f64);
                self.progress.update(|s| s.head = head);
            }
            Err(e) => {
                // The events are durable in the log; the derived state is behind and a restart
                // replays it. Refuse further appends until then rather than serve a stale index.
                tracing::error!(tenant = %self.tenant, error = %e, "index update failed; appends stop until restart");
                self.progress
                    .fail(format!("updating the index failed: {e}"));
            }
        }
    }
}

/// The current time, truncated to the microsecond as stored.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Opens a segment for appending at its end.
pub(crate) fn open_for_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(StoreError::io(format!("opening {}", path.display())))
}

/// Reads the event at `seq` and serves it only if its checksum, its `seq` and its leaf hash (against
/// the tree's level-0 node) all hold.
fn read_verified(
    segments: &Segments,
    reader: &crate::index::IndexReader,
    seq: u64,
) -> Result<StoredEvent, StoreError> {
    let pos = reader.position(seq)?.ok_or_else(|| {
        StoreError::Damaged(format!("seq {seq}: no position in the derived state"))
    })?;
    let raw = segments.read(pos)?;
    if raw.seq != seq {
        return Err(StoreError::Damaged(format!(
            "seq {seq}: the record at its position holds seq {}",
            raw.seq
        )));
    }
    let leaf_hash = leaf_hash(&raw.payload);
    if leaf_hash != reader.nodes()?(0, seq)? {
        return Err(StoreError::Damaged(format!(
            "seq {seq}: stored bytes do not match the leaf hash in the tree"
        )));
    }
    Ok(StoredEvent {
        seq,
        leaf_hash,
        bytes: raw.payload,
    })
}

/// Describes damage for messages.
pub(crate) fn describe(d: &Damage) -> String {
    match d {
        Damage::Incomplete => "record runs past the end of the file".into(),
        Damage::Zeroed => "zero bytes where a record should start".into(),
        Damage::Corrupt(why) => why.clone(),
    }
}
