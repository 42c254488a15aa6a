//! Derived state in one redb database: lookups, secondary indexes and the Merkle tree's nodes.
//!
//! Everything here is *technically just a cache* of the log: `veritrail reindex` deletes it and
//! rebuilds it from the segments, and startup replays whatever the last durable commit missed.
//! Commits on the ingest path are written without an fsync of their own (redb's `Eventual`
//! durability: the commit is complete and frees pages, the OS persists it later): the log's fsync
//! already made the events durable, and a restart replays whatever the index lost.

use redb::{
    Database, Durability, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use std::path::Path;
use uuid::Uuid;
use veritrail_core::event::Event;
use veritrail_core::hash::Hash;
use veritrail_core::query::{Filter, TypeMatch};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const IDS: TableDefinition<u128, u64> = TableDefinition::new("ids");
const POS: TableDefinition<u64, u64> = TableDefinition::new("pos");
const NODES: TableDefinition<(u8, u64), [u8; 32]> = TableDefinition::new("nodes");
const BY_TIME: TableDefinition<(i64, u64), ()> = TableDefinition::new("by_time");
const BY_FIELD: TableDefinition<(u8, &str, i64, u64), ()> = TableDefinition::new("by_field");
const TYPES: TableDefinition<&str, u64> = TableDefinition::new("types");

/// Meta key: number of leaves whose derived state is in this database.
const INDEXED_SIZE: &str = "indexed_size";

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
}

/// The derived-state database.
pub struct Index {
    db: Database,
}

/// The sort key of an event.
pub fn sort_key(e: &Event, seq: u64) -> SortKey {
    (e.event_timestamp.timestamp_micros(), seq)
}

impl Index {
    /// Opens (or creates) the database at `path` and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Index, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(META)?;
            txn.open_table(IDS)?;
            txn.open_table(POS)?;
            txn.open_table(NODES)?;
            txn.open_table(BY_TIME)?;
            txn.open_table(BY_FIELD)?;
            txn.open_table(TYPES)?;
        }
        txn.commit()?;
        Ok(Index { db })
    }

    /// How many leaves the database covers.
    pub fn indexed_size(&self) -> Result<u64, redb::Error> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(INDEXED_SIZE)?.map_or(0, |v| v.value()))
    }

    /// Adds the derived entries of consecutive leaves and the tree nodes they completed.
    ///
    /// `durable` asks for an fsync'd commit; otherwise the OS writes the commit back later.
    pub fn apply(
        &self,
        leaves: &[LeafEntry<'_>],
        nodes: &[(u32, u64, Hash)],
        new_size: u64,
        durable: bool,
    ) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::Eventual
        });
        {
            let mut ids = txn.open_table(IDS)?;
            let mut pos = txn.open_table(POS)?;
            let mut by_time = txn.open_table(BY_TIME)?;
            let mut by_field = txn.open_table(BY_FIELD)?;
            let mut types = txn.open_table(TYPES)?;
            // Distinct event types of this batch, counted once per batch rather than per event.
            let mut new_types: std::collections::HashMap<&str, u64> =
                std::collections::HashMap::new();
            for leaf in leaves {
                let e = leaf.event;
                let (ts, seq) = sort_key(e, leaf.seq);
                ids.insert(e.event_id.as_u128(), seq)?;
                pos.insert(seq, leaf.pos.pack())?;
                by_time.insert((ts, seq), ())?;
                for (code, name) in INDEXED_FIELDS.iter().enumerate() {
                    if let Some(v) = e.field(name) {
                        by_field.insert((code as u8, v, ts, seq), ())?;
                    }
                }
                *new_types.entry(e.event_type.as_str()).or_insert(0u64) += 1;
            }
            for (t, n) in new_types {
                let count = types.get(t)?.map_or(0, |v| v.value());
                types.insert(t, count + n)?;
            }
            let mut node_table = txn.open_table(NODES)?;
            for (level, index, hash) in nodes {
                node_table.insert((*level as u8, *index), *hash)?;
            }
            txn.open_table(META)?.insert(INDEXED_SIZE, new_size)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Makes everything applied so far durable.
    pub fn sync(&self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        Ok(())
    }

    /// A consistent read view.
    pub fn reader(&self) -> Result<IndexReader, redb::Error> {
        Ok(IndexReader {
            txn: self.db.begin_read()?,
        })
    }
}

/// A snapshot of the derived state.
pub struct IndexReader {
    txn: ReadTransaction,
}

/// Where the scan for a query starts and which index drives it.
enum Driver {
    Time,
    Field(u8, Vec<String>),
}

impl IndexReader {
    /// The sequence number of an event id.
    pub fn seq_of(&self, id: &Uuid) -> Result<Option<u64>, redb::Error> {
        Ok(self
            .txn
            .open_table(IDS)?
            .get(id.as_u128())?
            .map(|v| v.value()))
    }

    /// Where the record `seq` is stored.
    pub fn position(&self, seq: u64) -> Result<Option<Pos>, redb::Error> {
        Ok(self
            .txn
            .open_table(POS)?
            .get(seq)?
            .map(|v| Pos::unpack(v.value())))
    }

    /// How many leaves the snapshot covers.
    pub fn indexed_size(&self) -> Result<u64, redb::Error> {
        Ok(self
            .txn
            .open_table(META)?
            .get(INDEXED_SIZE)?
            .map_or(0, |v| v.value()))
    }

    /// A closure reading perfect tree nodes, for [`veritrail_core::merkle`].
    pub fn nodes(
        &self,
    ) -> Result<impl FnMut(u32, u64) -> Result<Hash, NodeError> + '_, redb::Error> {
        let table = self.txn.open_table(NODES)?;
        Ok(
            move |level: u32, index: u64| match table.get((level as u8, index)) {
                Ok(Some(h)) => Ok(h.value()),
                Ok(None) => Err(NodeError::Missing { level, index }),
                Err(e) => Err(NodeError::Db(e.into())),
            },
        )
    }

    /// Counts of entries per table, for fsck's cross-check.
    pub fn entry_counts(&self) -> Result<EntryCounts, redb::Error> {
        Ok(EntryCounts {
            ids: self.txn.open_table(IDS)?.len()?,
            pos: self.txn.open_table(POS)?.len()?,
            by_time: self.txn.open_table(BY_TIME)?.len()?,
            by_field: self.txn.open_table(BY_FIELD)?.len()?,
        })
    }

    /// True when every index entry that `event` at `seq` should have exists.
    pub fn has_entries_for(&self, event: &Event, seq: u64) -> Result<bool, redb::Error> {
        let (ts, _) = sort_key(event, seq);
        let by_field = self.txn.open_table(BY_FIELD)?;
        for (code, name) in INDEXED_FIELDS.iter().enumerate() {
            if let Some(v) = event.field(name) {
                if by_field.get((code as u8, v, ts, seq))?.is_none() {
                    return Ok(false);
                }
            }
        }
        Ok(self.txn.open_table(BY_TIME)?.get((ts, seq))?.is_some())
    }

    fn driver(&self, filter: &Filter) -> Result<Driver, redb::Error> {
        for (code, name) in INDEXED_FIELDS.iter().enumerate().skip(1) {
            if let Some(v) = filter.exact(name) {
                return Ok(Driver::Field(code as u8, vec![v.to_string()]));
            }
        }
        Ok(match &filter.event_type {
            Some(TypeMatch::Exact(t)) => Driver::Field(0, vec![t.clone()]),
            Some(TypeMatch::Prefix(p)) => {
                let types = self.txn.open_table(TYPES)?;
                let mut found = Vec::new();
                for entry in types.range(p.as_str()..)? {
                    let (k, _) = entry?;
                    if !k.value().starts_with(p.as_str()) {
                        break;
                    }
                    found.push(k.value().to_string());
                }
                Driver::Field(0, found)
            }
            None => Driver::Time,
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
        mut visit: impl FnMut(SortKey) -> Result<bool, redb::Error>,
    ) -> Result<(), redb::Error> {
        if lo >= hi {
            return Ok(());
        }
        match self.driver(filter)? {
            Driver::Time => {
                let table = self.txn.open_table(BY_TIME)?;
                let range = table.range(lo..hi)?;
                let keys = range.map(|r| r.map(|(k, _)| k.value()));
                if descending {
                    drive(keys.rev(), &mut visit)
                } else {
                    drive(keys, &mut visit)
                }
            }
            Driver::Field(code, values) => {
                let table = self.txn.open_table(BY_FIELD)?;
                let mut streams = Vec::with_capacity(values.len());
                for v in &values {
                    let range = table
                        .range((code, v.as_str(), lo.0, lo.1)..(code, v.as_str(), hi.0, hi.1))?;
                    let keys = range.map(|r| r.map(|(k, _)| (k.value().2, k.value().3)));
                    let stream: Box<dyn Iterator<Item = Result<SortKey, redb::StorageError>>> =
                        if descending {
                            Box::new(keys.rev())
                        } else {
                            Box::new(keys)
                        };
                    streams.push(stream.peekable());
                }
                merge(streams, descending, &mut visit)
            }
        }
    }
}

fn drive(
    keys: impl Iterator<Item = Result<SortKey, redb::StorageError>>,
    visit: &mut impl FnMut(SortKey) -> Result<bool, redb::Error>,
) -> Result<(), redb::Error> {
    for k in keys {
        if !visit(k?)? {
            break;
        }
    }
    Ok(())
}

/// Merges sorted streams (one per matching event type) into one sorted stream.
fn merge<I: Iterator<Item = Result<SortKey, redb::StorageError>>>(
    mut streams: Vec<std::iter::Peekable<I>>,
    descending: bool,
    visit: &mut impl FnMut(SortKey) -> Result<bool, redb::Error>,
) -> Result<(), redb::Error> {
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
                        return Err(e.into());
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

/// Entry counts per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryCounts {
    pub ids: u64,
    pub pos: u64,
    pub by_time: u64,
    pub by_field: u64,
}

/// A tree node could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("tree node (level {level}, index {index}) is missing from the derived state")]
    Missing { level: u32, index: u64 },
    #[error("reading tree node: {0}")]
    Db(#[from] redb::Error),
}
