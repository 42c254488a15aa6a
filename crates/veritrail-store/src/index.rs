//! Derived state: one fjall keyspace (an LSM tree per table) for lookups and secondary indexes,
//! and fixed-width files for record positions and the Merkle tree's nodes.
//!
//! Everything here is *technically just a cache* of the log: `veritrail reindex` deletes it and
//! rebuilds it from the segments, and startup replays whatever the index lost. Each group commit
//! is one atomic fjall batch, written to fjall's journal without an fsync of its own: the log's
//! fsync already made the events durable. Because a batch holds the new `indexed_size` together
//! with the entries, the index is always a consistent prefix of the log.
//!
//! An LSM tree suits this write pattern: every event adds about a dozen keys spread over the key
//! space (field values), which a B-tree pays for with page copies on every commit, and an LSM
//! tree absorbs in its memtable.
//!
//! Positions and tree nodes are not in the LSM tree but in fixed-width files (see [`crate::flat`]),
//! written before the batch that counts them commits.
//!
//! Key layouts (integers big-endian so that byte order is numeric order; times are µs since the
//! epoch with the sign bit flipped so that negative times sort first):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"indexed_size"` | u64 |
//! | `ids` | event id (16 bytes) | seq u64 |
//! | `by_time` | time u64 ‖ seq u64 | empty |
//! | `by_field` | field code u8 ‖ value length u32 ‖ value ‖ time u64 ‖ seq u64 | empty |
//! | `types` | event type | count u64 |
//! | `producers` | producer id | sequence state (JSON, see `producers.rs`) |

use std::fs::File;
use std::path::Path;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, Snapshot};
use uuid::Uuid;
use veritrail_core::event::{Event, EventSummary};
use veritrail_core::hash::Hash;
use veritrail_core::query::{Filter, TypeMatch};

use crate::flat::FlatFiles;
use crate::producers::ProducerStatus;

/// Directory of the index inside a tenant directory (its lock file is `index.lock`).
pub const INDEX_DIR: &str = "index";

/// Meta key: number of leaves whose fixed-width entries were fsync'd.
const SYNCED_SIZE: &[u8] = b"synced_size";
/// The fixed-width files are fsync'd once per this many batches.
const SYNC_FILES_EVERY: u32 = 256;

/// Meta key: number of leaves whose derived state is in this database.
const INDEXED_SIZE: &[u8] = b"indexed_size";

/// Fields with a secondary index, by their one-byte code in `by_field` keys. `event_type` is 0.
pub const INDEXED_FIELDS: [&str; 7] = [
    "event_type",
    "correlation_id",
    "resource_id",
    "actor_id",
    "producer_id",
    "namespace",
    "event_outcome",
];

/// The index's error type.
pub type IndexError = fjall::Error;

/// Where a record sits: segment ordinal and byte offset, packed as `ordinal << 40 | offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub ordinal: u32,
    pub offset: u64,
}

impl Pos {
    const OFFSET_BITS: u32 = 40;

    fn pack(self) -> u64 {
        debug_assert!(self.offset < 1 << Self::OFFSET_BITS);
        (u64::from(self.ordinal) << Self::OFFSET_BITS) | self.offset
    }

    fn unpack(v: u64) -> Pos {
        Pos {
            ordinal: (v >> Self::OFFSET_BITS) as u32,
            offset: v & ((1 << Self::OFFSET_BITS) - 1),
        }
    }
}

/// A position in result order: event time (µs since the epoch), then log sequence.
pub type SortKey = (i64, u64);

/// One leaf's derived entries.
pub struct LeafEntry<'a> {
    pub seq: u64,
    pub pos: Pos,
    pub event: &'a Event,
    /// When the server recorded the event, µs since the epoch.
    pub ingested_at_us: i64,
}

/// The sort key of an event.
pub fn sort_key(e: &impl Indexed, seq: u64) -> SortKey {
    (e.time_us(), seq)
}

/// What the index keeps of an event: the typed [`Event`] at ingest, the [`EventSummary`] a
/// whole-log check reads from stored bytes.
pub trait Indexed {
    fn id(&self) -> Uuid;
    /// Event time, µs since the epoch.
    fn time_us(&self) -> i64;
    /// The value of an indexed field.
    fn field(&self, name: &str) -> Option<&str>;
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
}

/// The tables.
#[derive(Clone)]
struct Tables {
    meta: PartitionHandle,
    ids: PartitionHandle,
    by_time: PartitionHandle,
    by_field: PartitionHandle,
    types: PartitionHandle,
    producers: PartitionHandle,
}

/// The derived-state database. Holds an exclusive lock on `<path>.lock` while open, so that a
/// second process (a server, `reindex`, `fsck`) cannot use the same index at once.
pub struct Index {
    keyspace: Keyspace,
    tables: Tables,
    flat: FlatFiles,
    /// Batches applied since opening, for the periodic sync of the fixed-width files.
    applies: std::sync::atomic::AtomicU32,
    _lock: File,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(at..at + 8) {
        b.copy_from_slice(s);
    }
    u64::from_be_bytes(b)
}

/// Time as an order-preserving unsigned integer.
fn time_key(ts: i64) -> u64 {
    (ts as u64) ^ (1 << 63)
}

fn time_from_key(k: u64) -> i64 {
    (k ^ (1 << 63)) as i64
}

fn sort_bytes((ts, seq): SortKey) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&time_key(ts).to_be_bytes());
    b[8..].copy_from_slice(&seq.to_be_bytes());
    b
}

fn sort_from_tail(key: &[u8]) -> SortKey {
    let n = key.len().saturating_sub(16);
    (time_from_key(u64_at(key, n)), u64_at(key, n + 8))
}

/// Appends the `by_field` key prefix of one field value to `k`.
fn push_field_prefix(k: &mut Vec<u8>, code: u8, value: &str) {
    k.push(code);
    k.extend_from_slice(&(value.len() as u32).to_be_bytes());
    k.extend_from_slice(value.as_bytes());
}

/// `by_field` key prefix for one field value.
fn field_prefix(code: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 21);
    push_field_prefix(&mut k, code, value);
    k
}

/// Files one tenant's index database keeps open at most.
pub const MAX_OPEN_INDEX_FILES: usize = 128;

/// A damaged journal or table of the index database, named with its place and its remedy: the
/// index is only derived state.
fn name_damage(kv: &Path, e: fjall::Error) -> fjall::Error {
    match e {
        fjall::Error::JournalRecovery(_) | fjall::Error::Decode(_) => {
            fjall::Error::Io(std::io::Error::other(format!(
                "the index database in {} is damaged ({e:?}); it is derived from the log: with the server stopped, `veritrail reindex --data-dir <data dir>` rebuilds it",
                kv.display()
            )))
        }
        other => other,
    }
}

/// Opens the LSM keyspace (in `<path>/kv`) and its tables.
fn open_keyspace(path: &Path) -> Result<(Keyspace, Tables), IndexError> {
    let kv = path.join("kv");
    // fjall keeps up to 900 files open by default, per tenant: bound it, so that tenants and
    // connections share the process's file limit predictably.
    let keyspace = Config::new(&kv)
        .max_open_files(MAX_OPEN_INDEX_FILES)
        .open()
        .map_err(|e| name_damage(&kv, e))?;
    let open = |name: &str| keyspace.open_partition(name, PartitionCreateOptions::default());
    let tables = Tables {
        meta: open("meta")?,
        ids: open("ids")?,
        by_time: open("by_time")?,
        by_field: open("by_field")?,
        types: open("types")?,
        producers: open("producers")?,
    };
    Ok((keyspace, tables))
}

/// True when the index that drives `filter`'s scan implies all of its conditions (one indexed
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
pub fn lock(path: &Path) -> Result<File, IndexError> {
    let lock_path = path.with_extension("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(fjall::Error::Io(std::io::Error::other(format!(
                "{} is in use by another process (is a server running on this data directory?)",
                path.display()
            ))))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(fjall::Error::Io(e)),
    }
}

impl Index {
    /// Opens (or creates) the index at `path`, taking its lock.
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        Index::open_with(path, true)
    }

    /// Opens the index for checking: derived files behind the index are an error, not a reason to
    /// rebuild (`fsck` reports; `reindex` repairs).
    pub fn open_for_check(path: &Path) -> Result<Index, IndexError> {
        Index::open_with(path, false)
    }

    fn open_with(path: &Path, rebuild: bool) -> Result<Index, IndexError> {
        let lock = lock(path)?;
        std::fs::create_dir_all(path)?;
        let (keyspace, tables) = open_keyspace(path)?;
        let meta = |key: &[u8]| -> Result<u64, IndexError> {
            Ok(tables.meta.get(key)?.map_or(0, |v| u64_at(&v, 0)))
        };
        let (size, synced) = (meta(INDEXED_SIZE)?, meta(SYNCED_SIZE)?);
        if let Some(flat) = FlatFiles::open(path, size)? {
            if flat.written(synced.min(size), size)? {
                return Ok(Index {
                    keyspace,
                    tables,
                    flat,
                    applies: 0.into(),
                    _lock: lock,
                });
            }
        }
        if !rebuild {
            return Err(std::io::Error::other(format!(
                "the derived files in {} are behind the index (a machine crash?); run `veritrail reindex`",
                path.display()
            ))
            .into());
        }
        // The fixed-width files lost writes the LSM tree kept (a machine crash between their
        // write-backs): start the derived state afresh; recovery replays the whole log.
        tracing::warn!(path = %path.display(), "derived files are behind the index; rebuilding the index from the log");
        drop((keyspace, tables));
        std::fs::remove_dir_all(path)?;
        std::fs::create_dir_all(path)?;
        let (keyspace, tables) = open_keyspace(path)?;
        let flat = FlatFiles::open(path, 0)?
            .ok_or_else(|| std::io::Error::other("new derived files are inconsistent"))?;
        Ok(Index {
            keyspace,
            tables,
            flat,
            applies: 0.into(),
            _lock: lock,
        })
    }

    /// How many leaves the database covers.
    pub fn indexed_size(&self) -> Result<u64, IndexError> {
        Ok(self
            .tables
            .meta
            .get(INDEXED_SIZE)?
            .map_or(0, |v| u64_at(&v, 0)))
    }

    /// Adds the derived entries of consecutive leaves and the tree nodes they completed, in one
    /// atomic batch. `durable` asks for an fsync of fjall's journal. Returns how many events the
    /// producers' sequence numbers show as newly missing.
    pub fn apply(
        &self,
        leaves: &[LeafEntry<'_>],
        nodes: &[(u32, u64, Hash)],
        new_size: u64,
        durable: bool,
    ) -> Result<u64, IndexError> {
        let t = &self.tables;
        let mut batch = self.keyspace.batch();
        // Distinct event types of this batch, counted once per batch rather than per event.
        let mut new_types: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        // Keys are built in one reused buffer and handed over as slices: fjall copies them once
        // into its own storage, so an owned `Vec` per key would be a second allocation.
        let mut key = Vec::with_capacity(128);
        for leaf in leaves {
            let e = leaf.event;
            let sort = sort_bytes(sort_key(e, leaf.seq));
            batch.insert(
                &t.ids,
                &e.event_id.as_bytes()[..],
                &leaf.seq.to_be_bytes()[..],
            );
            self.flat.put_pos(leaf.seq, leaf.pos.pack())?;
            batch.insert(&t.by_time, &sort[..], &[][..]);
            for (code, name) in INDEXED_FIELDS.iter().enumerate() {
                if let Some(v) = e.field(name) {
                    key.clear();
                    push_field_prefix(&mut key, code as u8, v);
                    key.extend_from_slice(&sort);
                    batch.insert(&t.by_field, &key[..], &[][..]);
                }
            }
            *new_types.entry(e.event_type.as_str()).or_insert(0) += 1;
        }
        for (ty, n) in new_types {
            let count = t.types.get(ty)?.map_or(0, |v| u64_at(&v, 0));
            batch.insert(
                &t.types,
                ty.as_bytes().to_vec(),
                (count + n).to_be_bytes().to_vec(),
            );
        }
        for (level, index, hash) in nodes {
            self.flat.put_node(*level, *index, hash)?;
        }
        batch.insert(
            &t.meta,
            INDEXED_SIZE.to_vec(),
            new_size.to_be_bytes().to_vec(),
        );
        let newly_missing = self.track_producers(leaves, &mut batch)?;
        // Now and then make the fixed-width files durable and say how far: after a machine crash
        // only the entries past that point can have been lost, and `open` checks just those.
        let n = self
            .applies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if durable || n.is_multiple_of(SYNC_FILES_EVERY) {
            self.flat.sync()?;
            batch.insert(
                &t.meta,
                SYNCED_SIZE.to_vec(),
                new_size.to_be_bytes().to_vec(),
            );
        }
        batch.commit()?;
        if durable {
            self.sync()?;
        }
        Ok(newly_missing)
    }

    /// Updates the producers' sequence state for `leaves` (in log order) into `batch`.
    fn track_producers(
        &self,
        leaves: &[LeafEntry<'_>],
        batch: &mut fjall::Batch,
    ) -> Result<u64, IndexError> {
        let mut states: std::collections::HashMap<&str, ProducerStatus> =
            std::collections::HashMap::new();
        let mut newly_missing = 0;
        for leaf in leaves {
            let e = leaf.event;
            let (Some(id), Some(seq)) = (e.producer_id.as_deref(), e.producer_seq) else {
                continue;
            };
            let at = leaf.ingested_at_us;
            if !states.contains_key(id) {
                let stored = self
                    .tables
                    .producers
                    .get(id)?
                    .and_then(|v| ProducerStatus::from_bytes(id, &v));
                match stored {
                    Some(p) => states.insert(id, p),
                    None => {
                        states.insert(id, ProducerStatus::first(id, seq, at));
                        continue;
                    }
                };
            }
            if let Some(p) = states.get_mut(id) {
                newly_missing += p.observe(seq, at);
            }
        }
        for (id, p) in states {
            batch.insert(&self.tables.producers, id.as_bytes().to_vec(), p.to_bytes());
        }
        Ok(newly_missing)
    }

    /// Makes everything applied so far durable.
    pub fn sync(&self) -> Result<(), IndexError> {
        self.flat.sync()?;
        let size = self.indexed_size()?;
        self.tables.meta.insert(SYNCED_SIZE, size.to_be_bytes())?;
        self.keyspace.persist(fjall::PersistMode::SyncAll)
    }

    /// A consistent read view.
    pub fn reader(&self) -> Result<IndexReader, IndexError> {
        let instant = self.keyspace.instant();
        let t = &self.tables;
        let size = t
            .meta
            .snapshot_at(instant)
            .get(INDEXED_SIZE)?
            .map_or(0, |v| u64_at(&v, 0));
        Ok(IndexReader {
            size,
            flat: self.flat.clone(),
            ids: t.ids.snapshot_at(instant),
            by_time: t.by_time.snapshot_at(instant),
            by_field: t.by_field.snapshot_at(instant),
            types: t.types.snapshot_at(instant),
            producers: t.producers.snapshot_at(instant),
        })
    }
}

/// What the index holds of one leaf: its record's position and its hash.
pub type StoredLeaf = (Option<Pos>, Option<Hash>);

/// A snapshot of the derived state.
pub struct IndexReader {
    /// Leaves the snapshot covers: only positions and nodes within it are read.
    size: u64,
    flat: FlatFiles,
    ids: Snapshot,
    by_time: Snapshot,
    by_field: Snapshot,
    types: Snapshot,
    producers: Snapshot,
}

/// Which index drives a query.
enum Driver {
    Time,
    Field(u8, Vec<String>),
}

type KeyStream = Box<dyn Iterator<Item = Result<SortKey, IndexError>>>;

impl IndexReader {
    /// The sequence number of an event id.
    pub fn seq_of(&self, id: &Uuid) -> Result<Option<u64>, IndexError> {
        Ok(self.ids.get(id.as_bytes())?.map(|v| u64_at(&v, 0)))
    }

    /// Where the record `seq` is stored.
    pub fn position(&self, seq: u64) -> Result<Option<Pos>, IndexError> {
        if seq >= self.size {
            return Ok(None);
        }
        // Ordinals start at 1, so a zero entry is one that was never written.
        let packed = self.flat.pos(seq)?;
        Ok((packed != 0).then(|| Pos::unpack(packed)))
    }

    /// Positions and leaf hashes of leaves `[from, to)`, read in bulk; `None` for leaves the
    /// snapshot does not cover or entries never written.
    pub fn leaves(&self, from: u64, to: u64) -> Result<Vec<StoredLeaf>, IndexError> {
        let covered = to.min(self.size).max(from);
        let positions = self.flat.pos_range(from, covered)?;
        let hashes = self.flat.leaf_range(from, covered)?;
        let mut out: Vec<_> = positions
            .into_iter()
            .zip(hashes.into_iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(p, h)| ((p != 0).then(|| Pos::unpack(p)), h))
            .collect();
        out.resize((to - from) as usize, (None, None));
        Ok(out)
    }

    /// A closure reading perfect tree nodes, for [`veritrail_core::merkle`].
    pub fn nodes(
        &self,
    ) -> Result<impl FnMut(u32, u64) -> Result<Hash, NodeError> + '_, IndexError> {
        Ok(move |level: u32, index: u64| {
            // Only nodes complete within the snapshot exist for it.
            let complete = level < 64
                && index
                    .checked_add(1)
                    .and_then(|n| n.checked_shl(level))
                    .is_some_and(|end| end <= self.size);
            if !complete {
                return Err(NodeError::Missing { level, index });
            }
            match self.flat.node(level, index) {
                Ok(Some(h)) => Ok(h),
                Ok(None) => Err(NodeError::Missing { level, index }),
                Err(e) => Err(NodeError::Db(e.into())),
            }
        })
    }

    /// Every producer's sequence state, by producer id.
    pub fn producers(&self) -> Result<Vec<ProducerStatus>, IndexError> {
        let mut out = Vec::new();
        for entry in self.producers.iter() {
            let (k, v) = entry?;
            let id = String::from_utf8_lossy(&k);
            if let Some(p) = ProducerStatus::from_bytes(&id, &v) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The fingerprint of every entry of the `ids`, `by_time` and `by_field` tables (a full scan),
    /// for fsck to compare with [`Digest::add_expected`] over the log.
    pub fn entries_digest(&self) -> Result<Digest, IndexError> {
        let scan = |tag: u8, table: &Snapshot| -> Result<Digest, IndexError> {
            let mut d = Digest::default();
            for entry in table.iter() {
                let (k, v) = entry?;
                d.add(tag, &k, &v);
            }
            Ok(d)
        };
        // One thread per table: the by-field table alone holds most entries.
        std::thread::scope(|s| {
            let by_field = s.spawn(|| scan(b'f', &self.by_field));
            let mut d = scan(b'i', &self.ids)?;
            d.merge(&scan(b't', &self.by_time)?);
            let f = by_field
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            d.merge(&f);
            Ok(d)
        })
    }

    /// True when every index entry that `event` at `seq` should have exists.
    pub fn has_entries_for(&self, event: &Event, seq: u64) -> Result<bool, IndexError> {
        let sort = sort_bytes(sort_key(event, seq));
        for (code, name) in INDEXED_FIELDS.iter().enumerate() {
            if let Some(v) = event.field(name) {
                let mut k = field_prefix(code as u8, v);
                k.extend_from_slice(&sort);
                if !self.by_field.contains_key(&k)? {
                    return Ok(false);
                }
            }
        }
        Ok(self.by_time.contains_key(sort)?)
    }

    /// The index a query walks: a field that usually picks out few events if the filter names
    /// one, else the event type, else a field whole classes of events share (one producer, such
    /// as the Kubernaut API, may have written most of the log; three outcomes, one of which
    /// every audited read adds to), else time.
    fn driver(&self, filter: &Filter) -> Result<Driver, IndexError> {
        let field = |names: &[&str]| {
            names.iter().find_map(|name| {
                let code = INDEXED_FIELDS.iter().position(|f| f == name)?;
                let value = filter.exact(name)?;
                Some(Driver::Field(code as u8, vec![value.to_string()]))
            })
        };
        if let Some(d) = field(&["correlation_id", "resource_id", "actor_id", "namespace"]) {
            return Ok(d);
        }
        Ok(match &filter.event_type {
            Some(TypeMatch::Exact(t)) => Driver::Field(0, vec![t.clone()]),
            Some(TypeMatch::Prefix(p)) => {
                let mut found = Vec::new();
                for entry in self.types.prefix(p.as_bytes()) {
                    let (k, _) = entry?;
                    found.push(String::from_utf8_lossy(&k).into_owned());
                }
                Driver::Field(0, found)
            }
            None => field(&["producer_id", "event_outcome"]).unwrap_or(Driver::Time),
        })
    }

    /// Visits candidate `(time, seq)` keys for `filter` in `[lo, hi)` order, newest first when
    /// `descending`, until `visit` returns false. Candidates satisfy the indexed condition and the
    /// time range; the caller checks the rest of the filter on the record itself.
    pub fn scan(
        &self,
        filter: &Filter,
        lo: SortKey,
        hi: SortKey,
        descending: bool,
        mut visit: impl FnMut(SortKey) -> Result<bool, IndexError>,
    ) -> Result<(), IndexError> {
        if lo >= hi {
            return Ok(());
        }
        let ordered = |it: Box<
            dyn DoubleEndedIterator<Item = Result<fjall::KvPair, fjall::LsmError>>,
        >|
         -> KeyStream {
            let keys = it.map(|r| r.map(|(k, _)| sort_from_tail(&k)).map_err(IndexError::from));
            if descending {
                Box::new(keys.rev())
            } else {
                Box::new(keys)
            }
        };
        let streams: Vec<KeyStream> = match self.driver(filter)? {
            Driver::Time => {
                let range = self
                    .by_time
                    .range(sort_bytes(lo).to_vec()..sort_bytes(hi).to_vec());
                vec![ordered(Box::new(range))]
            }
            Driver::Field(code, values) => values
                .iter()
                .map(|v| {
                    let prefix = field_prefix(code, v);
                    let from = [prefix.as_slice(), &sort_bytes(lo)].concat();
                    let to = [prefix.as_slice(), &sort_bytes(hi)].concat();
                    ordered(Box::new(self.by_field.range(from..to)))
                })
                .collect(),
        };
        merge(
            streams.into_iter().map(Iterator::peekable).collect(),
            descending,
            &mut visit,
        )
    }
}

/// Merges sorted streams (one per matching event type) into one sorted stream.
fn merge(
    mut streams: Vec<std::iter::Peekable<KeyStream>>,
    descending: bool,
    visit: &mut impl FnMut(SortKey) -> Result<bool, IndexError>,
) -> Result<(), IndexError> {
    loop {
        let mut best: Option<(usize, SortKey)> = None;
        for (i, s) in streams.iter_mut().enumerate() {
            match s.peek() {
                Some(Ok(k)) => {
                    let better = best.is_none_or(|(_, b)| if descending { *k > b } else { *k < b });
                    if better {
                        best = Some((i, *k));
                    }
                }
                Some(Err(_)) => {
                    if let Some(Err(e)) = s.next() {
                        return Err(e);
                    }
                }
                None => {}
            }
        }
        let Some((i, key)) = best else { return Ok(()) };
        streams[i].next();
        if !visit(key)? {
            return Ok(());
        }
    }
}

/// An order-independent fingerprint of a set of index entries: their number and the wrapping sum
/// of a 64-bit hash of each (table, key, value). Equal sets give equal digests; a missing, extra
/// or changed entry changes it (barring a 2^-64 accident), without holding the entries in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    pub entries: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, table: u8, key: &[u8], value: &[u8]) {
        // XXH3 is deterministic across runs, which the comparison needs; the lengths keep
        // (key, value) splits apart.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&[table]);
        h.update(&(key.len() as u32).to_le_bytes());
        h.update(key);
        h.update(value);
        self.entries += 1;
        self.sum = self.sum.wrapping_add(h.digest());
    }

    /// Adds the entries of another digest.
    pub fn merge(&mut self, other: &Digest) {
        self.entries += other.entries;
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Adds the entries that `event` at `seq` must have, exactly as [`Index::apply`] writes them.
    pub fn add_expected(&mut self, event: &impl Indexed, seq: u64) {
        let sort = sort_bytes(sort_key(event, seq));
        self.add(b'i', event.id().as_bytes(), &seq.to_be_bytes());
        self.add(b't', &sort, &[]);
        for (code, name) in INDEXED_FIELDS.iter().enumerate() {
            if let Some(v) = event.field(name) {
                let mut k = field_prefix(code as u8, v);
                k.extend_from_slice(&sort);
                self.add(b'f', &k, &[]);
            }
        }
    }
}

/// A tree node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("tree node (level {level}, index {index}) is missing from the derived state")]
    Missing { level: u32, index: u64 },
    #[error("reading tree node: {0}")]
    Db(#[from] IndexError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_the_values_they_encode() {
        let times = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(sort_bytes((w[0], 9)) < sort_bytes((w[1], 0)), "{w:?}");
            assert_eq!(sort_from_tail(&sort_bytes((w[0], 7))), (w[0], 7));
        }
        assert!(sort_bytes((5, 1)) < sort_bytes((5, 2)));
        // Values of different lengths never interleave their entries.
        let a = [
            field_prefix(1, "ab"),
            sort_bytes((i64::MAX, u64::MAX)).to_vec(),
        ]
        .concat();
        let b = [field_prefix(1, "abc"), sort_bytes((i64::MIN, 0)).to_vec()].concat();
        assert!(!b.starts_with(&field_prefix(1, "ab")) && !a.starts_with(&field_prefix(1, "abc")));
    }
}
