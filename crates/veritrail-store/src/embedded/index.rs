//! Derived state: an index per segment, and the Merkle tree's nodes.
//!
//! Every sealed segment has an immutable index file written once when it is sealed
//! ([`crate::embedded::seg_index`]); the segment being appended to, and a full one until its file is
//! written, are indexed in memory ([`crate::embedded::entries`]), and that index is rebuilt from the log at
//! startup. There is no global index that every event writes into: an append adds a few entries in
//! memory, and a lookup asks each segment, skipping those whose time range or filter rules it out.
//!
//! The tree's perfect nodes are in fixed-width files ([`crate::embedded::flat`]), written as the writer
//! completes them and made durable at every segment rotation and at shutdown; `tree.meta`
//! records how many leaves they cover durably, and startup recomputes the nodes of the leaves
//! after that from the log.
//!
//! Everything here is derived from the log: `veritrail reindex` deletes it and startup rebuilds
//! it.

use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use uuid::Uuid;
use veritrail_core::event::{Event, EventSummary};
use veritrail_core::hash::Hash;
use veritrail_core::query::{Filter, TypeMatch};

use crate::embedded::entries::{Entries, ALL};
use crate::embedded::flat::{self, FlatFiles};
use crate::embedded::seg_index::{PostingRun, RunBounds, SegmentIndex};
pub use crate::engine::{Head, NodeError, SortKey};
use crate::error::StoreError;
use crate::producers::ProducerStatus;

/// Directory of the index inside a tenant directory (its lock file is `index.lock`).
pub const INDEX_DIR: &str = "index";

/// File that records how many leaves the tree's node files hold durably.
const TREE_META: &str = "tree.meta";
const TREE_META_MAGIC: [u8; 8] = *b"VTTREE\0\x01";

/// Fields with a secondary index, by their one-byte code. `event_type` is 0.
pub const INDEXED_FIELDS: [&str; 7] = [
    "event_type",
    "correlation_id",
    "resource_id",
    "actor_id",
    "producer_id",
    "namespace",
    "event_outcome",
];

/// Where a record sits in a segment as appended: segment ordinal and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub ordinal: u32,
    pub offset: u64,
}

/// Where the record of a seq is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// At this position of a segment (as appended, or sealed since).
    At(Pos),
    /// In this sealed segment, found by seq through its block index.
    Sealed(u32),
}

/// One leaf's derived entries.
pub struct LeafEntry<'a> {
    pub seq: u64,
    pub pos: Pos,
    pub event: &'a Event,
    /// When the server recorded the event, µs since the epoch.
    pub ingested_at_us: i64,
    pub leaf: Hash,
}

/// What the index keeps of an event: the typed [`Event`] at ingest, the [`EventSummary`] read
/// back from stored bytes.
pub trait Indexed {
    fn id(&self) -> Uuid;
    /// Event time, µs since the epoch.
    fn time_us(&self) -> i64;
    /// The value of an indexed field.
    fn field(&self, name: &str) -> Option<&str>;
    /// The producer's id and sequence number, when the event has both.
    fn producer(&self) -> Option<(&str, u64)>;
}

impl Indexed for Event {
    fn id(&self) -> Uuid {
        self.event_id
    }
    fn time_us(&self) -> i64 {
        self.event_timestamp.timestamp_micros()
    }
    fn field(&self, name: &str) -> Option<&str> {
        Event::field(self, name)
    }
    fn producer(&self) -> Option<(&str, u64)> {
        self.producer_id.as_deref().zip(self.producer_seq)
    }
}

impl Indexed for EventSummary<'_> {
    fn id(&self) -> Uuid {
        self.event_id
    }
    fn time_us(&self) -> i64 {
        // `LeafSummary::from_bytes` refused summaries without a valid time.
        self.time().map_or(i64::MIN, |t| t.timestamp_micros())
    }
    fn field(&self, name: &str) -> Option<&str> {
        EventSummary::field(self, name)
    }
    fn producer(&self) -> Option<(&str, u64)> {
        EventSummary::producer(self)
    }
}

/// The postings a query walks: every event, one value of a field, or the values with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Exact(u8, String),
    Prefix(u8, String),
}

impl Selector {
    /// True when the selector picks term `(code, value)`.
    pub fn matches(&self, code: u8, value: &str) -> bool {
        match self {
            Selector::All => code == ALL,
            Selector::Exact(c, v) => *c == code && v == value,
            Selector::Prefix(c, p) => *c == code && value.starts_with(p.as_str()),
        }
    }

    /// The postings that drive `filter`: a field that usually picks out few events if the filter
    /// names one, else the event type, else a field whole classes of events share (one producer,
    /// such as the Kubernaut API, may have written most of the log; three outcomes, one of which
    /// every audited read adds to), else every event.
    pub fn for_filter(filter: &Filter) -> Selector {
        let field = |names: &[&str]| {
            names.iter().find_map(|name| {
                let code = INDEXED_FIELDS.iter().position(|f| f == name)?;
                Some(Selector::Exact(code as u8, filter.exact(name)?.to_string()))
            })
        };
        if let Some(s) = field(&["correlation_id", "resource_id", "actor_id", "namespace"]) {
            return s;
        }
        match &filter.event_type {
            Some(TypeMatch::Exact(t)) => Selector::Exact(0, t.clone()),
            Some(TypeMatch::Prefix(p)) => Selector::Prefix(0, p.clone()),
            None => field(&["producer_id", "event_outcome"]).unwrap_or(Selector::All),
        }
    }
}

/// True when the postings that drive `filter`'s scan imply all of its conditions (one indexed
/// exact field or an event type, plus the time range that bounds the scan), so that matching
/// candidates need no further check.
pub fn covers(filter: &Filter) -> bool {
    let conditions = filter.exact.len() + usize::from(filter.event_type.is_some());
    filter.data.is_empty()
        && conditions <= 1
        && filter
            .exact
            .iter()
            .all(|(name, _)| INDEXED_FIELDS.contains(&name.as_str()))
}

/// Takes the exclusive lock of the index at `path` (the file `<path>.lock`), without opening the
/// index itself: `reindex` needs the lock even when the index is too damaged to open.
pub fn lock(path: &Path) -> Result<File, StoreError> {
    let lock_path = path.with_extension("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(StoreError::io(format!("opening {}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(format!(
            "{} is in use by another process (is a server running on this data directory?)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(format!(
            "locking {}",
            lock_path.display()
        ))(e)),
    }
}

/// One segment's index as readers see it.
#[derive(Clone)]
pub(crate) enum View {
    Sealed(Arc<SegmentIndex>),
    /// In memory: the segment being appended to, or a full one until its file is written.
    Open(Arc<RwLock<Entries>>),
}

fn read_entries(e: &RwLock<Entries>) -> RwLockReadGuard<'_, Entries> {
    // Entries are only ever added whole under the write lock; a panic cannot leave half of one.
    e.read().unwrap_or_else(|p| p.into_inner())
}

impl View {
    fn first_seq(&self) -> u64 {
        match self {
            View::Sealed(s) => s.first_seq,
            View::Open(e) => read_entries(e).first_seq,
        }
    }

    fn ordinal(&self) -> u32 {
        match self {
            View::Sealed(s) => s.ordinal,
            View::Open(e) => read_entries(e).ordinal,
        }
    }

    /// Earliest and latest event time; `min > max` when empty.
    fn times(&self) -> (i64, i64) {
        match self {
            View::Sealed(s) => (s.min_time, s.max_time),
            View::Open(e) => read_entries(e).time_range(),
        }
    }
}

/// The mutable part of the index.
struct State {
    /// Every segment's index in log order; the last is the segment being appended to.
    views: Vec<View>,
    /// Every producer's sequence state.
    producers: Arc<BTreeMap<String, ProducerStatus>>,
    /// Leaves indexed.
    size: u64,
    /// The root of the tree of those leaves, as the writer (or recovery) computed it.
    root: Hash,
}

/// One tenant's derived state. Holds an exclusive lock on `<path>.lock` while open, so that a
/// second process (a server, `reindex`, `fsck`) cannot use the same index at once.
pub struct Index {
    dir: PathBuf,
    flat: FlatFiles,
    /// Leaves whose tree nodes were durable when the index was opened.
    synced: u64,
    /// Tree nodes not written to their files yet (see [`Index::put_nodes`]).
    unwritten: Arc<RwLock<std::collections::HashMap<(u32, u64), Hash>>>,
    state: RwLock<State>,
    _lock: File,
}

/// Reads `tree.meta`: the leaves whose nodes are durable (0 when absent or unreadable).
pub(crate) fn read_tree_meta(dir: &Path) -> u64 {
    let Ok(b) = std::fs::read(dir.join(TREE_META)) else {
        return 0;
    };
    if b.len() != 20 || b[..8] != TREE_META_MAGIC {
        return 0;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&b[8..16]);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&b[16..20]);
    if crc32c::crc32c(&b[..16]) != u32::from_le_bytes(crc) {
        return 0;
    }
    u64::from_le_bytes(size)
}

fn write_tree_meta(dir: &Path, size: u64) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&TREE_META_MAGIC);
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
    let temp = dir.join("tree.meta.tmp");
    let mut f = File::create(&temp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    std::fs::rename(&temp, dir.join(TREE_META))?;
    File::open(dir)?.sync_all()
}

fn poisoned() -> StoreError {
    StoreError::Failed("the index lock was poisoned by a panic".into())
}

impl Index {
    /// Opens (or creates) the index at `path`, taking its lock. An index in the layout of an
    /// older version is removed: it is rebuilt from the log.
    pub fn open(path: &Path) -> Result<Index, StoreError> {
        let lock = lock(path)?;
        let io = |what: &str| StoreError::io(format!("{what} {}", path.display()));
        if path.join("kv").exists() {
            tracing::warn!(path = %path.display(), "the index is in the layout of an older version; rebuilding it from the log");
            std::fs::remove_dir_all(path).map_err(io("removing"))?;
        }
        std::fs::create_dir_all(path).map_err(io("creating"))?;
        let mut synced = read_tree_meta(path);
        let flat = match FlatFiles::open(path, synced).map_err(io("opening the tree files in"))? {
            Some(flat) => flat,
            None => {
                // The node files lost writes the meta file counted (a machine crash between their
                // write-backs): start them afresh; recovery recomputes them from the log.
                tracing::warn!(path = %path.display(), "the tree's node files are behind; recomputing them from the log");
                synced = 0;
                FlatFiles::open(path, 0)
                    .map_err(io("opening the tree files in"))?
                    .ok_or_else(|| StoreError::Damaged("new tree files are inconsistent".into()))?
            }
        };
        Ok(Index {
            dir: path.to_path_buf(),
            flat,
            synced,
            unwritten: Arc::default(),
            state: RwLock::new(State {
                views: Vec::new(),
                producers: Arc::default(),
                size: 0,
                root: veritrail_core::hash::empty_root(),
            }),
            _lock: lock,
        })
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Leaves whose tree nodes were durable when the index was opened: recovery recomputes the
    /// nodes of the rest.
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Leaves indexed.
    pub fn size(&self) -> u64 {
        self.state.read().map_or(0, |s| s.size)
    }

    /// The leaf hash the node files hold for `seq`, if any (a zero entry was never written).
    pub(crate) fn stored_leaf(&self, seq: u64) -> Result<Option<Hash>, StoreError> {
        let leaves = self
            .flat
            .leaves()
            .map_err(StoreError::io("reading the tree files"))?;
        if seq >= leaves {
            return Ok(None);
        }
        let leaf = self
            .flat
            .node(0, seq)
            .map_err(StoreError::io("reading the tree files"))?;
        Ok(leaf.filter(|h| *h != [0u8; 32]))
    }

    /// Leaf hashes the node files hold.
    pub(crate) fn stored_leaves(&self) -> Result<u64, StoreError> {
        self.flat
            .leaves()
            .map_err(StoreError::io("reading the tree files"))
    }

    /// Cuts the node files to a tree of `size` leaves.
    pub(crate) fn cut_tree(&self, size: u64) -> Result<(), StoreError> {
        self.flat
            .cut(size)
            .map_err(StoreError::io("cutting the tree files"))
    }

    /// Installs what recovery rebuilt: every segment's index (the last one open for appends),
    /// the producers' state and the size.
    pub(crate) fn load(
        &self,
        views: Vec<View>,
        producers: BTreeMap<String, ProducerStatus>,
        head: Head,
    ) -> Result<(), StoreError> {
        let mut s = self.state.write().map_err(|_| poisoned())?;
        *s = State {
            views,
            producers: Arc::new(producers),
            size: head.size,
            root: head.root,
        };
        Ok(())
    }

    /// Writes the tree nodes `nodes` (level, index, hash), after any an earlier call could not
    /// write. Nodes that cannot be written now (a full disk) are kept in memory, where readers
    /// find them, and written by a later call.
    pub(crate) fn put_nodes(&self, nodes: &[(u32, u64, Hash)]) -> Result<(), StoreError> {
        let mut unwritten = self.unwritten.write().map_err(|_| poisoned())?;
        let mut all: Vec<(u32, u64, Hash)> =
            unwritten.iter().map(|(&(l, i), h)| (l, i, *h)).collect();
        // Nodes of the computed levels are folded from the leaves when read, never stored.
        all.extend(nodes.iter().filter(|n| !flat::computed(n.0)));
        // Runs of consecutive nodes of one level go to their file in one write.
        all.sort_unstable_by_key(|&(l, i, _)| (l, i));
        all.dedup_by_key(|&mut (l, i, _)| (l, i));
        let mut k = 0;
        while k < all.len() {
            let (level, first, _) = all[k];
            let mut run = Vec::with_capacity(32 * 64);
            while k < all.len() && all[k].0 == level && all[k].1 == first + (run.len() / 32) as u64
            {
                run.extend_from_slice(&all[k].2);
                k += 1;
            }
            if let Err(e) = self.flat.put_nodes(level, first, &run) {
                unwritten.extend(all.iter().map(|&(l, i, h)| ((l, i), h)));
                return Err(StoreError::Unwritable(format!("writing tree nodes: {e}")));
            }
        }
        unwritten.clear();
        Ok(())
    }

    /// Adds the entries of consecutive leaves (all in the segment being appended to) and the tree
    /// nodes they completed. Returns how many events the producers' sequence numbers show as
    /// newly missing.
    pub fn apply(
        &self,
        leaves: &[LeafEntry<'_>],
        nodes: &[(u32, u64, Hash)],
        head: Head,
    ) -> Result<u64, StoreError> {
        // The events are durable: the index takes them whether or not their nodes can be written
        // now (they wait in memory if not), so that what was acknowledged is served.
        let written = self.put_nodes(nodes);
        let mut s = self.state.write().map_err(|_| poisoned())?;
        let Some(View::Open(active)) = s.views.last().cloned() else {
            return Err(StoreError::Failed("the index has no open segment".into()));
        };
        {
            let mut active = active.write().map_err(|_| poisoned())?;
            for leaf in leaves {
                debug_assert_eq!(leaf.pos.ordinal, active.ordinal);
                debug_assert_eq!(leaf.seq, active.end());
                active.add(leaf.event, leaf.pos.offset, leaf.leaf);
            }
        }
        let producers = Arc::make_mut(&mut s.producers);
        let newly_missing = track_producers(
            producers,
            leaves.iter().map(|l| (l.event, l.ingested_at_us)),
        );
        (s.size, s.root) = (head.size, head.root);
        written.map(|()| newly_missing)
    }

    /// Notes that the segment being appended to records a checkpoint of `size` leaves.
    pub(crate) fn mark(&self, size: u64) -> Result<(), StoreError> {
        let s = self.state.read().map_err(|_| poisoned())?;
        if let Some(View::Open(active)) = s.views.last() {
            let mut a = active.write().map_err(|_| poisoned())?;
            a.marked = a.marked.max(size);
        }
        Ok(())
    }

    /// Starts the index of segment `ordinal` (whose first seq is `first_seq`). Returns the full
    /// segment's entries and the producers' state at its end, for its sealed index.
    pub(crate) fn rotate(
        &self,
        ordinal: u32,
        first_seq: u64,
    ) -> Result<(Arc<RwLock<Entries>>, Vec<ProducerStatus>), StoreError> {
        let mut s = self.state.write().map_err(|_| poisoned())?;
        let Some(View::Open(full)) = s.views.last().cloned() else {
            return Err(StoreError::Failed("the index has no open segment".into()));
        };
        s.views.push(View::Open(Arc::new(RwLock::new(Entries::new(
            ordinal, first_seq,
        )))));
        Ok((full, s.producers.values().cloned().collect()))
    }

    /// Full segments whose sealed index is not written yet (the sealer's backlog).
    pub(crate) fn unsealed(&self) -> usize {
        self.state.read().map_or(0, |s| {
            let open = s
                .views
                .iter()
                .filter(|v| matches!(v, View::Open(_)))
                .count();
            open.saturating_sub(1)
        })
    }

    /// Serves the sealed index of a segment instead of its entries in memory.
    pub(crate) fn install(&self, sealed: Arc<SegmentIndex>) -> Result<(), StoreError> {
        let mut s = self.state.write().map_err(|_| poisoned())?;
        if let Some(v) = s.views.iter_mut().find(|v| v.ordinal() == sealed.ordinal) {
            *v = View::Sealed(sealed);
        }
        Ok(())
    }

    /// Makes the tree nodes written so far durable, and records how far.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.put_nodes(&[])?;
        let size = self.size();
        self.flat
            .sync()
            .and_then(|()| write_tree_meta(&self.dir, size))
            .map_err(StoreError::io(format!(
                "syncing the tree files in {}",
                self.dir.display()
            )))
    }

    /// The tree of the first `size` leaves, from the node files.
    pub(crate) fn frontier(
        &self,
        size: u64,
    ) -> Result<veritrail_core::merkle::Frontier, StoreError> {
        let mut get = |level, index| self.flat.stored_node(level, index);
        Ok(veritrail_core::merkle::Frontier::from_nodes(
            size, &mut get,
        )?)
    }

    /// A consistent read view.
    pub fn reader(&self) -> Result<IndexReader, StoreError> {
        let s = self.state.read().map_err(|_| poisoned())?;
        Ok(IndexReader {
            size: s.size,
            root: s.root,
            flat: self.flat.clone(),
            unwritten: self.unwritten.clone(),
            views: s.views.clone(),
            producers: s.producers.clone(),
        })
    }
}

/// Updates the producers' sequence state for events in log order (with their `ingested_at`).
/// Returns how many events newly went missing.
pub(crate) fn track_producers<'a, E: 'a + Indexed>(
    producers: &mut BTreeMap<String, ProducerStatus>,
    events: impl Iterator<Item = (&'a E, i64)>,
) -> u64 {
    let mut newly_missing = 0;
    for (e, at) in events {
        let Some((id, seq)) = e.producer() else {
            continue;
        };
        match producers.get_mut(id) {
            Some(p) => newly_missing += p.observe(seq, at),
            None => {
                producers.insert(id.to_string(), ProducerStatus::first(id, seq, at));
            }
        }
    }
    newly_missing
}

/// A snapshot of the derived state: it sees the first `size` leaves.
pub struct IndexReader {
    size: u64,
    root: Hash,
    flat: FlatFiles,
    unwritten: Arc<RwLock<std::collections::HashMap<(u32, u64), Hash>>>,
    views: Vec<View>,
    producers: Arc<BTreeMap<String, ProducerStatus>>,
}

/// One source of candidates during a merge: an open segment's keys, already in merge order, or
/// a term's posting in an index file, read as the merge goes.
enum Run {
    Keys(std::vec::IntoIter<SortKey>),
    Posting(PostingRun),
}

impl Run {
    fn next_key(&mut self) -> Result<Option<SortKey>, StoreError> {
        match self {
            Run::Keys(keys) => Ok(keys.next()),
            Run::Posting(p) => p.next_key(),
        }
    }
}

impl IndexReader {
    /// The tree head the snapshot covers, as this process computed it.
    pub fn head(&self) -> Head {
        Head {
            size: self.size,
            root: self.root,
        }
    }

    /// The index directory.
    pub(crate) fn dir(&self) -> &Path {
        self.flat.dir()
    }

    /// Per segment below the snapshot's size, in log order: its ordinal, first seq, number of
    /// events and whether it is sealed (its index file installed).
    pub(crate) fn spans(&self) -> Vec<(u32, u64, u64, bool)> {
        let starts: Vec<u64> = self.views.iter().map(View::first_seq).collect();
        self.views
            .iter()
            .enumerate()
            .filter(|(_, v)| v.first_seq() < self.size)
            .map(|(k, v)| {
                let end = starts
                    .get(k + 1)
                    .copied()
                    .unwrap_or(self.size)
                    .min(self.size);
                let first = v.first_seq();
                (
                    v.ordinal(),
                    first,
                    end - first,
                    matches!(v, View::Sealed(_)),
                )
            })
            .collect()
    }

    /// Seqs whose event may be `id`, newest segment first: the caller confirms on the record.
    pub fn id_candidates(&self, id: &Uuid) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for v in self.views.iter().rev() {
            match v {
                View::Open(e) => out.extend(read_entries(e).seq_of(id, self.size)),
                View::Sealed(s) => {
                    out.extend(s.id_candidates(id)?.into_iter().filter(|q| *q < self.size))
                }
            }
        }
        Ok(out)
    }

    /// The leaf hash of `seq` this process computed itself, when `seq` is in an open segment.
    pub(crate) fn trusted_leaf(&self, seq: u64) -> Option<Hash> {
        let k = self
            .views
            .partition_point(|v| v.first_seq() <= seq)
            .checked_sub(1)?;
        match &self.views[k] {
            View::Open(e) => read_entries(e).leaf(seq, self.size),
            View::Sealed(_) => None,
        }
    }

    /// Where the record of `seq` is found.
    pub fn place(&self, seq: u64) -> Option<Place> {
        if seq >= self.size {
            return None;
        }
        let k = self
            .views
            .partition_point(|v| v.first_seq() <= seq)
            .checked_sub(1)?;
        match &self.views[k] {
            View::Sealed(s) => Some(Place::Sealed(s.ordinal)),
            View::Open(e) => {
                let e = read_entries(e);
                Some(Place::At(Pos {
                    ordinal: e.ordinal,
                    offset: e.offset(seq, self.size)?,
                }))
            }
        }
    }

    /// A closure reading perfect tree nodes, for [`veritrail_core::merkle`].
    pub fn nodes(&self) -> impl FnMut(u32, u64) -> Result<Hash, NodeError> + '_ {
        move |level: u32, index: u64| {
            // Only nodes complete within the snapshot exist for it.
            let complete = level < 64
                && index
                    .checked_add(1)
                    .and_then(|n| n.checked_shl(level))
                    .is_some_and(|end| end <= self.size);
            if !complete {
                return Err(NodeError::Missing { level, index });
            }
            if let Ok(unwritten) = self.unwritten.read() {
                if let Some(h) = unwritten.get(&(level, index)) {
                    return Ok(*h);
                }
                if flat::computed(level) && !unwritten.is_empty() {
                    // Some leaves below may wait in memory (a full disk).
                    let (from, to) = flat::leaves_below(level, index);
                    let leaves = (from..to)
                        .map(|i| match unwritten.get(&(0, i)) {
                            Some(h) => Ok(*h),
                            None => self.flat.stored_node(0, i),
                        })
                        .collect::<Result<Vec<Hash>, NodeError>>()?;
                    return Ok(flat::fold(&leaves));
                }
            }
            self.flat.stored_node(level, index)
        }
    }

    /// Every producer's sequence state.
    pub fn producers(&self) -> Vec<ProducerStatus> {
        self.producers.values().cloned().collect()
    }

    /// Events per value of an indexed field, over the whole snapshot.
    pub fn counts(&self, field: &str) -> Result<BTreeMap<String, u64>, StoreError> {
        let Some(code) = INDEXED_FIELDS.iter().position(|f| *f == field) else {
            return Ok(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        for v in &self.views {
            let counts = match v {
                View::Open(e) => read_entries(e).counts(code as u8, self.size),
                View::Sealed(s) => s.counts(code as u8)?,
            };
            for (value, n) in counts {
                *out.entry(value).or_insert(0) += n;
            }
        }
        Ok(out)
    }

    /// A segment's candidates as runs in merge order.
    fn runs(
        &self,
        v: &View,
        selector: &Selector,
        bounds: RunBounds,
    ) -> Result<Vec<Run>, StoreError> {
        Ok(match v {
            View::Open(e) => {
                let mut keys =
                    read_entries(e).candidates(selector, bounds.lo, bounds.hi, self.size);
                if bounds.descending {
                    keys.reverse();
                }
                vec![Run::Keys(keys.into_iter())]
            }
            View::Sealed(s) => s
                .runs(selector, bounds)?
                .into_iter()
                .map(Run::Posting)
                .collect(),
        })
    }

    /// Visits candidate `(time, seq)` keys for `filter` in `[lo, hi)` order, newest first when
    /// `descending`, until `visit` returns false. Candidates satisfy the indexed condition and the
    /// time range; the caller checks the rest of the filter on the record itself.
    ///
    /// Segments are merged lazily: one is read only once the merge reaches its time range, so a
    /// query for the newest few events reads the newest segments only.
    pub fn scan(
        &self,
        filter: &Filter,
        lo: SortKey,
        hi: SortKey,
        descending: bool,
        mut visit: impl FnMut(SortKey) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if lo >= hi {
            return Ok(());
        }
        let selector = Selector::for_filter(filter);
        let bounds = RunBounds {
            lo,
            hi,
            size: self.size,
            descending,
        };
        // Segments whose time range meets [lo, hi), with the key that bounds their candidates
        // on the side the merge comes from, most promising first.
        let mut pending: Vec<(SortKey, &View)> = self
            .views
            .iter()
            .filter_map(|v| {
                let (min, max) = v.times();
                let meets = min <= max && (max, u64::MAX) >= lo && (min, 0) < hi;
                let bound = if descending {
                    (max, u64::MAX)
                } else {
                    (min, 0)
                };
                meets.then_some((bound, v))
            })
            .collect();
        if descending {
            pending.sort_by_key(|p| std::cmp::Reverse(p.0));
        } else {
            pending.sort_by_key(|p| p.0);
        }
        let mut pending = pending.into_iter().peekable();
        let mut runs: Vec<Run> = Vec::new();
        // Max-heap of (key in merge order, run); ascending merges negate through Reverse.
        let mut heap: BinaryHeap<(MergeKey, usize)> = BinaryHeap::new();
        let order = |k: SortKey| {
            if descending {
                MergeKey::Desc(k)
            } else {
                MergeKey::Asc(std::cmp::Reverse(k))
            }
        };
        loop {
            // Open every segment that could hold a key ahead of the best one seen so far.
            while let Some((bound, v)) = pending.peek() {
                let ahead = heap.peek().is_none_or(|(best, _)| order(*bound) >= *best);
                if !ahead {
                    break;
                }
                for mut run in self.runs(v, &selector, bounds)? {
                    if let Some(first) = run.next_key()? {
                        heap.push((order(first), runs.len()));
                        runs.push(run);
                    }
                }
                pending.next();
            }
            let Some((key, r)) = heap.pop() else {
                return Ok(());
            };
            let key = match key {
                MergeKey::Desc(k) => k,
                MergeKey::Asc(std::cmp::Reverse(k)) => k,
            };
            if let Some(next) = runs[r].next_key()? {
                heap.push((order(next), r));
            }
            if !visit(key)? {
                return Ok(());
            }
        }
    }
}

/// A sort key ordered so that the next key of the merge is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum MergeKey {
    Desc(SortKey),
    Asc(std::cmp::Reverse<SortKey>),
}
